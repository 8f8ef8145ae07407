// hypertape bilevel layer: the problem min_x F(x, y) s.t. y in argmin_y f(x, y), lower-level (LL)
// dynamics as step maps on an LL state, and hypergradients by reverse mode through the unrolled
// LL trajectory (RHG, truncated T-RHG, pessimistic trajectory truncation PTT, initialization
// auxiliary IA with an optional prior), with the value each hypergradient differentiates.
//
// Everything differentiable is a tape expression (ad.h): F and f are callbacks that record
// scalars on a tape, a step map records state_{k+1} = Phi_k(x, state_k), and every derivative
// (the gradient inside a step, the step's vector-Jacobian product in the sweep) comes from the tape.
//
// Memory. The reverse sweep never holds the trajectory's graph: the forward pass keeps the K+1
// states as doubles [(K+1) * S] and rewinds the tape after each step; the sweep re-records one
// step at a time at the stored state. Peak memory is O(K S) doubles plus one step's graph, or
// within a budget by checkpointing (blo_hypergrad_params.memory_budget).
//
// Settings are data: every built-in dynamics (and every method, methods.h) describes its
// parameters in a table of blo_setting rows, from which programs build their options and reports.
//
// Errors never abort: every entry point returns a blo_status and, when given a blo_error, a
// message saying what was wrong (an argument, a callback's output, or the tape's own error).
#ifndef HYPERTAPE_BLO_H
#define HYPERTAPE_BLO_H

#include "ad.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BLO_OK = 0,
    BLO_EARG,      // a bad argument: a size, a step size, K, a missing pointer, a box with lo > hi
    BLO_ECALLBACK, // a callback returned AD_NONE or a tensor of the wrong shape
    BLO_ETAPE,     // the tape recorded an error (domain, NaN/Inf check, shape inside a callback)
    BLO_ENOMEM,    // an allocation or the tape's memory cap failed
    BLO_EIO,       // a file could not be read or written (a solver's state)
    BLO_STOPPED,   // a run was stopped by its record callback (not an error: it can go on)
} blo_status;

typedef struct {
    blo_status status;
    char msg[320];
} blo_error;

const char *blo_status_name(blo_status s);

// ---- settings as data ---------------------------------------------------------------------------
// A table of blo_setting rows (ended by a row whose name is NULL) describes a params struct:
// each row names one field, its type, its bounds and its help. Programs parse NAME=VALUE, print
// help and report values from the tables; nothing about a setting is written twice.

typedef enum {
    BLO_SET_INT,    // int; bounds [lo, hi]
    BLO_SET_DOUBLE, // double, finite; bounds [lo, hi] (open with BLO_SET_LO_OPEN / _HI_OPEN)
    BLO_SET_BOOL,   // int 0 / 1; "1", "0", "true", "false", "yes", "no", "on", "off"
    BLO_SET_CHOICE, // int: the index of the word in choices
    BLO_SET_STRING, // char [size] (a path, say)
} blo_setting_type;

enum {
    BLO_SET_LO_OPEN = 1, // the lower bound is excluded (a step size > 0)
    BLO_SET_HI_OPEN = 2, // the upper bound is excluded (a momentum < 1)
    BLO_SET_LENGTH = 4,  // the run's length: may differ between a saved run and its resumption
};

typedef struct {
    const char *name;    // the key in NAME=VALUE and in reports; programs make --name-with-dashes
    blo_setting_type type;
    size_t offset;       // of the field in the params struct
    double lo, hi;       // INT, DOUBLE: accepted range
    unsigned flags;
    const char *const *choices; // CHOICE: the words, NULL-terminated
    size_t size;         // STRING: bytes of the char array (with its terminating 0)
    const char *arg;     // the value's name in help ("K", "s")
    const char *help;
} blo_setting;

// Table rows: BLO_ROW_DBL(params type, field, "name", lo, hi, flags, "arg", "help"), ...; a
// table ends with BLO_ROW_END.
#define BLO_ROW_INT(T, f, name, lo, hi, arg, help) \
    {name, BLO_SET_INT, offsetof(T, f), lo, hi, 0, NULL, 0, arg, help}
#define BLO_ROW_DBL(T, f, name, lo, hi, flags, arg, help) \
    {name, BLO_SET_DOUBLE, offsetof(T, f), lo, hi, flags, NULL, 0, arg, help}
