// The tape itself: broadcasting semantics, conventions at kinks, mark / rewind, lazy second
// order, and every error path (shape, domain, memory cap, NaN/Inf, bad arguments).
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"

#include <math.h>
#include <string.h>

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

static void broadcasting(void) {
    TEST_CASE("broadcast: a vector is added to each row, a column to each column") {
        ad_tape *t = ad_tape_new(NULL);
        double A[6] = {1, 2, 3, 4, 5, 6}, b[3] = {10, 20, 30}, c[2] = {100, 200};
        ad_var a = ad_const(t, ad_mat_shape(2, 3), A);
        const double *r1 = ad_value(t, ad_add(t, a, ad_const(t, ad_vec_shape(3), b)));
        const double *r2 = ad_value(t, ad_add(t, a, ad_const(t, ad_mat_shape(2, 1), c)));
        double e1[6] = {11, 22, 33, 14, 25, 36}, e2[6] = {101, 102, 103, 204, 205, 206};
        for (int i = 0; i < 6; i++) EXPECT(r1[i] == e1[i] && r2[i] == e2[i], "entry %d", i);
        ad_var s = ad_mul(t, ad_scalar(t, 2), a);
        EXPECT(ad_shape_of(t, s).rank == 2 && ad_value(t, s)[5] == 12, "scalar times matrix");
        EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
        ad_tape_free(t);
    }
    TEST_CASE("broadcast: each pattern of operands (matrix, row, column, vector, scalar, on either "
              "side) and each sum_to, bit for bit against the indexed loop") {
        enum { M = 5, N = 7, P = 5 };
        const ad_shape full = ad_mat_shape(M, N);
        const ad_shape parts[P] = {full, ad_mat_shape(1, N), ad_mat_shape(M, 1), ad_vec_shape(N),
                                   ad_scalar_shape()};
        double a[M * N], b[M * N];
        for (int i = 0; i < M * N; i++) a[i] = sin(1.0 + i) * 3.7, b[i] = cos(0.3 * i) + 0.01 * i;
        for (int pa = 0; pa < P; pa++)
            for (int pb = 0; pb < P; pb++) {
                ad_tape *t = ad_tape_new(NULL);
                ad_shape sa = parts[pa], sb = parts[pb];
                ad_var d = ad_sub(t, ad_const(t, sa, a), ad_const(t, sb, b));
                ad_var q = ad_div(t, ad_const(t, sa, a), ad_const(t, sb, b));
                const double *dv = ad_value(t, d), *qv = ad_value(t, q);
                EXPECT(dv && qv, "[%d] with [%d]: %s", pa, pb, ad_tape_error(t));
                ad_shape s = dv ? ad_shape_of(t, d) : ad_scalar_shape();
                for (int r = 0; dv && qv && r < s.rows; r++)
                    for (int c = 0; c < s.cols; c++) { // each operand's entry at (r, c)
                        double x = a[(sa.rows == 1 ? 0 : r) * sa.cols + (sa.cols == 1 ? 0 : c)];
                        double y = b[(sb.rows == 1 ? 0 : r) * sb.cols + (sb.cols == 1 ? 0 : c)];
                        EXPECT(dv[r * s.cols + c] == x - y && qv[r * s.cols + c] == x / y,
                               "[%d] with [%d], (%d, %d)", pa, pb, r, c);
                    }
                ad_tape_free(t);
            }
        for (int ps = 1; ps < P; ps++) { // [M, N] summed down to a row, a column, a vector, a scalar
            ad_tape *t = ad_tape_new(NULL);
            ad_shape s = parts[ps];
            const double *y = ad_value(t, ad_sum_to(t, ad_const(t, full, a), s));
            double want[M * N] = {0};
            for (int r = 0; r < M; r++)
                for (int c = 0; c < N; c++)
                    want[(s.rows == 1 ? 0 : r) * s.cols + (s.cols == 1 ? 0 : c)] += a[r * N + c];
            EXPECT(y, "%s", ad_tape_error(t));
            for (int i = 0; y && i < s.rows * s.cols; i++)
                EXPECT(y[i] == want[i], "to [%d]: entry %d: %.17g, want %.17g", ps, i, y[i], want[i]);
            ad_tape_free(t);
        }
    }
    TEST_CASE("broadcast: a vector of the wrong length is a shape error naming both shapes") {
        ad_tape *t = ad_tape_new(NULL);
        double A[6] = {0}, b[2] = {0};
        ad_var r = ad_add(t, ad_const(t, ad_mat_shape(2, 3), A), ad_const(t, ad_vec_shape(2), b));
        EXPECT(r == AD_NONE && ad_tape_status(t) == AD_ESHAPE, "status %d", ad_tape_status(t));
        EXPECT(has(ad_tape_error(t), "add") && has(ad_tape_error(t), "[2, 3]") &&
                   has(ad_tape_error(t), "[2]"),
               "message: %s", ad_tape_error(t));
        ad_tape_free(t);
    }
}

// Gradient of sum(op(x)) at one point, for the conventions at kinks.
static double grad1(ad_var (*op)(ad_tape *, ad_var), double x0) {
    ad_tape *t = ad_tape_new(NULL);
    ad_var x = ad_param(t, ad_scalar_shape(), &x0), g;
    ad_grad(t, op(t, x), 1, &x, &g, 0);
    double r = ad_item(t, g);
    ad_tape_free(t);
    return r;
}
static ad_var clamp01(ad_tape *t, ad_var x) { return ad_clamp(t, x, 0, 1); }
static ad_var max_with_1(ad_tape *t, ad_var x) { return ad_max(t, x, ad_scalar(t, 1)); }

