// Elementwise ops: binary ones with broadcasting, unary ones, and the piecewise-constant masks
// reverse rules use. Each op: constructor (shape and domain check), forward, reverse rule.
#include "image_kernels.h" // imk_parallel
#include "internal.h"

#include <math.h>

// ---- shared constructors ----

// x * 1 and 1 x are x exactly, so a product with the constant scalar 1 (the seed of a gradient,
// which the first reverse rules of every sweep multiply by) or a scale by 1 records nothing and
// returns x, computed unless the tape defers. Not inside a gradient recorded without
// AD_CREATE_GRAPH when x carries a gradient: what such a sweep returns must stay a constant.
static inline bool is_unit(const ad_node *n) {
    return (n->flags & (NF_VALUE | NF_NOGRAD)) == (NF_VALUE | NF_NOGRAD) && n->rows == 1 &&
           n->cols == 1 && n->val[0] == 1.0;
}
static inline bool can_pass(const ad_tape *t, const ad_node *x, ad_shape s) {
    return (!t->nograd || (x->flags & NF_NOGRAD)) && ad_shape_eq(ad_node_shape(x), s);
}
static ad_var pass(ad_tape *t, ad_var x) { return t->lazy || ad_force(t, x) ? x : AD_NONE; }
// A tensor times a constant scalar of known value is the same as a scale by that value (k x is
// x k exactly), which has one input, no broadcast, and a unary reverse rule.
static inline bool is_const_scalar(const ad_node *n) {
    return (n->flags & (NF_VALUE | NF_NOGRAD)) == (NF_VALUE | NF_NOGRAD) && n->rows == 1 &&
           n->cols == 1;
}

// Why binary() cannot record op(a, b): a bad handle, or shapes that do not broadcast. Out of the
// way of the common path, which then keeps no shapes around for a message.
__attribute__((noinline, cold)) static ad_var binary_fail(ad_tape *t, ad_op op, ad_var a, ad_var b) {
    ad_var in[2] = {a, b};
    if (!ad_check_args_slow(t, ad_ops[op]->name, 2, in)) return AD_NONE;
    char x[32], y[32];
    ad_fail(t, AD_ESHAPE, "%s: shapes %s and %s do not broadcast", ad_ops[op]->name,
            ad_shape_str(ad_shape_fast(t, a), x), ad_shape_str(ad_shape_fast(t, b), y));
    return AD_NONE;
}

// A product with an operand of size 1 that need not be recorded as one: x, or a scale of x
// (above); AD_NONE if neither applies.
static ad_var mul_shortcut(ad_tape *t, ad_var a, ad_var b, ad_shape s) {
    const ad_node *A = ad_node_at(t, a), *B = ad_node_at(t, b);
    if (is_unit(A) && can_pass(t, B, s)) return pass(t, b);
    if (is_unit(B) && can_pass(t, A, s)) return pass(t, a);
    if (ad_size(A) == 1 && ad_size(B) > 1 && is_const_scalar(A) && ad_shape_eq(ad_node_shape(B), s))
        return ad_scale(t, b, A->val[0]);
    if (ad_size(B) == 1 && ad_size(A) > 1 && is_const_scalar(B) && ad_shape_eq(ad_node_shape(A), s))
        return ad_scale(t, a, B->val[0]);
    return AD_NONE;
}

static ad_var binary(ad_tape *t, ad_op op, ad_var a, ad_var b, double p0) {
    if (!ad_valid(t, a) || !ad_valid(t, b)) return binary_fail(t, op, a, b);
    const ad_node *A = ad_node_at(t, a), *B = ad_node_at(t, b);
    ad_shape s;
    if (A->rows == B->rows && A->cols == B->cols)
        s = (ad_shape){A->rank > B->rank ? A->rank : B->rank, A->rows, A->cols};
    else if (!ad_broadcast_shape(ad_node_shape(A), ad_node_shape(B), &s))
        return binary_fail(t, op, a, b);
    if (op == OP_MUL && (ad_size(A) == 1 || ad_size(B) == 1)) {
        ad_var r = mul_shortcut(t, a, b, s);
        if (r || t->status != AD_OK) return r;
    }
    ad_node *p = ad_push(t, op, s, a, b);
    if (!p) return AD_NONE;
    p->p0 = p0;
    return ad_commit(t, p);
}

