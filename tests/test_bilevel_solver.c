// The open library: settings tables (every row parses back what it formats, bad values are
// errors), configurations, the solver (records, the final record, stopping from the callback, a
// method a user writes, the NaN stop), its state file (a resumed run ends with the same bits,
// mismatches are errors), the dynamics read_y default, and blo_check_hypergrad on problems
// written here.
#include "harness.h"
#include "tests.h"

#include "../bilevel/blo_extra.h"
#include "../models/models.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

// ---- a small problem with curvature in every term: x [2], y [3] ----
// F = 1/2 ||y - b||^2 + 0.1 sum sin(x) + 0.2 <tanh(y), C x>, f = 1/2 y^T A y - <y, B x> + 0.3 sum sin(y + D x)
// with A = 2 I + 0.2 ones (so f is strongly convex in y: its curvature is >= 2 - 0.3).

static const double Bm[6] = {1, -0.5, 0.3, 0.8, -1, 0.2}, Cm[6] = {0.4, 0.1, -0.3, 0.5, 0.2, -0.6},
                    Dm[6] = {0.2, -0.1, 0.1, 0.3, -0.2, 0.1}, bv[3] = {0.5, -1, 2};

static ad_var mv(ad_tape *t, const double *M, ad_var v) {
    return ad_matvec(t, ad_const_view(t, ad_mat_shape(3, 2), M), v, 0);
}

static ad_var sm_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    ad_var r = ad_sub(t, y, ad_const_view(t, ad_vec_shape(3), bv));
    ad_var v = ad_add(t, ad_scale(t, ad_sqnorm(t, r), 0.5), ad_scale(t, ad_sum(t, ad_sin(t, x)), 0.1));
    return ad_add(t, v, ad_scale(t, ad_dot(t, ad_tanh(t, y), mv(t, Cm, x)), 0.2));
}

static ad_var sm_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    ad_var q = ad_add(t, ad_sqnorm(t, y), ad_scale(t, ad_square(t, ad_sum(t, y)), 0.1)); // y^T A y / 1
    ad_var v = ad_sub(t, q, ad_dot(t, y, mv(t, Bm, x)));
    return ad_add(t, v, ad_scale(t, ad_sum(t, ad_sin(t, ad_add(t, y, mv(t, Dm, x)))), 0.3));
}

static blo_problem small_problem(void) { return (blo_problem){.n_x = 2, .n_y = 3, .F = sm_F, .f = sm_f}; }

static blo_config *config(const char *method, const char *settings) {
    blo_error e;
    blo_config *c = blo_config_new(blo_method_find(method), &e);
    EXPECT(c && blo_config_apply(c, settings, &e) == BLO_OK, "%s %s: %s", method, settings, e.msg);
    return c;
}

// ---- settings tables ----------------------------------------------------------------------------------

// Every row of a table formats its default and parses it back to the same bytes; a bad value of
// its type is refused and leaves the field as it was.
static void table_round_trip(const char *owner, const blo_setting *table, const void *defaults, size_t size) {
    unsigned char *a = malloc(size ? size : 1), *b = malloc(size ? size : 1);
    if (size) memcpy(a, defaults, size), memcpy(b, defaults, size);
    for (const blo_setting *r = table; r && r->name; r++) {
        char text[4200];
        blo_error e;
        blo_setting_format(r, a, text, sizeof text);
        memset(b + r->offset, 0x5a, r->type == BLO_SET_DOUBLE ? sizeof(double) : r->type == BLO_SET_STRING ? 1 : sizeof(int));
        EXPECT(blo_setting_parse(r, b, text, &e) == BLO_OK && !memcmp(a, b, size), "%s.%s: '%s' does not read back: %s",
               owner, r->name, text, e.msg);
        const char *bad = r->type == BLO_SET_CHOICE ? "no-such-word" : r->type == BLO_SET_BOOL ? "maybe" : "1e999";
        if (r->type != BLO_SET_STRING)
            EXPECT(blo_setting_parse(r, b, bad, &e) == BLO_EARG && strstr(e.msg, r->name) && !memcmp(a, b, size),
                   "%s.%s accepts '%s'", owner, r->name, bad);
        EXPECT(r->help && *r->help, "%s.%s has no help", owner, r->name);
    }
    EXPECT(blo_settings_check(table, a, owner, NULL) == BLO_OK, "%s: its defaults are out of its bounds", owner);
    free(a), free(b);
}

