// Method families: what several method types share. The unrolled (iterative differentiation)
// methods rhg, trhg, bda, ait and aitp are one driver with different defaults, as the papers
// compose them (a dynamics, truncation, PTT, the initialization auxiliary and its prior); cg and
// neumann are one driver (unroll K steps, then differentiate implicitly at y_K) with two solvers.
// Each method's own file holds its type: its name, summary and defaults. The heads of the
// states (an LL start and y_K as the solution; or the vectors a first-order method carries) are
// in family.c. Private to bilevel/.
#ifndef HYPERTAPE_BLO_FAMILY_H
#define HYPERTAPE_BLO_FAMILY_H

#include "internal.h"

// Rows every LL family has, written once.
#define BLO_ROW_LL_ITERS(T) BLO_ROW_INT(T, K, "ll_iters", 1, BLO_MAX_ITERS, "K", "LL steps K")
#define BLO_ROW_WARM_START(T) \
    BLO_ROW_BOOL(T, warm_start, "warm_start", "start each UL iteration's LL from the last y")

// ---- unrolled: reverse mode through K steps of the dynamics (blo_hypergrad) -------------------------

typedef struct {
    int K;           // ll_iters
    int truncate;    // T-RHG's K' (0 = all steps; -1 = K / 2, resolved)
    int ia, ptt;
    double prior;    // IA prior lambda (> 0 implies ia)
    int prior_every; // the prior at every UL iteration, not only the first
    int prior_start; // z starts at the problem's z_p (implies ia)
    int warm_start;  // each UL iteration starts the LL from the last y (without IA)
    double graph_mb; // graph mode's budget (blo_hypergrad_params.graph_budget) in MiB
} blo_unrolled_params;

extern const blo_setting blo_unrolled_settings[];
blo_status blo_unrolled_resolve(void *params, const blo_dynamics *d, blo_error *err);
unsigned blo_unrolled_needs(const void *params);
blo_status blo_unrolled_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err);
blo_status blo_unrolled_direction(void *state, int t, const double *x, const double *z, double *gx,
                                  double *gz, double *y, blo_record *rec, blo_error *err);
blo_status blo_unrolled_phi(void *state, const double *x, const double *z, double *value,
                            blo_error *err);

// A method of the unrolled family: name, summary, default dynamics and defaults.
#define BLO_UNROLLED_TYPE(NAME, SUMMARY, DYN, DEFAULTS)                                             \
    {NAME, SUMMARY, BLO_NEEDS_DYNAMICS | BLO_NEEDS_HVP, BLO_GRAD_EXACT, DYN,                      \
     sizeof(blo_unrolled_params), &DEFAULTS, blo_unrolled_settings, blo_unrolled_resolve,          \
     blo_unrolled_needs, blo_unrolled_init, blo_unrolled_direction, blo_ll_solution,             \
     blo_unrolled_phi, blo_ll_save, blo_ll_load, blo_ll_free}

// ---- implicit: K steps of the dynamics, then CG or Neumann at y_K ------------------------------------

typedef struct {
    int K;           // ll_iters
    int kind;        // a blo_implicit_kind (the type's, not a setting)
    int J;           // iterations
    double tol;      // CG: relative residual
    double eta;      // Neumann: step (0 = the dynamics' LL step, resolved)
    int warm_start;
} blo_implicit_method_params;

blo_status blo_implicit_method_resolve(void *params, const blo_dynamics *d, blo_error *err);
blo_status blo_implicit_method_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                                    blo_error *err);
blo_status blo_implicit_method_direction(void *state, int t, const double *x, const double *z,
                                         double *gx, double *gz, double *y, blo_record *rec,
                                         blo_error *err);

// An implicit method blo_method_NAME from its file's `defaults`, with its table: K, J (its help),
// the solver's own setting, warm starts.
#define BLO_IMPLICIT_METHOD(NAME, SUMMARY, J_HELP, OWN_ROW)                                         \
    static const blo_setting settings[] = {                                                         \
        BLO_ROW_LL_ITERS(blo_implicit_method_params),                                              \
        BLO_ROW_INT(blo_implicit_method_params, J, "J", 0, BLO_MAX_ITERS, "J", J_HELP), OWN_ROW,    \
        BLO_ROW_WARM_START(blo_implicit_method_params), BLO_ROW_END};                              \
    const blo_method_type blo_method_##NAME = {                                                     \
        #NAME, SUMMARY, BLO_NEEDS_DYNAMICS | BLO_NEEDS_HVP, BLO_GRAD_APPROX, "gd",                  \
        sizeof(blo_implicit_method_params), &defaults, settings, blo_implicit_method_resolve, NULL, \
        blo_implicit_method_init, blo_implicit_method_direction, blo_ll_solution,                  \
        blo_ll_phi, blo_ll_save, blo_ll_load, blo_ll_free}

// ---- what both families share: an LL start y0 that warm starts move, and y_K as the solution ------

// The head of both families' states: the solution, save, load and free below work on it.
typedef struct {
    const blo_problem *p;
    blo_dynamics dyn;
    ad_tape *tape;
    int K, ia;       // the LL steps the solution takes; ia: it starts from z, else from y0
    double *y0;      // the LL start [n_y] (warm starts move it)
    double *y0_ref;  // the start the last direction used [n_y] (for phi)
    double *x_ref;   // the x the last direction was taken at [n_x]
    double *states;  // [(K+1) S] (the implicit family's unroll; NULL for the unrolled one)
} blo_ll_state;

// Allocates the head (size bytes, the family's state struct that begins with it) for env.
blo_status blo_ll_new(void **state, size_t size, const blo_method_env *env, int K, int ia,
                      int keep_states, blo_error *err);
blo_status blo_ll_solution(void *state, const double *x, const double *z, double *y, blo_error *err);
// F(x, y_K(x)) from the start the last direction used (y0_ref): the value fhg differentiates and
// cg and neumann approximate the gradient of.
blo_status blo_ll_phi(void *state, const double *x, const double *z, double *value, blo_error *err);
blo_status blo_ll_save(const void *state, blo_writer *w);
blo_status blo_ll_load(void *state, blo_reader *r, blo_error *err);
void blo_ll_free(void *state);
// *step as given, or the dynamics' LL step when it is 0 (Neumann's and DARTS's default).
blo_status blo_step_or_ll(double *step, const blo_dynamics *d, const char *method, blo_error *err);

// ---- first-order methods' head: the vectors they carry between iterations ---------------------------

typedef struct {
    const blo_problem *p;
    ad_tape *tape;
    double *mem;  // [n]: what is carried first ([saved] doubles, the y they report first), then scratch
    size_t saved;
} blo_fo_state;

// Allocates the head (size bytes, the method's state struct that begins with it) with mem of n
// doubles (zeros) and its first n_y the LL start.
blo_status blo_fo_new(void **state, size_t size, const blo_method_env *env, size_t n, size_t saved,
                      blo_error *err);
// The y carried (mem[0 : n_y]; from the last direction, not advanced at x).
blo_status blo_fo_solution(void *state, const double *x, const double *z, double *y, blo_error *err);
blo_status blo_fo_save(const void *state, blo_writer *w);
blo_status blo_fo_load(void *state, blo_reader *r, blo_error *err);
void blo_fo_free(void *state);

#endif