#define BLO_ROW_BOOL(T, f, name, help) {name, BLO_SET_BOOL, offsetof(T, f), 0, 1, 0, NULL, 0, NULL, help}
#define BLO_ROW_CHOICE(T, f, name, words, arg, help) \
    {name, BLO_SET_CHOICE, offsetof(T, f), 0, 0, 0, words, 0, arg, help}
#define BLO_ROW_STRING(T, f, name, arg, help) \
    {name, BLO_SET_STRING, offsetof(T, f), 0, 0, 0, NULL, sizeof(((T *)0)->f), arg, help}
#define BLO_ROW_END {NULL, BLO_SET_INT, 0, 0, 0, 0, NULL, 0, NULL, NULL}

// The row named name in table, or NULL.
const blo_setting *blo_setting_find(const blo_setting *table, const char *name);
// Parses value into the row's field of params; on a bad value returns BLO_EARG with a message
// naming the setting, what was given and what is accepted ("s_l: bad value '-1' (a number > 0)").
blo_status blo_setting_parse(const blo_setting *row, void *params, const char *value, blo_error *err);
// The field's value as text that blo_setting_parse reads back to the same bits (the shortest
// such for doubles, the word for choices, 1 / 0 for flags). Returns buf.
const char *blo_setting_format(const blo_setting *row, const void *params, char *buf, size_t n);
// BLO_OK if every field of params is within its row's bounds; else BLO_EARG naming owner and the
// setting (for params filled in directly rather than parsed).
blo_status blo_settings_check(const blo_setting *table, const void *params, const char *owner,
                              blo_error *err);
// Calls fn(name, value, ctx) on each NAME=VALUE word of s (separated by spaces), stopping at the
// first error; a word without '=' is an error. The one parser of settings strings.
blo_status blo_assignments_each(const char *s, blo_status (*fn)(const char *name, const char *value,
                                                                  void *ctx, blo_error *err),
                                 void *ctx, blo_error *err);
// Applies "NAME=VALUE NAME=VALUE ..." (words separated by spaces) to params. An unknown name is an
// error naming it unless skip_unknown; the first error stops.
blo_status blo_settings_apply(const blo_setting *table, void *params, const char *assignments,
                              int skip_unknown, blo_error *err);

// ---- the problem --------------------------------------------------------------------------------

// Records a scalar objective of x [n_x] and y [n_y] on t. Returns AD_NONE on failure.
typedef ad_var (*blo_objective_fn)(ad_tape *t, ad_var x, ad_var y, void *user);

typedef struct {
    int n_x, n_y;
    blo_objective_fn F; // upper level F(x, y)
    blo_objective_fn f; // lower level f(x, y)
    // Boxes, one bound per entry; NULL = unbounded on that side. X is for the UL loop; Y is the
    // projection every built-in step map applies.
    const double *x_lo, *x_hi; // [n_x]
    const double *y_lo, *y_hi; // [n_y]
    void *user;
    // Minibatches (stochastic methods: stocbio, soba, f2sa). NULL = F and f always see the full
    // data. Otherwise sample(user, which, rng) selects what F and f see next: BLO_SAMPLE_LL draws
    // a new minibatch for f, BLO_SAMPLE_UL one for F (each drawn only from rng, the solver's
    // seeded generator, which its state file keeps: a resumed run draws the same ones), and
    // BLO_SAMPLE_FULL (rng NULL) selects the full data for both, as it is before any draw.
    // Returns 0, or nonzero on failure. The selection lives in user; methods that never sample
    // see the full data.
    int (*sample)(void *user, int which, ad_rng *rng);
    // NULL: one problem. Else the problem is one task of a family and this draws the others (a
    // batch per UL step, tasks.h); user points at the task.
    const struct blo_task_set *tasks;
    // NULL: one process. Else the processes the run is spread over (comm.h): a task set's batch
    // is split across its ranks, and a sharded model reduces its sums over them.
    struct blo_comm *comm;
} blo_problem;

typedef enum { BLO_SAMPLE_FULL, BLO_SAMPLE_LL, BLO_SAMPLE_UL } blo_sample_which;

// Calls p->sample (nothing when it is NULL); a failure is BLO_ECALLBACK naming which draw.
blo_status blo_sample(const blo_problem *p, blo_sample_which which, ad_rng *rng, blo_error *err);

// Checks sizes, callbacks and boxes, and records F and f once at (x, y) (NULL = zeros), deferred
// (nothing computed), to check that both return scalars. t may be NULL (a private tape is used).
blo_status blo_problem_check(const blo_problem *p, const double *x, const double *y, ad_tape *t,
                             blo_error *err);

