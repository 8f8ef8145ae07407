// The bilevel layer: the hypergradient sweep against a closed form (quadratic problem, GD
// dynamics), its convergence to the exact implicit hypergradient, the forward step maps against
// plain-loop re-implementations, finite differences of the truncated objective actually
// differentiated for every dynamics and truncation mode, and the error paths.
#include "harness.h"

#include "../autodiff/ad_extra.h" // ad_op_find, ad_tape_op_evals
#include "../bilevel/blo.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void test_bilevel(void);

#define MAXN 10
#define MAXK 200
#define MAXS (3 * MAXN) // the largest built-in state: accel's (y, u, v)

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

// ---- the test problems -----------------------------------------------------------------------------
//
// Quadratic: F = 1/2 ||y - b||^2 + rho/2 ||x||^2,  f = 1/2 y^T A y - y^T B x,  A SPD.
// Nonlinear adds  F += 0.2 sum(tanh(y) * (E x)) + 0.1 sum(sin x),
//                 f += 0.3 sum(sin(y + C x)) + 0.5 sum(logcosh(y - D x)),
// so the sweep needs second derivatives of sin, tanh, softplus and products. f stays strongly
// convex in y: A >= I and the sin term's curvature is >= -0.3.
typedef struct {
    int nx, ny, nonlinear;
    double A[MAXN * MAXN], B[MAXN * MAXN], C[MAXN * MAXN], D[MAXN * MAXN], E[MAXN * MAXN];
    double b[MAXN], rho;
    int bad; // error paths: 1 F returns y (not a scalar), 2 f returns AD_NONE, 3 f uses a wrong size
} qp;

static ad_var mv(ad_tape *t, const double *M, int r, int c, ad_var v) {
    return ad_matvec(t, ad_const(t, ad_mat_shape(r, c), M), v, 0);
}

static ad_var qp_F(ad_tape *t, ad_var x, ad_var y, void *user) {
    const qp *q = user;
    if (q->bad == 1) return y;
    ad_var r = ad_sub(t, y, ad_const(t, ad_vec_shape(q->ny), q->b));
    ad_var v = ad_add(t, ad_scale(t, ad_sqnorm(t, r), 0.5), ad_scale(t, ad_sqnorm(t, x), 0.5 * q->rho));
    if (q->nonlinear) {
        ad_var Ex = mv(t, q->E, q->ny, q->nx, x);
        v = ad_add(t, v, ad_scale(t, ad_sum(t, ad_mul(t, ad_tanh(t, y), Ex)), 0.2));
        v = ad_add(t, v, ad_scale(t, ad_sum(t, ad_sin(t, x)), 0.1));
    }
    return v;
}

static ad_var qp_f(ad_tape *t, ad_var x, ad_var y, void *user) {
    const qp *q = user;
    if (q->bad == 2) return AD_NONE;
    int ny = q->bad == 3 ? q->ny + 1 : q->ny; // a matrix of the wrong size: the tape reports it
    ad_var v = ad_sub(t, ad_scale(t, ad_dot(t, y, mv(t, q->A, ny, ny, y)), 0.5),
                      ad_dot(t, y, mv(t, q->B, q->ny, q->nx, x)));
    if (q->nonlinear) {
        ad_var w = ad_add(t, y, mv(t, q->C, q->ny, q->nx, x));
        v = ad_add(t, v, ad_scale(t, ad_sum(t, ad_sin(t, w)), 0.3));
        // logcosh(u) = softplus(2u) - u - log 2 (the constant dropped)
        ad_var u = ad_sub(t, y, mv(t, q->D, q->ny, q->nx, x));
        v = ad_add(t, v, ad_scale(t, ad_sum(t, ad_sub(t, ad_softplus(t, ad_scale(t, u, 2)), u)), 0.5));
    }
    return v;
}

static void randn(ad_rng *r, int n, double *v, double scale) {
    for (int i = 0; i < n; i++) v[i] = scale * ad_rng_normal(r);
}

// A = I + 0.5 M M^T / ny (SPD, eigenvalues >= 1), the rest N(0, 1) (scaled).
static void qp_make(qp *q, int nx, int ny, int nonlinear, uint64_t seed) {
    memset(q, 0, sizeof *q);
    q->nx = nx, q->ny = ny, q->nonlinear = nonlinear, q->rho = 0.3;
    ad_rng r;
    ad_rng_seed(&r, seed);
    double M[MAXN * MAXN];
    randn(&r, ny * ny, M, 1);
    for (int i = 0; i < ny; i++)
        for (int j = 0; j < ny; j++) {
            double s = 0;
            for (int k = 0; k < ny; k++) s += M[i * ny + k] * M[j * ny + k];
            q->A[i * ny + j] = (i == j) + 0.5 * s / ny;
        }
    randn(&r, ny * nx, q->B, 1);
    randn(&r, ny * nx, q->C, 0.5);
    randn(&r, ny * nx, q->D, 0.5);
    randn(&r, ny * nx, q->E, 1);
    randn(&r, ny, q->b, 1);
}

static blo_problem qp_problem(qp *q) {
    return (blo_problem){.n_x = q->nx, .n_y = q->ny, .F = qp_F, .f = qp_f, .user = q};
}

// Gershgorin bound on A's largest eigenvalue.
static double qp_lipschitz(const qp *q) {
    double L = 0;
    for (int i = 0; i < q->ny; i++) {
        double s = 0;
        for (int j = 0; j < q->ny; j++) s += fabs(q->A[i * q->ny + j]);
        if (s > L) L = s;
    }
    return L;
}

