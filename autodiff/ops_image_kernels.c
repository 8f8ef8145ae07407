// The loops of the image ops (image_kernels.h): batch normalization's per-channel passes and
// max-pooling, split over images on a few threads. The activations of a ConvNet are large (the
// first block of a 320-image batch: [320, 32*28*28], 64 MB), so each op reads and writes them as
// few times as it can: a channel's statistics in one read (per image and channel, a sum and the
// squares about that segment's own mean, in cache, combined exactly), the scatter written whole.
// Sums run on four accumulators in a fixed order (the compiler may not reorder double adds).
#include "image_kernels.h"

#include <cblas.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { IMK_MAX_THREADS = 8 };
// Doubles touched below which one thread does it all (a thread costs tens of microseconds).
#define IMK_MIN_WORK ((size_t)1 << 16)

// The range [0, n) in pieces a few per thread, taken in turn from a shared counter: a thread the
// host is slow to schedule (it is shared) leaves its pieces to the others instead of holding up
// the call. Which thread runs a piece changes nothing in its bits.
typedef struct {
    imk_fn fn;
    void *ctx;
    int n, piece;
    atomic_int next;
} imk_job;

static void imk_run(void *a) {
    imk_job *j = a;
    for (int p; (p = atomic_fetch_add(&j->next, 1)) * j->piece < j->n;) {
        int lo = p * j->piece, hi = lo + j->piece < j->n ? lo + j->piece : j->n;
        j->fn(j->ctx, lo, hi);
    }
}

void imk_parallel(ad_pool *pool, int threads, int n, size_t work, imk_fn fn, void *ctx) {
    int nt = work < IMK_MIN_WORK ? 1 : threads < 1 ? 1 : threads > IMK_MAX_THREADS ? IMK_MAX_THREADS : threads;
    if (nt > n) nt = n;
    if (n <= 0) return;
    if (nt <= 1) {
        fn(ctx, 0, n);
        return;
    }
    int pieces = 4 * nt < n ? 4 * nt : n;
    imk_job j = {fn, ctx, n, (n + pieces - 1) / pieces, 0};
    atomic_init(&j.next, 0);
    // a thread that cannot be started leaves its pieces to the others
    ad_pool_run(pool, nt, imk_run, &j);
}

// ---- passes over the segments: channel ch of image b, k entries from b*c*k + ch*k ----

typedef void (*seg_fn)(const void *ctx, size_t off, int b, int ch);
typedef struct {
    seg_fn fn;
    const void *ctx;
    int c, k;
} seg_job;

static void run_segments(void *job, int lo, int hi) {
    const seg_job *j = job;
    size_t cols = (size_t)j->c * j->k;
    for (int b = lo; b < hi; b++)
        for (int ch = 0; ch < j->c; ch++) j->fn(j->ctx, b * cols + (size_t)ch * j->k, b, ch);
}

// fn on every segment of an [n, c*k] batch, split over images; passes: the arrays it touches.
static void for_segments(int threads, int n, int c, int k, int passes, seg_fn fn, const void *ctx) {
    seg_job j = {fn, ctx, c, k};
    imk_parallel(NULL, threads, n, (size_t)n * c * k * passes, run_segments, &j);
}

// ---- sums on four accumulators ----