// Helpers for step maps (built-in and user-written). Each validates the callback's output; a bad
// one is recorded on the tape as an error naming the callback, and AD_NONE is returned.
ad_var blo_call_F(ad_tape *t, const blo_problem *p, ad_var x, ad_var y);
ad_var blo_call_f(ad_tape *t, const blo_problem *p, ad_var x, ad_var y);
// grad_y f(x, y) and grad_y F(x, y) [n_y], recorded with AD_CREATE_GRAPH so a step through them is
// differentiable (the sweep's second-order terms). y must not be a constant.
ad_var blo_ll_grad_y(ad_tape *t, const blo_problem *p, ad_var x, ad_var y);
ad_var blo_ul_grad_y(ad_tape *t, const blo_problem *p, ad_var x, ad_var y);
// Proj_Y(y): clamp to the Y box (identity when unbounded). Derivative 1 inside, 0 outside.
ad_var blo_y_project(ad_tape *t, const blo_problem *p, ad_var y);

// ---- LL dynamics --------------------------------------------------------------------------------

typedef struct blo_dynamics blo_dynamics;

// state_0 [S] from the LL start y0 [n_y] (under IA y0 = z is a parameter, so keep it differentiable).
typedef ad_var (*blo_init_fn)(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var y0);
// One step, k = 0..K-1: state_{k+1} [S] = Phi_k(x, state_k). k is passed for schedules.
typedef ad_var (*blo_step_fn)(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k,
                              ad_var x, ad_var state);
// y [n_y] read out of a state [S].
typedef ad_var (*blo_read_fn)(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var state);
// Validates the parameters against the problem; NULL = nothing to check.
typedef blo_status (*blo_dyn_check_fn)(const blo_problem *p, const blo_dynamics *d, blo_error *err);

// Projected gradient descent (BDA Eq. 4 / AIT Eq. 8): y <- Proj_Y(y - s_l grad_y f). State y.
typedef struct {
    double s_l;
} blo_gd_params;

// Which weights the aggregated step uses at 0-based step k (the README's readings of BDA Eq. 10
// and AIT Eq. 7).
typedef enum {
    BLO_BDA_ICML,  // BDA Eq. 10: a_k = c/(k+1), b_k = 1 - a_k (c = 0.5 or 0.9)
    BLO_BDA_AIT,   // AIT Eq. 7:  a_k = mu/(k+1), b_k = (1 - mu) beta
    BLO_BDA_FIXED, // BDA Fig. 3 "alpha = 0.5 fixed": a_k = c, b_k = 1 - c
} blo_bda_weights;

// BDA aggregation: y <- Proj_Y(y - (a_k s_u grad_y F + b_k s_l grad_y f)). State y.
typedef struct {
    double s_u, s_l;
    int weights; // a blo_bda_weights
    double c;    // ICML / FIXED
    double mu;   // AIT, in (0, 1)
    double beta; // AIT, beta_k = beta constant (> 0)
} blo_bda_params;

// Nesterov / FISTA (AIT Eq. 9), state (y_k, y_{k-1}) [2 n_y]:
//   u_k = y_k + m_k (y_k - y_{k-1}),  m_0 = 0, m_k = (t_{k-1} - 1)/t_k,  t_0 = 1,
//   t_{k+1} = (1 + sqrt(1 + 4 t_k^2))/2,  y_{k+1} = Proj_Y(u_k - s_l grad_y f(x, u_k)).
typedef struct {
    double s_l;
} blo_nesterov_params;

// Heavy-ball momentum, state (y_k, y_{k-1}) [2 n_y]:
//   y_{k+1} = Proj_Y(y_k - s_l grad_y f(x, y_k) + beta (y_k - y_{k-1})).
// reversible: the hypergradient reconstructs the iterates from the last one instead of storing
// them (Maclaurin, Duvenaud and Adams, "Gradient-based Hyperparameter Optimization through
// Reversible Learning", ICML 2015, Sec. 3, Alg. 2): the trajectory is taken in fixed point with
// v_k = y_k - y_{k-1}, and the bits that multiplying v by beta drops are kept, p per entry per
// step for beta = j / 2^p. Needs such a beta (> 0) and no Y box.
typedef struct {
    double s_l;
    double beta; // in [0, 1)
    int reversible;
} blo_momentum_params;

