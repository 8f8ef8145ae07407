// Learning losses and norms: logsumexp, per-row log-softmax and cross-entropy against integer
// labels, ||v||^2, ||v||^p and the smoothed ||v||_q^q.
#include "internal.h"

#include <math.h>
#include <string.h>

// ---- logsumexp over all entries -> scalar ----

ad_var ad_logsumexp(ad_tape *t, ad_var x) {
    if (!ad_check_args(t, "logsumexp", 1, &x)) return AD_NONE;
    if (ad_shape_size(ad_shape_fast(t, x)) == 0) {
        ad_fail(t, AD_ESHAPE, "logsumexp: empty operand");
        return AD_NONE;
    }
    return ad_commit(t, ad_push(t, OP_LOGSUMEXP, ad_scalar_shape(), x, 0));
}
static double lse(const double *x, int n) {
    double m = x[0], s = 0;
    for (int i = 1; i < n; i++) m = x[i] > m ? x[i] : m;
    if (isinf(m)) return m;
    for (int i = 0; i < n; i++) s += exp(x[i] - m);
    return m + log(s);
}
static ad_status fwd_logsumexp(ad_tape *t, ad_node *n) {
    const ad_node *X = &t->nodes[n->a];
    n->val[0] = lse(X->val, ad_size(X));
    return AD_OK;
}
static void rev_logsumexp(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need; // g softmax(x)
    gin[0] = ad_mul(t, g, ad_exp(t, ad_sub(t, ad_input(t, y, 0), y)));
}
AD_DEF(logsumexp, 1, fwd_logsumexp, rev_logsumexp);

// ---- log_softmax per row: Z [m, k] -> [m, k] ----

ad_var ad_log_softmax(ad_tape *t, ad_var Z) {
    if (!ad_check_args(t, "log_softmax", 1, &Z)) return AD_NONE;
    ad_shape s = ad_shape_fast(t, Z);
    if (s.cols == 0) {
        ad_fail(t, AD_ESHAPE, "log_softmax: rows are empty");
        return AD_NONE;
    }
    return ad_commit(t, ad_push(t, OP_LOG_SOFTMAX, s, Z, 0));
}
static ad_status fwd_log_softmax(ad_tape *t, ad_node *n) {
    const double *z = t->nodes[n->a].val;
    int k = n->cols;
    for (int i = 0; i < n->rows; i++) {
        double l = lse(z + (size_t)i * k, k);
        for (int j = 0; j < k; j++) n->val[(size_t)i * k + j] = z[(size_t)i * k + j] - l;
    }
    return AD_OK;
}
// Per-row sum of g as a column [m, 1] (a scalar for a single row), for broadcasting.
static ad_var row_sums(ad_tape *t, ad_var g) {
    ad_shape s = ad_shape_fast(t, g);
    return ad_sum_to(t, g, s.rank == 2 ? ad_mat_shape(s.rows, 1) : ad_scalar_shape());
}
static void rev_log_softmax(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need; // g - softmax(z) * rowsum(g)
    gin[0] = ad_sub(t, g, ad_mul(t, ad_exp(t, y), row_sums(t, g)));
}
AD_DEF(log_softmax, 1, fwd_log_softmax, rev_log_softmax);

// ---- softmax per row: Z [m, k] -> [m, k] ----

ad_var ad_softmax(ad_tape *t, ad_var Z) {
    if (!ad_check_args(t, "softmax", 1, &Z)) return AD_NONE;
    ad_shape s = ad_shape_fast(t, Z);
    if (s.cols == 0) {
        ad_fail(t, AD_ESHAPE, "softmax: rows are empty");
        return AD_NONE;
    }
    return ad_commit(t, ad_push(t, OP_SOFTMAX, s, Z, 0));
}
void ad_softmax_rows(const double *z, int m, int k, double *y) {
    for (int i = 0; i < m; i++) {
        const double *zi = z + (size_t)i * k;
        double *yi = y + (size_t)i * k, mx = zi[0], s = 0;
        for (int j = 1; j < k; j++) mx = zi[j] > mx ? zi[j] : mx;
        for (int j = 0; j < k; j++) s += yi[j] = exp(zi[j] - mx);
        for (int j = 0; j < k; j++) yi[j] /= s;
    }
}
static ad_status fwd_softmax(ad_tape *t, ad_node *n) {
    ad_softmax_rows(t->nodes[n->a].val, n->rows, n->cols, n->val);
    return AD_OK;
}
ad_var ad_softmax_adjoint(ad_tape *t, ad_var P, ad_var g) {
    return ad_mul(t, P, ad_sub(t, g, row_sums(t, ad_mul(t, g, P))));
}
static void rev_softmax(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need; // y * (g - rowsum(g * y))
    gin[0] = ad_softmax_adjoint(t, y, g);
}
AD_DEF(softmax, 1, fwd_softmax, rev_softmax);

