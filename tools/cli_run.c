// `hypertape run`, `compare` and `gradcheck`: build the problem and the method from the command
// line, drive the upper-level loop, and report (a line or JSON, a CSV trace, gnuplot figures).
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// ---- one run: what the loop reports, kept for the summary, the trace and the figures ----

typedef struct {
    const mdl_model *m;
    const blo_runner *r;     // for the LL iterate the gap is measured at
    int T;
    FILE *trace;
    int progress;            // stderr is a terminal
    double last_progress;
    double *F_gap, *x_err;   // [T] per iteration (compare); x_err is the optimal-set gap when x* is unknown
    double *F, *acc, *f1;    // [T] per iteration (compare): F itself, and for learning tasks the test accuracy and F1
    long kbar_sum;
    int kbar_n;
    const char *label;
} run_log;

// |F - F*| / (|F*| + 1): the papers' ||Phi - Phi*|| / (||Phi*|| + 1)
static double F_gap(const mdl_model *m, double F) {
    return isnan(m->F_star) ? NAN : fabs(F - m->F_star) / (fabs(m->F_star) + 1);
}

// ||x - x*|| / ||x*||, or the model's distance to its optimal set when x* is unknown (coreset)
static double x_error(const mdl_model *m, const double *x, const double *y) {
    double e = mdl_x_error(m, x);
    return isnan(e) && m->optimal_gap && y ? m->optimal_gap(m, x, y) : e;
}

static void on_record(const blo_record *r, void *u) {
    run_log *l = u;
    const double *y = l->r ? blo_runner_y(l->r) : NULL;
    double xe = x_error(l->m, r->x, y);
    mdl_eval ev = {NAN, NAN};
    char err[256];
    if (l->m->evaluate && y && (l->trace || l->acc)) // learning tasks: one pass over the test set
        if (l->m->evaluate(l->m, r->x, y, &ev, err, sizeof err)) ev = (mdl_eval){NAN, NAN};
    if (l->F_gap) l->F_gap[r->t] = F_gap(l->m, r->F);
    if (l->x_err) l->x_err[r->t] = xe;
    if (l->F) l->F[r->t] = r->F;
    if (l->acc) l->acc[r->t] = ev.test_acc, l->f1[r->t] = ev.f1;
    if (r->kbar > 0) l->kbar_sum += r->kbar, l->kbar_n++;
    if (l->trace)
        fprintf(l->trace, "%d,%.17g,%.17g,%.6g,%.6g,%.6g,%d,%.6g,%.6g,%.4f,%.4f\n", r->t, r->F, r->f,
                F_gap(l->m, r->F), xe, r->grad_norm, r->kbar, r->seconds, r->extra, ev.test_acc, ev.f1);
    double t = now();
    if (l->progress && (t - l->last_progress > 0.2 || r->t + 1 == l->T)) {
        fprintf(stderr, "\r%s %d/%d  F %.6g  x_err %.3g  ", l->label, r->t + 1, l->T, r->F, xe);
        if (r->t + 1 == l->T) fputc('\n', stderr);
        l->last_progress = t;
    }
}

typedef struct {
    int status;          // 0 ok, 1 stopped by an error
    char error[400];
    double *x;           // final x [n_x]
    double F, f, x_err, gap, F_gap, seconds, kbar_mean;
    int nx, has_x_star;
    int done;
    int has_eval;
    mdl_eval eval;
    char settings[512];
} run_result;

static void describe_to(char *buf, size_t n, const cli_settings *st) {
    FILE *f = fmemopen(buf, n, "w");
    if (!f) {
        buf[0] = 0;
        return;
    }
    cli_describe(f, st);
    fclose(f);
    buf[strcspn(buf, "\n")] = 0;
}

