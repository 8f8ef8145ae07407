// Products: dot, matvec, matmul (either operand transposed), outer, and for a symmetric matrix
// symv and quadform. Forward through cblas, or for large products with few output columns
// through the thin kernel (thin.c); the reverse rules are products again, so they differentiate
// to any order.
#include "internal.h"
#include "smallk.h"
#include "thin.h"

#include <cblas.h>
#include <string.h>

// Below these sizes a plain loop beats the cblas call's fixed overhead (~0.3 us for a 10 x 10
// dgemv), which dominates small unrolled problems; above them cblas does the work.
enum { SMALL_MATVEC = 4096, SMALL_MATMUL = 32768, SMALL_DOT = 256 };

static void fail2(ad_tape *t, const char *op, ad_shape a, ad_shape b) {
    char x[32], y[32];
    ad_fail(t, AD_ESHAPE, "%s: shapes %s and %s do not fit", op, ad_shape_str(a, x),
            ad_shape_str(b, y));
}

// ---- dot: <u, v> over all entries of two equal shapes -> scalar ----

ad_var ad_dot(ad_tape *t, ad_var u, ad_var v) {
    ad_var in[2] = {u, v};
    if (!ad_check_args(t, "dot", 2, in)) return AD_NONE;
    ad_shape su = ad_shape_fast(t, u), sv = ad_shape_fast(t, v);
    if (su.rows != sv.rows || su.cols != sv.cols) {
        fail2(t, "dot", su, sv);
        return AD_NONE;
    }
    return ad_commit(t, ad_push(t, OP_DOT, ad_scalar_shape(), u, v));
}
static ad_status fwd_dot(ad_tape *t, ad_node *n) {
    const ad_node *U = &t->nodes[n->a], *V = &t->nodes[n->b];
    int size = ad_size(U);
    if (size < SMALL_DOT) {
        double s = 0;
        for (int i = 0; i < size; i++) s += U->val[i] * V->val[i];
        n->val[0] = s;
    } else {
        n->val[0] = cblas_ddot(size, U->val, 1, V->val, 1);
    }
    return AD_OK;
}
static void rev_dot(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var u = ad_input(t, y, 0), v = ad_input(t, y, 1);
    if (need[0]) gin[0] = ad_mul(t, g, v);
    if (need[1]) gin[1] = ad_mul(t, g, u);
}
AD_DEF(dot, 2, fwd_dot, rev_dot);

// ---- matvec: op(A) x, A [m, n]; x [n] -> [m], or x [m] -> [n] with A transposed ----

ad_var ad_matvec(ad_tape *t, ad_var A, ad_var x, int transA) {
    ad_var in[2] = {A, x};
    if (!ad_check_args(t, "matvec", 2, in)) return AD_NONE;
    ad_shape sa = ad_shape_fast(t, A), sx = ad_shape_fast(t, x);
    int inner = transA ? sa.rows : sa.cols, outer = transA ? sa.cols : sa.rows;
    if (sa.rank != 2 || sx.rank != 1 || sx.cols != inner) {
        fail2(t, transA ? "matvec (A transposed)" : "matvec", sa, sx);
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_MATVEC, ad_vec_shape(outer), A, x);
    if (!p) return AD_NONE;
    p->i0 = transA != 0;
    return ad_commit(t, p);
}
// y = A x for a small row-major A [rows, cols]. Eight rows at a time share each load of x and
// give the CPU eight independent sums to overlap (each is a chain of dependent adds); each row is
// still summed left to right, so the result is bit for bit the plain loop's.
static void small_matvec(int rows, int cols, const double *restrict a, const double *restrict x,
                         double *restrict y) {
    int i = 0;
    for (; i + 8 <= rows; i += 8) {
        const double *r = a + (size_t)i * cols;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0, s4 = 0, s5 = 0, s6 = 0, s7 = 0;
        for (int j = 0; j < cols; j++) {
            double xj = x[j];
            s0 += r[j] * xj, s1 += r[cols + j] * xj, s2 += r[2 * cols + j] * xj;
            s3 += r[3 * cols + j] * xj, s4 += r[4 * cols + j] * xj, s5 += r[5 * cols + j] * xj;
            s6 += r[6 * cols + j] * xj, s7 += r[7 * cols + j] * xj;
        }
        y[i] = s0, y[i + 1] = s1, y[i + 2] = s2, y[i + 3] = s3;
        y[i + 4] = s4, y[i + 5] = s5, y[i + 6] = s6, y[i + 7] = s7;
    }
    for (; i + 2 <= rows; i += 2) {
        const double *a0 = a + (size_t)i * cols, *a1 = a0 + cols;
        double s0 = 0, s1 = 0;
        for (int j = 0; j < cols; j++) s0 += a0[j] * x[j], s1 += a1[j] * x[j];
        y[i] = s0, y[i + 1] = s1;
    }
    if (i < rows) {
        const double *ai = a + (size_t)i * cols;
        double s = 0;
        for (int j = 0; j < cols; j++) s += ai[j] * x[j];
        y[i] = s;
    }
}

