// A ConvNet block's batch norm, ReLU and 2x2 max-pool as one op, and its adjoint as two: the
// composition ad_relu_maxpool2(ad_channel_affine(ad_channel_norm(Y), P)) makes the normalized
// and the scaled activations (each as large as Y: 64 MB in the first block of a 320-image batch)
// and passes over them about 20 times forward and backward; bn_pool reads Y twice (the
// statistics, then each window's four scaled values, made in registers, pooled and rectified)
// and writes only the pooled output, and its adjoint reads Y four times and writes dY once.
// Y [n, c*h*w] holds the conv output, P [2c] the scales gamma then the shifts beta; with per
// channel mean m, r = 1/sqrt(biased variance + eps), Z = (Y - m) r, A = gamma Z + beta:
//   bn_pool(Y, P)     = relu(A at each window's first maximum)             [n, c*(h/2)*(w/2)]
// and with G the pooled output's adjoint, M the ReLU's mask (1 where the window's maximum is
// positive), D = G M put at the windows' argmax of A (zero elsewhere), N = n*h*w:
//   bn_pool_dp(GP, Y) = per channel sum of D Z, then sum of D  (= dP)      [2c]
//   bn_pool_dy(GPS, Y)= r gamma (D - S_beta/N - Z S_gamma/N)   (= dY)      [n, c*h*w]
// A tape op has two inputs, so G and P ride together: GP = [G flattened, P], GPS = [GP, S],
// S = [S_gamma, S_beta] the sums of bn_pool_dp (copies of G, a quarter of Y, cost less than
// reading Y again). The forward values equal the composition's bit for bit (the same stats
// kernel, the same roundings); the adjoints equal it to rounding (sums over the windows, not
// over every entry).
//
// Every reverse rule is tape ops: bn_pool's records the two adjoint ops; theirs (second order
// only: MAML through the backbone) record the ops' values again in the unfused ops and run those
// ops' own reverse rules over that small recording (local_vjp), so they are right whenever the
// composition's are. Passes are split over images on the tape's threads; per-image partial sums
// are added in image order, so the bits do not depend on the thread count.
#include "image_kernels.h"
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---- kernels: one image's planes at a time ----

typedef struct {
    const double *y, *g, *p, *s, *m, *r; // g [n, c*q] (adjoints); p [2c]; s [2c]; m, r [c]
    int c, h, w;
    double inv_n;     // 1 / (n*h*w)
    double *out;      // bn_pool: [n, c*q]; bn_pool_dy: [n, c*h*w]
    double *part;     // bn_pool_dp: [n, c, 2]
} blk_job;

// A = (y - m) r gamma + beta, rounded as chan_norm then chan_affine round it.
static inline double scaled(double y, double m, double r, double ga, double be) {
    return ((y - m) * r) * ga + be;
}
// Window (i, j) of a plane: the offset of its first maximum of A (PyTorch's order (0, 0), (0, 1),
// (1, 0), (1, 1)) and that maximum in *a.
static inline size_t window_max(const double *y, int w, int i, int j, double m, double r, double ga,
                                double be, double *a) {
    size_t p = (size_t)2 * i * w + 2 * j, best = p;
    size_t at[3] = {p + 1, p + w, p + w + 1};
    double v = scaled(y[p], m, r, ga, be);
    for (int k = 0; k < 3; k++) {
        double c = scaled(y[at[k]], m, r, ga, be);
        best = c > v ? at[k] : best;
        v = c > v ? c : v;
    }
    *a = v;
    return best;
}

static void pool_images(void *ctx, int lo, int hi) {
    const blk_job *j = ctx;
    int c = j->c, w = j->w, ho = j->h / 2, wo = w / 2;
    size_t hw = (size_t)j->h * w, q = (size_t)ho * wo;
    for (int b = lo; b < hi; b++)
        for (int ch = 0; ch < c; ch++) {
            const double *y = j->y + ((size_t)b * c + ch) * hw;
            double *o = j->out + ((size_t)b * c + ch) * q, m = j->m[ch], r = j->r[ch];
            double ga = j->p[ch], be = j->p[c + ch], a;
            for (int i = 0; i < ho; i++)
                for (int jj = 0; jj < wo; jj++) {
                    window_max(y, w, i, jj, m, r, ga, be, &a);
                    *o++ = a > 0 ? a : 0;
                }
        }
}