static void settings_cases(void) {
    TEST_CASE("settings: every table's defaults format and parse back to the same bits; bad values are refused") {
        blo_solve_params sp = blo_solve_default_params();
        table_round_trip("solver", blo_solve_settings, &sp, sizeof sp);
        for (const blo_method_type *const *m = blo_method_registry(); *m; m++)
            table_round_trip((*m)->name, (*m)->settings, (*m)->defaults, (*m)->params_size);
        for (const blo_dynamics_type *const *d = blo_dynamics_registry(); *d; d++)
            table_round_trip((*d)->name, (*d)->settings, (*d)->defaults, (*d)->params_size);
        for (const mdl_entry *const *p = mdl_registry(); *p; p++)
            table_round_trip((*p)->name, (*p)->settings, (*p)->defaults, (*p)->params_size);
    }
    TEST_CASE("settings: a name means one kind of value in every table (the command line relies on it)") {
        const blo_setting *tables[64];
        int n = 0;
        tables[n++] = blo_solve_settings;
        for (const blo_method_type *const *m = blo_method_registry(); *m; m++) tables[n++] = (*m)->settings;
        for (const blo_dynamics_type *const *d = blo_dynamics_registry(); *d; d++) tables[n++] = (*d)->settings;
        for (int i = 0; i < n; i++)
            for (const blo_setting *r = tables[i]; r->name; r++)
                for (int j = 0; j < n; j++) {
                    const blo_setting *o = blo_setting_find(tables[j], r->name);
                    EXPECT(!o || (o->type == BLO_SET_BOOL) == (r->type == BLO_SET_BOOL), "'%s' is a flag in one table only", r->name);
                    EXPECT(strcmp(r->name, "dynamics"), "'dynamics' is the configuration's own setting");
                }
    }
    TEST_CASE("settings: values at and past the bounds, and every kind of bad text") {
        blo_solve_params sp = blo_solve_default_params();
        blo_error e;
        struct {
            const char *name, *value;
            int ok;
        } cases[] = {
            {"ul_iters", "1", 1},          {"ul_iters", "0", 0},         {"ul_iters", "2147483647", 1},
            {"ul_iters", "2147483648", 0}, {"ul_iters", "2e12", 0},      {"ul_iters", "3.5", 0},
            {"ul_iters", "", 0},           {"lr_x", "1e-300", 1},        {"lr_x", "0", 0},
            {"lr_x", "nan", 0},            {"lr_x", "inf", 0},           {"lr_x", "0.1x", 0},
            {"momentum", "0", 1},          {"momentum", "1", 0},         {"momentum", "0.999", 1},
            {"optimizer", "adam", 1},      {"optimizer", "sgd", 0},      {"optimizer", "", 0},
        };
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            const blo_setting *r = blo_setting_find(blo_solve_settings, cases[k].name);
            blo_status st = blo_setting_parse(r, &sp, cases[k].value, &e);
            EXPECT((st == BLO_OK) == cases[k].ok, "%s=%s: %s", cases[k].name, cases[k].value, st ? e.msg : "accepted");
        }
        blo_config *c = config("rhg", "");
        EXPECT(blo_config_apply(c, "ll_iters=5 dynamics=nesterov s_l=0.25", &e) == BLO_OK, "%s", e.msg);
        char v[64];
        EXPECT(!strcmp(blo_config_get(c, "s_l", v, sizeof v), "0.25") && !strcmp(blo_config_get(c, "dynamics", v, sizeof v), "nesterov"),
               "the dynamics is set first, so s_l is nesterov's: %s", v);
        EXPECT(blo_config_apply(c, "ll_iters=5 bogus=1", &e) == BLO_EARG && strstr(e.msg, "bogus"), "%s", e.msg);
        EXPECT(blo_config_apply(c, "ll_iters", &e) == BLO_EARG && strstr(e.msg, "NAME=VALUE"), "%s", e.msg);
        blo_config_free(c);
    }
}

