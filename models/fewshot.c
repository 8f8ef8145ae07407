// fewshot: N-way M-shot classification on classes unseen in training, as a task set
// (bilevel/tasks.h), on FashionMNIST split by class: classes 0-5 (training file) for
// meta-training, 6-9 (test file) for meta-testing; or (`source=glyphs`) on the many-class glyph
// set made from Debian's fonts (models/glyphs.c: 140 characters, 70 faces each), whose classes a
// fixed shuffle (seed 0) splits 60/10/30% into meta-training, meta-validation and meta-test
// characters, as Omniglot's characters are split (MAML Sec. 5.2). A task draws `ways` classes and, of each,
// `shots` support and `query` query images, labelled 0..ways-1 in the drawn order. The UL x is a
// shared representation of width H (`backbone`): an MLP layer relu(u W + b) [784 -> H = hidden],
// or ConvNet-4 [28 x 28 x 1 -> H = filters] (4 blocks of 3x3 convolution, per-channel
// normalization, ReLU and 2x2 max-pooling; see convnet_features); the LL y is the task's linear
// head [H -> ways]; f is the support cross-entropy plus reg/2 ||y||^2 (strongly convex in y),
// F the query cross-entropy.
//
// Metrics (of x, and of the head's learned start z when the method has one, n_z = n_y; else the
// head starts at 0): the query accuracy over test_tasks meta-test tasks, each head adapted by
// test_steps GD steps of test_lr on its f, with its 95% interval (1.96 s / sqrt(n)); the same on
// val_tasks meta-validation tasks, which choose settings and stopping without the meta-test
// classes: with val_classes = V, the last V training classes (6-V..5) are held out of
// meta-training, and a validation task has all V of them and ways - V of the meta-training
// classes (V < ways; else ways of the V), all from the test file's images of classes 0-5 (images
// no run trains on); and the no-meta-learning baseline: the same evaluation (heads from 0, GD
// steps of baseline_lr) of a representation pretrained by plain supervised training on the
// meta-training classes.
#include "models.h"
#include "../bilevel/tasks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char data[512], fonts[512];
    int source, ways, shots, query, hidden, backbone, filters, batch, threads, seed;
    int test_tasks, test_seed, test_steps, init_seed;
    int val_classes, val_tasks, pretrain_iters, pretrain_batch, from_baseline;
    double reg, test_lr, pretrain_lr, baseline_lr;
} fs_params;

enum { BACKBONE_MLP, BACKBONE_CONVNET4 };
enum { SOURCE_FASHION, SOURCE_GLYPHS };
static const char *const source_words[] = {"fashion", "glyphs", NULL};
enum { MAX_CLASSES = 256 };
static const char *const backbone_words[] = {"mlp", "convnet4", NULL};

static const fs_params defaults = {.data = MDL_FASHION_MNIST_DIR, .fonts = MDL_GLYPH_FONTS,
                                   .source = SOURCE_FASHION, .ways = 4, .shots = 5, .query = 10,
                                   .hidden = 64, .backbone = BACKBONE_MLP, .filters = 32, .batch = 4,
                                   .threads = 1, .seed = 0, .test_tasks = 600, .test_seed = 1, .test_steps = 20,
                                   .init_seed = 0, .val_classes = 2,
                                   .val_tasks = 300, .pretrain_iters = 3000, .pretrain_batch = 10,
                                   .reg = 0.01, .test_lr = 0.5, .pretrain_lr = 1e-3,
                                   .baseline_lr = 0.03, .from_baseline = 0};