static double sum4(const double *x, int k) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int p = 0;
    for (; p + 4 <= k; p += 4) s0 += x[p], s1 += x[p + 1], s2 += x[p + 2], s3 += x[p + 3];
    for (; p < k; p++) s0 += x[p];
    return (s0 + s1) + (s2 + s3);
}
static double sqdev4(const double *x, int k, double m) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int p = 0;
    for (; p + 4 <= k; p += 4) {
        double d0 = x[p] - m, d1 = x[p + 1] - m, d2 = x[p + 2] - m, d3 = x[p + 3] - m;
        s0 += d0 * d0, s1 += d1 * d1, s2 += d2 * d2, s3 += d3 * d3;
    }
    for (; p < k; p++) s0 += (x[p] - m) * (x[p] - m);
    return (s0 + s1) + (s2 + s3);
}
// sum of g z into *sgz and of g into *sg
static void dot_sum4(const double *g, const double *z, int k, double *sgz, double *sg) {
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    int p = 0;
    for (; p + 4 <= k; p += 4) {
        a0 += g[p] * z[p], a1 += g[p + 1] * z[p + 1], a2 += g[p + 2] * z[p + 2], a3 += g[p + 3] * z[p + 3];
        b0 += g[p], b1 += g[p + 1], b2 += g[p + 2], b3 += g[p + 3];
    }
    for (; p < k; p++) a0 += g[p] * z[p], b0 += g[p];
    *sgz = (a0 + a1) + (a2 + a3), *sg = (b0 + b1) + (b2 + b3);
}

// ---- per-channel statistics ----

typedef struct {
    const double *x, *z;
    int c, k;
    double *part; // [n, c, 2]
} stats_job;

void imk_plane_stats(const double *x, int k, double out[2]) {
    if (imk_plane_stats_x512(x, k, out)) return;
    double s = sum4(x, k);
    out[0] = s, out[1] = sqdev4(x, k, s / k);
}

// per image and channel: the segment's sum and its squares about the segment's mean
static void segment_stats(const void *ctx, size_t off, int b, int ch) {
    const stats_job *j = ctx;
    imk_plane_stats(j->x + off, j->k, j->part + ((size_t)b * j->c + ch) * 2);
}

bool imk_channel_stats(const double *x, int n, int c, int k, double eps, int threads, double *mean,
                       double *r) {
    double *part = malloc((size_t)n * c * 2 * sizeof *part);
    if (!part) return false;
    stats_job j = {x, NULL, c, k, part};
    for_segments(threads, n, c, k, 1, segment_stats, &j);
    imk_stats_combine(part, n, c, k, eps, mean, r);
    free(part);
    return true;
}

void imk_stats_combine(const double *part, int n, int c, int k, double eps, double *mean, double *r) {
    double N = (double)n * k;
    for (int ch = 0; ch < c; ch++) {
        double s = 0, q = 0;
        for (int b = 0; b < n; b++) s += part[((size_t)b * c + ch) * 2];
        double m = s / N;
        // sum of (x - m)^2 = sum over segments of their own squares + k (segment mean - m)^2
        for (int b = 0; b < n; b++) {
            const double *o = part + ((size_t)b * c + ch) * 2;
            double d = o[0] / k - m;
            q += o[1] + k * d * d;
        }
        mean[ch] = m;
        if (r) r[ch] = 1 / sqrt(q / N + eps);
    }
}

// ---- per-channel maps: y = x a[ch] + s[ch], over images ----

typedef struct {
    const double *x, *a, *s;
    int c, k;
    double *y;
} map_job;

static void map_channels(const void *ctx, size_t off, int b, int ch) {
    (void)b;
    const map_job *j = ctx;
    const double *x = j->x + off;
    double *y = j->y + off, a = j->a[ch], s = j->s[ch];
    for (int p = 0; p < j->k; p++) y[p] = x[p] * a + s;
}

// (x - m) r, as chan_norm has always computed it (not x r - m r: the rounding of a large mean)
static void normalize_channels(const void *ctx, size_t off, int b, int ch) {
    (void)b;
    const map_job *j = ctx;
    const double *x = j->x + off;
    double *y = j->y + off, m = j->s[ch], r = j->a[ch];
    for (int p = 0; p < j->k; p++) y[p] = (x[p] - m) * r;
}

void imk_channel_normalize(const double *x, int n, int c, int k, const double *mean, const double *r,
                           int threads, double *y) {
    map_job j = {x, r, mean, c, k, y};
    for_segments(threads, n, c, k, 2, normalize_channels, &j);
}