static void conventions(void) {
    TEST_CASE("conventions: abs'(0) = 0, relu'(0) = 0, clamp' = 1 inside and 0 on the box") {
        EXPECT(grad1(ad_abs, 0) == 0, "abs'(0)");
        EXPECT(grad1(ad_relu, 0) == 0, "relu'(0)");
        EXPECT(grad1(clamp01, 0.5) == 1 && grad1(clamp01, 0) == 0 && grad1(clamp01, 1) == 0 &&
                   grad1(clamp01, 2) == 0,
               "clamp'");
        EXPECT(grad1(max_with_1, 1) == 0.5 && grad1(max_with_1, 2) == 1, "max' at a tie is 1/2");
    }
    TEST_CASE("conventions: max_all sends the gradient to the first argmax") {
        ad_tape *t = ad_tape_new(NULL);
        double x0[4] = {1, 3, 3, 2};
        ad_var x = ad_param(t, ad_vec_shape(4), x0), g;
        ad_grad(t, ad_max_all(t, x), 1, &x, &g, 0);
        const double *gv = ad_value(t, g);
        EXPECT(gv[0] == 0 && gv[1] == 1 && gv[2] == 0 && gv[3] == 0, "%g %g %g %g", gv[0], gv[1],
               gv[2], gv[3]);
        ad_tape_free(t);
    }
    TEST_CASE("conventions: ||v||^p has gradient 0 at v = 0") {
        ad_tape *t = ad_tape_new(NULL);
        double z[3] = {0, 0, 0};
        ad_var v = ad_param(t, ad_vec_shape(3), z), g;
        ad_grad(t, ad_normp(t, v, 1.5), 1, &v, &g, 0);
        EXPECT(ad_tape_status(t) == AD_OK && ad_value(t, g)[0] == 0, "%s", ad_tape_error(t));
        ad_tape_free(t);
    }
}

static void derivatives(void) {
    TEST_CASE("vjp of a vector output with a given adjoint; wrt that y does not use gives 0") {
        ad_tape *t = ad_tape_new(NULL);
        double x0[3] = {0.1, 0.2, 0.3}, u0[3] = {1, -2, 0.5}, z0 = 4;
        ad_var x = ad_param(t, ad_vec_shape(3), x0), z = ad_param(t, ad_scalar_shape(), &z0);
        ad_var y = ad_sin(t, x), out[2], wrt[2] = {x, z};
        ad_vjp(t, y, ad_const(t, ad_vec_shape(3), u0), 2, wrt, out, 0);
        for (int i = 0; i < 3; i++)
            EXPECT(fabs(ad_value(t, out[0])[i] - u0[i] * cos(x0[i])) < 1e-15, "entry %d", i);
        EXPECT(ad_item(t, out[1]) == 0, "unused input");
        ad_tape_free(t);
    }
    TEST_CASE("hvp equals grad-of-grad, and the mixed product matches its closed form") {
        // f = sum(x^2 y) + sin(x . y): check against the explicit Hessian
        ad_tape *t = ad_tape_new(NULL);
        double x0[2] = {0.3, -0.7}, y0[2] = {1.1, 0.4}, v0[2] = {0.5, 2.0};
        ad_var x = ad_param(t, ad_vec_shape(2), x0), y = ad_param(t, ad_vec_shape(2), y0);
        ad_var f = ad_add(t, ad_sum(t, ad_mul(t, ad_square(t, x), y)), ad_sin(t, ad_dot(t, x, y)));
        ad_var v = ad_const(t, ad_vec_shape(2), v0), hxx, hxy;
        ad_hvp(t, f, x, v, &hxx, 0);
        ad_hvp_mixed(t, f, x, y, v, &hxy, 0);
        double s = x0[0] * y0[0] + x0[1] * y0[1];
        for (int i = 0; i < 2; i++) {
            double exx = 2 * y0[i] * v0[i], exy = 2 * x0[i] * v0[i] + cos(s) * v0[i];
            for (int j = 0; j < 2; j++) {
                exx += -sin(s) * y0[i] * y0[j] * v0[j];
                exy += -sin(s) * y0[i] * x0[j] * v0[j];
            }
            EXPECT(fabs(ad_value(t, hxx)[i] - exx) < 1e-14, "H_xx v [%d]: %g vs %g", i,
                   ad_value(t, hxx)[i], exx);
            EXPECT(fabs(ad_value(t, hxy)[i] - exy) < 1e-14, "H_xy v [%d]: %g vs %g", i,
                   ad_value(t, hxy)[i], exy);
        }
        ad_tape_free(t);
    }
    TEST_CASE("hvp computes only the values it needs (the inner gradient stays lazy)") {
        // f = 1/2 x^T A x: H v = (A + A^T) v / 2 needs neither the gradient's value nor A x, so
        // ad_hvp evaluates fewer nodes than forming the gradient first and differentiating it.
        double A[9] = {2, 1, 0, 1, 3, 1, 0, 1, 4}, x0[3] = {1, 2, 3}, v0[3] = {1, 0, -1};
        int64_t evals[2];
        for (int lazy = 0; lazy < 2; lazy++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_var a = ad_const(t, ad_mat_shape(3, 3), A), x = ad_param(t, ad_vec_shape(3), x0);
            ad_var v = ad_const(t, ad_vec_shape(3), v0), h, g;
            ad_tape_defer(t, 1); // f itself deferred in both: only the second order differs
            ad_var f = ad_scale(t, ad_dot(t, x, ad_matvec(t, a, x, 0)), 0.5);
            ad_tape_defer(t, 0);
            int64_t e0 = ad_tape_evals(t);
            if (lazy) {
                ad_hvp(t, f, x, v, &h, 0);
            } else { // the gradient formed (computed), then differentiated
                ad_grad(t, f, 1, &x, &g, AD_CREATE_GRAPH);
                ad_grad(t, ad_dot(t, g, v), 1, &x, &h, 0);
            }
            const double *hv = ad_value(t, h);
            evals[lazy] = ad_tape_evals(t) - e0;
            double e[3] = {2, 0, -4};
            for (int i = 0; i < 3; i++) EXPECT(fabs(hv[i] - e[i]) < 1e-14, "entry %d: %g", i, hv[i]);
            ad_tape_free(t);
        }
        EXPECT(evals[1] < evals[0], "hvp evaluated %lld nodes, grad-then-grad %lld",
               (long long)evals[1], (long long)evals[0]);
    }
}