static const blo_setting settings[] = {
    BLO_ROW_CHOICE(fs_params, source, "source", source_words, "s",
                   "the images: fashion (FashionMNIST, 6 / 4 classes) or glyphs (fonts, 84 / 14 / 42 characters)"),
    BLO_ROW_STRING(fs_params, data, "data", "DIR", "fashion: an MNIST-format folder (FashionMNIST)"),
    BLO_ROW_STRING(fs_params, fonts, "fonts", "DIRS", "glyphs: the font folders, separated by ':'"),
    BLO_ROW_INT(fs_params, ways, "ways", 2, 42, "N", "classes per task (fashion's meta-test split has 4)"),
    BLO_ROW_INT(fs_params, shots, "shots", 1, 1000, "M", "support images per class (f)"),
    BLO_ROW_INT(fs_params, query, "query", 1, 1000, "Q", "query images per class (F)"),
    BLO_ROW_CHOICE(fs_params, backbone, "backbone", backbone_words, "b",
                   "the shared representation x: mlp (one layer) or convnet4 (4 conv blocks)"),
    BLO_ROW_INT(fs_params, hidden, "hidden", 1, 4096, "H", "mlp: width of the shared representation"),
    BLO_ROW_INT(fs_params, filters, "filters", 1, 512, "C", "convnet4: filters of every block (its width)"),
    BLO_ROWS_TASK_SET(fs_params),
    BLO_ROW_INT(fs_params, test_steps, "test_steps", 0, 100000, "K", "GD steps adapting a held-out head"),
    BLO_ROW_DBL(fs_params, test_lr, "test_lr", 0, INFINITY, BLO_SET_LO_OPEN, "s", "their step"),
    BLO_ROW_DBL(fs_params, reg, "reg", 0, INFINITY, 0, "r", "the head's weight decay in f"),
    BLO_ROW_INT(fs_params, init_seed, "init_seed", 0, INT32_MAX, "S", "the representation's start"),
    BLO_ROW_INT(fs_params, val_classes, "val_classes", 0, 3, "V",
                "fashion: training classes 6-V..5 held out of meta-training, in every validation task"),
    BLO_ROW_INT(fs_params, val_tasks, "val_tasks", 0, 1000000, "n", "meta-validation tasks (0: none)"),
    BLO_ROW_INT(fs_params, pretrain_iters, "pretrain_iters", 0, 100000000, "n",
                "Adam steps of the supervised baseline (0: no baseline)"),
    BLO_ROW_INT(fs_params, pretrain_batch, "pretrain_batch", 1, 1000, "m",
                "images per meta-training class in each of its batches"),
    BLO_ROW_DBL(fs_params, pretrain_lr, "pretrain_lr", 0, INFINITY, BLO_SET_LO_OPEN, "a", "its Adam step"),
    BLO_ROW_DBL(fs_params, baseline_lr, "baseline_lr", 0, INFINITY, 0, "s",
                "the GD step adapting the baseline's heads (0: test_lr)"),
    BLO_ROW_INT(fs_params, from_baseline, "from_baseline", 0, 1, "0|1",
                "1: the representation starts from the baseline's (pretrained), else from its init"),
    BLO_ROW_END,
};

// One dataset's images by class.
typedef struct {
    const mdl_dataset *set;
    const int32_t *by_class[MAX_CLASSES]; // each class's image indices
    int count[MAX_CLASSES];
} fs_classes;

// Where a stream's tasks come from: its images, its classes (the first n_forced of them are in
// every task), the task's shape, the representation (backbone, width H; side: the images'
// side, for convnet4).
typedef struct {
    const fs_classes *src;
    int cls[MAX_CLASSES], n_classes, n_forced;
    int ways, shots, query, d;
    int backbone, width, side;
    double reg;
} fs_pool;

// A task: its pool, then labels [ways (shots + query)] and images [ways (shots + query), d],
// support first (class by class), then query.
typedef struct {
    const fs_pool *pool;
    double v[];
} fs_task;

static size_t n_images(const fs_pool *p) { return (size_t)p->ways * (size_t)(p->shots + p->query); }
static size_t task_size(const fs_pool *p) {
    return sizeof(fs_task) + sizeof(double) * n_images(p) * (size_t)(p->d + 1);
}
static int32_t *task_labels(const fs_task *k) { return (int32_t *)(k->v + n_images(k->pool) * (size_t)k->pool->d); }

// Fills the task's images of its classes cls [ways] (class c labelled c): m distinct images each.
static void fill_images(fs_task *k, const int *cls, ad_rng *r) {
    const fs_pool *p = k->pool;
    int m = p->shots + p->query, d = p->d, ns = p->ways * p->shots;
    int32_t *lab = task_labels(k);
    for (int c = 0; c < p->ways; c++) {
        int pick[2000];
        const int32_t *of = p->src->by_class[cls[c]];
        for (int i = 0; i < m; i++) { // distinct images of the class
            int dup;
            do {
                pick[i] = of[ad_rng_next(r) % (uint64_t)p->src->count[cls[c]]];
                dup = 0;
                for (int q = 0; q < i; q++) dup |= pick[q] == pick[i];
            } while (dup);
            int row = i < p->shots ? c * p->shots + i : ns + c * p->query + (i - p->shots);
            memcpy(k->v + (size_t)row * d, p->src->set->X + (size_t)pick[i] * d, sizeof(double) * (size_t)d);
            lab[row] = c;
        }
    }
}