// y = A^T x, A [rows, cols]: rows of A are added into y in order, two per pass over y (half the
// loads and stores of y), which keeps each y[j]'s sum in the plain loop's order.
static void small_matvec_t(int rows, int cols, const double *restrict a, const double *restrict x,
                           double *restrict y) {
    int i = 2 - (rows & 1); // the first one or two rows start the sums (rows > 0)
    if (i == 1) {
        for (int j = 0; j < cols; j++) y[j] = 0 + a[j] * x[0];
    } else {
        const double *a1 = a + cols;
        for (int j = 0; j < cols; j++) y[j] = (0 + a[j] * x[0]) + a1[j] * x[1];
    }
    for (; i < rows; i += 2) {
        const double *a0 = a + (size_t)i * cols, *a1 = a0 + cols;
        double x0 = x[i], x1 = x[i + 1];
        for (int j = 0; j < cols; j++) y[j] = (y[j] + a0[j] * x0) + a1[j] * x1;
    }
}

static ad_status fwd_matvec(ad_tape *t, ad_node *n) {
    const ad_node *A = &t->nodes[n->a], *X = &t->nodes[n->b];
    if (A->rows == 0 || A->cols == 0) {
        memset(n->val, 0, (size_t)ad_size(n) * sizeof(double));
        return AD_OK;
    }
    if (A->rows * A->cols < SMALL_MATVEC) {
        (n->i0 ? small_matvec_t : small_matvec)(A->rows, A->cols, A->val, X->val, n->val);
        return AD_OK;
    }
    // not the thin kernel: with one column it wastes 3 of 4 lanes and measured half dgemv's
    // speed ([1000, 1000]: 415 vs 204 us)
    double t0 = t->par.time_blas ? ad_now() : 0;
    cblas_dgemv(CblasRowMajor, n->i0 ? CblasTrans : CblasNoTrans, A->rows, A->cols, 1.0, A->val,
                A->cols, X->val, 1, 0.0, n->val, 1);
    if (t->par.time_blas) t->blas_seconds += ad_now() - t0;
    return AD_OK;
}
static void rev_matvec(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var A = ad_input(t, y, 0), x = ad_input(t, y, 1);
    int tr = ad_node_at(t, y)->i0;
    if (need[0]) gin[0] = tr ? ad_outer(t, x, g) : ad_outer(t, g, x);
    if (need[1]) gin[1] = ad_matvec(t, A, g, !tr);
}
AD_DEF(matvec, 2, fwd_matvec, rev_matvec);

// ---- matmul: op(A) [m, k] op(B) [k, n] -> [m, n] ----

