// nas: differentiable architecture search at small scale (AIT (TPAMI) Sec. 6.3.1 and Table 5, the
// DARTS search of Liu, Simonyan and Yang, "DARTS: Differentiable Architecture Search", ICLR 2019,
// Sec. 2.1-2.4), on FashionMNIST with fully connected cells instead of CIFAR-10's convolutions.
//   Network: a stem s = relu(X W_s + b_s) [n, h]; `cells` cells, each with two nodes,
//     n1 = e1(c_in), n2 = e2(c_in) + e3(n1), out = n1 + n2, where every edge mixes the operations
//     {zero, identity, linear+relu, linear+tanh, linear+sigmoid} (each linear op with its own
//     [h, h] weights and bias) by softmax(alpha_edge) (DARTS Eq. 2); logits = out W_c + b_c.
//   x = alpha [cells * 3 * 5] (the UL), y = every weight (the LL).
//   f = mean cross-entropy on the training split (+ l2/2 ||y||^2), F = on the validation split.
//   The derived architecture keeps each edge's strongest operation other than zero (DARTS
//   Sec. 2.4) and is retrained from a fresh seeded start by `retrain` GD steps on the training
//   split. Metrics: the search network's training and validation accuracy, the retrained
//   network's test accuracy and its number of parameters.
#include "models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { NAS_OPS = 5, NAS_EDGES = 3 }; // zero, identity, linear+relu, +tanh, +sigmoid; edges per cell
enum { OP_ZERO, OP_ID, OP_RELU, OP_TANH, OP_SIGMOID };

typedef struct {
    char data[256];
    int n_train, n_val, n_test, hidden, cells, retrain, seed;
    double l2, retrain_lr;
} nas_params;

static const nas_params nas_defaults = {.data = MDL_FASHION_MNIST_DIR, .n_train = 1000, .n_val = 1000,
                                        .n_test = 10000, .hidden = 16, .cells = 2, .retrain = 300,
                                        .seed = 0, .l2 = 0, .retrain_lr = 0.001};
static const blo_setting nas_settings[] = {
    BLO_ROW_STRING(nas_params, data, "data", "DIR", "an MNIST-format folder (FashionMNIST)"),
    BLO_ROW_INT(nas_params, n_train, "n_train", 10, 59000, "N", "training samples (the LL's)"),
    BLO_ROW_INT(nas_params, n_val, "n_val", 10, 59000, "N", "validation samples (the UL's)"),
    BLO_ROW_INT(nas_params, n_test, "n_test", 10, 10000, "N", "test samples"),
    BLO_ROW_INT(nas_params, hidden, "hidden", 1, 1024, "H", "the width of every node"),
    BLO_ROW_INT(nas_params, cells, "cells", 1, 16, "C", "cells stacked"),
    BLO_ROW_DBL(nas_params, l2, "l2", 0, INFINITY, 0, "l", "weight decay on y in f"),
    BLO_ROW_INT(nas_params, retrain, "retrain", 0, 1000000, "R", "Adam steps retraining the derived network"),
    BLO_ROW_DBL(nas_params, retrain_lr, "retrain_lr", 0, INFINITY, BLO_SET_LO_OPEN, "s", "their step (Adam's lr)"),
    BLO_ROW_INT(nas_params, seed, "seed", 0, 1 << 30, "S", "of the split and the starts"),
    BLO_ROW_END,
};

typedef struct {
    nas_params par;
    mdl_hc_data hc;
    int d, h, k, n_x, n_y, n_alpha_edges;
    double *x0, *y0, *onehot; // [n_x], [n_y], the derived architecture's weights [n_x]
} nas_model;

// ---- the network ---------------------------------------------------------------------------------

static int edge_size(int h) { return 3 * (h * h + h); } // the three linear operations

static int nas_size(int d, int h, int k, int cells) { return d * h + h + cells * NAS_EDGES * edge_size(h) + h * k + k; }

static ad_var part(ad_tape *t, ad_var w, int off, int rows, int cols) {
    if (rows == 0) return ad_slice(t, w, off, cols);
    return ad_reshape(t, ad_slice(t, w, off, rows * cols), ad_mat_shape(rows, cols));
}

