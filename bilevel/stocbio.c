// stocbio: "Bilevel Optimization: Convergence Analysis and Enhanced Design" (Ji, Yang and Liang,
// ICML 2021), Alg. 2 (stocBiO). Each UL iteration k:
//   - D minibatch SGD steps on f from the last iteration's y (warm start, as Alg. 2's y_k^0 =
//     y_{k-1}^D): y <- Proj_Y(y - alpha grad_y f(x, y; S_t)), a new LL minibatch S_t per step;
//   - its Neumann-series hypergradient estimate at y = y_k^D: with v_0 = grad_y F(x, y; D_F),
//       v_Q = eta sum_{q=-1}^{Q-1} prod_{j=Q-q}^{Q} (I - eta H(x, y; B_j)) v_0,
//     built term by term as p_0 = v_0, p_{j+1} = (I - eta H_{B_j}) p_j (a new LL minibatch per
//     Hessian-vector product), v_Q = eta sum_{j=0..Q} p_j; then
//       d_x = grad_x F(x, y; D_F) - (d²f/dx dy)(x, y; D_G) v_Q.
// The UL step (beta in Alg. 2) is the solver's. With the full batch (a problem without a sample
// callback) this is the neumann method's hypergradient with K = D, J = Q and warm starts. A
// direction, not the exact gradient of an objective: its value (phi) is not defined.
#include "curvature.h"
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int D;        // LL SGD steps per UL iteration
    double alpha; // LL step
    int Q;        // Neumann terms after the first
    double eta;   // Neumann step (0 = alpha)
} stocbio_params;

static const stocbio_params defaults = {.D = 10, .alpha = 0.1, .Q = 10, .eta = 0};
static const blo_setting settings[] = {
    BLO_ROW_INT(stocbio_params, D, "D", 0, BLO_MAX_ITERS, "D", "LL minibatch SGD steps per UL iteration"),
    BLO_ROW_DBL(stocbio_params, alpha, "alpha", 0, INFINITY, BLO_SET_LO_OPEN, "a", "LL step"),
    BLO_ROW_INT(stocbio_params, Q, "Q", 0, BLO_MAX_ITERS, "Q", "Neumann terms after the first (Hessian-vector products)"),
    BLO_ROW_DBL(stocbio_params, eta, "eta", 0, INFINITY, 0, "e",
                "Neumann step (0 = alpha; needs eta ||H|| < 2)"),
    BLO_ROW_END,
};

// eta = 0 takes the LL step alpha.
static blo_status stocbio_resolve(void *params, const blo_dynamics *d, blo_error *err) {
    stocbio_params *q = params;
    (void)d;
    if (!(q->eta > 0)) q->eta = q->alpha;
    return blo_ok(err);
}

typedef struct {
    blo_fo_state fo; // first: mem = y [n_y] (carried), then g, v, p, Hp [n_y], mixed [n_x]
    stocbio_params par;
} stocbio;

static blo_status stocbio_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                               blo_error *err) {
    size_t nx = (size_t)env->p->n_x, ny = (size_t)env->p->n_y;
    (void)z0;
    *n_z = 0;
    blo_status st = blo_fo_new(state, sizeof(stocbio), env, 5 * ny + nx, ny, err);
    if (!st) ((stocbio *)*state)->par = *(const stocbio_params *)env->params;
    return st;
}

// D projected SGD steps on f(x, .), a new LL minibatch each.
static blo_status sgd_steps(stocbio *s, const double *x, double *g, blo_error *err) {
    const blo_problem *p = s->fo.p;
    double *y = s->fo.mem;
    blo_status st = BLO_OK;
    for (int k = 0; k < s->par.D && st == BLO_OK; k++) {
        st = blo_sample(p, BLO_SAMPLE_LL, s->fo.rng, err);
        if (!st) st = blo_eval(p, 0, x, y, NULL, NULL, g, s->fo.tape, err);
        for (int i = 0; !st && i < p->n_y; i++) y[i] -= s->par.alpha * g[i];
        if (!st) blo_clamp_y(p, y);
    }
    return st;
}

