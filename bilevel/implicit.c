// Implicit hypergradients: a linear system solved from its products (never formed), for the two
// systems of methods.h:
// - at the LL's stationary point: H q = g, H = d²f/dy² [n_y, n_y], g = grad_y F, each product a
//   Hessian-vector product on the tape; grad = grad_x F - (d²f/dx dy) q (BVFIM Table 2's CG and
//   Neumann rows);
// - at a fixed point of a dynamics' step map: (I - dPhi/ds)^T q = dF/ds [S], each product one
//   vector-Jacobian product through one recorded step; grad = grad_x F + (dPhi/dx)^T q.
// The solvers: CG, Neumann, MINRES (Paige and Saunders, "Solution of sparse indefinite systems of
// linear equations", SIAM J. Numer. Anal. 1975) and restarted GMRES (Saad and Schultz, "GMRES: a
// generalized minimal residual algorithm for solving nonsymmetric linear systems", SIAM J. Sci.
// Stat. Comput. 1986). Also the driver of the cg, neumann, minres and gmres methods: K steps of the
// dynamics, then the implicit hypergradient at the state reached.
#include "curvature.h"
#include "family.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

blo_implicit_params blo_implicit_default_params(blo_implicit_kind kind) {
    return (blo_implicit_params){.kind = kind, .iters = 20, .tol = 1e-10, .eta = 0.1, .restart = 20};
}

static const char *const solver_names[] = {"cg", "neumann", "minres", "gmres"};

// ---- products on the tape --------------------------------------------------------------------------

// out [n] = (d y / d wrt)^T v, y [ny] recorded before the mark m; the tape goes back to m after.
static bool vjp_rewind(ad_tape *t, ad_var y, int ny, ad_var wrt, int n, const double *v,
                       double *out, ad_mark m) {
    ad_var h = AD_NONE;
    bool ok = ad_vjp(t, y, ad_const(t, ad_vec_shape(ny), v), 1, &wrt, &h, 0) == AD_OK;
    if (ok) memcpy(out, ad_value(t, h), (size_t)n * sizeof(double));
    ad_tape_rewind(t, m);
    return ok;
}

bool blo_curv_record(blo_curv *c, ad_tape *t, const blo_problem *p, const double *x, const double *y) {
    *c = (blo_curv){.t = t, .nx = p->n_x, .ny = p->n_y};
    c->x = ad_param(t, ad_vec_shape(p->n_x), x);
    c->y = ad_param(t, ad_vec_shape(p->n_y), y);
    ad_grad(t, blo_call_f(t, p, c->x, c->y), 1, &c->y, &c->gy, AD_CREATE_GRAPH);
    c->m = ad_tape_mark(t);
    return ad_tape_status(t) == AD_OK;
}

// d/dwrt <gy, v>: the vector-Jacobian product of grad_y f
bool blo_curv_hvp(blo_curv *c, const double *v, double *out) {
    return vjp_rewind(c->t, c->gy, c->ny, c->y, c->ny, v, out, c->m);
}
bool blo_curv_mixed(blo_curv *c, const double *v, double *out) {
    return vjp_rewind(c->t, c->gy, c->ny, c->x, c->nx, v, out, c->m);
}

// ---- the solvers: q [n] with A q ~ g from q = 0 ------------------------------------------------------

// MINRES and GMRES stop (breakdown) at a pivot of their projected system below this times ||A||:
// its condition would pass 1 / (100 eps) ~ 4.5e13, which no non-singular A of a condition a double
// resolves gives (a pivot is at least sigma_min(A)); rounding alone leaves pivots of a few eps
// ||A|| where the Krylov space holds a null direction of A.
#define BLO_SINGULAR_PIVOT (100 * DBL_EPSILON)

// info->residual = ||A q - g|| / ||g||, one more product (r [n] gets g - A q).
static bool residual(const blo_linop *A, const double *g, const double *q, double *r,
                     blo_implicit_info *info) {
    if (!A->apply(A->ctx, q, r)) return false;
    for (int i = 0; i < A->n; i++) r[i] = g[i] - r[i];
    double gn = cblas_dnrm2(A->n, g, 1);
    info->residual = gn > 0 ? cblas_dnrm2(A->n, r, 1) / gn : 0;
    return true;
}

