// sinusoid: few-shot regression of sinusoids (Finn, Abbeel and Levine, "Model-Agnostic
// Meta-Learning for Fast Adaptation of Deep Networks", ICML 2017, Sec. 5.1) as a task set
// (bilevel/tasks.h). A task is y = a sin(u - p), amplitude a ~ U[0.1, 5], phase p ~ U[0, pi],
// inputs u ~ U[-5, 5]: K support points (the LL f: their MSE) and Q query points (the UL F: theirs).
// The LL variable y is the weights of an MLP 1-H-H-1 with ReLU (H = 40 in the paper), the meta
// methods' z its learned start; there is no x (n_x = 0). The batch of UL step t is drawn from
// (seed, t).
//
// Metrics (of the learned start z): the meta-test MSE on test_tasks held-out tasks (drawn from the
// stream test_seed, each with K support points and test_query query points) after 0, 1 and 10 GD
// steps of test_lr on the support MSE from z; and the same from a network pretrained on all tasks
// jointly (MAML's baseline, Sec. 5.1: pretrain_iters Adam steps of lr 1e-3 on the mean MSE of
// batches of training tasks, support and query points together, from the same start as z), which
// is computed once, at the first evaluation.
#include "models.h"
#include "../bilevel/tasks.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int shots, query, hidden, batch, threads, seed;
    int test_tasks, test_query, test_seed, pretrain_iters, init_seed;
    double test_lr;
} sin_params;

static const sin_params defaults = {.shots = 10, .query = 10, .hidden = 40, .batch = 25, .threads = 1,
                                    .seed = 0, .test_tasks = 100, .test_query = 100, .test_seed = 1,
                                    .pretrain_iters = 2000, .init_seed = 0, .test_lr = 0.01};

static const blo_setting settings[] = {
    BLO_ROW_INT(sin_params, shots, "shots", 1, 100000, "K", "support points per task (f: their MSE)"),
    BLO_ROW_INT(sin_params, query, "query", 1, 100000, "Q", "query points per task (F: their MSE)"),
    BLO_ROW_INT(sin_params, hidden, "hidden", 1, 4096, "H", "width of the MLP 1-H-H-1"),
    BLO_ROWS_TASK_SET(sin_params),
    BLO_ROW_INT(sin_params, test_query, "test_query", 1, 100000, "Q", "query points per held-out task"),
    BLO_ROW_DBL(sin_params, test_lr, "test_lr", 0, INFINITY, BLO_SET_LO_OPEN, "s",
                "GD step of the metrics' adaptation (MAML's alpha)"),
    BLO_ROW_INT(sin_params, pretrain_iters, "pretrain_iters", 0, 100000000, "n",
                "Adam steps of the jointly pretrained baseline (0: no baseline)"),
    BLO_ROW_INT(sin_params, init_seed, "init_seed", 0, INT32_MAX, "S", "the network's start (MAML's)"),
    BLO_ROW_END,
};

// How the tasks of one stream are laid out: support and query points, the network's width.
typedef struct {
    int K, Q, H;
} sin_layout;

// A task: its layout, amplitude and phase, then u_s [K], v_s [K], u_q [Q], v_q [Q].
typedef struct {
    sin_layout l;
    double amp, phase;
    double v[];
} sin_task;

static size_t task_size(const sin_layout *l) {
    return sizeof(sin_task) + sizeof(double) * 2 * ((size_t)l->K + (size_t)l->Q);
}

static blo_status sin_draw(void *task, ad_rng *r, const void *user, blo_error *err) {
    const sin_layout *l = user;
    sin_task *k = task;
    (void)err;
    k->l = *l;
    k->amp = 0.1 + 4.9 * ad_rng_uniform(r);
    k->phase = 3.14159265358979323846 * ad_rng_uniform(r); // U[0, pi]
    double *us = k->v, *vs = us + l->K, *uq = vs + l->K, *vq = uq + l->Q;
    for (int i = 0; i < l->K; i++) us[i] = -5 + 10 * ad_rng_uniform(r), vs[i] = k->amp * sin(us[i] - k->phase);
    for (int i = 0; i < l->Q; i++) uq[i] = -5 + 10 * ad_rng_uniform(r), vq[i] = k->amp * sin(uq[i] - k->phase);
    return BLO_OK;
}

