// Task sets (bilevel/tasks.h): a family of quadratic tasks with a shared x and a meta-learned LL
// start z, run by unchanged methods on batches. The bits do not depend on the thread count; a
// batch of identical tasks gives the single task's direction; maml's batch hypergradient passes
// blo_check_hypergrad (the batch mean against central differences of the mean of the tasks'
// values); a resumed run draws the same batches and ends with the same bits; bad sets are refused.
#include "harness.h"
#include "tests.h"

#include "../bilevel/blo_extra.h"
#include "../bilevel/tasks.h"
#include "models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---- the family: n = 3, F_j = 1/2 ||y - b_j||^2 + 1/2 ||x||^2 + 1/4 sum sin y,
// f_j = 1/2 sum_i a_i (y_i - c_j,i - x_i)^2 (a fixed, b_j and c_j drawn per task) ----

enum { N = 3 };

typedef struct {
    double b[N], c[N];
} qtask;

static const double qa[N] = {1.0, 1.5, 2.0};

static ad_var q_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const qtask *k = u;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(N), k->b));
    ad_var v = ad_add(t, ad_sqnorm(t, r), ad_sqnorm(t, x));
    return ad_add(t, ad_scale(t, v, 0.5), ad_scale(t, ad_sum(t, ad_sin(t, y)), 0.25));
}

static ad_var q_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const qtask *k = u;
    ad_var r = ad_sub(t, ad_sub(t, y, ad_const_view(t, ad_vec_shape(N), k->c)), x);
    return ad_scale(t, ad_sum(t, ad_mul(t, ad_const_view(t, ad_vec_shape(N), qa), ad_mul(t, r, r))), 0.5);
}

// user: NULL draws b, c ~ N(0, 1); else a qtask every draw copies (identical tasks).
static blo_status q_draw(void *task, ad_rng *r, const void *user, blo_error *err) {
    qtask *k = task;
    (void)err;
    if (user) {
        *k = *(const qtask *)user;
        return BLO_OK;
    }
    for (int i = 0; i < N; i++) k->b[i] = ad_rng_normal(r), k->c[i] = ad_rng_normal(r);
    return BLO_OK;
}

static const qtask ref_task = {{0.5, -1.0, 0.25}, {0.3, 0.2, -0.7}};
static const double x0[N] = {0.1, -0.2, 0.3}, y0[N] = {0.2, 0.1, -0.1};

static blo_problem family(blo_task_set *ts, int batch, int threads, const qtask *same) {
    *ts = (blo_task_set){.task_size = sizeof(qtask), .draw = q_draw, .user = same, .batch = batch,
                         .threads = threads, .seed = 7};
    return (blo_problem){.n_x = N, .n_y = N, .F = q_F, .f = q_f, .user = (void *)&ref_task, .tasks = ts};
}

static blo_config *config(const char *method, const char *set) {
    blo_error e;
    blo_config *c = blo_config_new(blo_method_find(method), &e);
    EXPECT(c && blo_config_apply(c, set, &e) == BLO_OK, "%s %s: %s", method, set, e.msg);
    return c;
}

// x and z after a run of T steps [2N], F of each record [T]; 0 if it ran.
typedef struct {
    double xz[2 * N], F[8];
} run_out;

static int record_F(const blo_record *r, void *u) {
    run_out *o = u;
    if (!r->final && r->t < 8) o->F[r->t] = r->F;
    return 0;
}

static int run(const blo_problem *p, const blo_config *c, run_out *o) {
    blo_error e;
    memset(o, 0, sizeof *o);
    blo_solver *s = blo_solver_new(p, c, x0, y0, NULL, &e);
    EXPECT(s, "solver: %s", e.msg);
    if (!s) return -1;
    blo_solver_set_record(s, record_F, o);
    blo_status st = blo_solver_run(s);
    EXPECT(st == BLO_OK, "run: %s", blo_solver_error(s));
    memcpy(o->xz, blo_solver_x(s), sizeof(double) * N);
    if (blo_solver_n_z(s)) memcpy(o->xz + N, blo_solver_z(s), sizeof(double) * N);
    blo_solver_free(s);
    return st ? -1 : 0;
}

static void threads_same_bits(void) {
    static const char *const methods[] = {"maml", "fomaml", "reptile", "imaml", "rhg", "cg"};
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
        blo_config *c = config(methods[m], "ul_iters=6 ll_iters=4 lr_x=0.1 lr_z=0.1 optimizer=adam");
        run_out o[3];
        int thr[3] = {1, 2, 4};
        for (int k = 0; k < 3; k++) {
            blo_task_set ts;
            blo_problem p = family(&ts, 5, thr[k], NULL);
            run(&p, c, &o[k]);
        }
        EXPECT(!memcmp(&o[0], &o[1], sizeof o[0]) && !memcmp(&o[0], &o[2], sizeof o[0]),
               "%s: 1, 2 and 4 threads give different bits (x[0] %.17g %.17g %.17g)", methods[m],
               o[0].xz[0], o[1].xz[0], o[2].xz[0]);
        EXPECT(o[0].xz[0] != x0[0], "%s: x did not move", methods[m]);
        blo_config_free(c);
    }
}