static void swap_int(int *a, int *b) { int t = *a; *a = *b, *b = t; }

static blo_status fs_draw(void *task, ad_rng *r, const void *user, blo_error *err) {
    const fs_pool *p = user;
    fs_task *k = task;
    (void)err;
    k->pool = p;
    int cls[MAX_CLASSES];
    memcpy(cls, p->cls, sizeof cls);
    for (int c = p->n_forced; c < p->ways; c++) // the forced classes, then a seeded shuffle's first
        swap_int(&cls[c], &cls[c + (int)(ad_rng_next(r) % (uint64_t)(p->n_classes - c))]);
    if (p->n_forced) // labels in a random order, so that no label is always a held-out class
        for (int c = 0; c < p->ways - 1; c++) swap_int(&cls[c], &cls[c + (int)(ad_rng_next(r) % (uint64_t)(p->ways - c))]);
    fill_images(k, cls, r);
    return BLO_OK;
}

// The MLP's representation relu(U W + b) [n, H] of the n images U [n, d] under x = (W [d, H], b [H]).
static ad_var mlp_features(ad_tape *t, ad_var x, ad_var U, int d, int H) {
    ad_var W = ad_reshape(t, ad_slice(t, x, 0, d * H), ad_mat_shape(d, H)), b = ad_slice(t, x, d * H, H);
    return ad_relu(t, ad_add(t, ad_matmul(t, U, W, 0, 0), b));
}

enum { CONV_BLOCKS = 4 };

// ConvNet-4's size of x: per block the kernels [C, c_in*9] (c_in = 1, then C) and the scales and
// shifts [2C].
static int convnet_size(int C) { return C * 9 + 2 * C + (CONV_BLOCKS - 1) * (C * C * 9 + 2 * C); }

// ConvNet-4's representation [n, C] of the n images U [n, side*side] (one channel) under x, as
// tools/bench_image.c builds it: per block a 3x3 convolution (stride 1, zero padding 1, no bias:
// the normalization removes it), each channel normalized over the n images' pixels (batch norm's
// training mode, eps 1e-5: the statistics of the images of the call, i.e. the support images in
// f, the query images in F, as MAML's batch norm) then scaled and shifted, ReLU, 2x2 max-pooling
// (an odd last row and column left out: 28 -> 14 -> 7 -> 3 -> 1). The first block is one op,
// ad_conv_bn_relu_pool: its convolution's output [n, C*side*side], the network's largest array,
// is made again in each pass instead of stored, as in the benchmark.
static ad_var convnet_features(ad_tape *t, ad_var x, ad_var U, int side, int C) {
    ad_var h = U;
    for (int b = 0, at = 0, c_in = 1; b < CONV_BLOCKS; b++, c_in = C, side /= 2) {
        int nw = C * c_in * 9;
        if (b == 0) { // x holds W then P: the first block's [W, P] is one slice
            h = ad_conv_bn_relu_pool(t, h, ad_slice(t, x, at, nw + 2 * C), c_in, side, side, C, 1e-5);
        } else {
            ad_var W = ad_reshape(t, ad_slice(t, x, at, nw), ad_mat_shape(C, c_in * 9));
            ad_var P = ad_slice(t, x, at + nw, 2 * C); // scales [C], shifts [C]
            h = ad_conv2d(t, h, W, c_in, side, side, C);
            h = ad_bn_relu_pool(t, h, P, C, side, side, 1e-5); // normalize, scale and shift, ReLU, pool
        }
        at += nw + 2 * C;
    }
    return h; // [n, C (side 1)]
}

// The representation [n, H] of the n images U [n, d] of the pool under x.
static ad_var features(ad_tape *t, ad_var x, const double *U, int n, const fs_pool *p) {
    ad_var Uv = ad_const_view(t, ad_mat_shape(n, p->d), U);
    return p->backbone == BACKBONE_CONVNET4 ? convnet_features(t, x, Uv, p->side, p->width)
                                            : mlp_features(t, x, Uv, p->d, p->width);
}