// The MLP's weights y = (W1 [1, H], b1 [H], W2 [H, H], b2 [H], W3 [H, 1], b3 [1]).
static int n_weights(int H) { return H * H + 4 * H + 1; }

// MSE of the network y on the n points (u [n], v [n]).
static ad_var mlp_mse(ad_tape *t, int H, ad_var y, const double *u, const double *v, int n) {
    ad_var U = ad_const_view(t, ad_mat_shape(n, 1), u), V = ad_const_view(t, ad_mat_shape(n, 1), v);
    ad_var W1 = ad_reshape(t, ad_slice(t, y, 0, H), ad_mat_shape(1, H)), b1 = ad_slice(t, y, H, H);
    ad_var W2 = ad_reshape(t, ad_slice(t, y, 2 * H, H * H), ad_mat_shape(H, H));
    ad_var b2 = ad_slice(t, y, 2 * H + H * H, H);
    ad_var W3 = ad_reshape(t, ad_slice(t, y, 3 * H + H * H, H), ad_mat_shape(H, 1));
    ad_var b3 = ad_slice(t, y, 4 * H + H * H, 1);
    ad_var h = ad_relu(t, ad_add(t, ad_matmul(t, U, W1, 0, 0), b1));
    h = ad_relu(t, ad_add(t, ad_matmul(t, h, W2, 0, 0), b2));
    ad_var out = ad_add(t, ad_matmul(t, h, W3, 0, 0), b3);
    return ad_mean(t, ad_square(t, ad_sub(t, out, V)));
}

static ad_var sin_F(ad_tape *t, ad_var x, ad_var y, void *user) {
    const sin_task *k = user;
    (void)x;
    return mlp_mse(t, k->l.H, y, k->v + 2 * k->l.K, k->v + 2 * k->l.K + k->l.Q, k->l.Q);
}

static ad_var sin_f(ad_tape *t, ad_var x, ad_var y, void *user) {
    const sin_task *k = user;
    (void)x;
    return mlp_mse(t, k->l.H, y, k->v, k->v + k->l.K, k->l.K);
}

typedef struct {
    sin_params par;
    sin_layout train, test;
    blo_task_set ts;
    void *ref;           // the reference task (the problem's user)
    double *y0;          // the network's start [n_y]
    double *pretrained;  // the baseline's weights [n_y], once computed (NULL before)
    double x0[1];
} sin_data;

static void sin_free(mdl_model *m) {
    sin_data *d = m->data;
    if (d) free(d->ref), free(d->y0), free(d->pretrained), free(d);
    m->data = NULL;
}

// The metrics' adaptation from w [n_y] on each held-out task: MSE on its query after 0, 1 and 10
// steps, averaged over the tasks, into out [3].
static int adapt_mse(const mdl_model *m, const double *w, double *out, char *err, size_t errlen) {
    const sin_data *d = m->data;
    int ny = m->prob.n_y, n = d->par.test_tasks;
    size_t ts = task_size(&d->test);
    blo_task_set set = d->ts;
    set.user = &d->test, set.task_size = ts;
    unsigned char *tasks = malloc(ts * (size_t)n);
    double *y = malloc(sizeof(double) * 2 * (size_t)ny);
    ad_tape *t = ad_tape_new(NULL);
    blo_error e = {0};
    blo_status st = tasks && y && t ? blo_tasks_draw(&set, (uint64_t)d->par.test_seed, 0, n, tasks, &e) : BLO_ENOMEM;
    double sum[3] = {0};
    for (int j = 0; !st && j < n; j++) {
        blo_problem p = m->prob;
        p.user = tasks + (size_t)j * ts, p.tasks = NULL;
        double *g = y + ny, F;
        memcpy(y, w, sizeof(double) * (size_t)ny);
        for (int s = 0; !st && s <= 10; s++) {
            ad_tape_reset(t);
            if (s == 0 || s == 1 || s == 10) {
                st = blo_eval(&p, 1, d->x0, y, &F, NULL, NULL, t, &e);
                sum[s == 0 ? 0 : s == 1 ? 1 : 2] += F;
            }
            if (!st && s < 10) st = blo_eval(&p, 0, d->x0, y, NULL, NULL, g, t, &e);
            for (int i = 0; !st && s < 10 && i < ny; i++) y[i] -= d->par.test_lr * g[i];
        }
    }
    free(tasks), free(y), ad_tape_free(t);
    if (st) return mdl_fail(err, errlen, "sinusoid evaluate: %s", st == BLO_ENOMEM && !e.msg[0] ? "out of memory" : e.msg);
    for (int k = 0; k < 3; k++) out[k] = sum[k] / n;
    return 0;
}