static double maxabs(int n, const double *v) {
    double m = 0;
    for (int i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}
static double rel_err(int n, const double *a, const double *ref) {
    double d = 0;
    for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - ref[i]));
    return d / fmax(maxabs(n, ref), 1e-300);
}

// ---- independent references for the quadratic problem under GD (plain loops, no tape) -----------------

// The K-step map from y_0 = 0 is y_K = M_K x with M_0 = 0, M_{k+1} = (I - sA) M_k + s B [ny, nx], so
// grad phi_K = M_K^T (M_K x - b) + rho x.
static void qp_gd_closed_form(const qp *q, double s, int K, const double *x, double *g) {
    int nx = q->nx, ny = q->ny;
    double M[MAXN * MAXN] = {0}, N[MAXN * MAXN];
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < ny; i++)
            for (int j = 0; j < nx; j++) {
                double v = M[i * nx + j] + s * q->B[i * nx + j];
                for (int l = 0; l < ny; l++) v -= s * q->A[i * ny + l] * M[l * nx + j];
                N[i * nx + j] = v;
            }
        memcpy(M, N, sizeof M);
    }
    double r[MAXN];
    for (int i = 0; i < ny; i++) {
        r[i] = -q->b[i];
        for (int j = 0; j < nx; j++) r[i] += M[i * nx + j] * x[j];
    }
    for (int j = 0; j < nx; j++) {
        g[j] = q->rho * x[j];
        for (int i = 0; i < ny; i++) g[j] += M[i * nx + j] * r[i];
    }
}

