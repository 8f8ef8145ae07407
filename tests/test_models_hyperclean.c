// The hyper-cleaning model: gradients of F and f and Hessian-vector products of f by finite
// differences (tiny synthetic MNIST-format folders with 4x4 and 1x1 images keep the checks fast;
// one check on the installed FashionMNIST), evaluate() against an independent computation, bad
// settings and data, and a short sanity run (GD on f lowers the validation loss).
#include "harness.h"
#include "tests.h"

#include "../models/models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void test_models_hyperclean(void); // declared here too until tests.h lists it

static char hc_dir[256], hc_dir1[300];
static char hc_data_set[300], hc_data1_set[340]; // "data=<hc_dir>", "data=<hc_dir1>" (1x1 images)

// Writes an IDX file of unsigned bytes into dir: dims then the data.
static int write_idx(const char *dir, const char *name, int ndim, const int *dims, const uint8_t *data, size_t n) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    uint8_t h[4] = {0, 0, 0x08, (uint8_t)ndim};
    fwrite(h, 1, 4, f);
    for (int i = 0; i < ndim; i++) {
        uint8_t b[4] = {(uint8_t)(dims[i] >> 24), (uint8_t)(dims[i] >> 16), (uint8_t)(dims[i] >> 8), (uint8_t)dims[i]};
        fwrite(b, 1, 4, f);
    }
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) || w != n ? -1 : 0;
}

// A synthetic MNIST-format folder: 60 training and 20 test images of side x side seeded random
// pixels, labels 0..9. The first pixel carries the label a little, so there is something to learn.
static int make_synthetic(const char *dir, int side) {
    ad_rng g;
    ad_rng_seed(&g, 7);
    const char *pre[2] = {"train", "t10k"};
    int counts[2] = {60, 20}, d = side * side;
    for (int s = 0; s < 2; s++) {
        int n = counts[s], dims[3] = {n, side, side};
        uint8_t im[60 * 16], lb[60];
        for (int i = 0; i < n; i++) {
            lb[i] = (uint8_t)(ad_rng_next(&g) % 10);
            for (int j = 0; j < d; j++) im[i * d + j] = (uint8_t)(ad_rng_next(&g) % 256);
            im[i * d] = (uint8_t)(25 * lb[i]);
        }
        char name[64];
        snprintf(name, sizeof name, "%s-images-idx3-ubyte", pre[s]);
        if (write_idx(dir, name, 3, dims, im, (size_t)n * d)) return -1;
        snprintf(name, sizeof name, "%s-labels-idx1-ubyte", pre[s]);
        if (write_idx(dir, name, 1, dims, lb, (size_t)n)) return -1;
    }
    return 0;
}