// Runs one method on a fresh model; fills res. Usage errors return 2 (message in err).
static int run_one(const cli_args *a, const char *method, run_log *log, run_result *res, char *err,
                   size_t en) {
    memset(res, 0, sizeof *res);
    mdl_model m;
    double *x0 = NULL, *y0;
    cli_settings st;
    memset(&m, 0, sizeof m);
    if (cli_settings_for(a, mdl_find(a->problem), method, &st, err, en) ||
        cli_make_model(a, &m, &x0, &y0, st.c.ia && st.c.prior_lambda != 0, err, en)) {
        free(x0);
        mdl_free(&m);
        return 2;
    }
    if (st.c.ia && !st.c.z_prior) st.c.z_prior = m.z_prior;
    describe_to(res->settings, sizeof res->settings, &st);
    blo_runner *r;
    blo_error be;
    if (blo_runner_new(&r, &m.prob, &st.c, y0, &be)) {
        snprintf(err, en, "%s", be.msg);
        free(x0);
        mdl_free(&m);
        return 2;
    }
    int nz = blo_runner_n_z(r), nx = m.prob.n_x, ny = m.prob.n_y;
    double *z = nz ? malloc(sizeof(double) * (size_t)nz) : NULL;
    if (nz) blo_runner_z0(r, y0, z);
    log->m = &m, log->T = st.s.T, log->r = r;
    st.s.record = on_record, st.s.record_user = log;
    double t0 = now();
    blo_status s = blo_solve(&m.prob, blo_runner_direction(), r, nz, &st.s, x0, z, &res->done, &be);
    res->seconds = now() - t0;
    if (s) res->status = 1, snprintf(res->error, sizeof res->error, "%s", be.msg);
    // the report: F and f at the final x with the method's LL solution there (y_K of its dynamics,
    // or the y it carries), and the evaluation of learning tasks at the same point
    double *ysol = malloc(sizeof(double) * (size_t)ny);
    blo_status fs = ysol ? blo_runner_solution(r, x0, z, ysol, &be) : BLO_ENOMEM;
    if (!fs) fs = blo_eval(&m.prob, 1, x0, ysol, &res->F, NULL, NULL, NULL, &be);
    if (!fs) fs = blo_eval(&m.prob, 0, x0, ysol, &res->f, NULL, NULL, NULL, &be);
    if (fs) res->F = res->f = NAN;
    res->x_err = mdl_x_error(&m, x0);
    res->F_gap = F_gap(&m, res->F);
    res->nx = nx, res->has_x_star = m.x_star != NULL;
    res->gap = m.optimal_gap && !fs ? m.optimal_gap(&m, x0, ysol) : NAN;
    res->kbar_mean = log->kbar_n ? (double)log->kbar_sum / log->kbar_n : NAN;
    if (m.evaluate && !fs) {
        char e2[400];
        res->has_eval = m.evaluate(&m, x0, ysol, &res->eval, e2, sizeof e2) == 0;
        if (!res->has_eval && !res->status) res->status = 1, snprintf(res->error, sizeof res->error, "%s", e2);
    }
    free(ysol);
    res->x = malloc(sizeof(double) * (size_t)nx);
    memcpy(res->x, x0, sizeof(double) * (size_t)nx);
    free(z);
    blo_runner_free(r);
    free(x0);
    mdl_free(&m);
    return 0;
}

static void json_number(FILE *f, double v) {
    if (isfinite(v)) fprintf(f, "%.17g", v);
    else fputs("null", f);
}