// Solves A u = v by Cholesky (A SPD).
static void chol_solve(const qp *q, const double *v, double *u) {
    int n = q->ny;
    double L[MAXN * MAXN] = {0}, w[MAXN];
    for (int i = 0; i < n; i++)
        for (int j = 0; j <= i; j++) {
            double s = q->A[i * n + j];
            for (int k = 0; k < j; k++) s -= L[i * n + k] * L[j * n + k];
            L[i * n + j] = i == j ? sqrt(s) : s / L[j * n + j];
        }
    for (int i = 0; i < n; i++) {
        double s = v[i];
        for (int k = 0; k < i; k++) s -= L[i * n + k] * w[k];
        w[i] = s / L[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) {
        double s = w[i];
        for (int k = i + 1; k < n; k++) s -= L[k * n + i] * u[k];
        u[i] = s / L[i * n + i];
    }
}

// The exact hypergradient (K -> inf): rho x + B^T A^{-1} (A^{-1} B x - b).
static void qp_exact(const qp *q, const double *x, double *g) {
    int nx = q->nx, ny = q->ny;
    double Bx[MAXN] = {0}, ys[MAXN] = {0}, r[MAXN] = {0}, w[MAXN] = {0};
    for (int i = 0; i < ny; i++) {
        Bx[i] = 0;
        for (int j = 0; j < nx; j++) Bx[i] += q->B[i * nx + j] * x[j];
    }
    chol_solve(q, Bx, ys);
    for (int i = 0; i < ny; i++) r[i] = ys[i] - q->b[i];
    chol_solve(q, r, w);
    for (int j = 0; j < nx; j++) {
        g[j] = q->rho * x[j];
        for (int i = 0; i < ny; i++) g[j] += q->B[i * nx + j] * w[i];
    }
}

// Hand-written gradients of the nonlinear problem for the plain-loop dynamics.
static void qp_grad_f(const qp *q, const double *x, const double *y, double *g) {
    int nx = q->nx, ny = q->ny;
    for (int i = 0; i < ny; i++) {
        double Ay = 0, Bx = 0, Cx = 0, Dx = 0;
        for (int l = 0; l < ny; l++) Ay += q->A[i * ny + l] * y[l];
        for (int j = 0; j < nx; j++) {
            Bx += q->B[i * nx + j] * x[j];
            Cx += q->C[i * nx + j] * x[j];
            Dx += q->D[i * nx + j] * x[j];
        }
        g[i] = Ay - Bx + (q->nonlinear ? 0.3 * cos(y[i] + Cx) + 0.5 * tanh(y[i] - Dx) : 0);
    }
}
static void qp_grad_F(const qp *q, const double *x, const double *y, double *g) {
    for (int i = 0; i < q->ny; i++) {
        double Ex = 0;
        for (int j = 0; j < q->nx; j++) Ex += q->E[i * q->nx + j] * x[j];
        double th = tanh(y[i]);
        g[i] = y[i] - q->b[i] + (q->nonlinear ? 0.2 * (1 - th * th) * Ex : 0);
    }
}

// One of the built-in dynamics stepped K times with plain loops: y_traj [(K+1) ny].
static void plain_dynamics(const qp *q, const blo_dynamics *d, const double *lo, const double *hi,
                           const double *x, const double *y0, int K, double *y_traj) {
    int n = q->ny;
    double y[MAXN], yp[MAXN], u[MAXN], v[MAXN], g[MAXN], gF[MAXN], t_prev = 1, t_cur = 1;
    memcpy(y, y0, sizeof(double) * n);
    memcpy(yp, y0, sizeof(double) * n);
    memcpy(u, y0, sizeof(double) * n); // accel: u_0 = v_0 = y_0
    memcpy(v, y0, sizeof(double) * n);
    memcpy(y_traj, y, sizeof(double) * n);
    for (int k = 0; k < K; k++) {
        double ynew[MAXN];
        int project_y = 1;
        if (!strcmp(d->name, "accel")) {
            // Ghadimi-Lan with j = k + 1; y is a convex combination, not projected itself.
            double j = k + 1, a = 2 / (j + 1), b = 1 / (2 * d->par.accel.L_f), l = j * b / 2;
            for (int i = 0; i < n; i++) ynew[i] = (1 - a) * u[i] + a * v[i];
            qp_grad_f(q, x, ynew, g);
            for (int i = 0; i < n; i++) {
                u[i] = ynew[i] - b * g[i];
                v[i] = v[i] - l * g[i];
                if (lo) u[i] = fmax(u[i], lo[i]), v[i] = fmax(v[i], lo[i]);
                if (hi) u[i] = fmin(u[i], hi[i]), v[i] = fmin(v[i], hi[i]);
            }
            project_y = 0;
        } else if (!strcmp(d->name, "gd")) {
            qp_grad_f(q, x, y, g);
            for (int i = 0; i < n; i++) ynew[i] = y[i] - d->par.gd.s_l * g[i];
        } else if (!strcmp(d->name, "bda")) {
            const blo_bda_params *p = &d->par.bda;
            double a = p->weights == BLO_BDA_AIT ? p->mu / (k + 1) : p->c / (k + 1);
            double b = p->weights == BLO_BDA_AIT ? (1 - p->mu) * p->beta : 1 - a;
            qp_grad_f(q, x, y, g);
            qp_grad_F(q, x, y, gF);
            for (int i = 0; i < n; i++) ynew[i] = y[i] - (a * p->s_u * gF[i] + b * p->s_l * g[i]);
        } else if (!strcmp(d->name, "nesterov")) {
            double m = k == 0 ? 0 : (t_prev - 1) / t_cur;
            for (int i = 0; i < n; i++) u[i] = y[i] + m * (y[i] - yp[i]);
            qp_grad_f(q, x, u, g);
            for (int i = 0; i < n; i++) ynew[i] = u[i] - d->par.nesterov.s_l * g[i];
            t_prev = t_cur;
            t_cur = (1 + sqrt(1 + 4 * t_cur * t_cur)) / 2;
        } else { // momentum
            qp_grad_f(q, x, y, g);
            for (int i = 0; i < n; i++)
                ynew[i] = y[i] - d->par.momentum.s_l * g[i] + d->par.momentum.beta * (y[i] - yp[i]);
        }
        for (int i = 0; i < n && project_y; i++) {
            if (lo) ynew[i] = fmax(ynew[i], lo[i]);
            if (hi) ynew[i] = fmin(ynew[i], hi[i]);
        }
        memcpy(yp, y, sizeof(double) * n);
        memcpy(y, ynew, sizeof(double) * n);
        memcpy(y_traj + (size_t)(k + 1) * n, y, sizeof(double) * n);
    }
}

// ---- finite differences of the objective actually differentiated ---------------------------------------

// phi(x, z) = F(x, y_{k_end}) (+ lambda/2 ||z - z_p||^2) where the state at k_start is the one of the
// reference point when k_start > 0 (held fixed, as T-RHG treats it) and init(z) otherwise;
// k_end is the reference run's (Kbar held fixed under PTT).
typedef struct {
    const blo_problem *p;
    const blo_dynamics *d;
    const blo_hypergrad_params *hp;
    int k_start, k_end;
    double fixed[MAXS];
    int failed;
} phi_ctx;

static double phi_eval(phi_ctx *c, const double *x, const double *z) {
    double s0[MAXS], states[(MAXK + 1) * MAXS], Fv[MAXK + 1];
    blo_error e;
    if (c->k_start > 0) memcpy(s0, c->fixed, sizeof s0);
    else if (blo_state_init(c->p, c->d, z, s0, NULL, &e)) c->failed = 1;
    int n = c->k_end - c->k_start;
    if (blo_unroll(c->p, c->d, x, c->k_start, s0, n, states, Fv, NULL, &e)) c->failed = 1;
    double v = Fv[n];
    if (c->hp->ia && c->hp->prior_lambda > 0)
        for (int i = 0; i < c->p->n_y; i++)
            v += 0.5 * c->hp->prior_lambda * (z[i] - c->hp->z_prior[i]) * (z[i] - c->hp->z_prior[i]);
    return v;
}

// Fourth-order central differences: (8 (f(h) - f(-h)) - (f(2h) - f(-2h))) / 12h.
static void fd_grad(phi_ctx *c, const double *x0, const double *z0, int wrt_z, double *g) {
    int n = wrt_z ? c->p->n_y : c->p->n_x;
    double x[MAXN], z[MAXN];
    for (int i = 0; i < n; i++) {
        double v[4], off[4] = {1, -1, 2, -2};
        double base = wrt_z ? z0[i] : x0[i], h = 1e-3 * fmax(1, fabs(base));
        for (int j = 0; j < 4; j++) {
            memcpy(x, x0, sizeof(double) * c->p->n_x);
            memcpy(z, z0, sizeof(double) * c->p->n_y);
            (wrt_z ? z : x)[i] = base + off[j] * h;
            v[j] = phi_eval(c, x, z);
        }
        g[i] = (8 * (v[0] - v[1]) - (v[2] - v[3])) / (12 * h);
    }
}

typedef struct {
    const char *name;
    int truncate, ptt, ia, prior;
} mode;

static const mode modes[] = {
    {"rhg", 0, 0, 0, 0},       {"trhg", 3, 0, 0, 0},    {"ptt", 0, 1, 0, 0},
    {"ptt+trhg", 2, 1, 0, 0},  {"ia", 0, 0, 1, 0},      {"ia+prior", 0, 0, 1, 1},
    {"ia+ptt", 0, 1, 1, 0},    {"ia+ptt+prior", 0, 1, 1, 1}, {"ia+trhg", 3, 0, 1, 1},
};

typedef struct {
    double worst_x, worst_z; // largest relative errors seen
    int n_runs, n_interior_kbar;
    long n_clamped, n_inside; // entries of y_1..y_K on a bound of the Y box / strictly inside
} fd_stats;

// One dynamics, one mode: the sweep's gradients against finite differences of phi.
static void check_fd(const char *label, qp *q, const blo_problem *p, const blo_dynamics *d,
                     const mode *m, int K, fd_stats *st) {
    double x0[MAXN], z0[MAXN], zp[MAXN], gx[MAXN], gz[MAXN], ngx[MAXN], ngz[MAXN];
    ad_rng r;
    ad_rng_seed(&r, 1234);
    randn(&r, q->nx, x0, 0.7);
    randn(&r, q->ny, z0, 0.7);
    randn(&r, q->ny, zp, 0.5);
    blo_hypergrad_params hp = blo_hypergrad_default_params();
    hp.K = K, hp.truncate = m->truncate, hp.ptt = m->ptt, hp.ia = m->ia;
    if (m->prior) hp.prior_lambda = 0.8, hp.z_prior = zp;
    blo_hypergrad_info info;
    blo_error e;
    double Ftraj[MAXK + 1];
    blo_status s = blo_hypergrad(p, d, &hp, x0, z0, gx, gz, Ftraj, &info, &e);
    EXPECT(s == BLO_OK, "%s %s: %s", label, m->name, e.msg);
    if (s) return;
    // Graph mode (the default here: these problems fit the budget) and the lean sweep agree.
    {
        blo_hypergrad_params hl = hp;
        hl.graph_budget = 0;
        double gx2[MAXN], gz2[MAXN];
        blo_hypergrad_info i2;
        EXPECT(blo_hypergrad(p, d, &hl, x0, z0, gx2, gz2, NULL, &i2, &e) == BLO_OK, "%s %s: %s",
               label, m->name, e.msg);
        EXPECT(info.graph == !(m->ptt && m->truncate > 0) && i2.graph == 0,
               "%s %s: graph mode %d / %d", label, m->name, info.graph, i2.graph);
        double dx = 0, nxx = 0, dz = 0, nz = 0;
        for (int i = 0; i < q->nx; i++) dx += (gx[i] - gx2[i]) * (gx[i] - gx2[i]), nxx += gx[i] * gx[i];
        for (int i = 0; m->ia && i < q->ny; i++) dz += (gz[i] - gz2[i]) * (gz[i] - gz2[i]), nz += gz[i] * gz[i];
        EXPECT(sqrt(dx) <= 1e-12 * fmax(sqrt(nxx), 1e-300) && sqrt(dz) <= 1e-12 * fmax(sqrt(nz), 1e-300) &&
                   i2.kbar == info.kbar && i2.k_start == info.k_start,
               "%s %s: graph mode vs sweep: x %.3g, z %.3g relative", label, m->name,
               sqrt(dx / fmax(nxx, 1e-300)), sqrt(dz / fmax(nz, 1e-300)));
    }
    if (m->ptt) { // Kbar is the first maximizer of F(x, y_k) over k = 1..K
        int first = 1;
        for (int k = 2; k <= K; k++)
            if (Ftraj[k] > Ftraj[first]) first = k;
        EXPECT(info.kbar == first, "%s %s: kbar %d, first argmax %d", label, m->name, info.kbar,
               first);
    }
    phi_ctx c = {.p = p, .d = d, .hp = &hp, .k_start = info.k_start, .k_end = info.k_end};
    if (c.k_start > 0) { // the reference point's state at k_start, held fixed
        double states[(MAXK + 1) * MAXS], s0[MAXS];
        blo_state_init(p, d, z0, s0, NULL, &e);
        blo_unroll(p, d, x0, 0, s0, c.k_start, states, NULL, NULL, &e);
        memcpy(c.fixed, states + (size_t)c.k_start * d->state_size, sizeof(double) * d->state_size);
    }
    EXPECT(fabs(phi_eval(&c, x0, z0) - info.value) <= 1e-13 * fmax(1, fabs(info.value)),
           "%s %s: value %.17g vs phi %.17g", label, m->name, info.value, phi_eval(&c, x0, z0));
    fd_grad(&c, x0, z0, 0, ngx);
    double ex = rel_err(q->nx, gx, ngx);
    EXPECT(!c.failed, "%s %s: an unroll failed", label, m->name);
    EXPECT(ex <= 1e-6, "%s %s: grad_x relative error %.3g (K = %d, k_start %d, k_end %d)", label,
           m->name, ex, K, info.k_start, info.k_end);
    st->worst_x = fmax(st->worst_x, ex);
    if (m->ia) {
        fd_grad(&c, x0, z0, 1, ngz);
        double ez = rel_err(q->ny, gz, ngz);
        EXPECT(ez <= 1e-6, "%s %s: grad_z relative error %.3g", label, m->name, ez);
        st->worst_z = fmax(st->worst_z, ez);
    }
    if (p->y_lo && p->y_hi) { // how much of the trajectory the box actually clamps
        double states[(MAXK + 1) * MAXS], s0[MAXS], y[MAXN];
        blo_state_init(p, d, z0, s0, NULL, &e);
        blo_unroll(p, d, x0, 0, s0, K, states, NULL, NULL, &e);
        for (int k = 1; k <= K; k++) {
            blo_state_read_y(p, d, states + (size_t)k * d->state_size, y, NULL, &e);
            for (int i = 0; i < q->ny; i++) {
                bool on = y[i] == p->y_lo[i] || y[i] == p->y_hi[i];
                st->n_clamped += on;
                st->n_inside += !on;
            }
        }
    }
    if (m->ptt) {
        EXPECT(info.kbar >= 1 && info.kbar <= K && info.k_end == info.kbar, "%s %s: kbar %d",
               label, m->name, info.kbar);
        st->n_interior_kbar += info.kbar < K;
    }
    st->n_runs++;
}

// ---- the cases -----------------------------------------------------------------------------------------------

static void closed_form(void) {
    TEST_CASE("bilevel: GD RHG equals the closed-form K-step hypergradient (quadratic, n_x 5, n_y 8)") {
        qp q;
        qp_make(&q, 5, 8, 0, 7);
        blo_problem p = qp_problem(&q);
        double s = 1 / qp_lipschitz(&q), x[MAXN], g[MAXN], ref[MAXN];
        ad_rng r;
        ad_rng_seed(&r, 99);
        randn(&r, q.nx, x, 1);
        blo_dynamics d = blo_dynamics_gd(q.ny, (blo_gd_params){.s_l = s});
        double worst = 0;
        int Ks[] = {1, 2, 5, 17, 60};
        for (size_t i = 0; i < sizeof Ks / sizeof Ks[0]; i++) {
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = Ks[i];
            blo_error e;
            EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
            qp_gd_closed_form(&q, s, Ks[i], x, ref);
            double err = rel_err(q.nx, g, ref);
            worst = fmax(worst, err);
            EXPECT(err <= 1e-12, "K = %d: relative error %.3g", Ks[i], err);
        }
        printf("  closed-form K-step GD hypergradient: worst relative error %.2e\n", worst);
        // Truncating at K' >= K is plain RHG, to the last bit.
        for (int tr = 17; tr <= 20; tr += 3) {
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = 17, hp.truncate = tr;
            double gt[MAXN];
            blo_error e;
            blo_hypergrad(&p, &d, &hp, x, NULL, gt, NULL, NULL, NULL, &e);
            hp.truncate = 0;
            blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e);
            EXPECT(!memcmp(g, gt, sizeof(double) * q.nx), "truncate %d differs from RHG", tr);
        }
    }
    TEST_CASE("bilevel: RHG error to the exact hypergradient falls geometrically with K to 1e-10") {
        qp q;
        qp_make(&q, 5, 8, 0, 7);
        blo_problem p = qp_problem(&q);
        double s = 1 / qp_lipschitz(&q), x[MAXN], g[MAXN], ex[MAXN];
        ad_rng r;
        ad_rng_seed(&r, 99);
        randn(&r, q.nx, x, 1);
        qp_exact(&q, x, ex);
        blo_dynamics d = blo_dynamics_gd(q.ny, (blo_gd_params){.s_l = s});
        double prev = 0, last = 0;
        printf("  RHG relative error vs exact:");
        for (int K = 20; K <= 200; K += 20) {
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = K;
            blo_error e;
            EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
            double err = rel_err(q.nx, g, ex);
            printf(" K=%d %.1e", K, err);
            // Geometric: each 20 more steps divide the error by at least 3, until rounding.
            if (K > 20 && prev > 1e-13) EXPECT(err <= prev / 3, "K = %d: %.3g after %.3g", K, err, prev);
            prev = err;
            last = err;
        }
        printf("\n");
        EXPECT(last <= 1e-10, "K = 200: relative error %.3g", last);
    }
}

