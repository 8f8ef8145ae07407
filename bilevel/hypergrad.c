// Unrolling the LL dynamics and the hypergradient by reverse mode through the unrolled steps.
//
// The forward pass keeps only the states [(K+1) S] as doubles and rewinds the tape after every
// step. The reverse sweep re-records one step at a time at its stored state (a parameter), takes
// the step's vector-Jacobian product with the adjoint of the next state with respect to (x,
// state_k), adds the x part into the hypergradient, and rewinds. Truncation (T-RHG), PTT and IA
// only change where the sweep starts and stops and what happens at state 0.
//
// Graph mode (when it fits params.graph_budget): the K steps stay recorded on the tape and one
// reverse sweep from F(x, y_end) gives both gradients; no step is recorded twice.
#include "sweep.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Kept products are plain arrays, each saving a pass over the data in the sweep, so they get
// more room than a graph: an MLP's first layer X W_1 [5000, 300] is 12 MB a step (and its
// operand W_1 1.9 MB), so 20 steps need 280 MB; 16 x 64 MiB = 1 GiB keeps 76 of them.
enum { KEEP_PER_GRAPH = 16 };

blo_hypergrad_params blo_hypergrad_default_params(void) {
    return (blo_hypergrad_params){.K = 10, .graph_budget = (size_t)64 << 20};
}

// Copies v's value [n] to out, refusing NaN/Inf (a diverging LL loop, usually a too-large step).
static blo_status copy_finite(ad_tape *t, ad_var v, int n, double *out, blo_error *err,
                              const char *what, int k) {
    const double *val = ad_value(t, v);
    blo_status s = blo_tape_check(t, err, what);
    if (s) return s;
    for (int i = 0; i < n; i++) {
        if (!isfinite(val[i]))
            return blo_fail(err, BLO_ETAPE, "%s at k = %d: entry %d is %g (is a step size too large?)",
                            what, k, i, val[i]);
        out[i] = val[i];
    }
    return BLO_OK;
}

// ---- one step forward, one step back ---------------------------------------------------------------

void blo_stepper_begin(blo_stepper *s, ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                       const double *x, int grad) {
    *s = (blo_stepper){.t = t, .p = p, .d = d, .m0 = ad_tape_mark(t)};
    ad_shape sh = ad_vec_shape(p->n_x);
    s->xv = grad ? ad_param(t, sh, x) : ad_const(t, sh, x); // no gradient needed forward
    s->m1 = ad_tape_mark(t);
}

void blo_stepper_end(blo_stepper *s) { ad_tape_rewind(s->t, s->m0); }

blo_status blo_stepper_visit(blo_stepper *s, int k, const double *state, double *F, double *next,
                             ad_kept **keep, size_t *keep_left, blo_error *err) {
    ad_tape *t = s->t;
    ad_mark m = ad_tape_mark(t); // not m1: another stepper may have begun since
    ad_var sv = ad_param(t, ad_vec_shape(s->d->state_size), state);
    blo_status st = BLO_OK;
    if (F) st = copy_finite(t, blo_call_F(t, s->p, s->xv, blo_rec_read_y(t, s->p, s->d, sv)), 1, F, err,
                            "F(x, y_k)", k);
    if (!st && next) {
        // deferred: only what the next state needs is computed (not f's own value, say)
        int was = ad_tape_defer(t, 1);
        ad_mark ms = ad_tape_mark(t);
        ad_var nv = blo_rec_step(t, s->p, s->d, k, s->xv, sv);
        ad_tape_defer(t, was);
        st = copy_finite(t, nv, s->d->state_size, next, err, "LL step", k);
        if (!st && keep && (*keep = ad_keep(t, ms, *keep_left))) *keep_left -= ad_kept_bytes(*keep);
    }
    ad_tape_rewind(t, m);
    return st;
}

