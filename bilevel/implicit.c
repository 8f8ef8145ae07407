// Implicit hypergradients (CG, Neumann): at (x, y) solve H q = g, H = d²f/dy² [n_y, n_y],
// g = grad_y F, from Hessian-vector products on the tape (H is never formed), then
// grad = grad_x F - (d²f/dx dy) q (BVFIM Table 2's CG and Neumann rows). Also the driver of the
// cg and neumann methods: K steps of the dynamics, then the implicit hypergradient at y_K.
#include "curvature.h"
#include "family.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

blo_implicit_params blo_implicit_default_params(blo_implicit_kind kind) {
    return (blo_implicit_params){.kind = kind, .iters = 20, .tol = 1e-10, .eta = 0.1};
}

bool blo_curv_record(blo_curv *c, ad_tape *t, const blo_problem *p, const double *x, const double *y) {
    *c = (blo_curv){.t = t, .nx = p->n_x, .ny = p->n_y};
    c->x = ad_param(t, ad_vec_shape(p->n_x), x);
    c->y = ad_param(t, ad_vec_shape(p->n_y), y);
    ad_grad(t, blo_call_f(t, p, c->x, c->y), 1, &c->y, &c->gy, AD_CREATE_GRAPH);
    c->m = ad_tape_mark(t);
    return ad_tape_status(t) == AD_OK;
}

// d/dwrt <gy, v>, [n] values into out
static bool curv_product(blo_curv *c, ad_var wrt, int n, const double *v, double *out) {
    ad_var vv = ad_const(c->t, ad_vec_shape(c->ny), v), h;
    bool ok = ad_grad(c->t, ad_dot(c->t, c->gy, vv), 1, &wrt, &h, 0) == AD_OK;
    if (ok) memcpy(out, ad_value(c->t, h), (size_t)n * sizeof(double));
    ad_tape_rewind(c->t, c->m);
    return ok;
}

bool blo_curv_hvp(blo_curv *c, const double *v, double *out) { return curv_product(c, c->y, c->ny, v, out); }
bool blo_curv_mixed(blo_curv *c, const double *v, double *out) { return curv_product(c, c->x, c->nx, v, out); }

// Conjugate gradients on H q = g from q = 0; H must be symmetric positive definite near y*.
static bool solve_cg(blo_curv *c, const blo_implicit_params *ip, const double *g, double *q,
                     double *w, blo_implicit_info *info) {
    int n = c->ny;
    double *r = w, *d = w + n, *Hd = w + 2 * n;
    memcpy(r, g, (size_t)n * sizeof *r);
    memcpy(d, g, (size_t)n * sizeof *d);
    memset(q, 0, (size_t)n * sizeof *q);
    double gg = blo_dot(g, g, n), rr = gg;
    info->iters = 0;
    while (info->iters < ip->iters && rr > ip->tol * ip->tol * gg && rr > 0) {
        if (!blo_curv_hvp(c, d, Hd)) return false;
        double dHd = blo_dot(d, Hd, n);
        if (!(dHd > 0)) break; // not positive definite along d: stop with what we have
        double a = rr / dHd;
        for (int i = 0; i < n; i++) q[i] += a * d[i], r[i] -= a * Hd[i];
        double rr2 = blo_dot(r, r, n);
        for (int i = 0; i < n; i++) d[i] = r[i] + rr2 / rr * d[i];
        rr = rr2;
        info->iters++;
    }
    info->residual = gg > 0 ? sqrt(rr / gg) : 0;
    return true;
}

// q = eta sum_{j=0..J} (I - eta H)^j g, term by term: p_0 = g, p_{j+1} = p_j - eta H p_j.
static bool solve_neumann(blo_curv *c, const blo_implicit_params *ip, const double *g, double *q,
                          double *w, blo_implicit_info *info) {
    int n = c->ny;
    double *pj = w, *Hp = w + n;
    memcpy(pj, g, (size_t)n * sizeof *pj);
    for (int i = 0; i < n; i++) q[i] = ip->eta * g[i];
    for (info->iters = 0; info->iters < ip->iters; info->iters++) {
        if (!blo_curv_hvp(c, pj, Hp)) return false;
        for (int i = 0; i < n; i++) pj[i] -= ip->eta * Hp[i], q[i] += ip->eta * pj[i];
    }
    // residual ||H q - g|| / ||g||, one more product
    if (!blo_curv_hvp(c, q, Hp)) return false;
    double rr = 0, gg = blo_dot(g, g, n);
    for (int i = 0; i < n; i++) rr += (Hp[i] - g[i]) * (Hp[i] - g[i]);
    info->residual = gg > 0 ? sqrt(rr / gg) : 0;
    if (!(info->residual <= 1)) // worse than q = 0: the series diverges (eta ||H|| > 2)
        ad_tape_fail(c->t, AD_EDOMAIN, "the series diverges (residual %.3g after %d terms): "
                     "the step eta = %g is too large for this Hessian", info->residual, info->iters, ip->eta);
    return true;
}