static ad_var unary(ad_tape *t, ad_op op, ad_var x, double p0, double p1) {
    if (!ad_valid(t, x)) {
        ad_check_args_slow(t, ad_ops[op]->name, 1, &x);
        return AD_NONE;
    }
    const ad_node *X = ad_node_at(t, x);
    ad_shape s = {X->rank, X->rows, X->cols};
    if (op == OP_SCALE && p0 == 1.0 && can_pass(t, X, s)) return pass(t, x);
    ad_node *p = ad_push(t, op, s, x, 0);
    if (!p) return AD_NONE;
    p->p0 = p0;
    p->p1 = p1;
    return ad_commit(t, p);
}

// The adjoint g of a broadcast result, summed down to the shape of operand x (a no-op when the
// shapes agree, the usual case).
static inline ad_var unbroadcast(ad_tape *t, ad_var g, ad_var x) {
    const ad_node *G = ad_node_at(t, g), *X = ad_node_at(t, x);
    if (G->rows == X->rows && G->cols == X->cols && G->rank == X->rank) return g;
    return ad_sum_to(t, g, ad_node_shape(X));
}

// Passes over equal shapes of at least PAR_MIN doubles are split over the tape's threads in
// blocks of PAR_BLOCK entries: an MLP's [5000, 300] activations and their adjoints (12 MB each, a
// few per LL step), and the linear model's [5000, 10] ones, about 15 per LL step, 25-50 us each
// on one thread, where a pool's waiting worker (pool.c) joins in about a microsecond. The unary
// ops that call libm (exp, sigmoid, tanh, ...) cost 10-20 ns an entry, so they split from
// LIBM_MIN entries in blocks of LIBM_BLOCK: hyper-cleaning's sigmoid(x) [5000], twice per LL
// step. (The work each passes to imk_parallel, 2-3 doubles an entry and 32 for libm's, meets its
// minimum of 2^16 at these sizes.) Each entry is computed alone, so the bits do not depend on
// the threads.
enum { PAR_MIN = 1 << 15, PAR_BLOCK = 1 << 12, LIBM_MIN = 1 << 11, LIBM_BLOCK = 1 << 9 };
typedef struct {
    const double *a, *b; // b: NULL for unary ops
    double *y;
    double p0, p1;
    int size, block;
} elem_job;
static inline bool par_pass(const ad_tape *t, int size, int min) { return size >= min && t->threads > 1; }
static inline int par_blocks(int size, int block) { return (size + block - 1) / block; }
// Entries [lo, hi) of job c's blocks, as indices into its arrays.
#define PAR_RANGE(j, lo, hi, i0, i1)                                                            \
    const elem_job *j = c;                                                                     \
    int i0 = lo * j->block, i1 = hi * j->block < j->size ? hi * j->block : j->size