// Rewinds t to base, draws a new LL minibatch and records grad_y f with its graph at (x, y)
// there. false: the draw (*st says) or the tape failed.
static bool record_at(stocbio *s, blo_curv *c, ad_tape *t, ad_mark base, const double *x,
                      blo_status *st, blo_error *err) {
    ad_tape_rewind(t, base);
    if ((*st = blo_sample(s->fo.p, BLO_SAMPLE_LL, s->fo.rng, err))) return false;
    return blo_curv_record(c, t, s->fo.p, x, s->fo.mem);
}

// v_Q into v from v_0 = grad_y F in g, then mixed [n_x] = (d²f/dx dy) v_Q. Each product
// on a new minibatch B_j, the mixed one on D_G; on the full data (no sample callback) grad_y f
// is recorded once, as the neumann method does.
static bool neumann_terms(stocbio *s, ad_tape *t, ad_mark base, const double *x, blo_status *st,
                          blo_error *err) {
    int ny = s->fo.p->n_y;
    bool fresh = s->fo.p->sample != NULL;
    double *g = s->fo.mem + ny, *v = g + ny, *pj = v + ny, *Hp = pj + ny, *mixed = Hp + ny;
    double eta = s->par.eta;
    blo_curv c;
    memcpy(pj, g, (size_t)ny * sizeof *pj);
    for (int i = 0; i < ny; i++) v[i] = eta * g[i];
    bool ok = record_at(s, &c, t, base, x, st, err);
    for (int j = 0; ok && j < s->par.Q; j++) {
        if (j > 0 && fresh) ok = record_at(s, &c, t, base, x, st, err);
        ok = ok && blo_curv_hvp(&c, pj, Hp);
        for (int i = 0; ok && i < ny; i++) pj[i] -= eta * Hp[i], v[i] += eta * pj[i];
    }
    if (ok && fresh && s->par.Q > 0) ok = record_at(s, &c, t, base, x, st, err);
    return ok && blo_curv_mixed(&c, v, mixed);
}

static blo_status stocbio_direction(void *state, int t, const double *x, const double *z, double *gx,
                                    double *gz, double *y_out, blo_record *rec, blo_error *err) {
    stocbio *s = state;
    const blo_problem *p = s->fo.p;
    int ny = p->n_y;
    double *g = s->fo.mem + ny, *mixed = g + 4 * ny;
    (void)t, (void)z, (void)gz;
    blo_status st = sgd_steps(s, x, g, err);
    // D_F: grad_x F into gx, v_0 = grad_y F into g
    if (!st) st = blo_sample(p, BLO_SAMPLE_UL, s->fo.rng, err);
    if (!st) st = blo_eval(p, 1, x, s->fo.mem, NULL, gx, g, s->fo.tape, err);
    blo_tape_use u = {0};
    if (!st) st = blo_tape_acquire(&u, s->fo.tape, err);
    if (st) return st;
    neumann_terms(s, u.t, u.base, x, &st, err);
    if (!st) st = blo_tape_check(u.t, err, "stocbio");
    blo_tape_release(&u);
    if (st) return st;
    for (int i = 0; i < p->n_x; i++) gx[i] -= mixed[i];
    memcpy(y_out, s->fo.mem, sizeof(double) * (size_t)ny);
    rec->kbar = s->par.D;
    return BLO_OK;
}

const blo_method_type blo_method_stocbio = {
    "stocbio", "stocBiO: minibatch LL SGD, Neumann-series hypergradient with minibatch HVPs (Alg. 2)",
    BLO_NEEDS_HVP, BLO_GRAD_NONE, NULL, sizeof(stocbio_params), &defaults, settings, stocbio_resolve, NULL,
    stocbio_init, stocbio_direction, blo_fo_solution, NULL, blo_fo_save, blo_fo_load, blo_fo_free};