// Conjugate gradients; A must be symmetric positive definite. Where d^T A d is not positive, or
// so small against ||d|| ||A d|| that the step would lose every digit (for an SPD A the cosine of
// d and A d is at least 2 sqrt(cond) / (1 + cond), far above sqrt(eps) for any cond a double
// resolves), CG stops with what it has: breakdown, and the residual says how far q is.
static bool solve_cg(const blo_linop *A, const blo_implicit_params *ip, const double *g, double *q,
                     double *w, blo_implicit_info *info) {
    int n = A->n;
    double *r = w, *d = w + n, *Ad = w + 2 * n;
    memcpy(r, g, (size_t)n * sizeof *r);
    memcpy(d, g, (size_t)n * sizeof *d);
    memset(q, 0, (size_t)n * sizeof *q);
    double gg = blo_dot(g, g, n), rr = gg;
    info->iters = 0;
    while (info->iters < ip->iters && rr > ip->tol * ip->tol * gg && rr > 0) {
        if (!A->apply(A->ctx, d, Ad)) return false;
        double dAd = blo_dot(d, Ad, n);
        if (!(dAd > sqrt(DBL_EPSILON) * cblas_dnrm2(n, d, 1) * cblas_dnrm2(n, Ad, 1))) {
            info->breakdown = 1;
            break;
        }
        double a = rr / dAd;
        for (int i = 0; i < n; i++) q[i] += a * d[i], r[i] -= a * Ad[i];
        double rr2 = blo_dot(r, r, n);
        for (int i = 0; i < n; i++) d[i] = r[i] + rr2 / rr * d[i];
        rr = rr2;
        info->iters++;
    }
    info->residual = gg > 0 ? sqrt(rr / gg) : 0;
    return true;
}

// q = eta sum_{j=0..J} (I - eta A)^j g, term by term: p_0 = g, p_{j+1} = p_j - eta A p_j.
static bool solve_neumann(const blo_linop *A, const blo_implicit_params *ip, const double *g, double *q,
                          double *w, blo_implicit_info *info) {
    int n = A->n;
    double *pj = w, *Ap = w + n;
    memcpy(pj, g, (size_t)n * sizeof *pj);
    for (int i = 0; i < n; i++) q[i] = ip->eta * g[i];
    for (info->iters = 0; info->iters < ip->iters; info->iters++) {
        if (!A->apply(A->ctx, pj, Ap)) return false;
        for (int i = 0; i < n; i++) pj[i] -= ip->eta * Ap[i], q[i] += ip->eta * pj[i];
    }
    if (!residual(A, g, q, Ap, info)) return false;
    if (!(info->residual <= 1)) // worse than q = 0: the series diverges (eta ||A|| > 2)
        ad_tape_fail(A->t, AD_EDOMAIN, "the series diverges (residual %.3g after %d terms): "
                     "the step eta = %g is too large for this system", info->residual, info->iters, ip->eta);
    return true;
}