// The direction of one UL iteration [2N] and its record on p.
static void direction(const blo_problem *p, const blo_config *c, double *g, blo_record *rec) {
    blo_error e;
    blo_solver *s = blo_solver_new(p, c, x0, y0, NULL, &e);
    EXPECT(s, "solver: %s", e.msg);
    if (!s) return;
    EXPECT(blo_solver_direction(s, rec, &e) == BLO_OK, "direction: %s", e.msg);
    memcpy(g, blo_solver_gradient(s), sizeof(double) * (size_t)(N + blo_solver_n_z(s)));
    blo_solver_free(s);
}

static void identical_tasks(void) {
    static const char *const methods[] = {"maml", "fomaml", "imaml", "rhg"};
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
        blo_config *c = config(methods[m], "ll_iters=5");
        blo_task_set ts;
        blo_problem batch = family(&ts, 3, 2, &ref_task), single = batch;
        single.tasks = NULL;
        double gb[2 * N] = {0}, gs[2 * N] = {0};
        blo_record rb, rs;
        direction(&batch, c, gb, &rb);
        direction(&single, c, gs, &rs);
        for (int i = 0; i < 2 * N; i++) // (g + g + g) / 3 is g to a rounding or two
            EXPECT(fabs(gb[i] - gs[i]) <= 4e-16 * fabs(gs[i]), "%s: entry %d: batch %.17g, single %.17g",
                   methods[m], i, gb[i], gs[i]);
        EXPECT(fabs(rb.F - rs.F) <= 4e-16 * fabs(rs.F) && fabs(rb.f - rs.f) <= 4e-16 * fabs(rs.f),
               "%s: batch F %.17g f %.17g, single %.17g %.17g", methods[m], rb.F, rb.f, rs.F, rs.f);
        blo_config_free(c);
    }
}

static void batch_hypergrad(void) {
    static const struct {
        const char *method, *set;
    } cases[] = {{"maml", "ll_iters=5"}, {"maml", "ll_iters=3 graph_mb=0 dynamics=nesterov"}, {"rhg", "ll_iters=6"}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        blo_config *c = config(cases[k].method, cases[k].set);
        blo_task_set ts;
        blo_problem p = family(&ts, 4, 2, NULL);
        blo_check_params cp = blo_check_default_params();
        blo_check_report r = blo_check_hypergrad(&p, c, x0, y0, NULL, &cp);
        EXPECT(r.status == BLO_OK && r.pass && r.checked == (cases[k].method[0] == 'm' ? 2 * N : N),
               "%s %s: %s", cases[k].method, cases[k].set, r.msg);
        blo_config_free(c);
    }
}

static void resumed_run(void) {
    blo_error e;
    blo_task_set ts;
    blo_problem p = family(&ts, 4, 2, NULL);
    blo_config *c = config("maml", "ul_iters=6 ll_iters=3 optimizer=adam lr_z=0.05 lr_x=0.05");
    run_out full;
    run(&p, c, &full);
    char path[64];
    snprintf(path, sizeof path, "/tmp/hypertape-tasks-%d.state", (int)getpid());
    blo_solver *s = blo_solver_new(&p, c, x0, y0, NULL, &e);
    for (int t = 0; s && t < 3; t++) EXPECT(blo_solver_step(s) == BLO_OK, "step: %s", blo_solver_error(s));
    EXPECT(s && blo_solver_save(s, path, "", &e) == BLO_OK, "save: %s", e.msg);
    blo_solver_free(s);
    s = blo_solver_new(&p, c, x0, y0, NULL, &e);
    EXPECT(s && blo_solver_load(s, path, &e) == BLO_OK, "load: %s", e.msg);
    EXPECT(s && blo_solver_run(s) == BLO_OK, "resumed run: %s", s ? blo_solver_error(s) : e.msg);
    EXPECT(s && !memcmp(blo_solver_x(s), full.xz, sizeof(double) * N) &&
               !memcmp(blo_solver_z(s), full.xz + N, sizeof(double) * N),
           "the resumed run ends elsewhere");
    blo_solver_free(s);
    remove(path);
    // the batch of step t is drawn from (seed, t) alone
    qtask a[4], b[4];
    EXPECT(blo_tasks_draw(&ts, 7, 5, 4, a, &e) == BLO_OK && blo_tasks_draw(&ts, 7, 5, 4, b, &e) == BLO_OK &&
               !memcmp(a, b, sizeof a),
           "two draws of (7, 5) differ");
    EXPECT(blo_tasks_draw(&ts, 7, 6, 4, b, &e) == BLO_OK && memcmp(a, b, sizeof a), "(7, 5) and (7, 6) agree");
    blo_config_free(c);
}

