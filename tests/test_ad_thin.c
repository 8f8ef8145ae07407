// The thin-product kernel (autodiff/thin.c) against the reference loop and cblas: every
// variant this CPU runs (portable, AVX2, AVX-512), all four transposes, n = 1..16, odd and zero
// sizes, strides, thread counts (bitwise the same results for any; AVX-512 bitwise AVX2's), and
// through the tape: ad_matmul's forward and the gradients of a linear model (X W and X^T G) with
// the kernel on and off.
//
// Tolerance. The kernel and the reference add the same terms, in the same order p or (A^T, long
// k) in blocks of p; they differ by fused multiply-adds (one rounding instead of two) and the
// blocking, so |C - C_ref| <= k eps sum_p |a_ip b_pj|, and for random signs ~sqrt(k) eps.
// Entries must agree to 1e-13 relative to sum_p |a_ip b_pj| (k <= 5000; sqrt(k) eps ~ 1e-14).
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"
#include "../autodiff/thin.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MAXN = AD_THIN_MAX_N };

static double *rand_mat(ad_rng *g, size_t n) {
    double *x = malloc((n ? n : 1) * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = ad_rng_uniform(g) * 2 - 1;
    return x;
}

static double *work_for(int ta, int m, int n, int k) {
    size_t w = (ad_thin_work_size(ta, m, n, k) + 7) & ~(size_t)7;
    return aligned_alloc(64, (w ? w : 8) * sizeof(double));
}

// Largest |C - R| / (sum_p |op(A)_ip op(B)_pj| + tiny) over the entries of C [m, n].
static double rel_err(int ta, int tb, int m, int n, int k, const double *A, int lda,
                      const double *B, int ldb, const double *C, const double *R) {
    double worst = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int p = 0; p < k; p++)
                s += fabs((ta ? A[(size_t)p * lda + i] : A[(size_t)i * lda + p]) *
                          (tb ? B[(size_t)j * ldb + p] : B[(size_t)p * ldb + j]));
            double e = fabs(C[(size_t)i * n + j] - R[(size_t)i * n + j]) / (s + 1e-300);
            if (e > worst) worst = e;
        }
    return worst;
}

// The variants this CPU runs, portable first, into isas [3]; returns how many.
static int running_isas(ad_thin_isa isas[3]) {
    const ad_thin_isa all[3] = {AD_THIN_PORTABLE, AD_THIN_AVX2, AD_THIN_AVX512};
    int n = 0;
    for (int v = 0; v < 3; v++)
        if (ad_thin_runs(all[v])) isas[n++] = all[v];
    return n;
}

// One product with every variant and 1, 3 (all: 1, 3, 2, 7) threads against the reference, 3
// and 7 from pool (2 workers: 7 asks for more than it has), 2 made for the call; the thread
// counts must agree bitwise, and AVX-512 with AVX2 (both fuse every multiply-add in the same
// order). Returns false (after reporting) on the first mismatch.
static bool check_shape(ad_rng *g, ad_pool *pool, int ta, int tb, int m, int n, int k, int pad,
                        bool all) {
    int lda = (ta ? m : k) + pad, ldb = (tb ? k : n) + pad;
    size_t sa = (size_t)(ta ? k : m) * lda, sb = (size_t)(tb ? n : k) * ldb;
    double *A = rand_mat(g, sa), *B = rand_mat(g, sb), *work = work_for(ta, m, n, k);
    size_t sc = (size_t)m * n + 1;
    double *R = malloc(sc * sizeof *R), *C = malloc(sc * sizeof *C), *C1 = malloc(sc * sizeof *C1);
    double *C2 = malloc(sc * sizeof *C2); // AVX2's
    ad_thin_matmul_naive(ta, tb, m, n, k, A, lda, B, ldb, R);
    R[sc - 1] = 12345; // the entry past C must stay untouched
    bool ok = true;
    ad_thin_isa isas[3];
    int n_isas = running_isas(isas);
    for (int v = 0; v < n_isas && ok; v++) {
        const int threads[4] = {1, 3, 2, 7};
        for (int h = 0; h < (all ? 4 : 2) && ok; h++) {
            for (size_t i = 0; i < sc; i++) C[i] = NAN;
            C[sc - 1] = 12345;
            ad_thin_matmul(isas[v], threads[h], h % 2 ? pool : NULL, ta, tb, m, n, k, A, lda, B,
                           ldb, C, work);
            double e = rel_err(ta, tb, m, n, k, A, lda, B, ldb, C, R);
            if (!(e <= 1e-13) || C[sc - 1] != 12345) {
                EXPECT(false, "%s, %d threads, A%s B%s m %d n %d k %d pad %d: error %g%s",
                       ad_thin_name(isas[v]), threads[h], ta ? "^T" : "", tb ? "^T" : "", m, n, k,
                       pad, e, C[sc - 1] != 12345 ? ", wrote past C" : "");
                ok = false;
            }
            if (h == 0) memcpy(C1, C, sc * sizeof *C);
            if (h == 0 && isas[v] == AD_THIN_AVX2) memcpy(C2, C, sc * sizeof *C);
            if (h == 0 && ok && isas[v] == AD_THIN_AVX512 && ad_thin_runs(AD_THIN_AVX2) &&
                memcmp(C2, C, (size_t)m * n * sizeof *C) != 0) {
                EXPECT(false, "A%s B%s m %d n %d k %d: AVX-512 differs from AVX2", ta ? "^T" : "",
                       tb ? "^T" : "", m, n, k);
                ok = false;
            }
            if (h > 0 && ok && memcmp(C1, C, (size_t)m * n * sizeof *C) != 0) {
                EXPECT(false, "%s, A%s B%s m %d n %d k %d: %d threads differ from 1 thread",
                       ad_thin_name(isas[v]), ta ? "^T" : "", tb ? "^T" : "", m, n, k, threads[h]);
                ok = false;
            }
        }
    }
    free(A), free(B), free(R), free(C), free(C1), free(C2), free(work);
    return ok;
}

