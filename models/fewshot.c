// fewshot: N-way M-shot classification on classes unseen in training, as a task set
// (bilevel/tasks.h), on FashionMNIST split by class: classes 0-5 (training file) for
// meta-training, 6-9 (test file) for meta-testing. A task draws `ways` classes and, of each,
// `shots` support and `query` query images, labelled 0..ways-1 in the drawn order. The UL x is a
// shared representation, an MLP layer relu(u W + b) [784 -> hidden]; the LL y is the task's linear
// head [hidden -> ways]; f is the support cross-entropy plus reg/2 ||y||^2 (strongly convex in y),
// F the query cross-entropy. Metrics: query accuracy over test_tasks meta-test tasks (each head
// adapted from 0 by test_steps GD steps of test_lr on f), with its 95% interval (1.96 s / sqrt(n)).
#include "models.h"
#include "../bilevel/tasks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char data[512];
    int ways, shots, query, hidden, batch, threads, seed;
    int test_tasks, test_seed, test_steps, init_seed;
    double reg, test_lr;
} fs_params;

static const fs_params defaults = {.data = MDL_FASHION_MNIST_DIR, .ways = 4, .shots = 5, .query = 10,
                                   .hidden = 64, .batch = 4, .threads = 1, .seed = 0, .test_tasks = 600,
                                   .test_seed = 1, .test_steps = 20, .init_seed = 0, .reg = 0.01,
                                   .test_lr = 0.5};

static const blo_setting settings[] = {
    BLO_ROW_STRING(fs_params, data, "data", "DIR", "an MNIST-format folder (FashionMNIST)"),
    BLO_ROW_INT(fs_params, ways, "ways", 2, 4, "N", "classes per task (the meta-test split has 4)"),
    BLO_ROW_INT(fs_params, shots, "shots", 1, 1000, "M", "support images per class (f)"),
    BLO_ROW_INT(fs_params, query, "query", 1, 1000, "Q", "query images per class (F)"),
    BLO_ROW_INT(fs_params, hidden, "hidden", 1, 4096, "H", "width of the shared representation"),
    BLO_ROWS_TASK_SET(fs_params),
    BLO_ROW_INT(fs_params, test_steps, "test_steps", 0, 100000, "K", "GD steps adapting a meta-test head"),
    BLO_ROW_DBL(fs_params, test_lr, "test_lr", 0, INFINITY, BLO_SET_LO_OPEN, "s", "their step"),
    BLO_ROW_DBL(fs_params, reg, "reg", 0, INFINITY, 0, "r", "the head's weight decay in f"),
    BLO_ROW_INT(fs_params, init_seed, "init_seed", 0, INT32_MAX, "S", "the representation's start"),
    BLO_ROW_END,
};

