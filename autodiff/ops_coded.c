// Products with a coded constant: op(X) B where X [rows, cols] is stored as one byte per entry
// naming one of 256 doubles (ad_coded). Images come as 8-bit pixels; kept so, the 5000 x 784
// training matrix of hyper-cleaning is 3.9 MB instead of 31 MB, which stays in the last-level
// cache, and the products that stream it (X W forward, X^T G in the reverse rule, twice more
// when a gradient is differentiated again) stop waiting on memory. The values are the table's
// doubles exactly, so nothing about the numbers changes: on the thin kernel the result has the
// same bits as the product with the decoded matrix.
#include "internal.h"
#include "sparse.h"
#include "thin.h"

#include <cblas.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// ---- matmul_coded: op(X) [m, k] B [k, n] -> [m, n] ----

// What is wrong with X as an operand, or NULL.
static const char *coded_bad(const ad_coded *X) {
    if (!X) return "no matrix";
    if (X->rows < 0 || X->cols < 0) return "negative size";
    if (!X->codes || !X->table) return "no codes or no table";
    if (X->nz && !ad_sparse_matches(X)) return "its nonzeros (nz) were made for another matrix";
    return NULL;
}

ad_var ad_matmul_coded(ad_tape *t, const ad_coded *X, ad_var B, int transX) {
    if (!ad_check_args(t, "matmul_coded", 1, &B)) return AD_NONE;
    const char *bad = coded_bad(X);
    if (bad) {
        ad_fail(t, AD_EARG, "matmul_coded: %s", bad);
        return AD_NONE;
    }
    ad_shape sb = ad_shape_fast(t, B);
    int m = transX ? X->cols : X->rows, k = transX ? X->rows : X->cols;
    if (sb.rank != 2 || sb.rows != k) {
        char y[32];
        ad_fail(t, AD_ESHAPE, "matmul_coded: shapes [%d, %d]%s and %s do not fit", X->rows,
                X->cols, transX ? "^T" : "", ad_shape_str(sb, y));
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_MATMUL_CODED, ad_mat_shape(m, sb.cols), B, 0);
    if (!p) return AD_NONE;
    p->i0 = transX != 0;
    p->ext = X; // the memo compares it: the same X and B is the same product
    return ad_commit(t, p);
}

// Off the thin kernel (more than AD_THIN_MAX_N columns, few rows, or products sent to cblas):
// with X's nonzeros listed (X->nz), the kernel that skips the zeros (sparse.c), on the tape's
// threads when the work pays for them; else one cblas call on X's doubles when the caller has
// them (X->values), which decoding could only match; otherwise blocks of rows of X decoded into
// doubles and multiplied by cblas, with X transposed the blocks' products summed in block order.
enum { DECODE_ROWS = 256 };
// multiply-adds that pay for a thread of the sparse kernel (~0.1 ms of work; a thread made per call
// cost ~30 us, a wake-up of the tape's pool less; the threshold was not measured again)
#define SPARSE_WORK_PER_THREAD ((int64_t)2000000)
static ad_status off_kernel(ad_tape *t, const ad_coded *X, int tx, const double *B, int n,
                            double *C) {
    int rows = X->rows, cols = X->cols;
    if (X->nz) {
        ad_pool *pool = ad_tape_pool(t); // first: it may set threads to 1
        int64_t work = ad_coded_nz_count(X->nz) * n; // multiply-adds
        int threads = work / SPARSE_WORK_PER_THREAD + 1 < t->threads
                          ? (int)(work / SPARSE_WORK_PER_THREAD) + 1 : t->threads;
        ad_thin_isa isa = t->thin_isa ? (ad_thin_isa)t->thin_isa : AD_THIN_AUTO;
        ad_sparse_matmul(isa, threads, pool, X, tx, n, B, n, C);
        return AD_OK;
    }
    if (X->values) {
        cblas_dgemm(CblasRowMajor, tx ? CblasTrans : CblasNoTrans, CblasNoTrans, tx ? cols : rows,
                    n, tx ? rows : cols, 1.0, X->values, cols, B, n, 0.0, C, n);
        return AD_OK;
    }
    double *buf = malloc(sizeof(double) * (size_t)DECODE_ROWS * (size_t)(cols ? cols : 1));
    if (!buf) {
        ad_fail(t, AD_ENOMEM, "matmul_coded: no memory to decode %d rows of %d", DECODE_ROWS, cols);
        return AD_ENOMEM;
    }
    if (tx) memset(C, 0, sizeof(double) * (size_t)cols * n);
    for (int r0 = 0; r0 < rows; r0 += DECODE_ROWS) {
        int nr = rows - r0 < DECODE_ROWS ? rows - r0 : DECODE_ROWS;
        const uint8_t *c = X->codes + (size_t)r0 * cols;
        for (size_t i = 0; i < (size_t)nr * cols; i++) buf[i] = X->table[c[i]];
        if (tx) // C [cols, n] += Xb^T [cols, nr] B rows [r0, r0 + nr)
            cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cols, n, nr, 1.0, buf, cols,
                        B + (size_t)r0 * n, n, 1.0, C, n);
        else // C rows [r0, r0 + nr) = Xb [nr, cols] B
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, n, cols, 1.0, buf, cols,
                        B, n, 0.0, C + (size_t)r0 * n, n);
    }
    free(buf);
    return AD_OK;
}

