// Derivatives: the reverse sweep (vjp) and what is built on it — gradients, Hessian-vector
// products and mixed second derivatives. Adjoints are recorded with tape ops, so with
// AD_CREATE_GRAPH they can be differentiated again.
#include "internal.h"

#include <stdlib.h>
#include <string.h>

// dep[] bits of a node in the sweep's range: it depends on a wrt node through differentiable ops
// (DEP), its adjoint is an accumulator this sweep made (OWNED), its first / second input is such
// a node (NEED_A, NEED_B: the input needs a contribution from its reverse rule).
// a node, and (FRESH) its adjoint so far is one contribution that a reverse rule had just made
// and did not also give as its other contribution or alongside an alias: the sweep may make it
// the accumulator if a second contribution comes (most adjoints get one: checked only then).
enum { DEP = 1, OWNED = 2, NEED_A = 4, NEED_B = 8, FRESH = 16 };

// One forward pass over [lo, hi]: the wrt nodes are marked DEP already. It runs over every node,
// so the bits are combined without branching on them (measured: the dependent / constant pattern
// of a long recording mispredicts); an input below lo (node 0 for an unused one) reads as 0.
static void mark_dependents(const ad_tape *t, int32_t lo, int32_t hi, uint8_t *restrict dep) {
    _Static_assert(NEED_A == DEP << 2 && NEED_B == DEP << 3, "need bits are shifted dep bits");
    const ad_node *restrict n = t->nodes + lo; // restrict: the byte stores to dep alias nothing
    for (unsigned k = 0, len = (unsigned)(hi - lo + 1); k < len; k++, n++) {
        unsigned ia = (unsigned)(n->a - lo), ib = (unsigned)(n->b - lo);
        unsigned da = ia < k ? dep[ia] & DEP : 0, db = ib < k ? dep[ib] & DEP : 0;
        unsigned bits = n->flags & NF_NOGRAD ? 0 : da << 2 | db << 3;
        dep[k] |= (uint8_t)(bits | (bits != 0));
    }
}

// Adjoints carry a sign: a negative handle -v stands for -(node v). Negation commutes exactly
// with every reverse rule (they are linear in the adjoint, and rounding to nearest is symmetric),
// so a sweep moves signs through rules and sums and records ad_neg only for a negative result:
// sub, neg and the step y - s g of a gradient method cost no node of their own. (A handle is
// positive, its epoch below 2^31, so its negation is too.)
static inline ad_var node_of(ad_var g) { return g < 0 ? -g : g; }
static inline int32_t index_of(ad_var g) { return ad_index(node_of(g)); }

// True if the contribution c (a handle, maybe negated) is a node the reverse rule just recorded
// (at or after fresh) that nothing else can read later: not the rule's other contribution, not
// sharing memory (a reshape aliases its input; the other contribution is not an alias either),
// not a leaf, and never found again by ad_memo (it only remembers nodes on two stable inputs). A
// sweep that sums in place may then make it the accumulator instead of recording an add.
// Out of line: only a sweep that sums in place asks, and only for a node the rule made.
// like: a node c is to be summed with (AD_NONE: none), whose shape c must have, so the sum
// summed into c has the shape ad_add would record.
__attribute__((noinline)) static bool exclusive_slow(const ad_tape *t, ad_var c, ad_var other,
                                                     ad_var like) {
    int32_t C = index_of(c);
    const ad_node *n = &t->nodes[C];
    if (like && !ad_shape_eq(ad_shape_fast(t, like), ad_node_shape(n))) return false;
    if (n->op == OP_LEAF || (n->flags & (NF_VIEW | NF_STABLE)) ||
        !(n->flags & NF_VALUE) || (t->nodes[n->a].flags & t->nodes[n->b].flags & NF_STABLE))
        return false;
    return !other || (index_of(other) != C && !(t->nodes[index_of(other)].flags & NF_VIEW));
}
static inline bool exclusive(const ad_tape *t, ad_var c, ad_var other, int32_t fresh, ad_var like) {
    return index_of(c) >= fresh && exclusive_slow(t, c, other, like);
}