// A minibatch sampler (a task set must not have one: it would be handed a task as its user).
static int never_sample(void *user, int which, ad_rng *rng) {
    (void)user, (void)which, (void)rng;
    return 0;
}

static void bad_sets(void) {
    blo_error e;
    blo_config *c = config("maml", "");
    const struct {
        int batch, threads;
        int no_draw, sampled;
    } cases[] = {{0, 1, 0, 0}, {2, 0, 0, 0}, {2, 1, 1, 0}, {2, 1, 0, 1}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        blo_task_set ts;
        blo_problem p = family(&ts, cases[k].batch, cases[k].threads, NULL);
        if (cases[k].no_draw) ts.draw = NULL;
        if (cases[k].sampled) p.sample = never_sample;
        blo_solver *s = blo_solver_new(&p, c, x0, y0, NULL, &e);
        EXPECT(!s && e.status == BLO_EARG && strstr(e.msg, "tasks:"), "case %zu: %s", k, s ? "made" : e.msg);
        blo_solver_free(s);
    }
    blo_config_free(c);
}

// The model name with settings set on 1 thread (a) and on `threads` (b): 0, or -1 (reported) with
// neither made.
static int make_pair(const char *name, const char *set, int threads, mdl_model *a, mdl_model *b) {
    char err[256], setb[400];
    snprintf(setb, sizeof setb, "%s threads=%d", set, threads);
    if (mdl_make_named(name, set, a, err, sizeof err)) {
        EXPECT(0, "%s: %s", name, err);
        return -1;
    }
    if (mdl_make_named(name, setb, b, err, sizeof err)) {
        EXPECT(0, "%s: %s", name, err);
        mdl_free(a);
        return -1;
    }
    return 0;
}

// The sinusoid model (MAML 5.1) on a small network: maml's batch hypergradient through the MLP
// against central differences, the same bits on 1 and 3 threads, and its metrics: finite, the
// pretrained baseline's start is the network's start (mse_0 equal at z = y0), and a method that
// learns no z is told so.
static void sinusoid_small(void) {
    mdl_model m1, m3;
    char err[256];
    if (make_pair("sinusoid", "hidden=5 batch=3 shots=5 query=5 test_tasks=4 test_query=7 pretrain_iters=0",
                  3, &m1, &m3))
        return;
    EXPECT(m1.prob.n_y == 5 * 5 + 4 * 5 + 1 && m1.prob.n_x == 0 && m1.prob.tasks, "n_y = %d", m1.prob.n_y);
    blo_config *c = config("maml", "ll_iters=2 s_l=0.05");
    blo_check_params cp = blo_check_default_params();
    cp.max_coords = 0;
    // at a generic start: at the network's own (biases 0) an input where every first-layer unit is
    // off puts a second-layer unit at its kink, where the GD step (through relu') jumps
    double start[46];
    ad_rng g;
    ad_rng_seed(&g, 3);
    for (int i = 0; i < 46; i++) start[i] = 0.5 * ad_rng_normal(&g);
    blo_check_report r = blo_check_hypergrad(&m1.prob, c, m1.x0[0], start, NULL, &cp);
    EXPECT(r.status == BLO_OK && r.pass && r.checked == m1.prob.n_y, "%s", r.msg);
    blo_config_apply(c, "ul_iters=4 optimizer=adam lr_z=0.01", NULL);
    blo_error e;
    const double *z[2] = {NULL, NULL};
    blo_solver *s[2] = {blo_solver_new(&m1.prob, c, m1.x0[0], m1.y0[0], NULL, &e),
                        blo_solver_new(&m3.prob, c, m3.x0[0], m3.y0[0], NULL, &e)};
    for (int k = 0; k < 2; k++) {
        EXPECT(s[k] && blo_solver_run(s[k]) == BLO_OK, "run: %s", s[k] ? blo_solver_error(s[k]) : e.msg);
        z[k] = s[k] ? blo_solver_z(s[k]) : NULL;
    }
    EXPECT(z[0] && z[1] && !memcmp(z[0], z[1], sizeof(double) * (size_t)m1.prob.n_y), "1 and 3 threads differ");
    double v[MDL_METRICS_MAX], w[MDL_METRICS_MAX];
    EXPECT(m1.evaluate_z && m1.n_metrics == 6 && !strcmp(m1.metrics[2].name, "mse_10"), "metrics");
    EXPECT(z[0] && m1.evaluate_z(&m1, NULL, z[0], m1.prob.n_y, v, err, sizeof err) == 0, "%s", err);
    for (int k = 0; k < 3; k++) EXPECT(isfinite(v[k]) && v[k] > 0, "metric %d = %g", k, v[k]);
    EXPECT(isnan(v[3]), "no baseline without pretraining: %g", v[3]);
    EXPECT(m1.evaluate_z(&m1, NULL, NULL, 0, w, err, sizeof err) == -1 && strstr(err, "learned no LL start"), "%s", err);
    blo_solver_free(s[0]), blo_solver_free(s[1]);
    blo_config_free(c);
    mdl_free(&m3);
    // the baseline starts at y0: its mse_0 is z = y0's
    if (mdl_make_named("sinusoid", "hidden=5 batch=3 shots=5 test_tasks=4 pretrain_iters=1", &m3, err, sizeof err)) {
        EXPECT(0, "%s", err);
    } else {
        EXPECT(m3.evaluate_z(&m3, NULL, m3.y0[0], m3.prob.n_y, w, err, sizeof err) == 0, "%s", err);
        EXPECT(w[0] != w[3] && fabs(w[0] - w[3]) < 0.1 * w[0], "one Adam step of 1e-3 moves mse_0 a little: %g -> %g", w[0], w[3]);
        mdl_free(&m3);
    }
    mdl_free(&m1);
}