// y = EXPR(u, v) over the broadcast of a and b (p0: the node's parameter): fast paths for equal
// shapes and a scalar operand.
#define BINARY_FWD(name, EXPR)                                                                  \
    static void par_##name(void *c, int lo, int hi) {                                          \
        PAR_RANGE(j, lo, hi, i0, i1);                                                          \
        const double p0 = j->p0, *a = j->a, *b = j->b;                                         \
        (void)p0;                                                                              \
        for (int i = i0; i < i1; i++) { double u = a[i], v = b[i]; j->y[i] = (EXPR); }         \
    }                                                                                          \
    static ad_status fwd_##name(ad_tape *t, ad_node *n) {                                      \
        const ad_node *A = &t->nodes[n->a], *B = &t->nodes[n->b];                              \
        const double p0 = n->p0;                                                               \
        (void)p0;                                                                              \
        const double *a = A->val, *b = B->val;                                                 \
        double *y = n->val;                                                                    \
        int size = ad_size(n), na = ad_size(A), nb = ad_size(B);                              \
        if (size == 1) { /* scalars: the common case of long chains */                         \
            double u = a[0], v = b[0];                                                         \
            y[0] = (EXPR);                                                                     \
        } else if (na == size && nb == size && par_pass(t, size, PAR_MIN)) {                   \
            elem_job j = {a, b, y, p0, 0, size, PAR_BLOCK};                                    \
            ad_pool *pool = ad_tape_pool(t); /* first: it may set threads to 1 */               \
            imk_parallel(pool, t->threads, par_blocks(size, PAR_BLOCK), (size_t)size * 3,       \
                         par_##name, &j);                                                      \
        } else if (na == size && nb == size) {                                                 \
            for (int i = 0; i < size; i++) { double u = a[i], v = b[i]; y[i] = (EXPR); }      \
        } else if (na == 1) {                                                                  \
            double u = a[0];                                                                   \
            for (int i = 0; i < size; i++) { double v = b[i]; y[i] = (EXPR); }                \
        } else if (nb == 1) {                                                                  \
            double v = b[0];                                                                   \
            for (int i = 0; i < size; i++) { double u = a[i]; y[i] = (EXPR); }                \
        } else { /* a row or a column broadcast: each row's loop contiguous, same values */    \
            int ar = A->rows == 1 ? 0 : A->cols, ac = A->cols == 1 ? 0 : 1;                    \
            int br = B->rows == 1 ? 0 : B->cols, bc = B->cols == 1 ? 0 : 1, nc = n->cols;      \
            for (int r = 0; r < n->rows; r++) {                                                \
                const double *ra = a + (size_t)r * ar, *rb = b + (size_t)r * br;               \
                double *ry = y + (size_t)r * nc;                                               \
                if (ac && bc) {                                                                \
                    for (int c = 0; c < nc; c++) { double u = ra[c], v = rb[c]; ry[c] = (EXPR); }\
                } else if (ac) {                                                               \
                    double v = rb[0];                                                          \
                    for (int c = 0; c < nc; c++) { double u = ra[c]; ry[c] = (EXPR); }         \
                } else {                                                                       \
                    double u = ra[0];                                                          \
                    for (int c = 0; c < nc; c++) { double v = rb[c * bc]; ry[c] = (EXPR); }   \
                }                                                                              \
            }                                                                                  \
        }                                                                                      \
        return AD_OK;                                                                          \
    }

// MIN, BLOCK: when it splits and in what blocks; COST: its work per entry, for imk_parallel.
#define UNARY_FWD_AT(name, EXPR, MIN, BLOCK, COST)                                              \
    static void par_##name(void *c, int lo, int hi) {                                          \
        PAR_RANGE(j, lo, hi, i0, i1);                                                          \
        const double p0 = j->p0, p1 = j->p1, *x = j->a;                                        \
        (void)p0, (void)p1;                                                                    \
        for (int i = i0; i < i1; i++) { double u = x[i]; j->y[i] = (EXPR); }                   \
    }                                                                                          \
    static ad_status fwd_##name(ad_tape *t, ad_node *n) {                                      \
        const double *x = t->nodes[n->a].val;                                                  \
        double *y = n->val;                                                                    \
        const double p0 = n->p0, p1 = n->p1;                                                   \
        (void)p0, (void)p1;                                                                    \
        int size = ad_size(n);                                                                 \
        if (par_pass(t, size, MIN)) {                                                          \
            elem_job j = {x, NULL, y, p0, p1, size, BLOCK};                                    \
            ad_pool *pool = ad_tape_pool(t); /* first: it may set threads to 1 */               \
            imk_parallel(pool, t->threads, par_blocks(size, BLOCK), (size_t)size * (COST),      \
                         par_##name, &j);                                                      \
            return AD_OK;                                                                      \
        }                                                                                      \
        for (int i = 0; i < size; i++) { double u = x[i]; y[i] = (EXPR); }                     \
        return AD_OK;                                                                          \
    }
#define UNARY_FWD(name, EXPR) UNARY_FWD_AT(name, EXPR, PAR_MIN, PAR_BLOCK, 2)
#define UNARY_FWD_LIBM(name, EXPR) UNARY_FWD_AT(name, EXPR, LIBM_MIN, LIBM_BLOCK, 32)

// Fails with a message naming the first entry of x outside the domain (BAD true).
#define DOMAIN_CHECK(t, n, src, BAD, what)                                                      \
    do {                                                                                       \
        const ad_node *X_ = &t->nodes[src];                                                    \
        for (int i = 0, sz = ad_size(X_); i < sz; i++) {                                       \
            double u = X_->val[i];                                                             \
            if (BAD) {                                                                         \
                char b_[32];                                                                   \
                ad_fail(t, AD_EDOMAIN, "%s: %s (entry %d of %s is %g)", ad_ops[n->op]->name,    \
                        what, i, ad_shape_str(ad_node_shape(X_), b_), u);                      \
                return AD_EDOMAIN;                                                             \
            }                                                                                  \
        }                                                                                      \
    } while (0)