// The logits [n, N] of the head y = (W [H, N], b [N]) on the features h [n, H].
static ad_var logits(ad_tape *t, ad_var h, ad_var y, int H, int N) {
    ad_var Wh = ad_reshape(t, ad_slice(t, y, 0, H * N), ad_mat_shape(H, N)), bh = ad_slice(t, y, H * N, N);
    return ad_add(t, ad_matmul(t, h, Wh, 0, 0), bh);
}

// Mean cross-entropy of the head y on rows [first, first + n) of the task, plus reg/2 ||y||^2.
static ad_var head_loss(ad_tape *t, const fs_task *k, ad_var x, ad_var y, int first, int n, double reg) {
    const fs_pool *p = k->pool;
    ad_var h = features(t, x, k->v + (size_t)first * p->d, n, p);
    ad_var loss = ad_mean(t, ad_xent(t, logits(t, h, y, p->width, p->ways), task_labels(k) + first));
    return reg > 0 ? ad_add(t, loss, ad_scale(t, ad_sqnorm(t, y), 0.5 * reg)) : loss;
}

static ad_var fs_F(ad_tape *t, ad_var x, ad_var y, void *user) {
    const fs_task *k = user;
    const fs_pool *p = k->pool;
    return head_loss(t, k, x, y, p->ways * p->shots, p->ways * p->query, 0);
}

static ad_var fs_f(ad_tape *t, ad_var x, ad_var y, void *user) {
    const fs_task *k = user;
    return head_loss(t, k, x, y, 0, k->pool->ways * k->pool->shots, k->pool->reg);
}

typedef struct {
    fs_params par;
    mdl_dataset train, test;
    int32_t *index;     // class lists of both sets
    fs_classes of_train, of_test;
    fs_pool pool_train, pool_val, pool_test;
    int n_train;        // meta-training classes (the baseline's head)
    blo_task_set ts;
    void *ref;
    double *x0, *y0;
    double *baseline;   // the pretrained representation [n_x], once computed (NULL before)
} fs_data;

static void fs_free(mdl_model *m) {
    fs_data *d = m->data;
    if (d) {
        mdl_dataset_free(&d->train), mdl_dataset_free(&d->test);
        free(d->index), free(d->ref), free(d->x0), free(d->y0), free(d->baseline), free(d);
    }
    m->data = NULL;
}

// The class lists of set's classes into c, from idx [set->n].
static void fill_classes(fs_classes *c, const mdl_dataset *set, int32_t *idx) {
    c->set = set;
    int at = 0;
    for (int k = 0; k < set->classes; k++) {
        c->by_class[k] = idx + at, c->count[k] = 0;
        for (int i = 0; i < set->n; i++)
            if (set->y[i] == k) idx[at + c->count[k]++] = i;
        at += c->count[k];
    }
}

// A pool of src's classes [first, first + n), the first n_forced of the list in every task (the
// list starts at first_forced and wraps around), with the task shape of q.
static fs_pool make_pool(const fs_classes *src, int first, int n, int n_forced, int first_forced,
                         const fs_params *q) {
    int conv = q->backbone == BACKBONE_CONVNET4;
    fs_pool p = {.src = src, .n_classes = n, .n_forced = n_forced, .ways = q->ways, .shots = q->shots,
                 .query = q->query, .d = src->set->d, .backbone = q->backbone,
                 .width = conv ? q->filters : q->hidden, .side = (int)lround(sqrt(src->set->d)), .reg = q->reg};
    for (int c = 0; c < n; c++) p.cls[c] = first + (first_forced - first + c) % n;
    return p;
}

enum { ACC, ACC_CI, VAL, VAL_CI, BASE, BASE_CI, BASE_VAL, BASE_VAL_CI, N_METRICS };
static const mdl_metric metrics[N_METRICS] = {
    {"test_acc", "meta-test accuracy (%)"},
    {"test_acc_ci95", "its 95% interval (+-, %)"},
    {"val_acc", "meta-validation accuracy (%)"},
    {"val_acc_ci95", "its 95% interval (+-, %)"},
    {"baseline_acc", "pretrained baseline: meta-test accuracy (%)"},
    {"baseline_acc_ci95", "its 95% interval (+-, %)"},
    {"baseline_val_acc", "pretrained baseline: meta-validation accuracy (%)"},
    {"baseline_val_acc_ci95", "its 95% interval (+-, %)"},
};

