// The closed-form quadratic model (tests and benchmarks): dense with settable size and
// conditioning, or tridiagonal up to n = 10^6; its optimum and exact hypergradient are known.
#include "toy.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>

// ---- the closed-form quadratic: x [m], y [n] ---------------------------------------------------------
// F = 1/2 ||y - b||^2 + rho/2 ||x||^2, f = 1/2 y^T A y - y^T B x with A = Q diag(lambda) Q^T SPD,
// lambda log-spaced in [1, cond]. y*(x) = A^-1 B x, so with M = A^-1 B [n, m] the reduced UL is
// phi(x) = 1/2 ||M x - b||^2 + rho/2 ||x||^2, x* solves (rho I + M^T M) x = M^T b, and the exact
// hypergradient at any x is rho x + M^T (M x - b).

static ad_var quad_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u;
    ad_var b = ad_const_view(t, ad_vec_shape(d->n), d->b);
    return ad_add(t, ad_scale(t, ad_sqnorm(t, ad_sub(t, y, b)), 0.5), ad_scale(t, ad_sqnorm(t, x), 0.5 * d->rho));
}

static ad_var quad_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u; // products with views of A and B: BLAS-bound for large n
    ad_var A = ad_const_view(t, ad_mat_shape(d->n, d->n), d->A); // symmetric: a quadform
    ad_var B = ad_const_view(t, ad_mat_shape(d->n, d->m), d->B);
    return ad_sub(t, ad_quadform(t, A, y), ad_dot(t, y, ad_matvec(t, B, x, 0)));
}

// structure=tridiagonal: A = tridiag(off, diag, off), B = I (m = n), in O(n) time and memory:
// f = diag/2 ||y||^2 + off <y[0:n-1], y[1:n]> - <y, x>.
static ad_var quad_f_tri(ad_tape *t, ad_var x, ad_var y, void *u) {
    const toy *d = u;
    ad_var v = ad_sub(t, ad_scale(t, ad_sqnorm(t, y), 0.5 * d->diag), ad_dot(t, y, x));
    if (d->n == 1) return v;
    ad_var pairs = ad_dot(t, ad_slice(t, y, 0, d->n - 1), ad_slice(t, y, 1, d->n - 1));
    return ad_add(t, v, ad_scale(t, pairs, d->off));
}

// Solves H u = r (r -> u) for H SPD banded of half-bandwidth w, stored by rows: H[i (w+1) + j]
// = H(i, i - j), j = 0..w (entries before row 0 unused), by banded Cholesky (LAPACK's dpbsv; the
// project links only cblas), O(n w^2). H is overwritten by its factor. -1 if not positive definite.
static int band_cholesky_solve(double *H, int n, int w, double *r) {
    size_t W = (size_t)w + 1;
    for (int i = 0; i < n; i++)
        for (int j = (i < w ? i : w); j >= 0; j--) { // L(i, k), k = i - j, from the left
            int k = i - j;
            double v = H[i * W + j];
            for (int m = (i > w ? i - w : 0); m < k; m++) v -= H[i * W + (i - m)] * H[k * W + (k - m)];
            if (j) H[i * W + j] = v / H[k * W];
            else if (!(v > 0)) return -1;
            else H[i * W] = sqrt(v);
        }
    for (int i = 0; i < n; i++) { // L z = r
        for (int m = (i > w ? i - w : 0); m < i; m++) r[i] -= H[i * W + (i - m)] * r[m];
        r[i] /= H[i * W];
    }
    for (int i = n - 1; i >= 0; i--) { // L^T u = z
        for (int m = i + 1; m < n && m <= i + w; m++) r[i] -= H[m * W + (m - i)] * r[m];
        r[i] /= H[i * W];
    }
    return 0;
}