// One edge on in [n, h]: sum_o mix[o] op_o(in), with mix [5] a row of the mixing weights and the
// edge's weights at y[off].
static ad_var edge(ad_tape *t, ad_var in, ad_var mix, ad_var y, int off, int h) {
    ad_var out = ad_scale(t, in, 0); // zero: contributes nothing whatever its weight
    out = ad_add(t, out, ad_mul(t, ad_slice(t, mix, OP_ID, 1), in));
    for (int o = OP_RELU; o <= OP_SIGMOID; o++) {
        ad_var W = part(t, y, off, h, h), b = part(t, y, off + h * h, 0, h);
        ad_var z = ad_add(t, ad_matmul(t, in, W, 0, 0), b);
        z = o == OP_RELU ? ad_relu(t, z) : o == OP_TANH ? ad_tanh(t, z) : ad_sigmoid(t, z);
        out = ad_add(t, out, ad_mul(t, ad_slice(t, mix, o, 1), z));
        off += h * h + h;
    }
    return out;
}

// logits [n, k] on set, with mixing weights mix [cells * 3 * 5] (softmax(alpha) per edge, or the
// derived one-hot rows).
static ad_var network(ad_tape *t, const nas_model *d, ad_var mix, ad_var y, const mdl_dataset *set) {
    int h = d->h, o = 0;
    ad_var X = ad_const_view(t, ad_mat_shape(set->n, d->d), set->X);
    ad_var c = ad_relu(t, ad_add(t, ad_matmul(t, X, part(t, y, 0, d->d, h), 0, 0), part(t, y, d->d * h, 0, h)));
    o = d->d * h + h;
    for (int cell = 0; cell < d->par.cells; cell++) {
        ad_var m[NAS_EDGES];
        for (int e = 0; e < NAS_EDGES; e++) m[e] = ad_slice(t, mix, (cell * NAS_EDGES + e) * NAS_OPS, NAS_OPS);
        ad_var n1 = edge(t, c, m[0], y, o, h);
        ad_var n2 = ad_add(t, edge(t, c, m[1], y, o + edge_size(h), h), edge(t, n1, m[2], y, o + 2 * edge_size(h), h));
        c = ad_add(t, n1, n2);
        o += NAS_EDGES * edge_size(h);
    }
    return ad_add(t, ad_matmul(t, c, part(t, y, o, h, d->k), 0, 0), part(t, y, o + h * d->k, 0, d->k));
}

// softmax over each edge's five weights: alpha [E * 5] -> [E * 5]
static ad_var mixing(ad_tape *t, const nas_model *d, ad_var alpha) {
    int E = d->par.cells * NAS_EDGES;
    return ad_reshape(t, ad_softmax(t, ad_reshape(t, alpha, ad_mat_shape(E, NAS_OPS))), ad_vec_shape(E * NAS_OPS));
}

static ad_var nas_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const nas_model *d = u;
    const mdl_dataset *tr = &d->hc.train;
    ad_var f = ad_mean(t, ad_xent(t, network(t, d, mixing(t, d, x), y, tr), tr->y));
    if (d->par.l2 > 0) f = ad_add(t, f, ad_scale(t, ad_sqnorm(t, y), 0.5 * d->par.l2));
    return f;
}

static ad_var nas_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const nas_model *d = u;
    const mdl_dataset *va = &d->hc.val;
    return ad_mean(t, ad_xent(t, network(t, d, mixing(t, d, x), y, va), va->y));
}

// ---- the derived architecture and the metrics ----------------------------------------------------

static const mdl_metric nas_metrics[] = {{"train_acc", "search: training accuracy (%)"},
                                         {"val_acc", "search: validation accuracy (%)"},
                                         {"test_acc", "derived and retrained: test accuracy (%)"},
                                         {"params", "derived network's parameters"}};

// Each edge's strongest operation other than zero, as one-hot rows into d->onehot; the derived
// network's parameter count.
static double derive(const nas_model *d, const double *alpha, double *onehot) {
    int h = d->h, E = d->par.cells * NAS_EDGES;
    double params = d->d * h + h + h * d->k + d->k;
    for (int e = 0; e < E; e++) {
        const double *a = alpha + e * NAS_OPS;
        int best = OP_ID;
        for (int o = OP_ID + 1; o < NAS_OPS; o++)
            if (a[o] > a[best]) best = o;
        for (int o = 0; o < NAS_OPS; o++) onehot[e * NAS_OPS + o] = o == best;
        if (best >= OP_RELU) params += h * h + h;
    }
    return params;
}

