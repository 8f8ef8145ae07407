// The fewshot model's metrics on a tiny representation (FashionMNIST): the pretrained baseline is
// the same bits twice and is where from_baseline starts (its metrics are then the start's), a
// learned head start z is used (and one of another size is not), and bad settings fail with one
// line. The MLP's batch hypergradient is checked in test_bilevel_tasks.c; ConvNet-4's
// (backbone=convnet4) here, with its size and start.
#include "harness.h"
#include "tests.h"

#include "models.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { ACC, ACC_CI, VAL, VAL_CI, BASE, BASE_CI, BASE_VAL, BASE_VAL_CI };

#define SMALL "ways=2 shots=2 query=3 hidden=3 batch=2 test_tasks=6 val_tasks=5 test_steps=4 pretrain_iters=15 baseline_lr=0"

static int make(const char *set, mdl_model *m) {
    char err[256];
    int rc = mdl_make_named("fewshot", set, m, err, sizeof err);
    EXPECT(rc == 0, "fewshot %s: %s", set, err);
    return rc;
}

// The baseline's pretraining twice (two models, and twice in one model's metrics) gives the same
// bits; it moved the representation; from_baseline starts there, so the start's metrics are the
// baseline's.
static void baseline_same_bits(void) {
    mdl_model a, b, c;
    char err[256];
    if (make(SMALL, &a)) return;
    if (make(SMALL " from_baseline=1", &b)) {
        mdl_free(&a);
        return;
    }
    if (make(SMALL " from_baseline=1", &c)) {
        mdl_free(&a), mdl_free(&b);
        return;
    }
    size_t nx = (size_t)a.prob.n_x;
    EXPECT(!memcmp(b.x0[0], c.x0[0], nx * sizeof(double)), "two pretrainings differ");
    EXPECT(memcmp(a.x0[0], b.x0[0], nx * sizeof(double)), "pretraining did not move the representation");
    double v[3][MDL_METRICS_MAX];
    EXPECT(a.evaluate_z(&a, a.x0[0], NULL, 0, v[0], err, sizeof err) == 0, "%s", err);
    EXPECT(a.evaluate_z(&a, a.x0[0], NULL, 0, v[1], err, sizeof err) == 0, "%s", err);
    EXPECT(b.evaluate_z(&b, b.x0[0], NULL, 0, v[2], err, sizeof err) == 0, "%s", err);
    EXPECT(!memcmp(v[0], v[1], sizeof v[0]), "the metrics differ on the second evaluation");
    for (int k = 0; k < 8; k++) EXPECT(isfinite(v[0][k]) && v[0][k] >= 0 && v[0][k] <= 100, "metric %d = %g", k, v[0][k]);
    for (int k = BASE; k <= BASE_VAL_CI; k++)
        EXPECT(v[0][k] == v[2][k], "metric %d: %g pretrained in evaluate, %g in make", k, v[0][k], v[2][k]);
    for (int k = ACC; k <= VAL_CI; k++)
        EXPECT(v[2][k] == v[2][k + BASE], "from_baseline: metric %d %g at the start, %g the baseline's", k,
               v[2][k], v[2][k + BASE]);
    mdl_free(&a), mdl_free(&b), mdl_free(&c);
}

// A head start z of n_y is where the held-out heads start: z = 0 is the default start, a bias of
// 1e3 on label 0 with no adaptation step answers 0 everywhere (half the queries of a 2-way task),
// and a z of another size (a method's other auxiliary) is ignored.
static void head_start(void) {
    mdl_model m;
    char err[256];
    if (make(SMALL " pretrain_iters=0 test_steps=0", &m)) return;
    int ny = m.prob.n_y;
    double *z = calloc((size_t)ny + 1, sizeof(double)), v[4][MDL_METRICS_MAX];
    if (!z) {
        mdl_free(&m);
        return;
    }
    EXPECT(m.evaluate_z(&m, m.x0[0], NULL, 0, v[0], err, sizeof err) == 0, "%s", err);
    EXPECT(m.evaluate_z(&m, m.x0[0], z, ny, v[1], err, sizeof err) == 0, "%s", err);
    z[ny - 2] = 1e3; // the head is (W [H, 2], b [2]): b_0
    EXPECT(m.evaluate_z(&m, m.x0[0], z, ny, v[2], err, sizeof err) == 0, "%s", err);
    EXPECT(m.evaluate_z(&m, m.x0[0], z, ny + 1, v[3], err, sizeof err) == 0, "%s", err);
    EXPECT(v[0][ACC] == v[1][ACC] && v[0][VAL] == v[1][VAL], "z = 0: %g, no z: %g", v[1][ACC], v[0][ACC]);
    EXPECT(v[2][ACC] == 50 && v[2][ACC_CI] == 0 && v[2][VAL] == 50, "a bias of 1e3: %g +- %g (val %g)",
           v[2][ACC], v[2][ACC_CI], v[2][VAL]);
    EXPECT(v[3][ACC] == v[0][ACC], "a z of n_y + 1 was used: %g, %g", v[3][ACC], v[0][ACC]);
    z[0] = NAN;
    EXPECT(m.evaluate_z(&m, m.x0[0], z, ny, v[1], err, sizeof err) != 0 && strstr(err, "not finite"), "%s", err);
    free(z);
    mdl_free(&m);
}