// The accelerated scheme for non-convex LL (AIT Eq. 10 with Ghadimi and Lan's indexing j = k + 1),
// state (y, u, v) [3 n_y], u_0 = v_0 = y_0:
//   y_{k+1} = (1 - a_j) u_k + a_j v_k,                     a_j = 2 / (j + 1)
//   u_{k+1} = Proj_Y(y_{k+1} - b grad_y f(x, y_{k+1})),     b = 1 / (2 L_f)
//   v_{k+1} = Proj_Y(v_k - l_j grad_y f(x, y_{k+1})),       l_j = j b / 2
typedef struct {
    double L_f; // Lipschitz constant of grad_y f (> 0)
} blo_accel_params;

enum { BLO_DYN_PARAMS_MAX = 128 }; // bytes of parameters a dynamics carries by value

struct blo_dynamics {
    const char *name;
    int state_size;      // S
    blo_init_fn init;    // NULL: state_0 = y0 (needs S = n_y)
    blo_step_fn step;
    blo_read_fn read_y;  // NULL: y = state[0 : n_y] (S >= n_y)
    blo_dyn_check_fn check;
    double ll_step;      // the LL step size, for methods that borrow it (Neumann's eta); 0 = none
    union {
        blo_gd_params gd;
        blo_bda_params bda;
        blo_nesterov_params nesterov;
        blo_momentum_params momentum;
        blo_accel_params accel;
        double bytes_[BLO_DYN_PARAMS_MAX / sizeof(double)]; // a registered type's own params
    } par;
    void *user; // for user-written step maps
};

blo_gd_params blo_gd_default_params(void);             // s_l = 0.1
blo_bda_params blo_bda_default_params(void);           // ICML, s_u = 0.7, s_l = 0.2, c = 0.5
blo_nesterov_params blo_nesterov_default_params(void); // s_l = 0.1
blo_momentum_params blo_momentum_default_params(void); // s_l = 0.1, beta = 0.5
blo_accel_params blo_accel_default_params(void);       // L_f = 1

blo_dynamics blo_dynamics_gd(int n_y, blo_gd_params par);
blo_dynamics blo_dynamics_bda(int n_y, blo_bda_params par);
blo_dynamics blo_dynamics_nesterov(int n_y, blo_nesterov_params par);
blo_dynamics blo_dynamics_momentum(int n_y, blo_momentum_params par);
blo_dynamics blo_dynamics_accel(int n_y, blo_accel_params par);

// A kind of dynamics as data: its name, its parameters (a struct of params_size bytes, at most
// BLO_DYN_PARAMS_MAX, with defaults and a settings table) and how to make it for a problem. The
// built-in ones are in a registry; a program can define its own and hand it to a method's
// configuration directly.
typedef struct {
    const char *name;
    const char *summary;
    size_t params_size;
    const void *defaults;
    const blo_setting *settings;
    blo_dynamics (*make)(int n_y, const void *params);
} blo_dynamics_type;

// The built-in dynamics (gd, bda, nesterov, accel, momentum), NULL-terminated; by name (NULL if none).
const blo_dynamics_type *const *blo_dynamics_registry(void);
const blo_dynamics_type *blo_dynamics_find(const char *name);

// Numeric helpers on a tape (t may be NULL). state0 [S] from y0 [n_y]; y [n_y] from a state [S].
blo_status blo_state_init(const blo_problem *p, const blo_dynamics *d, const double *y0,
                          double *state0, ad_tape *t, blo_error *err);
blo_status blo_state_read_y(const blo_problem *p, const blo_dynamics *d, const double *state,
                            double *y, ad_tape *t, blo_error *err);
// Runs n >= 0 steps k0 .. k0+n-1 from state0 (the state at step k0). states [(n+1) S] gets
// state_{k0}, ..., state_{k0+n}; F_vals [n+1] (optional) gets F(x, y) at each of them.
// The tape is rewound after each step, so memory does not grow with n.
blo_status blo_unroll(const blo_problem *p, const blo_dynamics *d, const double *x, int k0,
                      const double *state0, int n, double *states, double *F_vals, ad_tape *t,
                      blo_error *err);

// ---- hypergradients -------------------------------------------------------------------------------