void imk_channel_affine(const double *z, int n, int c, int k, const double *a, const double *s,
                        int threads, double *y) {
    map_job j = {z, a, s, c, k, y};
    for_segments(threads, n, c, k, 2, map_channels, &j);
}

// ---- sums of g z and g per channel, and the projection g - mean(g) - z mean(g z) ----

static void segment_dots(const void *ctx, size_t off, int b, int ch) {
    const stats_job *j = ctx; // x is g
    double *out = j->part + ((size_t)b * j->c + ch) * 2;
    dot_sum4(j->x + off, j->z + off, j->k, &out[0], &out[1]);
}

bool imk_channel_sums(const double *g, const double *z, int n, int c, int k, int threads,
                      double *sgz, double *sg) {
    double *part = malloc((size_t)n * c * 2 * sizeof *part);
    if (!part) return false;
    stats_job j = {g, z, c, k, part};
    for_segments(threads, n, c, k, 2, segment_dots, &j);
    for (int ch = 0; ch < c; ch++) {
        double a = 0, s = 0;
        for (int b = 0; b < n; b++) a += part[((size_t)b * c + ch) * 2], s += part[((size_t)b * c + ch) * 2 + 1];
        sgz[ch] = a, sg[ch] = s;
    }
    free(part);
    return true;
}

typedef struct {
    const double *g, *z, *mg, *mgz;
    int c, k;
    double *y;
} proj_job;

static void project_channels(const void *ctx, size_t off, int b, int ch) {
    (void)b;
    const proj_job *j = ctx;
    const double *g = j->g + off, *z = j->z + off;
    double *y = j->y + off, mg = j->mg[ch], mgz = j->mgz[ch];
    for (int p = 0; p < j->k; p++) y[p] = g[p] - mg - z[p] * mgz;
}

bool imk_channel_proj(const double *g, const double *z, int n, int c, int k, int threads, double *y) {
    double *m = malloc((size_t)c * 2 * sizeof *m);
    if (!m || !imk_channel_sums(g, z, n, c, k, threads, m + c, m)) {
        free(m);
        return false;
    }
    double inv = 1 / ((double)n * k);
    for (int ch = 0; ch < 2 * c; ch++) m[ch] *= inv;
    proj_job j = {g, z, m, m + c, c, k, y};
    for_segments(threads, n, c, k, 3, project_channels, &j);
    free(m);
    return true;
}

// ---- batch normalization's adjoint: r (g - mean(g) - z mean(g z)), z = (x - mean) r ----

typedef struct {
    const double *g, *x, *m, *r, *mg, *mgz;
    int c, k;
    double *part, *y; // part [n, c, 2]: per image and channel the sums of g z and of g
} adj_job;

static void adj_sums(const void *ctx, size_t off, int b, int ch) {
    const adj_job *j = ctx;
    const double *g = j->g + off, *x = j->x + off;
    double m = j->m[ch], r = j->r[ch];
    double a0 = 0, a1 = 0, a2 = 0, a3 = 0, b0 = 0, b1 = 0, b2 = 0, b3 = 0;
    int p = 0;
    for (; p + 4 <= j->k; p += 4) {
        a0 += g[p] * ((x[p] - m) * r), a1 += g[p + 1] * ((x[p + 1] - m) * r);
        a2 += g[p + 2] * ((x[p + 2] - m) * r), a3 += g[p + 3] * ((x[p + 3] - m) * r);
        b0 += g[p], b1 += g[p + 1], b2 += g[p + 2], b3 += g[p + 3];
    }
    for (; p < j->k; p++) a0 += g[p] * ((x[p] - m) * r), b0 += g[p];
    double *out = j->part + ((size_t)b * j->c + ch) * 2;
    out[0] = (a0 + a1) + (a2 + a3), out[1] = (b0 + b1) + (b2 + b3);
}