static void json_string(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

int cli_run(const cli_args *a) {
    char err[512];
    run_log log = {.progress = isatty(2), .label = a->method};
    if (a->trace && !(log.trace = fopen(a->trace, "w"))) {
        fprintf(stderr, "hypertape run: cannot write %s\n", a->trace);
        return 2;
    }
    if (log.trace) fprintf(log.trace, "t,F,f,F_gap,x_err,grad_norm,kbar,seconds,extra,test_acc,f1\n");
    run_result res;
    int rc = run_one(a, a->method, &log, &res, err, sizeof err);
    if (log.trace) fclose(log.trace);
    if (rc) {
        fprintf(stderr, "hypertape run: %s\n", err);
        return rc;
    }
    int nx = res.nx;
    FILE *o = stdout;
    if (a->json) {
        fprintf(o, "{\"problem\": ");
        json_string(o, a->problem);
        fprintf(o, ", \"method\": ");
        json_string(o, a->method);
        fprintf(o, ", \"settings\": ");
        json_string(o, res.settings);
        fprintf(o, ", \"x\": [");
        for (int i = 0; i < nx; i++) {
            if (i) fputs(", ", o);
            json_number(o, res.x[i]);
        }
        fprintf(o, "], \"F\": ");
        json_number(o, res.F);
        fprintf(o, ", \"f\": ");
        json_number(o, res.f);
        fprintf(o, ", \"x_err\": ");
        json_number(o, res.x_err);
        fprintf(o, ", \"gap\": ");
        json_number(o, res.gap);
        fprintf(o, ", \"ul_iters\": %d, \"seconds\": ", res.done);
        json_number(o, res.seconds);
        fprintf(o, ", \"sec_per_ul_iter\": ");
        json_number(o, res.done ? res.seconds / res.done : NAN);
        fprintf(o, ", \"kbar_mean\": ");
        json_number(o, res.kbar_mean);
        if (res.has_eval) {
            fprintf(o, ", \"test_acc\": ");
            json_number(o, res.eval.test_acc);
            fprintf(o, ", \"f1\": ");
            json_number(o, res.eval.f1);
        }
        fprintf(o, ", \"error\": ");
        if (res.status) json_string(o, res.error);
        else fputs("null", o);
        fprintf(o, "}\n");
    } else {
        fprintf(o, "%s on %s (%s)\n", a->method, a->problem, res.settings);
        fprintf(o, "  x =");
        for (int i = 0; i < nx && i < 8; i++) fprintf(o, " %.6g", res.x[i]);
        fprintf(o, "%s\n  F = %.10g  f = %.10g  x_err = %.3g", nx > 8 ? " ..." : "", res.F, res.f, res.x_err);
        if (!isnan(res.gap)) fprintf(o, "  gap to the optimal set = %.3g", res.gap);
        fprintf(o, "  %d UL iterations in %.3f s (%.3g s each)", res.done, res.seconds,
                res.done ? res.seconds / res.done : NAN);
        if (!isnan(res.kbar_mean)) fprintf(o, "  Kbar mean %.2f", res.kbar_mean);
        if (res.has_eval) fprintf(o, "\n  test accuracy %.2f%%  F1 %.2f%%", res.eval.test_acc, res.eval.f1);
        fputc('\n', o);
    }
    if (res.status) fprintf(stderr, "hypertape run: stopped: %s\n", res.error);
    free(res.x);
    return res.status;
}

// ---- compare: one curve per method, drawn with gnuplot ----

int cli_compare(const cli_args *a) {
    char err[512], list[512];
    snprintf(list, sizeof list, "%s", a->methods);
    const char *names[16];
    int n = 0;
    for (char *tok = strtok(list, ","); tok && n < 16; tok = strtok(NULL, ",")) names[n++] = tok;
    if (n == 0) {
        fprintf(stderr, "hypertape compare: --methods is empty\n");
        return 2;
    }
    char dat[600];
    snprintf(dat, sizeof dat, "%s.dat", a->plot ? a->plot : "compare");
    FILE *d = a->plot ? fopen(dat, "w") : NULL;
    if (a->plot && !d) {
        fprintf(stderr, "hypertape compare: cannot write %s\n", dat);
        return 2;
    }
    printf("%-16s %10s %10s %12s %10s %8s %10s %7s %7s %7s\n", "method", "x_err", "gap", "F", "F_gap",
           "iters", "s/iter", "Kbar", "acc%", "F1%");
    int has_x = 1, has_F = 1, learning = 0;
    for (int k = 0; k < n; k++) {
        cli_settings st;
        if (cli_settings_for(a, mdl_find(a->problem), names[k], &st, err, sizeof err)) {
            fprintf(stderr, "hypertape compare: %s\n", err);
            if (d) fclose(d);
            return 2;
        }
        size_t T = (size_t)st.s.T;
        run_log log = {.progress = isatty(2), .label = names[k], .F_gap = calloc(T, sizeof(double)),
                       .x_err = calloc(T, sizeof(double)), .F = calloc(T, sizeof(double)),
                       .acc = calloc(T, sizeof(double)), .f1 = calloc(T, sizeof(double))};
        run_result res;
        int rc = run_one(a, names[k], &log, &res, err, sizeof err);
        if (rc) {
            fprintf(stderr, "hypertape compare: %s: %s\n", names[k], err);
            free(log.F_gap), free(log.x_err), free(log.F), free(log.acc), free(log.f1);
            if (d) fclose(d);
            return rc;
        }
        printf("%-16s %10.4g %10.4g %12.6g %10.4g %8d %10.4g %7.2f %7.2f %7.2f%s%s\n", names[k],
               res.x_err, res.gap, res.F, res.F_gap,
               res.done, res.done ? res.seconds / res.done : NAN, res.kbar_mean,
               res.has_eval ? res.eval.test_acc : NAN, res.has_eval ? res.eval.f1 : NAN,
               res.status ? "  stopped: " : "", res.status ? res.error : "");
        if (d) {
            fprintf(d, "# %s\n", names[k]);
            for (int t = 0; t < res.done; t++)
                fprintf(d, "%d %.6g %.6g %.10g %.4f %.4f\n", t + 1, log.F_gap[t], log.x_err[t], log.F[t],
                        log.acc[t], log.f1[t]);
            fprintf(d, "\n\n");
        }
        has_x = res.has_x_star, has_F = !isnan(res.F_gap) || isnan(res.F), learning = res.has_eval;
        // a method that stopped is a row, not a failure
        free(res.x), free(log.F_gap), free(log.x_err), free(log.F), free(log.acc), free(log.f1);
    }
    if (d) {
        fclose(d);
        FILE *g = popen("gnuplot", "w");
        if (!g) {
            fprintf(stderr, "hypertape compare: cannot run gnuplot (apt-get install gnuplot-nox)\n");
            return 2;
        }
        // panels: |F - F*| (or F when F* is unknown), then ||x - x*|| (or the optimal-set gap);
        // learning tasks: F, test accuracy and F1 per iteration
        typedef struct {
            int col;
            const char *title;
            int log;
        } panel;
        panel pan[3];
        int np = 0;
        pan[np++] = has_F ? (panel){2, "|F - F*| / (|F*| + 1)", 1} : (panel){4, "F", 1};
        if (learning) {
            pan[np++] = (panel){5, "test accuracy (%)", 0};
            pan[np++] = (panel){6, "F1 of the predicted clean set (%)", 0};
        } else {
            pan[np++] = (panel){3, has_x ? "||x - x*|| / ||x*||" : "distance to the optimal set", 1};
        }
        // twelve distinguishable line types: gnuplot's default colours repeat after eight
        static const char *const colours[12] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                                "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
                                                "#000000", "#aec7e8"};
        for (int k = 0; k < 12; k++)
            fprintf(g, "set linetype %d lc rgb '%s' lw 2 dt %d\n", k + 1, colours[k], k < 6 ? 1 : 2);
        fprintf(g, "set terminal pngcairo size %d,480 font ',10'\nset output '%s'\n"
                   "set multiplot layout 1,%d title '%s'\n"
                   "set xlabel 'UL iterations'\nset key outside bottom center horizontal\n",
                600 * np, a->plot, np, a->problem);
        for (int p = 0; p < np; p++) {
            fprintf(g, "%s\nset title '%s'\nplot ", pan[p].log ? "set logscale y\nset format y '10^{%L}'"
                                                          : "unset logscale y\nset format y '%g'", pan[p].title);
            char use[64];
            if (pan[p].log) snprintf(use, sizeof use, "($%d > 0 ? $%d : 1e-17)", pan[p].col, pan[p].col);
            else snprintf(use, sizeof use, "%d", pan[p].col);
            for (int k = 0; k < n; k++)
                fprintf(g, "%s'%s' index %d using 1:%s with lines lt %d title '%s'", k ? ", " : "", dat,
                        k, use, k % 12 + 1, names[k]);
            fputc('\n', g);
        }
        fprintf(g, "unset multiplot\n");
        if (pclose(g) != 0) {
            fprintf(stderr, "hypertape compare: gnuplot failed drawing %s\n", a->plot);
            return 2;
        }
        printf("figure: %s (data %s)\n", a->plot, dat);
    }
    return 0;
}

