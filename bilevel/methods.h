// hypertape bilevel methods and the solver that runs them.
//
// - A method is a blo_method_type: a const table of facts (name, summary, what it needs, what its
//   direction is the gradient of, its params with defaults and settings) and functions (init,
//   direction, solution, phi, save, load, free). The built-in ones are in a registry, one file
//   each; a program can write its own and hand it to blo_config_new.
// - A blo_config holds a method, its LL dynamics (for methods that unroll one) and the solver's
//   own settings, all set by name through the settings tables.
// - A blo_solver runs the upper-level (UL) loop: projected plain / momentum / Adam steps on x (and
//   on a second variable z: the initialization auxiliary, or BOME's y) along the method's
//   direction, one record per iteration. It can be saved to a file and loaded again; a run
//   resumed from its file ends with the same bits as one that ran through.
// - blo_check_hypergrad compares a method's hypergradient with central differences of the value
//   it differentiates, on any problem.
// - Implicit differentiation at a point (CG, Neumann, MINRES, GMRES; at the LL's stationary point or at
//   a fixed point of the dynamics), on which the cg, neumann, minres and gmres methods stand.
#ifndef HYPERTAPE_BLO_METHODS_H
#define HYPERTAPE_BLO_METHODS_H

#include "blo.h"

#ifdef __cplusplus
extern "C" {
#endif

// Value and gradients of F (upper = 1) or f (upper = 0) at (x, y); gx [n_x], gy [n_y] may be NULL.
blo_status blo_eval(const blo_problem *p, int upper, const double *x, const double *y,
                    double *value, double *gx, double *gy, ad_tape *t, blo_error *err);

// ---- implicit differentiation at a point ----------------------------------------------------------
// Two linear systems, each solved from its products (no matrix is formed):
// - the LL's stationarity grad_y f(x, y*) = 0: H q = grad_y F with H = d²f/dy² [n_y, n_y]
//   (blo_implicit_hypergrad), then grad = grad_x F - (d²f/dx dy) q;
// - the fixed point s* = Phi_k(x, s*) of a dynamics' step map on its state [S]:
//   (I - dPhi/ds)^T q = dF/ds, then grad = grad_x F + (dPhi/dx)^T q (blo_fixed_point_hypergrad).
// The solvers: CG (H symmetric positive definite), MINRES (H symmetric, indefinite allowed), GMRES
// (any non-singular operator), Neumann (spectral radius of I - eta A below 1).

typedef enum {
    BLO_IMPLICIT_CG,      // conjugate gradients; stops at non-positive curvature (breakdown = 1)
    BLO_IMPLICIT_NEUMANN, // q = eta sum_{j=0..J} (I - eta A)^j g
    BLO_IMPLICIT_MINRES,  // Paige and Saunders (1975): least ||A q - g|| over the Krylov space
    BLO_IMPLICIT_GMRES,   // Saad and Schultz (1986), restarted every `restart` iterations
} blo_implicit_kind;

typedef struct {
    blo_implicit_kind kind;
    int iters;   // J: CG / MINRES / GMRES iterations (at most; products of A), or Neumann terms
                 // after the first
    double tol;  // CG, MINRES, GMRES stop when ||A q - g|| <= tol ||g||; 0 = run all J
    double eta;  // Neumann step: q = eta sum_{j=0..J} (I - eta A)^j g (needs eta ||A|| < 2); a
                 // series that diverges (residual > 1) is an error
    int restart; // GMRES(m): the Krylov vectors [m + 1, n] kept before a restart (>= 1)
} blo_implicit_params;

typedef struct {
    int iters;       // iterations used
    double residual; // ||A q - g|| / ||g||: CG from its recursion; Neumann, MINRES and GMRES from
                     // one more product with the q returned
    int breakdown;   // 1: the solver stopped before its tolerance because it could not go on: CG
                     // met non-positive curvature (d^T H d <= sqrt(eps) ||d|| ||H d||), MINRES or
                     // GMRES a singular projected system; q is the last iterate, residual says how good
} blo_implicit_info;

// J = 20, tol 1e-10, eta 0.1, restart 20
blo_implicit_params blo_implicit_default_params(blo_implicit_kind kind);

// grad_x [n_x] of F(x, y*(x)) by the implicit function theorem at (x, y). t may be NULL.
blo_status blo_implicit_hypergrad(const blo_problem *p, const blo_implicit_params *ip,
                                  const double *x, const double *y, double *grad_x,
                                  blo_implicit_info *info, ad_tape *t, blo_error *err);

// grad_x [n_x] of F(x, read_y(s*(x))) for the fixed point s* = Phi_k(x, s*) of d's step k, taken
// at state [S] (a fixed point, or the state a run of the dynamics reached): one step recorded,
// each product of (I - dPhi/ds)^T one vector-Jacobian product through it. The operator is not
// symmetric: ip->kind is GMRES or Neumann (CG and MINRES are refused). t may be NULL.
blo_status blo_fixed_point_hypergrad(const blo_problem *p, const blo_dynamics *d, int k,
                                     const blo_implicit_params *ip, const double *x,
                                     const double *state, double *grad_x, blo_implicit_info *info,
                                     ad_tape *t, blo_error *err);

// ---- a method's state in a file ---------------------------------------------------------------------
// A method saves what it carries between UL iterations as bytes and loads them back. The file is
// for the same build on the same kind of machine (doubles are written as they are in memory).

typedef struct blo_writer blo_writer;
typedef struct blo_reader blo_reader;
blo_status blo_write(blo_writer *w, const void *data, size_t n);
// BLO_EIO ("the state is truncated") when fewer than n bytes are left.
blo_status blo_read(blo_reader *r, void *data, size_t n);

// ---- method types -------------------------------------------------------------------------------

enum {
    BLO_NEEDS_DYNAMICS = 1, // unrolls an LL dynamics (a blo_config has one for it)
    BLO_NEEDS_HVP = 2,      // takes Hessian-vector products of f
    BLO_NEEDS_TASKS = 4,    // a batch of tasks sharing x
    BLO_NEEDS_PRIOR = 8,    // the problem's prior point z_p (returned by needs_of, per params)
};

// What a method's direction is the gradient of, for blo_check_hypergrad.
typedef enum {
    BLO_GRAD_EXACT,  // exactly the gradient of the value phi reports (unrolled methods)
    BLO_GRAD_APPROX, // an approximation of it that converges as the method's settings grow (CG,
                     // Neumann: of F(x, y_K(x)) as y_K -> y* and J grows; iMAML: of
                     // F(x, y_K(x, z)) as y_K -> y_lambda and CG converges)
    BLO_GRAD_NONE,   // a direction, not the gradient of an objective (BOME, BVFIM, GALET, DARTS,
                     // FOMAML, Reptile)
} blo_grad_claim;

typedef struct blo_method_type blo_method_type; // below

// What a method's init gets: the problem, its params (settings applied, resolved), the dynamics
// (for methods that need one), the LL start, the problem's prior point z_p (NULL if none), the
// solver's tape (rewound to empty at each UL iteration) and its seeded generator.
typedef struct {
    const blo_problem *p;
    const void *params;
    const blo_dynamics *dyn;
    const double *y0;      // [n_y]
    const double *z_prior; // [n_y] or NULL
    ad_tape *tape;
    ad_rng *rng;
    const blo_method_type *method; // the method being made (a wrapper: the one it wraps, tasks.h)
} blo_method_env;

// What one UL iteration did, for its record. The direction fills kbar and extra.
typedef struct {
    int t;                // 0-based UL iteration; the record describes x_t, the iterate the
                          // direction was taken at (t = iterations done for the final record)
    const double *x, *z;  // x_t [n_x], z_t [n_z] (z NULL when n_z = 0)
    const double *y;      // the LL iterate at x_t [n_y]: the direction's (final record: the
                          // method's solution at x_t)
    double F, f;          // F(x_t, y), f(x_t, y)
    double ll_residual;   // ||grad_y f(x_t, y)||: a lower level that diverges shows here
    double grad_norm;     // ||(g_x, g_z)|| of the direction at x_t (NaN in the final record)
    int kbar;             // truncation point under PTT (or K; 0 when not applicable)
    double seconds;       // wall time of this iteration
    double extra;         // method-specific (BOME lambda, BVFIM barrier gap, CG residual, GALET shadow residual)
    int final;            // 1: the record of the iterate a run ends at (no step taken from it)
} blo_record;

typedef struct blo_method_type {
    const char *name;
    const char *summary;          // one line
    unsigned needs;               // BLO_NEEDS_* flags
    blo_grad_claim claim;
    const char *dynamics;         // the default dynamics' name (when needs & BLO_NEEDS_DYNAMICS)
    size_t params_size;
    const void *defaults;         // a params struct holding the defaults
    const blo_setting *settings;  // its table
    // Optional: complete params from the dynamics (a Neumann step of 0 takes the LL step, T-RHG's
    // K' = -1 is K / 2) and check them. d is NULL for methods that use none.
    blo_status (*resolve)(void *params, const blo_dynamics *d, blo_error *err);
    // Optional: flags that depend on the params (BLO_NEEDS_PRIOR for an IA prior).
    unsigned (*needs_of)(const void *params);
    // The method's state for one run; *n_z: the size of the second variable the solver steps
    // (IA's z, BOME's y), 0 if none, and z0 its start (written when n_z > 0, [n_z]).
    blo_status (*init)(void **state, const blo_method_env *env, int *n_z, double **z0,
                       blo_error *err);
    // The direction at UL iteration t: gx [n_x], gz [n_z] (NULL when n_z = 0), y [n_y] the LL
    // iterate it used; rec gets kbar and extra. Called once per iteration, in order.
    blo_status (*direction)(void *state, int t, const double *x, const double *z, double *gx,
                            double *gz, double *y, blo_record *rec, blo_error *err);
    // The method's LL solution at (x, z) for evaluation [n_y], without changing its state.
    blo_status (*solution)(void *state, const double *x, const double *z, double *y,
                           blo_error *err);
    // The value the last direction differentiated, at (x, z), with what it held fixed still held
    // (NULL for BLO_GRAD_NONE).
    blo_status (*phi)(void *state, const double *x, const double *z, double *value,
                      blo_error *err);
    // What the state carries between iterations, to a file and back (NULL: nothing to carry).
    blo_status (*save)(const void *state, blo_writer *w);
    blo_status (*load)(void *state, blo_reader *r, blo_error *err);
    void (*free)(void *state);
} blo_method_type;

// The built-in methods, NULL-terminated, in the order programs list them; by name (NULL if none).
const blo_method_type *const *blo_method_registry(void);
const blo_method_type *blo_method_find(const char *name);

// ---- the configuration: a method, its dynamics and the solver's settings ----------------------------

typedef enum { BLO_OPT_PLAIN, BLO_OPT_MOMENTUM, BLO_OPT_ADAM } blo_optimizer;

// The UL loop's own settings (the "solver" group).
typedef struct {
    int T;                 // UL iterations (ul_iters)
    int opt;               // a blo_optimizer
    double lr_x, lr_z;     // step sizes (> 0)
    double momentum;       // heavy ball, in [0, 1)
    double beta1, beta2, adam_eps;
    int seed;              // of the solver's generator (methods that draw)
} blo_solve_params;

blo_solve_params blo_solve_default_params(void); // T = 100, plain, lr 0.1, momentum 0.9, Adam 0.9/0.999/1e-8
extern const blo_setting blo_solve_settings[];   // their table (ul_iters, optimizer, lr_x, ...)

// A group of settings: who owns it ("solver", "method", "dynamics"), its name (the method's or the
// dynamics' name; "solver"), its table and the params struct it describes.
typedef struct {
    const char *owner;
    const char *name;
    const blo_setting *table;
    void *params;
} blo_settings_group;

typedef struct blo_config blo_config;

// A method with its defaults, its default dynamics (if it needs one) and the solver's defaults.
blo_config *blo_config_new(const blo_method_type *m, blo_error *err);
blo_config *blo_config_copy(const blo_config *c, blo_error *err);
void blo_config_free(blo_config *c);
// Replaces the dynamics (its params reset to its defaults; set them after). BLO_EARG if the
// method unrolls none. A built-in one is also set by name: blo_config_set(c, "dynamics", "gd").
blo_status blo_config_set_dynamics(blo_config *c, const blo_dynamics_type *d, blo_error *err);
// Sets one setting by name in whichever group has it ("dynamics" picks the dynamics). BLO_EARG
// for a bad value or an unknown name (blo_config_has tells which).
blo_status blo_config_set(blo_config *c, const char *name, const char *value, blo_error *err);
int blo_config_has(const blo_config *c, const char *name);
// Sets "NAME=VALUE NAME=VALUE ..." (the dynamics first, wherever it is named, then the rest in
// order); stops at the first bad or unknown one.
blo_status blo_config_apply(blo_config *c, const char *assignments, blo_error *err);
// Formats the value of a setting (as blo_setting_format) into buf; NULL if there is none.
const char *blo_config_get(const blo_config *c, const char *name, char *buf, size_t n);
// The groups in order: solver, method, dynamics (if any). Returns how many (<= 3).
int blo_config_groups(const blo_config *c, blo_settings_group groups[3]);
const blo_method_type *blo_config_method(const blo_config *c);
const blo_dynamics_type *blo_config_dynamics(const blo_config *c); // NULL if none
// The method's flags for these params (its needs, and BLO_NEEDS_PRIOR when they use a prior).
unsigned blo_config_needs(const blo_config *c);
// Completes the method's params from the dynamics it will use (the method's resolve; n_y only
// sizes the dynamics) and checks every value against its bounds. Done by blo_solver_new too;
// programs call it to show resolved values.
blo_status blo_config_resolve(blo_config *c, int n_y, blo_error *err);
const blo_solve_params *blo_config_solve_params(const blo_config *c);

// ---- the solver --------------------------------------------------------------------------------

// Called after each UL iteration (and once for the final record). Nonzero stops the run after
// this iteration, with everything consistent: it can be saved, or stepped on.
typedef int (*blo_record_fn)(const blo_record *r, void *user);

typedef struct blo_solver blo_solver;

// A run of c's method on p from (x0, y0) (NULL = zeros); z_prior [n_y] is the problem's prior
// point for methods that use one (NULL if none). The configuration is copied and resolved.
blo_solver *blo_solver_new(const blo_problem *p, const blo_config *c, const double *x0,
                           const double *y0, const double *z_prior, blo_error *err);
void blo_solver_free(blo_solver *s);
void blo_solver_set_record(blo_solver *s, blo_record_fn fn, void *user);
// One UL iteration: the direction at x_t, a projected optimizer step, the record. On an error
// (the direction's, or a NaN/Inf in it, its objectives or the step) the iterate stays the last
// good one and the error is returned (and kept: blo_solver_error).
blo_status blo_solver_step(blo_solver *s);
// Steps until ul_iters iterations are done, an error, or the record callback stops it
// (BLO_STOPPED), then makes the final record (blo_solver_report) whatever the reason: the last
// record a run makes describes the x it returns.
blo_status blo_solver_run(blo_solver *s);
// The record of the current iterate (F, f, residual at the method's solution there), marked
// final, passed to the record callback too. For the end of a run: it describes the returned x.
blo_status blo_solver_report(blo_solver *s, blo_record *rec);
int blo_solver_iterations(const blo_solver *s); // UL iterations done
const double *blo_solver_x(const blo_solver *s); // [n_x]
const double *blo_solver_z(const blo_solver *s); // [n_z] (NULL when n_z = 0)
int blo_solver_n_z(const blo_solver *s);
// The method's LL solution at the current iterate [n_y].
blo_status blo_solver_solution(blo_solver *s, double *y, blo_error *err);
const blo_config *blo_solver_config(const blo_solver *s); // resolved
const char *blo_solver_error(const blo_solver *s);        // the last error, "" if none
// Mean of the records' kbar over the iterations done (NaN when no record had one).
double blo_solver_kbar_mean(const blo_solver *s);
// Saves the whole state (iterate, optimizer moments, step count, the method's state, the
// generator) to path (written to path.tmp, then renamed), with a caller's text meta stored as
// it is (the command keeps its run's settings there). A magic number, a version and a checksum
// guard it.
blo_status blo_solver_save(const blo_solver *s, const char *path, const char *meta,
                           blo_error *err);
// Whether blo_solver_save can write path, asked before a long run rather than after it: path
// is not a directory, and path.tmp can be created in its directory (it is, and removed).
// BLO_EARG or BLO_EIO naming what is wrong.
blo_status blo_solver_save_check(const char *path, blo_error *err);
// Loads a state saved by a solver of the same configuration (the run's length may differ) on
// the same problem sizes into s; a mismatch is BLO_EARG naming what differs.
blo_status blo_solver_load(blo_solver *s, const char *path, blo_error *err);
// The meta text of a saved state (malloc'd, the caller frees), to rebuild its problem and
// configuration before loading.
blo_status blo_solver_read_meta(const char *path, char **meta, blo_error *err);

// ---- checking a hypergradient ----------------------------------------------------------------------

typedef struct {
    double h;        // central-difference step (relative to max(1, |v_i|))
    double rtol, atol; // an entry passes if |a - n| <= atol + rtol * max(|a|, |n|)
    int max_coords;  // compare at most this many entries of (x, z), drawn by the seed; 0 = all
    uint64_t seed;
} blo_check_params;

typedef struct {
    blo_status status;  // BLO_OK, or why nothing was compared (a method with BLO_GRAD_NONE: BLO_EARG)
    int pass;
    blo_grad_claim claim;
    int checked;        // entries compared
    int worst_in_z;     // the worst entry is of z (else of x)
    int worst_index;
    double analytic, numeric, abs_err, rel_err;
    double worst_ratio; // max |a - n| / (atol + rtol max(|a|, |n|)); <= 1 passes; Inf on a NaN
    char msg[400];
} blo_check_report;

blo_check_params blo_check_default_params(void); // h 1e-6, rtol 1e-6, atol 1e-9, 40 entries, seed 1
// The hypergradient of c's method at (x, y0) on p (its first UL iteration's direction) against
// central differences of the value it differentiates (the method's phi). z_prior as for
// blo_solver_new.
blo_check_report blo_check_hypergrad(const blo_problem *p, const blo_config *c, const double *x,
                                     const double *y0, const double *z_prior,
                                     const blo_check_params *cp);

#ifdef __cplusplus
}
#endif

#endif