blo_status blo_stepper_vjp(blo_stepper *s, int k, const double *state, ad_kept *kept, double *gx,
                           double *lam, blo_error *err) {
    ad_tape *t = s->t;
    int S = s->d->state_size, nx = s->p->n_x;
    ad_mark m = ad_tape_mark(t);
    ad_var sv = ad_param(t, ad_vec_shape(S), state);
    // The step is re-recorded deferred: its vjp computes only the values its reverse rules
    // read (for a quadratic f, none of the step's own products).
    int was = ad_tape_defer(t, 1);
    ad_mark ms = ad_tape_mark(t);
    ad_var next = blo_rec_step(t, s->p, s->d, k, s->xv, sv);
    ad_tape_defer(t, was);
    // the logits X W_k of a linear model, say: the forward pass's values, not a pass over X
    if (kept) ad_reuse(t, ms, kept);
    ad_var bar = ad_const(t, ad_vec_shape(S), lam);
    ad_var wrt[2] = {s->xv, sv}, out[2] = {AD_NONE, AD_NONE};
    ad_vjp(t, next, bar, 2, wrt, out, 0);
    blo_status st = blo_tape_check(t, err, "reverse sweep");
    if (!st) {
        const double *g = ad_value(t, out[0]), *l = ad_value(t, out[1]);
        for (int i = 0; i < nx; i++) gx[i] += g[i];
        memcpy(lam, l, sizeof(double) * (size_t)S);
    }
    ad_tape_rewind(t, m);
    return st;
}

// Steps k0 .. k0+n-1 from states[0] (the state at step k0) into states[1..n]; F_vals[0..n] if
// given. With keep, keep[j] gets step k0+j's products over large constants (ad_keep) while
// *keep_left bytes last, for the sweep to reuse.
static blo_status forward(ad_tape *t, const blo_problem *p, const blo_dynamics *d, const double *x,
                          int k0, int n, double *states, double *F_vals, ad_kept **keep,
                          size_t *keep_left, blo_error *err) {
    size_t S = (size_t)d->state_size;
    blo_stepper st;
    blo_stepper_begin(&st, t, p, d, x, 0);
    blo_status s = BLO_OK;
    for (int j = 0; j <= n && !s; j++)
        s = blo_stepper_visit(&st, k0 + j, states + j * S, F_vals ? F_vals + j : NULL,
                              j < n ? states + (j + 1) * S : NULL, keep ? keep + j : NULL, keep_left, err);
    blo_stepper_end(&st);
    return s;
}

static blo_status init_state(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                             const double *y0, double *state0, blo_error *err) {
    ad_mark m = ad_tape_mark(t);
    ad_var z = y0 ? ad_param(t, ad_vec_shape(p->n_y), y0) : ad_fill(t, ad_vec_shape(p->n_y), 0);
    blo_status s = copy_finite(t, blo_rec_init(t, p, d, z), d->state_size, state0, err,
                               "initial state", 0);
    ad_tape_rewind(t, m);
    return s;
}

blo_status blo_state_init(const blo_problem *p, const blo_dynamics *d, const double *y0,
                          double *state0, ad_tape *t, blo_error *err) {
    blo_status s = blo_dynamics_validate(p, d, err);
    if (s) return s;
    if (!state0) return blo_fail(err, BLO_EARG, "state0 is NULL");
    blo_tape_use u;
    if ((s = blo_tape_acquire(&u, t, err))) return s;
    s = init_state(u.t, p, d, y0, state0, err);
    blo_tape_release(&u);
    return s ? s : blo_ok(err);
}

blo_status blo_state_read_y(const blo_problem *p, const blo_dynamics *d, const double *state,
                            double *y, ad_tape *t, blo_error *err) {
    blo_status s = blo_dynamics_validate(p, d, err);
    if (s) return s;
    if (!state || !y) return blo_fail(err, BLO_EARG, "state or y is NULL");
    blo_tape_use u;
    if ((s = blo_tape_acquire(&u, t, err))) return s;
    ad_var sv = ad_const(u.t, ad_vec_shape(d->state_size), state);
    s = copy_finite(u.t, blo_rec_read_y(u.t, p, d, sv), p->n_y, y, err, "read_y", 0);
    blo_tape_release(&u);
    return s ? s : blo_ok(err);
}

blo_status blo_unroll(const blo_problem *p, const blo_dynamics *d, const double *x, int k0,
                      const double *state0, int n, double *states, double *F_vals, ad_tape *t,
                      blo_error *err) {
    blo_status s = blo_dynamics_validate(p, d, err);
    if (s) return s;
    if (!x || !state0 || !states) return blo_fail(err, BLO_EARG, "x, state0 or states is NULL");
    if (k0 < 0 || n < 0) return blo_fail(err, BLO_EARG, "k0 = %d and n = %d must be >= 0", k0, n);
    blo_tape_use u;
    if ((s = blo_tape_acquire(&u, t, err))) return s;
    memmove(states, state0, sizeof(double) * (size_t)d->state_size);
    s = forward(u.t, p, d, x, k0, n, states, F_vals, NULL, NULL, err);
    blo_tape_release(&u);
    return s ? s : blo_ok(err);
}