static void kernel_vs_reference(void) {
    TEST_CASE("thin: kernel = reference loop, all transposes, n = 1..16, odd and zero sizes") {
        ad_pool *pool = ad_pool_new(2);
        ad_rng g;
        ad_rng_seed(&g, 41);
        const int ms[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 13, 17, 31, 64, 67};
        const int ks[] = {0, 1, 2, 3, 4, 5, 6, 7, 9, 33, 130};
        int cases = 0;
        bool ok = true;
        for (int ta = 0; ta < 2 && ok; ta++)
            for (int tb = 0; tb < 2 && ok; tb++)
                for (int n = 1; n <= MAXN && ok; n++)
                    for (size_t mi = 0; mi < sizeof ms / sizeof *ms && ok; mi++)
                        for (size_t ki = 0; ki < sizeof ks / sizeof *ks && ok; ki++, cases++)
                            ok = check_shape(&g, pool, ta, tb, ms[mi], n, ks[ki], 0, false);
        EXPECT(cases == 4 * MAXN * 14 * 11 || !ok, "%d shapes", cases);
        ad_pool_free(pool);
    }
    TEST_CASE("thin: row strides larger than the rows, and larger shapes") {
        ad_pool *pool = ad_pool_new(2);
        ad_rng g;
        ad_rng_seed(&g, 42);
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                check_shape(&g, pool, ta, tb, 37, 10, 29, 3, true);
                check_shape(&g, pool, ta, tb, 301, 10, 517, 0, true);
                check_shape(&g, pool, ta, tb, 263, 16, 401, 1, true);
                check_shape(&g, pool, ta, tb, 1000, 3, 211, 0, true);
                check_shape(&g, pool, ta, tb, 40, 7, 4999, 2, true); // A^T: 16 blocks of rows of A
            }
        ad_pool_free(pool);
    }
    TEST_CASE("thin: k = 0 gives zeros; m = 0 writes nothing") {
        double A[4] = {1, 2, 3, 4}, B[4] = {1, 2, 3, 4}, C[6] = {7, 7, 7, 7, 7, 7};
        double *work = work_for(1, 3, 2, 0);
        for (int ta = 0; ta < 2; ta++) {
            ad_thin_matmul(AD_THIN_AUTO, 2, NULL, ta, 0, 3, 2, 0, A, 1, B, 2, C, work);
            for (int i = 0; i < 6; i++) EXPECT(C[i] == 0, "A%s: C[%d] = %g", ta ? "^T" : "", i, C[i]);
        }
        C[0] = 7;
        ad_thin_matmul(AD_THIN_AUTO, 2, NULL, 0, 0, 0, 2, 2, A, 2, B, 2, C, work);
        EXPECT(C[0] == 7, "m = 0 wrote C");
        free(work);
    }
}

