// pentagram: the GAN of AIT (TPAMI) Sec. 6.3.2, Table 6 and Fig. 10 as a bilevel problem. The
// generator G(x; v) is the UL variable and the discriminator D(y; u) the LL one (Sec. 4.3's
// reformulation, our reading in the README):
//   GAN:  F = mean softplus(-D(G(v)))                 (G's non-saturating loss, -log sigma(D))
//         f = mean softplus(-D(u)) + mean softplus(D(G(v)))   (D's cross-entropy)
//   WGAN: F = -mean D(G(v)),  f = mean D(G(v)) - mean D(u), D's weights clipped to [-c, c]
//         (Arjovsky et al., "Wasserstein GAN", Alg. 1; the clip is the problem's Y box).
// Data: 10 Gaussians of standard deviation sigma on a pentagram of maximum radius 8: the five
// outer points at radius 8 and angles 90 + 72 j degrees, the five inner ones (where the star's
// edges cross) at radius 8 cos 72 / cos 36 and angles 126 + 72 j. u [n, 2] and the noise
// v [n, noise_dim] ~ N(0, I) are drawn once from the seed (a full-batch GAN).
// G: noise_dim -> h -> h -> 2 and D: 2 -> h -> h -> 1, tanh hidden layers, linear outputs.
// Metrics on fresh draws (n_eval generated and n_eval real samples, their own seeded stream):
//   modes: the centres with at least 1% of the generated samples within 3 sigma;
//   js:    Jensen-Shannon divergence (nats) of the two histograms on a 40 x 40 grid over
//          [-10, 10]^2 (one more bin for what falls outside);
//   fd:    Frechet distance of the Gaussians fitted to the real and to the generated samples
//          (the 2-D analogue of FID).
#include "models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PG_MODES = 10, PG_GRID = 40, PG_GAN = 0, PG_WGAN = 1 };

typedef struct {
    int n, noise_dim, g_hidden, d_hidden, n_eval, seed;
    double sigma, clip;
    int loss;
    char samples[256]; // a path: the last evaluation writes its generated and real samples there
} pg_params;

static const char *const loss_words[] = {"gan", "wgan", NULL};
static const pg_params pg_defaults = {.n = 512, .noise_dim = 4, .g_hidden = 32, .d_hidden = 32,
                                      .n_eval = 2000, .seed = 0, .sigma = 0.2, .clip = 0.1};
static const blo_setting pg_settings[] = {
    BLO_ROW_INT(pg_params, n, "n", 10, 1 << 20, "N", "real samples and noise draws (fixed for the run)"),
    BLO_ROW_INT(pg_params, noise_dim, "noise_dim", 1, 1024, "D", "noise dimension"),
    BLO_ROW_INT(pg_params, g_hidden, "g_hidden", 1, 4096, "H", "G's hidden width (two layers)"),
    BLO_ROW_INT(pg_params, d_hidden, "d_hidden", 1, 4096, "H", "D's hidden width (two layers)"),
    BLO_ROW_DBL(pg_params, sigma, "sigma", 0, 2, BLO_SET_LO_OPEN, "s", "each Gaussian's standard deviation"),
    BLO_ROW_CHOICE(pg_params, loss, "loss", loss_words, "L", "gan (cross-entropy) or wgan (clipped critic)"),
    BLO_ROW_DBL(pg_params, clip, "clip", 0, INFINITY, BLO_SET_LO_OPEN, "c", "wgan: D's weights in [-c, c]"),
    BLO_ROW_INT(pg_params, n_eval, "n_eval", 100, 1 << 22, "N", "samples drawn for the metrics"),
    BLO_ROW_INT(pg_params, seed, "seed", 0, 1 << 30, "S", "of the data, the noise and the start"),
    BLO_ROW_STRING(pg_params, samples, "samples", "FILE", "write the evaluated samples there (gnuplot blocks)"),
    BLO_ROW_END,
};