static blo_dynamics make_dyn(int which, int ny) {
    switch (which) {
    case 0: return blo_dynamics_gd(ny, (blo_gd_params){.s_l = 0.25});
    case 1: {
        blo_bda_params b = blo_bda_default_params();
        b.s_u = 0.5, b.s_l = 0.25, b.c = 0.9;
        return blo_dynamics_bda(ny, b);
    }
    case 2: {
        blo_bda_params b = blo_bda_default_params();
        b.weights = BLO_BDA_AIT, b.s_u = 0.5, b.s_l = 0.25, b.mu = 0.4, b.beta = 0.9;
        return blo_dynamics_bda(ny, b);
    }
    case 3: return blo_dynamics_nesterov(ny, (blo_nesterov_params){.s_l = 0.2});
    case 4: return blo_dynamics_momentum(ny, (blo_momentum_params){.s_l = 0.2, .beta = 0.7});
    // L_f = 2.5: the v step l_j = j / (4 L_f) stays below 1 over the tests' K <= 10 steps.
    case 5: return blo_dynamics_accel(ny, (blo_accel_params){.L_f = 2.5});
    // L_f = 0.7 understates the curvature: v overshoots, F(x, y_k) is not monotone, and PTT's
    // Kbar falls inside the trajectory, so the truncated sweep through (y, u, v) is tested too.
    default: return blo_dynamics_accel(ny, (blo_accel_params){.L_f = 0.7});
    }
}
static const char *dyn_label[] = {"gd", "bda-icml", "bda-ait", "nesterov", "momentum", "accel",
                                  "accel-overshoot"};