// C = op(A) op(B) through cblas, for the larger shapes.
static void blas_product(int ta, int tb, int m, int n, int k, const double *A, const double *B,
                         double *C) {
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m,
                n, k, 1.0, A, ta ? m : k, B, tb ? k : n, 0.0, C, n);
}

static void kernel_vs_blas(void) {
    TEST_CASE("thin: kernel = cblas_dgemm on hyper-cleaning-like shapes [600, 300] x [300, 10]") {
        ad_rng g;
        ad_rng_seed(&g, 43);
        int m = 600, k = 300;
        for (int n = 1; n <= MAXN; n += 3)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++) {
                    double *A = rand_mat(&g, (size_t)m * k), *B = rand_mat(&g, (size_t)k * n);
                    double *C = malloc(sizeof(double) * m * n), *R = malloc(sizeof(double) * m * n);
                    double *work = work_for(ta, m, n, k);
                    blas_product(ta, tb, m, n, k, A, B, R);
                    ad_thin_matmul(AD_THIN_AUTO, 2, NULL, ta, tb, m, n, k, A, ta ? m : k, B,
                                   tb ? k : n, C, work);
                    double e = rel_err(ta, tb, m, n, k, A, ta ? m : k, B, tb ? k : n, C, R);
                    EXPECT(e <= 1e-13, "A%s B%s n %d: error %g", ta ? "^T" : "", tb ? "^T" : "", n, e);
                    free(A), free(B), free(C), free(R), free(work);
                }
    }
}

// ---- a linear model: mean xent(X W + b) over X [700, 120], 10 classes ----

enum { LIN_N = 700, LIN_D = 120, LIN_C = 10 };
typedef struct {
    const double *X;     // [N, D]: the caller's, or own
    double *own, *W, *V; // own: X when drawn here; W and V [D, C]
    int32_t *y;          // labels [N]
} linear_case;

// A seeded case on the caller's X [N, D], or (X NULL) on one drawn here.
static linear_case linear_make(uint64_t seed, const double *X) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    linear_case c = {X, X ? NULL : rand_mat(&g, (size_t)LIN_N * LIN_D), NULL, NULL, NULL};
    if (!X) c.X = c.own;
    c.W = rand_mat(&g, LIN_D * LIN_C), c.V = rand_mat(&g, LIN_D * LIN_C);
    c.y = malloc(sizeof(int32_t) * LIN_N);
    for (int i = 0; i < LIN_N; i++) c.y[i] = (int32_t)(ad_rng_next(&g) % LIN_C);
    return c;
}
static void linear_free(linear_case *c) { free(c->own), free(c->W), free(c->V), free(c->y); }

// out[0] = the gradient in W, out[1] = the Hessian-vector product along V, on a fresh tape with
// the thin kernel on or off; X read from the coded Xc when given, else through a view of c->X.
static void linear_derivs(const linear_case *c, const ad_coded *Xc, int kernel,
                          double out[2][LIN_D * LIN_C]) {
    double b[LIN_C] = {0};
    ad_tape *t = ad_tape_new(NULL);
    ad_tape_thin_products(t, kernel);
    ad_var W = ad_param(t, ad_mat_shape(LIN_D, LIN_C), c->W), bv = ad_param(t, ad_vec_shape(LIN_C), b);
    ad_var Z = Xc ? ad_matmul_coded(t, Xc, W, 0)
                  : ad_matmul(t, ad_const_view(t, ad_mat_shape(LIN_N, LIN_D), c->X), W, 0, 0);
    ad_var loss = ad_mean(t, ad_xent(t, ad_add(t, Z, bv), c->y)), gr, h;
    ad_grad(t, loss, 1, &W, &gr, 0);
    ad_hvp(t, loss, W, ad_const_view(t, ad_mat_shape(LIN_D, LIN_C), c->V), &h, 0);
    for (int q = 0; q < 2; q++) memcpy(out[q], ad_value(t, q ? h : gr), sizeof out[q]);
    EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
    ad_tape_free(t);
}

// max |a - b| over n entries, and in *scale max |b|.
static double max_diff(const double *a, const double *b, int n, double *scale) {
    double worst = 0;
    *scale = 0;
    for (int i = 0; i < n; i++) worst = fmax(worst, fabs(a[i] - b[i])), *scale = fmax(*scale, fabs(b[i]));
    return worst;
}

