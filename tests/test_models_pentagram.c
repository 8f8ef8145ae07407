// The experiments of AIT Sec. 6.3: the pentagram GAN (models/pentagram.c): its metrics on
// generators whose samples are known (every sample at one point: modes, JS and the Frechet
// distance worked out here from the real samples the model writes, independently of its code),
// the data's construction (ten centres, the real samples near them), the hypergradient of G
// through D's steps against central differences for both losses, the alternating method's
// direction, and bad settings; the architecture search (models/nas.c) on the installed
// FashionMNIST: its hypergradient by central differences, the derived architecture's parameter
// count by hand, retraining that learns.
#include "harness.h"
#include "tests.h"

#include "../models/models.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int make_pg(const char *settings, mdl_model *m) {
    char err[256] = "";
    int rc = mdl_make_named("pentagram", settings, m, err, sizeof err);
    EXPECT(rc == 0, "pentagram %s: %s", settings, err);
    return rc;
}

// The real samples the model writes after its generated ones (the second block of FILE).
static int read_real(const char *path, double *real, int n) {
    FILE *f = fopen(path, "r");
    char line[128];
    int block = 0, k = 0;
    while (f && fgets(line, sizeof line, f) && k < n) {
        if (!strncmp(line, "# real", 6)) block = 1;
        else if (block && sscanf(line, "%lf %lf", &real[2 * k], &real[2 * k + 1]) == 2) k++;
    }
    if (f) fclose(f);
    return k;
}

// x with G's output layer zero except its bias: every generated sample is (px, py).
static void constant_generator(const mdl_model *m, double px, double py, double *x) {
    memset(x, 0, sizeof(double) * (size_t)m->prob.n_x);
    x[m->prob.n_x - 2] = px, x[m->prob.n_x - 1] = py;
}