// ---- the reverse sweep ------------------------------------------------------------------------------------

// Adds the contributions of steps k_end-1 down to k_start into gx [n_x] and leaves the adjoint of
// state_{k_start} in lam [S]. On entry lam holds the adjoint of state_{k_end}.
// states[j] is the state at step k_start + j, kept[j] its products the forward pass kept (or NULL).
static blo_status sweep(ad_tape *t, const blo_problem *p, const blo_dynamics *d, const double *x,
                        const double *states, ad_kept *const *kept, int k_start, int k_end,
                        double *gx, double *lam, blo_error *err) {
    blo_stepper st;
    blo_stepper_begin(&st, t, p, d, x, 1);
    blo_status s = BLO_OK;
    for (int k = k_end - 1; k >= k_start && !s; k--)
        s = blo_stepper_vjp(&st, k, states + (size_t)(k - k_start) * d->state_size, kept[k - k_start],
                            gx, lam, err);
    blo_stepper_end(&st);
    return s;
}

// F(x, y_end) with dF/dx into gx and dF/dstate_end into lam; y_end into y_out if given.
blo_status blo_sweep_start(ad_tape *t, const blo_problem *p, const blo_dynamics *d, const double *x,
                           const double *state, double *F_end, double *gx, double *lam,
                           double *y_out, blo_error *err) {
    ad_mark m = ad_tape_mark(t);
    ad_var xv = ad_param(t, ad_vec_shape(p->n_x), x);
    ad_var sv = ad_param(t, ad_vec_shape(d->state_size), state);
    ad_var yv = blo_rec_read_y(t, p, d, sv);
    ad_var Fv = blo_call_F(t, p, xv, yv);
    ad_var wrt[2] = {xv, sv}, out[2] = {AD_NONE, AD_NONE};
    ad_grad(t, Fv, 2, wrt, out, 0);
    blo_status s = blo_tape_check(t, err, "F(x, y_end)");
    if (!s) {
        *F_end = ad_item(t, Fv);
        memcpy(gx, ad_value(t, out[0]), sizeof(double) * (size_t)p->n_x);
        memcpy(lam, ad_value(t, out[1]), sizeof(double) * (size_t)d->state_size);
        if (y_out) memcpy(y_out, ad_value(t, yv), sizeof(double) * (size_t)p->n_y);
        s = blo_tape_check(t, err, "y_end");
    }
    ad_tape_rewind(t, m);
    return s;
}

// grad_z = (d state_0 / d z)^T lam, through the dynamics' init map.
static blo_status sweep_init(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                             const double *z, const double *lam, double *gz, blo_error *err) {
    if (!d->init) { // state_0 = z
        memcpy(gz, lam, sizeof(double) * (size_t)p->n_y);
        return BLO_OK;
    }
    ad_mark m = ad_tape_mark(t);
    ad_var zv = z ? ad_param(t, ad_vec_shape(p->n_y), z) : ad_fill(t, ad_vec_shape(p->n_y), 0);
    if (!z) zv = ad_param(t, ad_vec_shape(p->n_y), ad_value(t, zv));
    ad_var s0 = blo_rec_init(t, p, d, zv);
    ad_var bar = ad_const(t, ad_vec_shape(d->state_size), lam), out = AD_NONE;
    ad_vjp(t, s0, bar, 1, &zv, &out, 0);
    blo_status s = blo_tape_check(t, err, "init (IA)");
    if (!s) memcpy(gz, ad_value(t, out), sizeof(double) * (size_t)p->n_y);
    ad_tape_rewind(t, m);
    return s;
}

// The IA prior g(z) = lambda/2 ||z - z_p||^2 (AIT Eq. 6): adds its gradient into gz [n_y] and
// returns its value (0 without a prior).
static double add_prior(const blo_hypergrad_params *hp, const double *z, int ny, double *gz) {
    double g2 = 0;
    for (int i = 0; hp->prior_lambda > 0 && i < ny; i++) {
        double dz = (z ? z[i] : 0) - hp->z_prior[i];
        gz[i] += hp->prior_lambda * dz;
        g2 += dz * dz;
    }
    return 0.5 * hp->prior_lambda * g2;
}