// Per image and channel: the sums of D Z and of D (D nonzero only at the windows' argmax).
static void sum_images(void *ctx, int lo, int hi) {
    const blk_job *j = ctx;
    int c = j->c, w = j->w, ho = j->h / 2, wo = w / 2;
    size_t hw = (size_t)j->h * w, q = (size_t)ho * wo;
    for (int b = lo; b < hi; b++)
        for (int ch = 0; ch < c; ch++) {
            const double *y = j->y + ((size_t)b * c + ch) * hw, *g = j->g + ((size_t)b * c + ch) * q;
            double m = j->m[ch], r = j->r[ch], ga = j->p[ch], be = j->p[c + ch], a, sdz = 0, sd = 0;
            for (int i = 0; i < ho; i++)
                for (int jj = 0; jj < wo; jj++, g++) {
                    size_t at = window_max(y, w, i, jj, m, r, ga, be, &a);
                    double d = a > 0 ? *g : 0;
                    sdz += d * ((y[at] - m) * r), sd += d;
                }
            double *o = j->part + ((size_t)b * c + ch) * 2;
            o[0] = sdz, o[1] = sd;
        }
}

// dY = r gamma (D - S_beta/N - Z S_gamma/N): every entry, then D at each window's argmax.
static void adjoint_images(void *ctx, int lo, int hi) {
    const blk_job *j = ctx;
    int c = j->c, w = j->w, ho = j->h / 2, wo = w / 2;
    size_t hw = (size_t)j->h * w, q = (size_t)ho * wo;
    for (int b = lo; b < hi; b++)
        for (int ch = 0; ch < c; ch++) {
            const double *y = j->y + ((size_t)b * c + ch) * hw, *g = j->g + ((size_t)b * c + ch) * q;
            double *o = j->out + ((size_t)b * c + ch) * hw, m = j->m[ch], r = j->r[ch];
            double ga = j->p[ch], be = j->p[c + ch], rg = r * ga, a;
            double sg = j->s[ch] * j->inv_n, sb = j->s[c + ch] * j->inv_n;
            for (size_t p = 0; p < hw; p++) o[p] = (0 - sb - ((y[p] - m) * r) * sg) * rg;
            for (int i = 0; i < ho; i++)
                for (int jj = 0; jj < wo; jj++, g++) {
                    size_t at = window_max(y, w, i, jj, m, r, ga, be, &a);
                    if (a > 0) o[at] = (*g - sb - ((y[at] - m) * r) * sg) * rg;
                }
        }
}

// ---- the ops ----

// Y [n >= 1, c*h*w] images; P [2c]; eps finite and > 0.
static bool check_block(ad_tape *t, const char *op, ad_var Y, ad_var P, int c, int h, int w,
                        double eps) {
    if (!imk_check_images(t, op, "input", Y, c, h, w) || !imk_check_params(t, op, P, c)) return false;
    if (ad_shape_fast(t, Y).rows < 1 || !(eps > 0 && eps < 1e300)) {
        ad_fail(t, AD_EARG, "%s: needs at least one image and a finite eps > 0 (eps = %g)", op, eps);
        return false;
    }
    return true;
}

static ad_var record_block(ad_tape *t, ad_op op, ad_shape s, ad_var a, ad_var b, int h, int w,
                           double eps) {
    ad_node *p = ad_push(t, op, s, a, b);
    if (!p) return AD_NONE;
    p->i0 = h, p->i1 = w, p->p0 = eps;
    return ad_commit(t, p);
}

ad_var ad_bn_relu_pool(ad_tape *t, ad_var Y, ad_var P, int c, int h, int w, double eps) {
    ad_var in[2] = {Y, P};
    if (!ad_check_args(t, "bn_pool", 2, in) || !check_block(t, "bn_pool", Y, P, c, h, w, eps))
        return AD_NONE;
    ad_shape s = ad_mat_shape(ad_shape_fast(t, Y).rows, c * (h / 2) * (w / 2));
    return record_block(t, OP_BN_POOL, s, Y, P, h, w, eps);
}

// GP is [n*c*(h/2)*(w/2) + extra*c]: the pooled adjoint G, then P [2c] (and S [2c]: extra 4).
static ad_var record_adjoint(ad_tape *t, ad_op op, const char *name, ad_var GP, ad_var Y, int c,
                             int h, int w, double eps, int extra) {
    ad_var in[2] = {GP, Y};
    if (!ad_check_args(t, name, 2, in) || !imk_check_images(t, name, "input", Y, c, h, w))
        return AD_NONE;
    ad_shape sy = ad_shape_fast(t, Y), sg = ad_shape_fast(t, GP);
    int64_t want = (int64_t)sy.rows * c * (h / 2) * (w / 2) + (int64_t)extra * c;
    if (sg.rank > 1 || sg.cols != want || sy.rows < 1 || !(eps > 0 && eps < 1e300)) {
        char b[32];
        ad_fail(t, AD_ESHAPE, "%s: %s is not [%lld] (the pooled adjoint of %d images, then %d per "
                "channel), or eps = %g is not > 0", name, ad_shape_str(sg, b), (long long)want,
                sy.rows, extra, eps);
        return AD_NONE;
    }
    ad_shape s = op == OP_BN_POOL_DP ? ad_vec_shape(2 * c) : sy;
    return record_block(t, op, s, GP, Y, h, w, eps);
}

