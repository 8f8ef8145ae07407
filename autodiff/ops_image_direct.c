// 3x3 convolutions (stride 1, padding 1) without im2col, on AVX-512: conv2d's forward (and so
// its transpose) and its weight gradient when the output channels are a multiple of 16, the
// input channels 8 or more (with fewer, im2col + dgemm is as fast: the output's writes bound
// both) and the CPU runs AVX-512 (checked at run time; the library needs no -march flag). A ConvNet's products are [32, 288] [288, hw] per image: too few rows for
// dgemm's packing to pay, and im2col writes and reads nine copies of every image.
//
// Each image is copied once into a zero-padded layout, channel i at xp + i*len, row stride
// w2 = w + 2: pixel (y, x) at (y + 1) w2 + x + 1. Output pixel (y, x) is then numbered q = y w2
// + x (x = w, w + 1 are two dead columns per row), and its input at offset (dy, dx) sits at q +
// (dy + 1) w2 + (dx + 1): for each of the 9 offsets the inputs of consecutive outputs are
// consecutive, so the product is read straight from the padded image (an implicit im2col).
//   forward: per image, tiles of 8 output channels x 24 outputs (24 accumulators in registers),
//     summed over input channels then offsets, the weights broadcast from W^T [c_in*9, c_out];
//     written to a buffer [c_out, q] and copied to the image's rows without the dead columns.
//   weight gradient: G_b transposed to [q, c_out] (dead rows zero), then per input channel
//     dW^T [9, c_out] += sum over q of xp[q + shift] G_b^T[q] in tiles of 9 offsets x 16
//     channels (18 accumulators), each image added in turn to its chunk's sum.
// Every output is one sum in a fixed order made by one thread; the weight gradient's chunks
// (fixed, as imk_conv_images's) are added in order: the bits do not depend on the threads.
#include "image_kernels.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define IMD_X86 1
#include <immintrin.h>
#define X512_FN static __attribute__((target("avx512f,avx2,fma")))
#else
#define IMD_X86 0
#endif

enum { QT = 24, OT = 8, OW = 16 }; // outputs and channels per forward tile; channels per wgrad tile

bool imk_conv_direct_runs(int c_in, int c_out) {
#if IMD_X86
    __builtin_cpu_init(); // idempotent; needed if this runs before the library's constructors
    return c_in >= 8 && c_out > 0 && c_out % OW == 0 && __builtin_cpu_supports("avx512f");
#else
    (void)c_in, (void)c_out;
    return false;
#endif
}

#if IMD_X86

// The padded layout's sizes: q outputs (h rows of w2), qr rounded up to the tile, len per
// channel (the last tile's reads at the largest shift stay inside).
typedef struct {
    int c_in, h, w, c_out, w2, q, qr;
    size_t len;
    int shift[9];
} geo;

static geo geo_make(int c_in, int h, int w, int c_out) {
    geo g = {c_in, h, w, c_out, w + 2, h * (w + 2), 0, 0, {0}};
    g.qr = (g.q + QT - 1) / QT * QT;
    g.len = (size_t)g.qr + 2 * (size_t)g.w2 + 2;
    for (int k = 0; k < 9; k++) g.shift[k] = (k / 3) * g.w2 + k % 3;
    return g;
}

// n doubles from src to dst: rows of 3 to 28 pixels, too short for a call to memcpy to pay.
X512_FN void copy_row(double *dst, const double *src, int n) {
    int x = 0;
    for (; x + 8 <= n; x += 8) _mm512_storeu_pd(dst + x, _mm512_loadu_pd(src + x));
    if (x < n) {
        __mmask8 m = (__mmask8)((1u << (n - x)) - 1);
        _mm512_mask_storeu_pd(dst + x, m, _mm512_maskz_loadu_pd(m, src + x));
    }
}

// Image x [c_in, h, w] into the interior of xp (its borders zero from the caller's clearing).
static void pad_image(const geo *g, const double *x, double *xp) {
    for (int i = 0; i < g->c_in; i++)
        for (int y = 0; y < g->h; y++)
            copy_row(xp + i * g->len + (size_t)(y + 1) * g->w2 + 1, x + ((size_t)i * g->h + y) * g->w, g->w);
}