// Graph mode: record the trajectory once, keep it, and sweep back from F(x, y_end) in one vjp.
// Returns BLO_OK with *used = 0 (and the tape as it was) when one step's graph times K would
// exceed the budget, so the caller falls back to the lean sweep.
typedef struct {
    double F_end;
    int kbar, k_start;
} graph_result;

static blo_status graph_hypergrad(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                                  const blo_hypergrad_params *hp, const double *x, const double *y0,
                                  double *gx, double *gz, double *Fv, graph_result *r, int *used,
                                  blo_error *err) {
    *used = 0;
    int K = hp->K, S = d->state_size, nx = p->n_x, ny = p->n_y;
    // without PTT the held-fixed state is known in advance; PTT with truncation uses the sweep
    int k_start = !hp->ptt && hp->truncate > 0 && hp->truncate < K ? K - hp->truncate : 0;
    ad_var *sv = malloc(sizeof(ad_var) * (size_t)(K + 1));
    double *buf = malloc(sizeof(double) * (size_t)S);
    if (!sv || !buf) {
        free(sv), free(buf);
        return blo_fail(err, BLO_ENOMEM, "graph mode: out of memory");
    }
    ad_mark m0 = ad_tape_mark(t);
    size_t bytes0 = ad_tape_used_bytes(t);
    ad_var xv = ad_param(t, ad_vec_shape(nx), x);
    ad_var zv = ad_param(t, ad_vec_shape(ny), y0 ? y0 : ad_value(t, ad_fill(t, ad_vec_shape(ny), 0)));
    ad_var hold = AD_NONE; // the parameter standing for state_{k_start} when it is held fixed
    sv[0] = blo_rec_init(t, p, d, zv);
    // The budget holds the trajectory's graph and the sweep's adjoints, which stay on the tape
    // until the end too: measured at 0.67-0.8 of the forward graph, taken as one more. One step
    // recorded deferred tells the graph's size without computing it (its values take the same
    // room computed or not): when K steps do not fit, the lean sweep starts with nothing wasted
    // (the 2-layer hyper-cleaning step computed and dropped here was 2 of 89 passes over the data).
    ad_mark mp = ad_tape_mark(t);
    int was = ad_tape_defer(t, 1);
    blo_rec_step(t, p, d, 0, xv, sv[0]);
    ad_tape_defer(t, was);
    size_t step_bytes = ad_tape_used_bytes(t) - bytes0;
    ad_tape_rewind(t, mp);
    if (ad_tape_status(t) == AD_OK && step_bytes * 2 * (size_t)(K + 1) > hp->graph_budget) {
        ad_tape_rewind(t, m0); // does not fit: the lean sweep instead
        free(sv), free(buf);
        return BLO_OK;
    }
    blo_status s = BLO_OK;
    for (int k = 0; k <= K && !s; k++) {
        if (k > 0 && k == k_start) { // T-RHG: the state here is a constant of the objective
            s = copy_finite(t, sv[k], S, buf, err, "LL step", k);
            if (!s) sv[k] = hold = ad_param(t, ad_vec_shape(S), buf);
        }
        if (!s && Fv) { // F along the trajectory, recorded aside and dropped
            ad_mark m = ad_tape_mark(t);
            s = copy_finite(t, blo_call_F(t, p, xv, blo_rec_read_y(t, p, d, sv[k])), 1, Fv + k, err,
                            "F(x, y_k)", k);
            ad_tape_rewind(t, m);
        }
        if (s || k == K) break;
        // recorded as it is computed: the sweep reads nearly all of a step (an LL gradient's
        // objective is deferred by blo_ll_grad_y, so its value is still skipped)
        sv[k + 1] = blo_rec_step(t, p, d, k, xv, sv[k]);
        s = copy_finite(t, sv[k + 1], S, buf, err, "LL step", k); // a diverging LL loop stops here
    }
    int kbar = K;
    if (!s && hp->ptt)
        for (int k = 1; k <= K; k++)
            if (Fv[k] > Fv[kbar] || (Fv[k] == Fv[kbar] && k < kbar)) kbar = k;
    if (!s) {
        ad_var Fe = blo_call_F(t, p, xv, blo_rec_read_y(t, p, d, sv[kbar]));
        ad_var wrt[2] = {xv, k_start > 0 ? hold : zv}, out[2];
        ad_grad(t, Fe, hp->ia || k_start > 0 ? 2 : 1, wrt, out, 0);
        s = blo_tape_check(t, err, "reverse sweep");
        if (!s) {
            r->F_end = ad_item(t, Fe);
            memcpy(gx, ad_value(t, out[0]), sizeof(double) * (size_t)nx);
            if (hp->ia) {
                if (k_start == 0) memcpy(gz, ad_value(t, out[1]), sizeof(double) * (size_t)ny);
                else memset(gz, 0, sizeof(double) * (size_t)ny); // the sweep stops short of z
            }
            if (hp->y_end_out)
                memcpy(hp->y_end_out, ad_value(t, blo_rec_read_y(t, p, d, sv[kbar])), sizeof(double) * (size_t)ny);
            s = blo_tape_check(t, err, "y_end");
        }
    }
    r->kbar = kbar, r->k_start = k_start;
    *used = 1;
    ad_tape_rewind(t, m0);
    free(sv), free(buf);
    return s;
}