// ---- a method a user writes: the direction x - c (the minimizer of 1/2 ||x - c||^2) ----

typedef struct {
    double c[3];
    int nan_at; // the direction is NaN at this iteration (-1: never)
} target_params;

typedef struct {
    target_params par;
    int ny;
} target_state;

static const target_params target_defaults = {{1, -2, 0.5}, -1};
static const blo_setting target_settings[] = {
    BLO_ROW_INT(target_params, nan_at, "nan_at", -1, 1000000, "t", "a NaN direction at this iteration"),
    BLO_ROW_END,
};

static blo_status target_init(void **state, const blo_method_env *env, int *n_z, double **z0, blo_error *err) {
    target_state *s = malloc(sizeof *s);
    if (!s) return BLO_ENOMEM;
    s->par = *(const target_params *)env->params, s->ny = env->p->n_y;
    *state = s, *n_z = 0;
    (void)z0, (void)err;
    return BLO_OK;
}

static blo_status target_direction(void *state, int t, const double *x, const double *z, double *gx, double *gz,
                                   double *y, blo_record *rec, blo_error *err) {
    const target_state *s = state;
    (void)z, (void)gz, (void)rec, (void)err;
    for (int i = 0; i < 3; i++) gx[i] = t == s->par.nan_at ? NAN : x[i] - s->par.c[i];
    memset(y, 0, sizeof(double) * (size_t)s->ny);
    return BLO_OK;
}

static blo_status target_solution(void *state, const double *x, const double *z, double *y, blo_error *err) {
    const target_state *s = state;
    (void)x, (void)z, (void)err;
    memset(y, 0, sizeof(double) * (size_t)s->ny);
    return BLO_OK;
}

static const blo_method_type target_type = {
    "target", "steps toward c (a test's own method)", 0, BLO_GRAD_NONE, NULL, sizeof(target_params),
    &target_defaults, target_settings, NULL, NULL, target_init, target_direction, target_solution, NULL,
    NULL, NULL, free};

static ad_var zero_obj(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u, (void)x;
    return ad_scale(t, ad_sqnorm(t, y), 0.5);
}

typedef struct {
    int n, finals, stop_at;
    int t[8];
    double F_final;
} rec_log;

static int log_record(const blo_record *r, void *u) {
    rec_log *l = u;
    if (r->final) l->finals++, l->F_final = r->F;
    else if (l->n < 8) l->t[l->n] = r->t;
    l->n += !r->final;
    return !r->final && r->t == l->stop_at;
}