ad_var ad_matmul(ad_tape *t, ad_var A, ad_var B, int transA, int transB) {
    ad_var in[2] = {A, B};
    if (!ad_check_args(t, "matmul", 2, in)) return AD_NONE;
    ad_shape sa = ad_shape_fast(t, A), sb = ad_shape_fast(t, B);
    int m = transA ? sa.cols : sa.rows, ka = transA ? sa.rows : sa.cols;
    int kb = transB ? sb.cols : sb.rows, n = transB ? sb.rows : sb.cols;
    if (sa.rank != 2 || sb.rank != 2 || ka != kb) {
        char x[32], y[32];
        ad_fail(t, AD_ESHAPE, "matmul: shapes %s%s and %s%s do not fit", ad_shape_str(sa, x),
                transA ? "^T" : "", ad_shape_str(sb, y), transB ? "^T" : "");
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_MATMUL, ad_mat_shape(m, n), A, B);
    if (!p) return AD_NONE;
    p->i0 = transA != 0;
    p->i1 = transB != 0;
    return ad_commit(t, p);
}
static ad_status fwd_matmul(ad_tape *t, ad_node *n) {
    const ad_node *A = &t->nodes[n->a], *B = &t->nodes[n->b];
    int k = n->i0 ? A->rows : A->cols;
    if (n->rows == 0 || n->cols == 0) return AD_OK;
    if (k == 0) {
        memset(n->val, 0, (size_t)ad_size(n) * sizeof(double));
        return AD_OK;
    }
    if ((size_t)n->rows * n->cols * k < SMALL_MATMUL) { // C [m, n] = op(A) op(B), i-k-j order
        int lda = A->cols, ldb = B->cols, m = n->rows, nn = n->cols;
        double *c = n->val;
        memset(c, 0, (size_t)m * nn * sizeof *c);
        for (int i = 0; i < m; i++)
            for (int p = 0; p < k; p++) {
                double aip = n->i0 ? A->val[p * lda + i] : A->val[i * lda + p];
                for (int j = 0; j < nn; j++)
                    c[i * nn + j] += aip * (n->i1 ? B->val[j * ldb + p] : B->val[p * ldb + j]);
            }
        return AD_OK;
    }
    double t0 = t->par.time_blas ? ad_now() : 0;
    int threads;
    double *work = ad_thin_plan(t, n->i0, n->rows, n->cols, k, &threads), *swork;
    if (work)
        ad_thin_matmul((ad_thin_isa)t->thin_isa, threads, ad_tape_pool(t), n->i0, n->i1, n->rows,
                       n->cols, k, A->val, A->cols, B->val, B->cols, n->val, work);
    else if ((swork = ad_smallk_plan(t, n->rows, n->cols, k, &threads)))
        ad_smallk_matmul((ad_thin_isa)t->thin_isa, threads, ad_tape_pool(t), n->i0, n->i1, n->rows,
                         n->cols, k, A->val, A->cols, B->val, B->cols, n->val, swork);
    else
        cblas_dgemm(CblasRowMajor, n->i0 ? CblasTrans : CblasNoTrans,
                    n->i1 ? CblasTrans : CblasNoTrans, n->rows, n->cols, k, 1.0, A->val, A->cols,
                    B->val, B->cols, 0.0, n->val, n->cols);
    if (t->par.time_blas) t->blas_seconds += ad_now() - t0;
    return AD_OK;
}
// C = op(A) op(B): dA and dB are products of G with the other operand, transposed to fit.
static void rev_matmul(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var A = ad_input(t, y, 0), B = ad_input(t, y, 1);
    int ta = ad_node_at(t, y)->i0, tb = ad_node_at(t, y)->i1;
    if (need[0]) gin[0] = ta ? ad_matmul(t, B, g, tb, 1) : ad_matmul(t, g, B, 0, !tb);
    if (need[1]) gin[1] = tb ? ad_matmul(t, g, A, 1, ta) : ad_matmul(t, A, g, !ta, 0);
}
AD_DEF(matmul, 2, fwd_matmul, rev_matmul);

// ---- outer: u [m], v [n] -> u v^T [m, n] ----

ad_var ad_outer(ad_tape *t, ad_var u, ad_var v) {
    ad_var in[2] = {u, v};
    if (!ad_check_args(t, "outer", 2, in)) return AD_NONE;
    ad_shape su = ad_shape_fast(t, u), sv = ad_shape_fast(t, v);
    if (su.rank != 1 || sv.rank != 1) {
        fail2(t, "outer", su, sv);
        return AD_NONE;
    }
    return ad_commit(t, ad_push(t, OP_OUTER, ad_mat_shape(su.cols, sv.cols), u, v));
}
static ad_status fwd_outer(ad_tape *t, ad_node *n) {
    const double *u = t->nodes[n->a].val, *v = t->nodes[n->b].val;
    for (int i = 0; i < n->rows; i++)
        for (int j = 0; j < n->cols; j++) n->val[(size_t)i * n->cols + j] = u[i] * v[j];
    return AD_OK;
}
static void rev_outer(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var u = ad_input(t, y, 0), v = ad_input(t, y, 1);
    if (need[0]) gin[0] = ad_matvec(t, g, v, 0);
    if (need[1]) gin[1] = ad_matvec(t, g, u, 1);
}
AD_DEF(outer, 2, fwd_outer, rev_outer);