static blo_status check_hp(const blo_problem *p, const blo_hypergrad_params *hp, const double *x,
                           double *grad_x, double *grad_z, blo_error *err) {
    if (!x || !grad_x) return blo_fail(err, BLO_EARG, "x or grad_x is NULL");
    if (hp->K < 1)
        return blo_fail(err, BLO_EARG, "K = %d: the hypergradient needs at least one LL step", hp->K);
    if (hp->truncate < 0)
        return blo_fail(err, BLO_EARG, "truncate = %d must be >= 0 (0: all steps)", hp->truncate);
    if (hp->ia && !grad_z) return blo_fail(err, BLO_EARG, "IA needs grad_z [n_y = %d]", p->n_y);
    if (!(hp->prior_lambda >= 0) || !isfinite(hp->prior_lambda))
        return blo_fail(err, BLO_EARG, "prior_lambda = %g must be >= 0", hp->prior_lambda);
    if (hp->prior_lambda > 0 && (!hp->ia || !hp->z_prior))
        return blo_fail(err, BLO_EARG, "a prior (lambda = %g) needs IA and z_prior",
                        hp->prior_lambda);
    return BLO_OK;
}

// The first maximizer of F over k = 1..K (y_0 = z excluded: the README's reading of PTT).
int blo_ptt_kbar(const double *Fv, int K) {
    int kbar = K;
    for (int k = 1; k <= K; k++)
        if (Fv[k] > Fv[kbar] || (Fv[k] == Fv[kbar] && k < kbar)) kbar = k;
    return kbar;
}

// n steps from buf[0] (the state at k0) through the two states of buf [2 S], ending in buf[0];
// F at k0 .. k0+n-1 into Fv[k0..] if given.
static blo_status run_through(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                              const double *x, int k0, int n, double *buf, double *Fv, blo_error *err) {
    blo_status s = BLO_OK;
    for (int k = k0; k < k0 + n && !s; k++) {
        s = forward(t, p, d, x, k, 1, buf, Fv ? Fv + k : NULL, NULL, NULL, err);
        memcpy(buf, buf + d->state_size, sizeof(double) * (size_t)d->state_size);
    }
    return s;
}

