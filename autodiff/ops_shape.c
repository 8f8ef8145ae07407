// Reductions, broadcasting and shape ops: sum_to / expand (each other's adjoint), max, reshape,
// slice / pad, concat, take_rows / put_rows.
#include "internal.h"

#include <string.h>

static bool shape_fail(ad_tape *t, const char *op, const char *why, ad_shape a, ad_shape b) {
    char x[32], y[32];
    ad_fail(t, AD_ESHAPE, "%s: %s (%s and %s)", op, why, ad_shape_str(a, x), ad_shape_str(b, y));
    return false;
}

// s broadcasts to x: each dimension of s equals x's or is 1.
static bool fits(ad_shape s, ad_shape x) {
    return (s.rows == x.rows || s.rows == 1) && (s.cols == x.cols || s.cols == 1);
}

// Same dimensions but another rank (e.g. [n] and [1, n]) is a reshape, not a reduction.
static ad_var same_dims(ad_tape *t, ad_var x, ad_shape s) {
    ad_shape xs = ad_shape_fast(t, x);
    return ad_shape_eq(xs, s) ? x : ad_reshape(t, x, s);
}

// ---- sum_to: y [s] = x [m, n] summed over the dimensions where s is 1 ----

ad_var ad_sum_to(ad_tape *t, ad_var x, ad_shape s) {
    if (!ad_check_args(t, "sum_to", 1, &x)) return AD_NONE;
    ad_shape xs = ad_shape_fast(t, x);
    if (ad_shape_eq(xs, s)) return x; // nothing to reduce (every elementwise adjoint)
    if (!fits(s, xs) || s.rank < 0 || s.rank > 2) {
        shape_fail(t, "sum_to", "target does not broadcast to the operand", s, xs);
        return AD_NONE;
    }
    if (s.rows == xs.rows && s.cols == xs.cols) return same_dims(t, x, s);
    return ad_commit(t, ad_push(t, OP_SUM_TO, s, x, 0));
}
static ad_status fwd_sum_to(ad_tape *t, ad_node *n) {
    const ad_node *X = &t->nodes[n->a];
    const double *x = X->val;
    double *y = n->val;
    if (ad_size(n) == 1) { // full sum, kept in one accumulator
        double s = 0;
        for (int i = 0, sz = ad_size(X); i < sz; i++) s += x[i];
        y[0] = s;
        return AD_OK;
    }
    // ad_sum_to makes a node only for these two (and the full sum above): y [m, 1], each row's
    // sum, or y [1, n] or [n], the column sums; each entry summed from +0 in the index order
    if (n->cols == 1) {
        for (int r = 0; r < X->rows; r++) {
            const double *xr = x + (size_t)r * X->cols;
            double s = 0;
            for (int c = 0; c < X->cols; c++) s += xr[c];
            y[r] = s;
        }
        return AD_OK;
    }
    memset(y, 0, (size_t)ad_size(n) * sizeof *y);
    for (int r = 0; r < X->rows; r++)
        for (int c = 0; c < X->cols; c++) y[c] += x[(size_t)r * X->cols + c];
    return AD_OK;
}
static void rev_sum_to(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_expand(t, g, ad_shape_fast(t, ad_input(t, y, 0)));
}
AD_DEF(sum_to, 1, fwd_sum_to, rev_sum_to);

// ---- expand: y [s] = x broadcast up to s ----

ad_var ad_expand(ad_tape *t, ad_var x, ad_shape s) {
    if (!ad_check_args(t, "expand", 1, &x)) return AD_NONE;
    ad_shape xs = ad_shape_fast(t, x);
    if (!fits(xs, s) || s.rank < 0 || s.rank > 2) {
        shape_fail(t, "expand", "operand does not broadcast to the target", xs, s);
        return AD_NONE;
    }
    if (s.rows == xs.rows && s.cols == xs.cols) return same_dims(t, x, s);
    return ad_commit(t, ad_push(t, OP_EXPAND, s, x, 0));
}
static ad_status fwd_expand(ad_tape *t, ad_node *n) {
    const ad_node *X = &t->nodes[n->a];
    int xr = X->rows == 1 ? 0 : X->cols, xc = X->cols == 1 ? 0 : 1;
    for (int r = 0; r < n->rows; r++)
        for (int c = 0; c < n->cols; c++) n->val[r * n->cols + c] = X->val[r * xr + c * xc];
    return AD_OK;
}
static void rev_expand(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_sum_to(t, g, ad_shape_fast(t, ad_input(t, y, 0)));
}
AD_DEF(expand, 1, fwd_expand, rev_expand);