// ---- through the tape ----

// A [640, 90] and B [90, 10] (stored for op(A) op(B) either way), and the error of a product C
// against the reference loop's: the shape the tape hands to the kernel.
enum { TT_M = 640, TT_K = 90, TT_N = 10 };
typedef struct {
    double *A, *B, *R; // R: the reference product [m, n]
} tape_case;
static tape_case tape_case_make(uint64_t seed) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    tape_case c = {rand_mat(&g, (size_t)TT_M * TT_K), rand_mat(&g, (size_t)TT_K * TT_N),
                   malloc(sizeof(double) * TT_M * TT_N)};
    return c;
}
static double tape_case_err(const tape_case *c, int ta, int tb, const double *C) {
    int lda = ta ? TT_M : TT_K, ldb = tb ? TT_K : TT_N;
    ad_thin_matmul_naive(ta, tb, TT_M, TT_N, TT_K, c->A, lda, c->B, ldb, c->R);
    return C ? rel_err(ta, tb, TT_M, TT_N, TT_K, c->A, lda, c->B, ldb, C, c->R) : 1;
}
static void tape_case_free(tape_case *c) { free(c->A), free(c->B), free(c->R); }

static void through_tape(void) {
    TEST_CASE("thin: ad_matmul's forward uses the kernel on [640, 90] x [90, 10], all transposes") {
        tape_case tc = tape_case_make(44);
        int m = TT_M, k = TT_K, n = TT_N;
        ad_tape_params p = ad_tape_default_params();
        p.time_blas = 1;
        p.threads = 2;
        ad_tape *t = ad_tape_new(&p);
        char buf[64];
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                ad_var a = ad_const_view(t, ta ? ad_mat_shape(k, m) : ad_mat_shape(m, k), tc.A);
                ad_var b = ad_const_view(t, tb ? ad_mat_shape(n, k) : ad_mat_shape(k, n), tc.B);
                double s0 = ad_tape_blas_seconds(t);
                const double *c = ad_value(t, ad_matmul(t, a, b, ta, tb));
                EXPECT(c && ad_tape_blas_seconds(t) > s0, "A%s B%s: no product timed",
                       ta ? "^T" : "", tb ? "^T" : "");
                double e = tape_case_err(&tc, ta, tb, c);
                EXPECT(e <= 1e-13, "A%s B%s: error %g (%s)", ta ? "^T" : "", tb ? "^T" : "", e,
                       ad_tape_product_kernel(t, buf));
            }
        EXPECT(ad_tape_status(t) == AD_OK, "%s", ad_tape_error(t));
        ad_tape_free(t);
        tape_case_free(&tc);
    }
    TEST_CASE("thin: a linear model's gradients are the same with the kernel on and off") {
        // X W, X^T G and their second-order counterparts, [700, 120] x [120, 10]
        linear_case lc = linear_make(45, NULL);
        double out[2][2][LIN_D * LIN_C];
        for (int on = 0; on < 2; on++) linear_derivs(&lc, NULL, on, out[on]);
        for (int q = 0; q < 2; q++) {
            double scale, worst = max_diff(out[1][q], out[0][q], LIN_D * LIN_C, &scale);
            EXPECT(worst <= 1e-13 * scale, "%s: max difference %g (largest entry %g)",
                   q ? "Hessian-vector product" : "gradient", worst, scale);
        }
        linear_free(&lc);
    }
    TEST_CASE("thin: a memory cap with no room for the kernel's workspace falls back to cblas") {
        tape_case tc = tape_case_make(46);
        ad_tape_params p = ad_tape_default_params();
        ad_tape *t = ad_tape_new(&p);
        p.max_bytes = ad_tape_bytes(t) + p.chunk_bytes + 1024; // nodes and one chunk of values
        ad_tape_free(t);
        t = ad_tape_new(&p);
        ad_var a = ad_const_view(t, ad_mat_shape(TT_M, TT_K), tc.A);
        ad_var b = ad_const_view(t, ad_mat_shape(TT_K, TT_N), tc.B);
        double e = tape_case_err(&tc, 0, 0, ad_value(t, ad_matmul(t, a, b, 0, 0)));
        EXPECT(ad_tape_status(t) == AD_OK && e <= 1e-13, "%s; error %g", ad_tape_error(t), e);
        EXPECT(ad_tape_peak_bytes(t) <= p.max_bytes, "peak %zu over the cap %zu",
               ad_tape_peak_bytes(t), p.max_bytes);
        ad_tape_free(t);
        tape_case_free(&tc);
    }
    TEST_CASE("thin: the tape names the product kernel; off means cblas") {
        ad_tape_params p = ad_tape_default_params();
        p.threads = 3;
        ad_tape *t = ad_tape_new(&p);
        char buf[64];
        bool kern = ad_thin_best() != AD_THIN_PORTABLE;
        char want[64];
        snprintf(want, sizeof want, "%s kernel, 3 threads", ad_thin_name(ad_thin_best()));
        EXPECT(!kern || strcmp(ad_tape_product_kernel(t, buf), want) == 0, "%s", buf);
        EXPECT(ad_tape_thin_products(t, 0) == kern, "previous setting");
        EXPECT(strcmp(ad_tape_product_kernel(t, buf), "cblas") == 0, "%s", buf);
        ad_tape_free(t);
    }
}