// Accuracy (%) of the network with mixing weights mix [n_x] and weights y on set, by the tape.
static int accuracy(ad_tape *t, const nas_model *d, const double *mix, const double *y, const mdl_dataset *set,
                    double *acc) {
    ad_tape_reset(t);
    ad_var Z = network(t, d, ad_const_view(t, ad_vec_shape(d->n_x), mix), ad_const_view(t, ad_vec_shape(d->n_y), y), set);
    const double *z = ad_value(t, Z);
    if (ad_tape_status(t) != AD_OK) return -1;
    int right = 0;
    for (int i = 0; i < set->n; i++) {
        int best = 0;
        for (int c = 1; c < d->k; c++)
            if (z[(size_t)i * d->k + c] > z[(size_t)i * d->k + best]) best = c;
        right += best == set->y[i];
    }
    *acc = 100.0 * right / set->n;
    return 0;
}

// Retrains the derived network (mixing weights onehot) from the model's seeded start y0 by Adam
// (0.9, 0.999, 1e-8) on the training cross-entropy into w [n_y]; mv: scratch [2 n_y].
static int retrain(ad_tape *t, const nas_model *d, const double *onehot, double *w, double *mv) {
    memcpy(w, d->y0, sizeof(double) * (size_t)d->n_y);
    memset(mv, 0, sizeof(double) * 2 * (size_t)d->n_y);
    double *mo = mv, *ve = mv + d->n_y, b1 = 1, b2 = 1;
    const mdl_dataset *tr = &d->hc.train;
    for (int s = 0; s < d->par.retrain; s++) {
        ad_tape_reset(t);
        ad_var y = ad_param(t, ad_vec_shape(d->n_y), w);
        ad_var mix = ad_const_view(t, ad_vec_shape(d->n_x), onehot);
        ad_var loss = ad_mean(t, ad_xent(t, network(t, d, mix, y, tr), tr->y));
        ad_var g;
        if (ad_grad(t, loss, 1, &y, &g, 0) != AD_OK) return -1;
        const double *gv = ad_value(t, g);
        if (ad_tape_status(t) != AD_OK) return -1;
        b1 *= 0.9, b2 *= 0.999;
        mdl_adam_step(w, gv, mo, ve, (size_t)d->n_y, d->par.retrain_lr, 1 - b1, 1 - b2);
    }
    return 0;
}

static int nas_evaluate(const mdl_model *m, const double *x, const double *y, double *out, char *err,
                        size_t errlen) {
    const nas_model *d = m ? m->data : NULL;
    if (!d || !x || !y || !out) return mdl_fail(err, errlen, "nas evaluate: NULL argument");
    ad_tape *t = ad_tape_new(NULL);
    double *mix = malloc(sizeof(double) * (2 * (size_t)d->n_x + 3 * (size_t)d->n_y)), *onehot = mix + d->n_x;
    double *w = onehot + d->n_x;
    int rc = !t || !mix ? mdl_fail(err, errlen, "nas evaluate: out of memory") : 0;
    for (int e = 0; !rc && e < d->par.cells * NAS_EDGES; e++) { // softmax(alpha) per edge, as the search's
        const double *a = x + e * NAS_OPS;
        double mx = a[0], s = 0;
        for (int o = 1; o < NAS_OPS; o++) mx = fmax(mx, a[o]);
        for (int o = 0; o < NAS_OPS; o++) s += mix[e * NAS_OPS + o] = exp(a[o] - mx);
        for (int o = 0; o < NAS_OPS; o++) mix[e * NAS_OPS + o] /= s;
    }
    if (!rc && (accuracy(t, d, mix, y, &d->hc.train, &out[0]) || accuracy(t, d, mix, y, &d->hc.val, &out[1])))
        rc = mdl_fail(err, errlen, "nas evaluate: %s", ad_tape_error(t));
    if (!rc) {
        out[3] = derive(d, x, onehot);
        if (retrain(t, d, onehot, w, w + d->n_y) || accuracy(t, d, onehot, w, &d->hc.test, &out[2]))
            rc = mdl_fail(err, errlen, "nas evaluate (retraining): %s", ad_tape_error(t));
    }
    ad_tape_free(t);
    free(mix);
    return rc;
}

// ---- making the model -------------------------------------------------------------------------------

static void nas_free(mdl_model *m) {
    nas_model *d = m->data;
    if (d) mdl_hc_free(&d->hc), free(d->x0);
    free(d);
}