blo_status blo_implicit_hypergrad(const blo_problem *p, const blo_implicit_params *ip,
                                  const double *x, const double *y, double *grad_x,
                                  blo_implicit_info *info, ad_tape *tape, blo_error *err) {
    blo_ok(err);
    blo_implicit_info local;
    if (!info) info = &local;
    *info = (blo_implicit_info){0};
    if (!p || !ip || !x || !y || !grad_x) return blo_fail(err, BLO_EARG, "implicit: NULL argument");
    if (ip->iters < 0 || ip->tol < 0 || (ip->kind == BLO_IMPLICIT_NEUMANN && !(ip->eta > 0)))
        return blo_fail(err, BLO_EARG, "implicit: iterations %d, tolerance %g and Neumann step %g "
                        "must be non-negative (the step positive)", ip->iters, ip->tol, ip->eta);
    blo_status st = blo_problem_check(p, x, y, tape, err);
    if (st != BLO_OK) return st;
    blo_tape_use u;
    if ((st = blo_tape_acquire(&u, tape, err)) != BLO_OK) return st;
    ad_tape *t = u.t;
    int n = p->n_y;
    // g, q [n_y]; w: three work vectors [n_y] or the mixed product [n_x]
    size_t nw = (size_t)(3 * n > p->n_x ? 3 * n : p->n_x);
    double *g = malloc(sizeof(double) * (2 * (size_t)n + nw)), *q = g + n, *w = g + 2 * n;
    if (!g) {
        blo_tape_release(&u);
        return blo_fail(err, BLO_ENOMEM, "implicit: out of memory");
    }
    // grad_x F, grad_y F at (x, y); then grad_y f with its graph for the products
    st = blo_eval(p, 1, x, y, NULL, grad_x, g, t, err);
    blo_curv c;
    bool ok = st == BLO_OK && blo_curv_record(&c, t, p, x, y) &&
              (ip->kind == BLO_IMPLICIT_CG ? solve_cg(&c, ip, g, q, w, info)
                                           : solve_neumann(&c, ip, g, q, w, info)) &&
              blo_curv_mixed(&c, q, w); // grad_x F - d/dx <grad_y f, q>
    for (int i = 0; ok && i < p->n_x; i++) grad_x[i] -= w[i];
    if (st == BLO_OK) st = blo_tape_check(t, err, ip->kind == BLO_IMPLICIT_CG ? "cg" : "neumann");
    free(g);
    blo_tape_release(&u);
    return st;
}

// ---- the cg and neumann methods ----------------------------------------------------------------------

blo_status blo_implicit_method_resolve(void *params, const blo_dynamics *d, blo_error *err) {
    blo_implicit_method_params *q = params; // Neumann's eta: the LL step (README, readings)
    return q->kind == BLO_IMPLICIT_NEUMANN ? blo_step_or_ll(&q->eta, d, "neumann", err) : blo_ok(err);
}

typedef struct {
    blo_ll_state ll; // first: the shared solution, save, load and free use it
    blo_implicit_method_params par;
} implicit_method;

blo_status blo_implicit_method_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                                    blo_error *err) {
    const blo_implicit_method_params *q = env->params;
    (void)z0;
    *n_z = 0;
    blo_status st = blo_ll_new(state, sizeof(implicit_method), env, q->K, 0, 1, err);
    if (!st) ((implicit_method *)*state)->par = *q;
    return st;
}

blo_status blo_implicit_method_direction(void *state, int t, const double *x, const double *z,
                                         double *gx, double *gz, double *y, blo_record *rec,
                                         blo_error *err) {
    implicit_method *m = state;
    blo_ll_state *h = &m->ll;
    const blo_problem *p = h->p;
    (void)t, (void)z, (void)gz;
    int S = h->dyn.state_size;
    memcpy(h->y0_ref, h->y0, sizeof(double) * (size_t)p->n_y);
    memcpy(h->x_ref, x, sizeof(double) * (size_t)p->n_x);
    blo_status st = blo_state_init(p, &h->dyn, h->y0, h->states, h->tape, err);
    if (!st) st = blo_unroll(p, &h->dyn, x, 0, h->states, h->K, h->states, NULL, h->tape, err);
    if (!st) st = blo_state_read_y(p, &h->dyn, h->states + (size_t)h->K * S, y, h->tape, err);
    blo_implicit_params ip = {.kind = (blo_implicit_kind)m->par.kind, .iters = m->par.J,
                              .tol = m->par.tol, .eta = m->par.eta};
    blo_implicit_info info = {0};
    if (!st) st = blo_implicit_hypergrad(p, &ip, x, y, gx, &info, h->tape, err);
    rec->extra = info.residual;
    rec->kbar = h->K;
    if (!st && m->par.warm_start) memcpy(h->y0, y, sizeof(double) * (size_t)p->n_y);
    return st;
}
