// Method families: what several method types share. The unrolled (iterative differentiation)
// methods rhg, trhg, bda, ait and aitp are one driver with different defaults, as the papers
// compose them (a dynamics, truncation, PTT, the initialization auxiliary and its prior); cg,
// neumann, minres and gmres are one driver (unroll K steps, then differentiate implicitly at the
// state reached) with four solvers, gmres at the fixed point of the dynamics' step.
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
    int warm_steps;  // the warm start keeps y_n of the K steps (0 = the direction's y: y_K, y_Kbar under PTT)
    double graph_mb; // graph mode's budget (blo_hypergrad_params.graph_budget) in MiB
    double memory_mb; // the sweep's memory budget (blo_hypergrad_params.memory_budget) in MiB; 0 = none
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

// ---- implicit: K steps of the dynamics, then a linear solve at the state reached ---------------------

typedef struct {
    int K;           // ll_iters
    int kind;        // a blo_implicit_kind (the type's, not a setting)
    int J;           // iterations
    double tol;      // CG: relative residual
    double eta;      // Neumann: step (0 = the dynamics' LL step, resolved)
    int warm_start;
    int restart;     // GMRES(m)
    int fixed_point; // 1: solve at the fixed point of the dynamics' step (the type's, not a setting)
} blo_implicit_method_params;

blo_status blo_implicit_method_resolve(void *params, const blo_dynamics *d, blo_error *err);
blo_status blo_implicit_method_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                                    blo_error *err);
blo_status blo_implicit_method_direction(void *state, int t, const double *x, const double *z,
                                         double *gx, double *gz, double *y, blo_record *rec,
                                         blo_error *err);

// An implicit method blo_method_NAME from its file's `defaults`, with its table: K, J (its help),
// the solver's own settings (one row or more), warm starts; its default dynamics DYN.
#define BLO_IMPLICIT_METHOD_DYN(NAME, DYN, SUMMARY, J_HELP, ...)                                    \
    static const blo_setting settings[] = {                                                         \
        BLO_ROW_LL_ITERS(blo_implicit_method_params),                                              \
        BLO_ROW_INT(blo_implicit_method_params, J, "J", 0, BLO_MAX_ITERS, "J", J_HELP), __VA_ARGS__, \
        BLO_ROW_WARM_START(blo_implicit_method_params), BLO_ROW_END};                              \
    const blo_method_type blo_method_##NAME = {                                                     \
        #NAME, SUMMARY, BLO_NEEDS_DYNAMICS | BLO_NEEDS_HVP, BLO_GRAD_APPROX, DYN,                   \
        sizeof(blo_implicit_method_params), &defaults, settings, blo_implicit_method_resolve, NULL, \
        blo_implicit_method_init, blo_implicit_method_direction, blo_ll_solution,                  \
        blo_ll_phi, blo_ll_save, blo_ll_load, blo_ll_free}
// The same on gd dynamics.
#define BLO_IMPLICIT_METHOD(NAME, SUMMARY, J_HELP, ...) \
    BLO_IMPLICIT_METHOD_DYN(NAME, "gd", SUMMARY, J_HELP, __VA_ARGS__)
// The Krylov solvers' stopping row, WHO naming the solver.
#define BLO_ROW_IMPLICIT_TOL(WHO)                                         \
    BLO_ROW_DBL(blo_implicit_method_params, tol, "tol", 0, INFINITY, 0, "t", \
                WHO " stops at this relative residual (0 = run all J)")

// ---- first-order meta-learning: K steps of the dynamics from z, then a first-order direction ----------
// fomaml: g_z = grad_y F(x, y_K) (the Jacobian of y_K in z taken as I); reptile: g_z = z - y_K,
// so a plain step of lr_z = epsilon is Reptile's z + epsilon (y_K - z). Both: g_x = grad_x F(x, y_K).

typedef struct {
    int K;    // ll_iters
    int kind; // the type's (not a setting): BLO_FO_META_*
} blo_fo_meta_params;

enum { BLO_FO_META_FOMAML, BLO_FO_META_REPTILE };

extern const blo_setting blo_fo_meta_settings[];
blo_status blo_fo_meta_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err);
blo_status blo_fo_meta_direction(void *state, int t, const double *x, const double *z, double *gx,
                                 double *gz, double *y, blo_record *rec, blo_error *err);