// ---- gradcheck: the hypergradient at the start against central differences ----

// phi at (x, z): F(x, y_end) with the trajectory re-run from state_{k_start} (held at its value
// for the base point when k_start > 0) to k_end, plus the IA prior at iteration 0.
typedef struct {
    const blo_problem *p;
    blo_dynamics dyn;
    const cli_settings *st;
    int k_start, k_end;
    double *fixed_state, *states, *y;
    double lambda;
} phi_ctx;

static double phi(phi_ctx *c, const double *x, const double *z) {
    int S = c->dyn.state_size;
    blo_error e;
    if (c->k_start == 0 && blo_state_init(c->p, &c->dyn, z, c->states, NULL, &e)) return NAN;
    if (c->k_start > 0) memcpy(c->states, c->fixed_state, sizeof(double) * (size_t)S);
    int n = c->k_end - c->k_start;
    if (blo_unroll(c->p, &c->dyn, x, c->k_start, c->states, n, c->states, NULL, NULL, &e) ||
        blo_state_read_y(c->p, &c->dyn, c->states + (size_t)n * S, c->y, NULL, &e))
        return NAN;
    double F;
    if (blo_eval(c->p, 1, x, c->y, &F, NULL, NULL, NULL, &e)) return NAN;
    if (c->st->c.ia && c->lambda > 0)
        for (int i = 0; i < c->p->n_y; i++)
            F += 0.5 * c->lambda * (z[i] - c->st->c.z_prior[i]) * (z[i] - c->st->c.z_prior[i]);
    return F;
}