// MINRES (Paige and Saunders 1975, its MINRES algorithm) for a symmetric A, definite or not. Lanczos from
// v_1 = g / ||g|| gives the tridiagonal T [k + 1, k] one column (beta_k, alpha_k, beta_{k+1}) at a
// time; Givens rotations reduce it to R as it grows, and q_k = V_k R^-1 (rotated ||g|| e_1) is the
// least ||A q - g|| over the Krylov space, updated by the directions W = V R^-1 (three terms):
// five vectors, whatever k. The rotated right-hand side's last entry is the residual's norm.
static bool solve_minres(const blo_linop *A, const blo_implicit_params *ip, const double *g, double *q,
                         double *w, blo_implicit_info *info) {
    int n = A->n;
    double *v = w, *vprev = w + n, *Av = w + 2 * n, *dir = w + 3 * n, *dirprev = w + 4 * n;
    memset(q, 0, (size_t)n * sizeof *q);
    memset(vprev, 0, (size_t)n * sizeof *vprev);
    memset(dir, 0, (size_t)n * sizeof *dir);
    memset(dirprev, 0, (size_t)n * sizeof *dirprev);
    double gnorm = cblas_dnrm2(n, g, 1), phibar = gnorm, boff = 0, anorm = 0;
    double c1 = 1, s1 = 0, c2 = 1, s2 = 0; // rotations k-1 and k-2
    for (int i = 0; i < n; i++) v[i] = gnorm > 0 ? g[i] / gnorm : 0;
    info->iters = 0;
    while (info->iters < ip->iters && fabs(phibar) > ip->tol * gnorm && gnorm > 0) {
        if (!A->apply(A->ctx, v, Av)) return false;
        double alpha = blo_dot(v, Av, n);
        for (int i = 0; i < n; i++) Av[i] -= alpha * v[i] + boff * vprev[i];
        double bnext = cblas_dnrm2(n, Av, 1);
        anorm = fmax(anorm, sqrt(boff * boff + alpha * alpha + bnext * bnext));
        // column k of T through rotations k-2 and k-1, then rotation k zeroes beta_{k+1}
        double eps = s2 * boff, dl = c2 * boff;
        double delta = c1 * dl + s1 * alpha, gbar = -s1 * dl + c1 * alpha;
        double gamma = hypot(gbar, bnext);
        if (!(gamma > BLO_SINGULAR_PIVOT * anorm)) { // T_k singular: A is, on this Krylov space
            info->breakdown = 1;
            break;
        }
        double c = gbar / gamma, s = bnext / gamma, tau = c * phibar;
        phibar = -s * phibar;
        for (int i = 0; i < n; i++) {
            double di = (v[i] - delta * dir[i] - eps * dirprev[i]) / gamma;
            dirprev[i] = dir[i], dir[i] = di;
            q[i] += tau * di;
        }
        c2 = c1, s2 = s1, c1 = c, s1 = s;
        info->iters++;
        if (!(bnext > 0)) break; // an invariant subspace: q is exact on it
        double *t = vprev;       // v_{k+1} = (A v_k - alpha v_k - beta_k v_{k-1}) / beta_{k+1}
        vprev = v, v = Av, Av = t;
        for (int i = 0; i < n; i++) v[i] /= bnext;
        boff = bnext;
    }
    return residual(A, g, q, Av, info);
}