static void adj_apply(const void *ctx, size_t off, int b, int ch) {
    (void)b;
    const adj_job *j = ctx;
    const double *g = j->g + off, *x = j->x + off;
    double *y = j->y + off, m = j->m[ch], r = j->r[ch], mg = j->mg[ch], mgz = j->mgz[ch];
    for (int p = 0; p < j->k; p++) y[p] = (g[p] - mg - ((x[p] - m) * r) * mgz) * r;
}

bool imk_channel_norm_adj(const double *g, const double *x, int n, int c, int k, double eps,
                          int threads, double *y) {
    double *buf = malloc(((size_t)c * 4 + (size_t)n * c * 2) * sizeof *buf);
    if (!buf || !imk_channel_stats(x, n, c, k, eps, threads, buf, buf + c)) {
        free(buf);
        return false;
    }
    double *mg = buf + 2 * c, *mgz = buf + 3 * c, inv = 1 / ((double)n * k);
    adj_job j = {g, x, buf, buf + c, mg, mgz, c, k, buf + 4 * c, y};
    for_segments(threads, n, c, k, 2, adj_sums, &j);
    for (int ch = 0; ch < c; ch++) {
        double a = 0, s = 0;
        for (int b = 0; b < n; b++) a += j.part[((size_t)b * c + ch) * 2], s += j.part[((size_t)b * c + ch) * 2 + 1];
        mgz[ch] = a * inv, mg[ch] = s * inv;
    }
    for_segments(threads, n, c, k, 3, adj_apply, &j);
    free(buf);
    return true;
}

// ---- 2x2 max-pooling ----

// The offset in an [h, w] plane of window (i, j)'s argmax in x: the first maximum in the order
// (0, 0), (0, 1), (1, 0), (1, 1), as PyTorch picks on ties (all-zero windows after a ReLU).
// Selections, not branches: which entry wins is data (after a ReLU, random), and a mispredicted
// branch costs more than the compares.
static inline size_t pick(size_t best, size_t p, bool take) {
    size_t m = (size_t)0 - (size_t)take;
    return (best & ~m) | (p & m);
}
static inline size_t window_argmax(const double *x, int w, int i, int j) {
    size_t p = (size_t)2 * i * w + 2 * j, best = p;
    double v = x[p], c;
    c = x[p + 1], best = pick(best, p + 1, c > v), v = c > v ? c : v;
    c = x[p + w], best = pick(best, p + w, c > v), v = c > v ? c : v;
    c = x[p + w + 1], best = pick(best, p + w + 1, c > v);
    return best;
}

typedef struct {
    const double *a, *x;
    int per, h, w;
    double *y;
} pool_job;

static void gather_images(void *ctx, int lo, int hi) {
    const pool_job *j = ctx;
    int h = j->h, w = j->w, ho = h / 2, wo = w / 2;
    size_t hw = (size_t)h * w, so = (size_t)ho * wo;
    for (size_t q = (size_t)lo * j->per; q < (size_t)hi * j->per; q++) {
        const double *x = j->x + q * hw, *a = j->a + q * hw;
        double *y = j->y + q * so;
        for (int i = 0; i < ho; i++)
            for (int jj = 0; jj < wo; jj++) *y++ = a[window_argmax(x, w, i, jj)];
    }
}

static void scatter_images(void *ctx, int lo, int hi) {
    const pool_job *j = ctx; // a is g
    int h = j->h, w = j->w, ho = h / 2, wo = w / 2;
    size_t hw = (size_t)h * w, so = (size_t)ho * wo;
    for (size_t q = (size_t)lo * j->per; q < (size_t)hi * j->per; q++) {
        const double *x = j->x + q * hw, *g = j->a + q * so;
        double *y = j->y + q * hw;
        for (int i = 0; i < ho; i++) {
            double *r0 = y + (size_t)2 * i * w, *r1 = r0 + w;
            for (int jj = 0; jj < wo; jj++) {
                size_t best = window_argmax(x, w, i, jj);
                r0[2 * jj] = r0[2 * jj + 1] = r1[2 * jj] = r1[2 * jj + 1] = 0;
                y[best] = *g++;
            }
            if (w & 1) r0[w - 1] = r1[w - 1] = 0; // the column pooling leaves out
        }
        if (h & 1) memset(y + (size_t)(h - 1) * w, 0, (size_t)w * sizeof *y);
    }
}