// fewshot (FashionMNIST, unseen classes) on a tiny representation: rhg's batch hypergradient in x
// against central differences, the same bits on 1 and 2 threads, metrics.
static void fewshot_small(void) {
    mdl_model m1, m2;
    char err[256];
    if (make_pair("fewshot", "ways=2 shots=2 query=3 hidden=3 batch=3 test_tasks=5 test_steps=5 val_tasks=5 pretrain_iters=10", 2, &m1, &m2))
        return;
    EXPECT(m1.prob.n_x == 784 * 3 + 3 && m1.prob.n_y == 3 * 2 + 2, "n_x = %d, n_y = %d", m1.prob.n_x, m1.prob.n_y);
    blo_config *c = config("rhg", "ll_iters=4 s_l=0.5");
    blo_check_params cp = blo_check_default_params();
    blo_check_report r = blo_check_hypergrad(&m1.prob, c, m1.x0[0], m1.y0[0], NULL, &cp);
    EXPECT(r.status == BLO_OK && r.pass && r.checked == 40, "%s", r.msg);
    blo_config_apply(c, "ul_iters=3 optimizer=adam lr_x=0.01", NULL);
    size_t nx = (size_t)m1.prob.n_x;
    double *o[2] = {calloc(nx, sizeof(double)), calloc(nx, sizeof(double))};
    for (int k = 0; k < 2 && o[0] && o[1]; k++) {
        const mdl_model *m = k ? &m2 : &m1;
        blo_error e;
        blo_solver *s = blo_solver_new(&m->prob, c, m->x0[0], m->y0[0], NULL, &e);
        EXPECT(s && blo_solver_run(s) == BLO_OK, "run: %s", s ? blo_solver_error(s) : e.msg);
        if (s) memcpy(o[k], blo_solver_x(s), sizeof(double) * nx);
        if (s && k == 0) {
            double v[MDL_METRICS_MAX];
            EXPECT(m1.evaluate_z(&m1, blo_solver_x(s), NULL, 0, v, err, sizeof err) == 0, "%s", err);
            EXPECT(v[0] >= 0 && v[0] <= 100 && v[1] >= 0 && isfinite(v[1]), "acc %g +- %g", v[0], v[1]);
        }
        blo_solver_free(s);
    }
    EXPECT(o[0] && o[1] && !memcmp(o[0], o[1], sizeof(double) * nx) && memcmp(o[0], m1.x0[0], sizeof(double) * nx),
           "1 and 2 threads differ, or x did not move");
    free(o[0]), free(o[1]);
    blo_config_free(c);
    mdl_free(&m1), mdl_free(&m2);
}

void test_bilevel_tasks(void) {
    TEST_CASE("tasks: fewshot (FashionMNIST) on a tiny representation") fewshot_small();
    TEST_CASE("tasks: sinusoid (MAML 5.1) on a small network") sinusoid_small();
    TEST_CASE("tasks: 1, 2 and 4 threads give the same bits") threads_same_bits();
    TEST_CASE("tasks: a batch of identical tasks is the single task") identical_tasks();
    TEST_CASE("tasks: the batch's hypergradient against central differences") batch_hypergrad();
    TEST_CASE("tasks: a resumed run draws the same batches") resumed_run();
    TEST_CASE("tasks: bad task sets are refused") bad_sets();
}