static void metrics_cases(void) {
    TEST_CASE("pentagram: modes, JS and FD of a generator with every sample at one point, by hand") {
        mdl_model m;
        char path[] = "/tmp/hypertape-pg-XXXXXX", set[160], err[256];
        int fd = mkstemp(path);
        EXPECT(fd >= 0, "mkstemp");
        if (fd < 0) continue;
        close(fd);
        snprintf(set, sizeof set, "n=20 n_eval=400 g_hidden=3 d_hidden=3 samples=%s", path);
        if (make_pg(set, &m)) continue;
        enum { N = 400 };
        double *x = malloc(sizeof(double) * m.prob.n_x), real[2 * N], v[MDL_METRICS_MAX];
        const double pi = 3.14159265358979323846, cx = 8 * cos(pi / 2), cy = 8 * sin(pi / 2);
        struct {
            double px, py;
            int modes;
        } cases[] = {{cx, cy, 1}, {0, 0, 0}, {cx + 0.59, cy, 1}, {cx + 0.61, cy, 0}, {30, 30, 0}};
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            constant_generator(&m, cases[c].px, cases[c].py, x);
            int rc = m.evaluate(&m, x, m.y0[0], v, err, sizeof err);
            EXPECT(rc == 0, "%s", err);
            if (rc || read_real(path, real, N) != N) continue;
            EXPECT(v[0] == cases[c].modes, "(%g, %g): %g modes, expected %d", cases[c].px, cases[c].py, v[0],
                   cases[c].modes);
            // FD: the generated Gaussian is the point p with no spread
            double mx = 0, my = 0, sxx = 0, syy = 0;
            for (int i = 0; i < N; i++) mx += real[2 * i] / N, my += real[2 * i + 1] / N;
            for (int i = 0; i < N; i++)
                sxx += (real[2 * i] - mx) * (real[2 * i] - mx) / N, syy += (real[2 * i + 1] - my) * (real[2 * i + 1] - my) / N;
            double fd_hand = (cases[c].px - mx) * (cases[c].px - mx) + (cases[c].py - my) * (cases[c].py - my) + sxx + syy;
            EXPECT(fabs(v[2] - fd_hand) <= 1e-4 * fd_hand, "FD %.8g, by hand %.8g", v[2], fd_hand); // 6 digits written
            // JS: all generated mass in p's cell (or outside the grid)
            int inside = fabs(cases[c].px) < 10 && fabs(cases[c].py) < 10;
            int pc = inside ? (int)floor((cases[c].px + 10) / 0.5) * 40 + (int)floor((cases[c].py + 10) / 0.5) : 1600;
            double q_in_pc = 0, js = 0;
            double *Q = calloc(1601, sizeof(double));
            for (int i = 0; i < N; i++) {
                double a = real[2 * i], b = real[2 * i + 1];
                int k = fabs(a) < 10 && fabs(b) < 10 ? (int)floor((a + 10) / 0.5) * 40 + (int)floor((b + 10) / 0.5) : 1600;
                Q[k] += 1.0 / N;
            }
            q_in_pc = Q[pc];
            for (int k = 0; k < 1601; k++) {
                double P = k == pc, M = 0.5 * (P + Q[k]);
                if (P > 0) js += 0.5 * P * log(P / M);
                if (Q[k] > 0) js += 0.5 * Q[k] * log(Q[k] / M);
            }
            free(Q);
            EXPECT(fabs(v[1] - js) < 1e-3, "JS %.6g, by hand %.6g (the real mass in its cell %g)", v[1], js, q_in_pc);
            EXPECT(v[1] > 0.5 && v[1] <= log(2) + 1e-12, "one point against ten modes: JS %g near ln 2", v[1]);
        }
        free(x);
        mdl_free(&m);
        remove(path);
    }
    TEST_CASE("pentagram: the real samples lie near ten centres on radii 8 and 8 cos72 / cos36") {
        mdl_model m;
        char path[] = "/tmp/hypertape-pg-XXXXXX", set[160], err[256];
        int fd = mkstemp(path);
        if (fd < 0) continue;
        close(fd);
        snprintf(set, sizeof set, "n=20 n_eval=2000 g_hidden=2 d_hidden=2 sigma=0.1 samples=%s", path);
        if (make_pg(set, &m)) continue;
        enum { N = 2000 };
        double *x = calloc(m.prob.n_x, sizeof(double)), *real = malloc(sizeof(double) * 2 * N), v[MDL_METRICS_MAX];
        EXPECT(m.evaluate(&m, x, m.y0[0], v, err, sizeof err) == 0 && read_real(path, real, N) == N, "%s", err);
        const double pi = 3.14159265358979323846, r_in = 8 * cos(72 * pi / 180) / cos(36 * pi / 180);
        int near[10] = {0}, far = 0;
        for (int i = 0; i < N; i++) {
            int hit = -1;
            for (int j = 0; j < 10; j++) {
                double r = j % 2 ? r_in : 8, a = (j % 2 ? 126 + 72 * (j / 2) : 90 + 72 * (j / 2)) * pi / 180;
                double dx = real[2 * i] - r * cos(a), dy = real[2 * i + 1] - r * sin(a);
                if (dx * dx + dy * dy < 0.3 * 0.3) hit = j; // 3 sigma
            }
            if (hit < 0) far++;
            else near[hit]++;
        }
        EXPECT(far < N / 100, "%d of %d samples farther than 3 sigma from every centre", far, N);
        for (int j = 0; j < 10; j++) EXPECT(near[j] > N / 20, "centre %d has %d samples", j, near[j]);
        free(x), free(real);
        mdl_free(&m);
        remove(path);
    }
}