void imk_pool_gather(const double *a, const double *x, int n, int per, int h, int w, int threads,
                     double *y) {
    pool_job j = {a, x, per, h, w, y};
    imk_parallel(NULL, threads, n, (size_t)n * per * h * w * 2, gather_images, &j);
}

void imk_pool_scatter(const double *g, const double *x, int n, int per, int h, int w, int threads,
                      double *y) {
    pool_job j = {g, x, per, h, w, y};
    imk_parallel(NULL, threads, n, (size_t)n * per * h * w * 2, scatter_images, &j);
}

// ---- im2col, and convolutions one image per product ----

// One image x [c, h, w] into columns b*hw .. (b+1)*hw - 1 of cols [c*9, ld]: row i*9 + k holds
// channel i shifted by k's offset (dy, dx), zero outside the image. The rows that stay inside
// are one copy (entry j from entry j + dy*w + dx: a shifted plane is the plane moved by that
// much), then the column the shift brings in from the neighbouring row is cleared: one call per
// shift, not one per image row (rows are short: 14 pixels in a ConvNet's second block).
void imk_im2col(const double *x, int c, int h, int w, double *cols, size_t ld, size_t off) {
    size_t hw = (size_t)h * w;
    for (int i = 0; i < c; i++)
        for (int k = 0; k < 9; k++) {
            int dy = k / 3 - 1, dx = k % 3 - 1, y0 = dy < 0 ? 1 : 0, y1 = dy > 0 ? h - 1 : h;
            double *dst = cols + (size_t)(i * 9 + k) * ld + off;
            if (y1 <= y0) { // a one-row image shifted up or down
                memset(dst, 0, hw * sizeof *dst);
                continue;
            }
            size_t lo = (size_t)y0 * w + (dx < 0), hi = (size_t)y1 * w - (dx > 0);
            memset(dst, 0, (size_t)y0 * w * sizeof *dst);
            if (hi > lo) memcpy(dst + lo, x + i * hw + (ptrdiff_t)lo + (ptrdiff_t)dy * w + dx, (hi - lo) * sizeof *dst);
            memset(dst + (size_t)y1 * w, 0, (size_t)(h - y1) * w * sizeof *dst);
            for (int y = y0; dx && y < y1; y++) dst[(size_t)y * w + (dx < 0 ? 0 : w - 1)] = 0;
        }
}

typedef struct {
    const double *x, *other;
    int n, c_in, h, w, c_out, chunks;
    double *cols, *part, *y; // cols [chunks, c_in*9, hw]; part [chunks, c_out*c_in*9] (wgrad)
} conv_job;

// How many pieces of n an image's product [m, n] = [m, k] [k, n] (or one over n: the weight
// gradient, a sum over pixels) is made in: pieces of at most most_madds multiply-adds, which
// OpenBLAS 0.3.21 runs in the calling thread: up to 10^6 on its small-matrix kernel for a
// product, up to 2^18 for one with B transposed (the weight gradient). A larger one goes to its
// threads, while the images are already split over ours: its second thread waits, spinning, for
// a core (measured, CPU time of [32, 288] [288, 196]: 44 GFLOP/s as one product, 66 as two of
// 98 columns).
enum { CONV_MADDS = 1000000, WGRAD_MADDS = 1 << 18 };
static int product_pieces(int m, int n, int k, int64_t most_madds) {
    int64_t per = (int64_t)m * k, most = per ? most_madds / per : n; // columns per piece
    if (most < 1) most = 1;
    return (int)((n + most - 1) / most);
}

