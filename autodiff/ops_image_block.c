// A ConvNet block's batch norm, ReLU and 2x2 max-pool as one op, and its adjoint as two: the
// composition ad_relu_maxpool2(ad_channel_affine(ad_channel_norm(Y), P)) makes the normalized
// and the scaled activations (each as large as Y: 64 MB in the first block of a 320-image batch)
// and passes over them about 20 times forward and backward; bn_pool reads Y twice (the
// statistics, then each window's four scaled values, made in registers, pooled and rectified)
// and writes only the pooled output, and its adjoint reads Y three times and writes dY once.
// Y [n, c*h*w] holds the conv output, P [2c] the scales gamma then the shifts beta; with per
// channel mean m, r = 1/sqrt(biased variance + eps), Z = (Y - m) r, A = gamma Z + beta:
//   bn_pool(Y, P)     = relu(A at each window's first maximum)             [n, c*(h/2)*(w/2)]
// and with G the pooled output's adjoint, M the ReLU's mask (1 where the window's maximum is
// positive), D = G M put at the windows' argmax of A (zero elsewhere), N = n*h*w:
//   bn_pool_dp(GP, Y) = per channel sum of D Z, then sum of D (= dP), then m, r  [4c]
//   bn_pool_dy(GPS, Y)= r gamma (D - S_beta/N - Z S_gamma/N)   (= dY)            [n, c*h*w]
// A tape op has two inputs, so G and P ride together: GP = [G flattened, P], GPS = [GP, S, m,
// r], S = [S_gamma, S_beta] the sums of bn_pool_dp and m, r the statistics it made (copies of G,
// a quarter of Y, cost less than reading Y again); bn_pool_dy takes Z = (Y - m) r with the m
// and r it is given. The forward values equal the composition's bit for bit (the same stats
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

// Row pairs are taken in pieces of PAIR_COLS columns, their scaled values on the stack.
enum { PAIR_COLS = 128 };

// A = (y - m) r gamma + beta of len entries, rounded as chan_norm then chan_affine round it (a
// loop the compiler vectorizes).
static void scaled(const double *restrict y, int len, double m, double r, double ga, double be,
                   double *restrict a) {
    for (int p = 0; p < len; p++) a[p] = ((y[p] - m) * r) * ga + be;
}

// A piece of a row pair: rows 2i and 2i + 1 of a plane, columns from col; a[0], a[1] their
// scaled values, windows windows (from window j0 of the row pair).
typedef struct {
    const blk_job *j;
    int b, ch, i, col, j0, windows;
    const double *y; // the row pair's first row in Y
    double *ob;      // the image's output: pooled [c, q] (bn_pool) or dY [c, h*w] (bn_pool_dy)
    double m, r;
    const double *a[2];
} piece;

// Window k of a piece: the offset from the row pair's start of its first maximum (PyTorch's
// order (0, 0), (0, 1), (1, 0), (1, 1)), the maximum in *v. Selections by masks, not branches:
// which entry wins is random data, and mispredictions cost more than the compares.
static inline int window_best(const piece *pc, int k, double *v) {
    int p = 2 * k, w = pc->j->w, best = pc->col + p;
    const double *a0 = pc->a[0] + p, *a1 = pc->a[1] + p;
    double c[3] = {a0[1], a1[0], a1[1]}, x = a0[0];
    int at[3] = {best + 1, best + w, best + w + 1};
    for (int q = 0; q < 3; q++) {
        int take = -(int)(c[q] > x);
        best ^= (best ^ at[q]) & take;
        x = c[q] > x ? c[q] : x;
    }
    *v = x;
    return best;
}