// ---- cross-entropy per row against integer labels: Z [m, k] -> [m] (a vector Z -> scalar) ----

static bool check_labels(ad_tape *t, const char *op, int m, int k, const int32_t *labels) {
    if (m > 0 && !labels) {
        ad_fail(t, AD_EARG, "%s: NULL labels", op);
        return false;
    }
    for (int i = 0; i < m; i++) {
        if (labels[i] < 0 || labels[i] >= k) {
            ad_fail(t, AD_EARG, "%s: label %d is %d, outside [0, %d)", op, i, (int)labels[i], k);
            return false;
        }
    }
    return true;
}

ad_var ad_xent(ad_tape *t, ad_var Z, const int32_t *labels) {
    if (!ad_check_args(t, "xent", 1, &Z)) return AD_NONE;
    ad_shape s = ad_shape_fast(t, Z);
    if (s.rank == 0 || s.cols == 0) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "xent: logits %s must be [m, k] or [k] with k > 0", ad_shape_str(s, b));
        return AD_NONE;
    }
    if (!check_labels(t, "xent", s.rows, s.cols, labels)) return AD_NONE;
    ad_node *p = ad_push(t, OP_XENT, s.rank == 2 ? ad_vec_shape(s.rows) : ad_scalar_shape(), Z, 0);
    if (!p) return AD_NONE;
    p->idx = ad_copy_idx(t, s.rows, labels);
    return ad_commit(t, p); // drops the node if the copy failed
}
void ad_xent_rows(const double *z, int m, int k, const int32_t *labels, double *ce) {
    for (int i = 0; i < m; i++) {
        const double *zi = z + (size_t)i * k;
        ce[i] = lse(zi, k) - zi[labels[i]];
    }
}
static ad_status fwd_xent(ad_tape *t, ad_node *n) {
    const ad_node *Z = &t->nodes[n->a];
    ad_xent_rows(Z->val, Z->rows, Z->cols, n->idx, n->val);
    return AD_OK;
}
ad_var ad_xent_adjoint(ad_tape *t, ad_var P, ad_var onehot, ad_var g) {
    ad_shape s = ad_shape_fast(t, P);
    ad_var gcol = s.rank == 2 ? ad_reshape(t, g, ad_mat_shape(s.rows, 1)) : g;
    return ad_mul(t, ad_sub(t, P, onehot), gcol);
}
static void rev_xent(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need; // (softmax(Z) - onehot(labels)) scaled per row by g
    ad_var Z = ad_input(t, y, 0);
    ad_shape s = ad_shape_fast(t, Z);
    ad_var p = ad_softmax(t, Z);
    ad_var oh = ad_reshape(t, ad_onehot(t, s.rows, s.cols, ad_node_at(t, y)->idx), s);
    gin[0] = ad_xent_adjoint(t, p, oh, g);
}
AD_DEF(xent, 1, fwd_xent, rev_xent);

ad_var ad_onehot(ad_tape *t, int m, int k, const int32_t *labels) {
    if (t->status != AD_OK) return AD_NONE;
    if (m < 0 || k < 1) {
        ad_fail(t, AD_EARG, "onehot: bad size %d x %d", m, k);
        return AD_NONE;
    }
    if (!check_labels(t, "onehot", m, k, labels)) return AD_NONE;
    ad_node *p = ad_push(t, OP_ONEHOT, ad_mat_shape(m, k), 0, 0);
    if (!p) return AD_NONE;
    p->idx = ad_copy_idx(t, m, labels);
    p->flags = NF_NOGRAD;
    return ad_commit(t, p); // drops the node if the copy failed
}
static ad_status fwd_onehot(ad_tape *t, ad_node *n) {
    (void)t;
    memset(n->val, 0, (size_t)ad_size(n) * sizeof(double));
    for (int i = 0; i < n->rows; i++) n->val[(size_t)i * n->cols + n->idx[i]] = 1;
    return AD_OK;
}
AD_DEF(onehot, 0, fwd_onehot, NULL);