// out [8, qr] (row stride qr), outputs q0 .. q0 + 23 of channels o0 .. o0 + 7.
X512_FN void fwd_tile(const geo *g, const double *xp, const double *wt, int o0, int q0, double *out) {
    __m512d a[OT][3];
    for (int r = 0; r < OT; r++) a[r][0] = a[r][1] = a[r][2] = _mm512_setzero_pd();
    for (int i = 0; i < g->c_in; i++) {
        const double *src = xp + i * g->len + q0, *wi = wt + (size_t)i * 9 * g->c_out + o0;
        for (int k = 0; k < 9; k++) {
            const double *s = src + g->shift[k], *wk = wi + (size_t)k * g->c_out;
            __m512d v0 = _mm512_loadu_pd(s), v1 = _mm512_loadu_pd(s + 8), v2 = _mm512_loadu_pd(s + 16);
#pragma GCC unroll 8
            for (int r = 0; r < OT; r++) {
                __m512d b = _mm512_set1_pd(wk[r]);
                a[r][0] = _mm512_fmadd_pd(b, v0, a[r][0]);
                a[r][1] = _mm512_fmadd_pd(b, v1, a[r][1]);
                a[r][2] = _mm512_fmadd_pd(b, v2, a[r][2]);
            }
        }
    }
    for (int r = 0; r < OT; r++) {
        double *o = out + (size_t)r * g->qr + q0;
        _mm512_storeu_pd(o, a[r][0]), _mm512_storeu_pd(o + 8, a[r][1]), _mm512_storeu_pd(o + 16, a[r][2]);
    }
}

// part [9, c_out] (dW^T's rows of input channel i) += sum over q of xpi[q + shift] gt[q],
// channels o0 .. o0 + 15.
X512_FN void wgrad_tile(const geo *g, const double *xpi, const double *gt, int o0, double *part) {
    __m512d a[9][2];
    for (int k = 0; k < 9; k++)
        a[k][0] = _mm512_loadu_pd(part + (size_t)k * g->c_out + o0),
        a[k][1] = _mm512_loadu_pd(part + (size_t)k * g->c_out + o0 + 8);
    for (int p = 0; p < g->q; p++) {
        const double *gr = gt + (size_t)p * g->c_out + o0, *xs = xpi + p;
        __m512d g0 = _mm512_loadu_pd(gr), g1 = _mm512_loadu_pd(gr + 8);
#pragma GCC unroll 9
        for (int k = 0; k < 9; k++) {
            __m512d b = _mm512_set1_pd(xs[g->shift[k]]);
            a[k][0] = _mm512_fmadd_pd(b, g0, a[k][0]);
            a[k][1] = _mm512_fmadd_pd(b, g1, a[k][1]);
        }
    }
    for (int k = 0; k < 9; k++)
        _mm512_storeu_pd(part + (size_t)k * g->c_out + o0, a[k][0]),
        _mm512_storeu_pd(part + (size_t)k * g->c_out + o0 + 8, a[k][1]);
}

typedef struct {
    geo g;
    const double *x, *other, *wt; // wt: W^T [c_in*9, c_out] (forward)
    int n, chunks;
    size_t scratch; // doubles per chunk
    double *buf, *part, *y; // buf [chunks, scratch]; part [chunks, c_in*9*c_out] (wgrad)
} direct_job;

// One image's forward: all tiles, then the buffer's live columns to y_b [c_out, h*w].
static void fwd_image(const direct_job *j, const double *xp, double *out, double *yb) {
    const geo *g = &j->g;
    for (int o0 = 0; o0 < g->c_out; o0 += OT)
        for (int q0 = 0; q0 < g->qr; q0 += QT) fwd_tile(g, xp, j->wt, o0, q0, out + (size_t)o0 * g->qr);
    for (int o = 0; o < g->c_out; o++)
        for (int y = 0; y < g->h; y++)
            copy_row(yb + ((size_t)o * g->h + y) * g->w, out + (size_t)o * g->qr + (size_t)y * g->w2, g->w);
}