// The pooled output: relu of each window's maximum.
static void pool_piece(const piece *pc, double *state) {
    (void)state;
    const blk_job *j = pc->j;
    int wo = j->w / 2;
    double *o = pc->ob + (size_t)pc->ch * (size_t)(j->h / 2) * wo + (size_t)pc->i * wo + pc->j0, v;
    for (int k = 0; k < pc->windows; k++) {
        window_best(pc, k, &v);
        o[k] = v > 0 ? v : 0;
    }
}
// The sums of D Z and of D (state [2]), D nonzero only at the windows' argmax.
static void sum_piece(const piece *pc, double *state) {
    const blk_job *j = pc->j;
    int wo = j->w / 2;
    const double *g = j->g + ((size_t)pc->b * j->c + pc->ch) * (size_t)(j->h / 2) * wo + (size_t)pc->i * wo + pc->j0;
    double sdz = state[0], sd = state[1], v;
    for (int k = 0; k < pc->windows; k++) {
        int at = window_best(pc, k, &v);
        double d = v > 0 ? g[k] : 0;
        sdz += d * ((pc->y[at] - pc->m) * pc->r), sd += d;
    }
    state[0] = sdz, state[1] = sd;
}
// dY at each window's argmax where the window's maximum is positive: r gamma (G - S_beta/N -
// Z S_gamma/N) (the rest of the plane holds the same without G, written before).
static void adjoint_piece(const piece *pc, double *state) {
    (void)state;
    const blk_job *j = pc->j;
    int wo = j->w / 2, c = j->c, ch = pc->ch;
    const double *g = j->g + ((size_t)pc->b * c + ch) * (size_t)(j->h / 2) * wo + (size_t)pc->i * wo + pc->j0;
    double *o = pc->ob + (size_t)ch * j->h * j->w + (size_t)2 * pc->i * j->w, v;
    double rg = pc->r * j->p[ch], sg = j->s[ch] * j->inv_n, sb = j->s[c + ch] * j->inv_n;
    for (int k = 0; k < pc->windows; k++) {
        int at = window_best(pc, k, &v);
        if (v > 0) o[at] = (g[k] - sb - ((pc->y[at] - pc->m) * pc->r) * sg) * rg;
    }
}

// ---- the same on AVX-512, eight windows at a time ----
// Each window's four entries are split into lanes (even and odd columns of the two rows), and
// the same compares as window_best, in the same order, pick its maximum and where it is: the
// same values, and the same dY; the sums of bn_pool_dp are made in lanes (to rounding).

#if defined(__GNUC__) && defined(__x86_64__)
#define BLK_X86 1
#include <immintrin.h>
#define X512_FN static __attribute__((target("avx512f,avx2,fma")))

// Windows k0 .. k0 + 7 (those < windows: lanes of m) of a piece: the maximum of the scaled
// values in *v, Y at it in *y, its offset from the row pair's start in *at.
typedef struct {
    __m512d v, y;
    __m512i at;
} win8;

// Entries 2k0 .. 2k0 + 15 of a row split into even and odd columns (lanes past m zero).
X512_FN void split_row(const double *row, int k0, __mmask8 m, __m512d *even, __m512d *odd) {
    __mmask8 lo = (__mmask8)(m & 0x0f ? (m & 0x0f) == 0x0f ? 0xff : (1u << (2 * __builtin_popcount(m & 0x0f))) - 1 : 0);
    __mmask8 hi = (__mmask8)(m >> 4 ? (1u << (2 * __builtin_popcount(m >> 4))) - 1 : 0);
    __m512d a = _mm512_maskz_loadu_pd(lo, row + 2 * k0), b = _mm512_maskz_loadu_pd(hi, row + 2 * k0 + 8);
    *even = _mm512_permutex2var_pd(a, _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0), b);
    *odd = _mm512_permutex2var_pd(a, _mm512_set_epi64(15, 13, 11, 9, 7, 5, 3, 1), b);
}

X512_FN win8 windows8(const piece *pc, int k0, __mmask8 m) {
    int w = pc->j->w, ch = pc->ch;
    __m512d c[4], y[4];
    split_row(pc->y + pc->col, k0, m, &y[0], &y[1]);
    split_row(pc->y + pc->col + w, k0, m, &y[2], &y[3]);
    __m512d mv = _mm512_set1_pd(pc->m), rv = _mm512_set1_pd(pc->r);
    __m512d ga = _mm512_set1_pd(pc->j->p[ch]), be = _mm512_set1_pd(pc->j->p[pc->j->c + ch]);
    for (int q = 0; q < 4; q++) // scaled()'s roundings
        c[q] = _mm512_add_pd(_mm512_mul_pd(_mm512_mul_pd(_mm512_sub_pd(y[q], mv), rv), ga), be);
    __m512i lane = _mm512_set_epi64(14, 12, 10, 8, 6, 4, 2, 0);
    __m512i base = _mm512_add_epi64(_mm512_set1_epi64(pc->col + 2 * k0), lane);
    win8 r = {c[0], y[0], base};
    const int64_t off[4] = {0, 1, w, w + 1};
    for (int q = 1; q < 4; q++) {
        __mmask8 take = _mm512_cmp_pd_mask(c[q], r.v, _CMP_GT_OQ);
        r.at = _mm512_mask_add_epi64(r.at, take, base, _mm512_set1_epi64(off[q]));
        r.y = _mm512_mask_mov_pd(r.y, take, y[q]);
        r.v = _mm512_mask_mov_pd(r.v, take, c[q]);
    }
    return r;
}

static inline __mmask8 lanes_of(int windows, int k0) {
    return windows - k0 >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (windows - k0)) - 1);
}