// ---- symmetric matrices: only the upper triangle of A [n, n] is read (cblas_dsymv's contract) ----
// S = triu(A) + triu(A, 1)^T is the matrix meant; the lower triangle may hold anything. The
// gradient with respect to A lives on the upper triangle: d/dA_ij (i < j) collects both S_ij and
// S_ji, so gA = M .* (G + G^T) with M_ij = 1 above the diagonal, 1/2 on it, 0 below.

static bool check_sym(ad_tape *t, const char *op, ad_shape sa, ad_shape sx) {
    if (sa.rank != 2 || sa.rows != sa.cols || sx.rank != 1 || sx.cols != sa.rows) {
        fail2(t, op, sa, sx);
        return false;
    }
    return true;
}

// M [n, n] above: a constant made once per reverse rule that needs A's gradient.
static ad_var upper_mask(ad_tape *t, int n) {
    ad_var m = ad_fill(t, ad_mat_shape(n, n), 0.0);
    if (!m) return AD_NONE;
    double *v = ad_val(t, m); // fresh and not read yet: filled in place
    for (int i = 0; i < n; i++) {
        v[(size_t)i * n + i] = 0.5;
        for (int j = i + 1; j < n; j++) v[(size_t)i * n + j] = 1.0;
    }
    return m;
}

// ---- symv: S x, A [n, n] (upper triangle), x [n] -> [n] ----

ad_var ad_symv(ad_tape *t, ad_var A, ad_var x) {
    ad_var in[2] = {A, x};
    if (!ad_check_args(t, "symv", 2, in)) return AD_NONE;
    ad_shape sa = ad_shape_fast(t, A), sx = ad_shape_fast(t, x);
    if (!check_sym(t, "symv", sa, sx)) return AD_NONE;
    return ad_commit(t, ad_push(t, OP_SYMV, ad_vec_shape(sa.rows), A, x));
}
// y = S x for a small A [m, m] (upper triangle),
// y_i = sum_{j < i} A_ji x_j + sum_{j >= i} A_ij x_j:
// the first sum added into y_i row by row (j ascending, from 0), the second summed along row i
// (j ascending) and added last. Four rows at a time: their diagonal block first, then one pass
// over the columns right of it, which carries the four row sums and adds the four rows' terms
// into each y_j in row order. Every sum is the one-row-at-a-time loop's, in its order, so the
// result is bit for bit the same; a pass does four rows' work for one load and store of y_j
// (the row-at-a-time loop, with the compiler's alias checks, cost ~850 instructions at m = 10).
static void small_symv(int m, const double *restrict a, const double *restrict x,
                       double *restrict y) {
    for (int i = 0; i < m; i++) y[i] = 0;
    int i = 0;
    for (; i + 4 <= m; i += 4) {
        const double *r0 = a + (size_t)i * m, *r1 = r0 + m, *r2 = r1 + m, *r3 = r2 + m;
        double x0 = x[i], x1 = x[i + 1], x2 = x[i + 2], x3 = x[i + 3];
        // the block: row sums start on the diagonal; rows above add into y_{i+1..i+3}
        double s0 = r0[i] * x0, s1 = r1[i + 1] * x1, s2 = r2[i + 2] * x2, s3 = r3[i + 3] * x3;
        s0 += r0[i + 1] * x1, y[i + 1] += r0[i + 1] * x0;
        s0 += r0[i + 2] * x2, y[i + 2] += r0[i + 2] * x0;
        s0 += r0[i + 3] * x3, y[i + 3] += r0[i + 3] * x0;
        s1 += r1[i + 2] * x2, y[i + 2] += r1[i + 2] * x1;
        s1 += r1[i + 3] * x3, y[i + 3] += r1[i + 3] * x1;
        s2 += r2[i + 3] * x3, y[i + 3] += r2[i + 3] * x2;
        for (int j = i + 4; j < m; j++) {
            double xj = x[j];
            s0 += r0[j] * xj, s1 += r1[j] * xj, s2 += r2[j] * xj, s3 += r3[j] * xj;
            y[j] = (((y[j] + r0[j] * x0) + r1[j] * x1) + r2[j] * x2) + r3[j] * x3;
        }
        y[i] += s0, y[i + 1] += s1, y[i + 2] += s2, y[i + 3] += s3;
    }
    // one to three rows left: two at a time as above, then the last row, whose sum is its
    // diagonal term alone
    if (i + 2 <= m) {
        const double *r0 = a + (size_t)i * m, *r1 = r0 + m;
        double x0 = x[i], x1 = x[i + 1];
        double s0 = r0[i] * x0, s1 = r1[i + 1] * x1;
        s0 += r0[i + 1] * x1, y[i + 1] += r0[i + 1] * x0;
        for (int j = i + 2; j < m; j++) {
            s0 += r0[j] * x[j], s1 += r1[j] * x[j];
            y[j] = (y[j] + r0[j] * x0) + r1[j] * x1;
        }
        y[i] += s0, y[i + 1] += s1;
        i += 2;
    }
    if (i < m) y[i] += a[(size_t)i * m + i] * x[i];
}

