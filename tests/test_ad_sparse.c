// The products that skip a coded constant's zeros (autodiff/sparse.c) against the ordered fma
// loop over every entry (ad_sparse_matmul_naive): bitwise, for X B and X^T B, every variant this
// CPU runs (portable, AVX-512), 1, 2 and 3 threads, over a table of shapes (n = 1, 7, 8, 300, 301
// columns; k across several blocks of B's rows and not a multiple of one; more rows than a
// chunk, for rows alone and in groups; the threads on pieces of rows and of columns; empty rows
// and columns; all zeros; no zeros; zeros coded as +0.0 and as -0.0); with an
// Inf or a NaN in B, NaN exactly where the dense loop has it and the other entries bitwise. The
// strips (autodiff/strips.c, at most 16 columns) on the same table of shapes, bitwise, with the
// table gathered and with a linear one decoded by arithmetic; with an Inf or NaN in B they leave
// the product to the thin kernel. Through the tape: ad_matmul_coded with X->nz against the same X
// without it (cblas on decoded rows) to rounding, its finite-difference gradient check; on the
// strips, the product's bits and softmax_coded's (ad_softmax of that product); and the errors.
//
// Tolerance (with against without nz): both sum the same k products, one in order with fused
// multiply-adds, the other as cblas does, so |a - b| <= 2 k eps sum_q |x_iq b_qj|; k <= 130
// here, so entries must agree to 1e-13 relative to that sum.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/sparse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int rows, cols, n; // X [rows, cols], B [k, n] with k = rows (X^T B) or cols (X B)
    double zeros;      // fraction of X's entries that are 0 (by chance)
    int empty;         // 1: rows r % 5 == 3 and columns c % 7 == 2 all zero; 2: zeros drawn for
                       // 4 x 4 blocks, then 3% of entries flipped (rows and columns alike four
                       // by four, as neighbouring pixels: the AVX-512 kernel takes them in
                       // groups); 3: as 2, but rows alike when equal modulo 8 (groups of rows
                       // that are not neighbours)
} sp_case;

static const sp_case cases[] = {
    {40, 50, 1, 0.5, 0},    {40, 50, 7, 0.5, 1},    {33, 97, 8, 0.5, 0},    {60, 130, 300, 0.5, 1},
    {70, 49, 301, 0.6, 0},  {600, 20, 9, 0.5, 1},   {25, 30, 64, 1.0, 0},   {25, 30, 65, 0.0, 0},
    {1, 1, 1, 0.5, 0},      {3, 200, 17, 0.9, 1},   {130, 3, 130, 0.3, 0},  {0, 5, 4, 0.5, 0},
    {61, 97, 300, 0.5, 2},  {600, 21, 9, 0.5, 2},   {7, 130, 70, 0.4, 2},   {61, 97, 300, 0.5, 3},
    {600, 21, 9, 0.5, 3},   {45, 301, 49, 0.5, 3},   {1100, 30, 20, 0.5, 2},
};

// X's codes: 0 is +0.0, 1 is -0.0, the others signed values of several scales.
static void make_table(double tab[256]) {
    tab[0] = 0.0, tab[1] = -0.0;
    for (int c = 2; c < 256; c++) tab[c] = (c % 2 ? -1 : 1) * (c / 255.0) * pow(2.0, c % 5 - 2);
}

static uint8_t *make_codes(ad_rng *g, const sp_case *c) {
    uint8_t *codes = malloc((size_t)c->rows * c->cols + 1);
    int bc = c->cols / 4 + 1;
    bool *blk = malloc(sizeof(bool) * (size_t)(c->rows / 4 + 1) * bc);
    for (int i = 0; i < (c->rows / 4 + 1) * bc; i++) blk[i] = ad_rng_uniform(g) < c->zeros;
    for (int r = 0; r < c->rows; r++)
        for (int q = 0; q < c->cols; q++) {
            int br = c->empty == 3 ? (r % 8) % (c->rows / 4 + 1) : r / 4;
            bool zero = c->empty >= 2 ? blk[br * bc + q / 4] != (ad_rng_uniform(g) < 0.03)
                                      : ad_rng_uniform(g) < c->zeros ||
                                            (c->empty && (r % 5 == 3 || q % 7 == 2));
            uint8_t code = (uint8_t)(2 + ad_rng_next(g) % 254);
            codes[(size_t)r * c->cols + q] = zero ? (uint8_t)(ad_rng_next(g) & 1) : code;
        }
    free(blk);
    return codes;
}