// Every state the sweep revisits stored as doubles.
static blo_status stored_sweep(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                               const blo_hypergrad_params *hp, const double *x, const double *y0,
                               double *Fv, double *gx, double *lam, lean_result *r, blo_error *err) {
    int S = d->state_size, K = hp->K;
    // Without PTT the sweep's range is known before the forward pass, so T-RHG keeps only the
    // states it will revisit, k_keep..K; PTT must keep them all (Kbar is known only at the end).
    int k_keep = !hp->ptt && hp->truncate > 0 && hp->truncate < K ? K - hp->truncate : 0;
    int n_kept = K + 1 - k_keep;
    double *states = malloc(sizeof(double) * (size_t)n_kept * (size_t)S);
    ad_kept **kept = calloc((size_t)n_kept, sizeof *kept); // [K - k_keep] and one spare
    blo_status s = BLO_OK;
    if (!states || !kept) {
        s = blo_fail(err, BLO_ENOMEM, "cannot allocate %d states of %d doubles", n_kept, S);
        goto done;
    }
    if ((s = init_state(t, p, d, y0, states, err))) goto done;
    // Steps before k_keep run one at a time through the first two slots (n_kept >= 2 here).
    if ((s = run_through(t, p, d, x, 0, k_keep, states, Fv, err))) goto done;
    // The steps the sweep revisits keep their products over large constants (ad_keep) within
    // KEEP_PER_GRAPH times the budget graph mode had, so the sweep does not compute them again;
    // under a memory budget, within that budget (graph_budget is capped by it).
    size_t keep_left = hp->memory_budget ? hp->graph_budget
                       : hp->graph_budget > SIZE_MAX / KEEP_PER_GRAPH ? SIZE_MAX
                                                                       : hp->graph_budget * KEEP_PER_GRAPH;
    if ((s = forward(t, p, d, x, k_keep, K - k_keep, states, Fv ? Fv + k_keep : NULL, kept,
                     &keep_left, err)))
        goto done;
    int k_end = hp->ptt ? blo_ptt_kbar(Fv, K) : K;
    int k_start = hp->truncate > 0 && hp->truncate < k_end ? k_end - hp->truncate : 0;
    *r = (lean_result){.kbar = k_end, .k_start = k_start, .k_end = k_end, .fwd_steps = K};
    const double *kept_state = states + (size_t)(k_start - k_keep) * S; // the state at k_start
    if ((s = blo_sweep_start(t, p, d, x, kept_state + (size_t)(k_end - k_start) * S, &r->F_end, gx, lam,
                             hp->y_end_out, err)))
        goto done;
    s = sweep(t, p, d, x, kept_state, kept + (k_start - k_keep), k_start, k_end, gx, lam, err);
done:
    for (int k = 0; kept && k < n_kept; k++) ad_kept_free(kept[k]);
    free(kept);
    free(states);
    return s;
}

// At most `slots` states at a time (binomial checkpointing, revolve.c). Under PTT a first pass
// finds Kbar; then the state at k_start is reached again and the schedule runs over
// k_start..k_end.
static blo_status checkpointed_sweep(ad_tape *t, const blo_problem *p, const blo_dynamics *d,
                                     const blo_hypergrad_params *hp, int slots, const double *x,
                                     const double *y0, double *Fv, double *gx, double *lam,
                                     lean_result *r, blo_error *err) {
    int S = d->state_size, K = hp->K;
    double *buf = malloc(sizeof(double) * 2 * (size_t)S);
    if (!buf) return blo_fail(err, BLO_ENOMEM, "checkpointed sweep: out of memory for 2 states of %d doubles", S);
    long long fwd = 0;
    int k_end = K;
    blo_status s = init_state(t, p, d, y0, buf, err);
    if (!s && hp->ptt) {
        s = run_through(t, p, d, x, 0, K, buf, Fv, err);
        if (!s) s = forward(t, p, d, x, K, 0, buf, Fv + K, NULL, NULL, err);
        if (!s) s = init_state(t, p, d, y0, buf, err);
        k_end = blo_ptt_kbar(Fv, K);
        fwd += K;
    }
    int k_start = hp->truncate > 0 && hp->truncate < k_end ? k_end - hp->truncate : 0;
    double *Fr = hp->ptt ? NULL : Fv; // F along the way, once (PTT's first pass has it)
    if (!s) s = run_through(t, p, d, x, 0, k_start, buf, Fr, err);
    if (!s && Fr) s = forward(t, p, d, x, k_start, 0, buf, Fr + k_start, NULL, NULL, err);
    fwd += k_start;
    int L = k_end - k_start;
    if (slots > L) slots = L; // more would stay empty
    long long steps = 0;
    blo_revolve_ctx c = {.t = t, .p = p, .d = d, .x = x, .F = Fr, .y_out = hp->y_end_out};
    *r = (lean_result){.kbar = k_end, .k_start = k_start, .k_end = k_end, .slots = slots};
    if (!s) s = blo_revolve_sweep(&c, k_start, L, buf, slots, &r->F_end, gx, lam, &steps, err);
    r->fwd_steps = fwd + steps;
    free(buf);
    return s;
}