// y[i] += x[i] (sub: -=) for n entries.
static void add_into(double *restrict y, const double *restrict x, int n, bool sub) {
    if (sub)
        for (int i = 0; i < n; i++) y[i] -= x[i];
    else
        for (int i = 0; i < n; i++) y[i] += x[i];
}

// adj += g. A gradient that will not be differentiated again (no AD_CREATE_GRAPH, values computed
// eagerly) is summed in place once this sweep owns an accumulator node for it: a parameter used n
// times costs one add node, not n. The sweep owns a node it recorded for a sum, or one a reverse
// rule just recorded that only this adjoint holds (see exclusive; other is the rule's other
// contribution, fresh its first node): the adjoint of a state of an unrolled loop, which takes
// the next state's adjoint passed through and a product, then costs no add node either.
// Otherwise the sum is recorded as ad_add or ad_sub.
// Inline in each copy of the loop below, where in_place is a constant.
__attribute__((always_inline)) static inline ad_var accumulate(ad_tape *t, ad_var acc, ad_var g,
                                                               uint8_t *dep, bool in_place,
                                                               ad_var other, int32_t fresh) {
    if (!acc) {
        int32_t O = index_of(other);
        if (in_place && index_of(g) >= fresh &&
            (!other || (O != index_of(g) && !(t->nodes[O].flags & NF_VIEW))))
            *dep |= FRESH;
        return g;
    }
    ad_var A = node_of(acc), G = node_of(g); // handles
    bool same = (acc < 0) == (g < 0);
    if (in_place) {
        if ((*dep & (OWNED | FRESH)) == FRESH) { // the first contribution, judged now
            *dep &= (uint8_t)~FRESH;
            if (exclusive_slow(t, acc, AD_NONE, G)) *dep |= OWNED;
        }
        if ((*dep & OWNED) && ad_force(t, G)) { // g may be an input passed through: computed first
            // acc's sign stays; g adds or subtracts
            add_into(ad_val(t, A), ad_val(t, G), ad_size(ad_node_at(t, A)), !same);
            return acc;
        }
        // acc + g summed into g's node, g's sign kept: the sums ad_add / ad_sub below would
        // record (a + b is b + a, and a - b is -(b - a), exactly)
        if (exclusive(t, g, other, fresh, A) && ad_force(t, A)) {
            add_into(ad_val(t, G), ad_val(t, A), ad_size(ad_node_at(t, G)), !same);
            *dep |= OWNED;
            return g;
        }
    }
    *dep |= OWNED; // a fresh node: it may be summed into in place, so it is never shared
    t->no_share = in_place;
    ad_var r = same ? ad_add(t, A, G) : acc < 0 ? ad_sub(t, G, A) : ad_sub(t, A, G);
    t->no_share = 0;
    return same && acc < 0 ? -r : r;
}

// The reverse loop over the indices [lo, y], made twice: summing in place (in_place, a constant
// in each copy) asks more of each contribution, which a gradient recorded to be differentiated
// again (the inner gradient of every step of an unrolled loop) should not pay for. adj[] holds
// handles (maybe negated), dep[] the bits above, both by index - lo.
__attribute__((always_inline)) static inline void sweep(ad_tape *t, int32_t y, int32_t lo,
                                                        ad_var *adj, uint8_t *dep, bool in_place) {
    for (int32_t i = y; i >= lo && t->status == AD_OK; i--) {
        ad_var g = adj[i - lo];
        uint8_t bits = dep[i - lo];
        // leaves and nodes with no dependent input have no need bits (and a node with need bits
        // is not NOGRAD, so it has a reverse rule)
        if (!g || !(bits & (NEED_A | NEED_B))) continue;
        const ad_node *nd = &t->nodes[i];
        int32_t in[2] = {nd->a, nd->b};
        bool need[2] = {(bits & NEED_A) != 0, (bits & NEED_B) != 0};
        ad_var gin[2] = {AD_NONE, AD_NONE};
        int32_t fresh = t->n_nodes; // nodes from here on are the rule's
        uint8_t op = nd->op; // nd moves if the rule's nodes grow the array
        ad_ops[op]->rev(t, ad_ref(t, i), node_of(g), need, gin);
        // What fails in the rule is reported as the reverse of op; so is what fails later in a
        // node it recorded deferred (computed when read). A sweep that does not defer (one that
        // sums in place never does) computes its nodes as the rule records them.
        if (t->status != AD_OK) ad_fail_in_rule(t, op);
        if (!in_place && t->lazy)
            for (int32_t j = fresh; j < t->n_nodes; j++) t->nodes[j].rule = op;
        for (int k = 0; k < 2; k++) {
            if (!need[k] || !gin[k]) continue;
            ad_var c = g < 0 ? -gin[k] : gin[k];
            adj[in[k] - lo] = accumulate(t, adj[in[k] - lo], c, &dep[in[k] - lo], in_place,
                                         in_place && need[1 - k] ? gin[1 - k] : AD_NONE, fresh);
        }
    }
}