static void user_method_cases(void) {
    blo_problem p = {.n_x = 3, .n_y = 1, .F = zero_obj, .f = zero_obj};
    double hi[3] = {10, 10, 0.2};
    const char *opts[3] = {"optimizer=plain ul_iters=3000 lr_x=0.05", "optimizer=momentum ul_iters=3000 lr_x=0.05",
                           "optimizer=adam ul_iters=3000 lr_x=0.01"};
    for (int o = 0; o < 3; o++) {
        char name[128];
        snprintf(name, sizeof name, "solver: a user's method type with %s steps reaches its minimizer, projected", opts[o]);
        TEST_CASE(name) {
            blo_problem pb = p;
            pb.x_hi = hi;
            blo_error e;
            blo_config *c = blo_config_new(&target_type, &e);
            EXPECT(c && blo_config_apply(c, opts[o], &e) == BLO_OK, "%s", e.msg);
            blo_solver *s = blo_solver_new(&pb, c, NULL, NULL, NULL, &e);
            rec_log l = {.stop_at = -1};
            blo_solver_set_record(s, log_record, &l);
            EXPECT(blo_solver_run(s) == BLO_OK, "%s", blo_solver_error(s));
            const double *x = blo_solver_x(s);
            EXPECT(fabs(x[0] - 1) < 1e-6 && fabs(x[1] + 2) < 1e-6 && x[2] == 0.2, "x = (%g, %g, %g)", x[0], x[1], x[2]);
            EXPECT(l.n == 3000 && l.finals == 1 && l.t[0] == 0 && l.t[7] == 7, "%d records, %d final", l.n, l.finals);
            blo_solver_free(s);
            blo_config_free(c);
        }
    }
    TEST_CASE("solver: a NaN direction stops with a clear error and keeps the last good iterate") {
        blo_error e;
        blo_config *c = blo_config_new(&target_type, &e);
        blo_config_apply(c, "nan_at=5 ul_iters=100", &e);
        blo_solver *s = blo_solver_new(&p, c, NULL, NULL, NULL, &e);
        double expect[3] = {0, 0, 0};
        for (int t = 0; t < 5; t++)
            for (int i = 0; i < 3; i++) expect[i] -= 0.1 * (expect[i] - target_defaults.c[i]);
        EXPECT(blo_solver_run(s) == BLO_ETAPE && strstr(blo_solver_error(s), "iteration 5") &&
                   strstr(blo_solver_error(s), "last good iterate"), "%s", blo_solver_error(s));
        const double *x = blo_solver_x(s);
        EXPECT(blo_solver_iterations(s) == 5 && x[0] == expect[0] && x[1] == expect[1] && x[2] == expect[2],
               "done %d, x = (%g, %g, %g)", blo_solver_iterations(s), x[0], x[1], x[2]);
        blo_solver_free(s);
        blo_config_free(c);
    }
    TEST_CASE("solver: a type without init, direction or solution, and bad starts, are errors") {
        blo_method_type broken = target_type;
        broken.direction = NULL;
        blo_error e;
        EXPECT(!blo_config_new(&broken, &e) && e.status == BLO_EARG, "%s", e.msg);
        blo_config *c = blo_config_new(&target_type, &e);
        double x[3] = {0, NAN, 0};
        EXPECT(!blo_solver_new(&p, c, x, NULL, NULL, &e) && strstr(e.msg, "x0[1]"), "%s", e.msg);
        EXPECT(!blo_solver_new(NULL, c, NULL, NULL, NULL, &e) && e.status == BLO_EARG, "%s", e.msg);
        blo_config_free(c);
    }
}

// ---- records, stopping and resuming -------------------------------------------------------------------