static double *rand_b(ad_rng *g, size_t n) {
    double *b = malloc((n ? n : 1) * sizeof *b);
    for (size_t i = 0; i < n; i++) b[i] = ad_rng_normal(g);
    return b;
}

// Whether C [m, n] is R's: bitwise, or (nan_ok) NaN at the same entries and bitwise elsewhere.
static bool same(const double *C, const double *R, size_t size, bool nan_ok) {
    for (size_t i = 0; i < size; i++) {
        if (nan_ok && (isnan(C[i]) || isnan(R[i]))) {
            if (isnan(C[i]) != isnan(R[i])) return false;
        } else if (memcmp(C + i, R + i, sizeof(double))) {
            return false;
        }
    }
    return true;
}

// Every variant and 1, 2, 3 threads against the reference, for X B and X^T B; B with a pad in
// its row stride. nonfinite: 1, an Inf, a -Inf and a NaN put in B; 2, a NaN alone at B's last
// entry (the check for them must find it in the last, partial, group of a row's columns).
static void check_case(ad_rng *g, const sp_case *c, const double tab[256], int nonfinite) {
    uint8_t *codes = make_codes(g, c);
    ad_coded X = {c->rows, c->cols, codes, tab, NULL, NULL, NULL};
    char err[128] = "";
    ad_coded_nz *nz = ad_coded_nz_make(&X, err, sizeof err);
    EXPECT(nz, "nz_make: %s", err);
    X.nz = nz;
    int64_t want = 0;
    for (size_t i = 0; i < (size_t)c->rows * c->cols; i++) want += tab[codes[i]] != 0;
    EXPECT(ad_coded_nz_count(nz) == want, "%lld nonzeros counted, %lld made",
           (long long)want, (long long)ad_coded_nz_count(nz));
    // the grouped rows are what the blocky cases are for
    EXPECT(!nz || c->empty < 2 || (ad_sparse_groups(nz, 0) && ad_sparse_groups(nz, 1)),
           "[%d, %d]: rows in groups %d, columns %d", c->rows, c->cols, nz && ad_sparse_groups(nz, 0),
           nz && ad_sparse_groups(nz, 1));
    EXPECT(!nz || !ad_coded_nz_add_strips(nz, err, sizeof err), "add_strips: %s", err);
    const ad_thin_isa isas[2] = {AD_THIN_PORTABLE, AD_THIN_AVX512};
    for (int tx = 0; tx < 2 && nz; tx++) {
        int m = tx ? c->cols : c->rows, k = tx ? c->rows : c->cols, ldb = c->n + 3;
        double *B = rand_b(g, (size_t)k * ldb);
        if (nonfinite == 1 && k > 2) {
            B[(size_t)(k / 2) * ldb + c->n / 2] = INFINITY, B[1] = -INFINITY;
            B[(size_t)(k - 1) * ldb + c->n - 1] = NAN;
        }
        if (nonfinite == 2 && k > 0) B[(size_t)(k - 1) * ldb + c->n - 1] = NAN;
        size_t size = (size_t)m * c->n;
        double *R = malloc((size + 1) * sizeof *R), *C = malloc((size + 1) * sizeof *C);
        ad_sparse_matmul_naive(&X, tx, c->n, B, ldb, R);
        for (int v = 0; v < 2; v++) {
            if (!ad_thin_runs(isas[v])) continue;
            for (int th = 1; th <= 3; th++) {
                for (size_t i = 0; i <= size; i++) C[i] = 12345;
                ad_sparse_matmul(isas[v], th, NULL, &X, tx, c->n, B, ldb, C);
                EXPECT(same(C, R, size, nonfinite) && C[size] == 12345,
                       "[%d, %d]%s x [%d, %d]%s, %s, %d threads: not the ordered loop's bits", c->rows,
                       c->cols, tx ? "^T" : "", k, c->n, nonfinite ? " with Inf and NaN" : "",
                       ad_thin_name(isas[v]), th);
            }
        }
        // the strips (at most 16 columns), on each variant the CPU runs: the same bits; with an
        // Inf or NaN in B they leave the product to the thin kernel, writing nothing
        const ad_thin_isa strip_isas[3] = {AD_THIN_PORTABLE, AD_THIN_AVX2, AD_THIN_AVX512};
        for (int v = 0; v < 3 && c->n <= 16; v++) {
            if (!ad_thin_runs(strip_isas[v])) continue;
            for (int th = 1; th <= 3; th++) {
                for (size_t i = 0; i <= size; i++) C[i] = 12345;
                bool took = ad_strips_matmul(strip_isas[v], th, NULL, &X, tx, c->n, B, ldb, C, NULL);
                bool finite = true; // B as filled: small k gets fewer Infs and NaNs, or none
                for (int q = 0; q < k; q++)
                    for (int j = 0; j < c->n; j++) finite &= isfinite(B[(size_t)q * ldb + j]) != 0;
                EXPECT(took == finite && (took ? same(C, R, size, false) && C[size] == 12345 : C[0] == 12345),
                       "[%d, %d]%s x [%d, %d]%s, strips, %s, %d threads: %s", c->rows, c->cols,
                       tx ? "^T" : "", k, c->n, nonfinite ? " with Inf and NaN" : "",
                       ad_thin_name(strip_isas[v]), th,
                       took != finite ? "taken or not as it should not" : "not the ordered loop's bits");
            }
        }
        free(B), free(R), free(C);
    }
    ad_coded_nz_free(nz);
    free(codes);
}