static void gradient_cases(void) {
    TEST_CASE("pentagram: G's hypergradient through D's steps (rhg) against central differences, both losses") {
        const char *sets[] = {"n=16 noise_dim=2 g_hidden=3 d_hidden=3", "n=16 noise_dim=2 g_hidden=3 d_hidden=3 loss=wgan clip=0.3"};
        for (int s = 0; s < 2; s++) {
            mdl_model m;
            if (make_pg(sets[s], &m)) continue;
            blo_error e;
            blo_config *c = blo_config_new(blo_method_find("rhg"), &e);
            EXPECT(c && blo_config_apply(c, "ll_iters=4 s_l=0.3", &e) == BLO_OK, "%s", e.msg);
            blo_check_params cp = blo_check_default_params();
            blo_check_report r = blo_check_hypergrad(&m.prob, c, m.x0[0], m.y0[0], NULL, &cp);
            EXPECT(r.status == BLO_OK && r.pass, "%s: %s", sets[s], r.msg);
            blo_config_free(c);
            mdl_free(&m);
        }
    }
    TEST_CASE("alto: K warm-started LL steps, then grad_x F at y_K (by hand: GD on f, then blo_eval)") {
        mdl_model m;
        if (make_pg("n=16 noise_dim=2 g_hidden=3 d_hidden=3", &m)) continue;
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("alto"), &e);
        EXPECT(c && blo_config_apply(c, "ll_iters=2 s_l=0.3 ul_iters=2 optimizer=plain lr_x=0.05", &e) == BLO_OK, "%s", e.msg);
        blo_solver *s = c ? blo_solver_new(&m.prob, c, m.x0[0], m.y0[0], NULL, &e) : NULL;
        EXPECT(s, "%s", e.msg);
        int nx = m.prob.n_x, ny = m.prob.n_y;
        double *x = malloc(sizeof(double) * nx), *y = malloc(sizeof(double) * ny), *g = malloc(sizeof(double) * ny);
        double *gx = malloc(sizeof(double) * nx);
        memcpy(x, m.x0[0], sizeof(double) * nx), memcpy(y, m.y0[0], sizeof(double) * ny);
        for (int t = 0; t < 2 && s; t++) { // the same loop written out: 2 GD steps on f from the last y
            for (int k = 0; k < 2; k++) {
                blo_eval(&m.prob, 0, x, y, NULL, NULL, g, NULL, &e);
                for (int i = 0; i < ny; i++) y[i] -= 0.3 * g[i];
            }
            blo_eval(&m.prob, 1, x, y, NULL, gx, NULL, NULL, &e);
            for (int i = 0; i < nx; i++) x[i] -= 0.05 * gx[i];
            EXPECT(blo_solver_step(s) == BLO_OK, "%s", blo_solver_error(s));
        }
        double worst = 0;
        for (int i = 0; s && i < nx; i++) worst = fmax(worst, fabs(blo_solver_x(s)[i] - x[i]));
        EXPECT(s && worst == 0, "alto's x differs from the loop by hand by %g", worst);
        free(x), free(y), free(g), free(gx);
        blo_solver_free(s);
        blo_config_free(c);
        mdl_free(&m);
    }
    TEST_CASE("pentagram: each Table 6 method's documented settings are its paper configuration (README)") {
        // what `hypertape run pentagram --method M` runs; the README's table quotes these
        const struct {
            const char *method, *name, *value;
        } cases[] = {
            {"alto", "ll_iters", "1"},      {"alto", "s_l", "0.3"},        {"alto", "ul_iters", "2000"},
            {"alto", "lr_x", "0.003"},      {"rhg", "ll_iters", "5"},      {"rhg", "warm_start", "1"},
            {"rhg", "s_l", "0.1"},          {"rhg", "warm_steps", "1"},    {"rhg", "ul_iters", "8000"},    {"ait", "warm_steps", "1"},
            {"ait", "ll_iters", "5"},       {"ait", "ptt", "1"},
            {"ait", "ia", "0"},             {"ait", "warm_start", "1"},    {"ait", "s_l", "0.1"},
            {"ait", "optimizer", "adam"},   {"ait", "lr_x", "0.003"},      {"ait", "ul_iters", "10000"},
        };
        for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
            char err[300] = "", v[64] = "";
            blo_config *c = mdl_paper_config(&mdl_pentagram_entry, blo_method_find(cases[k].method), NULL, err,
                                             sizeof err);
            EXPECT(c && blo_config_get(c, cases[k].name, v, sizeof v) && !strcmp(v, cases[k].value),
                   "%s: %s = %s, documented %s (%s)", cases[k].method, cases[k].name, v, cases[k].value, err);
            blo_config_free(c);
        }
    }
    TEST_CASE("pentagram: bad settings are errors naming them") {
        const char *bad[][2] = {{"loss=lsgan", "loss"}, {"sigma=0", "sigma"}, {"n=3", "n"}, {"clip=-1", "clip"}};
        for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
            mdl_model m;
            char err[256] = "";
            EXPECT(mdl_make_named("pentagram", bad[k][0], &m, err, sizeof err) == -1 && strstr(err, bad[k][1]),
                   "%s: %s", bad[k][0], err);
        }
    }
}