static void record_cases(void) {
    blo_problem p = small_problem();
    double x0[2] = {0.3, -0.2}, y0[3] = {0.1, 0.2, -0.1};
    TEST_CASE("solver: the last record describes the returned x, with the LL residual") {
        blo_config *c = config("rhg", "ul_iters=7 ll_iters=5 s_l=0.2");
        blo_error e;
        blo_solver *s = blo_solver_new(&p, c, x0, y0, NULL, &e);
        rec_log l = {.stop_at = -1};
        blo_solver_set_record(s, log_record, &l);
        EXPECT(blo_solver_run(s) == BLO_OK, "%s", blo_solver_error(s));
        double y[3], F, gy[3];
        EXPECT(blo_solver_solution(s, y, &e) == BLO_OK &&
                   blo_eval(&p, 1, blo_solver_x(s), y, &F, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
        EXPECT(l.n == 7 && l.finals == 1 && l.F_final == F, "%d records; final F %.17g, F at the returned x %.17g",
               l.n, l.F_final, F);
        blo_record r;
        blo_eval(&p, 0, blo_solver_x(s), y, NULL, NULL, gy, NULL, &e);
        EXPECT(blo_solver_report(s, &r) == BLO_OK && r.final && r.t == 7 &&
                   r.ll_residual == sqrt(gy[0] * gy[0] + gy[1] * gy[1] + gy[2] * gy[2]),
               "residual %.17g", r.ll_residual);
        blo_solver_free(s);
        blo_config_free(c);
    }
    TEST_CASE("solver: the record callback stops the run (force stop) and the run goes on to the same bits") {
        blo_config *c = config("ait", "ul_iters=9 ll_iters=6 s_l=0.2 optimizer=adam lr_x=0.05 lr_z=0.05");
        blo_error e;
        blo_solver *a = blo_solver_new(&p, c, x0, y0, NULL, &e), *b = blo_solver_new(&p, c, x0, y0, NULL, &e);
        rec_log l = {.stop_at = 3};
        blo_solver_set_record(b, log_record, &l);
        EXPECT(blo_solver_run(a) == BLO_OK, "%s", blo_solver_error(a));
        EXPECT(blo_solver_run(b) == BLO_STOPPED && blo_solver_iterations(b) == 4 && l.finals == 1, "stopped after %d",
               blo_solver_iterations(b));
        EXPECT(blo_solver_run(b) == BLO_OK && blo_solver_iterations(b) == 9, "went on to %d", blo_solver_iterations(b));
        EXPECT(!memcmp(blo_solver_x(a), blo_solver_x(b), sizeof(double) * 2) &&
                   !memcmp(blo_solver_z(a), blo_solver_z(b), sizeof(double) * 3), "x and z differ");
        blo_solver_free(a), blo_solver_free(b);
        blo_config_free(c);
    }
}

// Every method, with Adam and warm starts where it has them: 6 iterations straight, against 3,
// saved, loaded into a new solver and run to 6. The same bits for x and z.
static void resume_cases(void) {
    blo_problem p = small_problem();
    double x0[2] = {0.3, -0.2}, y0[3] = {0.1, 0.2, -0.1}, zp[3] = {0.5, 0, -0.5};
    char path[] = "/tmp/hypertape-state-XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    TEST_CASE("solver: every method saved after 3 iterations and resumed ends with the same bits as 6 straight") {
        for (const blo_method_type *const *m = blo_method_registry(); *m; m++) {
            blo_config *c = config((*m)->name, "ul_iters=6 optimizer=adam lr_x=0.05 lr_z=0.05");
            blo_error e;
            blo_config_set(c, "warm_start", "1", &e);  // where the method has it
            blo_config_set(c, "ll_iters", "8", &e);
            blo_solver *a = blo_solver_new(&p, c, x0, y0, zp, &e);
            EXPECT(a && blo_solver_run(a) == BLO_OK, "%s: %s", (*m)->name, a ? blo_solver_error(a) : e.msg);
            blo_config_set(c, "ul_iters", "3", &e);
            blo_solver *b = blo_solver_new(&p, c, x0, y0, zp, &e);
            EXPECT(b && blo_solver_run(b) == BLO_OK && blo_solver_save(b, path, "meta", &e) == BLO_OK, "%s: %s",
                   (*m)->name, e.msg);
            blo_config_set(c, "ul_iters", "6", &e); // the run's length may differ from the saved one's
            blo_solver *r = blo_solver_new(&p, c, x0, y0, zp, &e);
            EXPECT(r && blo_solver_load(r, path, &e) == BLO_OK && blo_solver_iterations(r) == 3, "%s: %s", (*m)->name, e.msg);
            EXPECT(r && blo_solver_run(r) == BLO_OK, "%s: %s", (*m)->name, r ? blo_solver_error(r) : "");
            int nz = a ? blo_solver_n_z(a) : 0;
            EXPECT(a && r && !memcmp(blo_solver_x(a), blo_solver_x(r), sizeof(double) * 2) &&
                       (!nz || !memcmp(blo_solver_z(a), blo_solver_z(r), sizeof(double) * (size_t)nz)) &&
                       (isnan(blo_solver_kbar_mean(a)) || blo_solver_kbar_mean(a) == blo_solver_kbar_mean(r)),
                   "%s: resumed x (%.17g, %.17g) vs (%.17g, %.17g)", (*m)->name, r ? blo_solver_x(r)[0] : 0,
                   r ? blo_solver_x(r)[1] : 0, a ? blo_solver_x(a)[0] : 0, a ? blo_solver_x(a)[1] : 0);
            blo_solver_free(a), blo_solver_free(b), blo_solver_free(r);
            blo_config_free(c);
        }
    }
    TEST_CASE("solver: a state of another method, other settings, sizes, or a damaged file is refused") {
        blo_error e;
        blo_config *c = config("galet", "ul_iters=2");
        blo_solver *s = blo_solver_new(&p, c, x0, y0, NULL, &e);
        EXPECT(blo_solver_run(s) == BLO_OK && blo_solver_save(s, path, "{\"a\": 1}", &e) == BLO_OK, "%s", e.msg);
        char *meta = NULL;
        EXPECT(blo_solver_read_meta(path, &meta, &e) == BLO_OK && meta && !strcmp(meta, "{\"a\": 1}"), "meta %s", meta);
        free(meta);
        blo_config *other = config("bvfim", "");
        blo_solver *t = blo_solver_new(&p, other, x0, y0, NULL, &e);
        EXPECT(blo_solver_load(t, path, &e) == BLO_EARG && strstr(e.msg, "galet") && strstr(e.msg, "bvfim"), "%s", e.msg);
        blo_solver_free(t), blo_config_free(other);
        other = config("galet", "N=2");
        t = blo_solver_new(&p, other, x0, y0, NULL, &e);
        EXPECT(blo_solver_load(t, path, &e) == BLO_EARG && strstr(e.msg, "N=1") && strstr(e.msg, "N=2"), "%s", e.msg);
        blo_solver_free(t), blo_config_free(other);
        // a byte changed in the middle, then the file cut short: neither loads
        FILE *f = fopen(path, "r+b");
        fseek(f, 60, SEEK_SET);
        int ch = fgetc(f);
        fseek(f, 60, SEEK_SET);
        fputc(ch ^ 1, f);
        fclose(f);
        t = blo_solver_new(&p, c, x0, y0, NULL, &e);
        EXPECT(blo_solver_load(t, path, &e) == BLO_EIO && strstr(e.msg, "damaged"), "%s", e.msg);
        EXPECT(truncate(path, 30) == 0 && blo_solver_load(t, path, &e) == BLO_EIO, "%s", e.msg);
        EXPECT(blo_solver_load(t, "/nonexistent/state", &e) == BLO_EIO && strstr(e.msg, "/nonexistent/state"), "%s", e.msg);
        EXPECT(blo_solver_load(t, "/tmp", &e) == BLO_EIO && strstr(e.msg, "/tmp is a directory"), "%s", e.msg);
        EXPECT(blo_solver_save(t, "/nonexistent/state", NULL, &e) == BLO_EIO && strstr(e.msg, "/nonexistent"), "%s", e.msg);
        // the check before a run: path (30 bytes now) left as it is and no path.tmp left behind;
        // a missing directory, a directory and no path refused
        char tmp[sizeof path + 4];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        struct stat sb;
        EXPECT(blo_solver_save_check(path, &e) == BLO_OK && stat(path, &sb) == 0 && sb.st_size == 30 &&
                   access(tmp, F_OK) != 0, "%s", e.msg);
        EXPECT(blo_solver_save_check("/nonexistent/state", &e) == BLO_EIO &&
                   strstr(e.msg, "cannot write /nonexistent/state.tmp"), "%s", e.msg);
        EXPECT(blo_solver_save_check("/tmp", &e) == BLO_EARG && strstr(e.msg, "/tmp is a directory"), "%s", e.msg);
        EXPECT(blo_solver_save_check("", &e) == BLO_EARG && blo_solver_save_check(NULL, &e) == BLO_EARG, "%s", e.msg);
        blo_solver_free(t), blo_solver_free(s);
        blo_config_free(c);
    }
    TEST_CASE("solver: a state whose count is at its end is refused; a refused load leaves the solver usable") {
        blo_error e;
        blo_config *c = config("rhg", "ul_iters=2 ll_iters=4");
        blo_solver *s = blo_solver_new(&p, c, x0, y0, NULL, &e);
        EXPECT(blo_solver_run(s) == BLO_OK && blo_solver_save(s, path, NULL, &e) == BLO_OK, "%s", e.msg);
        // the body's iteration count, rewritten to INT32_MAX with the checksum made again
        FILE *f = fopen(path, "rb");
        unsigned char buf[1 << 16];
        size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
        if (f) fclose(f);
        size_t at = 16; // magic, version, byte order; then three sections before the body's
        for (int k = 0; k < 3 && at + 8 <= n; k++) {
            uint64_t len;
            memcpy(&len, buf + at, 8);
            at += 8 + (size_t)len;
        }
        int32_t big = INT32_MAX;
        EXPECT(at + 8 + 16 <= n, "layout");
        if (at + 8 + 16 <= n) {
            memcpy(buf + at + 8 + 12, &big, 4); // n_x, n_y, n_z, t
            uint32_t crc = (uint32_t)crc32_z(0L, buf, n - 4);
            memcpy(buf + n - 4, &crc, 4);
            f = fopen(path, "wb");
            if (f) fwrite(buf, 1, n, f), fclose(f);
        }
        blo_solver *t = blo_solver_new(&p, c, x0, y0, NULL, &e);
        EXPECT(blo_solver_load(t, path, &e) == BLO_EIO && strstr(e.msg, "iteration count"), "%s", e.msg);
        EXPECT(blo_solver_step(t) == BLO_OK && blo_solver_save(t, path, NULL, &e) == BLO_OK,
               "a refused load left the solver unusable: %s %s", blo_solver_error(t), e.msg);
        // a state of other sizes: refused before anything changes, and the solver goes on
        blo_problem q = {.n_x = 3, .n_y = 1, .F = zero_obj, .f = zero_obj};
        blo_solver *u = blo_solver_new(&q, c, NULL, NULL, NULL, &e);
        EXPECT(u && blo_solver_load(u, path, &e) == BLO_EARG && strstr(e.msg, "n_x = 2"), "%s", e.msg);
        EXPECT(u && blo_solver_step(u) == BLO_OK, "%s", u ? blo_solver_error(u) : e.msg);
        blo_solver_free(s), blo_solver_free(t), blo_solver_free(u);
        blo_config_free(c);
    }
    remove(path);
}

// ---- dynamics whose state holds more than y: read_y defaults to its first n_y entries ----

static ad_var pair_init(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var y0) {
    (void)p, (void)d;
    return ad_concat(t, y0, ad_scale(t, y0, 0));
}
static ad_var pair_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x, ad_var s) {
    (void)k;
    int n = p->n_y;
    ad_var y = ad_slice(t, s, 0, n), v = ad_slice(t, s, n, n); // heavy ball with its velocity in the state
    ad_var v1 = ad_axpy(t, ad_scale(t, v, 0.5), -d->ll_step, blo_ll_grad_y(t, p, x, y));
    return ad_concat(t, ad_add(t, y, v1), v1);
}