static void kernel_cases(void) {
    TEST_CASE("sparse products: X B and X^T B = the ordered fma loop bitwise, any variant and thread count") {
        ad_rng g;
        ad_rng_seed(&g, 501);
        double tab[256];
        make_table(tab);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&g, &cases[i], tab, 0);
    }
    TEST_CASE("sparse products: strips on a linear table (c / 255, decoded by arithmetic) = the ordered loop") {
        ad_rng g;
        ad_rng_seed(&g, 504);
        double tab[256];
        for (int c = 0; c < 256; c++) tab[c] = c / 255.0;
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
            if (cases[i].n <= 16) check_case(&g, &cases[i], tab, 0);
    }
    TEST_CASE("sparse products: an Inf or NaN in B gives NaN where the dense loop does, the rest bitwise") {
        ad_rng g;
        ad_rng_seed(&g, 502);
        double tab[256];
        make_table(tab);
        for (int nf = 1; nf <= 2; nf++)
            for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) check_case(&g, &cases[i], tab, nf);
    }
}

// ---- through the tape ----

typedef struct {
    const ad_coded *X;
    int tx;
} tape_ctx;

// sum(tanh(op(X) B)): its gradient op(X)^T (1 - tanh^2) is the transposed product, also wide;
// the terms are bounded by 1, so that f's rounding (~1e-16 |f|) stays small against h (a sum of
// squares, |f| ~ 1e5, gives central differences ~1e-6 off)
static ad_var tanh_sum(ad_tape *t, const ad_var *in, void *u) {
    const tape_ctx *c = u;
    return ad_sum(t, ad_tanh(t, ad_matmul_coded(t, c->X, in[0], c->tx)));
}