// One image's weight gradient into part [c_in*9, c_out]: G_b [c_out, h*w] to gt [q, c_out]
// (its dead rows stay zero), then the tiles.
static void wgrad_image(const direct_job *j, const double *xp, const double *gb, double *gt, double *part) {
    const geo *g = &j->g;
    for (int o = 0; o < g->c_out; o++)
        for (int y = 0; y < g->h; y++)
            for (int x = 0; x < g->w; x++)
                gt[((size_t)y * g->w2 + x) * g->c_out + o] = gb[((size_t)o * g->h + y) * g->w + x];
    for (int i = 0; i < g->c_in; i++)
        for (int o0 = 0; o0 < g->c_out; o0 += OW)
            wgrad_tile(g, xp + i * g->len, gt, o0, part + (size_t)i * 9 * g->c_out);
}

static void direct_chunks(void *ctx, int lo, int hi) {
    const direct_job *j = ctx;
    const geo *g = &j->g;
    size_t hw = (size_t)g->h * g->w, nw = (size_t)g->c_in * 9 * g->c_out;
    for (int ch = lo; ch < hi; ch++) {
        double *xp = j->buf + (size_t)ch * j->scratch, *rest = xp + (size_t)g->c_in * g->len;
        memset(xp, 0, j->scratch * sizeof *xp);
        double *part = j->part ? j->part + (size_t)ch * nw : NULL;
        if (part) memset(part, 0, nw * sizeof *part);
        int b0 = (int)((int64_t)j->n * ch / j->chunks), b1 = (int)((int64_t)j->n * (ch + 1) / j->chunks);
        for (int b = b0; b < b1; b++) {
            pad_image(g, j->x + (size_t)b * g->c_in * hw, xp);
            if (part) wgrad_image(j, xp, j->other + (size_t)b * g->c_out * hw, rest, part);
            else fwd_image(j, xp, rest, j->y + (size_t)b * g->c_out * hw);
        }
    }
}

bool imk_conv_direct(const double *x, const double *other, int n, int c_in, int h, int w, int c_out,
                     bool wgrad, int threads, double *y) {
    if (!imk_conv_direct_runs(c_in, c_out)) return false;
    geo g = geo_make(c_in, h, w, c_out);
    int chunks = n < IMK_CONV_CHUNKS ? n : IMK_CONV_CHUNKS;
    size_t nw = (size_t)c_in * 9 * c_out, scratch = (size_t)c_in * g.len + (size_t)g.qr * c_out;
    double *buf = malloc(((size_t)chunks * scratch + (wgrad ? (size_t)chunks * nw : nw)) * sizeof *buf);
    if (!buf) return false;
    double *extra = buf + (size_t)chunks * scratch; // wgrad: the chunks' sums; forward: W^T
    direct_job j = {g, x, other, extra, n, chunks, scratch, buf, wgrad ? extra : NULL, y};
    if (!wgrad)
        for (int o = 0; o < c_out; o++)
            for (int r = 0; r < c_in * 9; r++) extra[(size_t)r * c_out + o] = other[(size_t)o * c_in * 9 + r];
    imk_parallel(NULL, threads, chunks, (size_t)n * (size_t)(c_in + c_out) * h * w * 9, direct_chunks,
                 &j);
    if (wgrad) // the chunks' sums added in chunk order, transposed to [c_out, c_in*9]
        for (int o = 0; o < c_out; o++)
            for (size_t r = 0; r < (size_t)c_in * 9; r++) {
                double s = extra[r * c_out + o];
                for (int ch = 1; ch < chunks; ch++) s += extra[(size_t)ch * nw + r * c_out + o];
                y[(size_t)o * c_in * 9 + r] = s;
            }
    free(buf);
    return true;
}

// ---- a few input channels, one image at a time (ad_conv_bn_relu_pool's first block) ----

size_t imk_padded_len(int h, int w) { return (size_t)(h + 2) * (w + 2) + 32; }