X512_FN void pool_piece_x512(const piece *pc, double *state) {
    (void)state;
    const blk_job *j = pc->j;
    int wo = j->w / 2;
    double *o = pc->ob + (size_t)pc->ch * (size_t)(j->h / 2) * wo + (size_t)pc->i * wo + pc->j0;
    for (int k0 = 0; k0 < pc->windows; k0 += 8) {
        __mmask8 m = lanes_of(pc->windows, k0);
        _mm512_mask_storeu_pd(o + k0, m, _mm512_max_pd(windows8(pc, k0, m).v, _mm512_setzero_pd()));
    }
}

X512_FN void sum_piece_x512(const piece *pc, double *state) {
    const blk_job *j = pc->j;
    int wo = j->w / 2;
    const double *g = j->g + ((size_t)pc->b * j->c + pc->ch) * (size_t)(j->h / 2) * wo + (size_t)pc->i * wo + pc->j0;
    __m512d sdz = _mm512_setzero_pd(), sd = _mm512_setzero_pd(), mv = _mm512_set1_pd(pc->m), rv = _mm512_set1_pd(pc->r);
    for (int k0 = 0; k0 < pc->windows; k0 += 8) {
        __mmask8 m = lanes_of(pc->windows, k0);
        win8 r = windows8(pc, k0, m);
        __m512d d = _mm512_maskz_loadu_pd(m & _mm512_cmp_pd_mask(r.v, _mm512_setzero_pd(), _CMP_GT_OQ), g + k0);
        sdz = _mm512_add_pd(sdz, _mm512_mul_pd(d, _mm512_mul_pd(_mm512_sub_pd(r.y, mv), rv)));
        sd = _mm512_add_pd(sd, d);
    }
    state[0] += _mm512_reduce_add_pd(sdz), state[1] += _mm512_reduce_add_pd(sd);
}

X512_FN void adjoint_piece_x512(const piece *pc, double *state) {
    (void)state;
    const blk_job *j = pc->j;
    int wo = j->w / 2, c = j->c, ch = pc->ch;
    const double *g = j->g + ((size_t)pc->b * c + ch) * (size_t)(j->h / 2) * wo + (size_t)pc->i * wo + pc->j0;
    double *o = pc->ob + (size_t)ch * j->h * j->w + (size_t)2 * pc->i * j->w;
    __m512d rg = _mm512_set1_pd(pc->r * j->p[ch]), sg = _mm512_set1_pd(j->s[ch] * j->inv_n);
    __m512d sb = _mm512_set1_pd(j->s[c + ch] * j->inv_n), mv = _mm512_set1_pd(pc->m), rv = _mm512_set1_pd(pc->r);
    for (int k0 = 0; k0 < pc->windows; k0 += 8) {
        __mmask8 m = lanes_of(pc->windows, k0);
        win8 r = windows8(pc, k0, m);
        __mmask8 pos = m & _mm512_cmp_pd_mask(r.v, _mm512_setzero_pd(), _CMP_GT_OQ);
        __m512d z = _mm512_mul_pd(_mm512_sub_pd(r.y, mv), rv);
        __m512d d = _mm512_sub_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(pos, g + k0), sb), _mm512_mul_pd(z, sg));
        _mm512_mask_i64scatter_pd(o, pos, r.at, _mm512_mul_pd(d, rg), 8);
    }
}

// bn_pool_dy's whole-plane part, as run_image's loop rounds it.
X512_FN void adjoint_base_x512(const double *y, size_t hw, double m, double r, double sb, double sg, double rg,
                               double *o) {
    __m512d mv = _mm512_set1_pd(m), rv = _mm512_set1_pd(r), sbv = _mm512_set1_pd(0 - sb);
    __m512d sgv = _mm512_set1_pd(sg), rgv = _mm512_set1_pd(rg);
    for (size_t p = 0; p < hw; p += 8) {
        __mmask8 k = hw - p >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (hw - p)) - 1);
        __m512d z = _mm512_mul_pd(_mm512_sub_pd(_mm512_maskz_loadu_pd(k, y + p), mv), rv);
        _mm512_mask_storeu_pd(o + p, k, _mm512_mul_pd(_mm512_sub_pd(sbv, _mm512_mul_pd(z, sgv)), rgv));
    }
}

static bool pieces_x512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}
#else
#define BLK_X86 0
#endif

typedef void (*piece_fn)(const piece *pc, double *state);
typedef struct {
    const blk_job *j;
    piece_fn fn;
} run_job;