static void tape_cases(void) {
    TEST_CASE("sparse products: ad_matmul_coded with nz = without to rounding, FD gradient, wide and thin") {
        ad_rng g;
        ad_rng_seed(&g, 503);
        double tab[256];
        make_table(tab);
        const sp_case tc[3] = {{70, 45, 40, 0.5, 1}, {50, 30, 5, 0.5, 0}, {120, 130, 17, 0.6, 0}};
        for (int i = 0; i < 3; i++) {
            uint8_t *codes = make_codes(&g, &tc[i]);
            ad_coded X = {tc[i].rows, tc[i].cols, codes, tab, NULL, NULL, NULL}, Xn = X;
            ad_coded_nz *nz = ad_coded_nz_make(&X, NULL, 0);
            Xn.nz = nz;
            for (int tx = 0; tx < 2 && nz; tx++) {
                int m = tx ? X.cols : X.rows, k = tx ? X.rows : X.cols, n = tc[i].n;
                double *B = rand_b(&g, (size_t)k * n);
                ad_tape *t = ad_tape_new(NULL);
                ad_var b = ad_const(t, ad_mat_shape(k, n), B);
                const double *with = ad_value(t, ad_matmul_coded(t, &Xn, b, tx));
                const double *without = ad_value(t, ad_matmul_coded(t, &X, b, tx));
                double worst = 0;
                for (int r = 0; r < m; r++)
                    for (int j = 0; j < n; j++) {
                        double s = 0;
                        for (int q = 0; q < k; q++)
                            s += fabs(tab[codes[tx ? (size_t)q * X.cols + r : (size_t)r * X.cols + q]] *
                                      B[(size_t)q * n + j]);
                        worst = fmax(worst, fabs(with[r * n + j] - without[r * n + j]) / (s + 1e-300));
                    }
                EXPECT(ad_tape_status(t) == AD_OK && worst <= 1e-13, "[%d, %d]%s x [%d, %d]: %s, worst %g",
                       X.rows, X.cols, tx ? "^T" : "", k, n, ad_tape_error(t), worst);
                ad_tape_free(t);
                tape_ctx ctx = {&Xn, tx};
                ad_shape sh = ad_mat_shape(k, n);
                const double *pt[1] = {B};
                ad_check_params cp = ad_check_default_params();
                // central differences round f (|f| <= m n ~ 2000 here) to ~eps |f| / h ~ 5e-8
                // absolute on every entry: the small entries need that much atol
                cp.atol = 1e-7;
                ad_check_report rep = ad_check_grad(tanh_sum, &ctx, 1, &sh, pt, &cp);
                EXPECT(rep.status == AD_OK && rep.pass, "[%d, %d]%s: FD gradient: %s", X.rows, X.cols,
                       tx ? "^T" : "", rep.msg);
                free(B);
            }
            ad_coded_nz_free(nz);
            free(codes);
        }
    }
}

// Through the tape on the strips: ad_matmul_coded is the ordered loop's bits, and ad_softmax_coded
// (whose softmax runs on each row as the kernel finishes it) is ad_softmax of that product, bit for
// bit; both with a thread count of 1 and 3.
static void strips_tape_cases(void) {
    TEST_CASE("sparse products: strips through the tape, the product's bits and softmax_coded's") {
        ad_rng g;
        ad_rng_seed(&g, 505);
        double tab[256];
        for (int c = 0; c < 256; c++) tab[c] = c / 255.0;
        const sp_case c = {300, 45, 10, 0.5, 2};
        uint8_t *codes = make_codes(&g, &c);
        ad_coded X = {c.rows, c.cols, codes, tab, NULL, NULL, NULL};
        ad_coded_nz *nz = ad_coded_nz_make(&X, NULL, 0);
        EXPECT(nz && !ad_coded_nz_add_strips(nz, NULL, 0), "nz and strips made");
        X.nz = nz;
        double *W = rand_b(&g, (size_t)c.cols * c.n), *R = malloc(sizeof(double) * c.rows * c.n);
        ad_sparse_matmul_naive(&X, 0, c.n, W, c.n, R);
        for (int th = 1; th <= 3 && nz; th += 2) {
            ad_tape_params tp = ad_tape_default_params();
            tp.threads = th;
            ad_tape *t = ad_tape_new(&tp);
            ad_var w = ad_const(t, ad_mat_shape(c.cols, c.n), W);
            ad_var prod = ad_matmul_coded(t, &X, w, 0);
            const double *p = ad_value(t, prod), *sm = ad_value(t, ad_softmax_coded(t, &X, w));
            const double *ref = ad_value(t, ad_softmax(t, prod));
            EXPECT(p && sm && ref && same(p, R, (size_t)c.rows * c.n, false) &&
                       same(sm, ref, (size_t)c.rows * c.n, false),
                   "%d threads: %s", th, p && sm && ref ? "not the same bits" : ad_tape_error(t));
            ad_tape_free(t);
        }
        free(W), free(R), free(codes);
        ad_coded_nz_free(nz);
    }
}