static ad_status fwd_symv(ad_tape *t, ad_node *n) {
    const ad_node *A = &t->nodes[n->a];
    const double *a = A->val, *x = t->nodes[n->b].val;
    double *y = n->val;
    int m = A->rows;
    if (m * m < SMALL_MATVEC) {
        small_symv(m, a, x, y);
        return AD_OK;
    }
    double t0 = t->par.time_blas ? ad_now() : 0;
    cblas_dsymv(CblasRowMajor, CblasUpper, m, 1.0, a, m, x, 1, 0.0, y, 1);
    if (t->par.time_blas) t->blas_seconds += ad_now() - t0;
    return AD_OK;
}
static void rev_symv(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var A = ad_input(t, y, 0), x = ad_input(t, y, 1);
    if (need[0])
        gin[0] = ad_mul(t, ad_add(t, ad_outer(t, g, x), ad_outer(t, x, g)),
                        upper_mask(t, ad_node_at(t, A)->rows));
    if (need[1]) gin[1] = ad_symv(t, A, g);
}
AD_DEF(symv, 2, fwd_symv, rev_symv);

// ---- quadform: 1/2 y^T S y, A [n, n] (upper triangle), y [n] -> scalar ----
// One product in its gradient (S y) where 1/2 dot(y, matvec(A, y)) records two (A y and A^T y),
// and none in the value when the value is not needed (a deferred LL step).

ad_var ad_quadform(ad_tape *t, ad_var A, ad_var y) {
    ad_var in[2] = {A, y};
    if (!ad_check_args(t, "quadform", 2, in)) return AD_NONE;
    if (!check_sym(t, "quadform", ad_shape_fast(t, A), ad_shape_fast(t, y))) return AD_NONE;
    return ad_commit(t, ad_push(t, OP_QUADFORM, ad_scalar_shape(), A, y));
}
static ad_status fwd_quadform(ad_tape *t, ad_node *n) {
    const ad_node *A = &t->nodes[n->a];
    const double *a = A->val, *y = t->nodes[n->b].val;
    int m = A->rows;
    double s = 0; // sum_i y_i (A_ii y_i / 2 + sum_{j > i} A_ij y_j): one pass over the triangle
    for (int i = 0; i < m; i++) {
        const double *row = a + (size_t)i * m;
        int len = m - i - 1; // the row right of the diagonal
        double r = 0;
        if (len >= SMALL_DOT) r = cblas_ddot(len, row + i + 1, 1, y + i + 1, 1);
        else
            for (int j = i + 1; j < m; j++) r += row[j] * y[j];
        s += y[i] * (0.5 * row[i] * y[i] + r);
    }
    n->val[0] = s;
    return AD_OK;
}
static void rev_quadform(ad_tape *t, ad_var q, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var A = ad_input(t, q, 0), y = ad_input(t, q, 1);
    if (need[0])
        gin[0] = ad_mul(t, ad_mul(t, ad_outer(t, y, y), upper_mask(t, ad_node_at(t, A)->rows)), g);
    if (need[1]) gin[1] = ad_mul(t, g, ad_symv(t, A, y));
}
AD_DEF(quadform, 2, fwd_quadform, rev_quadform);