ad_var ad_sum(ad_tape *t, ad_var x) { return ad_sum_to(t, x, ad_scalar_shape()); }

ad_var ad_mean(ad_tape *t, ad_var x) {
    int n = ad_shape_size(ad_shape_of(t, x));
    if (t->status == AD_OK && n == 0) {
        ad_fail(t, AD_ESHAPE, "mean: empty operand");
        return AD_NONE;
    }
    return ad_scale(t, ad_sum(t, x), 1.0 / n);
}

ad_var ad_sum_rows(ad_tape *t, ad_var x) {
    return ad_sum_to(t, x, ad_vec_shape(ad_shape_of(t, x).cols));
}

ad_var ad_sum_cols(ad_tape *t, ad_var x) {
    ad_shape s = ad_shape_of(t, x);
    if (s.rank < 2) return ad_sum(t, x); // a vector is one row
    return ad_reshape(t, ad_sum_to(t, x, ad_mat_shape(s.rows, 1)), ad_vec_shape(s.rows));
}

// ---- max over all entries; the gradient goes to the first argmax ----

ad_var ad_max_all(ad_tape *t, ad_var x) {
    if (!ad_check_args(t, "max_all", 1, &x)) return AD_NONE;
    if (ad_shape_size(ad_shape_fast(t, x)) == 0) {
        ad_fail(t, AD_ESHAPE, "max_all: empty operand");
        return AD_NONE;
    }
    return ad_commit(t, ad_push(t, OP_MAX_ALL, ad_scalar_shape(), x, 0));
}
static int argmax(const ad_node *X) {
    int k = 0;
    for (int i = 1, sz = ad_size(X); i < sz; i++)
        if (X->val[i] > X->val[k]) k = i;
    return k;
}
static ad_status fwd_max_all(ad_tape *t, ad_node *n) {
    const ad_node *X = &t->nodes[n->a];
    n->val[0] = X->val[argmax(X)];
    return AD_OK;
}
static ad_status fwd_argmax1h(ad_tape *t, ad_node *n) {
    const ad_node *X = &t->nodes[n->a];
    memset(n->val, 0, (size_t)ad_size(n) * sizeof(double));
    n->val[argmax(X)] = 1;
    return AD_OK;
}
static void rev_max_all(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    ad_var x = ad_input(t, y, 0);
    ad_shape xs = ad_shape_fast(t, x);
    ad_var onehot = ad_commit(t, ad_push(t, OP_ARGMAX1H, xs, x, 0));
    gin[0] = ad_mul(t, g, onehot);
}
AD_DEF(max_all, 1, fwd_max_all, rev_max_all);
AD_DEF(argmax1h, 1, fwd_argmax1h, NULL);

// ---- reshape: same entries, another shape; shares the input's storage ----

ad_var ad_reshape(ad_tape *t, ad_var x, ad_shape s) {
    if (!ad_check_args(t, "reshape", 1, &x)) return AD_NONE;
    ad_shape xs = ad_shape_fast(t, x);
    bool valid = (s.rank == 0 && s.rows == 1 && s.cols == 1) || (s.rank == 1 && s.rows == 1) ||
                 s.rank == 2;
    if (!valid || s.rows < 0 || s.cols < 0 || ad_shape_size(s) != ad_shape_size(xs)) {
        shape_fail(t, "reshape", "sizes differ", xs, s);
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_RESHAPE, s, x, 0);
    if (!p) return AD_NONE;
    p->val = ad_val(t, x); // shares its input's storage (allocated even when x is lazy)
    p->flags = NF_VIEW;
    return ad_commit(t, p);
}
static ad_status fwd_reshape(ad_tape *t, ad_node *n) {
    (void)t, (void)n; // the value is the input's storage
    return AD_OK;
}
static void rev_reshape(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_reshape(t, g, ad_shape_fast(t, ad_input(t, y, 0)));
}
AD_DEF(reshape, 1, fwd_reshape, rev_reshape);

// ---- slice [n] -> [len] and pad [len] -> [n]: each other's adjoint ----