typedef struct {
    pg_params par;
    int n_x, n_y;
    double *real, *noise;          // [n, 2], [n, noise_dim]
    double *eval_real, *eval_noise; // [n_eval, 2], [n_eval, noise_dim]
    double centre[PG_MODES][2];
    double *x0, *y0, *y_lo, *y_hi;
} pg_model;

// ---- the networks ---------------------------------------------------------------------------------

static int mlp_size(int in, int h, int out) { return in * h + h + h * h + h + h * out + out; }

// w[off : off + rows * cols] as a matrix [rows, cols]; a bias (rows = 0) as a vector [cols].
static ad_var part(ad_tape *t, ad_var w, int off, int rows, int cols) {
    if (rows == 0) return ad_slice(t, w, off, cols);
    return ad_reshape(t, ad_slice(t, w, off, rows * cols), ad_mat_shape(rows, cols));
}

// in [m, a] -> [m, out] through two tanh layers of width h; w holds (W1, b1, W2, b2, W3, b3).
static ad_var mlp(ad_tape *t, ad_var w, ad_var in, int a, int h, int out) {
    int o = 0;
    ad_var W1 = part(t, w, o, a, h), b1 = part(t, w, o += a * h, 0, h);
    ad_var W2 = part(t, w, o += h, h, h), b2 = part(t, w, o += h * h, 0, h);
    ad_var W3 = part(t, w, o += h, h, out), b3 = part(t, w, o += h * out, 0, out);
    ad_var H = ad_tanh(t, ad_add(t, ad_matmul(t, in, W1, 0, 0), b1));
    H = ad_tanh(t, ad_add(t, ad_matmul(t, H, W2, 0, 0), b2));
    return ad_add(t, ad_matmul(t, H, W3, 0, 0), b3);
}

static ad_var generate(ad_tape *t, const pg_model *d, ad_var x, const double *noise, int n) {
    ad_var v = ad_const_view(t, ad_mat_shape(n, d->par.noise_dim), noise);
    return mlp(t, x, v, d->par.noise_dim, d->par.g_hidden, 2);
}

static ad_var discriminate(ad_tape *t, const pg_model *d, ad_var y, ad_var u) {
    return mlp(t, y, u, 2, d->par.d_hidden, 1);
}

static ad_var pg_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const pg_model *d = u;
    ad_var s = discriminate(t, d, y, generate(t, d, x, d->noise, d->par.n));
    return d->par.loss == PG_WGAN ? ad_neg(t, ad_mean(t, s)) : ad_mean(t, ad_softplus(t, ad_neg(t, s)));
}

static ad_var pg_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const pg_model *d = u;
    ad_var fake = discriminate(t, d, y, generate(t, d, x, d->noise, d->par.n));
    ad_var real = discriminate(t, d, y, ad_const_view(t, ad_mat_shape(d->par.n, 2), d->real));
    if (d->par.loss == PG_WGAN) return ad_sub(t, ad_mean(t, fake), ad_mean(t, real));
    return ad_add(t, ad_mean(t, ad_softplus(t, ad_neg(t, real))), ad_mean(t, ad_softplus(t, fake)));
}

// ---- the metrics ----------------------------------------------------------------------------------

static const mdl_metric pg_metrics[] = {{"modes", "modes covered (of 10)"},
                                        {"js", "Jensen-Shannon divergence (nats)"},
                                        {"fd", "Frechet distance of the fitted Gaussians"}};

static int covered_modes(const pg_model *d, const double *s, int n) {
    int covered = 0;
    double r2 = 9 * d->par.sigma * d->par.sigma;
    for (int j = 0; j < PG_MODES; j++) {
        int in = 0;
        for (int i = 0; i < n; i++) {
            double dx = s[2 * i] - d->centre[j][0], dy = s[2 * i + 1] - d->centre[j][1];
            in += dx * dx + dy * dy <= r2;
        }
        covered += 100 * in >= n; // at least 1%
    }
    return covered;
}