void imk_pad_image(const double *x, int c_in, int h, int w, double *xp) {
    size_t len = imk_padded_len(h, w);
    memset(xp, 0, (size_t)c_in * len * sizeof *xp);
    for (int i = 0; i < c_in; i++)
        for (int y = 0; y < h; y++) copy_row(xp + i * len + (size_t)(y + 1) * (w + 2) + 1, x + ((size_t)i * h + y) * w, w);
}

// Lanes x0 .. x0 + 7 of a row w wide that hold pixels.
static inline __mmask8 row_mask(int x0, int w) {
    return w - x0 >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (w - x0)) - 1);
}

// Row y of channels o0 .. o0 + 3, pixels x0 .. x0 + 31 (those < w), into yb [c_out, h*w].
X512_FN void small_tile(const double *xp, const double *W, int c_in, int h, int w, int o0, int y, int x0,
                        double *yb) {
    size_t len = imk_padded_len(h, w), kk = (size_t)c_in * 9;
    __m512d a[4][4];
    for (int r = 0; r < 4; r++) a[r][0] = a[r][1] = a[r][2] = a[r][3] = _mm512_setzero_pd();
    for (int i = 0; i < c_in; i++)
        for (int k = 0; k < 9; k++) {
            const double *s = xp + i * len + (size_t)(y + k / 3) * (w + 2) + x0 + k % 3;
            __m512d v[4] = {_mm512_loadu_pd(s), _mm512_loadu_pd(s + 8), _mm512_loadu_pd(s + 16), _mm512_loadu_pd(s + 24)};
#pragma GCC unroll 4
            for (int r = 0; r < 4; r++) {
                __m512d b = _mm512_set1_pd(W[(size_t)(o0 + r) * kk + (size_t)i * 9 + k]);
                for (int u = 0; u < 4; u++) a[r][u] = _mm512_fmadd_pd(b, v[u], a[r][u]);
            }
        }
    for (int r = 0; r < 4; r++)
        for (int u = 0; u < 4 && x0 + 8 * u < w; u++)
            _mm512_mask_storeu_pd(yb + ((size_t)(o0 + r) * h + y) * w + x0 + 8 * u, row_mask(x0 + 8 * u, w), a[r][u]);
}

X512_FN void conv_small_x512(const double *xp, const double *W, int c_in, int h, int w, int c_out, double *yb) {
    for (int o0 = 0; o0 < c_out; o0 += 4)
        for (int y = 0; y < h; y++)
            for (int x0 = 0; x0 < w; x0 += 32) small_tile(xp, W, c_in, h, w, o0, y, x0, yb);
}

// dw [c_out, c_in*9] += for channels o0, o0 + 1 and input channel i: the sums over the image's
// pixels of g_b times x_b shifted, in lanes, then each lane sum added.
X512_FN void wgrad_small_pair(const double *gb, const double *xpi, int h, int w, int o0, double *dw, size_t kk,
                              int i) {
    __m512d a[2][9];
    for (int k = 0; k < 9; k++) a[0][k] = a[1][k] = _mm512_setzero_pd();
    size_t hw = (size_t)h * w;
    for (int y = 0; y < h; y++)
        for (int x0 = 0; x0 < w; x0 += 8) {
            __mmask8 m = row_mask(x0, w);
            __m512d g0 = _mm512_maskz_loadu_pd(m, gb + (size_t)o0 * hw + (size_t)y * w + x0);
            __m512d g1 = _mm512_maskz_loadu_pd(m, gb + (size_t)(o0 + 1) * hw + (size_t)y * w + x0);
            const double *s = xpi + (size_t)y * (w + 2) + x0;
#pragma GCC unroll 9
            for (int k = 0; k < 9; k++) {
                __m512d v = _mm512_loadu_pd(s + (k / 3) * (w + 2) + k % 3);
                a[0][k] = _mm512_fmadd_pd(g0, v, a[0][k]);
                a[1][k] = _mm512_fmadd_pd(g1, v, a[1][k]);
            }
        }
    for (int r = 0; r < 2; r++)
        for (int k = 0; k < 9; k++) dw[(size_t)(o0 + r) * kk + (size_t)i * 9 + k] += _mm512_reduce_add_pd(a[r][k]);
}