// The query accuracy (%) of head y [H N + N] on task k with representation x.
static double accuracy(const fs_task *k, const double *x, int n_x, const double *y, int n_y, ad_tape *t) {
    const fs_pool *q = k->pool;
    int ns = q->ways * q->shots, nq = q->ways * q->query, N = q->ways;
    ad_tape_reset(t);
    ad_var xv = ad_const_view(t, ad_vec_shape(n_x), x), yv = ad_const_view(t, ad_vec_shape(n_y), y);
    ad_var h = features(t, xv, k->v + (size_t)ns * q->d, nq, q);
    const double *z = ad_value(t, logits(t, h, yv, q->width, N));
    const int32_t *lab = task_labels(k) + ns;
    int right = 0;
    for (int i = 0; i < nq; i++) {
        int best = 0;
        for (int c = 1; c < N; c++)
            if (z[i * N + c] > z[i * N + best]) best = c;
        right += best == lab[i];
    }
    return 100.0 * right / nq;
}

// Mean query accuracy and its 95% interval into out [2] over n tasks of the pool from the stream
// (seed, j), each head adapted from z (NULL: 0) by the metrics' test_steps GD steps of lr on its f.
static int pool_accuracy(const mdl_model *m, const fs_pool *pool, int n, int seed, const double *x,
                         const double *z, double lr, double *out, char *err, size_t errlen) {
    const fs_data *d = m->data;
    blo_task_set set = d->ts;
    set.user = pool, set.task_size = task_size(pool);
    int ny = m->prob.n_y;
    void *task = malloc(set.task_size);
    double *y = calloc(2 * (size_t)ny, sizeof(double));
    ad_tape *t = ad_tape_new(NULL);
    blo_error e = {0};
    blo_status st = task && y && t ? BLO_OK : BLO_ENOMEM;
    double s = 0, s2 = 0;
    for (int j = 0; !st && j < n; j++) {
        st = blo_tasks_draw(&set, (uint64_t)seed, (uint64_t)j, 1, task, &e);
        blo_problem p = m->prob;
        p.user = task, p.tasks = NULL;
        double *g = y + ny;
        if (z) memcpy(y, z, sizeof(double) * (size_t)ny);
        else memset(y, 0, sizeof(double) * (size_t)ny);
        for (int k = 0; !st && k < d->par.test_steps; k++) {
            ad_tape_reset(t);
            st = blo_eval(&p, 0, x, y, NULL, NULL, g, t, &e);
            for (int i = 0; !st && i < ny; i++) y[i] -= lr * g[i];
        }
        if (st) break;
        double a = accuracy(task, x, p.n_x, y, ny, t);
        s += a, s2 += a * a;
    }
    free(task), free(y), ad_tape_free(t);
    if (st) return mdl_fail(err, errlen, "fewshot evaluate: %s", e.msg[0] ? e.msg : "out of memory");
    double mean = s / n, var = n > 1 ? fmax(0, (s2 - n * mean * mean) / (n - 1)) : 0;
    out[0] = mean, out[1] = 1.96 * sqrt(var / n);
    return 0;
}

// Meta-test and meta-validation accuracy of (x, z) into out [4] (validation NaN without tasks).
static int test_and_val(const mdl_model *m, const double *x, const double *z, double lr, double *out,
                        char *err, size_t errlen) {
    const fs_data *d = m->data;
    if (pool_accuracy(m, &d->pool_test, d->par.test_tasks, d->par.test_seed, x, z, lr, out, err, errlen)) return -1;
    out[2] = out[3] = NAN;
    if (!d->par.val_tasks) return 0;
    return pool_accuracy(m, &d->pool_val, d->par.val_tasks, d->par.test_seed, x, z, lr, out + 2, err, errlen);
}

static int pretrain(const mdl_model *m, double *x, char *err, size_t errlen);