static void detach(void) {
    TEST_CASE("detach stops the gradient: same value, no derivative, constant in a Hessian") {
        ad_tape *t = ad_tape_new(NULL);
        double x0[2] = {0.4, -1.2};
        ad_var x = ad_param(t, ad_vec_shape(2), x0), g, h;
        ad_var d = ad_detach(t, ad_sin(t, x));
        ad_var f = ad_dot(t, x, d); // f = x . c with c = sin(x0) frozen
        ad_grad(t, f, 1, &x, &g, 0);
        ad_hvp(t, ad_mul(t, f, f), x, ad_fill(t, ad_vec_shape(2), 1), &h, 0);
        double c[2] = {sin(x0[0]), sin(x0[1])};
        for (int i = 0; i < 2; i++) {
            EXPECT(ad_value(t, d)[i] == c[i], "value");
            EXPECT(ad_value(t, g)[i] == c[i], "gradient %g", ad_value(t, g)[i]);
            // f^2 with f = x . c: H = 2 c c^T, H 1 = 2 c (c0 + c1)
            EXPECT(fabs(ad_value(t, h)[i] - 2 * c[i] * (c[0] + c[1])) < 1e-14, "hvp");
        }
        ad_tape_free(t);
    }
}

// x feeds five places, two of them through one add whose adjoint both inputs share
static ad_var reuse(ad_tape *t, const ad_var *in, void *ctx) {
    (void)ctx;
    ad_var x = in[0], s = ad_add(t, x, x);
    ad_var y = ad_add(t, ad_add(t, s, ad_mul(t, x, x)), ad_sin(t, ad_scale(t, x, 3)));
    return ad_add(t, ad_dot(t, y, y), ad_sum(t, ad_exp(t, x)));
}

static void accumulation(void) {
    TEST_CASE("adjoints of a reused input accumulate correctly (first and second order)") {
        double x0[4] = {0.3, -0.8, 1.1, 0.05};
        ad_shape s = ad_vec_shape(4);
        const double *pt[1] = {x0};
        ad_check_report r = ad_check_grad(reuse, NULL, 1, &s, pt, NULL);
        EXPECT(r.pass, "%s", r.msg);
        r = ad_check_hvp(reuse, NULL, 1, &s, pt, NULL);
        EXPECT(r.pass, "%s", r.msg);
    }
}

// op(A) op(B) by three loops, the test's own reference
static void ref_matmul(const double *A, const double *B, int m, int k, int n, int ta, int tb, double *C) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++) s += (ta ? A[p * m + i] : A[i * k + p]) * (tb ? B[j * k + p] : B[p * n + j]);
            C[i * n + j] = s;
        }
}

static void kernels(void) {
    TEST_CASE("products: the cblas and the small-size loop kernels agree with a reference") {
        // 40 x 30 x 50 goes to cblas, 6 x 5 x 4 to the loops; matvec likewise (70 x 80 vs 5 x 7)
        int shapes[2][3] = {{40, 30, 50}, {6, 5, 4}};
        ad_rng g;
        ad_rng_seed(&g, 31);
        for (int s = 0; s < 2; s++) {
            int m = shapes[s][0], k = shapes[s][1], n = shapes[s][2];
            double A[40 * 30], B[30 * 50], C[40 * 50], R[40 * 50];
            for (int i = 0; i < m * k; i++) A[i] = ad_rng_normal(&g);
            for (int i = 0; i < k * n; i++) B[i] = ad_rng_normal(&g);
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++) {
                    ad_tape *t = ad_tape_new(NULL);
                    ad_var a = ad_const(t, ta ? ad_mat_shape(k, m) : ad_mat_shape(m, k), A);
                    ad_var b = ad_const(t, tb ? ad_mat_shape(n, k) : ad_mat_shape(k, n), B);
                    memcpy(C, ad_value(t, ad_matmul(t, a, b, ta, tb)), sizeof(double) * m * n);
                    ref_matmul(A, B, m, k, n, ta, tb, R);
                    double worst = 0;
                    for (int i = 0; i < m * n; i++) worst = fmax(worst, fabs(C[i] - R[i]));
                    EXPECT(worst < 1e-12, "matmul %dx%dx%d ta %d tb %d: error %g", m, k, n, ta, tb, worst);
                    // matvec both ways: A [m, k] x [k] and A^T [m] on the same data
                    ad_var am = ad_const(t, ad_mat_shape(m, k), A), xv = ad_const(t, ad_vec_shape(k), B),
                           uv = ad_const(t, ad_vec_shape(m), B);
                    const double *y1 = ad_value(t, ad_matvec(t, am, xv, 0));
                    for (int i = 0; i < m; i++) {
                        double r = 0;
                        for (int p = 0; p < k; p++) r += A[i * k + p] * B[p];
                        worst = fmax(worst, fabs(y1[i] - r));
                    }
                    const double *y2 = ad_value(t, ad_matvec(t, am, uv, 1));
                    for (int p = 0; p < k; p++) {
                        double r = 0;
                        for (int i = 0; i < m; i++) r += A[i * k + p] * B[i];
                        worst = fmax(worst, fabs(y2[p] - r));
                    }
                    EXPECT(worst < 1e-12, "matvec %dx%d: error %g", m, k, worst);
                    ad_tape_free(t);
                }
        }
    }
}

static void deferral(void) {
    TEST_CASE("deferred recording: same vector-Jacobian product, fewer values computed") {
        // y = sin(A x) + (B x) . (B x): the vjp wrt x reads cos(A x) and B x, not sin(A x) or y
        double A[12], x0[3] = {0.3, -0.2, 0.5}, u = 1.7;
        for (int i = 0; i < 12; i++) A[i] = 0.1 * (i % 5) - 0.2;
        int64_t evals[2];
        double g[2][3];
        for (int d = 0; d < 2; d++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_var x = ad_param(t, ad_vec_shape(3), x0), gx;
            ad_var a = ad_const(t, ad_mat_shape(4, 3), A), b = ad_const(t, ad_mat_shape(4, 3), A);
            int64_t e0 = ad_tape_evals(t);
            ad_tape_defer(t, d);
            ad_var bx = ad_matvec(t, b, x, 0);
            ad_var y = ad_add(t, ad_sum(t, ad_sin(t, ad_matvec(t, a, x, 0))), ad_dot(t, bx, bx));
            ad_tape_defer(t, 0);
            EXPECT(ad_vjp(t, y, ad_scalar(t, u), 1, &x, &gx, 0) == AD_OK, "%s", ad_tape_error(t));
            memcpy(g[d], ad_value(t, gx), sizeof g[d]);
            evals[d] = ad_tape_evals(t) - e0;
            ad_tape_free(t);
        }
        for (int i = 0; i < 3; i++) EXPECT(g[0][i] == g[1][i], "entry %d: %g vs %g", i, g[0][i], g[1][i]);
        EXPECT(evals[1] < evals[0], "deferred %lld evaluations, eager %lld", (long long)evals[1], (long long)evals[0]);
    }
    TEST_CASE("deferred values far apart on the tape are computed in order") {
        // two deferred chains with 1000 eager nodes between them: forcing their sum takes the
        // sorted path rather than the scan of a short index range
        ad_tape *t = ad_tape_new(NULL);
        double x0 = 0.7;
        ad_var x = ad_param(t, ad_scalar_shape(), &x0);
        ad_tape_defer(t, 1);
        ad_var a = ad_sin(t, ad_scale(t, x, 2));
        ad_tape_defer(t, 0);
        ad_var e = x;
        for (int i = 0; i < 1000; i++) e = ad_shift(t, e, 1e-3);
        ad_tape_defer(t, 1);
        ad_var b = ad_exp(t, ad_mul(t, a, e));
        ad_var s = ad_add(t, ad_square(t, a), b);
        int64_t e0 = ad_tape_evals(t);
        double want = sin(1.4) * sin(1.4) + exp(sin(1.4) * ad_item(t, e));
        EXPECT(ad_item(t, s) == want, "%.17g vs %.17g", ad_item(t, s), want);
        EXPECT(ad_tape_evals(t) - e0 == 6, "%lld evaluations", (long long)(ad_tape_evals(t) - e0));
        ad_tape_free(t);
    }
}