// The checkpoints a memory budget allows for the lean sweep: 0 when every state it stores fits
// (or there is no budget), else c >= 1, or an error when not even one fits.
static blo_status choose_slots(const blo_problem *p, const blo_dynamics *d,
                               const blo_hypergrad_params *hp, int need_F, int *slots, blo_error *err) {
    *slots = 0;
    if (!hp->memory_budget) return BLO_OK;
    double each = 8.0 * d->state_size, budget = (double)hp->memory_budget;
    double fixed = 8.0 * p->n_x + each + (need_F ? 8.0 * (hp->K + 1) : 0); // gx, lam, F
    double stored = (hp->K + 1.0) * (each + sizeof(void *));
    if (fixed + stored <= budget) return BLO_OK;
    double c = floor((budget - fixed - 5 * each) / each); // scratch: 2 states here, 3 in revolve.c
    if (c < 1)
        return blo_fail(err, BLO_EARG,
                        "memory budget %.0f bytes holds no checkpoint: the sweep needs at least %.0f "
                        "(6 states of %d doubles, x and F along %d steps)",
                        budget, fixed + 6 * each, d->state_size, hp->K);
    *slots = c < hp->K ? (int)c : hp->K;
    return BLO_OK;
}

blo_status blo_hypergrad(const blo_problem *p, const blo_dynamics *d,
                         const blo_hypergrad_params *hp_in, const double *x, const double *y0,
                         double *grad_x, double *grad_z, double *F_traj, blo_hypergrad_info *info,
                         blo_error *err) {
    blo_hypergrad_params hp = hp_in ? *hp_in : blo_hypergrad_default_params();
    blo_status s = blo_dynamics_validate(p, d, err);
    if (!s) s = check_hp(p, &hp, x, grad_x, grad_z, err);
    if (s) return s;
    int S = d->state_size, K = hp.K, nx = p->n_x, ny = p->n_y, slots = 0;
    int need_F = hp.ptt || F_traj;
    if (!blo_dynamics_reversible(d) && (s = choose_slots(p, d, &hp, need_F, &slots, err))) return s;
    if (!slots && (size_t)K + 1 > SIZE_MAX / sizeof(double) / (size_t)S)
        return blo_fail(err, BLO_ENOMEM, "K = %d states of %d doubles do not fit in memory", K, S);
    if (hp.memory_budget && hp.graph_budget > hp.memory_budget) hp.graph_budget = hp.memory_budget;
    blo_tape_use u;
    if ((s = blo_tape_acquire(&u, hp.tape, err))) return s;
    if ((s = blo_problem_check(p, x, y0, u.t, err))) {
        blo_tape_release(&u);
        return s;
    }
    int rev = blo_dynamics_reversible(d);
    if (hp.graph_budget > 0 && !(hp.ptt && hp.truncate > 0) && !rev) {
        double *Fg = need_F ? malloc(sizeof(double) * (size_t)(K + 1)) : NULL;
        double *gzg = hp.ia ? malloc(sizeof(double) * (size_t)ny) : NULL;
        graph_result gr;
        int used = 0;
        if ((need_F && !Fg) || (hp.ia && !gzg)) s = blo_fail(err, BLO_ENOMEM, "out of memory");
        else s = graph_hypergrad(u.t, p, d, &hp, x, y0, grad_x, gzg, Fg, &gr, &used, err);
        if (!s && used) {
            double value = gr.F_end;
            if (hp.ia) {
                memcpy(grad_z, gzg, sizeof(double) * (size_t)ny);
                value += add_prior(&hp, y0, ny, grad_z);
            }
            if (F_traj) memcpy(F_traj, Fg, sizeof(double) * (size_t)(K + 1));
            if (info)
                *info = (blo_hypergrad_info){.value = value, .k_end = gr.kbar, .k_start = gr.k_start,
                                             .kbar = gr.kbar, .F_end = gr.F_end, .graph = 1,
                                             .fwd_steps = K};
            blo_ok(err);
        }
        free(Fg), free(gzg);
        if (s || used) {
            blo_tape_release(&u);
            return s;
        }
    }
    double *Fv = need_F ? malloc(sizeof(double) * (size_t)(K + 1)) : NULL;
    double *lam = malloc(sizeof(double) * (size_t)S);
    double *gx = malloc(sizeof(double) * (size_t)nx);
    lean_result r = {0};
    if (!lam || !gx || (need_F && !Fv)) {
        s = blo_fail(err, BLO_ENOMEM, "out of memory for the sweep's adjoint of %d doubles", S);
        goto done;
    }
    s = rev     ? blo_reversible_sweep(u.t, p, d, &hp, x, y0, Fv, gx, lam, &r, err)
        : slots ? checkpointed_sweep(u.t, p, d, &hp, slots, x, y0, Fv, gx, lam, &r, err)
                : stored_sweep(u.t, p, d, &hp, x, y0, Fv, gx, lam, &r, err);
    if (s) goto done;
    double value = r.F_end;
    if (hp.ia) {
        // The state at k_start is held fixed when the sweep stops short of 0: no z gradient
        // flows from phi then, only from the prior.
        if (r.k_start == 0) {
            if ((s = sweep_init(u.t, p, d, y0, lam, grad_z, err))) goto done;
        } else {
            for (int i = 0; i < ny; i++) grad_z[i] = 0;
        }
        value += add_prior(&hp, y0, ny, grad_z);
    }
    memcpy(grad_x, gx, sizeof(double) * (size_t)nx);
    if (F_traj) memcpy(F_traj, Fv, sizeof(double) * (size_t)(K + 1));
    if (info)
        *info = (blo_hypergrad_info){.value = value, .k_end = r.k_end, .k_start = r.k_start,
                                     .kbar = r.kbar, .F_end = r.F_end, .slots = r.slots,
                                     .reversible_bytes = r.reversible_bytes,
                                     .fwd_steps = r.fwd_steps, .recomputed = r.fwd_steps - K};
    blo_ok(err);
done:
    free(Fv);
    free(lam);
    free(gx);
    blo_tape_release(&u);
    return s;
}