// Image b, its planes yb [c, h*w] and its output ob: per plane, the whole-plane part
// (bn_pool_dy: every entry's value without G), then fn on each piece of each row pair;
// bn_pool_dp's state is the plane's sums.
static void run_image(const run_job *rj, int b, const double *yb, double *ob) {
    const blk_job *j = rj->j;
    int c = j->c, w = j->w, wo = w / 2;
    size_t hw = (size_t)j->h * w;
    double a[2][PAIR_COLS];
    piece_fn fn = rj->fn;
    bool wide = false; // AVX-512: the windows' scaled values made in registers, not in a
#if BLK_X86
    wide = pieces_x512();
    if (wide) fn = fn == pool_piece ? pool_piece_x512 : fn == sum_piece ? sum_piece_x512 : adjoint_piece_x512;
#endif
    for (int ch = 0; ch < c; ch++) {
        const double *y = yb + ch * hw;
        double m = j->m[ch], r = j->r[ch], ga = j->p[ch], be = j->p[c + ch], state[2] = {0, 0};
        if (rj->fn == adjoint_piece) {
            double *o = ob + ch * hw, rg = r * ga;
            double sg = j->s[ch] * j->inv_n, sb = j->s[c + ch] * j->inv_n;
#if BLK_X86
            if (wide) adjoint_base_x512(y, hw, m, r, sb, sg, rg, o);
#endif
            for (size_t p = 0; !wide && p < hw; p++) o[p] = (0 - sb - ((y[p] - m) * r) * sg) * rg;
        }
        for (int i = 0; i < j->h / 2; i++)
            for (int j0 = 0; j0 < wo; j0 += PAIR_COLS / 2) {
                int windows = wo - j0 < PAIR_COLS / 2 ? wo - j0 : PAIR_COLS / 2;
                piece pc = {j, b, ch, i, 2 * j0, j0, windows, y + (size_t)2 * i * w, ob, m, r, {a[0], a[1]}};
                if (!wide) {
                    scaled(pc.y + 2 * j0, 2 * windows, m, r, ga, be, a[0]);
                    scaled(pc.y + w + 2 * j0, 2 * windows, m, r, ga, be, a[1]);
                }
                fn(&pc, state);
            }
        if (j->part) j->part[((size_t)b * c + ch) * 2] = state[0], j->part[((size_t)b * c + ch) * 2 + 1] = state[1];
    }
}

// The image's output: pooled [c, q] for bn_pool, [c, h*w] for bn_pool_dy (none for bn_pool_dp).
static double *image_out(const run_job *rj, int b) {
    const blk_job *j = rj->j;
    size_t per = rj->fn == pool_piece ? (size_t)(j->h / 2) * (j->w / 2) : (size_t)j->h * j->w;
    return rj->fn == sum_piece ? NULL : j->out + (size_t)b * j->c * per;
}

// Images lo .. hi - 1 of Y.
static void run_images(void *ctx, int lo, int hi) {
    const run_job *rj = ctx;
    size_t row = (size_t)rj->j->c * rj->j->h * rj->j->w;
    for (int b = lo; b < hi; b++) run_image(rj, b, rj->j->y + b * row, image_out(rj, b));
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

// GP is [n*c*(h/2)*(w/2) + extra*c]: the pooled adjoint G, then P [2c] (and S, m, r [4c]: extra 6).
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
    ad_shape s = op == OP_BN_POOL_DP ? ad_vec_shape(4 * c) : sy;
    return record_block(t, op, s, GP, Y, h, w, eps);
}

ad_var ad_bn_relu_pool_dp(ad_tape *t, ad_var GP, ad_var Y, int c, int h, int w, double eps) {
    return record_adjoint(t, OP_BN_POOL_DP, "bn_pool_dp", GP, Y, c, h, w, eps, 2);
}
ad_var ad_bn_relu_pool_dy(ad_tape *t, ad_var GPS, ad_var Y, int c, int h, int w, double eps) {
    return record_adjoint(t, OP_BN_POOL_DY, "bn_pool_dy", GPS, Y, c, h, w, eps, 6);
}