// A = I + (cond - 1)/4 tridiag(-1, 2, -1): eigenvalues in (1, cond). With B = I, M = A^-1, so
// y* = (rho A^2 + I)^-1 b (pentadiagonal) and x* = A y*.
static int quadratic_tri_make(mdl_model *m, int n, double cond, double rho, int seed, char *err,
                              size_t errlen) {
    size_t N = (size_t)n;
    toy *d = toy_new(m, 5 * N);
    double *H = malloc(sizeof(double) * 3 * N);
    int rc = 0;
    if (!d || !H) {
        rc = oom("quadratic", err, errlen);
        goto done;
    }
    d->n = d->m = n, d->rho = rho, d->diag = 1 + (cond - 1) / 2, d->off = -(cond - 1) / 4;
    double *b = toy_take(d, N), *xs = toy_take(d, N), *ys = toy_take(d, N);
    d->b = b;
    ad_rng g;
    ad_rng_seed(&g, (uint64_t)seed);
    for (size_t i = 0; i < N; i++) b[i] = ad_rng_normal(&g);
    double a = d->diag, e = d->off;
    for (int i = 0; i < n; i++) { // rho A^2 + I by rows: (A^2)(i, i - j) = sum_l A(i, l) A(l, i - j)
        int ends = (i > 0) + (i < n - 1);
        H[3 * i] = 1 + rho * (a * a + ends * e * e);
        H[3 * i + 1] = rho * 2 * a * e;
        H[3 * i + 2] = rho * e * e;
    }
    memcpy(ys, b, sizeof(double) * N);
    if (band_cholesky_solve(H, n, 2, ys)) {
        rc = mdl_fail(err, errlen, "problem quadratic: rho A^2 + I is not positive definite to rounding");
        goto done;
    }
    double F = 0;
    for (int i = 0; i < n; i++) {
        xs[i] = a * ys[i] + (i > 0 ? e * ys[i - 1] : 0) + (i < n - 1 ? e * ys[i + 1] : 0); // x* = A y*
        F += 0.5 * (ys[i] - b[i]) * (ys[i] - b[i]) + 0.5 * rho * xs[i] * xs[i];
    }
    m->prob = (blo_problem){.n_x = n, .n_y = n, .F = quad_F, .f = quad_f_tri, .user = d};
    m->x_star = xs, m->y_star = m->z_prior = ys, m->F_star = F;
    m->n_starts = 1, m->x0[0] = toy_take(d, N), m->y0[0] = toy_take(d, N); // x0 = 0, y0 = 0
done:
    free(H);
    return rc;
}

// Orthonormalizes the rows of Q [n, n] in place: block classical Gram-Schmidt (BLAS-3 against
// earlier blocks, then modified Gram-Schmidt inside the block), each block done twice so the
// rows are orthonormal to rounding ("twice is enough").
static void orthonormalize_rows(double *Q, int n) {
    const int nb = 64;
    for (int s = 0; s < n; s += nb) {
        int k = n - s < nb ? n - s : nb;
        double *Bk = Q + (size_t)s * n, *R = s ? malloc(sizeof(double) * (size_t)k * s) : NULL;
        for (int pass = 0; pass < 2; pass++) {
            if (s && R) { // Bk -= (Bk Q0^T) Q0, Q0 = rows 0..s-1 [s, n]
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, s, n, 1, Bk, n, Q, n, 0, R, s);
                cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, n, s, -1, R, s, Q, n, 1, Bk, n);
            }
            for (int i = 0; i < k; i++) {
                double *qi = Bk + (size_t)i * n;
                for (int j = 0; j < i; j++)
                    cblas_daxpy(n, -cblas_ddot(n, qi, 1, Bk + (size_t)j * n, 1), Bk + (size_t)j * n, 1, qi, 1);
                cblas_dscal(n, 1 / cblas_dnrm2(n, qi, 1), qi, 1);
            }
        }
        free(R);
    }
}