// ---- coded constants: A as one-byte codes into a table of 256 doubles ----

typedef struct {
    uint8_t *codes;
    double table[256], *A; // A: the decoded matrix
} coded_mat;

// The table: pixels c / 255.0, some shifted and one a bit off (which the kernel reads entry by
// entry: 0 and 1 are on the line, so it tells them apart past the start), or with
// linear, the pixels alone (which AVX-512 decodes by arithmetic, thin.c).
static coded_mat coded_rand_table(ad_rng *g, size_t n, bool linear) {
    coded_mat c = {malloc(n ? n : 1), {0}, malloc(sizeof(double) * (n ? n : 1))};
    for (int i = 0; i < 256; i++) c.table[i] = i / 255.0 - (!linear && i % 3 == 2 ? 0.5 : 0);
    if (!linear) c.table[200] = nextafter(c.table[200], 1); // one bit off the line too
    for (size_t i = 0; i < n; i++) c.codes[i] = (uint8_t)(ad_rng_next(g) >> 56), c.A[i] = c.table[c.codes[i]];
    return c;
}
static coded_mat coded_rand(ad_rng *g, size_t n) { return coded_rand_table(g, n, false); }
static void coded_free(coded_mat *c) { free(c->codes), free(c->A); }

static void coded_products(void) {
    TEST_CASE("thin: codes give the same bits as the decoded doubles, every variant and thread count") {
        ad_pool *pool = ad_pool_new(2);
        ad_rng g;
        ad_rng_seed(&g, 47);
        const int shapes[][3] = {{1, 1, 1}, {5, 3, 7}, {37, 10, 29}, {301, 10, 517}, {263, 16, 401},
                                 {40, 7, 4999}, {1000, 12, 211}, {8, 4, 0}};
        ad_thin_isa isas[3];
        int n_isas = running_isas(isas);
        for (size_t s = 0; s < 2 * sizeof shapes / sizeof *shapes; s++)
            for (int ta = 0; ta < 2; ta++) {
                size_t sh = s % (sizeof shapes / sizeof *shapes); // then again, on a linear table
                int m = shapes[sh][0], n = shapes[sh][1], k = shapes[sh][2], lda = ta ? m : k;
                bool linear = sh != s;
                coded_mat c = coded_rand_table(&g, (size_t)m * k, linear);
                double *B = rand_mat(&g, (size_t)k * n), *work = work_for(1, m, n, k);
                double *C = malloc(sizeof(double) * m * n), *R = malloc(sizeof(double) * m * n);
                uint8_t *ct = malloc((size_t)m * k + 1); // without ta: the codes transposed [k, m]
                for (int i = 0; i < m; i++)
                    for (int p = 0; p < k; p++) ct[(size_t)p * m + i] = c.codes[(size_t)i * k + p];
                for (int v = 0; v < n_isas; v++)
                    for (int th = 1; th <= 3; th += 2) {
                        ad_thin_matmul(isas[v], th, NULL, ta, 0, m, n, k, c.A, lda, B, n, R, work);
                        ad_thin_matmul_coded(isas[v], th, pool, ta, m, n, k, c.codes, c.table, lda, B,
                                             n, C, work);
                        EXPECT(memcmp(C, R, sizeof(double) * m * n) == 0,
                               "%s, %d threads, A%s m %d n %d k %d, %s table", ad_thin_name(isas[v]),
                               th, ta ? "^T" : "", m, n, k, linear ? "linear" : "shifted");
                        if (ta) continue;
                        memset(C, 0, sizeof(double) * m * n);
                        ad_thin_matmul_coded_t(isas[v], th, pool, m, n, k, ct, c.table, m, B, n, C,
                                               work);
                        EXPECT(memcmp(C, R, sizeof(double) * m * n) == 0,
                               "from the transposed codes: %s, %d threads, m %d n %d k %d, %s table",
                               ad_thin_name(isas[v]), th, m, n, k, linear ? "linear" : "shifted");
                    }
                coded_free(&c);
                free(B), free(work), free(C), free(R), free(ct);
            }
        ad_pool_free(pool);
    }
    TEST_CASE("thin: a linear table is found where fma(c, hi, c lo) gives every entry, else refused") {
        double tab[256], hi = 0, lo = 0;
        for (int c = 0; c < 256; c++) tab[c] = c / 255.0;
        bool lin = ad_thin_linear_table(tab, &hi, &lo);
        bool each = lin;
        for (int c = 0; c < 256 && lin; c++) each &= fma((double)c, hi, (double)c * lo) == tab[c];
        EXPECT(lin && each, "c / 255: %s", lin ? "an entry not decoded exactly" : "refused");
        tab[77] = nextafter(tab[77], 1.0); // one entry one ulp off
        EXPECT(!ad_thin_linear_table(tab, &hi, &lo), "c / 255 with entry 77 one ulp up: taken");
        tab[77] = 77 / 255.0, tab[0] = -0.0;
        EXPECT(!ad_thin_linear_table(tab, &hi, &lo), "c / 255 with entry 0 = -0: taken");
        for (int c = 0; c < 256; c++) tab[c] = c / 255.0 + 0.5;
        EXPECT(!ad_thin_linear_table(tab, &hi, &lo), "c / 255 + 1/2: taken");
    }
    TEST_CASE("thin: ad_matmul_coded = ad_matmul on the decoded view: kernel (bits), cblas, wide") {
        // n = 10 on the kernel: the same bits. Off it (kernel off, or n = 20): with the doubles
        // given (X.values), the very cblas call ad_matmul makes, so the same bits too; without,
        // cblas on decoded blocks of rows, the same terms summed in another order.
        ad_rng g;
        ad_rng_seed(&g, 48);
        int m = 700, k = 90;
        coded_mat c = coded_rand(&g, (size_t)m * k);
        for (int vals = 0; vals < 2; vals++)
            for (int n = 10; n <= 20; n += 10)
                for (int on = 0; on < 2; on++)
                    for (int ta = 0; ta < 2; ta++) {
                        ad_coded X = {m, k, c.codes, c.table, vals ? c.A : NULL, NULL, NULL};
                        int rows = ta ? k : m, kk = ta ? m : k;
                        double *B = rand_mat(&g, (size_t)kk * n);
                        ad_tape *t = ad_tape_new(NULL);
                        ad_tape_thin_products(t, on);
                        ad_var b = ad_const_view(t, ad_mat_shape(kk, n), B);
                        ad_var A = ad_const_view(t, ad_mat_shape(m, k), c.A);
                        const double *want = ad_value(t, ad_matmul(t, A, b, ta, 0));
                        const double *got = ad_value(t, ad_matmul_coded(t, &X, b, ta));
                        double e = rel_err(ta, 0, rows, n, kk, c.A, k, B, n, got, want);
                        bool kern = on && n <= MAXN && ad_thin_best() != AD_THIN_PORTABLE;
                        bool bits = kern || vals;
                        EXPECT(ad_tape_status(t) == AD_OK &&
                                   (bits ? !memcmp(got, want, sizeof(double) * rows * n) : e <= 1e-13),
                               "values %s, n %d, kernel %s, X%s: error %g%s", vals ? "given" : "none",
                               n, on ? "on" : "off", ta ? "^T" : "", e, bits ? " (bits expected)" : "");
                        ad_tape_free(t);
                        free(B);
                    }
        coded_free(&c);
    }
    TEST_CASE("thin: ad_matmul_coded with the codes transposed given: the same bits") {
        ad_rng g;
        ad_rng_seed(&g, 50);
        int m = 613, k = 785, n = 10; // k: 49 strips of 16 and one column
        coded_mat c = coded_rand_table(&g, (size_t)m * k, true);
        uint8_t *ct = malloc((size_t)m * k);
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) ct[(size_t)p * m + i] = c.codes[(size_t)i * k + p];
        ad_coded X = {m, k, c.codes, c.table, NULL, NULL, NULL}, Xt = {m, k, c.codes, c.table, NULL, ct, NULL};
        double *B = rand_mat(&g, (size_t)k * n), *G = rand_mat(&g, (size_t)m * n);
        for (int on = 0; on < 2; on++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_tape_thin_products(t, on);
            ad_var b = ad_const_view(t, ad_mat_shape(k, n), B), gv = ad_const_view(t, ad_mat_shape(m, n), G);
            const double *want = ad_value(t, ad_matmul_coded(t, &X, b, 0));
            const double *got = ad_value(t, ad_matmul_coded(t, &Xt, b, 0));
            const double *want_t = ad_value(t, ad_matmul_coded(t, &X, gv, 1));
            const double *got_t = ad_value(t, ad_matmul_coded(t, &Xt, gv, 1));
            EXPECT(ad_tape_status(t) == AD_OK && !memcmp(got, want, sizeof(double) * m * n) &&
                       !memcmp(got_t, want_t, sizeof(double) * k * n),
                   "kernel %s: %s", on ? "on" : "off", ad_tape_error(t));
            ad_tape_free(t);
        }
        coded_free(&c);
        free(ct), free(B), free(G);
    }
    TEST_CASE("thin: a linear model on coded data: gradient and HVP as on the decoded view") {
        coded_mat cm;
        ad_rng g;
        ad_rng_seed(&g, 49);
        cm = coded_rand(&g, (size_t)LIN_N * LIN_D);
        ad_coded X = {LIN_N, LIN_D, cm.codes, cm.table, NULL, NULL, NULL};
        linear_case lc = linear_make(50, cm.A);
        double out[2][2][LIN_D * LIN_C];
        linear_derivs(&lc, NULL, 1, out[0]);
        linear_derivs(&lc, &X, 1, out[1]);
        bool bits = ad_thin_best() != AD_THIN_PORTABLE;
        for (int q = 0; q < 2; q++) {
            double scale, worst = max_diff(out[1][q], out[0][q], LIN_D * LIN_C, &scale);
            EXPECT(bits ? worst == 0 : worst <= 1e-13 * scale, "%s: max difference %g (largest %g)",
                   q ? "Hessian-vector product" : "gradient", worst, scale);
        }
        linear_free(&lc);
        coded_free(&cm);
    }
    TEST_CASE("thin: ad_matmul_coded's errors: no matrix, no table, negative size, shapes") {
        uint8_t codes[6] = {0};
        double table[256] = {0}, B[6] = {0};
        ad_coded good = {2, 3, codes, table, NULL, NULL, NULL};
        ad_coded bad[3] = {{2, 3, codes, NULL, NULL, NULL, NULL}, {2, -3, codes, table, NULL, NULL, NULL}, {2, 3, NULL, table, NULL, NULL, NULL}};
        const char *want[3] = {"no codes or no table", "negative size", "no codes or no table"};
        for (int i = 0; i < 4; i++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_var b = ad_const(t, ad_mat_shape(3, 2), B);
            ad_var r = ad_matmul_coded(t, i < 3 ? &bad[i] : NULL, b, 0);
            EXPECT(!r && ad_tape_status(t) == AD_EARG && strstr(ad_tape_error(t), i < 3 ? want[i] : "no matrix"),
                   "case %d: %s", i, ad_tape_error(t));
            ad_tape_free(t);
        }
        ad_tape *t = ad_tape_new(NULL);
        ad_var b = ad_const(t, ad_mat_shape(3, 2), B);
        EXPECT(!ad_matmul_coded(t, &good, b, 1) && ad_tape_status(t) == AD_ESHAPE &&
                   strstr(ad_tape_error(t), "[2, 3]^T and [3, 2]"), "%s", ad_tape_error(t));
        ad_tape_free(t);
    }
}

void test_ad_thin(void) {
    kernel_vs_reference();
    kernel_vs_blas();
    through_tape();
    coded_products();
}