// The cell of a point on the grid over [-10, 10]^2, or PG_GRID^2 outside it.
static int cell(const double *p) {
    int i = (int)floor((p[0] + 10) / 20 * PG_GRID), j = (int)floor((p[1] + 10) / 20 * PG_GRID);
    return i >= 0 && i < PG_GRID && j >= 0 && j < PG_GRID && isfinite(p[0]) && isfinite(p[1]) ? i * PG_GRID + j
                                                                                                : PG_GRID * PG_GRID;
}

static double js_divergence(const double *a, const double *b, int n) {
    enum { B = PG_GRID * PG_GRID + 1 };
    double *P = calloc(2 * B, sizeof(double)), js = 0;
    if (!P) return NAN;
    double *Q = P + B;
    for (int i = 0; i < n; i++) P[cell(a + 2 * i)] += 1.0 / n, Q[cell(b + 2 * i)] += 1.0 / n;
    for (int k = 0; k < B; k++) {
        double m = 0.5 * (P[k] + Q[k]);
        if (P[k] > 0) js += 0.5 * P[k] * log(P[k] / m);
        if (Q[k] > 0) js += 0.5 * Q[k] * log(Q[k] / m);
    }
    free(P);
    return js;
}

// mean mu [2] and covariance S [3] (xx, xy, yy) of n points
static void fit_gaussian(const double *s, int n, double *mu, double *S) {
    mu[0] = mu[1] = S[0] = S[1] = S[2] = 0;
    for (int i = 0; i < n; i++) mu[0] += s[2 * i] / n, mu[1] += s[2 * i + 1] / n;
    for (int i = 0; i < n; i++) {
        double a = s[2 * i] - mu[0], b = s[2 * i + 1] - mu[1];
        S[0] += a * a / n, S[1] += a * b / n, S[2] += b * b / n;
    }
}

// ||mu_a - mu_b||^2 + tr A + tr B - 2 tr (A^1/2 B A^1/2)^1/2, where for 2 x 2 the last trace is
// sqrt(tr AB + 2 sqrt(det AB)) (AB has the eigenvalues of A^1/2 B A^1/2, both >= 0).
static double frechet(const double *a, const double *b, int n) {
    double ma[2], mb[2], A[3], B[3];
    fit_gaussian(a, n, ma, A);
    fit_gaussian(b, n, mb, B);
    double tr_ab = A[0] * B[0] + 2 * A[1] * B[1] + A[2] * B[2];
    double det_ab = (A[0] * A[2] - A[1] * A[1]) * (B[0] * B[2] - B[1] * B[1]);
    double root = sqrt(fmax(tr_ab + 2 * sqrt(fmax(det_ab, 0)), 0));
    double dm = (ma[0] - mb[0]) * (ma[0] - mb[0]) + (ma[1] - mb[1]) * (ma[1] - mb[1]);
    return dm + A[0] + A[2] + B[0] + B[2] - 2 * root;
}

static int write_samples(const pg_model *d, const double *gen, char *err, size_t errlen) {
    FILE *f = fopen(d->par.samples, "w");
    if (!f) return mdl_fail(err, errlen, "pentagram: cannot write %s", d->par.samples);
    fprintf(f, "# generated\n");
    for (int i = 0; i < d->par.n_eval; i++) fprintf(f, "%.6g %.6g\n", gen[2 * i], gen[2 * i + 1]);
    fprintf(f, "\n\n# real\n");
    for (int i = 0; i < d->par.n_eval; i++) fprintf(f, "%.6g %.6g\n", d->eval_real[2 * i], d->eval_real[2 * i + 1]);
    return fclose(f) ? mdl_fail(err, errlen, "pentagram: cannot write %s", d->par.samples) : 0;
}

