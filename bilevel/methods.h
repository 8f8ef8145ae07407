// hypertape bilevel methods beyond unrolling, and the upper-level loop that drives every method.
//
// - Implicit hypergradients at a point y ≈ y*(x): CG and Neumann solve H q = grad_y F with
//   H = d²f/dy² by Hessian-vector products from the tape, then grad = grad_x F - (d²f/dxdy) q.
// - First-order and alternating methods, each a short "direction" routine: BOME (value-function
//   barrier step, Alg. 1), GALET (N LL steps, T shadow steps on w, the x step of Eq. 13), BVFIM
//   (regularized value function, log barrier, Eqs. 18-21).
// - blo_solve: projected plain / momentum / Adam steps on x (and on a second variable z: the
//   initialization auxiliary, or BOME's theta) from any method's direction, with a per-iteration
//   record; it stops on a NaN with a clear error and keeps the last good iterate.
#ifndef HYPERTAPE_BLO_METHODS_H
#define HYPERTAPE_BLO_METHODS_H

#include "blo.h"

#ifdef __cplusplus
extern "C" {
#endif

// ---- implicit differentiation at a point ----------------------------------------------------------

typedef enum { BLO_IMPLICIT_CG, BLO_IMPLICIT_NEUMANN } blo_implicit_kind;

typedef struct {
    blo_implicit_kind kind;
    int iters;   // J: CG iterations (at most), or Neumann terms after the first
    double tol;  // CG stops when ||H q - g|| <= tol ||g||; 0 = run all J
    double eta;  // Neumann step: q = eta sum_{j=0..J} (I - eta H)^j g (needs eta ||H|| < 2); a
                 // series that diverges (residual > 1) is an error. Methods by name: 0 = the LL step
} blo_implicit_params;

typedef struct {
    int iters;       // iterations used
    double residual; // ||H q - grad_y F|| / ||grad_y F|| (CG: from its recursion; Neumann: one more HVP)
} blo_implicit_info;

blo_implicit_params blo_implicit_default_params(blo_implicit_kind kind); // J = 20, tol 1e-10, eta 0.1

// grad_x [n_x] of F(x, y*(x)) by the implicit function theorem at (x, y). t may be NULL.
blo_status blo_implicit_hypergrad(const blo_problem *p, const blo_implicit_params *ip,
                                  const double *x, const double *y, double *grad_x,
                                  blo_implicit_info *info, ad_tape *t, blo_error *err);


// ---- first-order and alternating methods ---------------------------------------------------------
// Each keeps what it carries between upper-level iterations in its own state struct (warm
// starts), and returns a direction for x (and, for BOME, for y) that blo_solve steps along.

// Value and gradients of F (upper = 1) or f (upper = 0) at (x, y); gx [n_x], gy [n_y] may be NULL.
blo_status blo_eval(const blo_problem *p, int upper, const double *x, const double *y,
                    double *value, double *gx, double *gy, ad_tape *t, blo_error *err);

// BOME (Alg. 1). Variables (x, y) = (v, theta), stepped together by blo_solve.
typedef struct {
    int T;          // inner GD steps on f from the current y (default 10)
    double alpha;   // inner step (default 0.05)
    double eta;     // barrier weight (default 0.5)
    int phi_value;  // 0: phi = eta ||grad qhat||^2 (paper default); 1: phi = eta qhat
    double eps;     // added to ||grad qhat||^2 (default 1e-8)
} blo_bome_params;

typedef struct {
    double qhat, lambda;
} blo_bome_info;

blo_bome_params blo_bome_default_params(void);
// d = grad F + lambda grad qhat at (x, y), split into dx [n_x], dy [n_y].
blo_status blo_bome_direction(const blo_problem *p, const blo_bome_params *bp, const double *x,
                              const double *y, double *dx, double *dy, blo_bome_info *info,
                              ad_tape *t, blo_error *err);

// GALET (Alg. 1): N LL steps on y, T shadow steps on w, the x direction of Eq. 13.
typedef struct {
    int N;          // LL GD steps per iteration (default 1)
    double beta;    // LL step (default 1)
    int T;          // shadow steps on w (default 1)
    double rho;     // shadow step, gamma in the appendix (default 0.1)
    int w_warm;     // 1: w starts from the previous iteration's w (default 1, spec reading 18)
} blo_galet_params;

typedef struct {
    blo_galet_params par;
    double *y, *w;  // [n_y] each, carried between iterations
} blo_galet_state;

blo_galet_params blo_galet_default_params(void);
blo_status blo_galet_init(blo_galet_state *s, const blo_problem *p, const blo_galet_params *gp,
                          const double *y0, blo_error *err);
void blo_galet_free(blo_galet_state *s);
// Updates s->y and s->w at x and writes d_x [n_x].
blo_status blo_galet_direction(blo_galet_state *s, const blo_problem *p, const double *x,
                               double *dx, ad_tape *t, blo_error *err);

// BVFIM (Alg. 1 with L = 1): at iteration l the schedule is mu_1 = mu_2 = mu0 / (l+1)^p,
// theta = theta0 / (l+1)^p, tau = tau0 / (l+1)^p (spec 3.3: the paper's defaults are in a
// supplement we do not have).
typedef struct {
    int Tz, Ty;            // z-loop and y-loop GD steps (default 50, 50)
    double s1, s2;         // their steps (default 0.1, 0.1)
    double mu0, theta0, tau0, power; // schedule (default 1, 1, 1, 1)
} blo_bvfim_params;

typedef struct {
    blo_bvfim_params par;
    double *z, *y;         // [n_y] each, warm starts
    int l;                 // iterations done (the schedule index)
    int resets, halvings;  // safeguard activity so far (reported)
    double gap;            // f*_mu(x) - f(x, y) at the last direction
} blo_bvfim_state;

blo_bvfim_params blo_bvfim_default_params(void);
blo_status blo_bvfim_init(blo_bvfim_state *s, const blo_problem *p, const blo_bvfim_params *bp,
                          const double *y0, blo_error *err);
void blo_bvfim_free(blo_bvfim_state *s);
// z-loop (Eq. 18), y-loop (Eq. 19) with the safeguard, and d_x = grad_x F + G (Eqs. 20-21). The
// log barrier needs f*_mu(x) - f(x, y) > 0: an infeasible warm start y is replaced by z (always
// feasible, since mu_2 > 0), and each y step backtracks (Armijo) on the barrier objective, which
// keeps y feasible and out of far basins of a periodic f; a gap <= 0 when forming G is an error,
// never a NaN. Both loops are projected onto the Y box.
blo_status blo_bvfim_direction(blo_bvfim_state *s, const blo_problem *p, const double *x,
                               double *dx, ad_tape *t, blo_error *err);

// ---- the upper-level loop ------------------------------------------------------------------------

typedef enum { BLO_OPT_PLAIN, BLO_OPT_MOMENTUM, BLO_OPT_ADAM } blo_optimizer;

// What one UL iteration did: the direction was taken at (x, z) = the iterate before the step.
typedef struct {
    int t;                // 0-based UL iteration
    const double *x, *z;  // the iterate after the step [n_x], [n_z] (z NULL when n_z = 0)
    double F, f;          // UL and LL objectives at the iterate the direction used (NaN if unknown)
    double grad_norm;     // ||(g_x, g_z)||
    int kbar;             // truncation point under PTT (or K; 0 when not applicable)
    double seconds;       // wall time of this iteration
    double extra;         // method-specific (BOME lambda, BVFIM barrier gap, CG residual)
} blo_record;

typedef void (*blo_record_fn)(const blo_record *r, void *user);

// A method's direction at UL iteration t: g_x [n_x], g_z [n_z] (z, g_z NULL when n_z = 0); it
// fills rec->F, f, kbar, extra. Called once per iteration, in order.
typedef blo_status (*blo_direction_fn)(void *method, const blo_problem *p, int t, const double *x,
                                       const double *z, double *gx, double *gz, blo_record *rec,
                                       blo_error *err);

typedef struct {
    int T;                 // UL iterations (>= 1)
    blo_optimizer opt;
    double lr_x, lr_z;     // step sizes (> 0)
    double momentum;       // heavy ball, in [0, 1)
    double beta1, beta2, adam_eps;
    blo_record_fn record;  // NULL = none
    void *record_user;
} blo_solve_params;

blo_solve_params blo_solve_default_params(void); // T = 100, plain, lr 0.1, momentum 0.9, Adam 0.9/0.999/1e-8

// Runs T projected steps from (x, z) in place: x onto the X box of p, z onto the Y box. On an
// error (the direction's, or a NaN/Inf in the direction or objectives) it stops, leaves the last
// good iterate in x and z, and says at which iteration. *done (optional) = iterations completed.
blo_status blo_solve(const blo_problem *p, blo_direction_fn dir, void *method, int n_z,
                     const blo_solve_params *sp, double *x, double *z, int *done, blo_error *err);

// ---- methods by name ---------------------------------------------------------------------------
// The names a CLI exposes, composed the way the papers compose them: an unrolled method is a
// dynamics (gd, bda, nesterov, accel, momentum) plus truncation choices (T-RHG, PTT) plus the
// initialization auxiliary (IA, optionally with a prior); cg and neumann unroll the dynamics and
// differentiate implicitly at y_K; bvfim, bome and galet are their own loops.

typedef struct {
    const char *method;     // rhg trhg bda cg neumann ait aitp bvfim bome galet
    const char *dynamics;   // gd bda nesterov accel momentum (unrolled, cg, neumann)
    int K;                  // LL steps
    int truncate;           // T-RHG: back-propagate the last K' steps (0 = all)
    int ia, ptt;            // initialization auxiliary; pessimistic trajectory truncation
    int warm_start;         // 1: each UL iteration starts the LL from the last y (0: from y0, AIT Alg. 1)
    double graph_mb;        // graph mode's budget in MiB (blo_hypergrad_params.graph_budget); 0 = lean sweep
    double prior_lambda;    // IA prior lambda/2 ||z - z_p||^2 (> 0); < 0: the reading of AIT's
                            // first-iteration prior: z starts at z_p (blo_runner_z0)
    int prior_first_only;   // 1: the prior only at UL iteration 0, as AIT applies it
    const double *z_prior;  // z_p [n_y]
    blo_gd_params gd;
    blo_bda_params bda;
    blo_nesterov_params nesterov;
    blo_momentum_params momentum;
    blo_accel_params accel;
    blo_implicit_params implicit;
    blo_bome_params bome;
    blo_galet_params galet;
    blo_bvfim_params bvfim;
} blo_method_config;

// NULL-terminated lists of the names, with one-line summaries in the same order.
const char *const *blo_method_names(void);
const char *const *blo_method_summaries(void);
const char *const *blo_dynamics_names(void);
const char *const *blo_dynamics_summaries(void);

// The method's defaults (rhg: gd dynamics, K = 20; trhg: K' = K / 2; bda: BDA Eq. 10 with
// s_u = 0.7, s_l = 0.2, alpha_k = 0.5 / k; ait: IA + PTT; aitp: ait with the prior at iteration 0;
// ...). BLO_EARG for an unknown name.
blo_status blo_method_default_config(const char *method, blo_method_config *c, blo_error *err);

// A configured method bound to a problem, with its warm-start state; its direction drives blo_solve.
typedef struct blo_runner blo_runner;

blo_status blo_runner_new(blo_runner **r, const blo_problem *p, const blo_method_config *c,
                          const double *y0, blo_error *err);
void blo_runner_free(blo_runner *r);
// Size of the second variable blo_solve steps (IA's z, BOME's y), 0 if none.
int blo_runner_n_z(const blo_runner *r);
// Its start [n_z]: y0, or z_p for AIT_P's default prior (the first-iteration prior with lambda =
// 1/lr_z lands the first plain step at z_p; starting there holds for any optimizer).
void blo_runner_z0(const blo_runner *r, const double *y0, double *z);
// The direction function for blo_solve (pass the runner as `method`).
blo_direction_fn blo_runner_direction(void);
// Seconds the runner's tape spent in matrix products so far (its tape times them).
double blo_runner_blas_seconds(const blo_runner *r);
// The runner's tape, for benchmarks: its product kernel (ad_tape_thin_products).
ad_tape *blo_runner_tape(blo_runner *r);
// The LL dynamics the runner unrolls (NULL for bome, galet, bvfim).
const blo_dynamics *blo_runner_dynamics(const blo_runner *r);
// The LL iterate of the last direction [n_y] (y_K, y_Kbar, GALET's or BVFIM's y, BOME's y).
const double *blo_runner_y(const blo_runner *r);
// The method's LL solution at (x, z) for evaluation: y_K of its dynamics from y0 (or z under IA)
// for unrolled and implicit methods, all K steps even under PTT (spec 7.3 evaluates the LL model
// after K steps); the carried y of bome, galet, bvfim (not advanced).
blo_status blo_runner_solution(blo_runner *r, const double *x, const double *z, double *y,
                               blo_error *err);

#ifdef __cplusplus
}
#endif

#endif