// The sweep. lazy: record adjoints without computing them (their values are computed when
// something needs them); used for the inner gradient of a Hessian-vector product, whose value
// is never read, only differentiated.
// The lists of a gradient entry point: n >= 0 inputs in wrt and as many outputs in out, which is
// cleared. Otherwise records an AD_EARG naming op (nothing is written).
static bool check_lists(ad_tape *t, const char *op, int n, const ad_var *wrt, ad_var *out) {
    const char *why = n < 0 ? "a negative number of inputs" : n > 0 && !wrt ? "wrt is NULL"
                    : n > 0 && !out ? "out is NULL" : NULL;
    if (why) {
        ad_fail(t, AD_EARG, "%s: %s (%d inputs)", op, why, n);
        return false;
    }
    for (int k = 0; k < n; k++) out[k] = AD_NONE;
    return true;
}

// No gradient flows into a constant: as an input of a derivative it is an AD_EARG naming op.
static bool check_not_constant(ad_tape *t, const char *op, int n, const ad_var *wrt) {
    for (int k = 0; k < n; k++) {
        const ad_node *w = ad_node_at(t, wrt[k]);
        if (w->flags & NF_NOGRAD) {
            ad_fail(t, AD_EARG, "%s: input %d (node %d, %s) is a constant; use ad_param", op, k,
                    (int)ad_index(wrt[k]), ad_ops[w->op]->name);
            return false;
        }
    }
    return true;
}

static ad_status vjp_impl(ad_tape *t, ad_var y, ad_var ybar, int n, const ad_var *wrt,
                          ad_var *out, unsigned flags, int lazy) {
    ad_var ys[2] = {y, ybar};
    if (!ad_check_args(t, "vjp", 2, ys)) return t->status;
    if (!ad_check_args(t, "vjp (inputs)", n, wrt)) return t->status;
    ad_shape sy = ad_shape_fast(t, y), sb = ad_shape_fast(t, ybar);
    if (sy.rows != sb.rows || sy.cols != sb.cols) {
        char x[32], z[32];
        ad_fail(t, AD_ESHAPE, "vjp: adjoint %s does not match output %s", ad_shape_str(sb, x),
                ad_shape_str(sy, z));
        return t->status;
    }
    if (!check_not_constant(t, "vjp", n, wrt)) return t->status;
    int32_t yi = ad_index(y), lo = yi;
    for (int k = 0; k < n; k++)
        if (ad_index(wrt[k]) < lo) lo = ad_index(wrt[k]);
    size_t len = (size_t)(yi - lo + 1);
    uint8_t *dep = ad_scratch(t, len * (sizeof(ad_var) + 1));
    if (!dep) return t->status;
    ad_var *adj = (ad_var *)(void *)dep;
    dep = (uint8_t *)(adj + len);
    memset(adj, 0, len * (sizeof *adj + 1)); // adj and dep together
    for (int k = 0; k < n; k++)
        if (ad_index(wrt[k]) <= yi) dep[ad_index(wrt[k]) - lo] = DEP;
    mark_dependents(t, lo, yi, dep);

    int saved_lazy = t->lazy, saved_nograd = t->nograd;
    lazy = lazy || saved_lazy; // a deferring tape records the adjoints deferred too
    t->lazy = lazy;
    t->nograd = !(flags & AD_CREATE_GRAPH);
    bool in_place = t->nograd && !lazy;
    if (dep[yi - lo]) adj[yi - lo] = ad_shape_eq(sy, sb) ? ybar : ad_reshape(t, ybar, sy);
    if (in_place) sweep(t, yi, lo, adj, dep, true);
    else sweep(t, yi, lo, adj, dep, false);
    for (int k = 0; k < n && t->status == AD_OK; k++) {
        int32_t w = ad_index(wrt[k]);
        ad_var g = w <= yi ? adj[w - lo] : AD_NONE;
        ad_shape s = ad_shape_fast(t, wrt[k]);
        if (!g) g = ad_fill(t, s, 0.0);
        if (g < 0) g = ad_neg(t, -g);
        if (g && !ad_shape_eq(ad_shape_fast(t, g), s)) g = ad_reshape(t, g, s);
        out[k] = g;
    }
    t->lazy = saved_lazy;
    t->nograd = saved_nograd;
    for (int k = 0; k < n && !lazy; k++)
        if (out[k]) ad_force(t, out[k]);
    if (t->status != AD_OK)
        for (int k = 0; k < n; k++) out[k] = AD_NONE;
    return t->status;
}