static int fs_evaluate_z(const mdl_model *m, const double *x, const double *z, int n_z, double *out,
                         char *err, size_t errlen) {
    fs_data *d = m->data;
    if (n_z != m->prob.n_y) z = NULL; // no learned head start: heads start at 0
    for (int i = 0; z && i < n_z; i++)
        if (!isfinite(z[i])) return mdl_fail(err, errlen, "fewshot evaluate: z[%d] = %g is not finite", i, z[i]);
    if (test_and_val(m, x, z, d->par.test_lr, out, err, errlen)) return -1;
    for (int k = BASE; k < N_METRICS; k++) out[k] = NAN;
    if (!d->par.pretrain_iters) return 0;
    if (!d->baseline) { // computed once: it does not depend on the run
        double *w = malloc(sizeof(double) * (size_t)m->prob.n_x);
        if (!w) return mdl_fail(err, errlen, "fewshot evaluate: out of memory");
        if (pretrain(m, w, err, errlen)) return free(w), -1;
        d->baseline = w;
    }
    double lr = d->par.baseline_lr > 0 ? d->par.baseline_lr : d->par.test_lr;
    return test_and_val(m, d->baseline, NULL, lr, out + BASE, err, errlen);
}

// The baseline (no meta-learning): the representation and a head [H -> C] over the C meta-training
// classes trained jointly by Adam (pretrain_lr, 0.9, 0.999) on the cross-entropy of balanced batches
// of the training file's images (pretrain_batch of each class, drawn from the stream
// (seed, 2^63 + t)), from the representation's start x0 and a head at 0; the head is then dropped.
static int pretrain(const mdl_model *m, double *x, char *err, size_t errlen) {
    const fs_data *d = m->data;
    const fs_params *q = &d->par;
    int C = d->n_train, H = d->pool_train.width, nx = m->prob.n_x, ny = H * C + C, cls[MAX_CLASSES];
    fs_pool pool = make_pool(&d->of_train, 0, C, 0, 0, q);
    pool.ways = C, pool.shots = q->pretrain_batch, pool.query = 0, pool.reg = 0;
    for (int c = 0; c < C; c++) cls[c] = c; // fixed labels: class c is label c
    size_t n = (size_t)nx + (size_t)ny;
    fs_task *task = malloc(task_size(&pool));
    double *mem = calloc(4 * n, sizeof(double));
    ad_tape *t = ad_tape_new(NULL);
    blo_error e = {0};
    blo_status st = task && mem && t ? BLO_OK : BLO_ENOMEM;
    double *w = mem, *g = mem + n, *m1 = mem + 2 * n, *m2 = mem + 3 * n; // w = (x, head)
    memcpy(w, d->x0, sizeof(double) * (size_t)nx);
    blo_problem p = {.n_x = nx, .n_y = ny, .F = fs_F, .f = fs_f, .user = task};
    task->pool = &pool;
    for (int it = 0; !st && it < q->pretrain_iters; it++) {
        ad_rng r;
        blo_tasks_rng(&r, (uint64_t)q->seed, ((uint64_t)1 << 63) + (uint64_t)it);
        fill_images(task, cls, &r);
        ad_tape_reset(t);
        st = blo_eval(&p, 0, w, w + nx, NULL, g, g + nx, t, &e);
        double b1 = 1 - pow(0.9, it + 1), b2 = 1 - pow(0.999, it + 1);
        if (!st) mdl_adam_step(w, g, m1, m2, n, q->pretrain_lr, b1, b2);
    }
    if (!st) memcpy(x, w, sizeof(double) * (size_t)nx);
    free(task), free(mem), ad_tape_free(t);
    return st ? mdl_fail(err, errlen, "fewshot pretraining: %s", e.msg[0] ? e.msg : "out of memory") : 0;
}

// x's He-normal start into x0 (zeros [n_x]) from the seed: the MLP's W (fan-in d; biases 0), or
// ConvNet-4's kernels (fan-in c_in*9) with scales 1 and shifts 0.
static void init_x(double *x0, const fs_pool *p, int seed) {
    ad_rng r;
    ad_rng_seed(&r, (uint64_t)seed);
    if (p->backbone != BACKBONE_CONVNET4) {
        for (int i = 0; i < p->d * p->width; i++) x0[i] = sqrt(2.0 / p->d) * ad_rng_normal(&r);
        return;
    }
    int C = p->width;
    for (int b = 0, at = 0, c_in = 1; b < CONV_BLOCKS; b++, c_in = C) {
        for (int i = 0; i < C * c_in * 9; i++) x0[at++] = sqrt(2.0 / (c_in * 9)) * ad_rng_normal(&r);
        for (int i = 0; i < C; i++) x0[at + i] = 1;
        at += 2 * C;
    }
}