// The three forwards: the statistics of Y (the node's Y input: a for bn_pool, b for the
// adjoints; bn_pool_dy reads them from its first input), then one pass over the images.
static ad_status fwd_block(ad_tape *t, ad_node *nd) {
    bool adj = nd->op != OP_BN_POOL;
    const ad_node *Y = &t->nodes[adj ? nd->b : nd->a], *U = &t->nodes[adj ? nd->a : nd->b];
    int h = nd->i0, w = nd->i1, hw = h * w, c = Y->cols / hw, n = Y->rows;
    size_t ng = adj ? (size_t)n * c * (h / 2) * (w / 2) : 0; // where P starts in U
    double *buf = malloc(((size_t)c * 2 + (size_t)n * c * 2) * sizeof *buf);
    bool dy = nd->op == OP_BN_POOL_DY;
    if (dy && buf) memcpy(buf, U->val + ng + 4 * c, (size_t)c * 2 * sizeof *buf);
    if (!buf || (!dy && !imk_channel_stats(Y->val, n, c, hw, nd->p0, t->threads, buf, buf + c))) {
        free(buf);
        ad_fail(t, AD_ENOMEM, "%s: no memory for the statistics of %d channels", ad_ops[nd->op]->name, c);
        return AD_ENOMEM;
    }
    blk_job j = {Y->val, U->val, U->val + ng, U->val + ng + 2 * c, buf, buf + c, c, h, w,
                 1 / ((double)n * hw), nd->val, buf + 2 * c};
    size_t work = (size_t)n * c * hw * (nd->op == OP_BN_POOL_DY ? 2 : 1);
    if (nd->op != OP_BN_POOL_DP) j.part = NULL;
    run_job rj = {&j, nd->op == OP_BN_POOL ? pool_piece : nd->op == OP_BN_POOL_DP ? sum_piece : adjoint_piece};
    ad_pool *pool = ad_tape_pool(t); // first: it may set threads to 1
    imk_parallel(pool, t->threads, n, work, run_images, &rj);
    for (int ch = 0; ch < c && nd->op == OP_BN_POOL_DP; ch++) { // the images' sums in order
        double sdz = 0, sd = 0;
        for (int b = 0; b < n; b++) sdz += j.part[((size_t)b * c + ch) * 2], sd += j.part[((size_t)b * c + ch) * 2 + 1];
        nd->val[ch] = sdz, nd->val[c + ch] = sd;
        nd->val[2 * c + ch] = buf[ch], nd->val[3 * c + ch] = buf[c + ch]; // m, r for bn_pool_dy
    }
    free(buf);
    return AD_OK;
}

// First order: G and P packed, the sums (with the statistics), then dY from G, P, the sums and
// the statistics (one pass fewer over Y than making them again).
static void rev_bn_pool(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int h = n->i0, w = n->i1, c = ad_node_at(t, ad_input(t, y, 1))->cols / 2;
    double eps = n->p0;
    ad_var Y = ad_input(t, y, 0), P = ad_input(t, y, 1);
    ad_var GP = ad_concat(t, ad_reshape(t, g, ad_vec_shape(ad_shape_size(ad_shape_fast(t, g)))), P);
    ad_var S = ad_bn_relu_pool_dp(t, GP, Y, c, h, w, eps);
    if (need[1]) gin[1] = ad_slice(t, S, 0, 2 * c);
    if (need[0]) gin[0] = ad_bn_relu_pool_dy(t, ad_concat(t, GP, S), Y, c, h, w, eps);
}

// ---- second order: the adjoint ops' values in unfused ops, and a reverse sweep over them ----