typedef struct {
    int K;         // LL steps, >= 1
    int truncate;  // K' > 0: back-propagate only the last K' steps before the end (T-RHG); 0 = all
    int ptt;       // 1: end at Kbar = first argmax_{1<=k<=K} F(x, y_k) (AIT Alg. 3), Kbar fixed
    int ia;        // 1: y_0 = z is a variable and its gradient is returned (AIT Eq. 5)
    double prior_lambda;   // IA prior g(z) = lambda/2 ||z - z_p||^2 (AIT Eq. 6); 0 = none
    const double *z_prior; // z_p [n_y], needed when prior_lambda > 0
    ad_tape *tape;         // reused if given (rewound to where it was on return); NULL = private
    double *y_end_out;     // optional [n_y]: receives y at k_end (for records and warm starts)
    // Graph mode: when the whole trajectory's graph and its reverse sweep fit in this many bytes
    // of tape, keep it and take one reverse sweep through it instead of re-recording each step
    // (about 1.5x faster on small problems); otherwise, or with PTT and truncation together, the
    // lean sweep. 0 = never. The lean sweep spends up to 16 times as many bytes keeping the
    // forward pass's products over large constants (ad_keep: the logits X W_k of a model on data
    // X), so it does not compute them again: one pass over X per step fewer.
    size_t graph_budget;
    // Bounded memory: when the K+1 states the lean sweep stores (with its adjoint and F along
    // the trajectory) would take more than this many bytes, it keeps at most c states at a time
    // within them and recomputes the others forward by binomial checkpointing (Griewank and
    // Walther's revolve), with the same result bit for bit; graph mode and kept products are
    // then limited to it too. One step's tape comes on top. 0 = no bound (store every state).
    size_t memory_budget;
} blo_hypergrad_params;

typedef struct {
    double value;  // the objective differentiated: F(x, y_end) (+ g(z) under IA with a prior)
    int k_end;     // the iterate the sweep starts from: K, or Kbar under PTT
    int k_start;   // the state the sweep stops at (held fixed): max(0, k_end - K')
    int kbar;      // Kbar under PTT, K otherwise
    double F_end;  // F(x, y_end)
    int graph;     // 1 if the trajectory's graph was kept (graph mode), 0 for the lean sweep
    size_t reversible_bytes; // reversible momentum: the dropped bits kept (0 otherwise)
    int slots;     // checkpointed sweep: the states it kept at a time (c); 0 = every state stored
    long long fwd_steps;  // LL steps taken forward (the sweep's re-recorded steps not counted)
    long long recomputed; // fwd_steps - K: the steps taken again to recompute states
} blo_hypergrad_info;

blo_hypergrad_params blo_hypergrad_default_params(void); // K = 10, RHG, no IA, graph budget 64 MiB

// The hypergradient of phi(x[, z]) = F(x, y_end(x[, z])) (+ g(z)), where y_end is the iterate
// k_end and the state at k_start is held fixed. y0 [n_y] is the LL start (NULL = zeros), i.e. z
// under IA. grad_x [n_x] is required; grad_z [n_y] is required under IA and ignored otherwise.
// F_traj [K+1] (optional) gets F(x, y_k) for k = 0..K; info (optional) gets the summary.
blo_status blo_hypergrad(const blo_problem *p, const blo_dynamics *d,
                         const blo_hypergrad_params *hp, const double *x, const double *y0,
                         double *grad_x, double *grad_z, double *F_traj, blo_hypergrad_info *info,
                         blo_error *err);

// The fewest forward steps that reverse L steps with c slots for states (the start's included),
// Griewank and Walther's t(L, c) = r L - beta(c + 1, r - 1), beta(c, r) = C(c + r, c), for
// beta(c, r - 1) < L <= beta(c, r); c = 1 gives L (L - 1) / 2. The checkpointed sweep over L
// steps takes t(L, c) + 1 (the last step, to the state F is taken at). -1 if c < 1.
long long blo_revolve_steps(long long L, int c);

// phi at (x, y0): the value blo_hypergrad differentiated when it was called at (x_ref, y0_ref)
// and reported info, with what it held fixed still held: the end k_end (Kbar under PTT is not
// searched again) and, when k_start > 0, the state at k_start as it was at (x_ref, y0_ref).
// Central differences of it check the hypergradient (blo_check_hypergrad does).
blo_status blo_hypergrad_phi(const blo_problem *p, const blo_dynamics *d,
                             const blo_hypergrad_params *hp, const blo_hypergrad_info *info,
                             const double *x_ref, const double *y0_ref, const double *x,
                             const double *y0, double *value, blo_error *err);

#ifdef __cplusplus
}
#endif

#endif
