// `hypertape compare`: several methods on one problem, a table row each, and a convergence figure
// drawn with gnuplot from data written as the records come. Every method is planned (and its
// settings checked) before the first one runs.
#include "cli_record.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    char *list;       // a copy of --methods, cut at the commas
    char **names;
    int n;
    cli_plan *plans;
} method_set;

static void set_free(method_set *ms) {
    for (int k = 0; ms->plans && k < ms->n; k++) cli_plan_free(&ms->plans[k]);
    free(ms->plans), free(ms->names), free(ms->list);
}

// Splits --methods and plans each; every option must be some method's. 0 or -1 with a message.
static int plan_all(const cli_args *a, method_set *ms, char *err, size_t n) {
    memset(ms, 0, sizeof *ms);
    size_t len = strlen(a->methods);
    ms->list = malloc(len + 1);
    ms->names = malloc(sizeof(char *) * (len / 2 + 2));
    ms->plans = calloc(len / 2 + 2, sizeof(cli_plan));
    if (!ms->list || !ms->names || !ms->plans) return snprintf(err, n, "out of memory"), -1;
    memcpy(ms->list, a->methods, len + 1);
    for (char *p = ms->list;; p++) {
        char *c = strchr(p, ',');
        if (c) *c = 0;
        if (!*p) return snprintf(err, n, "--methods '%s': an empty method name", a->methods), -1;
        ms->names[ms->n++] = p;
        if (!c) break;
        p = c;
    }
    for (int k = 0; k < ms->n; k++)
        if (cli_plan_make(a, ms->names[k], NULL, 1, &ms->plans[k], err, n)) return -1;
    for (int i = 0; i < a->n_opts; i++) {
        int known = 0;
        for (int k = 0; k < ms->n && !known; k++) known = cli_plan_has(&ms->plans[k], a->opts[i].name);
        if (!known)
            return snprintf(err, n, "%.*s: not a setting of any method compared", (int)strcspn(a->opts[i].option, "="),
                            a->opts[i].option), -1;
    }
    return 0;
}

// What the figure needs to know of the problem, from its model.
typedef struct {
    int has_x, has_F;
    int n_metrics;                   // a learning task's metrics: a panel each (the first two)
    const char *titles[2];
} problem_facts;

// The table's header: the record's columns and the model's metrics (by name, cut to 8).
static void table_header(const mdl_model *m) {
    printf("%-16s %10s %10s %12s %10s %8s %10s %7s", "method", "x_err", "gap", "F", "F_gap", "iters", "s/iter", "Kbar");
    for (int k = 0; k < m->n_metrics; k++) printf(" %8.8s", m->metrics[k].name);
    putchar('\n');
}

// One method: its model, solver and run, the figure's data block, the table's row (the first
// also prints the header). 0, 1 (a file could not be written), or 2 with a message.
static int compare_one(const cli_plan *p, int first, FILE *dat, const char *dat_path, problem_facts *pf,
                       char *err, size_t n) {
    mdl_model m;
    double *x0, *y0;
    blo_error be;
    memset(&m, 0, sizeof m);
    if (cli_plan_model(p, &m, &x0, &y0, err, n)) {
        free(x0);
        mdl_free(&m);
        return 2;
    }
    blo_solver *s = blo_solver_new(&m.prob, p->config, x0, y0, m.z_prior, &be);
    if (!s) {
        snprintf(err, n, "%s: %s", p->label, be.msg);
        free(x0);
        mdl_free(&m);
        return 2;
    }
    if (first) table_header(&m);
    if (dat) fprintf(dat, "# %s\n", p->label);
    run_log log = {.m = &m, .s = s, .label = p->label, .T = blo_config_solve_params(p->config)->T,
                   .dat = dat, .dat_path = dat_path, .progress = isatty(2)};
    run_result r;
    cli_run_solver(s, &log, &r);
    if (dat) fprintf(dat, "\n\n");
    printf("%-16s %10.4g %10.4g %12.6g %10.4g %8d %10.4g %7.2f", p->label, r.x_err, r.gap, r.F, r.F_gap, r.done,
           r.done ? r.seconds / r.done : NAN, r.kbar_mean);
    for (int k = 0; k < m.n_metrics; k++) printf(" %8.4g", r.has_eval ? r.eval[k] : NAN);
    printf("%s%s\n", r.status ? "  stopped: " : "", r.status ? r.error : ""); // a stopped method is a row
    pf->has_x = m.x_star != NULL;
    pf->has_F = !isnan(r.F_gap) || isnan(r.F);
    pf->n_metrics = m.n_metrics;
    for (int k = 0; k < 2 && k < m.n_metrics; k++) pf->titles[k] = m.metrics[k].title; // static strings
    int rc = r.status == BLO_EIO ? 1 : 0;
    if (rc) snprintf(err, n, "%s", r.error);
    blo_solver_free(s);
    free(x0);
    mdl_free(&m);
    return rc;
}

// The last line gnuplot wrote to its error file that says what went wrong, in why [n].
static void gnuplot_reason(const char *path, char *why, size_t n) {
    FILE *f = fopen(path, "r");
    char line[512];
    why[0] = 0;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        const char *p = line + strspn(line, " \t^");
        if (*p && strncmp(p, "gnuplot>", 8)) snprintf(why, n, "%s", p);
    }
    if (f) fclose(f);
}