static bool is_vec(ad_shape s) { return s.rank <= 1; }

ad_var ad_slice(ad_tape *t, ad_var x, int offset, int len) {
    if (!ad_check_args(t, "slice", 1, &x)) return AD_NONE;
    ad_shape xs = ad_shape_fast(t, x);
    if (!is_vec(xs) || offset < 0 || len < 0 || offset + len > xs.cols) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "slice: [%d, %d) is not inside vector %s", offset, offset + len,
                ad_shape_str(xs, b));
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_SLICE, ad_vec_shape(len), x, 0);
    if (!p) return AD_NONE;
    p->i0 = offset;
    return ad_commit(t, p);
}
static ad_status fwd_slice(ad_tape *t, ad_node *n) {
    memcpy(n->val, t->nodes[n->a].val + n->i0, (size_t)n->cols * sizeof(double));
    return AD_OK;
}
static void rev_slice(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_node *n = ad_node_at(t, y);
    int off = n->i0, full = t->nodes[n->a].cols;
    ad_shape xs = ad_shape_fast(t, n->a);
    gin[0] = same_dims(t, ad_pad(t, g, off, full), xs);
}
AD_DEF(slice, 1, fwd_slice, rev_slice);

ad_var ad_pad(ad_tape *t, ad_var x, int offset, int n) {
    if (!ad_check_args(t, "pad", 1, &x)) return AD_NONE;
    ad_shape xs = ad_shape_fast(t, x);
    if (!is_vec(xs) || offset < 0 || offset + xs.cols > n) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "pad: vector %s at offset %d does not fit in [%d]",
                ad_shape_str(xs, b), offset, n);
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_PAD, ad_vec_shape(n), x, 0);
    if (!p) return AD_NONE;
    p->i0 = offset;
    return ad_commit(t, p);
}
static ad_status fwd_pad(ad_tape *t, ad_node *n) {
    const ad_node *X = &t->nodes[n->a];
    memset(n->val, 0, (size_t)n->cols * sizeof(double));
    memcpy(n->val + n->i0, X->val, (size_t)X->cols * sizeof(double));
    return AD_OK;
}
static void rev_pad(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_node *n = ad_node_at(t, y);
    int off = n->i0;
    ad_shape xs = ad_shape_fast(t, n->a);
    gin[0] = same_dims(t, ad_slice(t, g, off, xs.cols), xs);
}
AD_DEF(pad, 1, fwd_pad, rev_pad);

// ---- concat of two vectors (scalars count as [1]) ----

ad_var ad_concat(ad_tape *t, ad_var a, ad_var b) {
    ad_var in[2] = {a, b};
    if (!ad_check_args(t, "concat", 2, in)) return AD_NONE;
    ad_shape sa = ad_shape_fast(t, a), sb = ad_shape_fast(t, b);
    if (!is_vec(sa) || !is_vec(sb)) {
        shape_fail(t, "concat", "operands must be vectors or scalars", sa, sb);
        return AD_NONE;
    }
    return ad_commit(t, ad_push(t, OP_CONCAT, ad_vec_shape(sa.cols + sb.cols), a, b));
}
static ad_status fwd_concat(ad_tape *t, ad_node *n) {
    const ad_node *A = &t->nodes[n->a], *B = &t->nodes[n->b];
    memcpy(n->val, A->val, (size_t)A->cols * sizeof(double));
    memcpy(n->val + A->cols, B->val, (size_t)B->cols * sizeof(double));
    return AD_OK;
}
static void rev_concat(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_shape sa = ad_shape_fast(t, ad_input(t, y, 0)), sb = ad_shape_fast(t, ad_input(t, y, 1));
    if (need[0]) gin[0] = same_dims(t, ad_slice(t, g, 0, sa.cols), sa);
    if (need[1]) gin[1] = same_dims(t, ad_slice(t, g, sa.cols, sb.cols), sb);
}
AD_DEF(concat, 2, fwd_concat, rev_concat);

ad_var ad_concat_n(ad_tape *t, int k, const ad_var *parts) {
    if (k < 1 || !parts) {
        ad_fail(t, AD_EARG, "concat_n: need at least one part");
        return AD_NONE;
    }
    ad_var r = parts[0];
    if (k == 1) return ad_reshape(t, r, ad_vec_shape(ad_shape_size(ad_shape_of(t, r))));
    for (int i = 1; i < k; i++) r = ad_concat(t, r, parts[i]);
    return r;
}