int cli_gradcheck(const cli_args *a) {
    char err[512];
    mdl_model m;
    double *x0 = NULL, *y0;
    cli_settings st;
    memset(&m, 0, sizeof m);
    if (cli_settings_for(a, mdl_find(a->problem), a->method, &st, err, sizeof err) ||
        cli_make_model(a, &m, &x0, &y0, st.c.ia && st.c.prior_lambda != 0, err, sizeof err)) {
        fprintf(stderr, "hypertape gradcheck: %s\n", err);
        free(x0);
        mdl_free(&m);
        return 2;
    }
    const char *meth = st.c.method;
    if (!strcmp(meth, "bome") || !strcmp(meth, "galet") || !strcmp(meth, "bvfim")) {
        fprintf(stderr, "hypertape gradcheck: %s steps along a direction that is not the gradient of an "
                        "objective; gradcheck covers rhg, trhg, bda, ait, aitp, cg, neumann\n", meth);
        free(x0);
        mdl_free(&m);
        return 2;
    }
    if (st.c.ia && !st.c.z_prior) st.c.z_prior = m.z_prior;
    int implicit = !strcmp(meth, "cg") || !strcmp(meth, "neumann");
    blo_runner *r;
    blo_error be;
    int rc = 0;
    if (blo_runner_new(&r, &m.prob, &st.c, y0, &be)) {
        fprintf(stderr, "hypertape gradcheck: %s\n", be.msg);
        free(x0);
        mdl_free(&m);
        return 2;
    }
    int nx = m.prob.n_x, ny = m.prob.n_y, nz = blo_runner_n_z(r), S = 0;
    double *g = calloc((size_t)(nx + ny), sizeof(double)), *z = calloc((size_t)ny, sizeof(double));
    blo_runner_z0(r, y0, z);
    blo_record rec = {0};
    if (blo_runner_direction()(r, &m.prob, 0, x0, nz ? z : NULL, g, nz ? g + nx : NULL, &rec, &be)) {
        fprintf(stderr, "hypertape gradcheck: %s\n", be.msg);
        rc = 1;
    }
    // the objective the method differentiates: its trajectory with k_start / Kbar as the method used
    phi_ctx c = {.p = &m.prob, .st = &st, .k_end = implicit ? st.c.K : rec.kbar};
    blo_error e2;
    if (!rc) {
        blo_method_config cc = st.c;
        blo_dynamics d = *blo_runner_dynamics(r); // the one the runner differentiated
        c.dyn = d;
        S = d.state_size;
        c.k_start = !implicit && cc.truncate > 0 && cc.truncate < c.k_end ? c.k_end - cc.truncate : 0;
        c.lambda = cc.ia && cc.prior_lambda > 0 ? cc.prior_lambda : 0;
        c.states = malloc(sizeof(double) * (size_t)(st.c.K + 1) * (size_t)S);
        c.fixed_state = malloc(sizeof(double) * (size_t)(c.k_start + 1) * (size_t)S);
        c.y = malloc(sizeof(double) * (size_t)ny);
        if (blo_state_init(&m.prob, &d, nz ? z : y0, c.fixed_state, NULL, &e2) ||
            (c.k_start > 0 && blo_unroll(&m.prob, &d, x0, 0, c.fixed_state, c.k_start, c.fixed_state, NULL, NULL, &e2))) {
            fprintf(stderr, "hypertape gradcheck: %s\n", e2.msg);
            rc = 1;
        } else if (c.k_start > 0) {
            memmove(c.fixed_state, c.fixed_state + (size_t)c.k_start * S, sizeof(double) * (size_t)S);
        }
    }
    // coordinates: all of x (and z under IA, when the sweep reaches z), at most 40 chosen by the seed
    int nz_check = nz && c.k_start == 0 ? ny : 0, total = nx + nz_check, n_check = total < 40 ? total : 40;
    double worst = 0, wa = 0, wn = 0;
    int wi = -1;
    ad_rng rng;
    ad_rng_seed(&rng, a->has_seed ? a->seed : 1);
    for (int k = 0; !rc && k < n_check; k++) {
        int i = total <= 40 ? k : (int)(ad_rng_next(&rng) % (uint64_t)total);
        double *v = i < nx ? &x0[i] : &z[i - nx], v0 = *v, h = 1e-6 * fmax(1, fabs(v0));
        *v = v0 + h;
        double fp = phi(&c, x0, nz ? z : y0);
        *v = v0 - h;
        double fm = phi(&c, x0, nz ? z : y0);
        *v = v0;
        double num = (fp - fm) / (2 * h), an = g[i];
        double re = fabs(an - num) / fmax(fmax(fabs(an), fabs(num)), 1e-12);
        if (!(re <= worst)) worst = re, wa = an, wn = num, wi = i;
    }
    if (!rc) {
        if (a->json) {
            printf("{\"problem\": \"%s\", \"method\": \"%s\", \"coordinates\": %d, \"worst_rel_err\": %.6g, "
                   "\"analytic\": %.17g, \"numeric\": %.17g, \"k_start\": %d, \"k_end\": %d}\n",
                   a->problem, meth, n_check, worst, wa, wn, c.k_start, c.k_end);
        } else {
            printf("%s on %s: hypergradient vs central differences of %s over %d coordinates\n", meth,
                   a->problem, implicit ? "phi_K (the implicit estimate approximates d/dx F(x, y*(x)))"
                                        : "the objective it differentiates", n_check);
            printf("  trajectory k_start = %d, k_end = %d; worst relative error %.3g at %s[%d]: "
                   "analytic %.12g, numeric %.12g\n", c.k_start, c.k_end, worst, wi < nx ? "x" : "z",
                   wi < nx ? wi : wi - nx, wa, wn);
        }
    }
    free(c.states), free(c.fixed_state), free(c.y), free(g), free(z);
    blo_runner_free(r);
    free(x0);
    mdl_free(&m);
    return rc;
}