// ---- binary: add, sub, mul, div, min, max ----

ad_var ad_add(ad_tape *t, ad_var a, ad_var b) { return binary(t, OP_ADD, a, b, 0); }
BINARY_FWD(add, u + v)
static void rev_add(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    if (need[0]) gin[0] = unbroadcast(t, g, ad_input(t, y, 0));
    if (need[1]) gin[1] = unbroadcast(t, g, ad_input(t, y, 1));
}

ad_var ad_sub(ad_tape *t, ad_var a, ad_var b) { return binary(t, OP_SUB, a, b, 0); }
BINARY_FWD(sub, u - v)
static void rev_sub(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    if (need[0]) gin[0] = unbroadcast(t, g, ad_input(t, y, 0));
    if (need[1]) gin[1] = ad_negated(unbroadcast(t, g, ad_input(t, y, 1)));
}

// y + alpha x: the step of a gradient method in one node. Exactly y - (s g) for alpha = -s
// (rounding is symmetric), so a step written either way gives the same numbers.
ad_var ad_axpy(ad_tape *t, ad_var y, double alpha, ad_var x) {
    if (!isfinite(alpha)) {
        ad_fail(t, AD_EARG, "axpy: alpha = %g is not finite", alpha);
        return AD_NONE;
    }
    return binary(t, OP_AXPY, y, x, alpha);
}
BINARY_FWD(axpy, u + p0 * v)
static void rev_axpy(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    if (need[0]) gin[0] = unbroadcast(t, g, ad_input(t, y, 0));
    if (need[1]) gin[1] = unbroadcast(t, ad_scale(t, g, ad_node_at(t, y)->p0), ad_input(t, y, 1));
}

// 1 x with the 1 first, as reverse rules scale a contribution by the seed of a gradient: x, as
// binary's mul_shortcut finds (the broadcast shape is x's when x has at least 1's rank and no
// empty dimension), without binary's checks and broadcast.
ad_var ad_mul(ad_tape *t, ad_var a, ad_var b) {
    // one compare for every other product
    if (ad_index(a) == t->unit && ad_valid(t, a) && ad_valid(t, b)) {
        const ad_node *A = ad_node_at(t, a), *B = ad_node_at(t, b);
        if (is_unit(A) && A->rank <= B->rank && B->rows >= 1 && B->cols >= 1 &&
            (!t->nograd || (B->flags & NF_NOGRAD)))
            return pass(t, b);
    }
    return binary(t, OP_MUL, a, b, 0);
}
BINARY_FWD(mul, u * v)
static void rev_mul(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var a = ad_input(t, y, 0), b = ad_input(t, y, 1);
    if (need[0]) gin[0] = unbroadcast(t, ad_mul(t, g, b), a);
    if (need[1]) gin[1] = unbroadcast(t, ad_mul(t, g, a), b);
}

ad_var ad_div(ad_tape *t, ad_var a, ad_var b) { return binary(t, OP_DIV, a, b, 0); }
BINARY_FWD(div_, u / v)
static ad_status fwd_div(ad_tape *t, ad_node *n) {
    DOMAIN_CHECK(t, n, n->b, u == 0, "division by zero");
    return fwd_div_(t, n);
}
static void rev_div(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var a = ad_input(t, y, 0), b = ad_input(t, y, 1);
    if (need[0]) gin[0] = unbroadcast(t, ad_div(t, g, b), a);
    // d(a/b)/db = -y / b
    if (need[1]) gin[1] = ad_negated(unbroadcast(t, ad_div(t, ad_mul(t, g, y), b), b));
}

ad_var ad_min(ad_tape *t, ad_var a, ad_var b) { return binary(t, OP_MIN, a, b, 0); }
BINARY_FWD(min, u < v ? u : v)
static void rev_min(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var a = ad_input(t, y, 0), b = ad_input(t, y, 1);
    if (need[0]) gin[0] = unbroadcast(t, ad_mul(t, g, ad_cmp(t, b, a)), a);
    if (need[1]) gin[1] = unbroadcast(t, ad_mul(t, g, ad_cmp(t, a, b)), b);
}