// Linear layers' weights ~ N(0, 1/fan_in), biases 0, in network()'s order.
static void init_weights(const nas_model *d, ad_rng *g, double *y) {
    int h = d->h, o = 0;
    for (int i = 0; i < d->d * h; i++) y[o + i] = ad_rng_normal(g) / sqrt((double)d->d);
    o += d->d * h;
    memset(y + o, 0, sizeof(double) * (size_t)h), o += h;
    for (int e = 0; e < d->par.cells * NAS_EDGES * 3; e++) {
        for (int i = 0; i < h * h; i++) y[o + i] = ad_rng_normal(g) / sqrt((double)h);
        o += h * h;
        memset(y + o, 0, sizeof(double) * (size_t)h), o += h;
    }
    for (int i = 0; i < h * d->k; i++) y[o + i] = ad_rng_normal(g) / sqrt((double)h);
    o += h * d->k;
    memset(y + o, 0, sizeof(double) * (size_t)d->k);
}

static int nas_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    const nas_params *q = params;
    nas_model *d = calloc(1, sizeof *d);
    if (!d) return mdl_fail(err, errlen, "problem nas: out of memory");
    m->data = d, m->free_data = nas_free;
    d->par = *q;
    mdl_hc_params hp = {.n_train = q->n_train, .n_val = q->n_val, .n_test = q->n_test, .corrupt = 0,
                        .seed = (uint64_t)q->seed};
    char e2[400];
    if (mdl_hc_load(q->data, &hp, &d->hc, e2, sizeof e2)) return mdl_fail(err, errlen, "problem nas: %s", e2);
    d->d = d->hc.train.d, d->h = q->hidden, d->k = d->hc.train.classes;
    d->n_x = q->cells * NAS_EDGES * NAS_OPS, d->n_y = nas_size(d->d, d->h, d->k, q->cells);
    if (!(d->x0 = calloc(2 * (size_t)d->n_x + (size_t)d->n_y, sizeof(double))))
        return mdl_fail(err, errlen, "problem nas: out of memory");
    d->y0 = d->x0 + d->n_x, d->onehot = d->y0 + d->n_y; // alpha = 0: every operation weighs 1/5
    ad_rng g;
    ad_rng_seed(&g, (uint64_t)q->seed * 0x9E3779B97F4A7C15ULL + 0x6e6173ULL);
    init_weights(d, &g, d->y0);
    m->prob = (blo_problem){.n_x = d->n_x, .n_y = d->n_y, .F = nas_F, .f = nas_f, .user = d};
    m->n_starts = 1, m->x0[0] = d->x0, m->y0[0] = d->y0;
    m->metrics = nas_metrics, m->n_metrics = 4, m->evaluate = nas_evaluate;
    return 0;
}

// DARTS's second-order search takes one LL step per UL step (K = 1, warm started) with the
// finite-difference hypergradient; rhg, cg and ait unroll K = 5 warm-started steps (AIT's
// comparison; ait's IA starts each from z instead). Adam on alpha at 3e-3 as DARTS (its Sec. 3.1.1
// uses 3e-4 on CIFAR-10 for 50 epochs; our runs are shorter). LL step 0.3 (hyperclean's
// measurement); T = 100 UL iterations on 1000 training and 1000 validation images, width 16 (the
// defaults): about 10-30 s of CPU per method on the development machine. Our settings otherwise.
// The retraining's Adam step is 1e-3 (the default): at 1e-2 an all-identity architecture (stem,
// identity edges, classifier: out = 9 relu(stem) per two cells) lost every ReLU in its first
// steps and stayed at 10% test accuracy.
static const mdl_paper_row nas_papers[] = {
    {"*", "ll_iters=5 s_l=0.3 optimizer=adam lr_x=0.003 lr_z=0.003 ul_iters=100 warm_start=1"},
    {"darts", "ll_iters=1"},
    {"cg", "J=10 tol=0"},
    {NULL, NULL},
};

const mdl_entry mdl_nas_entry = {
    "nas", "DARTS-style architecture search: softmax(alpha) mixes 5 operations per edge, FashionMNIST",
    "AIT (TPAMI) Sec. 6.3.1, Table 5; DARTS (ICLR 2019) Eq. 2, Sec. 2.4", sizeof(nas_params), &nas_defaults,
    nas_settings, nas_make, nas_papers};