// A first-order meta-learning method: name, summary and defaults (the kind in them).
#define BLO_FO_META_TYPE(NAME, SUMMARY, DEFAULTS)                                                  \
    {NAME, SUMMARY, BLO_NEEDS_DYNAMICS, BLO_GRAD_NONE, "gd", sizeof(blo_fo_meta_params),           \
     &DEFAULTS, blo_fo_meta_settings, NULL, NULL, blo_fo_meta_init, blo_fo_meta_direction,         \
     blo_ll_solution, NULL, NULL, NULL, blo_ll_free}

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
    double *scratch; // a method's own vectors (blo_ll_new_scratch; NULL otherwise), freed with it
} blo_ll_state;

// Refuses K + 1 states of the dynamics that would not fit in this machine's memory.
blo_status blo_ll_check_states(const blo_method_env *env, int K, blo_error *err);
// Allocates the head (size bytes, the family's state struct that begins with it) for env, with
// K + 1 states when keep_states (checked first).
blo_status blo_ll_new(void **state, size_t size, const blo_method_env *env, int K, int ia,
                      int keep_states, blo_error *err);
// blo_ll_new with K's states kept and n more doubles of scratch (h->scratch), freed by blo_ll_free.
blo_status blo_ll_new_scratch(void **state, size_t size, const blo_method_env *env, int K, size_t n,
                              blo_error *err);
blo_status blo_ll_solution(void *state, const double *x, const double *z, double *y, blo_error *err);
// The warm start that keeps only n of the K steps: y0 = y_n from the start the last direction
// used (y0_ref) at x (the unrolled GAN's D step, Metz et al. 2017, Sec. 3).
blo_status blo_ll_warm_steps(blo_ll_state *h, const double *x, int n, blo_error *err);
// A direction's K steps from y0 (not under IA): x and y0 recorded for phi, then y_K [n_y] as
// blo_ll_solution takes it (with the states kept, the final one is at states + K S).
blo_status blo_ll_steps(blo_ll_state *h, const double *x, double *y, blo_error *err);
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
    ad_rng *rng;  // the solver's generator (stochastic methods draw their minibatches from it)
} blo_fo_state;

// Allocates the head (size bytes, the method's state struct that begins with it) with mem of n
// doubles (zeros) and its first n_y the LL start.
blo_status blo_fo_new(void **state, size_t size, const blo_method_env *env, size_t n, size_t saved,
                      blo_error *err);
// The same for a method that steps y as the solver's second variable z (n_z = n_y), which starts
// at y0 (*n_z and *z0 are set), with its params (par_size bytes) copied to par_offset of its state.
blo_status blo_fo_new_z(void **state, size_t size, const blo_method_env *env, size_t n, size_t saved,
                        size_t par_offset, size_t par_size, int *n_z, double **z0, blo_error *err);
// A value-function penalty of (x, z) with yhat held fixed (pgdo, meso):
//     phi = a F(x, z) + b [f(x, z) - f(x, yhat)] - e/2 ||yhat - z||^2.
typedef struct {
    double a, b, e;
} blo_penalty;

// phi's value, or its gradient gx [n_x], gz [n_y] (scratch: 2 n_x + n_y doubles).
blo_status blo_penalty_value(const blo_problem *p, const blo_penalty *w, const double *x, const double *z,
                             const double *yhat, double *value, ad_tape *t, blo_error *err);
blo_status blo_penalty_grad(const blo_problem *p, const blo_penalty *w, const double *x, const double *z,
                            const double *yhat, double *scratch, double *gx, double *gz, ad_tape *t,
                            blo_error *err);
// The y carried (mem[0 : n_y]; from the last direction, not advanced at x).
blo_status blo_fo_solution(void *state, const double *x, const double *z, double *y, blo_error *err);
// z itself, for methods that step y as the solver's second variable (bome, pgdo, meso).
blo_status blo_fo_z_solution(void *state, const double *x, const double *z, double *y, blo_error *err);
blo_status blo_fo_save(const void *state, blo_writer *w);
blo_status blo_fo_load(void *state, blo_reader *r, blo_error *err);
void blo_fo_free(void *state);

#endif