// GMRES(m) (Saad and Schultz 1986, the restarted algorithm). Arnoldi with modified
// Gram-Schmidt builds V [m + 1, n] and the Hessenberg H [m + 1, m] from r = g - A q; Givens
// rotations reduce H to R as it grows, so the rotated ||r|| e_1's last entry is the residual at
// every step. After m steps (or at the tolerance) q += V R^-1 (rotated e_1); the residual of that q,
// one more product, starts the next cycle and is the one reported.
static bool solve_gmres(const blo_linop *A, const blo_implicit_params *ip, const double *g, double *q,
                        double *w, blo_implicit_info *info) {
    int n = A->n, m = ip->restart;
    double *V = w, *H = V + (size_t)(m + 1) * n;     // H's column j at H + j (m + 1)
    double *cs = H + (size_t)(m + 1) * m, *sn = cs + m, *e = sn + m; // e [m + 1]
    double gnorm = cblas_dnrm2(n, g, 1), beta = gnorm, anorm = 0;
    memset(q, 0, (size_t)n * sizeof *q);
    memcpy(V, g, (size_t)n * sizeof *V);
    info->iters = 0;
    while (info->iters < ip->iters && beta > ip->tol * gnorm && beta > 0 && !info->breakdown) {
        cblas_dscal(n, 1 / beta, V, 1);
        memset(e, 0, (size_t)(m + 1) * sizeof *e);
        e[0] = beta;
        int k = 0; // columns of R
        while (k < m && info->iters < ip->iters) {
            double *z = V + (size_t)(k + 1) * n, *h = H + (size_t)k * (m + 1);
            if (!A->apply(A->ctx, V + (size_t)k * n, z)) return false;
            info->iters++;
            anorm = fmax(anorm, cblas_dnrm2(n, z, 1)); // ||A v_k|| <= ||A||
            for (int i = 0; i <= k; i++) {
                h[i] = cblas_ddot(n, V + (size_t)i * n, 1, z, 1);
                cblas_daxpy(n, -h[i], V + (size_t)i * n, 1, z, 1);
            }
            double hnext = cblas_dnrm2(n, z, 1);
            for (int i = 0; i < k; i++) {
                double a = h[i], b = h[i + 1];
                h[i] = cs[i] * a + sn[i] * b, h[i + 1] = -sn[i] * a + cs[i] * b;
            }
            double r = hypot(h[k], hnext);
            if (!(r > BLO_SINGULAR_PIVOT * anorm)) { // A is singular on this Krylov space
                info->breakdown = 1;
                break;
            }
            cs[k] = h[k] / r, sn[k] = hnext / r, h[k] = r;
            e[k + 1] = -sn[k] * e[k], e[k] *= cs[k];
            k++;
            if (fabs(e[k]) <= ip->tol * gnorm || !(hnext > 0)) break; // converged, or exact on V
            cblas_dscal(n, 1 / hnext, z, 1);
        }
        for (int i = k - 1; i >= 0; i--) { // R y = e, into e; q += V y
            for (int j = i + 1; j < k; j++) e[i] -= H[(size_t)j * (m + 1) + i] * e[j];
            e[i] /= H[(size_t)i * (m + 1) + i];
        }
        for (int i = 0; i < k; i++) cblas_daxpy(n, e[i], V + (size_t)i * n, 1, q, 1);
        if (!residual(A, g, q, V, info)) return false;
        beta = info->residual * gnorm;
    }
    info->residual = gnorm > 0 ? beta / gnorm : 0;
    return true;
}

bool blo_linop_solve(const blo_linop *A, const blo_implicit_params *ip, const double *g, double *q,
                     double *w, blo_implicit_info *info) {
    switch (ip->kind) {
    case BLO_IMPLICIT_CG: return solve_cg(A, ip, g, q, w, info);
    case BLO_IMPLICIT_NEUMANN: return solve_neumann(A, ip, g, q, w, info);
    case BLO_IMPLICIT_MINRES: return solve_minres(A, ip, g, q, w, info);
    case BLO_IMPLICIT_GMRES: return solve_gmres(A, ip, g, q, w, info);
    }
    return false;
}

double blo_linop_work(const blo_implicit_params *ip, int n) {
    double m = ip->restart;
    switch (ip->kind) {
    case BLO_IMPLICIT_CG: return 3.0 * n;
    case BLO_IMPLICIT_NEUMANN: return 2.0 * n;
    case BLO_IMPLICIT_MINRES: return 5.0 * n;
    case BLO_IMPLICIT_GMRES: return (m + 1) * n + (m + 1) * m + 3 * m + 1;
    }
    return 0;
}

static blo_status check_params(const blo_implicit_params *ip, const char *where, blo_error *err) {
    if (!((unsigned)ip->kind <= BLO_IMPLICIT_GMRES))
        return blo_fail(err, BLO_EARG, "%s: unknown solver %d", where, (int)ip->kind);
    if (ip->iters < 0 || !(ip->tol >= 0) || (ip->kind == BLO_IMPLICIT_NEUMANN && !(ip->eta > 0)))
        return blo_fail(err, BLO_EARG, "%s: iterations %d, tolerance %g and Neumann step %g "
                        "must be non-negative (the step positive)", where, ip->iters, ip->tol, ip->eta);
    if (ip->kind == BLO_IMPLICIT_GMRES && ip->restart < 1)
        return blo_fail(err, BLO_EARG, "%s: GMRES restart %d must be >= 1", where, ip->restart);
    return BLO_OK;
}