// Solves H u = r in place (r -> u) by Cholesky, H [m, m] SPD (overwritten by its factor).
// Returns -1 if H is not numerically positive definite.
static int cholesky_solve(double *H, int m, double *r) {
    for (int j = 0; j < m; j++) {
        double *Lj = H + (size_t)j * m;
        for (int k = 0; k < j; k++) Lj[j] -= Lj[k] * Lj[k];
        if (!(Lj[j] > 0)) return -1;
        Lj[j] = sqrt(Lj[j]);
        for (int i = j + 1; i < m; i++) {
            double *Li = H + (size_t)i * m, v = Li[j];
            for (int k = 0; k < j; k++) v -= Li[k] * Lj[k];
            Li[j] = v / Lj[j];
        }
    }
    for (int i = 0; i < m; i++) { // L z = r
        const double *Li = H + (size_t)i * m;
        for (int k = 0; k < i; k++) r[i] -= Li[k] * r[k];
        r[i] /= Li[i];
    }
    for (int i = m - 1; i >= 0; i--) { // L^T u = z
        for (int k = i + 1; k < m; k++) r[i] -= H[(size_t)k * m + i] * r[k];
        r[i] /= H[(size_t)i * m + i];
    }
    return 0;
}

typedef struct {
    int n, m;     // n_y, n_x (0: n)
    double cond;  // A's condition number
    double rho;   // UL ridge weight
    int seed;
    int structure; // 0 dense, 1 tridiagonal
} quad_params;
enum { QUAD_DENSE_MAX = 10000 }; // the dense A is n x n
static const char *const quad_structures[] = {"dense", "tridiagonal", NULL};
static const quad_params quad_defaults = {.n = 10, .m = 0, .cond = 10, .rho = 0.1, .seed = 0};
static const blo_setting quad_settings[] = {
    BLO_ROW_INT(quad_params, n, "n", 1, 1000000, "n", "LL size n_y (dense: at most 10000)"),
    BLO_ROW_INT(quad_params, m, "m", 0, 10000, "m", "UL size n_x (0 = n; tridiagonal: 0 or n)"),
    BLO_ROW_CHOICE(quad_params, structure, "structure", quad_structures, "s",
                   "A: dense with log-spaced eigenvalues, or tridiagonal with B = I (O(n), large n)"),
    BLO_ROW_DBL(quad_params, cond, "cond", 1, 1e12, 0, "c", "condition number of A"),
    BLO_ROW_DBL(quad_params, rho, "rho", 0, INFINITY, BLO_SET_LO_OPEN, "r", "UL ridge weight rho"),
    BLO_ROW_INT(quad_params, seed, "seed", 0, INT32_MAX, "S", "seed of A, B, b"),
    BLO_ROW_END,
};