// ad_sparse_all_finite, which decides whether a product may skip the zeros: an Inf or a NaN at
// any place (in the vectors of eight and in the tail, in any row of a strided B) is found; the
// largest finite values, -0 and the subnormals are finite.
static void finite_cases(void) {
    TEST_CASE("sparse products: the Inf/NaN check finds one at every place, contiguous and strided") {
        const double bad[3] = {INFINITY, -INFINITY, NAN};
        const double good[4] = {-0.0, 1.7976931348623157e308, 4.9e-324, -2.5}; // largest, subnormal
        double B[3 * (21 + 2)]; // 3 rows of at most 21, at most 2 apart
        for (int len = 1; len <= 21; len++)
            for (int ld = len; ld <= len + 2; ld += 2) { // contiguous, and rows ld apart
                for (int i = 0; i < 3 * (21 + 2); i++) B[i] = good[i % 4];
                EXPECT(ad_sparse_all_finite(B, ld, len, 0, 3) && ad_sparse_all_finite(B, ld, len, 2, 2),
                       "finite: %d wide, stride %d", len, ld);
                for (int at = 0; at < 3 * len; at++)
                    for (int k = 0; k < 3; k++) {
                        double *p = B + (at / len) * ld + at % len, keep = *p;
                        *p = bad[k];
                        EXPECT(!ad_sparse_all_finite(B, ld, len, 0, 3),
                               "%g not found at %d (%d wide, stride %d)", bad[k], at, len, ld);
                        *p = keep;
                    }
            }
    }
}

static void error_cases(void) {
    TEST_CASE("sparse products: bad arguments are one-line errors, nothing aborts") {
        static const uint8_t codes[6] = {0, 3, 0, 9, 0, 2}, other[6] = {0};
        double tab[256];
        make_table(tab);
        char err[128] = "";
        ad_coded X = {2, 3, codes, tab, NULL, NULL, NULL}, bad[3] = {X, X, X};
        bad[0].codes = NULL, bad[1].rows = -2, bad[2].table = NULL;
        const char *want[3] = {"no codes or no table", "negative size", "no codes or no table"};
        for (int i = 0; i < 3; i++) {
            err[0] = 0;
            EXPECT(!ad_coded_nz_make(&bad[i], err, sizeof err) && strstr(err, want[i]) && !strchr(err, '\n'),
                   "nz_make on a bad matrix %d: '%s'", i, err);
        }
        EXPECT(!ad_coded_nz_make(NULL, err, sizeof err) && strstr(err, "no matrix"), "nz_make(NULL): '%s'", err);
        err[0] = 0;
        EXPECT(ad_coded_nz_add_strips(NULL, err, sizeof err) == -1 && strstr(err, "no nonzeros") && !strchr(err, '\n'),
               "add_strips(NULL): '%s'", err);
        ad_coded_nz_free(NULL);
        ad_coded_nz *nz = ad_coded_nz_make(&X, err, sizeof err);
        EXPECT(nz && ad_coded_nz_count(nz) == 3 && ad_coded_nz_count(NULL) == 0, "nz_make: %s", err);
        // an nz made for another matrix: other codes, another size, another table
        ad_coded wrong[3] = {{2, 3, other, tab, NULL, NULL, nz}, {3, 2, codes, tab, NULL, NULL, nz},
                             {2, 3, codes, tab + 1, NULL, NULL, nz}};
        double b[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
        for (int i = 0; i < 3 && nz; i++) {
            ad_tape *t = ad_tape_new(NULL);
            ad_var B = ad_const(t, ad_mat_shape(3, 3), b);
            ad_var r = i < 2 ? ad_matmul_coded(t, &wrong[i], i == 1 ? ad_const(t, ad_mat_shape(2, 3), b) : B, 0)
                             : ad_softmax_coded(t, &wrong[i], B);
            const char *e = ad_tape_error(t);
            EXPECT(!r && ad_tape_status(t) == AD_EARG && strstr(e, "made for another matrix") && !strchr(e, '\n'),
                   "wrong nz %d: '%s'", i, e);
            ad_tape_free(t);
        }
        ad_coded_nz_free(nz);
    }
}

void test_ad_sparse(void) {
    kernel_cases();
    tape_cases();
    strips_tape_cases();
    finite_cases();
    error_cases();
}