// Where a stream's tasks come from: its dataset and classes, the task's shape.
typedef struct {
    const mdl_dataset *set;
    int first_class, n_classes;
    const int32_t *by_class[10]; // each class's image indices
    int count[10];
    int ways, shots, query, hidden, d;
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

static blo_status fs_draw(void *task, ad_rng *r, const void *user, blo_error *err) {
    const fs_pool *p = user;
    fs_task *k = task;
    (void)err;
    k->pool = p;
    int cls[10];
    for (int c = 0; c < p->n_classes; c++) cls[c] = p->first_class + c;
    for (int c = 0; c < p->ways; c++) { // the first `ways` of a seeded shuffle
        int j = c + (int)(ad_rng_next(r) % (uint64_t)(p->n_classes - c)), t = cls[c];
        cls[c] = cls[j], cls[j] = t;
    }
    int m = p->shots + p->query, d = p->d, ns = p->ways * p->shots;
    int32_t *lab = task_labels(k);
    for (int c = 0; c < p->ways; c++) {
        int pick[2000];
        for (int i = 0; i < m; i++) { // distinct images of the class
            int dup;
            do {
                pick[i] = p->by_class[cls[c]][ad_rng_next(r) % (uint64_t)p->count[cls[c]]];
                dup = 0;
                for (int q = 0; q < i; q++) dup |= pick[q] == pick[i];
            } while (dup);
            int row = i < p->shots ? c * p->shots + i : ns + c * p->query + (i - p->shots);
            memcpy(k->v + (size_t)row * d, p->set->X + (size_t)pick[i] * d, sizeof(double) * (size_t)d);
            lab[row] = c;
        }
    }
    return BLO_OK;
}

// Mean cross-entropy of the head y on rows [first, first + n) of the task, plus reg/2 ||y||^2.
static ad_var head_loss(ad_tape *t, const fs_task *k, ad_var x, ad_var y, int first, int n, double reg) {
    const fs_pool *p = k->pool;
    int d = p->d, H = p->hidden, N = p->ways;
    ad_var U = ad_const_view(t, ad_mat_shape(n, d), k->v + (size_t)first * d);
    ad_var W = ad_reshape(t, ad_slice(t, x, 0, d * H), ad_mat_shape(d, H)), b = ad_slice(t, x, d * H, H);
    ad_var h = ad_relu(t, ad_add(t, ad_matmul(t, U, W, 0, 0), b));
    ad_var Wh = ad_reshape(t, ad_slice(t, y, 0, H * N), ad_mat_shape(H, N)), bh = ad_slice(t, y, H * N, N);
    ad_var Z = ad_add(t, ad_matmul(t, h, Wh, 0, 0), bh);
    ad_var loss = ad_mean(t, ad_xent(t, Z, task_labels(k) + first));
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
    fs_pool pool_train, pool_test;
    blo_task_set ts;
    void *ref;
    double *x0, *y0;
} fs_data;

static void fs_free(mdl_model *m) {
    fs_data *d = m->data;
    if (d) {
        mdl_dataset_free(&d->train), mdl_dataset_free(&d->test);
        free(d->index), free(d->ref), free(d->x0), free(d->y0), free(d);
    }
    m->data = NULL;
}

// The class lists of set's classes [first, first + n) into p, from idx [set->n].
static void fill_pool(fs_pool *p, const mdl_dataset *set, int first, int n, int32_t *idx) {
    p->set = set, p->first_class = first, p->n_classes = n, p->d = set->d;
    int at = 0;
    for (int c = first; c < first + n; c++) {
        p->by_class[c] = idx + at, p->count[c] = 0;
        for (int i = 0; i < set->n; i++)
            if (set->y[i] == c) idx[at + p->count[c]++] = i;
        at += p->count[c];
    }
}

enum { ACC, ACC_CI, N_METRICS };
static const mdl_metric metrics[N_METRICS] = {{"test_acc", "meta-test accuracy (%)"},
                                              {"test_acc_ci95", "its 95% interval (+-, %)"}};

// The query accuracy (%) of head y on task k with representation x.
static double accuracy(const fs_task *k, const double *x, const double *y, const blo_problem *p, ad_tape *t) {
    const fs_pool *q = k->pool;
    int ns = q->ways * q->shots, nq = q->ways * q->query, N = q->ways;
    ad_tape_reset(t);
    ad_var xv = ad_const_view(t, ad_vec_shape(p->n_x), x), yv = ad_const_view(t, ad_vec_shape(p->n_y), y);
    int d = q->d, H = q->hidden;
    ad_var U = ad_const_view(t, ad_mat_shape(nq, d), k->v + (size_t)ns * d);
    ad_var h = ad_relu(t, ad_add(t, ad_matmul(t, U, ad_reshape(t, ad_slice(t, xv, 0, d * H), ad_mat_shape(d, H)), 0, 0),
                                 ad_slice(t, xv, d * H, H)));
    ad_var Z = ad_add(t, ad_matmul(t, h, ad_reshape(t, ad_slice(t, yv, 0, H * N), ad_mat_shape(H, N)), 0, 0),
                      ad_slice(t, yv, H * N, N));
    const double *z = ad_value(t, Z);
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

static int fs_evaluate_z(const mdl_model *m, const double *x, const double *z, int n_z, double *out,
                         char *err, size_t errlen) {
    const fs_data *d = m->data;
    (void)z, (void)n_z;
    blo_task_set set = d->ts;
    set.user = &d->pool_test, set.task_size = task_size(&d->pool_test);
    void *task = malloc(set.task_size);
    double *y = calloc(2 * (size_t)m->prob.n_y, sizeof(double));
    ad_tape *t = ad_tape_new(NULL);
    blo_error e = {0};
    blo_status st = task && y && t ? BLO_OK : BLO_ENOMEM;
    double s = 0, s2 = 0;
    int n = d->par.test_tasks;
    for (int j = 0; !st && j < n; j++) {
        st = blo_tasks_draw(&set, (uint64_t)d->par.test_seed, (uint64_t)j, 1, task, &e);
        blo_problem p = m->prob;
        p.user = task, p.tasks = NULL;
        double *g = y + m->prob.n_y;
        memset(y, 0, sizeof(double) * (size_t)m->prob.n_y);
        for (int k = 0; !st && k < d->par.test_steps; k++) {
            ad_tape_reset(t);
            st = blo_eval(&p, 0, x, y, NULL, NULL, g, t, &e);
            for (int i = 0; !st && i < m->prob.n_y; i++) y[i] -= d->par.test_lr * g[i];
        }
        if (st) break;
        double a = accuracy(task, x, y, &p, t);
        s += a, s2 += a * a;
    }
    free(task), free(y), ad_tape_free(t);
    if (st) return mdl_fail(err, errlen, "fewshot evaluate: %s", e.msg[0] ? e.msg : "out of memory");
    double mean = s / n, var = n > 1 ? fmax(0, (s2 - n * mean * mean) / (n - 1)) : 0;
    out[ACC] = mean, out[ACC_CI] = 1.96 * sqrt(var / n);
    return 0;
}

static int fs_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    const fs_params *q = params;
    fs_data *d = calloc(1, sizeof *d);
    if (!d) return mdl_fail(err, errlen, "fewshot: out of memory");
    m->data = d, m->free_data = fs_free;
    d->par = *q;
    if (mdl_mnist_load(q->data, "train", &d->train, err, errlen) ||
        mdl_mnist_load(q->data, "t10k", &d->test, err, errlen))
        return -1;
    if (!(d->index = malloc(sizeof(int32_t) * (size_t)(d->train.n + d->test.n))))
        return mdl_fail(err, errlen, "fewshot: out of memory");
    fill_pool(&d->pool_train, &d->train, 0, 6, d->index);
    fill_pool(&d->pool_test, &d->test, 6, 4, d->index + d->train.n);
    for (int c = 0; c < 10; c++) {
        const fs_pool *p = c < 6 ? &d->pool_train : &d->pool_test;
        if (p->count[c] < q->shots + q->query || q->shots + q->query > 2000)
            return mdl_fail(err, errlen, "fewshot: class %d has %d images, fewer than shots + query = %d "
                            "(at most 2000)", c, p->count[c], q->shots + q->query);
    }
    fs_pool *pools[2] = {&d->pool_train, &d->pool_test};
    for (int k = 0; k < 2; k++)
        pools[k]->ways = q->ways, pools[k]->shots = q->shots, pools[k]->query = q->query,
        pools[k]->hidden = q->hidden, pools[k]->reg = q->reg;
    int D = d->train.d, H = q->hidden, nx = D * H + H, ny = H * q->ways + q->ways;
    d->ts = (blo_task_set){.task_size = task_size(&d->pool_train), .draw = fs_draw, .user = &d->pool_train,
                           .batch = q->batch, .threads = q->threads, .seed = (uint64_t)q->seed};
    d->ref = malloc(d->ts.task_size);
    d->x0 = calloc((size_t)nx, sizeof(double)), d->y0 = calloc((size_t)ny, sizeof(double));
    if (!d->ref || !d->x0 || !d->y0) return mdl_fail(err, errlen, "fewshot: out of memory");
    blo_error e;
    if (blo_tasks_draw(&d->ts, (uint64_t)q->seed, UINT64_MAX, 1, d->ref, &e))
        return mdl_fail(err, errlen, "fewshot: %s", e.msg);
    ad_rng r;
    ad_rng_seed(&r, (uint64_t)q->init_seed);
    for (int i = 0; i < D * H; i++) d->x0[i] = sqrt(2.0 / D) * ad_rng_normal(&r); // He normal, biases 0
    m->prob = (blo_problem){.n_x = nx, .n_y = ny, .F = fs_F, .f = fs_f, .user = d->ref, .tasks = &d->ts};
    m->n_starts = 1, m->x0[0] = d->x0, m->y0[0] = d->y0;
    m->metrics = metrics, m->n_metrics = N_METRICS, m->evaluate_z = fs_evaluate_z;
    return 0;
}

// Ours: the head's LL by 20 GD steps of 0.5 from 0 (as the metrics adapt it), the representation
// by Adam at 1e-3; rhg differentiates through the 20 steps, cg implicitly at y_K.
static const mdl_paper_row papers[] = {
    {"*", "dynamics=gd s_l=0.5 ll_iters=20 optimizer=adam lr_x=0.001 ul_iters=300"},
    {NULL, NULL},
};

const mdl_entry mdl_fewshot_entry = {
    "fewshot", "N-way M-shot FashionMNIST on unseen classes (6 train / 4 test): shared MLP x, per-task head y",
    "few-shot classification as a task set (ours, FashionMNIST class split)", sizeof(fs_params), &defaults,
    settings, fs_make, papers};