// bn_pool_dp (dp) or bn_pool_dy of U = GP or GPS and Y, recorded in the unfused ops.
static ad_var unfused_adjoint(ad_tape *t, bool dp, ad_var U, ad_var Y, int c, int h, int w, double eps) {
    ad_shape sy = ad_shape_fast(t, Y);
    int ng = sy.rows * c * (h / 2) * (w / 2);
    ad_var G = ad_reshape(t, ad_slice(t, U, 0, ng), ad_mat_shape(sy.rows, ng / sy.rows));
    ad_var P = ad_slice(t, U, ng, 2 * c), m, r, Z;
    if (dp) { // the statistics of Y
        m = imk_channel_mean(t, Y, c, h * w), r = ad_channel_rstd(t, Y, c, eps);
        Z = ad_channel_norm(t, Y, c, eps);
    } else { // those given
        m = ad_slice(t, U, ng + 4 * c, c), r = ad_slice(t, U, ng + 5 * c, c);
        Z = imk_channel_scale(t, ad_sub(t, Y, imk_channel_row(t, m, c, h * w)), r, c);
    }
    ad_var A = ad_channel_affine(t, Z, P, c);
    ad_var mask = ad_step(t, ad_maxpool2(t, A, c, h, w));
    ad_var D = ad_maxpool2_scatter(t, ad_mul(t, G, mask), A, c, h, w);
    if (dp) return ad_concat(t, ad_channel_sums(t, D, Z, c), ad_concat(t, m, r));
    ad_var S = ad_scale(t, ad_slice(t, U, ng + 2 * c, 2 * c), 1 / ((double)sy.rows * h * w));
    ad_var rg = ad_mul(t, r, ad_slice(t, P, 0, c));
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

// ---- a first block: the convolution too, made again in each pass instead of stored ----
// conv_bn_pool(X, WP) = bn_pool(conv2d(X, W), P) with WP = [W [c_out, c_in*9] flattened, P
// [2 c_out]]. For a first block (c_in = 1: 9 multiply-adds an output) the conv output is the
// largest array of the network ([320, 32*28*28], 64 MB) and the cheapest to make: each pass makes
// an image's [c_out, h*w] again from its im2col columns (in cache) instead of reading it, and
// the adjoint in W and P is one op,
//   conv_bn_pool_dwp(GWP, X) = [conv2d_wgrad(X, dY), S_gamma, S_beta]   [c_out*(c_in*9 + 2)]
// with GWP = [G flattened, WP] and dY bn_pool_dy's (statistics, sums, then dY image by image,
// each image's dY and columns taken into dW while in cache): X is read three times and G twice,
// and no array as large as the conv output is made. The images' own adjoint (rarely wanted: they
// are data) goes through the stored composition. Values equal the composition's bit for bit
// where conv2d takes the same per-image products (im2col + dgemm), gradients to rounding.

enum { CB_STATS, CB_POOL, CB_SUMS, CB_DW }; // the passes

typedef struct {
    const double *x, *wt; // X [n, c_in*h*w]; W [c_out, c_in*9]
    int c_in, n, chunks, pass;
    run_job rj;           // the bn_pool pass over an image's conv output (rj.j: its job)
    size_t scratch;       // doubles per chunk: columns, the conv output, dY
    double *buf, *stats, *dw; // buf [chunks, scratch]; stats [n, c, 2]; dw [chunks, c*c_in*9]
} conv_pass;

// Doubles of scratch per chunk: the columns (or the padded image), the conv output and dY.
static size_t conv_scratch(int c_in, int h, int w, int c_out) {
    size_t cols = (size_t)c_in * 9 * h * w, padded = (size_t)c_in * imk_padded_len(h, w);
    return (cols > padded ? cols : padded) + 2 * (size_t)c_out * h * w;
}

static void conv_chunks_pass(void *ctx, int lo, int hi) {
    const conv_pass *cp = ctx;
    const blk_job *j = cp->rj.j;
    int c = j->c, h = j->h, w = j->w, hw = h * w;
    size_t kk = (size_t)cp->c_in * 9;
    bool small = imk_conv_small_runs(c); // AVX-512, straight from the padded image; else im2col + dgemm
    for (int ch = lo; ch < hi; ch++) {
        double *cols = cp->buf + (size_t)ch * cp->scratch, *dyb = cols + cp->scratch - (size_t)c * hw;
        double *yb = dyb - (size_t)c * hw, *dw = cp->dw + (size_t)ch * c * kk;
        int b0 = (int)((int64_t)cp->n * ch / cp->chunks), b1 = (int)((int64_t)cp->n * (ch + 1) / cp->chunks);
        if (small && cp->pass == CB_DW) memset(dw, 0, (size_t)c * kk * sizeof *dw);
        for (int b = b0; b < b1; b++) {
            const double *xb = cp->x + (size_t)b * cp->c_in * hw;
            if (small) {
                imk_pad_image(xb, cp->c_in, h, w, cols);
                imk_conv_small(cols, cp->wt, cp->c_in, h, w, c, yb);
            } else
                imk_conv_image(xb, cp->wt, cp->c_in, h, w, c, cols, yb);
            if (cp->pass == CB_STATS)
                for (int o = 0; o < c; o++) imk_plane_stats(yb + (size_t)o * hw, hw, cp->stats + ((size_t)b * c + o) * 2);
            else if (cp->pass == CB_DW) {
                run_image(&cp->rj, b, yb, dyb);
                if (small) imk_wgrad_small(dyb, cols, cp->c_in, h, w, c, dw);
                else imk_wgrad_image(dyb, cols, cp->c_in, hw, c, b > b0, dw);
            } else
                run_image(&cp->rj, b, yb, image_out(&cp->rj, b));
        }
    }
}

// One pass over the images' conv outputs, in fixed chunks over the tape's threads.
static void conv_pass_run(ad_tape *t, conv_pass *cp, int pass) {
    const blk_job *j = cp->rj.j;
    cp->pass = pass;
    cp->rj.fn = pass == CB_POOL ? pool_piece : pass == CB_SUMS ? sum_piece : adjoint_piece;
    ad_pool *pool = ad_tape_pool(t); // first: it may set threads to 1
    imk_parallel(pool, t->threads, cp->chunks,
                 (size_t)cp->n * j->c * j->h * j->w * (cp->c_in * 9 + 2), conv_chunks_pass, cp);
}

// The sizes of a conv_bn_pool node from its images X [n, c_in*h*w] and the length of WP
// (c_out*(c_in*9 + 2)).
static int conv_block_c_out(int c_in, int wp_len) { return wp_len / (c_in * 9 + 2); }

// Forward of conv_bn_pool (X = a, WP = b) and conv_bn_pool_dwp (GWP = a, X = b).
static ad_status fwd_conv_block(ad_tape *t, ad_node *nd) {
    bool dwp = nd->op == OP_CONV_BN_POOL_DWP;
    const ad_node *X = &t->nodes[dwp ? nd->b : nd->a], *U = &t->nodes[dwp ? nd->a : nd->b];
    int h = nd->i0, w = nd->i1, hw = h * w, c_in = X->cols / hw, n = X->rows;
    int c = dwp ? conv_block_c_out(c_in, nd->cols) : conv_block_c_out(c_in, U->cols);
    size_t ng = dwp ? (size_t)n * c * (h / 2) * (w / 2) : 0, nw = (size_t)c * c_in * 9; // W's start in U
    int chunks = n < IMK_CONV_CHUNKS ? n : IMK_CONV_CHUNKS;
    size_t scratch = conv_scratch(c_in, h, w, c);
    double *buf = malloc(((size_t)chunks * (scratch + nw) + (size_t)n * c * 2 + 4 * (size_t)c) * sizeof *buf);
    if (!buf) {
        ad_fail(t, AD_ENOMEM, "%s: no memory for the conv outputs of %d chunks", ad_ops[nd->op]->name, chunks);
        return AD_ENOMEM;
    }
    double *part = buf + (size_t)chunks * scratch, *dw = part + (size_t)n * c * 2, *mr = dw + (size_t)chunks * nw;
    const double *wt = U->val + ng, *p = wt + nw;
    blk_job j = {NULL, U->val, p, mr + 2 * c, mr, mr + c, c, h, w, 1 / ((double)n * hw), nd->val, part};
    conv_pass cp = {X->val, wt, c_in, n, chunks, CB_STATS, {&j, NULL}, scratch, buf, part, dw};
    conv_pass_run(t, &cp, CB_STATS);
    imk_stats_combine(part, n, c, hw, nd->p0, mr, mr + c);
    if (!dwp) {
        j.part = NULL;
        conv_pass_run(t, &cp, CB_POOL);
    } else {
        conv_pass_run(t, &cp, CB_SUMS);
        for (int ch = 0; ch < c; ch++) { // the images' sums in order: S = [S_gamma, S_beta]
            double sdz = 0, sd = 0;
            for (int b = 0; b < n; b++) sdz += part[((size_t)b * c + ch) * 2], sd += part[((size_t)b * c + ch) * 2 + 1];
            mr[2 * c + ch] = sdz, mr[3 * c + ch] = sd;
        }
        j.part = NULL;
        conv_pass_run(t, &cp, CB_DW);
        for (size_t i = 0; i < nw; i++) { // the chunks' dW in chunk order
            double s = dw[i];
            for (int ch = 1; ch < chunks; ch++) s += dw[(size_t)ch * nw + i];
            nd->val[i] = s;
        }
        memcpy(nd->val + nw, mr + 2 * c, 2 * (size_t)c * sizeof *mr);
    }
    free(buf);
    return AD_OK;
}

// X [n >= 1, c_in*h*w] images, WP [c_out*(c_in*9 + 2)] (c_out >= 1), eps finite and > 0.
static bool check_conv_block(ad_tape *t, const char *op, ad_var X, int wp_len, int c_in, int h, int w,
                             int c_out, double eps) {
    if (!imk_check_images(t, op, "input", X, c_in, h, w)) return false;
    if (c_out < 1 || c_in > INT32_MAX / 9 - 2 || (int64_t)c_out * (c_in * 9 + 2) != wp_len ||
        ad_shape_fast(t, X).rows < 1 || !(eps > 0 && eps < 1e300) ||
        (int64_t)c_out * (h / 2) * (w / 2) * ad_shape_fast(t, X).rows > INT32_MAX) {
        ad_fail(t, AD_EARG, "%s: weights and parameters of %d entries are not c_out (c_in*9 + 2) with "
                "c_out = %d >= 1, c_in = %d, or no images, or eps = %g is not > 0", op, wp_len, c_out,
                c_in, eps);
        return false;
    }
    return true;
}

ad_var ad_conv_bn_relu_pool(ad_tape *t, ad_var X, ad_var WP, int c_in, int h, int w, int c_out, double eps) {
    ad_var in[2] = {X, WP};
    if (!ad_check_args(t, "conv_bn_pool", 2, in)) return AD_NONE;
    ad_shape sp = ad_shape_fast(t, WP);
    if (!check_conv_block(t, "conv_bn_pool", X, sp.rank == 1 ? sp.cols : -1, c_in, h, w, c_out, eps))
        return AD_NONE;
    ad_shape s = ad_mat_shape(ad_shape_fast(t, X).rows, c_out * (h / 2) * (w / 2));
    return record_block(t, OP_CONV_BN_POOL, s, X, WP, h, w, eps);
}

ad_var ad_conv_bn_relu_pool_dwp(ad_tape *t, ad_var GWP, ad_var X, int c_in, int h, int w, int c_out,
                                double eps) {
    ad_var in[2] = {GWP, X};
    if (!ad_check_args(t, "conv_bn_pool_dwp", 2, in)) return AD_NONE;
    ad_shape sg = ad_shape_fast(t, GWP), sx = ad_shape_fast(t, X);
    int64_t ng = (int64_t)sx.rows * c_out * (h / 2) * (w / 2);
    int wp_len = sg.rank == 1 && sg.cols >= ng ? (int)(sg.cols - ng) : -1;
    if (!check_conv_block(t, "conv_bn_pool_dwp", X, wp_len, c_in, h, w, c_out, eps)) return AD_NONE;
    return record_block(t, OP_CONV_BN_POOL_DWP, ad_vec_shape(wp_len), GWP, X, h, w, eps);
}

// W [c_out, c_in*9] and P [2 c_out] of WP.
static void split_wp(ad_tape *t, ad_var WP, int c_in, int c_out, ad_var *W, ad_var *P) {
    int nw = c_out * c_in * 9;
    *W = ad_reshape(t, ad_slice(t, WP, 0, nw), ad_mat_shape(c_out, c_in * 9));
    *P = ad_slice(t, WP, nw, 2 * c_out);
}

static void rev_conv_bn_pool(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int h = n->i0, w = n->i1, c_in = t->nodes[n->a].cols / (h * w);
    int c_out = conv_block_c_out(c_in, t->nodes[n->b].cols);
    double eps = n->p0;
    ad_var X = ad_input(t, y, 0), WP = ad_input(t, y, 1);
    ad_var G = ad_reshape(t, g, ad_vec_shape(ad_shape_size(ad_shape_fast(t, g))));
    if (need[1]) gin[1] = ad_conv_bn_relu_pool_dwp(t, ad_concat(t, G, WP), X, c_in, h, w, c_out, eps);
    if (need[0]) { // through the stored conv output
        ad_var W, P, Y;
        split_wp(t, WP, c_in, c_out, &W, &P);
        Y = ad_conv2d(t, X, W, c_in, h, w, c_out);
        ad_var GP = ad_concat(t, G, P), S = ad_bn_relu_pool_dp(t, GP, Y, c_out, h, w, eps);
        ad_var dY = ad_bn_relu_pool_dy(t, ad_concat(t, GP, S), Y, c_out, h, w, eps);
        gin[0] = ad_conv2d(t, dY, ad_conv_flip(t, W, c_in, c_out), c_out, h, w, c_in);
    }
}

// Second order: conv_bn_pool_dwp's value recorded in the unfused ops, and a reverse sweep.
static void rev_conv_bn_pool_dwp(ad_tape *t, ad_var y, ad_var g, const bool need[2], ad_var gin[2]) {
    const ad_node *n = ad_node_at(t, y);
    int h = n->i0, w = n->i1, c_in = t->nodes[n->b].cols / (h * w), c_out = conv_block_c_out(c_in, n->cols);
    int rows = t->nodes[n->b].rows, ng = rows * c_out * (h / 2) * (w / 2);
    double eps = n->p0;
    ad_var U = ad_input(t, y, 0), X = ad_input(t, y, 1), W, P;
    int32_t lo = t->n_nodes;
    int saved = t->no_share;
    t->no_share = 1; // fresh nodes only, all since lo
    split_wp(t, ad_slice(t, U, ng, c_out * (c_in * 9 + 2)), c_in, c_out, &W, &P);
    ad_var Y = ad_conv2d(t, X, W, c_in, h, w, c_out), GP = ad_concat(t, ad_slice(t, U, 0, ng), P);
    ad_var S = unfused_adjoint(t, true, GP, Y, c_out, h, w, eps);
    ad_var dY = unfused_adjoint(t, false, ad_concat(t, GP, S), Y, c_out, h, w, eps);
    ad_var dW = ad_reshape(t, ad_conv2d_wgrad(t, X, dY, c_in, h, w, c_out), ad_vec_shape(c_out * c_in * 9));
    ad_var out = ad_concat(t, dW, ad_slice(t, S, 0, 2 * c_out));
    t->no_share = saved;
    if (out) local_vjp(t, lo, out, g, U, X, need, gin);
}

AD_DEF(conv_bn_pool, 2, fwd_conv_block, rev_conv_bn_pool);
AD_DEF(conv_bn_pool_dwp, 2, fwd_conv_block, rev_conv_bn_pool_dwp);