X512_FN void wgrad_small_x512(const double *gb, const double *xp, int c_in, int h, int w, int c_out, double *dw) {
    size_t len = imk_padded_len(h, w), kk = (size_t)c_in * 9;
    for (int o0 = 0; o0 < c_out; o0 += 2)
        for (int i = 0; i < c_in; i++) wgrad_small_pair(gb, xp + i * len, h, w, o0, dw, kk, i);
}

// ---- a plane's statistics: its sum, then its squares about its own mean, on 16 lanes ----

// The sum of x (squares false) or of (x - m)^2 over k entries, lane p % 16 summing entry p.
X512_FN double lanes_sum(const double *x, int k, double m, bool squares) {
    __m512d a = _mm512_setzero_pd(), b = _mm512_setzero_pd(), mv = _mm512_set1_pd(m);
    int p = 0;
    for (; p + 16 <= k; p += 16) {
        __m512d d0 = _mm512_loadu_pd(x + p), d1 = _mm512_loadu_pd(x + p + 8);
        if (squares) {
            d0 = _mm512_sub_pd(d0, mv), d1 = _mm512_sub_pd(d1, mv);
            d0 = _mm512_mul_pd(d0, d0), d1 = _mm512_mul_pd(d1, d1);
        }
        a = _mm512_add_pd(a, d0), b = _mm512_add_pd(b, d1);
    }
    for (; p < k; p += 8) {
        __mmask8 q = k - p >= 8 ? (__mmask8)0xff : (__mmask8)((1u << (k - p)) - 1);
        __m512d d = _mm512_maskz_loadu_pd(q, x + p);
        if (squares) d = _mm512_maskz_sub_pd(q, d, mv), d = _mm512_mul_pd(d, d);
        a = _mm512_add_pd(a, d);
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(a, b));
}

bool imk_plane_stats_x512(const double *x, int k, double out[2]) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return false;
    out[0] = lanes_sum(x, k, 0, false);
    out[1] = lanes_sum(x, k, out[0] / k, true);
    return true;
}

bool imk_conv_small_runs(int c_out) {
    __builtin_cpu_init();
    return c_out > 0 && c_out % 4 == 0 && __builtin_cpu_supports("avx512f");
}
void imk_conv_small(const double *xp, const double *W, int c_in, int h, int w, int c_out, double *yb) {
    conv_small_x512(xp, W, c_in, h, w, c_out, yb);
}
void imk_wgrad_small(const double *gb, const double *xp, int c_in, int h, int w, int c_out, double *dw) {
    wgrad_small_x512(gb, xp, c_in, h, w, c_out, dw);
}

#else

size_t imk_padded_len(int h, int w) { return (size_t)(h + 2) * (w + 2) + 32; }
void imk_pad_image(const double *x, int c_in, int h, int w, double *xp) { (void)x, (void)c_in, (void)h, (void)w, (void)xp; }
bool imk_conv_small_runs(int c_out) { return (void)c_out, false; }
bool imk_plane_stats_x512(const double *x, int k, double out[2]) { return (void)x, (void)k, (void)out, false; }
void imk_conv_small(const double *xp, const double *W, int c_in, int h, int w, int c_out, double *yb) {
    (void)xp, (void)W, (void)c_in, (void)h, (void)w, (void)c_out, (void)yb;
}
void imk_wgrad_small(const double *gb, const double *xp, int c_in, int h, int w, int c_out, double *dw) {
    (void)gb, (void)xp, (void)c_in, (void)h, (void)w, (void)c_out, (void)dw;
}

bool imk_conv_direct(const double *x, const double *other, int n, int c_in, int h, int w, int c_out,
                     bool wgrad, int threads, double *y) {
    (void)x, (void)other, (void)n, (void)c_in, (void)h, (void)w, (void)c_out, (void)wgrad, (void)threads, (void)y;
    return false;
}

#endif