static void nas_cases(void) {
    const char *small = "n_train=30 n_val=20 n_test=50 hidden=3 cells=1 retrain=0";
    TEST_CASE("nas: the hypergradient of alpha through the weights' steps (rhg) against central differences") {
        mdl_model m;
        char err[256] = "";
        int rc = mdl_make_named("nas", small, &m, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        EXPECT(m.prob.n_x == 15 && m.prob.n_y == 784 * 3 + 3 + 3 * 3 * 12 + 3 * 10 + 10, "sizes %d %d", m.prob.n_x,
               m.prob.n_y);
        blo_error e;
        blo_config *c = blo_config_new(blo_method_find("rhg"), &e);
        EXPECT(c && blo_config_apply(c, "ll_iters=3 s_l=0.3", &e) == BLO_OK, "%s", e.msg);
        double *x = malloc(sizeof(double) * m.prob.n_x);
        for (int i = 0; i < m.prob.n_x; i++) x[i] = 0.3 * sin(1.7 * i); // away from the tie alpha = 0
        blo_check_params cp = blo_check_default_params();
        blo_check_report r = blo_check_hypergrad(&m.prob, c, x, m.y0[0], NULL, &cp);
        EXPECT(r.status == BLO_OK && r.pass, "%s", r.msg);
        free(x);
        blo_config_free(c);
        mdl_free(&m);
    }
    TEST_CASE("nas: the derived architecture's parameters by hand; retraining it learns") {
        mdl_model m;
        char err[256] = "";
        int rc = mdl_make_named("nas", "n_train=200 n_val=20 n_test=200 hidden=16 cells=1 retrain=0", &m, err, sizeof err);
        EXPECT(rc == 0, "%s", err);
        if (rc) continue;
        // edges: zero strongest (ignored: identity next), relu, sigmoid; h = 16
        double x[15] = {9, 1, 0, 0, 0, /**/ 0, 0, 3, 0, 0, /**/ 0, 0, 0, 0, 2}, v[MDL_METRICS_MAX];
        EXPECT(m.evaluate(&m, x, m.y0[0], v, err, sizeof err) == 0, "%s", err);
        double params = 784 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 10 + 10;
        EXPECT(v[3] == params, "params %g, by hand %g", v[3], params);
        double untrained = v[2];
        mdl_free(&m);
        rc = mdl_make_named("nas", "n_train=200 n_val=20 n_test=200 hidden=16 cells=1 retrain=100", &m, err, sizeof err);
        EXPECT(rc == 0 && m.evaluate(&m, x, m.y0[0], v, err, sizeof err) == 0, "%s", err);
        EXPECT(v[2] > untrained + 20, "test accuracy %g after 100 retraining steps, %g before", v[2], untrained);
        mdl_free(&m);
    }
    TEST_CASE("nas: an all-identity architecture (two cells: 9 relu(stem)) retrains at the default step") {
        // the search's common end (DARTS prefers parameter-free operations); at the old Adam step
        // 1e-2 every ReLU of the stem died in the first steps and the test accuracy stayed at 10%
        mdl_model m;
        char err[256] = "";
        double x[30], v[MDL_METRICS_MAX], before = 0;
        for (int i = 0; i < 30; i++) x[i] = i % 5 == 1; // identity strongest on every edge
        for (int r = 0; r <= 100; r += 100) {
            char set[160];
            snprintf(set, sizeof set, "n_train=200 n_val=20 n_test=200 hidden=8 cells=2 retrain=%d", r);
            int rc = mdl_make_named("nas", set, &m, err, sizeof err);
            EXPECT(rc == 0 && m.evaluate(&m, x, m.y0[0], v, err, sizeof err) == 0, "%s", err);
            if (rc) break;
            EXPECT(v[3] == 784 * 8 + 8 + 8 * 10 + 10, "params %g: no linear edge", v[3]);
            if (r == 0) before = v[2];
            else EXPECT(v[2] > before + 20, "test accuracy %g after 100 retraining steps, %g before", v[2], before);
            mdl_free(&m);
        }
    }
}

void test_models_pentagram(void) {
    metrics_cases();
    gradient_cases();
    nas_cases();
}