// Each class of the pools' sources has shots + query images (and pretrain_batch for training
// classes when the baseline is trained; at most 2000).
static int check_counts(const fs_data *d, const fs_params *q, char *err, size_t errlen) {
    const fs_pool *pools[3] = {&d->pool_train, &d->pool_val, &d->pool_test};
    for (int k = 0; k < 3; k++)
        for (int c = 0; c < pools[k]->n_classes; c++) {
            const fs_classes *s = pools[k]->src;
            int cls = pools[k]->cls[c], need = q->shots + q->query;
            if (k == 0 && q->pretrain_iters && q->pretrain_batch > need) need = q->pretrain_batch;
            if (s->count[cls] < need || need > 2000)
                return mdl_fail(err, errlen, "fewshot: class %d has %d images, fewer than shots + query = %d "
                                "(at most 2000; and pretrain_batch)", cls, s->count[cls], need);
        }
    return 0;
}

// FashionMNIST: meta-training on classes 0..5-V of the training file, validation on the test
// file's classes 0-5 (the V held-out ones in every task), meta-test on its classes 6-9.
static int fashion_pools(fs_data *d, const fs_params *q, char *err, size_t errlen) {
    if (q->ways > 4) return mdl_fail(err, errlen, "fewshot: ways = %d, but FashionMNIST's meta-test split has 4 classes", q->ways);
    if (6 - q->val_classes < q->ways)
        return mdl_fail(err, errlen, "fewshot: val_classes = %d leaves %d meta-training classes, fewer than "
                        "ways = %d", q->val_classes, 6 - q->val_classes, q->ways);
    if (mdl_mnist_load(q->data, "train", &d->train, err, errlen) ||
        mdl_mnist_load(q->data, "t10k", &d->test, err, errlen))
        return -1;
    if (!(d->index = malloc(sizeof(int32_t) * (size_t)(d->train.n + d->test.n))))
        return mdl_fail(err, errlen, "fewshot: out of memory");
    fill_classes(&d->of_train, &d->train, d->index);
    fill_classes(&d->of_test, &d->test, d->index + d->train.n);
    int V = q->val_classes;
    d->n_train = 6 - V;
    d->pool_train = make_pool(&d->of_train, 0, 6 - V, 0, 0, q);
    d->pool_val = V >= q->ways ? make_pool(&d->of_test, 6 - V, V, 0, 6 - V, q) // held-out classes only
                               : make_pool(&d->of_test, 0, 6, V, 6 - V, q);
    d->pool_test = make_pool(&d->of_test, 6, 4, 0, 6, q);
    return check_counts(d, q, err, errlen);
}

// The glyph set: its classes relabelled by a fixed shuffle (seed 0), then the first 60% for
// meta-training, the next 10% for validation, the rest (30%) for the meta-test; every image of a
// class is in its split.
static int glyph_pools(fs_data *d, const fs_params *q, char *err, size_t errlen) {
    if (mdl_glyphs_load(q->fonts, 28, &d->train, NULL, NULL, err, errlen)) return -1;
    int C = d->train.classes, perm[MAX_CLASSES];
    if (C > MAX_CLASSES) return mdl_fail(err, errlen, "fewshot: %d glyph classes, more than %d", C, MAX_CLASSES);
    ad_rng r;
    ad_rng_seed(&r, 0);
    for (int c = 0; c < C; c++) perm[c] = c;
    for (int c = 0; c < C - 1; c++) swap_int(&perm[c], &perm[c + (int)(ad_rng_next(&r) % (uint64_t)(C - c))]);
    for (int i = 0; i < d->train.n; i++) d->train.y[i] = perm[d->train.y[i]];
    int n_tr = C * 6 / 10, n_val = C / 10, n_test = C - n_tr - n_val;
    if (q->ways > n_val || q->ways > n_test)
        return mdl_fail(err, errlen, "fewshot: ways = %d, but the glyph split has %d validation and %d meta-test "
                        "classes", q->ways, n_val, n_test);
    if (!(d->index = malloc(sizeof(int32_t) * (size_t)d->train.n))) return mdl_fail(err, errlen, "fewshot: out of memory");
    fill_classes(&d->of_train, &d->train, d->index);
    d->n_train = n_tr;
    d->pool_train = make_pool(&d->of_train, 0, n_tr, 0, 0, q);
    d->pool_val = make_pool(&d->of_train, n_tr, n_val, 0, n_tr, q);
    d->pool_test = make_pool(&d->of_train, n_tr + n_val, n_test, 0, n_tr + n_val, q);
    return check_counts(d, q, err, errlen);
}