ad_var ad_bn_relu_pool_dp(ad_tape *t, ad_var GP, ad_var Y, int c, int h, int w, double eps) {
    return record_adjoint(t, OP_BN_POOL_DP, "bn_pool_dp", GP, Y, c, h, w, eps, 2);
}
ad_var ad_bn_relu_pool_dy(ad_tape *t, ad_var GPS, ad_var Y, int c, int h, int w, double eps) {
    return record_adjoint(t, OP_BN_POOL_DY, "bn_pool_dy", GPS, Y, c, h, w, eps, 4);
}

// The three forwards: the statistics of Y (the node's Y input: a for bn_pool, b for the
// adjoints), then one pass over the images.
static ad_status fwd_block(ad_tape *t, ad_node *nd) {
    bool adj = nd->op != OP_BN_POOL;
    const ad_node *Y = &t->nodes[adj ? nd->b : nd->a], *U = &t->nodes[adj ? nd->a : nd->b];
    int h = nd->i0, w = nd->i1, hw = h * w, c = Y->cols / hw, n = Y->rows;
    size_t ng = adj ? (size_t)n * c * (h / 2) * (w / 2) : 0; // where P starts in U
    double *buf = malloc(((size_t)c * 2 + (size_t)n * c * 2) * sizeof *buf);
    if (!buf || !imk_channel_stats(Y->val, n, c, hw, nd->p0, t->threads, buf, buf + c)) {
        free(buf);
        ad_fail(t, AD_ENOMEM, "%s: no memory for the statistics of %d channels", ad_ops[nd->op]->name, c);
        return AD_ENOMEM;
    }
    blk_job j = {Y->val, U->val, U->val + ng, U->val + ng + 2 * c, buf, buf + c, c, h, w,
                 1 / ((double)n * hw), nd->val, buf + 2 * c};
    size_t work = (size_t)n * c * hw * (nd->op == OP_BN_POOL_DY ? 2 : 1);
    imk_fn fn = nd->op == OP_BN_POOL ? pool_images : nd->op == OP_BN_POOL_DP ? sum_images : adjoint_images;
    imk_parallel(t->threads, n, work, fn, &j);
    for (int ch = 0; ch < c && nd->op == OP_BN_POOL_DP; ch++) { // the images' sums in order
        double sdz = 0, sd = 0;
        for (int b = 0; b < n; b++) sdz += j.part[((size_t)b * c + ch) * 2], sd += j.part[((size_t)b * c + ch) * 2 + 1];
        nd->val[ch] = sdz, nd->val[c + ch] = sd;
    }
    free(buf);
    return AD_OK;
}

// First order: G and P packed, the sums, then dY from G, P and the sums.
static void rev_bn_pool(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int h = n->i0, w = n->i1, c = ad_node_at(t, ad_input(t, y, 1))->cols / 2;
    double eps = n->p0;
    ad_var Y = ad_input(t, y, 0), P = ad_input(t, y, 1);
    ad_var GP = ad_concat(t, ad_reshape(t, g, ad_vec_shape(ad_shape_size(ad_shape_fast(t, g)))), P);
    ad_var S = ad_bn_relu_pool_dp(t, GP, Y, c, h, w, eps);
    if (need[1]) gin[1] = S;
    if (need[0]) gin[0] = ad_bn_relu_pool_dy(t, ad_concat(t, GP, S), Y, c, h, w, eps);
}

// ---- second order: the adjoint ops' values in unfused ops, and a reverse sweep over them ----

// bn_pool_dp (dp) or bn_pool_dy of U = GP or GPS and Y, recorded in the unfused ops.
static ad_var unfused_adjoint(ad_tape *t, bool dp, ad_var U, ad_var Y, int c, int h, int w, double eps) {
    ad_shape sy = ad_shape_fast(t, Y);
    int ng = sy.rows * c * (h / 2) * (w / 2);
    ad_var G = ad_reshape(t, ad_slice(t, U, 0, ng), ad_mat_shape(sy.rows, ng / sy.rows));
    ad_var P = ad_slice(t, U, ng, 2 * c), Z = ad_channel_norm(t, Y, c, eps);
    ad_var A = ad_channel_affine(t, Z, P, c);
    ad_var mask = ad_step(t, ad_maxpool2(t, A, c, h, w));
    ad_var D = ad_maxpool2_scatter(t, ad_mul(t, G, mask), A, c, h, w);
    if (dp) return ad_channel_sums(t, D, Z, c);
    ad_var S = ad_scale(t, ad_slice(t, U, ng + 2 * c, 2 * c), 1 / ((double)sy.rows * h * w));
    ad_var rg = ad_mul(t, ad_channel_rstd(t, Y, c, eps), ad_slice(t, P, 0, c));
    ad_var D_less = ad_sub(t, D, ad_channel_affine(t, Z, S, c)); // D - Z S_gamma/N - S_beta/N
    return ad_channel_affine(t, D_less, ad_concat(t, rg, ad_fill(t, ad_vec_shape(c), 0)), c);
}