static int quadratic_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    const quad_params *q = params;
    int n = q->n, mx = q->m ? q->m : n, seed = q->seed;
    double cond = q->cond, rho = q->rho;
    if (q->structure == 1) {
        if (mx != n)
            return mdl_fail(err, errlen, "problem quadratic: tridiagonal has B = I, so m = %d must be 0 or n = %d", q->m, n);
        return quadratic_tri_make(m, n, cond, rho, seed, err, errlen);
    }
    if (n > QUAD_DENSE_MAX || mx > QUAD_DENSE_MAX)
        return mdl_fail(err, errlen, "problem quadratic: dense n = %d, m = %d must be at most %d (its n x n A); "
                        "structure=tridiagonal scales", n, mx, QUAD_DENSE_MAX);
    size_t N = (size_t)n, Mx = (size_t)mx;
    toy *d = toy_new(m, N * N + N * Mx + 3 * N + 2 * Mx);
    double *Q = malloc(sizeof(double) * N * N), *Mm = malloc(sizeof(double) * N * Mx),
           *H = malloc(sizeof(double) * Mx * Mx), *lam = malloc(sizeof(double) * N),
           *W = malloc(sizeof(double) * N * (N > Mx ? N : Mx)); // scratch [n, max(n, m)]
    int rc = 0;
    if (!d || !Q || !Mm || !H || !lam || !W) {
        rc = oom("quadratic", err, errlen);
        goto done;
    }
    d->n = n, d->m = mx, d->rho = rho;
    double *A = toy_take(d, N * N), *B = toy_take(d, N * Mx), *b = toy_take(d, N);
    d->A = A, d->B = B, d->b = b;
    ad_rng g;
    ad_rng_seed(&g, (uint64_t)seed);
    for (size_t i = 0; i < N * N; i++) Q[i] = ad_rng_normal(&g);
    for (size_t i = 0; i < N * Mx; i++) B[i] = ad_rng_normal(&g) / sqrt((double)mx); // B x = O(1)
    for (size_t i = 0; i < N; i++) b[i] = ad_rng_normal(&g);
    orthonormalize_rows(Q, n); // rows q_j: the eigenvectors
    for (int j = 0; j < n; j++) lam[j] = n > 1 ? pow(cond, (double)j / (n - 1)) : 1;
    // A = sum_j lambda_j q_j q_j^T = Q^T diag(lambda) Q, then exactly symmetrized
    for (size_t j = 0; j < N; j++)
        for (size_t k = 0; k < N; k++) W[j * N + k] = lam[j] * Q[j * N + k];
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, n, 1, Q, n, W, n, 0, A, n);
    for (size_t i = 0; i < N; i++)
        for (size_t j = i + 1; j < N; j++) A[i * N + j] = A[j * N + i] = 0.5 * (A[i * N + j] + A[j * N + i]);
    // M = A^-1 B = Q^T diag(1/lambda) Q B (the exact inverse from the eigenvectors, no solve)
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, mx, n, 1, Q, n, B, mx, 0, W, mx);
    for (size_t j = 0; j < N; j++) cblas_dscal(mx, 1 / lam[j], W + j * Mx, 1);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, mx, n, 1, Q, n, W, mx, 0, Mm, mx);
    // (rho I + M^T M) x* = M^T b, then y* = M x*
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, mx, mx, n, 1, Mm, mx, Mm, mx, 0, H, mx);
    for (size_t i = 0; i < Mx; i++) H[i * Mx + i] += rho;
    double *xs = toy_take(d, Mx), *ys = toy_take(d, N);
    cblas_dgemv(CblasRowMajor, CblasTrans, n, mx, 1, Mm, mx, b, 1, 0, xs, 1);
    if (cholesky_solve(H, mx, xs)) {
        rc = mdl_fail(err, errlen, "problem quadratic: rho I + B^T A^-2 B is not positive definite "
                      "to rounding (rho=%g too small?)", rho);
        goto done;
    }
    cblas_dgemv(CblasRowMajor, CblasNoTrans, n, mx, 1, Mm, mx, xs, 1, 0, ys, 1);
    double F = 0;
    for (size_t i = 0; i < N; i++) F += 0.5 * (ys[i] - b[i]) * (ys[i] - b[i]);
    for (size_t i = 0; i < Mx; i++) F += 0.5 * rho * xs[i] * xs[i];
    m->prob = (blo_problem){.n_x = mx, .n_y = n, .F = quad_F, .f = quad_f, .user = d};
    m->x_star = xs, m->y_star = m->z_prior = ys, m->F_star = F;
    m->n_starts = 1, m->x0[0] = toy_take(d, Mx), m->y0[0] = toy_take(d, N); // x0 = 0, y0 = 0
done:
    free(Q), free(Mm), free(H), free(lam), free(W);
    return rc;
}

// No paper: our choice. LL step s_l = 0.1 = 1 / L_f for the default cond = 10 (set it to <= 1 /
// cond otherwise; these rows cannot see the settings); K = 100 as in the benchmark. The reduced
// Hessian rho I + M^T M has norm <= rho + ||B||^2 ~ 4 for m = n, so lr = 0.2 is stable. Neumann:
// eta ||A|| <= 1. galet: beta, rho <= 1/L, 1/L^2.
static const mdl_paper_row quadratic_papers[] = {
    {"*", "ll_iters=100 s_l=0.1 L_f=10 ul_iters=300 lr_x=0.2 lr_z=0.2"},
    {"neumann", "eta=0.1"},
    {"galet", "beta=0.1 rho=0.01"},
    {"bome", "alpha=0.1"},
    {NULL, NULL},
};

const mdl_entry mdl_quadratic_entry = {
    "quadratic", "F = 1/2||y-b||^2 + rho/2||x||^2, f = 1/2 y'Ay - y'Bx: exact hypergradient known",
    "closed form (tests, benchmarks)", sizeof(quad_params), &quad_defaults, quad_settings,
    quadratic_make, quadratic_papers};