// The baseline: Adam (lr 1e-3, 0.9, 0.999) on the mean over a batch of training tasks of the MSE
// on all their points, batches from the stream (seed, t) as the meta-learners', from y0.
static int pretrain(const mdl_model *m, double *w, char *err, size_t errlen) {
    const sin_data *d = m->data;
    int ny = m->prob.n_y, B = d->par.batch;
    size_t ts = d->ts.task_size;
    unsigned char *tasks = malloc(ts * (size_t)B);
    double *mem = calloc(4 * (size_t)ny, sizeof(double));
    ad_tape *t = ad_tape_new(NULL);
    blo_error e = {0};
    blo_status st = tasks && mem && t ? BLO_OK : BLO_ENOMEM;
    double *g = mem, *gj = mem + ny, *m1 = mem + 2 * ny, *m2 = mem + 3 * ny;
    memcpy(w, d->y0, sizeof(double) * (size_t)ny);
    for (int it = 0; !st && it < d->par.pretrain_iters; it++) {
        st = blo_tasks_draw(&d->ts, d->ts.seed, (uint64_t)it, B, tasks, &e);
        memset(g, 0, sizeof(double) * (size_t)ny);
        for (int j = 0; !st && j < B; j++) {
            blo_problem p = m->prob;
            p.user = tasks + (size_t)j * ts, p.tasks = NULL;
            const sin_task *k = p.user;
            for (int upper = 0; !st && upper < 2; upper++) { // support and query, weighted by count
                ad_tape_reset(t);
                st = blo_eval(&p, upper, d->x0, w, NULL, NULL, gj, t, &e);
                double c = (upper ? k->l.Q : k->l.K) / (double)(k->l.K + k->l.Q) / B;
                for (int i = 0; !st && i < ny; i++) g[i] += c * gj[i];
            }
        }
        double b1 = 1 - pow(0.9, it + 1), b2 = 1 - pow(0.999, it + 1);
        if (!st) mdl_adam_step(w, g, m1, m2, (size_t)ny, 1e-3, b1, b2);
    }
    free(tasks), free(mem), ad_tape_free(t);
    return st ? mdl_fail(err, errlen, "sinusoid pretraining: %s", e.msg[0] ? e.msg : "out of memory") : 0;
}

enum { MSE_0, MSE_1, MSE_10, PRE_0, PRE_1, PRE_10, N_METRICS };
static const mdl_metric metrics[N_METRICS] = {
    {"mse_0", "meta-test MSE before adaptation"},
    {"mse_1", "meta-test MSE after 1 step"},
    {"mse_10", "meta-test MSE after 10 steps"},
    {"pretrained_mse_0", "pretrained baseline: MSE before adaptation"},
    {"pretrained_mse_1", "pretrained baseline: MSE after 1 step"},
    {"pretrained_mse_10", "pretrained baseline: MSE after 10 steps"},
};