// One solve's memory: g, q [n] and w (the solver's work, at least nx for the last product), on a
// tape the call may use; an error (err set) when it does not fit.
typedef struct {
    blo_tape_use u;
    double *g, *q, *w;
} solve_mem;

static blo_status mem_acquire(solve_mem *s, const blo_implicit_params *ip, int n, int nx,
                              ad_tape *tape, blo_error *err) {
    double nw = fmax(blo_linop_work(ip, n), nx);
    char what[80];
    snprintf(what, sizeof what, "the %s solver's %.0f doubles", solver_names[ip->kind], 2.0 * n + nw);
    blo_status st = blo_check_memory(1, 8 * (2.0 * n + nw), what, err);
    if (st) return st;
    s->g = malloc(sizeof(double) * (2 * (size_t)n + (size_t)nw));
    if (!s->g) return blo_fail(err, BLO_ENOMEM, "out of memory for %s", what);
    s->q = s->g + n, s->w = s->g + 2 * n;
    if ((st = blo_tape_acquire(&s->u, tape, err))) free(s->g);
    return st;
}

// The tape's error (if any) into err under where's name; frees what mem_acquire took.
static blo_status mem_release(solve_mem *s, blo_status st, const char *where, blo_error *err) {
    if (st == BLO_OK) st = blo_tape_check(s->u.t, err, where);
    free(s->g);
    blo_tape_release(&s->u);
    return st;
}

static bool hvp_apply(void *ctx, const double *v, double *out) { return blo_curv_hvp(ctx, v, out); }

blo_status blo_implicit_hypergrad(const blo_problem *p, const blo_implicit_params *ip,
                                  const double *x, const double *y, double *grad_x,
                                  blo_implicit_info *info, ad_tape *tape, blo_error *err) {
    blo_ok(err);
    blo_implicit_info local;
    if (!info) info = &local;
    *info = (blo_implicit_info){0};
    if (!p || !ip || !x || !y || !grad_x) return blo_fail(err, BLO_EARG, "implicit: NULL argument");
    blo_status st = check_params(ip, "implicit", err);
    if (!st) st = blo_problem_check(p, x, y, tape, err);
    solve_mem s;
    if (!st) st = mem_acquire(&s, ip, p->n_y, p->n_x, tape, err);
    if (st) return st;
    // grad_x F, grad_y F at (x, y); then grad_y f with its graph for the products
    st = blo_eval(p, 1, x, y, NULL, grad_x, s.g, s.u.t, err);
    blo_curv c;
    blo_linop H = {p->n_y, s.u.t, hvp_apply, &c};
    bool ok = st == BLO_OK && blo_curv_record(&c, s.u.t, p, x, y) && blo_linop_solve(&H, ip, s.g, s.q, s.w, info) &&
              blo_curv_mixed(&c, s.q, s.w); // grad_x F - d/dx <grad_y f, q>
    for (int i = 0; ok && i < p->n_x; i++) grad_x[i] -= s.w[i];
    return mem_release(&s, st, solver_names[ip->kind], err);
}

// ---- the fixed point of a step map ----------------------------------------------------------------

typedef struct {
    ad_tape *t;
    ad_var x, s, next; // the point (x, s) and Phi_k(x, s) [S]
    int S;
    ad_mark m;         // after next
} fixed_point;

// (I - dPhi/ds)^T v
static bool fixed_point_apply(void *ctx, const double *v, double *out) {
    fixed_point *c = ctx;
    if (!vjp_rewind(c->t, c->next, c->S, c->s, c->S, v, out, c->m)) return false;
    for (int i = 0; i < c->S; i++) out[i] = v[i] - out[i];
    return true;
}