// acc + c, each maybe negated (-handle: a reverse rule's negated contribution).
static ad_var add_signed(ad_tape *t, ad_var acc, ad_var c) {
    if (!acc) return c;
    ad_var A = acc < 0 ? -acc : acc, C = c < 0 ? -c : c;
    if ((acc < 0) == (c < 0)) {
        ad_var s = ad_add(t, A, C);
        return acc < 0 ? ad_negated(s) : s;
    }
    return acc < 0 ? ad_sub(t, C, A) : ad_sub(t, A, C);
}

// Whether input k of node i gets a contribution: it is u (need[0]) or v (need[1]), or a node
// since lo that depends on them (dep).
static bool wants(const ad_tape *t, int32_t i, int k, int32_t lo, const uint8_t *dep, int32_t iu,
                  int32_t iv, const bool need[2]) {
    const ad_node *nd = &t->nodes[i];
    if (k >= ad_ops[nd->op]->arity) return false;
    int32_t x = k ? nd->b : nd->a;
    return (x == iu && need[0]) || (x == iv && need[1]) || (x >= lo && dep[x - lo]);
}

// The adjoints in u and v (gin, as asked by need) of out, recorded since node lo from them with
// no node shared with an older one, for the incoming g: the reverse rules of the nodes since lo,
// the last first (the order of a recording is an order of its dependencies).
static void local_vjp(ad_tape *t, int32_t lo, ad_var out, ad_var g, ad_var u, ad_var v,
                      const bool need[2], ad_var gin[2]) {
    int32_t hi = t->n_nodes, iu = ad_index(u), iv = ad_index(v);
    size_t len = (size_t)(hi - lo);
    ad_var *adj = calloc(len ? len : 1, sizeof *adj + 1);
    if (!adj) {
        ad_fail(t, AD_ENOMEM, "bn_pool: no memory for a reverse sweep of %zu nodes", len);
        return;
    }
    uint8_t *dep = (uint8_t *)(adj + len);
    for (int32_t i = lo; i < hi; i++)
        dep[i - lo] = ad_ops[t->nodes[i].op]->rev &&
                      (wants(t, i, 0, lo, dep, iu, iv, need) || wants(t, i, 1, lo, dep, iu, iv, need));
    if (ad_index(out) >= lo) adj[ad_index(out) - lo] = g;
    for (int32_t i = hi - 1; i >= lo && t->status == AD_OK; i--) {
        ad_var gi = adj[i - lo];
        if (!gi || !dep[i - lo]) continue;
        bool nk[2] = {wants(t, i, 0, lo, dep, iu, iv, need), wants(t, i, 1, lo, dep, iu, iv, need)};
        int32_t x[2] = {t->nodes[i].a, t->nodes[i].b};
        ad_var c[2] = {AD_NONE, AD_NONE};
        ad_ops[t->nodes[i].op]->rev(t, ad_ref(t, i), gi < 0 ? -gi : gi, nk, c);
        for (int k = 0; k < 2; k++) {
            if (!nk[k] || !c[k]) continue;
            ad_var ck = gi < 0 ? -c[k] : c[k];
            if (x[k] >= lo) adj[x[k] - lo] = add_signed(t, adj[x[k] - lo], ck);
            else gin[x[k] == iu ? 0 : 1] = add_signed(t, gin[x[k] == iu ? 0 : 1], ck);
        }
    }
    free(adj);
}

static void rev_block_adjoint(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    bool dp = n->op == OP_BN_POOL_DP;
    int h = n->i0, w = n->i1, c = ad_node_at(t, ad_input(t, y, 1))->cols / (h * w);
    double eps = n->p0;
    ad_var U = ad_input(t, y, 0), Y = ad_input(t, y, 1);
    int32_t lo = t->n_nodes;
    int saved = t->no_share;
    t->no_share = 1; // fresh nodes only, all since lo
    ad_var out = unfused_adjoint(t, dp, U, Y, c, h, w, eps);
    t->no_share = saved;
    if (out) local_vjp(t, lo, out, g, U, Y, need, gin);
}

AD_DEF(bn_pool, 2, fwd_block, rev_bn_pool);
AD_DEF(bn_pool_dp, 2, fwd_block, rev_block_adjoint);
AD_DEF(bn_pool_dy, 2, fwd_block, rev_block_adjoint);