// ---- take_rows: X [m, n] -> [k, n] (a vector [m] -> [k]); put_rows is its adjoint ----

static bool check_idx(ad_tape *t, const char *op, int m, int k, const int32_t *idx) {
    if (k < 0 || (k > 0 && !idx)) {
        ad_fail(t, AD_EARG, "%s: bad index list (k = %d)", op, k);
        return false;
    }
    for (int i = 0; i < k; i++) {
        if (idx[i] < 0 || idx[i] >= m) {
            ad_fail(t, AD_EARG, "%s: index %d is %d, outside [0, %d)", op, i, (int)idx[i], m);
            return false;
        }
    }
    return true;
}

// Rows of a rank-2 operand; entries of a vector.
static int nrows(ad_shape s) { return s.rank == 2 ? s.rows : s.cols; }
static int rowlen(ad_shape s) { return s.rank == 2 ? s.cols : 1; }

ad_var ad_take_rows(ad_tape *t, ad_var X, int k, const int32_t *idx) {
    if (!ad_check_args(t, "take_rows", 1, &X)) return AD_NONE;
    ad_shape xs = ad_shape_fast(t, X);
    if (xs.rank == 0) {
        ad_fail(t, AD_ESHAPE, "take_rows: operand is a scalar");
        return AD_NONE;
    }
    if (!check_idx(t, "take_rows", nrows(xs), k, idx)) return AD_NONE;
    ad_node *p = ad_push(t, OP_TAKE_ROWS, xs.rank == 2 ? ad_mat_shape(k, xs.cols) : ad_vec_shape(k), X, 0);
    if (!p) return AD_NONE;
    p->idx = ad_copy_idx(t, k, idx);
    p->i1 = k;
    return ad_commit(t, p); // drops the node if the copy failed
}
static ad_status fwd_take_rows(ad_tape *t, ad_node *n) {
    const ad_node *X = &t->nodes[n->a];
    int w = rowlen(ad_node_shape(X));
    for (int i = 0; i < n->i1; i++)
        memcpy(n->val + (size_t)i * w, X->val + (size_t)n->idx[i] * w, (size_t)w * sizeof(double));
    return AD_OK;
}
static void rev_take_rows(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_node *n = ad_node_at(t, y);
    int k = n->i1, m = nrows(ad_shape_fast(t, n->a));
    const int32_t *idx = n->idx;
    gin[0] = ad_put_rows(t, g, m, k, idx);
}
AD_DEF(take_rows, 1, fwd_take_rows, rev_take_rows);

ad_var ad_put_rows(ad_tape *t, ad_var G, int m, int k, const int32_t *idx) {
    if (!ad_check_args(t, "put_rows", 1, &G)) return AD_NONE;
    ad_shape gs = ad_shape_fast(t, G);
    if (gs.rank == 0 || nrows(gs) != k || m < 0) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "put_rows: operand %s does not have %d rows", ad_shape_str(gs, b), k);
        return AD_NONE;
    }
    if (!check_idx(t, "put_rows", m, k, idx)) return AD_NONE;
    ad_node *p = ad_push(t, OP_PUT_ROWS, gs.rank == 2 ? ad_mat_shape(m, gs.cols) : ad_vec_shape(m), G, 0);
    if (!p) return AD_NONE;
    p->idx = ad_copy_idx(t, k, idx);
    p->i1 = k;
    return ad_commit(t, p); // drops the node if the copy failed
}
static ad_status fwd_put_rows(ad_tape *t, ad_node *n) {
    const ad_node *G = &t->nodes[n->a];
    int w = rowlen(ad_node_shape(n));
    memset(n->val, 0, (size_t)ad_size(n) * sizeof(double));
    for (int i = 0; i < n->i1; i++)
        for (int j = 0; j < w; j++) n->val[(size_t)n->idx[i] * w + j] += G->val[(size_t)i * w + j];
    return AD_OK;
}
static void rev_put_rows(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_node *n = ad_node_at(t, y);
    int k = n->i1;
    const int32_t *idx = n->idx;
    gin[0] = ad_take_rows(t, g, k, idx);
}
AD_DEF(put_rows, 1, fwd_put_rows, rev_put_rows);