static void dynamics_cases(void) {
    TEST_CASE("dynamics: read_y = NULL reads state[0 : n_y] of a larger state (as blo.h says)") {
        blo_problem p = small_problem();
        blo_dynamics d = {.name = "ball", .state_size = 6, .init = pair_init, .step = pair_step, .ll_step = 0.1};
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = 5;
        double x[2] = {0.3, -0.2}, g[2], y[3], states[7 * 6], s0[6];
        blo_error e;
        EXPECT(blo_hypergrad(&p, &d, &hp, x, NULL, g, NULL, NULL, NULL, &e) == BLO_OK, "%s", e.msg);
        EXPECT(blo_state_init(&p, &d, NULL, s0, NULL, &e) == BLO_OK &&
                   blo_unroll(&p, &d, x, 0, s0, 5, states, NULL, NULL, &e) == BLO_OK &&
                   blo_state_read_y(&p, &d, states + 5 * 6, y, NULL, &e) == BLO_OK &&
                   !memcmp(y, states + 5 * 6, sizeof y), "%s", e.msg);
    }
}

// ---- blo_check_hypergrad on a problem written here -------------------------------------------------------

static void check_cases(void) {
    blo_problem p = small_problem();
    double x0[2] = {0.3, -0.2}, y0[3] = {0.1, 0.2, -0.1}, zp[3] = {0.5, 0, -0.5};
    struct {
        const char *method, *settings;
        int pass;
    } cases[] = {
        {"rhg", "ll_iters=15 s_l=0.2", 1},
        {"trhg", "ll_iters=15 s_l=0.2 truncate=4", 1},
        {"ait", "ll_iters=15 s_l=0.2 prior=0.7", 1},
        {"aitp", "ll_iters=15 dynamics=nesterov s_l=0.1", 1},
        {"bda", "ll_iters=10", 1},
        {"rhg", "ll_iters=10 dynamics=accel L_f=3", 1},
        {"cg", "ll_iters=200 s_l=0.2 J=20", 1},
        {"neumann", "ll_iters=15 s_l=0.2 J=2", 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char name[200];
        snprintf(name, sizeof name, "check_hypergrad: %s %s on a problem written in the test %s", cases[k].method,
                 cases[k].settings, cases[k].pass ? "passes" : "fails");
        TEST_CASE(name) {
            blo_config *c = config(cases[k].method, cases[k].settings);
            blo_check_report r = blo_check_hypergrad(&p, c, x0, y0, zp, NULL);
            EXPECT(r.status == BLO_OK && r.pass == cases[k].pass && r.checked >= 2, "%s", r.msg);
            EXPECT(!strncmp(r.msg, cases[k].pass ? "PASS" : "FAIL", 4), "%s", r.msg);
            blo_config_free(c);
        }
    }
    TEST_CASE("check_hypergrad: a method that claims no gradient says so; bad tolerances are errors") {
        blo_config *c = config("bome", "");
        blo_check_report r = blo_check_hypergrad(&p, c, x0, y0, NULL, NULL);
        EXPECT(r.status == BLO_EARG && r.claim == BLO_GRAD_NONE && strstr(r.msg, "not the gradient"), "%s", r.msg);
        blo_config_free(c);
        c = config("rhg", "");
        blo_check_params cp = blo_check_default_params();
        cp.h = 0;
        r = blo_check_hypergrad(&p, c, x0, y0, NULL, &cp);
        EXPECT(r.status == BLO_EARG && strstr(r.msg, "h = 0"), "%s", r.msg);
        cp = blo_check_default_params(), cp.rtol = NAN;
        r = blo_check_hypergrad(&p, c, x0, y0, NULL, &cp);
        EXPECT(r.status == BLO_EARG, "%s", r.msg);
        blo_config_free(c);
    }
}

// F = <c, x> + 1e200 sum(y) / 1e200 ... : F linear in x, f = 1/2 ||y - x||^2.
static ad_var lin_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const double *scale = u;
    ad_var c = ad_fill(t, ad_vec_shape(2), 3);
    return ad_add(t, ad_dot(t, c, x), ad_scale(t, ad_sum(t, y), *scale));
}
static ad_var lin_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    (void)u;
    return ad_scale(t, ad_sqnorm(t, ad_sub(t, y, x)), 0.5);
}