static int fs_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    const fs_params *q = params;
    fs_data *d = calloc(1, sizeof *d);
    if (!d) return mdl_fail(err, errlen, "fewshot: out of memory");
    m->data = d, m->free_data = fs_free;
    d->par = *q;
    if ((q->source == SOURCE_GLYPHS ? glyph_pools(d, q, err, errlen) : fashion_pools(d, q, err, errlen)))
        return -1;
    const fs_pool *pt = &d->pool_train;
    int conv = q->backbone == BACKBONE_CONVNET4, D = pt->d, H = pt->width;
    if (conv && (pt->side * pt->side != D || pt->side < 16)) // 4 poolings leave at least a pixel
        return mdl_fail(err, errlen, "fewshot: backbone=convnet4 needs square images of side >= 16, "
                        "not %d pixels", D);
    int nx = conv ? convnet_size(H) : D * H + H, ny = H * q->ways + q->ways;
    d->ts = (blo_task_set){.task_size = task_size(&d->pool_train), .draw = fs_draw, .user = &d->pool_train,
                           .batch = q->batch, .threads = q->threads, .seed = (uint64_t)q->seed};
    d->ref = malloc(d->ts.task_size);
    d->x0 = calloc((size_t)nx, sizeof(double)), d->y0 = calloc((size_t)ny, sizeof(double));
    if (!d->ref || !d->x0 || !d->y0) return mdl_fail(err, errlen, "fewshot: out of memory");
    blo_error e;
    if (blo_tasks_draw(&d->ts, (uint64_t)q->seed, UINT64_MAX, 1, d->ref, &e))
        return mdl_fail(err, errlen, "fewshot: %s", e.msg);
    init_x(d->x0, pt, q->init_seed);
    m->prob = (blo_problem){.n_x = nx, .n_y = ny, .F = fs_F, .f = fs_f, .user = d->ref, .tasks = &d->ts};
    m->n_starts = 1, m->x0[0] = d->x0, m->y0[0] = d->y0;
    m->metrics = metrics, m->n_metrics = N_METRICS, m->evaluate_z = fs_evaluate_z;
    if (q->from_baseline) { // meta-learning from the pretrained representation (Meta-Baseline's way)
        if (!q->pretrain_iters) return mdl_fail(err, errlen, "fewshot: from_baseline = 1 needs pretrain_iters > 0");
        if (!(d->baseline = malloc(sizeof(double) * (size_t)nx))) return mdl_fail(err, errlen, "fewshot: out of memory");
        if (pretrain(m, d->baseline, err, errlen)) return -1;
        memcpy(d->x0, d->baseline, sizeof(double) * (size_t)nx);
    }
    return 0;
}

// Ours (README, "Task sets"): every method through the 20 GD steps of 0.5 that adapt the
// meta-test heads (bda: its aggregated steps), Adam on x at 1e-4 and on z at 1e-3, 100 UL
// iterations; the step and the iterations were chosen on the meta-validation classes.
static const mdl_paper_row papers[] = {
    {"*", "dynamics=gd s_l=0.5 ll_iters=20 optimizer=adam lr_x=0.0001 lr_z=0.001 ul_iters=100"},
    {"bda", "dynamics=bda s_l=0.5"},
    {NULL, NULL},
};

const mdl_entry mdl_fewshot_entry = {
    "fewshot", "N-way M-shot on unseen classes, FashionMNIST (6 train / 4 test) or glyphs from fonts (84 / 14 / 42): shared MLP or ConvNet-4 x, per-task head y",
    "few-shot classification as a task set (ours, FashionMNIST class split)", sizeof(fs_params), &defaults,
    settings, fs_make, papers};