static void mark_rewind(void) {
    TEST_CASE("mark / rewind: a loop that rewinds does not grow the tape") {
        ad_tape *t = ad_tape_new(NULL);
        double x0[100] = {0};
        ad_var x = ad_param(t, ad_vec_shape(100), x0);
        ad_mark m = ad_tape_mark(t);
        size_t bytes = 0;
        for (int it = 0; it < 1000; it++) {
            ad_var y = ad_sum(t, ad_exp(t, ad_mul(t, x, x))), g;
            ad_grad(t, y, 1, &x, &g, 0);
            EXPECT(ad_item(t, y) == 100, "value");
            ad_tape_rewind(t, m);
            if (it == 1) bytes = ad_tape_bytes(t);
        }
        EXPECT(ad_tape_bytes(t) == bytes, "bytes grew from %zu to %zu", bytes, ad_tape_bytes(t));
        EXPECT(ad_tape_nodes(t) == m.nodes, "nodes after rewind");
        EXPECT(ad_value(t, x)[0] == 0, "values before the mark survive");
        size_t used = ad_tape_used_bytes(t);
        ad_fill(t, ad_vec_shape(1000), 0);
        EXPECT(ad_tape_used_bytes(t) >= used + 8000, "used bytes follow the recording: %zu -> %zu", used,
               ad_tape_used_bytes(t));

        ad_tape_free(t);
    }
}

// ---- reset ----

// What a reset must forget: which const views the tape finds again (16 are remembered, the least
// recently used go first), the shared scalar 1 that seeds gradients, and the remembered
// products. A computation that leans on all three: the view of B is evicted by the 18 views
// after it and recorded again; a scalar 1 sits where an earlier recording's seed may have been;
// products of views and x recorded three times are found again or not; a gradient, a
// Hessian-vector product and a second gradient sum what is shared. f, g, h, g2 go to out [4 RN].
enum { RN = 5, RVIEWS = 18 };
typedef struct {
    double B[RN * RN], V[RVIEWS][RN], x0[RN], y0[RN], M[RVIEWS][RN * RN];
} reset_data;

static reset_data reset_make(uint64_t seed) {
    reset_data d;
    ad_rng r;
    ad_rng_seed(&r, seed);
    for (int i = 0; i < RN * RN; i++) d.B[i] = ad_rng_normal(&r);
    for (int k = 0; k < RVIEWS; k++)
        for (int i = 0; i < RN; i++) d.V[k][i] = ad_rng_normal(&r);
    for (int i = 0; i < RN; i++) d.x0[i] = ad_rng_normal(&r), d.y0[i] = ad_rng_normal(&r);
    for (int k = 0; k < RVIEWS; k++)
        for (int i = 0; i < RN * RN; i++) d.M[k][i] = ad_rng_normal(&r);
    return d;
}

static int32_t reset_comp(ad_tape *t, const reset_data *d, int shift, double *out) {
    int32_t n0 = ad_tape_nodes(t);
    for (int i = 0; i < shift; i++) ad_scalar(t, 2.0);
    ad_var x = ad_param(t, ad_vec_shape(RN), d->x0), y = ad_const(t, ad_vec_shape(RN), d->y0);
    ad_shape sb = ad_mat_shape(RN, RN);
    ad_var f = ad_dot(t, y, ad_matvec(t, ad_const_view(t, sb, d->B), x, 0));
    for (int k = 0; k < RVIEWS; k++)
        f = ad_add(t, f, ad_dot(t, x, ad_const_view(t, ad_vec_shape(RN), d->V[k])));
    f = ad_add(t, f, ad_dot(t, y, ad_matvec(t, ad_const_view(t, sb, d->B), x, 0)));
    f = ad_add(t, f, ad_mul(t, ad_scalar(t, 1.0), ad_sqnorm(t, x)));
    ad_var g = AD_NONE, h = AD_NONE;
    ad_grad(t, f, 1, &x, &g, 0);
    ad_hvp(t, f, x, y, &h, 0);
    // products of views and x recorded three times each, summed: which are found again
    ad_var f2 = ad_scalar(t, 0), g2 = AD_NONE;
    for (int r = 0; r < 3; r++)
        for (int k = 0; k < RVIEWS; k++)
            f2 = ad_add(t, f2, ad_dot(t, ad_const_view(t, ad_vec_shape(RN), d->V[(k + r) % RVIEWS]),
                                      ad_matvec(t, ad_const_view(t, sb, d->M[k]), x, r & 1)));
    ad_grad(t, f2, 1, &x, &g2, 0);
    memset(out, 0, 4 * RN * sizeof(double));
    memcpy(out, ad_value(t, f), sizeof(double));
    memcpy(out + RN, ad_value(t, g), RN * sizeof(double));
    memcpy(out + 2 * RN, ad_value(t, h), RN * sizeof(double));
    memcpy(out + 3 * RN, ad_value(t, g2), RN * sizeof(double));
    return ad_tape_nodes(t) - n0;
}