static int pg_evaluate(const mdl_model *m, const double *x, const double *y, double *out, char *err,
                       size_t errlen) {
    const pg_model *d = m ? m->data : NULL;
    (void)y;
    if (!d || !x || !out) return mdl_fail(err, errlen, "pentagram evaluate: NULL argument");
    ad_tape *t = ad_tape_new(NULL);
    if (!t) return mdl_fail(err, errlen, "pentagram evaluate: out of memory");
    ad_var g = generate(t, d, ad_const_view(t, ad_vec_shape(d->n_x), x), d->eval_noise, d->par.n_eval);
    const double *gen = ad_value(t, g);
    if (ad_tape_status(t) != AD_OK) gen = NULL;
    int rc = gen ? 0 : mdl_fail(err, errlen, "pentagram evaluate: %s", ad_tape_error(t));
    if (!rc) {
        out[0] = covered_modes(d, gen, d->par.n_eval);
        out[1] = js_divergence(gen, d->eval_real, d->par.n_eval);
        out[2] = frechet(d->eval_real, gen, d->par.n_eval);
        if (d->par.samples[0]) rc = write_samples(d, gen, err, errlen);
    }
    ad_tape_free(t);
    return rc;
}

// ---- making the model -------------------------------------------------------------------------------

static void draw_mixture(const pg_model *d, ad_rng *g, double *u, int n) {
    for (int i = 0; i < n; i++) {
        int j = (int)(ad_rng_uniform(g) * PG_MODES);
        u[2 * i] = d->centre[j][0] + d->par.sigma * ad_rng_normal(g);
        u[2 * i + 1] = d->centre[j][1] + d->par.sigma * ad_rng_normal(g);
    }
}

// weights ~ N(0, 1/fan_in), biases 0
static void init_mlp(ad_rng *g, double *w, int a, int h, int out) {
    int fan[3] = {a, h, h}, rows[3] = {a, h, h}, cols[3] = {h, h, out}, o = 0;
    for (int l = 0; l < 3; l++) {
        for (int i = 0; i < rows[l] * cols[l]; i++) w[o + i] = ad_rng_normal(g) / sqrt((double)fan[l]);
        o += rows[l] * cols[l];
        memset(w + o, 0, sizeof(double) * (size_t)cols[l]);
        o += cols[l];
    }
}

static void pg_free(mdl_model *m) {
    pg_model *d = m->data;
    if (d) free(d->real);
    free(d);
}

static int pg_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    const pg_params *q = params;
    pg_model *d = calloc(1, sizeof *d);
    if (!d) return mdl_fail(err, errlen, "problem pentagram: out of memory");
    m->data = d, m->free_data = pg_free;
    d->par = *q;
    int n = q->n, ne = q->n_eval, nz = q->noise_dim;
    d->n_x = mlp_size(nz, q->g_hidden, 2), d->n_y = mlp_size(2, q->d_hidden, 1);
    size_t total = 2 * (size_t)n + (size_t)n * nz + 2 * (size_t)ne + (size_t)ne * nz + (size_t)d->n_x + 3 * (size_t)d->n_y;
    if (!(d->real = malloc(sizeof(double) * total))) return mdl_fail(err, errlen, "problem pentagram: out of memory");
    d->noise = d->real + 2 * (size_t)n;
    d->eval_real = d->noise + (size_t)n * nz;
    d->eval_noise = d->eval_real + 2 * (size_t)ne;
    d->x0 = d->eval_noise + (size_t)ne * nz;
    d->y0 = d->x0 + d->n_x, d->y_lo = d->y0 + d->n_y, d->y_hi = d->y_lo + d->n_y;
    const double PI = 3.14159265358979323846, r_in = 8 * cos(72 * PI / 180) / cos(36 * PI / 180);
    for (int j = 0; j < 5; j++) {
        double a = (90 + 72 * j) * PI / 180, b = (126 + 72 * j) * PI / 180;
        d->centre[2 * j][0] = 8 * cos(a), d->centre[2 * j][1] = 8 * sin(a);
        d->centre[2 * j + 1][0] = r_in * cos(b), d->centre[2 * j + 1][1] = r_in * sin(b);
    }
    ad_rng data, eval, start; // three streams: the training draws, the metrics' draws, the start
    ad_rng_seed(&data, (uint64_t)q->seed * 3 + 1);
    ad_rng_seed(&eval, (uint64_t)q->seed * 3 + 2);
    ad_rng_seed(&start, (uint64_t)q->seed * 3 + 3);
    draw_mixture(d, &data, d->real, n);
    for (size_t i = 0; i < (size_t)n * nz; i++) d->noise[i] = ad_rng_normal(&data);
    draw_mixture(d, &eval, d->eval_real, ne);
    for (size_t i = 0; i < (size_t)ne * nz; i++) d->eval_noise[i] = ad_rng_normal(&eval);
    init_mlp(&start, d->x0, nz, q->g_hidden, 2);
    init_mlp(&start, d->y0, 2, q->d_hidden, 1);
    m->prob = (blo_problem){.n_x = d->n_x, .n_y = d->n_y, .F = pg_F, .f = pg_f, .user = d};
    if (q->loss == PG_WGAN) {
        for (int i = 0; i < d->n_y; i++) {
            d->y_lo[i] = -q->clip, d->y_hi[i] = q->clip;
            d->y0[i] = fmin(fmax(d->y0[i], -q->clip), q->clip);
        }
        m->prob.y_lo = d->y_lo, m->prob.y_hi = d->y_hi;
    }
    m->n_starts = 1, m->x0[0] = d->x0, m->y0[0] = d->y0;
    m->metrics = pg_metrics, m->n_metrics = 3, m->evaluate = pg_evaluate;
    return 0;
}