// dF/dx into gx [n_x] and dF/ds into gs [S] at (x, state), then Phi_k(x, state) recorded.
static bool fixed_point_record(fixed_point *c, ad_tape *t, const blo_problem *p,
                               const blo_dynamics *d, int k, const double *x, const double *state,
                               double *gx, double *gs) {
    *c = (fixed_point){.t = t, .S = d->state_size};
    c->x = ad_param(t, ad_vec_shape(p->n_x), x);
    c->s = ad_param(t, ad_vec_shape(c->S), state);
    ad_mark m = ad_tape_mark(t);
    ad_var wrt[2] = {c->x, c->s}, out[2] = {AD_NONE, AD_NONE};
    if (ad_grad(t, blo_call_F(t, p, c->x, blo_rec_read_y(t, p, d, c->s)), 2, wrt, out, 0) != AD_OK)
        return false;
    memcpy(gx, ad_value(t, out[0]), sizeof(double) * (size_t)p->n_x);
    memcpy(gs, ad_value(t, out[1]), sizeof(double) * (size_t)c->S);
    ad_tape_rewind(t, m);
    c->next = blo_rec_step(t, p, d, k, c->x, c->s);
    c->m = ad_tape_mark(t);
    return ad_tape_status(t) == AD_OK;
}

blo_status blo_fixed_point_hypergrad(const blo_problem *p, const blo_dynamics *d, int k,
                                     const blo_implicit_params *ip, const double *x,
                                     const double *state, double *grad_x, blo_implicit_info *info,
                                     ad_tape *tape, blo_error *err) {
    blo_ok(err);
    blo_implicit_info local;
    if (!info) info = &local;
    *info = (blo_implicit_info){0};
    if (!p || !d || !ip || !x || !state || !grad_x)
        return blo_fail(err, BLO_EARG, "fixed point: NULL argument");
    blo_status st = check_params(ip, "fixed point", err);
    if (st) return st;
    if (ip->kind == BLO_IMPLICIT_CG || ip->kind == BLO_IMPLICIT_MINRES)
        return blo_fail(err, BLO_EARG, "fixed point: %s needs a symmetric operator and (I - dPhi/ds)^T "
                        "is not; use gmres or neumann", solver_names[ip->kind]);
    if (k < 0) return blo_fail(err, BLO_EARG, "fixed point: step k = %d must be >= 0", k);
    solve_mem s;
    if ((st = blo_dynamics_validate(p, d, err)) || (st = mem_acquire(&s, ip, d->state_size, p->n_x, tape, err)))
        return st;
    fixed_point c;
    blo_linop A = {d->state_size, s.u.t, fixed_point_apply, &c};
    bool ok = fixed_point_record(&c, s.u.t, p, d, k, x, state, grad_x, s.g) &&
              blo_linop_solve(&A, ip, s.g, s.q, s.w, info) &&
              vjp_rewind(c.t, c.next, c.S, c.x, p->n_x, s.q, s.w, c.m); // (dPhi/dx)^T q
    for (int i = 0; ok && i < p->n_x; i++) grad_x[i] += s.w[i];
    char where[40];
    snprintf(where, sizeof where, "%s (fixed point)", solver_names[ip->kind]);
    return mem_release(&s, BLO_OK, where, err);
}

// ---- the cg, neumann, minres and gmres methods ---------------------------------------------------------

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
    blo_status st = blo_ll_steps(h, x, y, err);
    blo_implicit_params ip = {.kind = (blo_implicit_kind)m->par.kind, .iters = m->par.J,
                              .tol = m->par.tol, .eta = m->par.eta, .restart = m->par.restart};
    blo_implicit_info info = {0};
    // the fixed point of the step that would come next, at the state the K steps reached
    if (!st && m->par.fixed_point)
        st = blo_fixed_point_hypergrad(p, &h->dyn, h->K, &ip, x, h->states + (size_t)h->K * S, gx,
                                       &info, h->tape, err);
    else if (!st)
        st = blo_implicit_hypergrad(p, &ip, x, y, gx, &info, h->tape, err);
    rec->extra = info.residual;
    rec->kbar = h->K;
    if (!st && m->par.warm_start) memcpy(h->y0, y, sizeof(double) * (size_t)p->n_y);
    return st;
}