static void exact_cases(void) {
    TEST_CASE("check_hypergrad: zero tolerances pass an exact match (a linear F, steps of 1/2)") {
        double zero = 0, x[2] = {1, 2};
        blo_problem p = {.n_x = 2, .n_y = 2, .F = lin_F, .f = lin_f, .user = &zero};
        blo_config *c = config("rhg", "ll_iters=3 s_l=0.5");
        blo_check_params cp = blo_check_default_params();
        cp.rtol = cp.atol = 0, cp.h = 0.5;
        blo_check_report r = blo_check_hypergrad(&p, c, x, NULL, NULL, &cp);
        EXPECT(r.status == BLO_OK && r.pass && r.worst_ratio == 0, "%s", r.msg);
        blo_config_free(c);
    }
    TEST_CASE("darts: eta = 0 is the first-order direction grad_x F; huge grad_y F gives no NaN") {
        double scale = 1e200, x[2] = {1, 2}, y0[2] = {0, 0};
        blo_problem p = {.n_x = 2, .n_y = 2, .F = lin_F, .f = lin_f, .user = &scale};
        blo_error e;
        for (int first = 0; first < 2; first++) {
            blo_config *c = config("darts", first ? "eta=0 ll_iters=3" : "ll_iters=3");
            blo_solver *s = blo_solver_new(&p, c, x, y0, NULL, &e);
            blo_record rec;
            EXPECT(s && blo_solver_direction(s, &rec, &e) == BLO_OK, "%s", e.msg);
            const double *g = s ? blo_solver_gradient(s) : x;
            // f's mixed derivative is -I: the second-order term is +eta v, v = 1e200 (1, 1)
            double expect = first ? 3 : 3 + 0.1 * 1e200;
            EXPECT(isfinite(g[0]) && fabs(g[0] - expect) <= 1e-12 * fabs(expect), "first order %d: %g, expected %g",
                   first, g[0], expect);
            blo_solver_free(s);
            blo_config_free(c);
        }
    }
}

void test_bilevel_solver(void) {
    exact_cases();
    settings_cases();
    user_method_cases();
    record_cases();
    resume_cases();
    dynamics_cases();
    check_cases();
}