ad_var ad_max(ad_tape *t, ad_var a, ad_var b) { return binary(t, OP_MAX, a, b, 0); }
BINARY_FWD(max, u > v ? u : v)
static void rev_max(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    ad_var a = ad_input(t, y, 0), b = ad_input(t, y, 1);
    if (need[0]) gin[0] = unbroadcast(t, ad_mul(t, g, ad_cmp(t, a, b)), a);
    if (need[1]) gin[1] = unbroadcast(t, ad_mul(t, g, ad_cmp(t, b, a)), b);
}

// ---- unary ----

ad_var ad_neg(ad_tape *t, ad_var x) { return unary(t, OP_NEG, x, 0, 0); }
UNARY_FWD(neg, -u)
static void rev_neg(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)t, (void)y, (void)need;
    gin[0] = ad_negated(g);
}

ad_var ad_scale(ad_tape *t, ad_var x, double c) { return unary(t, OP_SCALE, x, c, 0); }
UNARY_FWD(scale, p0 *u)
static void rev_scale(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_scale(t, g, ad_node_at(t, y)->p0);
}

ad_var ad_shift(ad_tape *t, ad_var x, double c) { return unary(t, OP_SHIFT, x, c, 0); }
UNARY_FWD(shift, u + p0)
static void rev_shift(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)t, (void)y, (void)need;
    gin[0] = g;
}

ad_var ad_pow(ad_tape *t, ad_var x, double e) {
    if (!isfinite(e)) {
        ad_fail(t, AD_EARG, "pow: exponent %g is not finite", e);
        return AD_NONE;
    }
    return unary(t, OP_POW, x, e, 0);
}
UNARY_FWD_LIBM(pow_, pow(u, p0))
static ad_status fwd_pow(ad_tape *t, ad_node *n) {
    double e = n->p0;
    if (e == nearbyint(e)) DOMAIN_CHECK(t, n, n->a, u == 0 && e < 0, "zero to a negative power");
    else DOMAIN_CHECK(t, n, n->a, u < 0 || (u == 0 && e < 1),
                      "non-integer power needs x > 0 (or x = 0 with exponent >= 1)");
    return fwd_pow_(t, n);
}
static void rev_pow(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    double e = ad_node_at(t, y)->p0;
    ad_var x = ad_input(t, y, 0);
    if (e == 0) return; // constant 1
    gin[0] = e == 1 ? g : ad_scale(t, ad_mul(t, g, ad_pow(t, x, e - 1)), e);
}

ad_var ad_abs(ad_tape *t, ad_var x) { return unary(t, OP_ABS, x, 0, 0); }
UNARY_FWD(abs, fabs(u))
static void rev_abs(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_mul(t, g, ad_sign(t, ad_input(t, y, 0)));
}

ad_var ad_sqrt(ad_tape *t, ad_var x) { return unary(t, OP_SQRT, x, 0, 0); }
UNARY_FWD(sqrt_, sqrt(u))
static ad_status fwd_sqrt(ad_tape *t, ad_node *n) {
    DOMAIN_CHECK(t, n, n->a, u < 0, "square root of a negative number");
    return fwd_sqrt_(t, n);
}
static void rev_sqrt(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_scale(t, ad_div(t, g, y), 0.5);
}

ad_var ad_square(ad_tape *t, ad_var x) { return unary(t, OP_SQUARE, x, 0, 0); }
UNARY_FWD(square, u *u)
static void rev_square(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_scale(t, ad_mul(t, g, ad_input(t, y, 0)), 2);
}

ad_var ad_exp(ad_tape *t, ad_var x) { return unary(t, OP_EXP, x, 0, 0); }
UNARY_FWD_LIBM(exp, exp(u))
static void rev_exp(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_mul(t, g, y);
}

ad_var ad_log(ad_tape *t, ad_var x) { return unary(t, OP_LOG, x, 0, 0); }
UNARY_FWD_LIBM(log_, log(u))
static ad_status fwd_log(ad_tape *t, ad_node *n) {
    DOMAIN_CHECK(t, n, n->a, !(u > 0), "log of a non-positive number");
    return fwd_log_(t, n);
}
static void rev_log(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_div(t, g, ad_input(t, y, 0));
}

