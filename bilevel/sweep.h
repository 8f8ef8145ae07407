// The lean sweep's one-step primitives, shared by the stored-iterate sweep (hypergrad.c) and the
// checkpointed one (revolve.c): a step forward from a state held as doubles, and a step's
// vector-Jacobian product re-recorded at such a state. Both reuse one x node for many steps and
// rewind the tape after each step, so memory does not grow with the steps taken. Private to
// bilevel/.
#ifndef HYPERTAPE_BLO_SWEEP_H
#define HYPERTAPE_BLO_SWEEP_H

#include "internal.h"
#include "ad_extra.h" // ad_kept

typedef struct {
    ad_tape *t;
    const blo_problem *p;
    const blo_dynamics *d;
    ad_var xv;     // x [n_x]: a constant forward, a parameter in the sweep
    ad_mark m0, m1; // before x, after x
} blo_stepper;

// Records x (a parameter when grad, else a constant) and marks the tape; blo_stepper_end rewinds
// it to where it was.
void blo_stepper_begin(blo_stepper *s, ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                       const double *x, int grad);
void blo_stepper_end(blo_stepper *s);

// At state [S] (the state at step k): F(x, y_k) into *F if F is given; state_{k+1} into next [S]
// if next is given, keeping the step's products over large constants into *keep within *keep_left
// bytes when keep is given (ad_keep).
blo_status blo_stepper_visit(blo_stepper *s, int k, const double *state, double *F, double *next,
                             ad_kept **keep, size_t *keep_left, blo_error *err);

// The step k at state [S]: adds its x part of lam^T d state_{k+1} / d(x, state_k) into gx [n_x]
// and replaces lam [S] by its state part. kept (or NULL): the forward pass's products to reuse.
blo_status blo_stepper_vjp(blo_stepper *s, int k, const double *state, ad_kept *kept, double *gx,
                           double *lam, blo_error *err);

// F(x, y(state)) with dF/dx into gx [n_x], dF/dstate into lam [S] (the sweep's start), and y into
// y_out [n_y] when given.
blo_status blo_sweep_start(ad_tape *t, const blo_problem *p, const blo_dynamics *d, const double *x,
                           const double *state, double *F_end, double *gx, double *lam,
                           double *y_out, blo_error *err);

// What the lean sweeps (stored, checkpointed, reversible) leave for blo_hypergrad to finish:
// gx, lam (the adjoint of state_{k_start}) and F [K+1] are the caller's buffers.
typedef struct {
    double F_end;
    int kbar, k_start, k_end, slots;
    long long fwd_steps;
    size_t reversible_bytes;
} lean_result;

// The first maximizer of F [K+1] over k = 1..K (y_0 = z excluded: the README's reading of PTT).
int blo_ptt_kbar(const double *Fv, int K);

// Momentum with the reversible option (reversible.c): a fixed-point forward pass keeping only
// the bits it drops, then the sweep from k_end to k_start undoing the steps one at a time.
// Fv [K+1] (or NULL without PTT) gets F along the trajectory.
blo_status blo_reversible_sweep(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                                const blo_hypergrad_params *hp, const double *x, const double *y0,
                                double *Fv, double *gx, double *lam, lean_result *r, blo_error *err);

// ---- binomial checkpointing (revolve.c) ---------------------------------------------------------

// The split of a reversal of L >= 2 steps with c >= 2 slots: advance l steps and keep that state.
long long blo_revolve_split(long long L, int c);

// The reverse sweep over steps a .. a+L-1 (L >= 1) from state_a [S] alone, keeping at most c >= 1
// states at a time (state_a's slot included) and recomputing the others forward (Griewank and
// Walther's revolve schedule). It first reaches state_{a+L} and starts the sweep there
// (blo_sweep_start: F_end, gx, lam, y_out), then leaves the adjoint of state_a in lam.
// F [K+1] (or NULL) gets F(x, y_k) at each state it reaches for the first time (k > a).
// *fwd_steps counts the LL steps taken forward.
typedef struct {
    ad_tape *t;
    const blo_problem *p;
    const blo_dynamics *d;
    const double *x;
    double *F;     // [K+1] or NULL
    double *y_out; // [n_y] or NULL: y at a+L
} blo_revolve_ctx;

blo_status blo_revolve_sweep(const blo_revolve_ctx *c, int a, int L, const double *state_a,
                             int slots, double *F_end, double *gx, double *lam,
                             long long *fwd_steps, blo_error *err);

#endif