ad_status ad_vjp(ad_tape *t, ad_var y, ad_var ybar, int n, const ad_var *wrt, ad_var *out,
                 unsigned flags) {
    if (!check_lists(t, "vjp", n, wrt, out)) return t->status;
    return vjp_impl(t, y, ybar, n, wrt, out, flags, 0);
}

static bool check_scalar(ad_tape *t, const char *op, ad_var f) {
    if (!ad_check_args(t, op, 1, &f)) return false;
    ad_shape s = ad_shape_fast(t, f);
    if (s.rows * s.cols != 1) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "%s: output %s is not a scalar", op, ad_shape_str(s, b));
        return false;
    }
    return true;
}

ad_status ad_grad(ad_tape *t, ad_var y, int n, const ad_var *wrt, ad_var *out, unsigned flags) {
    if (!check_lists(t, "grad", n, wrt, out)) return t->status;
    if (!check_scalar(t, "grad", y)) return t->status;
    ad_shape sy = ad_shape_fast(t, y);
    ad_var one = sy.rank == 0 ? ad_unit(t) : ad_fill(t, sy, 1.0);
    return vjp_impl(t, y, one, n, wrt, out, flags, 0);
}

// d/dx <grad_y f, v>: the inner gradient is recorded lazily, so values the outer sweep does not
// need (the gradient itself, products feeding only it) are never computed.
static ad_status second_order(ad_tape *t, const char *op, ad_var f, ad_var x, ad_var y, ad_var v,
                              ad_var *out, unsigned flags) {
    if (out) *out = AD_NONE;
    if (!out) {
        ad_fail(t, AD_EARG, "%s: NULL output", op);
        return t->status;
    }
    if (!check_scalar(t, op, f)) return t->status;
    ad_var in[3] = {x, y, v};
    if (!ad_check_args(t, op, 3, in)) return t->status;
    ad_shape sy = ad_shape_fast(t, y), sv = ad_shape_fast(t, v);
    if (sy.rows != sv.rows || sy.cols != sv.cols) {
        char a[32], b[32];
        ad_fail(t, AD_ESHAPE, "%s: direction %s does not match %s", op, ad_shape_str(sv, a),
                ad_shape_str(sy, b));
        return t->status;
    }
    ad_var gy;
    ad_var one = ad_unit(t);
    if (vjp_impl(t, f, one, 1, &y, &gy, AD_CREATE_GRAPH, 1) != AD_OK) return t->status;
    int saved = t->lazy;
    t->lazy = 1; // <gy, v> is only differentiated: keep gy unevaluated
    ad_var s = ad_dot(t, gy, v);
    t->lazy = saved;
    return vjp_impl(t, s, ad_unit(t), 1, &x, out, flags, 0);
}

ad_status ad_hvp(ad_tape *t, ad_var f, ad_var x, ad_var v, ad_var *out, unsigned flags) {
    return second_order(t, "hvp", f, x, x, v, out, flags);
}

