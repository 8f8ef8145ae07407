// linear: y = L x for a linear map L that the caller computes (ad_extra.h's ad_linmap): a sum
// over processes, a gather of blocks (models/shard.c). Its reverse rule is the transpose map,
// recorded as another linear node, so derivatives of any order exist when the transpose of the
// transpose is L again. The node is never shared with an equal one (the memo): a map may talk
// to other processes, which must see every call that every other process makes, in the same
// order, whatever else each one records.
#include "internal.h"

#include <string.h>

ad_var ad_linear(ad_tape *t, const ad_linmap *L, ad_var x) {
    if (!ad_check_args(t, "linear", 1, &x)) return AD_NONE;
    if (!L || !L->apply || !L->transpose || !ad_shape_valid(L->in) || !ad_shape_valid(L->out)) {
        ad_fail(t, AD_EARG, "linear: the map needs an apply, a transpose and valid shapes");
        return AD_NONE;
    }
    ad_shape xs = ad_shape_fast(t, x);
    if (ad_shape_size(xs) != ad_shape_size(L->in)) {
        char a[32], b[32];
        ad_fail(t, AD_ESHAPE, "linear: the map takes %s, not %s", ad_shape_str(L->in, a), ad_shape_str(xs, b));
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_LINEAR, L->out, x, 0);
    if (!p) return AD_NONE;
    p->ext = L;
    int share = t->no_share;
    t->no_share = 1;
    ad_var y = ad_commit(t, p);
    t->no_share = share;
    return y;
}

static ad_status fwd_linear(ad_tape *t, ad_node *n) {
    const ad_linmap *L = n->ext;
    char err[200] = "";
    if (L->apply(L, t->nodes[n->a].val, n->val, err)) {
        ad_fail(t, AD_EARG, "linear: %s", err[0] ? err : "the map failed");
        return AD_EARG;
    }
    return AD_OK;
}

static void rev_linear(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    (void)need;
    const ad_linmap *L = ad_node_at(t, y)->ext;
    ad_var x = ad_input(t, y, 0);
    ad_var r = ad_linear(t, L->transpose, g);
    ad_shape xs = ad_shape_fast(t, x);
    gin[0] = ad_shape_eq(ad_shape_of(t, r), xs) ? r : ad_reshape(t, r, xs);
}
AD_DEF(linear, 1, fwd_linear, rev_linear);