// ---- the value differentiated ------------------------------------------------------------------------

blo_status blo_hypergrad_phi(const blo_problem *p, const blo_dynamics *d,
                             const blo_hypergrad_params *hp, const blo_hypergrad_info *info,
                             const double *x_ref, const double *y0_ref, const double *x,
                             const double *y0, double *value, blo_error *err) {
    blo_status s = blo_dynamics_validate(p, d, err);
    if (s) return s;
    if (!hp || !info || !x || !value || (info->k_start > 0 && !x_ref))
        return blo_fail(err, BLO_EARG, "phi: NULL argument (hp, info, x, value; x_ref under truncation)");
    int k0 = info->k_start, k1 = info->k_end, S = d->state_size, ny = p->n_y;
    if (k0 < 0 || k1 < k0 || k1 > hp->K)
        return blo_fail(err, BLO_EARG, "phi: the range k_start = %d, k_end = %d is not within 0..K = %d",
                        k0, k1, hp->K);
    if (hp->prior_lambda > 0 && (!hp->ia || !hp->z_prior))
        return blo_fail(err, BLO_EARG, "phi: a prior (lambda = %g) needs IA and z_prior", hp->prior_lambda);
    int n = k1 > k0 ? k1 : k0; // the longer of the two unrolls
    double *states = malloc(sizeof(double) * ((size_t)n + 1) * (size_t)S), *y = malloc(sizeof(double) * (size_t)ny);
    if (!states || !y) {
        free(states), free(y);
        return blo_fail(err, BLO_ENOMEM, "phi: out of memory for %d states of %d doubles", n + 1, S);
    }
    // the state at k_start: held at the reference point's when the sweep stopped short of 0
    s = blo_state_init(p, d, k0 > 0 ? y0_ref : y0, states, hp->tape, err);
    if (!s && k0 > 0) s = blo_unroll(p, d, x_ref, 0, states, k0, states, NULL, hp->tape, err);
    if (!s && k0 > 0) memmove(states, states + (size_t)k0 * S, sizeof(double) * (size_t)S);
    if (!s) s = blo_unroll(p, d, x, k0, states, k1 - k0, states, NULL, hp->tape, err);
    if (!s) s = blo_state_read_y(p, d, states + (size_t)(k1 - k0) * S, y, hp->tape, err);
    double F = 0;
    if (!s) s = blo_eval(p, 1, x, y, &F, NULL, NULL, hp->tape, err);
    if (!s && hp->ia && hp->prior_lambda > 0) {
        double g2 = 0;
        for (int i = 0; i < ny; i++) {
            double dz = (y0 ? y0[i] : 0) - hp->z_prior[i];
            g2 += dz * dz;
        }
        F += 0.5 * hp->prior_lambda * g2;
    }
    if (!s) *value = F;
    free(states), free(y);
    return s;
}