static int sin_evaluate_z(const mdl_model *m, const double *x, const double *z, int n_z, double *out,
                          char *err, size_t errlen) {
    sin_data *d = m->data;
    (void)x;
    if (!z || n_z != m->prob.n_y)
        return mdl_fail(err, errlen, "sinusoid evaluate: the method learned no LL start z (n_z = %d, "
                        "the network has %d weights): use maml, fomaml, reptile or imaml", n_z, m->prob.n_y);
    for (int i = 0; i < n_z; i++)
        if (!isfinite(z[i])) return mdl_fail(err, errlen, "sinusoid evaluate: z[%d] = %g is not finite", i, z[i]);
    if (adapt_mse(m, z, out, err, errlen)) return -1;
    for (int k = PRE_0; k <= PRE_10; k++) out[k] = NAN;
    if (!d->par.pretrain_iters) return 0;
    if (!d->pretrained) { // computed once: it does not depend on the run
        double *w = malloc(sizeof(double) * (size_t)n_z);
        if (!w) return mdl_fail(err, errlen, "sinusoid evaluate: out of memory");
        if (pretrain(m, w, err, errlen)) return free(w), -1;
        d->pretrained = w;
    }
    return adapt_mse(m, d->pretrained, out + PRE_0, err, errlen);
}

static int sin_make(mdl_model *m, const void *params, char *err, size_t errlen) {
    const sin_params *q = params;
    sin_data *d = calloc(1, sizeof *d);
    if (!d) return mdl_fail(err, errlen, "sinusoid: out of memory");
    m->data = d, m->free_data = sin_free;
    d->par = *q;
    d->train = (sin_layout){q->shots, q->query, q->hidden};
    d->test = (sin_layout){q->shots, q->test_query, q->hidden};
    int ny = n_weights(q->hidden), H = q->hidden;
    d->ts = (blo_task_set){.task_size = task_size(&d->train), .draw = sin_draw, .user = &d->train,
                           .batch = q->batch, .threads = q->threads, .seed = (uint64_t)q->seed};
    d->ref = malloc(d->ts.task_size);
    d->y0 = calloc((size_t)ny, sizeof(double));
    if (!d->ref || !d->y0) return mdl_fail(err, errlen, "sinusoid: out of memory");
    blo_error e;
    // the reference task: the first of a stream the training batches never reach
    if (blo_tasks_draw(&d->ts, (uint64_t)q->seed, UINT64_MAX, 1, d->ref, &e))
        return mdl_fail(err, errlen, "sinusoid: %s", e.msg);
    ad_rng r;
    ad_rng_seed(&r, (uint64_t)q->init_seed);
    // MAML's code's start: weights N(0, 0.01^2) truncated at two deviations, biases 0
    const int W[3][2] = {{0, H}, {2 * H, H * H}, {3 * H + H * H, H}}; // offset, size of W1, W2, W3
    for (int l = 0; l < 3; l++)
        for (int i = 0; i < W[l][1]; i++) {
            double v;
            do v = ad_rng_normal(&r);
            while (fabs(v) > 2);
            d->y0[W[l][0] + i] = 0.01 * v;
        }
    m->prob = (blo_problem){.n_x = 0, .n_y = ny, .F = sin_F, .f = sin_f, .user = d->ref, .tasks = &d->ts};
    m->n_starts = 1, m->x0[0] = d->x0, m->y0[0] = d->y0;
    m->metrics = metrics, m->n_metrics = N_METRICS, m->evaluate_z = sin_evaluate_z;
    return 0;
}

// MAML Sec. 5.1: one GD step of alpha = 0.01 (the LL), meta-batch 25 (batch), Adam with beta =
// 0.001 on z; 70000 meta-iterations in the paper, fewer here (the README gives the run). iMAML:
// its proximal LL needs more steps; lambda = 2 (its default).
static const mdl_paper_row papers[] = {
    {"*", "dynamics=gd s_l=0.01 ll_iters=1 optimizer=adam lr_z=0.001 lr_x=0.001 ul_iters=1000"},
    {"imaml", "ll_iters=5 s_l=0.01"},
    {"reptile", "ll_iters=5 s_l=0.01 optimizer=plain lr_z=0.1"},
    {NULL, NULL},
};

const mdl_entry mdl_sinusoid_entry = {
    "sinusoid", "few-shot sinusoid regression (MAML 5.1): tasks a sin(u - p), an MLP's start learned",
    "MAML (ICML 2017) Sec. 5.1", sizeof(sin_params), &defaults, settings, sin_make, papers};