// ---- ||v||^2 -> scalar ----

ad_var ad_sqnorm(ad_tape *t, ad_var v) {
    if (!ad_check_args(t, "sqnorm", 1, &v)) return AD_NONE;
    return ad_commit(t, ad_push(t, OP_SQNORM, ad_scalar_shape(), v, 0));
}
static ad_status fwd_sqnorm(ad_tape *t, ad_node *n) {
    const ad_node *V = &t->nodes[n->a];
    double s = 0;
    for (int i = 0, sz = ad_size(V); i < sz; i++) s += V->val[i] * V->val[i];
    n->val[0] = s;
    return AD_OK;
}
static void rev_sqnorm(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_scale(t, ad_mul(t, g, ad_input(t, y, 0)), 2);
}
AD_DEF(sqnorm, 1, fwd_sqnorm, rev_sqnorm);

// ---- ||v||^p = (||v||^2)^(p/2) ----

ad_var ad_normp(ad_tape *t, ad_var v, double p) {
    if (!ad_check_args(t, "normp", 1, &v)) return AD_NONE;
    if (!(p > 0) || !isfinite(p)) {
        ad_fail(t, AD_EARG, "normp: exponent p = %g must be positive", p);
        return AD_NONE;
    }
    ad_node *n = ad_push(t, OP_NORMP, ad_scalar_shape(), v, 0);
    if (!n) return AD_NONE;
    n->p0 = p;
    return ad_commit(t, n);
}
static ad_status fwd_normp(ad_tape *t, ad_node *n) {
    const ad_node *V = &t->nodes[n->a];
    double s = 0;
    for (int i = 0, sz = ad_size(V); i < sz; i++) s += V->val[i] * V->val[i];
    n->val[0] = pow(s, n->p0 / 2);
    return AD_OK;
}
// g p ||v||^(p-2) v, with ||v||^(p-2) read as 0 at v = 0 (powz)
static void rev_normp(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    ad_var v = ad_input(t, y, 0);
    double p = ad_node_at(t, y)->p0;
    if (p == 2) {
        gin[0] = ad_scale(t, ad_mul(t, g, v), 2);
        return;
    }
    ad_var c = ad_mul(t, g, ad_scale(t, ad_powz(t, ad_sqnorm(t, v), p / 2 - 1), p));
    gin[0] = ad_mul(t, c, v);
}
AD_DEF(normp, 1, fwd_normp, rev_normp);

// ---- powz: s^e for s > 0 and 0 at s = 0 (s >= 0), elementwise; used by normp ----

ad_var ad_powz(ad_tape *t, ad_var s, double e) {
    if (!ad_check_args(t, "powz", 1, &s)) return AD_NONE;
    ad_node *p = ad_push(t, OP_POWZ, ad_shape_fast(t, s), s, 0);
    if (!p) return AD_NONE;
    p->p0 = e;
    return ad_commit(t, p);
}
static ad_status fwd_powz(ad_tape *t, ad_node *n) {
    const double *s = t->nodes[n->a].val;
    for (int i = 0, sz = ad_size(n); i < sz; i++) {
        if (s[i] < 0) {
            ad_fail(t, AD_EDOMAIN, "powz: entry %d is %g < 0", i, s[i]);
            return AD_EDOMAIN;
        }
        n->val[i] = s[i] > 0 ? pow(s[i], n->p0) : 0;
    }
    return AD_OK;
}
static void rev_powz(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    ad_var s = ad_input(t, y, 0);
    double e = ad_node_at(t, y)->p0;
    if (e == 0) return;
    gin[0] = ad_mul(t, g, ad_scale(t, ad_powz(t, s, e - 1), e));
}
AD_DEF(powz, 1, fwd_powz, rev_powz);

// ---- smoothed ||v||_q^q = sum (v_i^2 + eps)^(q/2), a composition ----

ad_var ad_lq_smooth(ad_tape *t, ad_var v, double q, double eps) {
    if (t->status == AD_OK && !(q > 0 && q < 1 && eps > 0)) {
        ad_fail(t, AD_EARG, "lq_smooth: needs 0 < q < 1 and eps > 0 (q = %g, eps = %g)", q, eps);
        return AD_NONE;
    }
    return ad_sum(t, ad_pow(t, ad_shift(t, ad_square(t, v), eps), q / 2));
}