static void bad_settings(void) {
    static const struct {
        const char *set, *says;
    } rows[] = {
        {"ways=4 val_classes=3", "leaves 3 meta-training classes"},
        {"from_baseline=1 pretrain_iters=0", "needs pretrain_iters > 0"},
        {"val_classes=4", "val_classes"},
        {"from_baseline=2", "from_baseline"},
        {"baseline_lr=-1", "baseline_lr"},
        {"pretrain_lr=0", "pretrain_lr"},
        {"pretrain_batch=0", "pretrain_batch"},
        {"backbone=resnet", "backbone"},
        {"filters=0", "filters"},
        {"backbone=convnet4 filters=513", "filters"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        mdl_model m;
        char err[256] = "";
        int rc = mdl_make_named("fewshot", rows[i].set, &m, err, sizeof err);
        EXPECT(rc != 0 && strstr(err, rows[i].says) && !strchr(err, '\n'), "%s: rc %d, '%s'", rows[i].set, rc, err);
        if (rc == 0) mdl_free(&m);
    }
}

// ConvNet-4 with 4 filters on a batch of 2 small tasks: x's size (per block kernels [4, c_in*9],
// scales and shifts [8]) and start (He-normal kernels, scales 1, shifts 0), rhg's batch
// hypergradient in every entry of x against central differences, and metrics in range.
static void convnet4_hypergrad(void) {
    enum { C = 4 };
    mdl_model m;
    char err[256];
    if (make("backbone=convnet4 filters=4 ways=2 shots=2 query=3 batch=2 test_tasks=4 val_tasks=3 test_steps=3 "
             "pretrain_iters=0", &m))
        return;
    int nx = 9 * C + 2 * C + 3 * (9 * C * C + 2 * C);
    EXPECT(m.prob.n_x == nx && m.prob.n_y == 2 * C + 2, "n_x = %d (not %d), n_y = %d", m.prob.n_x, nx, m.prob.n_y);
    const double *x = m.x0[0];
    double ss = 0; // the kernels of blocks 2-4: variance 2 / (9 C)
    for (int b = 0, at = 0, fan = 9; b < 4 && m.prob.n_x == nx; b++, fan = 9 * C) {
        for (int i = 0; i < C * fan; i++) ss += b ? x[at + i] * x[at + i] : 0;
        at += C * fan;
        for (int i = 0; i < 2 * C; i++)
            EXPECT(x[at + i] == (i < C), "block %d: scale/shift %d starts at %g", b, i, x[at + i]);
        at += 2 * C;
    }
    ss /= 3.0 * 9 * C * C;
    EXPECT(fabs(ss * 9 * C / 2 - 1) < 0.25, "kernels' mean square %g, He's %g", ss, 2.0 / (9 * C));
    blo_error e;
    blo_config *c = blo_config_new(blo_method_find("rhg"), &e);
    EXPECT(c && blo_config_apply(c, "ll_iters=3 s_l=0.5", &e) == BLO_OK, "rhg: %s", e.msg);
    blo_check_params cp = blo_check_default_params();
    cp.max_coords = 0;
    blo_check_report r = blo_check_hypergrad(&m.prob, c, m.x0[0], m.y0[0], NULL, &cp);
    EXPECT(r.status == BLO_OK && r.pass && r.checked == nx, "%s", r.msg);
    double v[MDL_METRICS_MAX];
    EXPECT(m.evaluate_z(&m, m.x0[0], NULL, 0, v, err, sizeof err) == 0, "%s", err);
    for (int k = ACC; k <= VAL_CI; k++) EXPECT(isfinite(v[k]) && v[k] >= 0 && v[k] <= 100, "metric %d = %g", k, v[k]);
    blo_config_free(c);
    mdl_free(&m);
}

void test_models_fewshot(void) {
    TEST_CASE("fewshot: the pretrained baseline is the same bits twice") baseline_same_bits();
    TEST_CASE("fewshot: the held-out heads start at a learned z") head_start();
    TEST_CASE("fewshot: bad settings are one-line errors") bad_settings();
    TEST_CASE("fewshot: ConvNet-4's batch hypergradient against central differences") convnet4_hypergrad();
}
