// The loops behind the image ops (ops_image_kernels.c), on plain arrays: the per-channel passes
// of batch normalization and max-pooling's gather and scatter, each split over images on up to
// `threads` threads. Not installed. Every output entry is computed by one thread, in the same
// order whatever the thread count, and per-channel sums are made per image and added in image
// order: the bits do not depend on the thread count.
#ifndef HYPERTAPE_IMAGE_KERNELS_H
#define HYPERTAPE_IMAGE_KERNELS_H

#include "ad.h"
#include "pool.h"

#include <stdbool.h>
#include <stddef.h>

// fn(ctx, lo, hi) on ranges of [0, n) that cover it once, on up to `threads` threads when work
// (doubles touched) pays for them: the workers of pool (a tape's, ad_tape_pool), or with pool
// NULL threads created for the call; a thread that cannot be started has its range run here.
typedef void (*imk_fn)(void *ctx, int lo, int hi);
void imk_parallel(ad_pool *pool, int threads, int n, size_t work, imk_fn fn, void *ctx);

// x [n, c*k]: each channel's mean and r = 1/sqrt(biased variance + eps) (eps >= 0; r unused
// when NULL). false when the per-image partial sums find no memory.
bool imk_channel_stats(const double *x, int n, int c, int k, double eps, int threads, double *mean,
                       double *r);
// The same in parts: one plane's sum and squares about its own mean into out [2], and the
// statistics from part [n, c, 2] of such pairs (added in image order).
void imk_plane_stats(const double *x, int k, double out[2]);
// The same on AVX-512 in 16 lanes (ops_image_direct.c); false (nothing made) without it.
bool imk_plane_stats_x512(const double *x, int k, double out[2]);
void imk_stats_combine(const double *part, int n, int c, int k, double eps, double *mean, double *r);
// y = (x - mean) r per channel (y may be x).
void imk_channel_normalize(const double *x, int n, int c, int k, const double *mean, const double *r,
                           int threads, double *y);
// y = z a[ch] + s[ch] on channel ch.
void imk_channel_affine(const double *z, int n, int c, int k, const double *a, const double *s,
                        int threads, double *y);
// sgz [c], sg [c]: per channel the sum of g z and of g over images and entries (g, z [n, c*k]).
bool imk_channel_sums(const double *g, const double *z, int n, int c, int k, int threads,
                      double *sgz, double *sg);
// y = g - mean(g) - z mean(g z) per channel.
bool imk_channel_proj(const double *g, const double *z, int n, int c, int k, int threads, double *y);

// The adjoint of normalization at x: y = r (g - mean(g) - z mean(g z)) with z = (x - mean) r,
// per channel, z made on the fly (never stored).
bool imk_channel_norm_adj(const double *g, const double *x, int n, int c, int k, double eps,
                          int threads, double *y);

// 2x2 max-pooling over `planes` = n*c planes of h x w: gather a at x's windows' argmax into
// [planes, (h/2)*(w/2)]; scatter g [planes, (h/2)*(w/2)] to those positions of a zero
// [planes, h*w] (written whole: no clearing pass). `per` planes per image (the unit of threads).
void imk_pool_gather(const double *a, const double *x, int n, int per, int h, int w, int threads,
                     double *y);
void imk_pool_scatter(const double *g, const double *x, int n, int per, int h, int w, int threads,
                      double *y);

// One image x [c, h, w] into columns off .. off + hw - 1 of cols [c*9, ld]: row i*9 + k holds
// channel i shifted by k's offset (dy, dx), zero outside the image.
void imk_im2col(const double *x, int c, int h, int w, double *cols, size_t ld, size_t off);
// One image's products, on the calling thread: y_b [c_out, h*w] = W [c_out, c_in*9] times
// x_b's columns (made in cols [c_in*9, h*w]); and dW [c_out, c_in*9] (+)= G_b [c_out, h*w]
// cols^T (added when add, else written).
void imk_conv_image(const double *xb, const double *W, int c_in, int h, int w, int c_out,
                    double *cols, double *yb);
void imk_wgrad_image(const double *gb, const double *cols, int c_in, int hw, int c_out, bool add,
                     double *dw);
// conv2d's products one image at a time (im2col + dgemm straight from and into the images'
// rows), the images in IMK_CONV_CHUNKS fixed chunks over the threads: forward, y [n, c_out*hw]
// from W = other [c_out, c_in*9]; weight gradient (wgrad), y [c_out, c_in*9] from
// G = other [n, c_out*hw], each chunk's sum made apart and the chunks' added in order. false
// when there is no memory for the columns.
enum { IMK_CONV_CHUNKS = 8 };
bool imk_conv_images(const double *x, const double *other, int n, int c_in, int h, int w, int c_out,
                     bool wgrad, int threads, double *y);

// The same products without im2col, on AVX-512 (ops_image_direct.c): whether they run here for
// c_in input and c_out output channels (c_in >= 8, c_out a multiple of 16, and the CPU has
// AVX-512), and the products, as imk_conv_images's (the same chunks; false when there is no
// memory, or they do not run).
bool imk_conv_direct_runs(int c_in, int c_out);
bool imk_conv_direct(const double *x, const double *other, int n, int c_in, int h, int w, int c_out,
                     bool wgrad, int threads, double *y);

// One image at a time for few input channels, on AVX-512 (ops_image_direct.c; only where
// imk_conv_small_runs, c_out a multiple of 4): x [c_in, h, w] into xp [c_in, imk_padded_len]
// (zero-padded, row stride w + 2); y_b [c_out, h*w] = the conv of xp by W [c_out, c_in*9]; and
// dW [c_out, c_in*9] += the weight gradient of g_b [c_out, h*w] with xp.
bool imk_conv_small_runs(int c_out);
size_t imk_padded_len(int h, int w);
void imk_pad_image(const double *x, int c_in, int h, int w, double *xp);
void imk_conv_small(const double *xp, const double *W, int c_in, int h, int w, int c_out, double *yb);
void imk_wgrad_small(const double *gb, const double *xp, int c_in, int h, int w, int c_out, double *dw);

// Checks shared by the image op files (ops_image.c), each failing with a one-line message naming
// op: X is a batch [n, c*h*w] of images (`what` names it), P a [2c] of scales then shifts.
bool imk_check_images(ad_tape *t, const char *op, const char *what, ad_var X, int c, int h, int w);
bool imk_check_params(ad_tape *t, const char *op, ad_var P, int c);
// Per-channel compositions of tape ops, for X [n, c*k]: v [c] as the row [c*k] (v's entry ch on
// channel ch's entries), X times v[ch] on channel ch, and each channel's mean [c].
ad_var imk_channel_row(ad_tape *t, ad_var v, int c, int k);
ad_var imk_channel_scale(ad_tape *t, ad_var X, ad_var v, int c);
ad_var imk_channel_mean(ad_tape *t, ad_var X, int c, int k);

#endif