// out [m, n] = op(X) B (tx: X transposed), m = op(X)'s rows: the thin kernel when it takes the
// shape, else off_kernel. The products of the three ops below, so the same bits for each. then
// (or NULL): work on the rows of out once computed (thin.h, ad_thin_rows), on the kernel's
// threads when it runs X B.
static ad_status coded_product(ad_tape *t, const ad_coded *X, int tx, const ad_node *B, int m,
                               double *out, const ad_thin_rows *then) {
    int k = tx ? X->rows : X->cols, n = B->cols;
    if (m == 0 || n == 0) return AD_OK;
    double t0 = t->par.time_blas ? ad_now() : 0;
    ad_status st = AD_OK;
    int threads;
    bool by_t = !tx && X->codes_t; // X B from X's codes transposed (thin.h)
    double *work = k ? ad_thin_plan(t, tx || by_t, m, n, k, &threads) : NULL;
    if (work && X->nz &&
        ad_strips_matmul((ad_thin_isa)t->thin_isa, threads, ad_tape_pool(t), X, tx, n, B->val, B->cols, out, then)) {
        then = NULL; // done, on the strips (sparse.h)
    } else if (work && !tx) {
        ad_thin_coded_rows((ad_thin_isa)t->thin_isa, threads, ad_tape_pool(t), m, n, k, X->codes,
                           X->codes_t, X->table, B->val, B->cols, out, work, then);
        then = NULL; // done
    } else if (work) {
        ad_thin_matmul_coded((ad_thin_isa)t->thin_isa, threads, ad_tape_pool(t), tx, m, n, k,
                             X->codes, X->table, X->cols, B->val, B->cols, out, work);
    } else if (k) {
        st = off_kernel(t, X, tx, B->val, n, out);
    } else {
        memset(out, 0, (size_t)m * (size_t)n * sizeof(double));
    }
    if (t->par.time_blas) t->blas_seconds += ad_now() - t0;
    if (st == AD_OK && then) then->fn(then->ctx, out, n, 0, m);
    return st;
}

static ad_status fwd_matmul_coded(ad_tape *t, ad_node *n) {
    return coded_product(t, n->ext, n->i0, &t->nodes[n->a], n->rows, n->val, NULL);
}
// C = op(X) B: dB = op(X)^T G, another product with the same codes. X is constant.
static void rev_matmul_coded(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    if (need[0]) gin[0] = ad_matmul_coded(t, n->ext, g, !n->i0);
}
AD_DEF(matmul_coded, 1, fwd_matmul_coded, rev_matmul_coded);

// ---- the softmax and the cross-entropy of the rows of X W, each one op ----
//
// A linear classifier's loss on coded data, xent(X W), differentiated twice (the unrolled
// sweep of hyper-cleaning): its gradient needs P = softmax(X W), and so does the sweep's
// re-recording of each step. As ad_softmax(ad_matmul_coded(X, W)), P is recomputed there from
// the kept product (ad_keep), an exp per entry again; as one op on W, P itself is what ad_keep
// keeps and ad_reuse gives back (its operand W is the recorded state), and the logits are not
// recomputed nor kept. The values are the composition's bits (the same product, then the same
// row code, ad_softmax_rows); the reverse rules are the composition's, recorded in tape ops.