#define NDYN ((int)(sizeof dyn_label / sizeof dyn_label[0]))

static void forward_maps(void) {
    TEST_CASE("bilevel: every built-in step map equals its plain-loop re-implementation") {
        qp q;
        qp_make(&q, 3, 4, 1, 21);
        double lo[MAXN], hi[MAXN];
        for (int i = 0; i < q.ny; i++) lo[i] = -0.4, hi[i] = 0.5;
        for (int box = 0; box < 2; box++)
            for (int w = 0; w < NDYN; w++) {
                blo_problem p = qp_problem(&q);
                if (box) p.y_lo = lo, p.y_hi = hi;
                blo_dynamics d = make_dyn(w, q.ny);
                double x[MAXN], y0[MAXN], s0[MAXS], states[11 * MAXS], ref[11 * MAXN], y[MAXN];
                ad_rng r;
                ad_rng_seed(&r, 5);
                randn(&r, q.nx, x, 1);
                randn(&r, q.ny, y0, 0.3);
                blo_error e;
                EXPECT(blo_state_init(&p, &d, y0, s0, NULL, &e) == BLO_OK, "%s", e.msg);
                EXPECT(blo_unroll(&p, &d, x, 0, s0, 10, states, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
                plain_dynamics(&q, &d, box ? lo : NULL, box ? hi : NULL, x, y0, 10, ref);
                double worst = 0;
                for (int k = 0; k <= 10; k++) {
                    blo_state_read_y(&p, &d, states + k * d.state_size, y, NULL, &e);
                    for (int i = 0; i < q.ny; i++) worst = fmax(worst, fabs(y[i] - ref[k * q.ny + i]));
                }
                EXPECT(worst <= 1e-13, "%s (box %d): max |y_k - reference| = %.3g", dyn_label[w],
                       box, worst);
            }
    }
}

static void finite_differences(void) {
    TEST_CASE("bilevel: hypergradients equal finite differences, every dynamics x every mode") {
        fd_stats st = {0};
        for (int nonlinear = 0; nonlinear < 2; nonlinear++)
            for (int w = 0; w < NDYN; w++) {
                qp q;
                qp_make(&q, 3, 4, nonlinear, 100 + w);
                blo_problem p = qp_problem(&q);
                blo_dynamics d = make_dyn(w, q.ny);
                for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
                    char label[64];
                    snprintf(label, sizeof label, "%s/%s", nonlinear ? "nonlinear" : "quadratic",
                             dyn_label[w]);
                    check_fd(label, &q, &p, &d, &modes[m], 8, &st);
                }
            }
        printf("  FD check: %d runs, worst relative error x %.2e, z %.2e; PTT runs with Kbar < K: %d\n",
               st.n_runs, st.worst_x, st.worst_z, st.n_interior_kbar);
        EXPECT(st.n_interior_kbar > 0, "no PTT run had Kbar < K: PTT's truncation is untested");
    }
    TEST_CASE("bilevel: hypergradients equal finite differences with an active Y box") {
        // Entries clamped on the box get zero derivative; the others are strictly inside.
        fd_stats st = {0};
        qp q;
        qp_make(&q, 3, 5, 1, 77);
        double lo[MAXN], hi[MAXN];
        for (int i = 0; i < q.ny; i++) lo[i] = -0.35, hi[i] = 0.3;
        blo_problem p = qp_problem(&q);
        p.y_lo = lo, p.y_hi = hi;
        int accel_interior = 0; // PTT stopping inside an accel trajectory: the (y, u, v) chain cut
        for (int w = 0; w < NDYN; w++) {
            blo_dynamics d = make_dyn(w, q.ny);
            int before = st.n_interior_kbar;
            for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++)
                check_fd(dyn_label[w], &q, &p, &d, &modes[m], 6, &st);
            if (!strcmp(d.name, "accel")) accel_interior += st.n_interior_kbar - before;
        }
        printf("  FD check with a box: %d runs, worst relative error x %.2e, z %.2e; "
               "trajectory entries clamped %ld, inside %ld\n",
               st.n_runs, st.worst_x, st.worst_z, st.n_clamped, st.n_inside);
        EXPECT(st.n_clamped > st.n_runs && st.n_inside > st.n_runs,
               "the box should clamp some entries and leave others free: %ld clamped, %ld inside",
               st.n_clamped, st.n_inside);
        EXPECT(accel_interior > 0, "no accel PTT run had Kbar < K: its truncated sweep is untested");
    }
}