// The hyperclean model with these settings (NAME=VALUE each).
static int make_hc(int n_set, const char *const *set, mdl_model *m, char *err, size_t errlen) {
    char sets[1024];
    return mdl_make_named("hyperclean", th_join(sets, sizeof sets, n_set, set), m, err, errlen);
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

// ---- finite-difference checks --------------------------------------------------------------------

typedef struct {
    const mdl_model *m;
    int upper;          // F (1) or f (0)
    const double *x;    // fixed x when only y is an input
} obj_ctx;

static ad_var obj_xy(ad_tape *t, const ad_var *in, void *u) {
    const obj_ctx *c = u;
    const blo_problem *p = &c->m->prob;
    return (c->upper ? p->F : p->f)(t, in[0], in[1], p->user);
}

static ad_var obj_y(ad_tape *t, const ad_var *in, void *u) {
    const obj_ctx *c = u;
    const blo_problem *p = &c->m->prob;
    ad_var x = ad_const(t, ad_vec_shape(p->n_x), c->x);
    return (c->upper ? p->F : p->f)(t, x, in[0], p->user);
}

// Seeded random point: x ~ N(0, 1), y ~ N(0, 0.3^2).
static void random_point(const mdl_model *m, uint64_t seed, double *x, double *y) {
    ad_rng g;
    ad_rng_seed(&g, seed);
    for (int i = 0; i < m->prob.n_x; i++) x[i] = ad_rng_normal(&g);
    for (int i = 0; i < m->prob.n_y; i++) y[i] = 0.3 * ad_rng_normal(&g);
}

// Gradients of F and f w.r.t. (x, y), and H v of f (joint in (x, y), and in y alone).
static void check_model(const char *label, int n_set, const char *const *set, int hvp) {
    char name[160], err[512];
    mdl_model m;
    snprintf(name, sizeof name, "hyperclean %s: gradients of F and f%s by finite differences", label,
             hvp ? ", and H v of f" : "");
    TEST_CASE(name) {
        int rc = make_hc(n_set, set, &m, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        int nx = m.prob.n_x, ny = m.prob.n_y;
        double *x = malloc(sizeof(double) * nx), *y = malloc(sizeof(double) * ny);
        random_point(&m, 11, x, y);
        ad_shape sh[2] = {ad_vec_shape(nx), ad_vec_shape(ny)};
        const double *pt[2] = {x, y};
        ad_check_params cp = ad_check_default_params();
        cp.rtol = 1e-5, cp.atol = 1e-8;
        for (int upper = 0; upper < 2; upper++) {
            obj_ctx c = {&m, upper, x};
            ad_check_report r = ad_check_grad(obj_xy, &c, 2, sh, pt, &cp);
            EXPECT(r.status == AD_OK && r.pass, "%s: %s (input %d entry %d: %g vs %g)", upper ? "F" : "f",
                   r.msg, r.worst_input, r.worst_index, r.analytic, r.numeric);
        }
        if (hvp) {
            obj_ctx c = {&m, 0, x};
            cp.rtol = 1e-4, cp.atol = 1e-7; // differences of gradients: one order less accurate
            ad_check_report r = ad_check_hvp(obj_xy, &c, 2, sh, pt, &cp);
            EXPECT(r.status == AD_OK && r.pass, "H v of f in (x, y): %s (%g vs %g)", r.msg, r.analytic, r.numeric);
            r = ad_check_hvp(obj_y, &c, 1, sh + 1, pt + 1, &cp);
            EXPECT(r.status == AD_OK && r.pass, "H v of f in y: %s (%g vs %g)", r.msg, r.analytic, r.numeric);
        }
        free(x), free(y);
        mdl_free(&m);
    }
}

static void gradient_cases(void) {
    const char *small[] = {hc_data_set, "n_train=20", "n_val=10", "n_test=10", NULL, NULL};
    check_model("linear (synthetic)", 4, small, 1);
    small[4] = "l2=0.01";
    check_model("linear with l2 (synthetic)", 5, small, 1);
    small[4] = "pixels=doubles"; // the products on the doubles instead of the bytes
    check_model("linear pixels=doubles (synthetic)", 5, small, 1);
    const char *mlp[] = {hc_data_set, "n_train=20", "n_val=10", "n_test=10", "model=mlp", "hidden=5", NULL};
    const char *acts[] = {"act=relu", "act=tanh", "act=none", "pixels=doubles"}; // the last: relu
    for (int a = 0; a < 4; a++) {
        char label[64];
        snprintf(label, sizeof label, "mlp %s (synthetic)", acts[a]);
        mlp[6] = acts[a];
        check_model(label, 7, mlp, 1);
    }
    const char *none[] = {hc_data_set, "n_train=20", "n_val=10", "n_test=10", "model=mlp", "hidden=5", "act=none",
                          "fold=0", "pixels=doubles"};
    check_model("mlp act=none fold=0, as written (synthetic)", 8, none, 1);
    none[7] = "fold=1";
    check_model("mlp act=none folded, pixels=doubles (synthetic)", 9, none, 1);
    // images of one pixel: the weights are [1, k] matrices, not vectors (an error before)
    const char *one[] = {hc_data1_set, "n_train=20", "n_val=10", "n_test=10", "model=linear", "hidden=4"};
    check_model("linear on 1x1 images (synthetic)", 5, one, 1);
    one[4] = "model=mlp";
    check_model("mlp on 1x1 images (synthetic)", 6, one, 1);
    // FashionMNIST itself (784 pixels): a tiny MLP keeps the 2400-entry check quick
    const char *fm[] = {"n_train=20", "n_val=10", "n_test=10", "model=mlp", "hidden=3", "act=tanh"};
    check_model("mlp hidden=3 (FashionMNIST)", 6, fm, 0);
}

// The hyperclean metrics, found by name.
typedef struct {
    double test_acc, f1;
} hc_metrics;

static int eval_hc(const mdl_model *m, const double *x, const double *y, hc_metrics *out, char *err, size_t n) {
    double v[MDL_METRICS_MAX];
    int a = mdl_metric_find(m, "test_acc"), f = mdl_metric_find(m, "f1");
    if (a < 0 || f < 0) return snprintf(err, n, "no test_acc or f1 metric"), -1;
    int rc = m->evaluate(m, x, y, v, err, n);
    if (!rc) out->test_acc = v[a], out->f1 = v[f];
    return rc;
}

// ---- evaluate ----------------------------------------------------------------------------------------

// Accuracy (%) of the linear model y = (W [d, 10], b [10]) on a dataset, by plain loops.
static double naive_accuracy(const mdl_dataset *te, const double *y) {
    int right = 0, d = te->d;
    for (int i = 0; i < te->n; i++) {
        int best = 0;
        double bz = -INFINITY;
        for (int c = 0; c < 10; c++) {
            double z = y[d * 10 + c];
            for (int j = 0; j < d; j++) z += te->X[(size_t)i * d + j] * y[j * 10 + c];
            if (z > bz) bz = z, best = c;
        }
        right += best == te->y[i];
    }
    return 100.0 * right / te->n;
}

static void evaluate_cases(void) {
    TEST_CASE("hyperclean: evaluate gives F1 and test accuracy as computed independently") {
        const char *set[] = {hc_data_set, "n_train=40", "n_val=10", "n_test=20", "seed=3"};
        char err[512];
        mdl_model m;
        int rc = make_hc(5, set, &m, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        // the same split, loaded by hand, tells which labels are clean
        mdl_hc_params p = mdl_hc_default_params();
        p.n_train = 40, p.n_val = 10, p.n_test = 20, p.seed = 3;
        mdl_hc_data hc;
        rc = mdl_hc_load(hc_dir, &p, &hc, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) {
            mdl_free(&m);
            continue;
        }
        int nx = m.prob.n_x, ny = m.prob.n_y;
        double *x = malloc(sizeof(double) * nx), *y = malloc(sizeof(double) * ny);
        random_point(&m, 5, x, y);
        for (int i = 0; i < nx; i++) x[i] = hc.clean[i] ? 1 : -1;
        hc_metrics ev = {-1, -1};
        EXPECT(eval_hc(&m, x, y, &ev, err, sizeof err) == 0, "%s", err);
        EXPECT(fabs(ev.f1 - 100) < 1e-12, "x = +1 on clean, -1 on corrupted: F1 %g", ev.f1);
        double acc = naive_accuracy(&hc.test, y);
        EXPECT(fabs(ev.test_acc - acc) < 1e-9, "accuracy %g, by hand %g", ev.test_acc, acc);
        for (int i = 0; i < nx; i++) x[i] = 0; // all predicted clean (sigma = 1/2): p = 1/2, r = 1
        EXPECT(eval_hc(&m, x, y, &ev, err, sizeof err) == 0 && fabs(ev.f1 - 200.0 / 3) < 1e-9,
               "x = 0: F1 %g, expected 66.67", ev.f1);
        for (int i = 0; i < nx; i++) x[i] = -1; // nothing predicted clean
        EXPECT(eval_hc(&m, x, y, &ev, err, sizeof err) == 0 && ev.f1 == 0, "x = -1: F1 %g", ev.f1);
        for (int i = 0; i < nx; i++) x[i] = hc.clean[i] ? -1 : 1; // exactly wrong
        EXPECT(eval_hc(&m, x, y, &ev, err, sizeof err) == 0 && ev.f1 == 0, "inverted: F1 %g", ev.f1);
        for (int i = 0; i < ny; i++) y[i] = 0; // all logits tie: class 0 everywhere
        int zeros = 0;
        for (int i = 0; i < hc.test.n; i++) zeros += hc.test.y[i] == 0;
        EXPECT(eval_hc(&m, x, y, &ev, err, sizeof err) == 0 && fabs(ev.test_acc - 100.0 * zeros / hc.test.n) < 1e-9,
               "y = 0: accuracy %g", ev.test_acc);
        y[3] = NAN;
        EXPECT(eval_hc(&m, x, y, &ev, err, sizeof err) == -1 && has(err, "y[3]"), "NaN y: %s", err);
        EXPECT(eval_hc(&m, NULL, y, &ev, err, sizeof err) == -1 && has(err, "NULL"), "NULL x: %s", err);
        free(x), free(y);
        mdl_hc_free(&hc);
        mdl_free(&m);
    }
    TEST_CASE("hyperclean mlp: evaluate, sizes, a seeded nonzero start, no prior unless asked") {
        const char *set[] = {hc_data_set, "n_train=40", "n_val=10", "n_test=20", "model=mlp", "hidden=4"};
        char err[512];
        mdl_model a, b;
        int rc = make_hc(6, set, &a, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        EXPECT(a.prob.n_x == 40 && a.prob.n_y == 16 * 4 + 4 + 4 * 10 + 10, "sizes %d %d", a.prob.n_x, a.prob.n_y);
        EXPECT(a.z_prior == NULL && a.n_starts == 1, "no prior by default");
        double s = 0;
        for (int i = 0; i < a.prob.n_y; i++) s += a.y0[0][i] * a.y0[0][i];
        EXPECT(s > 0, "mlp start is not zero");
        EXPECT(make_hc(6, set, &b, err, sizeof err) == 0 &&
                   !memcmp(a.y0[0], b.y0[0], sizeof(double) * a.prob.n_y),
               "same seed, same start");
        mdl_free(&b);
        hc_metrics ev;
        EXPECT(eval_hc(&a, a.x0[0], a.y0[0], &ev, err, sizeof err) == 0 && ev.test_acc >= 0 &&
                   ev.test_acc <= 100 && fabs(ev.f1 - 200.0 / 3) < 1e-9,
               "%s: acc %g F1 %g", err, ev.test_acc, ev.f1);
        mdl_free(&a);
    }
}

// ---- errors -------------------------------------------------------------------------------------------

static void error_cases(void) {
    TEST_CASE("hyperclean: bad settings and data are one-line errors naming what is wrong") {
        char missing[300], err[512];
        snprintf(missing, sizeof missing, "data=%s/none", hc_dir);
        struct { const char *set[4]; const char *msg; } bad[] = {
            {{"colour=red"}, "unknown setting 'colour'"},
            {{"model=cnn"}, "model: bad value 'cnn'"},
            {{"model=mlp", "act=sigmoid"}, "act: bad value 'sigmoid'"},
            {{"act=tanh"}, "only for model=mlp"},
            {{"model=mlp", "hidden=0"}, "hidden: bad value '0'"},
            {{"corrupt=1.5"}, "corrupt: bad value '1.5'"},
            {{"n_train=0"}, "n_train: bad value '0'"},
            {{"n_train=abc"}, "n_train: bad value 'abc'"},
            {{"l2=-1"}, "l2: bad value '-1'"},
            {{"prior=2"}, "prior: bad value '2'"},
            {{"pretrain_lr=0"}, "pretrain_lr: bad value '0'"},
            {{"seed=-1"}, "seed: bad value '-1'"},
            {{"pixels=floats"}, "pixels: bad value 'floats'"},
            {{missing}, "/none"},
            {{hc_data_set, "n_train=50", "n_val=20"}, "fewer than 50 + 20"},
            {{hc_data_set, "n_train=5", "n_val=5", "n_test=30"}, "fewer than 30"},
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            int n = 0;
            while (n < 4 && bad[i].set[n]) n++;
            mdl_model m;
            err[0] = 0;
            int rc = make_hc(n, bad[i].set, &m, err, sizeof err);
            EXPECT(rc == -1 && has(err, bad[i].msg) && !strchr(err, '\n'), "case %zu: '%s' lacks '%s'", i, err,
                   bad[i].msg);
            if (!rc) mdl_free(&m);
        }
    }
}

// ---- the prior and a sanity run --------------------------------------------------------------------

static void sanity_cases(void) {
    TEST_CASE("hyperclean: prior=1 pretrains z_p by GD on f(0, y), lowering f") {
        const char *set[] = {hc_data_set, "n_train=40", "n_val=10", "n_test=20", "prior=1", "pretrain=20"};
        char err[512];
        mdl_model m;
        int rc = make_hc(6, set, &m, err, sizeof err);
        EXPECT(rc == 0 && m.z_prior, "%s", err);
        if (rc) continue;
        double f0, f1;
        blo_error e;
        EXPECT(blo_eval(&m.prob, 0, m.x0[0], m.y0[0], &f0, NULL, NULL, NULL, &e) == BLO_OK &&
                   blo_eval(&m.prob, 0, m.x0[0], m.z_prior, &f1, NULL, NULL, NULL, &e) == BLO_OK && f1 < f0,
               "f(0, y0) = %g, f(0, z_p) = %g", f0, f1);
        mdl_free(&m);
    }
    TEST_CASE("hyperclean (FashionMNIST, linear): GD on f from y0 lowers F; defaults are sane") {
        char err[512];
        mdl_model m;
        int rc = make_hc(0, NULL, &m, err, sizeof err);
        EXPECT(rc == 0, "%s (the README's first command installs dataset-fashion-mnist)", err);
        if (rc) continue;
        EXPECT(m.prob.n_x == 5000 && m.prob.n_y == 7850 && m.evaluate, "sizes %d %d", m.prob.n_x, m.prob.n_y);
        blo_error e;
        blo_config *c = mdl_paper_config(&mdl_hyperclean_entry, blo_method_find("rhg"), NULL, err, sizeof err);
        char v[64];
        double s_l = c ? atof(blo_config_get(c, "s_l", v, sizeof v)) : 0;
        EXPECT(c && s_l > 0 && blo_config_solve_params(c)->T >= 1, "paper settings: %s", err);
        blo_config_free(c);
        int ny = m.prob.n_y;
        double *y = malloc(sizeof(double) * ny), *g = malloc(sizeof(double) * ny), F0, F1, f;
        memcpy(y, m.y0[0], sizeof(double) * ny);
        ad_tape *t = ad_tape_new(NULL);
        EXPECT(blo_eval(&m.prob, 1, m.x0[0], y, &F0, NULL, NULL, t, &e) == BLO_OK, "%s", e.msg);
        EXPECT(fabs(F0 - log(10.0)) < 1e-12, "F(y0 = 0) = log 10, got %.15g", F0);
        for (int k = 0; k < 10; k++) {
            EXPECT(blo_eval(&m.prob, 0, m.x0[0], y, &f, NULL, g, t, &e) == BLO_OK, "%s", e.msg);
            for (int i = 0; i < ny; i++) y[i] -= s_l * g[i];
        }
        EXPECT(blo_eval(&m.prob, 1, m.x0[0], y, &F1, NULL, NULL, t, &e) == BLO_OK, "%s", e.msg);
        EXPECT(F1 < F0 - 0.1, "10 GD steps with s_l = %g: F %g -> %g", s_l, F0, F1);
        hc_metrics ev;
        EXPECT(eval_hc(&m, m.x0[0], y, &ev, err, sizeof err) == 0 && ev.test_acc > 40,
               "test accuracy after 10 steps %g", ev.test_acc);
        ad_tape_free(t);
        free(y), free(g);
        mdl_free(&m);
    }
}

// ---- the papers' settings: warm starts per method, the AIT script's 2-layer LL -------------------

static void paper_cases(void) {
    TEST_CASE("hyperclean: rhg, trhg, cg, neumann warm-start by default (BOME's code); bda, ait do not") {
        static const struct {
            const char *method;
            const char *warm; // blo_config_get's text of warm_start
        } cases[] = {{"rhg", "1"}, {"trhg", "1"}, {"cg", "1"}, {"neumann", "1"}, {"bda", "0"}, {"ait", "0"}};
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            char err[512], v[64];
            blo_config *c = mdl_paper_config(&mdl_hyperclean_entry, blo_method_find(cases[i].method), NULL, err,
                                             sizeof err);
            const char *w = c ? blo_config_get(c, "warm_start", v, sizeof v) : NULL;
            EXPECT(w && !strcmp(w, cases[i].warm), "%s: warm_start %s, expected %s (%s)", cases[i].method,
                   w ? w : "(none)", cases[i].warm, c ? "" : err);
            blo_config_free(c);
        }
    }
    TEST_CASE("hyperclean: model=mlp hidden=300 act=none is the AIT script's Linear(d, 300) -> Linear(300, 10)") {
        const char *set[] = {hc_data_set, "n_train=20", "n_val=10", "n_test=10", "model=mlp", "hidden=300", "act=none"};
        char err[512];
        mdl_model m;
        int rc = make_hc(7, set, &m, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        int d = 16; // make_synthetic's 4 x 4 images
        EXPECT(m.prob.n_x == 20 && m.prob.n_y == d * 300 + 300 + 300 * 10 + 10, "n_x %d n_y %d", m.prob.n_x,
               m.prob.n_y);
        mdl_free(&m);
    }
}

// f or F and its gradient in (x, y) at (x, y): value, then gx [n_x], gy [n_y] into out.
static int value_and_grad(const mdl_model *m, int upper, const double *x, const double *y, double *out) {
    const blo_problem *p = &m->prob;
    ad_tape *t = ad_tape_new(NULL);
    ad_var wrt[2] = {ad_param(t, ad_vec_shape(p->n_x), x), ad_param(t, ad_vec_shape(p->n_y), y)}, g[2];
    ad_var v = (upper ? p->F : p->f)(t, wrt[0], wrt[1], p->user);
    ad_grad(t, v, 2, wrt, g, 0);
    int ok = ad_tape_status(t) == AD_OK;
    if (ok) {
        out[0] = ad_item(t, v);
        memcpy(out + 1, ad_value(t, g[0]), sizeof(double) * p->n_x);
        memcpy(out + 1 + p->n_x, ad_value(t, g[1]), sizeof(double) * p->n_y);
    }
    ad_tape_free(t);
    return ok ? 0 : -1;
}

// f and F and their gradients of two makings of one model at one random point: values within
// vtol relative, gradients within gtol of the largest entry; returns the test accuracies in acc.
static void expect_agree(const char *label, const mdl_model *m, double vtol, double gtol, double acc[2]) {
    int nx = m[0].prob.n_x, ny = m[0].prob.n_y, n = 1 + nx + ny;
    double *x = malloc(sizeof(double) * nx), *y = malloc(sizeof(double) * ny);
    double *a = malloc(sizeof(double) * n), *b = malloc(sizeof(double) * n);
    random_point(&m[0], 12, x, y);
    for (int upper = 0; upper < 2; upper++) {
        bool ok = !value_and_grad(&m[0], upper, x, y, a) && !value_and_grad(&m[1], upper, x, y, b);
        double worst = 0, big = 0;
        for (int i = 1; ok && i < n; i++) worst = fmax(worst, fabs(a[i] - b[i])), big = fmax(big, fabs(b[i]));
        EXPECT(ok && fabs(a[0] - b[0]) <= vtol * fabs(b[0]) && worst <= gtol * big,
               "%s, %s: values %.17g and %.17g, gradients differ by %g (largest %g)", label, upper ? "F" : "f",
               a[0], b[0], worst, big);
    }
    char err[512];
    hc_metrics ev[2] = {{-1, -1}, {-1, -1}};
    for (int i = 0; i < 2; i++) EXPECT(eval_hc(&m[i], x, y, &ev[i], err, sizeof err) == 0, "%s", err);
    acc[0] = ev[0].test_acc, acc[1] = ev[1].test_acc;
    free(x), free(y), free(a), free(b);
}

// Two makings of the model from two settings lists of n entries; 0 when both are made.
static int make_pair(int n, const char *set[2][8], mdl_model m[2]) {
    char err[512];
    int rc0 = make_hc(n, set[0], &m[0], err, sizeof err), rc1 = rc0 ? -1 : make_hc(n, set[1], &m[1], err, sizeof err);
    EXPECT(!rc0 && !rc1, "%s", err);
    if (!rc0 && rc1) mdl_free(&m[0]);
    return rc0 || rc1 ? -1 : 0;
}

// The linear model on bytes reads its sets with a column of ones and X W from the codes
// transposed (hyperclean.c); on doubles it adds b: the same logits to the bit, so the same f and
// F; the gradients differ at most by the order b's sum takes over blocks of rows.
static void ones_cases(void) {
    TEST_CASE("hyperclean linear: pixels=bytes (a column of ones) = pixels=doubles: f, F, gradients") {
        const int sizes[2] = {200, 1500}; // one block of rows in X^T G, and several
        for (int s = 0; s < 2; s++) {
            char ntr[32], label[48];
            snprintf(ntr, sizeof ntr, "n_train=%d", sizes[s]);
            snprintf(label, sizeof label, "n_train %d", sizes[s]);
            const char *set[2][8] = {{ntr, "n_val=300", "n_test=10", "pixels=bytes"},
                                     {ntr, "n_val=300", "n_test=10", "pixels=doubles"}};
            mdl_model m[2];
            if (make_pair(4, set, m)) continue;
            double acc[2];
            expect_agree(label, m, 0, 1e-14, acc);
            EXPECT(acc[0] == acc[1], "%s: test accuracy %g and %g", label, acc[0], acc[1]);
            mdl_free(&m[0]), mdl_free(&m[1]);
        }
    }
}

// The two-layer model without an activation, folded (logits X (W1 W2), fold=1, the default) and
// as written ((X W1 + b1) W2 + b2, fold=0): one function, rounded in two orders. FashionMNIST
// at the papers' hidden 300, on the bytes (the folded logits through the column of ones) and on
// the doubles (W1 W2 then b1 W2 added).
static void fold_cases(void) {
    TEST_CASE("hyperclean mlp act=none: fold=1 (X (W1 W2)) = fold=0 ((X W1) W2) to rounding: f, F, gradients, "
              "accuracy") {
        const char *pix[2] = {"pixels=bytes", "pixels=doubles"};
        for (int p = 0; p < 2; p++) {
            const char *set[2][8] = {
                {"n_train=1500", "n_val=300", "n_test=500", "model=mlp", "hidden=300", "act=none", pix[p], "fold=1"},
                {"n_train=1500", "n_val=300", "n_test=500", "model=mlp", "hidden=300", "act=none", pix[p], "fold=0"}};
            mdl_model m[2];
            if (make_pair(8, set, m)) continue;
            double acc[2];
            expect_agree(pix[p], m, 1e-14, 2e-14, acc);
            EXPECT(acc[0] == acc[1], "%s: test accuracy %g and %g", pix[p], acc[0], acc[1]);
            mdl_free(&m[0]), mdl_free(&m[1]);
        }
    }
}

// ---- the ReLU MLP's first layer as [X, 1] [W1; b1] --------------------------------------------------

typedef struct {
    const mdl_hc_data *hc;
    int d, h, upper;
} unfused_ctx;

// f or F of the ReLU MLP written as the composition the model had: X W1 + b1 (a broadcast add),
// ReLU as A step(A) (so its reverse rule is mul and step, not relu_mask), then H W2 + b2.
static ad_var unfused_obj(ad_tape *t, const ad_var *in, void *u) {
    const unfused_ctx *c = u;
    const mdl_dataset *set = c->upper ? &c->hc->val : &c->hc->train;
    int d = c->d, h = c->h, o = d * h;
    ad_var y = in[1];
    ad_var W1 = ad_reshape(t, ad_slice(t, y, 0, o), ad_mat_shape(d, h)), b1 = ad_slice(t, y, o, h);
    ad_var W2 = ad_reshape(t, ad_slice(t, y, o + h, h * 10), ad_mat_shape(h, 10));
    ad_var b2 = ad_slice(t, y, o + h + h * 10, 10);
    ad_var X = ad_const_view(t, ad_mat_shape(set->n, d), set->X);
    ad_var A = ad_add(t, ad_matmul(t, X, W1, 0, 0), b1);
    ad_var H = ad_mul(t, A, ad_step(t, A));
    ad_var ce = ad_xent(t, ad_add(t, ad_matmul(t, H, W2, 0, 0), b2), set->y);
    if (c->upper) return ad_mean(t, ce);
    return ad_scale(t, ad_dot(t, ad_sigmoid(t, in[0]), ce), 1.0 / set->n);
}

// Value, gradient in (x, y) and H v in (x, y) of obj at xy = (x, y) [nx + ny] along v into
// out [1 + 2 (nx + ny)].
static int first_second(ad_fn obj, void *ctx, int nx, int ny, const double *pt, const double *v, double *out) {
    ad_tape *t = ad_tape_new(NULL);
    ad_var xy = ad_param(t, ad_vec_shape(nx + ny), pt), in[2], g, hv;
    in[0] = ad_slice(t, xy, 0, nx), in[1] = ad_slice(t, xy, nx, ny);
    ad_var f = obj(t, in, ctx);
    ad_grad(t, f, 1, &xy, &g, AD_CREATE_GRAPH);
    ad_hvp(t, f, xy, ad_const(t, ad_vec_shape(nx + ny), v), &hv, 0);
    int ok = ad_tape_status(t) == AD_OK;
    if (ok) {
        out[0] = ad_item(t, f);
        memcpy(out + 1, ad_value(t, g), sizeof(double) * (nx + ny));
        memcpy(out + 1 + nx + ny, ad_value(t, hv), sizeof(double) * (nx + ny));
    }
    ad_tape_free(t);
    return ok ? 0 : -1;
}

static ad_var model_obj(ad_tape *t, const ad_var *in, void *u) { return obj_xy(t, in, u); }

// f (upper 0) or F, its gradient and H v [1 + 2 nxy] computed two ways, a and b (first_second),
// agree to 1e-14 of the value and of the largest entry of the gradient and of H v.
static void expect_first_second_close(bool ok, int upper, int nxy, const double *a, const double *b) {
    double wg = 0, bg = 0, wh = 0, bh = 0;
    for (int i = 1; ok && i <= nxy; i++) wg = fmax(wg, fabs(a[i] - b[i])), bg = fmax(bg, fabs(b[i]));
    for (int i = 1 + nxy; ok && i <= 2 * nxy; i++) wh = fmax(wh, fabs(a[i] - b[i])), bh = fmax(bh, fabs(b[i]));
    EXPECT(ok && fabs(a[0] - b[0]) <= 1e-14 * fabs(b[0]) && wg <= 1e-14 * bg && wh <= 1e-14 * bh,
           "%s: values %.17g and %.17g, gradients differ by %g (largest %g), H v by %g (largest %g)",
           upper ? "F" : "f", a[0], b[0], wg, bg, wh, bh);
}

static void relu_ones_cases(void) {
    TEST_CASE("hyperclean mlp act=relu: [X, 1] [W1; b1] = X W1 + b1, ReLU's mask = mul(g, step): f, F, "
              "gradients, H v") {
        mdl_hc_params p = mdl_hc_default_params();
        p.n_train = 300, p.n_val = 200, p.n_test = 10;
        const char *set[] = {"n_train=300", "n_val=200", "n_test=10", "model=mlp", "hidden=40"};
        char err[512];
        mdl_model m;
        mdl_hc_data hc;
        int rc = make_hc(5, set, &m, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        rc = mdl_hc_load(MDL_FASHION_MNIST_DIR, &p, &hc, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) {
            mdl_free(&m);
            continue;
        }
        int nx = m.prob.n_x, ny = m.prob.n_y, n = 1 + 2 * (nx + ny);
        double *xy = malloc(sizeof(double) * (nx + ny)), *x = xy, *v = malloc(sizeof(double) * (nx + ny));
        double *a = malloc(sizeof(double) * n), *b = malloc(sizeof(double) * n);
        random_point(&m, 21, x, xy + nx);
        ad_rng g;
        ad_rng_seed(&g, 22);
        for (int i = 0; i < nx + ny; i++) v[i] = ad_rng_normal(&g);
        for (int upper = 0; upper < 2; upper++) {
            obj_ctx mc = {&m, upper, x};
            unfused_ctx uc = {&hc, hc.train.d, 40, upper};
            bool ok = !first_second(model_obj, &mc, nx, ny, xy, v, a) && !first_second(unfused_obj, &uc, nx, ny, xy, v, b);
            // rounding only: b1 is added inside dgemm's sums instead of after them (measured: the
            // same values, gradients within 2.2e-16 of the largest entry, H v within 3e-16)
            expect_first_second_close(ok, upper, nx + ny, a, b);
        }
        free(xy), free(v), free(a), free(b);
        mdl_hc_free(&hc);
        mdl_free(&m);
    }
}

// The first layer's products skipping the pixels' zeros (sparse=1, the default: the ordered fma
// loop's bits) against cblas on the doubles (sparse=0): the same f, F, gradients and H v to
// rounding (each sum of 785 products in another order: measured within 1e-15 of the largest).
// Pairs of models that must agree to rounding: the products that skip zero pixels (sparse=1 for
// the ReLU MLP's wide ones, strips=1 for the 10-wide ones of the linear and folded models; the
// ordered loop's bits) against the same model on cblas or the thin kernel.
static const struct {
    const char *name, *on, *off, *model;
} zero_skip[] = {
    {"mlp act=relu, sparse", "sparse=1", "sparse=0", "model=mlp"},
    {"linear, strips", "strips=1", "strips=0", "model=linear"},
    {"mlp act=none (folded), strips", "strips=1", "strips=0", "act=none"},
};

static void sparse_cases(void) {
    TEST_CASE("hyperclean: zeros skipped (sparse=1, strips=1) = not skipped to rounding: f, F, gradients, H v") {
      for (size_t z = 0; z < sizeof zero_skip / sizeof *zero_skip; z++) {
        const char *set[2][7] = {{"n_train=300", "n_val=200", "n_test=10", "model=mlp", "hidden=40", zero_skip[z].model, zero_skip[z].on},
                                 {"n_train=300", "n_val=200", "n_test=10", "model=mlp", "hidden=40", zero_skip[z].model, zero_skip[z].off}};
        char err[512];
        mdl_model m[2];
        int rc0 = make_hc(7, set[0], &m[0], err, sizeof err), rc1 = rc0 ? -1 : make_hc(7, set[1], &m[1], err, sizeof err);
        EXPECT(!rc0 && !rc1, "%s: %s", zero_skip[z].name, err);
        if (rc0 || rc1) {
            if (!rc0) mdl_free(&m[0]);
            continue;
        }
        int nx = m[0].prob.n_x, ny = m[0].prob.n_y, n = 1 + 2 * (nx + ny);
        double *xy = malloc(sizeof(double) * (nx + ny)), *v = malloc(sizeof(double) * (nx + ny));
        double *a = malloc(sizeof(double) * n), *b = malloc(sizeof(double) * n);
        random_point(&m[0], 23, xy, xy + nx);
        ad_rng g;
        ad_rng_seed(&g, 24);
        for (int i = 0; i < nx + ny; i++) v[i] = ad_rng_normal(&g);
        for (int upper = 0; upper < 2; upper++) {
            obj_ctx c0 = {&m[0], upper, xy}, c1 = {&m[1], upper, xy};
            bool ok = !first_second(model_obj, &c0, nx, ny, xy, v, a) && !first_second(model_obj, &c1, nx, ny, xy, v, b);
            expect_first_second_close(ok, upper, nx + ny, a, b);
        }
        free(xy), free(v), free(a), free(b);
        mdl_free(&m[0]), mdl_free(&m[1]);
      }
    }
}

// The [n, h] passes (relu, relu_mask, adds) split over the tape's threads (ops_elem.c): the RHG
// hypergradient of the ReLU MLP with [1000, 300] activations has the same bits on 1, 2 and 3.
static void thread_cases(void) {
    TEST_CASE("hyperclean mlp act=relu: RHG hypergradient bits on 1, 2 and 3 tape threads") {
        const char *set[] = {"n_train=1000", "n_val=200", "n_test=10", "model=mlp", "hidden=300"};
        char err[512];
        mdl_model m;
        int rc = make_hc(5, set, &m, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        int nx = m.prob.n_x;
        double *g = malloc(sizeof(double) * 3 * nx), *x = malloc(sizeof(double) * nx);
        for (int i = 0; i < nx; i++) x[i] = 0.1 * (i % 7) - 0.3;
        blo_dynamics dyn = blo_dynamics_gd(m.prob.n_y, (blo_gd_params){.s_l = 0.3});
        for (int th = 1; th <= 3; th++) {
            ad_tape_params tp = ad_tape_default_params();
            tp.threads = th;
            blo_hypergrad_params hp = blo_hypergrad_default_params();
            hp.K = 2, hp.tape = ad_tape_new(&tp);
            blo_error e;
            EXPECT(blo_hypergrad(&m.prob, &dyn, &hp, x, m.y0[0], g + (th - 1) * nx, NULL, NULL, NULL, &e) == BLO_OK,
                   "%d threads: %s", th, e.msg);
            ad_tape_free(hp.tape);
        }
        EXPECT(!memcmp(g, g + nx, sizeof(double) * nx) && !memcmp(g, g + 2 * nx, sizeof(double) * nx),
               "the hypergradient's bits depend on the thread count");
        free(g), free(x);
        mdl_free(&m);
    }
}

void test_models_hyperclean(void) {
    snprintf(hc_dir, sizeof hc_dir, "/tmp/hypertape-hc-XXXXXX");
    if (!mkdtemp(hc_dir) || make_synthetic(hc_dir, 4) || snprintf(hc_dir1, sizeof hc_dir1, "%s/one", hc_dir) < 0 ||
        mkdir(hc_dir1, 0700) || make_synthetic(hc_dir1, 1)) {
        TEST_CASE("hyperclean: a synthetic data folder") EXPECT(0, "cannot write %s", hc_dir);
        return;
    }
    snprintf(hc_data_set, sizeof hc_data_set, "data=%s", hc_dir);
    snprintf(hc_data1_set, sizeof hc_data1_set, "data=%s", hc_dir1);
    gradient_cases();
    evaluate_cases();
    error_cases();
    sanity_cases();
    paper_cases();
    ones_cases();
    fold_cases();
    relu_ones_cases();
    sparse_cases();
    thread_cases();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", hc_dir);
    if (system(cmd)) fprintf(stderr, "could not remove %s\n", hc_dir);
}