// X [n, d] (not transposed) and W [d, k] with k > 0, or an error recorded.
static bool coded_rows_args(ad_tape *t, const char *op, const ad_coded *X, ad_var W) {
    if (!ad_check_args(t, op, 1, &W)) return false;
    const char *bad = coded_bad(X);
    if (bad) {
        ad_fail(t, AD_EARG, "%s: %s", op, bad);
        return false;
    }
    ad_shape sw = ad_shape_fast(t, W);
    if (sw.rank != 2 || sw.rows != X->cols || sw.cols < 1) {
        char y[32];
        ad_fail(t, AD_ESHAPE, "%s: shapes [%d, %d] and %s do not fit (W [%d, k], k >= 1)", op,
                X->rows, X->cols, ad_shape_str(sw, y), X->cols);
        return false;
    }
    return true;
}

ad_var ad_softmax_coded(ad_tape *t, const ad_coded *X, ad_var W) {
    if (!coded_rows_args(t, "softmax_coded", X, W)) return AD_NONE;
    ad_shape s = ad_mat_shape(X->rows, ad_shape_fast(t, W).cols);
    ad_node *p = ad_push(t, OP_SOFTMAX_CODED, s, W, 0);
    if (!p) return AD_NONE;
    p->ext = X; // as matmul_coded's: the memo and ad_keep compare it
    return ad_commit(t, p);
}
// rows [lo, hi) of the logits C [., n] replaced by their softmax, row by row (ad_thin_rows)
static void softmax_in_place(void *ctx, double *C, int n, int lo, int hi) {
    (void)ctx;
    double *rows = C + (size_t)lo * (size_t)n;
    ad_softmax_rows(rows, hi - lo, n, rows);
}
static ad_status fwd_softmax_coded(ad_tape *t, ad_node *n) {
    const ad_thin_rows then = {softmax_in_place, NULL};
    return coded_product(t, n->ext, 0, &t->nodes[n->a], n->rows, n->val, &then);
}
// softmax's rule, then matmul_coded's: X^T (P * (G - rowsum(G * P)))
static void rev_softmax_coded(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    if (need[0]) gin[0] = ad_matmul_coded(t, ad_node_at(t, y)->ext, ad_softmax_adjoint(t, y, g), 1);
}
AD_DEF(softmax_coded, 1, fwd_softmax_coded, rev_softmax_coded);

ad_var ad_xent_coded(ad_tape *t, const ad_coded *X, ad_var W, const int32_t *labels) {
    if (!coded_rows_args(t, "xent_coded", X, W)) return AD_NONE;
    // the labels as their one-hot rows, an input: the node's pointer field holds X, and the rule
    // needs the one-hot rows anyway (ad_onehot checks the labels)
    ad_var oh = ad_onehot(t, X->rows, ad_shape_fast(t, W).cols, labels);
    if (!oh) return AD_NONE;
    ad_node *p = ad_push(t, OP_XENT_CODED, ad_vec_shape(X->rows), W, oh);
    if (!p) return AD_NONE;
    p->ext = X;
    return ad_commit(t, p);
}
static ad_status fwd_xent_coded(ad_tape *t, ad_node *n) {
    const ad_coded *X = n->ext;
    const ad_node *W = &t->nodes[n->a];
    size_t size = (size_t)X->rows * (size_t)W->cols; // the logits X W [n, k]
    double *z = malloc((size ? size : 1) * sizeof(double));
    if (!z) {
        ad_fail(t, AD_ENOMEM, "xent_coded: no memory for the logits [%d, %d]", X->rows, W->cols);
        return AD_ENOMEM;
    }
    ad_status st = coded_product(t, X, 0, W, X->rows, z, NULL);
    if (st == AD_OK) ad_xent_rows(z, X->rows, W->cols, t->nodes[n->b].idx, n->val);
    free(z);
    return st;
}
// xent's rule on P = softmax_coded(X, W) (kept by ad_keep from the recording before), then
// matmul_coded's: X^T ((P - onehot) * g per row)
static void rev_xent_coded(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    if (!need[0]) return;
    const ad_coded *X = ad_node_at(t, y)->ext;
    ad_var P = ad_softmax_coded(t, X, ad_input(t, y, 0));
    gin[0] = ad_matmul_coded(t, X, ad_xent_adjoint(t, P, ad_input(t, y, 1), g), 1);
}
AD_DEF(xent_coded, 2, fwd_xent_coded, rev_xent_coded);