// A user-written step map: GD with a decaying step s_k = 0.25 / (1 + 0.1 k) plus a smooth
// nonlinear pull 0.05 sin(y); the sweep differentiates it like the built-in ones.
static ad_var custom_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                          ad_var y) {
    (void)d;
    ad_var g = blo_ll_grad_y(t, p, x, y);
    ad_var y1 = ad_sub(t, y, ad_scale(t, g, 0.25 / (1 + 0.1 * k)));
    return blo_y_project(t, p, ad_add(t, y1, ad_scale(t, ad_sin(t, y), 0.05)));
}

static void user_dynamics(void) {
    TEST_CASE("bilevel: a user-written step map is differentiated exactly in every mode") {
        fd_stats st = {0};
        qp q;
        qp_make(&q, 4, 3, 1, 55);
        blo_problem p = qp_problem(&q);
        blo_dynamics d = {.name = "custom", .state_size = q.ny, .step = custom_step};
        for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++)
            check_fd("custom", &q, &p, &d, &modes[m], 7, &st);
        printf("  FD check, user step map: %d runs, worst relative error x %.2e, z %.2e\n", st.n_runs,
               st.worst_x, st.worst_z);
    }
}

static void memory(void) {
    TEST_CASE("bilevel: the sweep's tape does not grow with K (one step's graph at a time)") {
        qp q;
        qp_make(&q, 3, 4, 1, 3);
        blo_problem p = qp_problem(&q);
        blo_dynamics d = make_dyn(3, q.ny);
        double x[MAXN] = {0.1, 0.2, 0.3}, g[MAXN];
        size_t peak[2];
        int Ks[2] = {10, 200};
        for (int i = 0; i < 2; i++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_mark m = ad_tape_mark(t);
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = Ks[i], hp.tape = t, hp.graph_budget = 0; // the lean sweep
            blo_error e;
            EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
            peak[i] = ad_tape_peak_bytes(t);
            EXPECT(ad_tape_nodes(t) == m.nodes, "the given tape is rewound to where it was");
            ad_tape_free(t);
        }
        EXPECT(peak[1] <= peak[0] + peak[0] / 10, "tape peak %zu bytes at K = 10, %zu at K = 200",
               peak[0], peak[1]);
    }
    TEST_CASE("bilevel: graph mode keeps the trajectory only within its budget") {
        qp q;
        qp_make(&q, 3, 4, 1, 3);
        blo_problem p = qp_problem(&q);
        blo_dynamics d = make_dyn(3, q.ny);
        double x[MAXN] = {0.1, 0.2, 0.3}, g[MAXN];
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = 50;
        blo_hypergrad_info info;
        blo_error e;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, &info, &e) == BLO_OK && info.graph == 1,
               "64 MiB: graph %d (%s)", info.graph, e.msg);
        hp.graph_budget = 4096; // one step's graph times 51 does not fit
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, &info, &e) == BLO_OK && info.graph == 0,
               "4 KiB: graph %d (%s)", info.graph, e.msg);
    }
}