// The figure: |F - F*| (or F when F* is unknown), then ||x - x*|| (or the optimal-set gap);
// learning tasks: F and their first two metrics per iteration. gnuplot's complaints go to a file,
// so a failure is one line; -1 with it in why.
static int draw(const cli_args *a, const method_set *ms, const char *dat, const problem_facts *pf, char *why,
                size_t n) {
    char errpath[] = "/tmp/hypertape-gnuplot-XXXXXX", cmd[64];
    int fd = mkstemp(errpath);
    if (fd < 0) return snprintf(why, n, "no temporary file"), -1;
    close(fd);
    snprintf(cmd, sizeof cmd, "gnuplot 2>%s", errpath);
    FILE *g = popen(cmd, "w");
    if (!g) return remove(errpath), snprintf(why, n, "cannot run gnuplot"), -1;
    typedef struct {
        int col;
        const char *title;
        int log;
    } panel;
    panel pan[3];
    int np = 0;
    pan[np++] = pf->has_F ? (panel){2, "|F - F*| / (|F*| + 1)", 1} : (panel){4, "F", 1};
    for (int k = 0; k < 2 && k < pf->n_metrics; k++) pan[np++] = (panel){5 + k, pf->titles[k], 0};
    if (!pf->n_metrics)
        pan[np++] = (panel){3, pf->has_x ? "||x - x*|| / ||x*||" : "distance to the optimal set", 1};
    // twelve distinguishable line types: gnuplot's default colours repeat after eight
    static const char *const colours[12] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                                            "#e377c2", "#7f7f7f", "#bcbd22", "#17becf", "#000000", "#aec7e8"};
    for (int k = 0; k < 12; k++) fprintf(g, "set linetype %d lc rgb '%s' lw 2 dt %d\n", k + 1, colours[k], k < 6 ? 1 : 2);
    fprintf(g, "set terminal pngcairo size %d,480 font ',10'\nset output '%s'\nset multiplot layout 1,%d title '%s'\n"
               "set xlabel 'UL iterations'\nset key outside bottom center horizontal\n",
            600 * np, a->plot, np, a->problem);
    for (int p = 0; p < np; p++) {
        fprintf(g, "%s\nset title '%s'\nplot ", pan[p].log ? "set logscale y\nset format y '10^{%L}'"
                                                      : "unset logscale y\nset format y '%g'", pan[p].title);
        char use[64];
        if (pan[p].log) snprintf(use, sizeof use, "($%d > 0 ? $%d : 1e-17)", pan[p].col, pan[p].col);
        else snprintf(use, sizeof use, "%d", pan[p].col);
        for (int k = 0; k < ms->n; k++)
            fprintf(g, "%s'%s' index %d using 1:%s with lines lt %d title '%s'", k ? ", " : "", dat, k, use,
                    k % 12 + 1, ms->plans[k].label);
        fputc('\n', g);
    }
    fprintf(g, "unset multiplot\n");
    int rc = pclose(g) == 0 ? 0 : -1;
    gnuplot_reason(errpath, why, n);
    remove(errpath);
    if (rc && !why[0]) snprintf(why, n, "is gnuplot installed? (apt-get install gnuplot-nox)");
    return rc;
}

// Whether the figure can be drawn, asked before the methods run rather than after: 0, or 2 with
// a message (--plot a directory, or no gnuplot on the PATH).
static int plot_checked(const char *plot, char *err, size_t n) {
    struct stat sb;
    if (stat(plot, &sb) == 0 && S_ISDIR(sb.st_mode)) return snprintf(err, n, "--plot: %s is a directory", plot), 2;
    if (system("command -v gnuplot >/dev/null 2>&1"))
        return snprintf(err, n, "--plot: gnuplot is not installed (apt-get install gnuplot-nox)"), 2;
    return 0;
}

int cli_compare(const cli_args *a) {
    char err[600], dat_path[4200] = "";
    method_set ms;
    if (cli_refuse_ranks("compare", "it runs in one process (each rank would run every method and write the same files)"))
        return 2;
    if (plan_all(a, &ms, err, sizeof err)) {
        fprintf(stderr, "hypertape compare: %s\n", err);
        set_free(&ms);
        return 2;
    }
    if (a->plot && plot_checked(a->plot, err, sizeof err)) {
        fprintf(stderr, "hypertape compare: %s\n", err);
        set_free(&ms);
        return 2;
    }
    if (a->plot) snprintf(dat_path, sizeof dat_path, "%s.dat", a->plot);
    FILE *dat = a->plot ? fopen(dat_path, "w") : NULL;
    if (a->plot && !dat) {
        fprintf(stderr, "hypertape compare: cannot write %s: %s\n", dat_path, strerror(errno));
        set_free(&ms);
        return 2;
    }
    problem_facts pf = {.has_x = 1, .has_F = 1};
    int rc = 0;
    for (int k = 0; k < ms.n && !rc; k++) rc = compare_one(&ms.plans[k], k == 0, dat, dat_path, &pf, err, sizeof err);
    if (dat && fclose(dat) && !rc) rc = 1, snprintf(err, sizeof err, "cannot write %s", dat_path);
    if (!rc && a->plot) {
        char why[300];
        if (draw(a, &ms, dat_path, &pf, why, sizeof why)) {
            rc = 1;
            snprintf(err, sizeof err, "gnuplot failed drawing %s: %s", a->plot, why);
        } else {
            printf("figure: %s (data %s)\n", a->plot, dat_path);
        }
    }
    if (fflush(stdout) || ferror(stdout)) {
        if (!rc) snprintf(err, sizeof err, "cannot write the table: %s", strerror(errno ? errno : EIO));
        rc = rc ? rc : 1;
    }
    if (rc) fprintf(stderr, "hypertape compare: %s\n", err);
    set_free(&ms);
    return rc;
}
