// Products with a small inner dimension (smallk.h): C [m, n] = op(A) [m, k] op(B) [k, n], k <= 16,
// C wide, as the MLP's G W2^T [5000, 10] x [10, 300] that each LL step's reverse sweep makes. On
// cblas such a product is a pass that zeroes C and one that adds into it (C is 12 MB: two writes
// and a read for one write's worth of arithmetic), and it wakes OpenBLAS's threads, which then
// spin beside the tape's pool on a 2-core host. Here each row of C is summed in registers from
// op(B) packed once (k rows, 24 KB, in L1) and written once, rows shared out on the tape's pool.
//
// One loop body, built three times: for AVX-512 and for AVX2 (function-level targets, chosen at
// run time as in thin.c; the compiler vectorizes the loop over a panel's 64 columns, each lane a
// chain of fused multiply-adds in order p) and portable (fma() from libm). The three give the
// same bits: each entry is s = fma(a_ip, b_pj, s) from s = +0.0, p ascending.
#include "smallk.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

enum { PANEL = 64, ROWS_PER_PIECE = 32 };

typedef struct {
    int ta, m, n, k, lda, np; // np: op(B)'s packed row length, n rounded up to PANEL
    const double *A, *Bp;
    double *C;
    atomic_int next; // the next piece of ROWS_PER_PIECE rows
} sk_job;

size_t ad_smallk_work_size(int n, int k) {
    size_t np = ((size_t)(n > 0 ? n : 1) + PANEL - 1) / PANEL * PANEL;
    return np * (size_t)(k > 0 ? k : 1);
}

// Rows [lo, hi) of C: for each panel of 64 columns, 64 sums in order p, stored once.
static inline __attribute__((always_inline)) void sk_rows(const sk_job *j, int lo, int hi) {
    for (int i = lo; i < hi; i++) {
        double a[AD_SMALLK_MAX_K];
        for (int p = 0; p < j->k; p++)
            a[p] = j->ta ? j->A[(size_t)p * j->lda + i] : j->A[(size_t)i * j->lda + p];
        double *c = j->C + (size_t)i * j->n;
        for (int j0 = 0; j0 < j->n; j0 += PANEL) {
            double acc[PANEL];
            for (int q = 0; q < PANEL; q++) acc[q] = 0.0;
            const double *b = j->Bp + j0;
            for (int p = 0; p < j->k; p++)
                for (int q = 0; q < PANEL; q++) acc[q] = fma(a[p], b[(size_t)p * j->np + q], acc[q]);
            if (j->n - j0 >= PANEL) // stored from the registers
                for (int q = 0; q < PANEL; q++) c[j0 + q] = acc[q];
            else
                memcpy(c + j0, acc, (size_t)(j->n - j0) * sizeof(double));
        }
    }
}

static void rows_portable(const sk_job *j, int lo, int hi) { sk_rows(j, lo, hi); }

#if defined(__GNUC__) && defined(__x86_64__)
#define SK_X86 1
static __attribute__((target("avx512f,avx2,fma"))) void rows_x512(const sk_job *j, int lo, int hi) {
    sk_rows(j, lo, hi);
}
static __attribute__((target("avx2,fma"))) void rows_avx2(const sk_job *j, int lo, int hi) {
    sk_rows(j, lo, hi);
}
#else
#define SK_X86 0
#endif

typedef struct {
    sk_job *job;
    void (*rows)(const sk_job *j, int lo, int hi);
} sk_run;

static void run_pieces(void *arg) {
    sk_run *r = arg;
    sk_job *j = r->job;
    for (int c; (c = atomic_fetch_add(&j->next, 1)) * ROWS_PER_PIECE < j->m;) {
        int lo = c * ROWS_PER_PIECE, hi = lo + ROWS_PER_PIECE < j->m ? lo + ROWS_PER_PIECE : j->m;
        r->rows(j, lo, hi);
    }
}

void ad_smallk_matmul(ad_thin_isa isa, int threads, ad_pool *pool, int ta, int tb, int m, int n,
                      int k, const double *A, int lda, const double *B, int ldb, double *C,
                      double *work) {
    if (m <= 0 || n <= 0 || k <= 0 || k > AD_SMALLK_MAX_K) return;
    sk_job job = {.ta = ta != 0, .m = m, .n = n, .k = k, .lda = lda,
                  .np = (int)(ad_smallk_work_size(n, k) / (size_t)k), .A = A, .Bp = work, .C = C};
    for (int p = 0; p < k; p++) { // op(B) [k, n] into rows of np, zero past n
        double *row = work + (size_t)p * job.np;
        for (int q = 0; q < n; q++) row[q] = tb ? B[(size_t)q * ldb + p] : B[(size_t)p * ldb + q];
        for (int q = n; q < job.np; q++) row[q] = 0.0;
    }
    atomic_init(&job.next, 0);
    if (isa == AD_THIN_AUTO) isa = ad_thin_best();
    if (!ad_thin_runs(isa)) isa = AD_THIN_PORTABLE;
    sk_run run = {&job, rows_portable};
#if SK_X86
    if (isa == AD_THIN_AVX512) run.rows = rows_x512;
    if (isa == AD_THIN_AVX2) run.rows = rows_avx2;
#endif
    int pieces = (m + ROWS_PER_PIECE - 1) / ROWS_PER_PIECE;
    ad_pool_run(pool, threads < 1 ? 1 : threads > pieces ? pieces : threads, run_pieces, &run);
}