ad_status ad_hvp_mixed(ad_tape *t, ad_var f, ad_var x, ad_var y, ad_var v, ad_var *out,
                       unsigned flags) {
    return second_order(t, "hvp_mixed", f, x, y, v, out, flags);
}

// ---- forward mode -----------------------------------------------------------------------------------

// The arguments of ad_jvp: lists present where they have entries, live handles, inputs that are
// not constants, each tangent of its input's shape. Records the first problem (false).
static bool check_jvp(ad_tape *t, ad_var y, int n, const ad_var *wrt, int m, const ad_var *v,
                      const ad_var *out) {
    const char *why = n < 0 ? "a negative number of inputs" : m < 0 ? "a negative number of tangent sets"
                    : n > 0 && !wrt ? "wrt is NULL" : n > 0 && m > 0 && !v ? "v is NULL"
                    : m > 0 && !out ? "out is NULL" : NULL;
    if (why) {
        ad_fail(t, AD_EARG, "jvp: %s (%d inputs, %d tangent sets)", why, n, m);
        return false;
    }
    if (!ad_check_args(t, "jvp", 1, &y) || !ad_check_args(t, "jvp (inputs)", n, wrt) ||
        !check_not_constant(t, "jvp", n, wrt))
        return false;
    for (int j = 0; j < m; j++) {
        if (!ad_check_args(t, "jvp (tangents)", n, v + (size_t)j * n)) return false;
        for (int i = 0; i < n; i++) {
            ad_shape sw = ad_shape_fast(t, wrt[i]), sv = ad_shape_fast(t, v[(size_t)j * n + i]);
            if (sw.rows != sv.rows || sw.cols != sv.cols) {
                char a[32], b[32];
                ad_fail(t, AD_ESHAPE, "jvp: tangent %d of set %d is %s, its input is %s", i, j,
                        ad_shape_str(sv, a), ad_shape_str(sw, b));
                return false;
            }
        }
    }
    return true;
}

// Reverse of a reverse: g(u) = J^T u for a parameter u (its value is never read: g is linear in
// u), recorded deferred like the inner gradient of a Hessian-vector product, then for each
// tangent set d/du sum_i <g_i(u), v_i> = J v. The outer sweeps share g's graph and what they
// compute of it. The m sums are recorded before any sweep, so a sweep's range (from its sum down
// to u) holds g and the sums, not the nodes of the sweeps before it.
ad_status ad_jvp(ad_tape *t, ad_var y, int n, const ad_var *wrt, int m, const ad_var *v,
                 ad_var *out, unsigned flags) {
    for (int j = 0; m > 0 && out && j < m; j++) out[j] = AD_NONE;
    if (!check_jvp(t, y, n, wrt, m, v, out) || m == 0) return t->status;
    ad_var *g = malloc(sizeof(ad_var) * ((size_t)n + (size_t)m)), *sums = g + n;
    if (!g) {
        ad_fail(t, AD_ENOMEM, "jvp: out of memory for %d inputs and %d tangent sets", n, m);
        return t->status;
    }
    ad_shape sy = ad_shape_fast(t, y);
    ad_var u = ad_param(t, sy, ad_value(t, ad_fill(t, sy, 0.0)));
    if (u && vjp_impl(t, y, u, n, wrt, g, AD_CREATE_GRAPH, 1) == AD_OK) {
        int saved = t->lazy;
        t->lazy = 1; // the sums are only differentiated
        for (int j = 0; j < m; j++) {
            sums[j] = n > 0 ? AD_NONE : ad_fill(t, ad_scalar_shape(), 0.0);
            for (int i = 0; i < n; i++) {
                ad_var d = ad_dot(t, g[i], v[(size_t)j * n + i]);
                sums[j] = sums[j] ? ad_add(t, sums[j], d) : d;
            }
        }
        t->lazy = saved;
        for (int j = 0; j < m && t->status == AD_OK; j++)
            vjp_impl(t, sums[j], ad_unit(t), 1, &u, &out[j], flags, 0);
    }
    free(g);
    if (t->status != AD_OK)
        for (int j = 0; j < m; j++) out[j] = AD_NONE;
    return t->status;
}