static void reset(void) {
    TEST_CASE("reset: a computation after a reset gives the bits of a new tape, whatever came before") {
        enum { SHIFT = 12 };
        reset_data d = reset_make(7), other = reset_make(8);
        double want[4 * RN], got[4 * RN], scratch[4 * RN];
        ad_tape *fresh = ad_tape_new(NULL);
        int32_t n_want = reset_comp(fresh, &d, SHIFT, want);
        EXPECT(ad_tape_status(fresh) == AD_OK, "%s", ad_tape_error(fresh));
        ad_tape_free(fresh);
        // histories: the same computation on other data, shifted by 0 to 2 SHIFT nodes; or 1 to
        // 8 nodes, then 64 views of distinct memory
        static const double big[64 + RN];
        for (int k = 0; k <= 2 * SHIFT + 8; k++) {
            ad_tape *t = ad_tape_new(NULL);
            if (k <= 2 * SHIFT) {
                reset_comp(t, &other, k, scratch);
            } else {
                for (int i = 2 * SHIFT; i < k; i++) ad_scalar(t, 1.0);
                for (int i = 0; i < 64; i++) ad_const_view(t, ad_vec_shape(RN), big + i);
            }
            ad_tape_reset(t);
            int32_t n = reset_comp(t, &d, SHIFT, got);
            EXPECT(ad_tape_status(t) == AD_OK && n == n_want && !memcmp(got, want, sizeof want),
                   "history %d: %d nodes against %d, f %.17g against %.17g (%s)", k, (int)n,
                   (int)n_want, got[0], want[0], ad_tape_error(t));
            ad_tape_free(t);
        }
    }
}

static void errors(void) {
    TEST_CASE("errors: domain errors name the op and the entry") {
        struct { ad_var (*f)(ad_tape *, ad_var); double x; const char *op; } c[] = {
            {ad_log, -1, "log"}, {ad_log, 0, "log"}, {ad_sqrt, -4, "sqrt"}};
        for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
            ad_tape *t = ad_tape_new(NULL);
            double x[3] = {1, c[i].x, 2};
            ad_var r = c[i].f(t, ad_param(t, ad_vec_shape(3), x));
            EXPECT(r == AD_NONE && ad_tape_status(t) == AD_EDOMAIN, "%s status", c[i].op);
            EXPECT(has(ad_tape_error(t), c[i].op) && has(ad_tape_error(t), "entry 1"), "%s",
                   ad_tape_error(t));
            ad_tape_free(t);
        }
        ad_tape *t = ad_tape_new(NULL);
        double z = 0;
        EXPECT(!ad_div(t, ad_scalar(t, 1), ad_const(t, ad_scalar_shape(), &z)) &&
                   ad_tape_status(t) == AD_EDOMAIN && has(ad_tape_error(t), "div"),
               "div by zero: %s", ad_tape_error(t));
        ad_tape_reset(t);
        EXPECT(!ad_pow(t, ad_scalar(t, 0), -1) && ad_tape_status(t) == AD_EDOMAIN, "0^-1");
        ad_tape_reset(t);
        EXPECT(!ad_pow(t, ad_scalar(t, -2), 0.5) && ad_tape_status(t) == AD_EDOMAIN, "(-2)^0.5");
        ad_tape_free(t);
    }
    TEST_CASE("errors: the first error is kept, later ops are no-ops, entry points report it") {
        ad_tape *t = ad_tape_new(NULL);
        double x0[2] = {1, 2};
        ad_var x = ad_param(t, ad_vec_shape(2), x0);
        ad_var bad = ad_matmul(t, x, x, 0, 0); // vectors are not matrices
        EXPECT(!bad && ad_tape_status(t) == AD_ESHAPE && has(ad_tape_error(t), "matmul"), "%s",
               ad_tape_error(t));
        char first[256];
        snprintf(first, sizeof first, "%s", ad_tape_error(t));
        int32_t nodes = ad_tape_nodes(t);
        ad_var y = ad_log(t, ad_neg(t, x)); // would be a domain error
        EXPECT(!y && ad_tape_nodes(t) == nodes && !strcmp(first, ad_tape_error(t)), "no-op");
        ad_var g;
        EXPECT(ad_grad(t, ad_sum(t, x), 1, &x, &g, 0) == AD_ESHAPE && g == AD_NONE, "grad status");
        EXPECT(isnan(ad_item(t, g)), "an invalid handle reads as NaN");
        ad_tape_clear_error(t);
        EXPECT(ad_grad(t, ad_sum(t, x), 1, &x, &g, 0) == AD_OK && ad_value(t, g)[1] == 1,
               "works again after clearing");
        ad_tape_free(t);
    }
    TEST_CASE("errors: memory cap") {
        ad_tape_params p = ad_tape_default_params();
        p.max_bytes = 4 << 20;
        p.chunk_bytes = 1 << 16;
        ad_tape *t = ad_tape_new(&p);
        ad_var x = ad_fill(t, ad_vec_shape(1000), 1.0);
        int steps = 0;
        while (x && steps < 100000) x = ad_exp(t, ad_scale(t, x, 0.5)), steps++;
        EXPECT(ad_tape_status(t) == AD_ENOMEM && has(ad_tape_error(t), "cap"), "%s",
               ad_tape_error(t));
        EXPECT(ad_tape_peak_bytes(t) <= p.max_bytes, "peak %zu over the cap",
               ad_tape_peak_bytes(t));
        ad_tape_reset(t);
        EXPECT(ad_exp(t, ad_fill(t, ad_vec_shape(10), 1.0)) != AD_NONE, "usable after reset");
        ad_tape_free(t);
    }
    TEST_CASE("errors: NaN/Inf when checking is on, and not when off") {
        ad_tape_params p = ad_tape_default_params();
        p.check_finite = 1;
        ad_tape *t = ad_tape_new(&p);
        EXPECT(!ad_exp(t, ad_scalar(t, 1000)) && ad_tape_status(t) == AD_ENAN &&
                   has(ad_tape_error(t), "exp"),
               "%s", ad_tape_error(t));
        ad_tape_reset(t);
        double bad[2] = {1, NAN};
        EXPECT(!ad_param(t, ad_vec_shape(2), bad) && ad_tape_status(t) == AD_ENAN, "NaN param");
        ad_tape_free(t);
        t = ad_tape_new(NULL);
        EXPECT(isinf(ad_item(t, ad_exp(t, ad_scalar(t, 1000)))) && ad_tape_status(t) == AD_OK,
               "unchecked");
        ad_tape_free(t);
    }
    TEST_CASE("errors: bad arguments") {
        ad_tape *t = ad_tape_new(NULL);
        double m[6] = {0};
        ad_var a = ad_const(t, ad_mat_shape(3, 2), m), g;
        int32_t idx[2] = {0, 3}, lab[3] = {0, 1, 2};
        EXPECT(!ad_take_rows(t, a, 2, idx) && ad_tape_status(t) == AD_EARG &&
                   has(ad_tape_error(t), "index 1 is 3"),
               "take_rows: %s", ad_tape_error(t));
        ad_tape_reset(t);
        a = ad_const(t, ad_mat_shape(3, 2), m);
        EXPECT(!ad_xent(t, a, lab) && has(ad_tape_error(t), "label 2 is 2"), "xent: %s",
               ad_tape_error(t));
        ad_tape_reset(t);
        EXPECT(!ad_exp(t, 12345) && ad_tape_status(t) == AD_EARG, "invalid handle");
        ad_tape_reset(t);
        a = ad_const(t, ad_mat_shape(3, 2), m);
        EXPECT(ad_grad(t, ad_sum(t, a), 1, &a, &g, 0) == AD_EARG && has(ad_tape_error(t), "constant"),
               "gradient with respect to a constant: %s", ad_tape_error(t));
        ad_tape_reset(t);
        ad_var x = ad_param(t, ad_mat_shape(3, 2), m);
        EXPECT(ad_grad(t, x, 1, &x, &g, 0) == AD_ESHAPE && has(ad_tape_error(t), "not a scalar"),
               "grad of a matrix: %s", ad_tape_error(t));
        ad_tape_reset(t);
        x = ad_param(t, ad_mat_shape(3, 2), m);
        EXPECT(ad_vjp(t, x, ad_fill(t, ad_vec_shape(6), 1), 1, &x, &g, 0) == AD_ESHAPE,
               "vjp adjoint shape");
        ad_tape_reset(t);
        EXPECT(!ad_clamp(t, ad_scalar(t, 1), 2, 1) && ad_tape_status(t) == AD_EARG, "empty box");
        ad_tape_reset(t);
        EXPECT(!ad_slice(t, ad_fill(t, ad_vec_shape(4), 0), 2, 3) && ad_tape_status(t) == AD_ESHAPE,
               "slice out of range");
        ad_tape_free(t);
    }
    TEST_CASE("errors: a domain error inside a reverse rule is reported by grad") {
        ad_tape *t = ad_tape_new(NULL);
        double z = 0;
        ad_var x = ad_param(t, ad_scalar_shape(), &z), g;
        // sqrt is defined at 0 but its derivative is not
        EXPECT(ad_grad(t, ad_sqrt(t, x), 1, &x, &g, 0) == AD_EDOMAIN && g == AD_NONE, "%s",
               ad_tape_error(t));
        ad_tape_free(t);
    }
}