// A linear softmax model on coded data: f = 1/n sum_i sigmoid(x_i) xent_i(X W), F = 1/2 ||y - 0.1||^2,
// y = W [d, c] flattened. X [1100, 100] x W [100, 10] is 1.1 M multiply-adds: the sweep keeps it.
typedef struct {
    ad_coded X;
    const int32_t *labels;
    int d, c;
} lin_model;
static ad_var lin_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const lin_model *L = u;
    ad_var W = ad_reshape(t, y, ad_mat_shape(L->d, L->c));
    ad_var ce = ad_xent(t, ad_matmul_coded(t, &L->X, W, 0), L->labels); // [n]
    return ad_scale(t, ad_dot(t, ad_sigmoid(t, x), ce), 1.0 / L->X.rows);
}
static ad_var lin_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)x, (void)u;
    return ad_scale(t, ad_sqnorm(t, ad_shift(t, y, -0.1)), 0.5);
}

static void kept_products(void) {
    TEST_CASE("bilevel: the lean sweep reuses the forward pass's logits: the same bits, K fewer products") {
        enum { N = 1100, D = 100, C = 10, K = 6 };
        ad_rng g;
        ad_rng_seed(&g, 12);
        uint8_t *codes = malloc(N * D);
        int32_t *labels = malloc(sizeof(int32_t) * N);
        double table[256], *x = malloc(sizeof(double) * N), grad[3][N];
        for (int i = 0; i < 256; i++) table[i] = i / 255.0;
        for (int i = 0; i < N * D; i++) codes[i] = (uint8_t)(ad_rng_next(&g) >> 56);
        for (int i = 0; i < N; i++) labels[i] = (int32_t)(ad_rng_next(&g) % C), x[i] = ad_rng_normal(&g);
        lin_model L = {{N, D, codes, table, NULL}, labels, D, C};
        blo_problem p = {.n_x = N, .n_y = D * C, .F = lin_F, .f = lin_f, .user = &L};
        blo_dynamics d = blo_dynamics_gd(D * C, (blo_gd_params){.s_l = 0.5});
        // budgets: nothing kept (lean), the products kept but not the graph, the graph
        const size_t budget[3] = {1, (size_t)2 << 20, (size_t)1 << 30};
        int64_t products[3];
        int graph[3];
        for (int b = 0; b < 3; b++) {
            ad_tape *t = ad_tape_new(NULL);
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = K, hp.tape = t, hp.graph_budget = budget[b];
            blo_hypergrad_info info = {0};
            blo_error e;
            int op = ad_op_find("matmul_coded");
            int64_t e0 = ad_tape_op_evals(t, op);
            EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, grad[b], NULL, NULL, &info, &e) == BLO_OK, "%s", e.msg);
            products[b] = ad_tape_op_evals(t, op) - e0, graph[b] = info.graph;
            ad_tape_free(t);
        }
        // the lean sweep computes X W_k again at every step (with X V and X^T G'); kept, it does not
        EXPECT(graph[0] == 0 && graph[1] == 0 && graph[2] == 1, "graph modes %d %d %d", graph[0], graph[1], graph[2]);
        EXPECT(products[1] == products[0] - K && products[2] <= products[1],
               "products over X: %lld lean, %lld with kept logits, %lld in graph mode",
               (long long)products[0], (long long)products[1], (long long)products[2]);
        EXPECT(!memcmp(grad[0], grad[1], sizeof grad[0]), "kept logits changed the hypergradient");
        double worst = 0, scale = 0;
        for (int i = 0; i < N; i++) worst = fmax(worst, fabs(grad[2][i] - grad[0][i])), scale = fmax(scale, fabs(grad[0][i]));
        EXPECT(scale > 0 && worst <= 1e-12 * scale, "graph mode differs by %g (largest entry %g)", worst, scale);
        free(codes), free(labels), free(x);
    }
}

// A user-written step map whose output has the wrong size.
static ad_var bad_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                       ad_var s) {
    (void)p, (void)d, (void)k, (void)x;
    return ad_concat(t, s, s);
}