// The four methods of Table 6 (README): vgan = alto (one D step per G step), wgan = alto with
// loss=wgan and --ll-iters 5 (five critic steps, WGAN Alg. 1; plain GD here, not RMSProp), ugan =
// rhg with warm starts (K unrolled D steps, Metz et al.), ait = PTT on D's warm-started
// trajectory. The paper gives no settings; ours are chosen on seed 0 by its modes, ties by JS (the
// README lists every run): Adam on G at 3e-3, widths 32, n = 512, sigma = 0.2 (the defaults);
// vgan and wgan T = 2000, D's GD step 0.3 with vgan (0.1: 8 modes, 0.3: 9); ugan and ait K = 5
// with D's step 0.1 and warm_steps = 1 (Metz et al.'s one D step per G step: the next start is
// y_1). Their T from the grid 1000, 2000, 3000, 4000, 6000, 8000, 10000 (one run each, resumed
// from the last; modes): ait 7, 8, 9, 8, 9, 9, 10, so T = 10000; ugan 9, 8, 7, 8, 10, 10, 9, so T
// = 8000 (10 at 6000 too, JS 0.279 against 0.272). No setting of the earlier grids (D's step, K,
// Adam on G, warm_steps = 0) gave either more than 8 at T = 2000. Seeds 1 and 2 are run unchanged
// (README). IA is off for the GAN: its learned D start z descends G's loss F, i.e. it learns a D
// that rates the fakes real; measured on seed 0 after 1500 iterations, 0 modes (lr_z = 1e-3: D
// collapsed, f = 7.9) and 1 mode (lr_z = 1e-5). A D start that descends D's own loss is what the
// warm start is.
static const mdl_paper_row pg_papers[] = {
    {"*", "ul_iters=2000 optimizer=adam lr_x=0.003 lr_z=0.003 s_l=0.3"},
    {"alto", "ll_iters=1"},
    {"rhg", "ul_iters=8000 ll_iters=5 warm_start=1 warm_steps=1 s_l=0.1"},
    {"ait", "ul_iters=10000 ll_iters=5 ia=0 warm_start=1 warm_steps=1 s_l=0.1"},
    {NULL, NULL},
};

const mdl_entry mdl_pentagram_entry = {
    "pentagram", "GAN on 10 Gaussians on a pentagram of radius 8: G is the UL, D the LL",
    "AIT (TPAMI) Sec. 6.3.2, Table 6, Fig. 10", sizeof(pg_params), &pg_defaults, pg_settings, pg_make,
    pg_papers};