static void fused(void) {
    TEST_CASE("axpy: y + alpha x is y - (s x) bit for bit with alpha = -s") {
        ad_tape *t = ad_tape_new(NULL);
        double y0[5] = {1e-3, -2.5, 3.7e10, 0.1, -0.0}, x0[5] = {0.3, 1.0 / 3, -7e9, 0.2, 0};
        ad_var y = ad_param(t, ad_vec_shape(5), y0), x = ad_param(t, ad_vec_shape(5), x0);
        for (int k = 0; k < 3; k++) {
            double s = (double[]){0.1, 1.0 / 7, 3.3}[k];
            const double *a = ad_value(t, ad_axpy(t, y, -s, x));
            const double *b = ad_value(t, ad_sub(t, y, ad_scale(t, x, s)));
            for (int i = 0; i < 5; i++) EXPECT(a[i] == b[i], "s %g entry %d: %.17g vs %.17g", s, i, a[i], b[i]);
        }
        EXPECT(!ad_axpy(t, y, INFINITY, x) && ad_tape_status(t) == AD_EARG, "alpha must be finite");
        ad_tape_free(t);
    }
}

static void sharing(void) {
    TEST_CASE("sharing: a const view of the same memory and shape is one node until rewound") {
        ad_tape *t = ad_tape_new(NULL);
        double A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {0};
        ad_mark m = ad_tape_mark(t);
        ad_var a = ad_const_view(t, ad_mat_shape(2, 3), A);
        EXPECT(ad_const_view(t, ad_mat_shape(2, 3), A) == a, "same view, same node");
        EXPECT(ad_const_view(t, ad_mat_shape(3, 2), A) != a, "another shape, another node");
        EXPECT(ad_const_view(t, ad_mat_shape(2, 3), B) != a, "other memory, another node");
        ad_tape_rewind(t, m);
        ad_var x = ad_param(t, ad_vec_shape(6), A); // at a's old place
        ad_var a2 = ad_const_view(t, ad_mat_shape(2, 3), A);
        EXPECT(a2 != x && ad_value(t, a2) == A && ad_tape_status(t) == AD_OK, "re-recorded after rewind");
        ad_tape_free(t);
    }
    TEST_CASE("sharing: a product recorded again is the earlier node, and its adjoint sums every use") {
        ad_tape *t = ad_tape_new(NULL);
        double B[6] = {1, -2, 0.5, 3, 1, -1}, x0[3] = {0.2, -0.7, 1.1}, y0[2] = {1.5, -0.5};
        ad_var x = ad_param(t, ad_vec_shape(3), x0), y = ad_param(t, ad_vec_shape(2), y0);
        ad_var b = ad_const_view(t, ad_mat_shape(2, 3), B);
        ad_var bx = ad_matvec(t, b, x, 0);
        EXPECT(ad_matvec(t, b, x, 0) == bx && ad_matvec(t, b, y, 1) != bx, "same product, same node");
        // f = sum_k <y, B x> over three recordings: df/dx = 3 B^T y
        ad_var f = ad_dot(t, y, bx), gx;
        for (int k = 1; k < 3; k++) f = ad_add(t, f, ad_dot(t, y, ad_matvec(t, b, x, 0)));
        EXPECT(ad_grad(t, f, 1, &x, &gx, 0) == AD_OK, "%s", ad_tape_error(t));
        for (int j = 0; j < 3; j++) {
            double want = 3 * (B[j] * y0[0] + B[3 + j] * y0[1]);
            EXPECT(fabs(ad_value(t, gx)[j] - want) < 1e-14, "entry %d: %g vs %g", j, ad_value(t, gx)[j], want);
        }
        // a rewind drops what it dropped: the same nodes recorded again at the same places are
        // computed again (under new handles: the old ones went stale)
        ad_mark m = ad_tape_mark(t);
        ad_var c = ad_detach(t, x);
        ad_matvec(t, b, c, 0);
        ad_tape_rewind(t, m);
        EXPECT(ad_matvec(t, b, x, 0) == bx, "still remembered after a rewind that kept it");
        ad_var c2 = ad_detach(t, x);
        EXPECT(c2 != c && ad_tape_holds(t, c2) && !ad_tape_holds(t, c), "the old handle is stale");
        c = c2;
        int64_t e0 = ad_tape_evals(t);
        ad_var bc = ad_matvec(t, b, c, 0);
        EXPECT(ad_tape_evals(t) == e0 + 1 && ad_value(t, bc)[1] == ad_value(t, bx)[1], "recomputed");
        // a vjp without AD_CREATE_GRAPH returns constants even when its rule records a product
        // the caller recorded with a gradient: w -> B^T w below must not carry one back to w
        double w0[2] = {0.3, 2};
        ad_var w = ad_param(t, ad_vec_shape(2), w0), btw = ad_matvec(t, b, w, 1), out, gw;
        EXPECT(ad_vjp(t, ad_matvec(t, b, x, 0), w, 1, &x, &out, 0) == AD_OK, "%s", ad_tape_error(t));
        EXPECT(out != btw, "the sweep's product is its own constant node");
        EXPECT(ad_grad(t, ad_sum(t, ad_mul(t, out, x)), 1, &w, &gw, 0) == AD_OK, "%s", ad_tape_error(t));
        EXPECT(ad_value(t, gw)[0] == 0 && ad_value(t, gw)[1] == 0, "gradient through a constant: %g %g",
               ad_value(t, gw)[0], ad_value(t, gw)[1]);
        ad_tape_free(t);
    }
    TEST_CASE("sharing: an accumulator summed in place is never the shared node of its sum") {
        // the gradient of <x, c1> + <x, c2> + <x, c3> starts as c1 + c2 (an add of two leaves)
        // and has c3 added in place: a later c1 + c2 must not be that node
        ad_tape *t = ad_tape_new(NULL);
        double x0[2] = {1, 2}, c[3][2] = {{1, 10}, {100, 1000}, {1e4, 1e5}};
        ad_var x = ad_param(t, ad_vec_shape(2), x0), cv[3], g;
        for (int k = 0; k < 3; k++) cv[k] = ad_const(t, ad_vec_shape(2), c[k]);
        ad_var f = ad_add(t, ad_add(t, ad_dot(t, x, cv[0]), ad_dot(t, x, cv[1])), ad_dot(t, x, cv[2]));
        EXPECT(ad_grad(t, f, 1, &x, &g, 0) == AD_OK, "%s", ad_tape_error(t));
        ad_var s01 = ad_add(t, cv[0], cv[1]), s01b = ad_add(t, cv[0], cv[1]);
        for (int i = 0; i < 2; i++) {
            EXPECT(ad_value(t, g)[i] == c[0][i] + c[1][i] + c[2][i], "gradient [%d]: %g", i, ad_value(t, g)[i]);
            EXPECT(ad_value(t, s01)[i] == c[0][i] + c[1][i], "c1 + c2 [%d]: %g", i, ad_value(t, s01)[i]);
        }
        EXPECT(s01b == s01, "c1 + c2 recorded twice is one node");
        ad_tape_free(t);
    }
    // y_{k+1} = y_k - 0.1 (S y_k - x): the adjoint of y_k is the next one's, passed through the
    // step, plus the product S (-0.1 adj) its rule records; the sweep sums into that product
    TEST_CASE("in place: a state's adjoint in an unrolled loop costs no add node, same numbers") {
        enum { K = 6 };
        double A[9] = {2, 0.5, -0.25, 9, 1.5, 0.75, 9, 9, 3}, x0[3] = {0.3, -1.2, 0.7}, y0[3] = {1, 2, 3};
        ad_tape *t = ad_tape_new(NULL);
        ad_var x = ad_param(t, ad_vec_shape(3), x0), z = ad_param(t, ad_vec_shape(3), y0), y = z;
        ad_var Av = ad_const_view(t, ad_mat_shape(3, 3), A);
        for (int k = 0; k < K; k++) y = ad_axpy(t, y, -0.1, ad_sub(t, ad_symv(t, Av, y), x));
        ad_var f = ad_scale(t, ad_sqnorm(t, y), 0.5), g[2], h[2], wrt[2] = {x, z};
        int add = ad_op_find("add");
        int64_t adds = ad_tape_op_uses(t, add);
        EXPECT(ad_grad(t, f, 2, wrt, g, 0) == AD_OK, "%s", ad_tape_error(t));
        // one: x's accumulator (its uses pass the adjoints through, none is a fresh node)
        EXPECT(ad_tape_op_uses(t, add) == adds + 1, "%lld add nodes recorded, not 1",
               (long long)(ad_tape_op_uses(t, add) - adds));
        EXPECT(ad_grad(t, f, 2, wrt, h, AD_CREATE_GRAPH) == AD_OK, "%s", ad_tape_error(t));
        for (int j = 0; j < 2; j++)
            for (int i = 0; i < 3; i++)
                EXPECT(!memcmp(&ad_value(t, g[j])[i], &ad_value(t, h[j])[i], sizeof(double)),
                       "gradient %d [%d]: %.17g in place, %.17g recorded", j, i,
                       ad_value(t, g[j])[i], ad_value(t, h[j])[i]);
        ad_tape_free(t);
    }
    // s = C x + x, f = |s|^2 / 2 + sum(C x + D): the adjoint of m = C x gets the sum's adjoint
    // passed through, then reshape(adjoint of s), which shares that adjoint's memory; the
    // adjoint of s is x's too, so summing into the reshape in place would change x's gradient
    TEST_CASE("in place: a reshape of another adjoint is never summed into") {
        double x0[4] = {0.5, -1, 2, 0.25}, C[4] = {3, -2, 0.5, 4}, D[4] = {1, 1, 1, 1};
        ad_tape *t = ad_tape_new(NULL);
        ad_var x = ad_param(t, ad_vec_shape(4), x0);
        ad_var m = ad_mul(t, ad_reshape(t, x, ad_mat_shape(2, 2)), ad_const(t, ad_mat_shape(2, 2), C));
        ad_var s = ad_add(t, ad_reshape(t, m, ad_vec_shape(4)), x);
        ad_var e = ad_sum(t, ad_add(t, m, ad_const(t, ad_mat_shape(2, 2), D)));
        ad_var f = ad_add(t, ad_scale(t, ad_sqnorm(t, s), 0.5), e), g;
        EXPECT(ad_grad(t, f, 1, &x, &g, 0) == AD_OK, "%s", ad_tape_error(t));
        for (int i = 0; i < 4; i++) {
            double si = C[i] * x0[i] + x0[i], want = si * (C[i] + 1) + C[i];
            EXPECT(fabs(ad_value(t, g)[i] - want) <= 1e-14 * fabs(want), "gradient [%d]: %.17g, not %.17g",
                   i, ad_value(t, g)[i], want);
        }
        ad_tape_free(t);
    }
    TEST_CASE("sharing: x * 1 is x, and a gradient without AD_CREATE_GRAPH stays a constant") {
        ad_tape *t = ad_tape_new(NULL);
        double w0[3] = {1, 2, 3}, x0[3] = {-1, 0.5, 2}, one = 1;
        ad_var w = ad_param(t, ad_vec_shape(3), w0), x = ad_param(t, ad_vec_shape(3), x0);
        ad_var c1 = ad_const(t, ad_scalar_shape(), &one);
        EXPECT(ad_mul(t, x, c1) == x && ad_mul(t, c1, x) == x && ad_scale(t, x, 1) == x, "x * 1");
        // d/dw <w, x> = x: without AD_CREATE_GRAPH it is a constant, so nothing flows back to x
        ad_var gw, gx, f = ad_dot(t, w, x);
        EXPECT(ad_grad(t, f, 1, &w, &gw, 0) == AD_OK, "%s", ad_tape_error(t));
        EXPECT(ad_grad(t, ad_sum(t, ad_mul(t, gw, x)), 1, &x, &gx, 0) == AD_OK, "%s", ad_tape_error(t));
        for (int i = 0; i < 3; i++)
            EXPECT(ad_value(t, gx)[i] == x0[i], "entry %d: %g (the gradient was not a constant)", i,
                   ad_value(t, gx)[i]);
        // with it, the gradient is x itself and d/dx sum(x * x) = 2 x
        EXPECT(ad_grad(t, f, 1, &w, &gw, AD_CREATE_GRAPH) == AD_OK, "%s", ad_tape_error(t));
        EXPECT(ad_grad(t, ad_sum(t, ad_mul(t, gw, x)), 1, &x, &gx, 0) == AD_OK, "%s", ad_tape_error(t));
        for (int i = 0; i < 3; i++)
            EXPECT(ad_value(t, gx)[i] == 2 * x0[i], "entry %d: %g", i, ad_value(t, gx)[i]);
        ad_tape_free(t);
    }
    // ad_mul's own test for 1 x must agree with binary's: x only when the broadcast is x's shape
    TEST_CASE("sharing: 1 x is x exactly when the product has x's shape") {
        ad_tape *t = ad_tape_new(NULL);
        double v[6] = {1, -2, 3, 0.5, 7, -1}, one = 1;
        ad_var u0 = ad_const(t, ad_scalar_shape(), &one), u2 = ad_const(t, ad_mat_shape(1, 1), &one);
        ad_var s = ad_param(t, ad_scalar_shape(), v), r = ad_param(t, ad_vec_shape(3), v);
        ad_var m = ad_param(t, ad_mat_shape(2, 3), v), e = ad_param(t, ad_vec_shape(0), v);
        EXPECT(ad_mul(t, u0, s) == s && ad_mul(t, u0, r) == r && ad_mul(t, u0, m) == m &&
                   ad_mul(t, u2, m) == m, "1 x is not x");
        ad_var p = ad_mul(t, u2, r), q = ad_mul(t, u0, e); // rank 2 [1, 3]; [1] (broadcast of [0])
        ad_shape sp = ad_shape_of(t, p);
        EXPECT(p != r && sp.rank == 2 && sp.rows == 1 && sp.cols == 3 && ad_value(t, p)[2] == 3,
               "[1, 1] x [3]: rank %d [%d, %d]", sp.rank, sp.rows, sp.cols);
        EXPECT(q != e || ad_tape_status(t) != AD_OK, "1 x of an empty x");
        ad_tape_free(t);
    }
    TEST_CASE("sharing: negated adjoints come out as values, not signs") {
        // d/dx of -(x - y) - y (sub and neg in a chain): -1 for x, 0 for y, first and second order
        ad_tape *t = ad_tape_new(NULL);
        double x0[2] = {0.5, -2}, y0[2] = {3, 4};
        ad_var x = ad_param(t, ad_vec_shape(2), x0), y = ad_param(t, ad_vec_shape(2), y0), g[2];
        ad_var f = ad_sum(t, ad_sub(t, ad_neg(t, ad_sub(t, x, y)), y));
        ad_var in[2] = {x, y};
        EXPECT(ad_grad(t, f, 2, in, g, 0) == AD_OK, "%s", ad_tape_error(t));
        for (int i = 0; i < 2; i++)
            EXPECT(ad_value(t, g[0])[i] == -1 && ad_value(t, g[1])[i] == 0, "entry %d: %g %g", i,
                   ad_value(t, g[0])[i], ad_value(t, g[1])[i]);
        EXPECT(ad_grad(t, f, 1, &x, g, AD_CREATE_GRAPH) == AD_OK && ad_value(t, g[0])[1] == -1, "%s",
               ad_tape_error(t));
        ad_tape_free(t);
    }
}

void test_ad_engine(void) {
    broadcasting();
    conventions();
    derivatives();
    detach();
    accumulation();
    kernels();
    deferral();
    mark_rewind();
    reset();
    fused();
    sharing();
    errors();
}
