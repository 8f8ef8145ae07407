// Products with a coded constant: op(X) B where X [rows, cols] is stored as one byte per entry
// naming one of 256 doubles (ad_coded). Images come as 8-bit pixels; kept so, the 5000 x 784
// training matrix of hyper-cleaning is 3.9 MB instead of 31 MB, which stays in the last-level
// cache, and the products that stream it (X W forward, X^T G in the reverse rule, twice more
// when a gradient is differentiated again) stop waiting on memory. The values are the table's
// doubles exactly, so nothing about the numbers changes: on the thin kernel the result has the
// same bits as the product with the decoded matrix.
#include "internal.h"
#include "thin.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

// ---- matmul_coded: op(X) [m, k] B [k, n] -> [m, n] ----

ad_var ad_matmul_coded(ad_tape *t, const ad_coded *X, ad_var B, int transX) {
    if (!ad_check_args(t, "matmul_coded", 1, &B)) return AD_NONE;
    if (!X || !X->codes || !X->table || X->rows < 0 || X->cols < 0) {
        ad_fail(t, AD_EARG, "matmul_coded: %s", !X ? "no matrix" : X->rows < 0 || X->cols < 0
                                                                    ? "negative size"
                                                                    : "no codes or no table");
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
// one cblas call on X's doubles when the caller has them (X->values), which decoding could only
// match; otherwise blocks of rows of X decoded into doubles and multiplied by cblas, with X
// transposed the blocks' products summed in block order.
enum { DECODE_ROWS = 256 };
static ad_status off_kernel(ad_tape *t, const ad_coded *X, int tx, const double *B, int n,
                            double *C) {
    int rows = X->rows, cols = X->cols;
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

static ad_status fwd_matmul_coded(ad_tape *t, ad_node *n) {
    const ad_coded *X = n->ext;
    const ad_node *B = &t->nodes[n->a];
    int k = n->i0 ? X->rows : X->cols;
    if (n->rows == 0 || n->cols == 0) return AD_OK;
    if (k == 0) {
        memset(n->val, 0, (size_t)ad_size(n) * sizeof(double));
        return AD_OK;
    }
    double t0 = t->par.time_blas ? ad_now() : 0;
    ad_status st = AD_OK;
    int threads;
    bool by_t = !n->i0 && X->codes_t; // X B from X's codes transposed (thin.h)
    double *work = ad_thin_plan(t, n->i0 || by_t, n->rows, n->cols, k, &threads);
    if (work && by_t)
        ad_thin_matmul_coded_t((ad_thin_isa)t->thin_isa, threads, n->rows, n->cols, k,
                               X->codes_t, X->table, X->rows, B->val, B->cols, n->val, work);
    else if (work)
        ad_thin_matmul_coded((ad_thin_isa)t->thin_isa, threads, n->i0, n->rows, n->cols, k,
                             X->codes, X->table, X->cols, B->val, B->cols, n->val, work);
    else
        st = off_kernel(t, X, n->i0, B->val, n->cols, n->val);
    if (t->par.time_blas) t->blas_seconds += ad_now() - t0;
    return st;
}
// C = op(X) B: dB = op(X)^T G, another product with the same codes. X is constant.
static void rev_matmul_coded(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    if (need[0]) gin[0] = ad_matmul_coded(t, n->ext, g, !n->i0);
}
AD_DEF(matmul_coded, 1, fwd_matmul_coded, rev_matmul_coded);