static void errors(void) {
    TEST_CASE("bilevel errors: bad arguments get a status and a message, nothing aborts") {
        qp q;
        qp_make(&q, 3, 4, 0, 1);
        blo_problem p = qp_problem(&q);
        blo_dynamics d = make_dyn(0, q.ny);
        double x[MAXN] = {0}, g[MAXN], gz[MAXN];
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        blo_error e;
        hp.K = 0;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG &&
                   has(e.msg, "K = 0"), "K = 0: %s", e.msg);
        hp.K = 5, hp.truncate = -1;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG &&
                   has(e.msg, "truncate"), "truncate: %s", e.msg);
        hp.truncate = 0, hp.ia = 1;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG &&
                   has(e.msg, "grad_z"), "IA without grad_z: %s", e.msg);
        hp.prior_lambda = 1;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, gz, NULL, NULL, &e) == BLO_EARG &&
                   has(e.msg, "z_prior"), "prior without z_prior: %s", e.msg);
        hp = blo_hypergrad_default_params();
        EXPECT(blo_hypergrad(&p, &d, &hp, NULL, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG,
               "x NULL: %s", e.msg);
        EXPECT(blo_hypergrad(NULL, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG,
               "problem NULL: %s", e.msg);
    }
    TEST_CASE("bilevel errors: negative or zero step sizes and bad weights are refused") {
        qp q;
        qp_make(&q, 3, 4, 0, 1);
        blo_problem p = qp_problem(&q);
        double x[MAXN] = {0}, g[MAXN];
        blo_bda_params bad_bda = blo_bda_default_params();
        bad_bda.s_u = -0.7;
        blo_bda_params bad_c = blo_bda_default_params();
        bad_c.c = 1.5;
        blo_dynamics ds[] = {
            blo_dynamics_gd(q.ny, (blo_gd_params){.s_l = -0.1}),
            blo_dynamics_gd(q.ny, (blo_gd_params){.s_l = 0}),
            blo_dynamics_bda(q.ny, bad_bda),
            blo_dynamics_bda(q.ny, bad_c),
            blo_dynamics_nesterov(q.ny, (blo_nesterov_params){.s_l = NAN}),
            blo_dynamics_momentum(q.ny, (blo_momentum_params){.s_l = 0.1, .beta = 1}),
            blo_dynamics_accel(q.ny, (blo_accel_params){.L_f = 0}),
            blo_dynamics_accel(q.ny, (blo_accel_params){.L_f = INFINITY}),
        };
        const char *what[] = {"s_l", "s_l", "s_u", "c =", "s_l", "beta", "L_f", "L_f"};
        for (size_t i = 0; i < sizeof ds / sizeof ds[0]; i++) {
            blo_error e;
            blo_status s = blo_hypergrad(&p, &ds[i], NULL, x, NULL, g, NULL, NULL, NULL, &e);
            EXPECT(s == BLO_EARG && has(e.msg, what[i]) && has(e.msg, ds[i].name), "case %zu: %s",
                   i, e.msg);
        }
    }
    TEST_CASE("bilevel errors: bad callbacks, mismatched sizes and boxes are named") {
        qp q;
        qp_make(&q, 3, 4, 0, 1);
        double x[MAXN] = {0}, g[MAXN], lo[MAXN] = {0, 0, 1, 0}, hi[MAXN] = {1, 1, 0, 1};
        blo_dynamics d = make_dyn(0, q.ny);
        ad_tape *t = ad_tape_new(NULL);
        ad_mark m = ad_tape_mark(t);
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.tape = t;
        blo_error e;
        blo_problem p = qp_problem(&q);
        q.bad = 1;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_ECALLBACK &&
                   has(e.msg, "F(x, y)") && has(e.msg, "not a scalar"), "non-scalar F: %s", e.msg);
        q.bad = 2;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_ECALLBACK &&
                   has(e.msg, "f(x, y)") && has(e.msg, "AD_NONE"), "AD_NONE f: %s", e.msg);
        q.bad = 3;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_ETAPE &&
                   has(e.msg, "f(x, y)") && has(e.msg, "matvec"), "size mismatch: %s", e.msg);
        q.bad = 0;
        p.n_y = 5; // the callbacks build [4] vectors
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) != BLO_OK && e.msg[0],
               "n_y does not match the callbacks: %s", e.msg);
        p.n_y = 4;
        p.y_lo = lo, p.y_hi = hi;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG &&
                   has(e.msg, "box Y") && has(e.msg, "entry 2"), "box: %s", e.msg);
        p.y_lo = p.y_hi = NULL;
        p.F = NULL;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG &&
                   has(e.msg, "F"), "NULL F: %s", e.msg);
        p.F = qp_F;
        blo_dynamics custom = {.name = "doubling", .state_size = q.ny, .step = bad_step};
        EXPECT(blo_hypergrad(&p, &custom, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_ECALLBACK &&
                   has(e.msg, "doubling") && has(e.msg, "[4]"), "bad step: %s", e.msg);
        blo_dynamics wide = make_dyn(0, q.ny);
        wide.state_size = 8;
        EXPECT(blo_hypergrad(&p, &wide, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_EARG &&
                   has(e.msg, "state size"), "state size: %s", e.msg);
        // Nothing is lost: the caller's tape is clean and where it was, and a good call works.
        EXPECT(ad_tape_status(t) == AD_OK && ad_tape_nodes(t) == m.nodes, "tape left dirty: %s",
               ad_tape_error(t));
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
        ad_tape_free(t);
    }
    TEST_CASE("bilevel errors: a diverging LL loop is reported, not returned as NaN") {
        qp q;
        qp_make(&q, 3, 4, 0, 1);
        blo_problem p = qp_problem(&q);
        blo_dynamics d = blo_dynamics_gd(q.ny, (blo_gd_params){.s_l = 50});
        double x[MAXN] = {1, 1, 1}, g[MAXN];
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = 400;
        blo_error e;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_ETAPE &&
                   has(e.msg, "step size"), "%s", e.msg);
    }
}

void test_bilevel(void) {
    closed_form();
    forward_maps();
    finite_differences();
    user_dynamics();
    memory();
    kept_products();
    errors();
}