ad_var ad_sin(ad_tape *t, ad_var x) { return unary(t, OP_SIN, x, 0, 0); }
UNARY_FWD_LIBM(sin, sin(u))
static void rev_sin(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_mul(t, g, ad_cos(t, ad_input(t, y, 0)));
}

ad_var ad_cos(ad_tape *t, ad_var x) { return unary(t, OP_COS, x, 0, 0); }
UNARY_FWD_LIBM(cos, cos(u))
static void rev_cos(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_negated(ad_mul(t, g, ad_sin(t, ad_input(t, y, 0))));
}

ad_var ad_tanh(ad_tape *t, ad_var x) { return unary(t, OP_TANH, x, 0, 0); }
UNARY_FWD_LIBM(tanh, tanh(u))
static void rev_tanh(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need; // g (1 - y^2)
    gin[0] = ad_sub(t, g, ad_mul(t, g, ad_square(t, y)));
}

ad_var ad_sigmoid(ad_tape *t, ad_var x) { return unary(t, OP_SIGMOID, x, 0, 0); }
UNARY_FWD_LIBM(sigmoid, u >= 0 ? 1 / (1 + exp(-u)) : exp(u) / (1 + exp(u)))
static void rev_sigmoid(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need; // g y (1 - y)
    gin[0] = ad_mul(t, g, ad_sub(t, y, ad_square(t, y)));
}

ad_var ad_softplus(ad_tape *t, ad_var x) { return unary(t, OP_SOFTPLUS, x, 0, 0); }
UNARY_FWD_LIBM(softplus, (u > 0 ? u : 0) + log1p(exp(-fabs(u))))
static void rev_softplus(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_mul(t, g, ad_sigmoid(t, ad_input(t, y, 0)));
}

ad_var ad_relu(ad_tape *t, ad_var x) { return unary(t, OP_RELU, x, 0, 0); }
UNARY_FWD(relu, u > 0 ? u : 0)
// g relu'(x) as one node (one pass over [n, h] where step and mul made two, and no mask kept)
static void rev_relu(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    gin[0] = ad_relu_mask(t, g, ad_input(t, y, 0));
}

// g step(x): the numbers of ad_mul(g, ad_step(x)), computed in one pass. Linear in g, so its
// reverse rule is itself with the same mask; x only selects (zero derivative).
ad_var ad_relu_mask(ad_tape *t, ad_var g, ad_var x) { return binary(t, OP_RELU_MASK, g, x, 0); }
BINARY_FWD(relu_mask_any, u * (v > 0 ? 1.0 : 0.0)) // broadcasting shapes
// Equal shapes, entries [i0, i1): step(x) into a block on the stack, then the products, two loops
// the compiler vectorizes (written as one, its select and product become a branch on each sign).
static void relu_mask_run(const double *g, const double *x, double *y, int i0, int i1) {
    double s[256];
    for (int b = i0; b < i1; b += 256) {
        int m = i1 - b < 256 ? i1 - b : 256;
        for (int i = 0; i < m; i++) s[i] = x[b + i] > 0 ? 1.0 : 0.0;
        for (int i = 0; i < m; i++) y[b + i] = g[b + i] * s[i];
    }
}
static void par_relu_mask(void *c, int lo, int hi) {
    PAR_RANGE(j, lo, hi, i0, i1);
    relu_mask_run(j->a, j->b, j->y, i0, i1);
}
static ad_status fwd_relu_mask(ad_tape *t, ad_node *n) {
    const ad_node *G = &t->nodes[n->a], *X = &t->nodes[n->b];
    int size = ad_size(n);
    if (ad_size(G) != size || ad_size(X) != size) return fwd_relu_mask_any(t, n);
    if (par_pass(t, size, PAR_MIN)) {
        elem_job j = {G->val, X->val, n->val, 0, 0, size, PAR_BLOCK};
        ad_pool *pool = ad_tape_pool(t); // first: it may set threads to 1
        imk_parallel(pool, t->threads, par_blocks(size, PAR_BLOCK), (size_t)size * 3, par_relu_mask,
                     &j);
    } else {
        relu_mask_run(G->val, X->val, n->val, 0, size);
    }
    return AD_OK;
}
static void rev_relu_mask(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    if (need[0]) gin[0] = unbroadcast(t, ad_relu_mask(t, g, ad_input(t, y, 1)), ad_input(t, y, 0));
}