void imk_conv_image(const double *xb, const double *W, int c_in, int h, int w, int c_out,
                    double *cols, double *yb) {
    int hw = h * w, kk = c_in * 9;
    imk_im2col(xb, c_in, h, w, cols, (size_t)hw, 0);
    for (int p0 = 0, pieces = product_pieces(c_out, hw, kk, CONV_MADDS); p0 < pieces; p0++) {
        int c0 = (int)((int64_t)hw * p0 / pieces), c1 = (int)((int64_t)hw * (p0 + 1) / pieces);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, c_out, c1 - c0, kk, 1.0, W, kk,
                    cols + c0, hw, 0.0, yb + c0, hw);
    }
}

void imk_wgrad_image(const double *gb, const double *cols, int c_in, int hw, int c_out, bool add,
                     double *dw) {
    int kk = c_in * 9;
    for (int p0 = 0, pieces = product_pieces(c_out, kk, hw, WGRAD_MADDS); p0 < pieces; p0++) {
        int c0 = (int)((int64_t)hw * p0 / pieces), c1 = (int)((int64_t)hw * (p0 + 1) / pieces);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, c_out, kk, c1 - c0, 1.0, gb + c0, hw,
                    cols + c0, hw, add || p0 ? 1.0 : 0.0, dw, kk);
    }
}

static void conv_chunks(void *ctx, int lo, int hi) {
    const conv_job *j = ctx;
    int hw = j->h * j->w, kk = j->c_in * 9;
    size_t row = (size_t)j->c_out * hw, xrow = (size_t)j->c_in * hw;
    for (int ch = lo; ch < hi; ch++) {
        double *cols = j->cols + (size_t)ch * kk * hw;
        int b0 = (int)((int64_t)j->n * ch / j->chunks), b1 = (int)((int64_t)j->n * (ch + 1) / j->chunks);
        for (int b = b0; b < b1; b++) {
            if (j->part) { // this chunk's dW [c_out, c_in*9] (+)= G_b [c_out, hw] cols^T
                imk_im2col(j->x + b * xrow, j->c_in, j->h, j->w, cols, (size_t)hw, 0);
                imk_wgrad_image(j->other + b * row, cols, j->c_in, hw, j->c_out, b > b0,
                                j->part + (size_t)ch * j->c_out * kk);
            } else // y_b [c_out, hw] = W [c_out, c_in*9] cols [c_in*9, hw]
                imk_conv_image(j->x + b * xrow, j->other, j->c_in, j->h, j->w, j->c_out, cols, j->y + b * row);
        }
    }
}

bool imk_conv_images(const double *x, const double *other, int n, int c_in, int h, int w, int c_out,
                     bool wgrad, int threads, double *y) {
    int chunks = n < IMK_CONV_CHUNKS ? n : IMK_CONV_CHUNKS;
    size_t kk = (size_t)c_in * 9, hw = (size_t)h * w, nw = (size_t)c_out * kk;
    double *cols = malloc(((size_t)chunks * kk * hw + (wgrad ? (size_t)chunks * nw : 0)) * sizeof *cols);
    if (!cols) return false;
    conv_job j = {x, other, n, c_in, h, w, c_out, chunks, cols,
                  wgrad ? cols + (size_t)chunks * kk * hw : NULL, y};
    imk_parallel(NULL, threads, chunks, (size_t)n * hw * (kk + c_out), conv_chunks, &j);
    if (wgrad) { // the chunks' sums added in chunk order
        memcpy(y, j.part, nw * sizeof *y);
        for (int ch = 1; ch < chunks; ch++)
            for (size_t i = 0; i < nw; i++) y[i] += j.part[(size_t)ch * nw + i];
    }
    free(cols);
    return true;
}