ad_var ad_clamp(ad_tape *t, ad_var x, double lo, double hi) {
    if (!(lo <= hi)) {
        ad_fail(t, AD_EARG, "clamp: empty box [%g, %g]", lo, hi);
        return AD_NONE;
    }
    return unary(t, OP_CLAMP, x, lo, hi);
}
UNARY_FWD(clamp, u < p0 ? p0 : u > p1 ? p1 : u)
static void rev_clamp(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_node *n = ad_node_at(t, y);
    ad_var x = ad_input(t, y, 0);
    double lo = n->p0, hi = n->p1;
    gin[0] = ad_mul(t, g, ad_inbox(t, x, lo, hi));
}

// ---- piecewise constant: no reverse rule (zero derivative) ----

ad_var ad_sign(ad_tape *t, ad_var x) { return unary(t, OP_SIGN, x, 0, 0); }
UNARY_FWD(sign, (double)((u > 0) - (u < 0)))

ad_var ad_step(ad_tape *t, ad_var x) { return unary(t, OP_STEP, x, 0, 0); }
UNARY_FWD(step, u > 0 ? 1.0 : 0.0)

ad_var ad_inbox(ad_tape *t, ad_var x, double lo, double hi) { return unary(t, OP_INBOX, x, lo, hi); }
UNARY_FWD(inbox, u > p0 && u < p1 ? 1.0 : 0.0)

ad_var ad_cmp(ad_tape *t, ad_var a, ad_var b) { return binary(t, OP_CMP, a, b, 0); }
BINARY_FWD(cmp, u > v ? 1.0 : u == v ? 0.5 : 0.0)

ad_var ad_detach(ad_tape *t, ad_var x) {
    if (!ad_check_args(t, "detach", 1, &x)) return AD_NONE;
    ad_node *p = ad_push(t, OP_DETACH, ad_shape_fast(t, x), x, 0);
    if (!p) return AD_NONE;
    p->flags = NF_NOGRAD;
    return ad_commit(t, p);
}
UNARY_FWD(detach, u)

// ---- the table entries of this file ----

AD_DEF(add, 2, fwd_add, rev_add);
AD_DEF(sub, 2, fwd_sub, rev_sub);
AD_DEF(axpy, 2, fwd_axpy, rev_axpy);
AD_DEF(mul, 2, fwd_mul, rev_mul);
AD_DEF(div, 2, fwd_div, rev_div);
AD_DEF(min, 2, fwd_min, rev_min);
AD_DEF(max, 2, fwd_max, rev_max);
AD_DEF(neg, 1, fwd_neg, rev_neg);
AD_DEF(scale, 1, fwd_scale, rev_scale);
AD_DEF(shift, 1, fwd_shift, rev_shift);
AD_DEF(pow, 1, fwd_pow, rev_pow);
AD_DEF(abs, 1, fwd_abs, rev_abs);
AD_DEF(sqrt, 1, fwd_sqrt, rev_sqrt);
AD_DEF(square, 1, fwd_square, rev_square);
AD_DEF(exp, 1, fwd_exp, rev_exp);
AD_DEF(log, 1, fwd_log, rev_log);
AD_DEF(sin, 1, fwd_sin, rev_sin);
AD_DEF(cos, 1, fwd_cos, rev_cos);
AD_DEF(tanh, 1, fwd_tanh, rev_tanh);
AD_DEF(sigmoid, 1, fwd_sigmoid, rev_sigmoid);
AD_DEF(softplus, 1, fwd_softplus, rev_softplus);
AD_DEF(relu, 1, fwd_relu, rev_relu);
AD_DEF(relu_mask, 2, fwd_relu_mask, rev_relu_mask);
AD_DEF(clamp, 1, fwd_clamp, rev_clamp);
AD_DEF(sign, 1, fwd_sign, NULL);
AD_DEF(step, 1, fwd_step, NULL);
AD_DEF(inbox, 1, fwd_inbox, NULL);
AD_DEF(cmp, 2, fwd_cmp, NULL);
AD_DEF(detach, 1, fwd_detach, NULL);
