// `hypertape run`: build the problem and the method from the command line (or an earlier run's
// settings, or a saved state), drive the solver, write the trace as the records come, save the
// state on request and on SIGINT / SIGTERM, and report (a line or JSON). The record callback and
// the summary are shared with `compare`.
#include "cli_record.h"
#include "comm.h"

#include <errno.h>
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

static double cpu_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// |F - F*| / (|F*| + 1): the papers' ||Phi - Phi*|| / (||Phi*|| + 1)
static double F_gap(const mdl_model *m, double F) {
    return isnan(m->F_star) ? NAN : fabs(F - m->F_star) / (fabs(m->F_star) + 1);
}

// ||x - x*|| / ||x*||, or the model's distance to its optimal set when x* is unknown (coreset)
static double x_error(const mdl_model *m, const double *x, const double *y) {
    double e = mdl_x_error(m, x);
    return isnan(e) && m->optimal_gap && y ? m->optimal_gap(m, x, y) : e;
}

// The columns: the record's, the model's metrics (learning tasks), then whether it is the final one.
static void trace_header(FILE *f, const mdl_model *m) {
    fputs("t,F,f,F_gap,x_err,grad_norm,ll_residual,kbar,seconds,extra,", f);
    for (int k = 0; k < m->n_metrics; k++) fprintf(f, "%s,", m->metrics[k].name);
    fputs("final\n", f);
}

// The model's metrics at (x, y), or of (x, z) for a meta-learning model, into v [n_metrics]: 0, or
// -1 with a message; 1 when it has none.
static int model_metrics(const mdl_model *m, const double *x, const double *y, const double *z, int n_z,
                         double *v, char *err, size_t errlen) {
    if (m->evaluate_z) return m->evaluate_z(m, x, z, n_z, v, err, errlen);
    return m->evaluate ? m->evaluate(m, x, y, v, err, errlen) : 1;
}

// The model's metrics into v [n_metrics]; NaN when it has none or they fail.
static void metrics_at(const mdl_model *m, const blo_record *r, int n_z, double *v) {
    char err[256];
    for (int k = 0; k < MDL_METRICS_MAX; k++) v[k] = NAN;
    if (model_metrics(m, r->x, r->y, r->z, n_z, v, err, sizeof err))
        for (int k = 0; k < MDL_METRICS_MAX; k++) v[k] = NAN;
}

static int write_failed(run_log *l, const char *path) {
    snprintf(l->failure, sizeof l->failure, "cannot write %s: %s", path, strerror(errno ? errno : EIO));
    return 1; // stop the run: its output is being lost
}

// The record callback (user = run_log): the trace's row, the figure's, progress, periodic saves, and
// the stop a signal asks for.
static int on_record(const blo_record *r, void *user) {
    run_log *l = user;
    if (r->final) l->final = *r;
    double xe = x_error(l->m, r->x, r->y);
    double ev[MDL_METRICS_MAX];
    int nm = l->m->n_metrics;
    if (l->trace || l->dat) metrics_at(l->m, r, blo_solver_n_z(l->s), ev); // learning tasks: a pass over the test set
    errno = 0;
    if (l->trace) {
        int bad = fprintf(l->trace, "%d,%.17g,%.17g,%.6g,%.6g,%.6g,%.6g,%d,%.6g,%.6g,", r->t, r->F, r->f,
                          F_gap(l->m, r->F), xe, r->grad_norm, r->ll_residual, r->kbar, r->seconds, r->extra) < 0;
        for (int k = 0; k < nm; k++) bad |= fprintf(l->trace, "%.6g,", ev[k]) < 0;
        if (bad || fprintf(l->trace, "%d\n", r->final) < 0 || fflush(l->trace)) return write_failed(l, l->trace_path);
    }
    if (l->dat) {
        int bad = fprintf(l->dat, "%d %.6g %.6g %.10g", r->t, F_gap(l->m, r->F), xe, r->F) < 0;
        for (int k = 0; k < nm; k++) bad |= fprintf(l->dat, " %.6g", ev[k]) < 0;
        if (bad || fputc('\n', l->dat) == EOF) return write_failed(l, l->dat_path);
    }
    double t = now();
    if (l->progress && (t - l->last_progress > 0.2 || r->final)) {
        fprintf(stderr, "\r%s %d/%d  F %.6g  x_err %.3g  ", l->label, r->t + !r->final, l->T, r->F, xe);
        if (r->final) fputc('\n', stderr);
        l->last_progress = t;
    }
    int done = blo_solver_iterations(l->s);
    if (!r->final && l->checkpoint && l->every && done % l->every == 0) {
        blo_error e;
        if (blo_solver_save(l->s, l->checkpoint, l->meta, &e)) {
            snprintf(l->failure, sizeof l->failure, "%s", e.msg);
            return 1;
        }
    }
    return l->signal && *l->signal;
}

void cli_run_solver(blo_solver *s, run_log *log, run_result *res) {
    memset(res, 0, sizeof *res);
    const mdl_model *m = log->m;
    blo_solver_set_record(s, on_record, log);
    double t0 = now();
    log->final = (blo_record){.F = NAN, .f = NAN, .ll_residual = NAN};
    res->status = blo_solver_run(s);
    res->seconds = now() - t0;
    if (res->status && res->status != BLO_STOPPED) snprintf(res->error, sizeof res->error, "%s", blo_solver_error(s));
    if (log->failure[0]) res->status = BLO_EIO, snprintf(res->error, sizeof res->error, "%s", log->failure);
    // the final record: F, f and the residual at the returned x with the method's LL solution
    const blo_record rec = log->final;
    int fs = !rec.final || !isfinite(rec.F);
    res->x = blo_solver_x(s);
    res->z = blo_solver_z(s), res->n_z = blo_solver_n_z(s);
    res->done = blo_solver_iterations(s);
    res->F = rec.F, res->f = rec.f, res->ll_residual = rec.ll_residual;
    res->x_err = mdl_x_error(m, res->x);
    res->F_gap = F_gap(m, res->F);
    res->gap = m->optimal_gap && !fs ? m->optimal_gap(m, res->x, rec.y) : NAN;
    res->kbar_mean = blo_solver_kbar_mean(s);
    if ((m->evaluate || m->evaluate_z) && !fs) {
        char e2[400];
        int rc = model_metrics(m, res->x, rec.y, res->z, res->n_z, res->eval, e2, sizeof e2);
        res->has_eval = rc == 0;
        if (rc < 0 && !res->status) res->status = BLO_ETAPE, snprintf(res->error, sizeof res->error, "%s", e2);
    }
}

// ---- run ---------------------------------------------------------------------------------------------

// The signal that asked the run to stop (0: none). A handler can only set a flag: this one is the
// command's, as the signal is the process's.
static volatile sig_atomic_t stop_signal;

static void on_signal(int sig) { stop_signal = sig; }

// SIGINT and SIGTERM stop the run after its current UL iteration; a second one kills at once.
static void catch_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

// The plan's settings as the text a state file keeps: {"settings": {...}}.
static char *settings_text(const cli_plan *p) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    json_writer w;
    json_begin(&w, f);
    json_key(&w, "settings");
    cli_plan_write_settings(p, &w);
    json_end(&w);
    if (fclose(f)) {
        free(buf);
        return NULL;
    }
    return buf;
}

static void report_json(FILE *o, const cli_plan *p, const mdl_model *m, const run_result *r,
                        const blo_comm *comm) {
    json_writer w;
    cli_json_begin(&w, o, p);
    json_key(&w, "x");
    json_numbers(&w, r->x, m->prob.n_x);
    if (r->n_z) { // what a meta-learning method learns (n_x may be 0)
        json_key(&w, "z");
        json_numbers(&w, r->z, r->n_z);
    }
    const char *keys[] = {"F", "f", "ll_residual", "x_err", "gap"};
    const double vals[] = {r->F, r->f, r->ll_residual, r->x_err, r->gap};
    for (int k = 0; k < 5; k++) json_key(&w, keys[k]), json_number(&w, vals[k]);
    json_key(&w, "ul_iters");
    json_int(&w, r->done);
    json_key(&w, "seconds");
    json_number(&w, r->seconds);
    json_key(&w, "sec_per_ul_iter");
    json_number(&w, r->done ? r->seconds / r->done : NAN);
    json_key(&w, "kbar_mean");
    json_number(&w, r->kbar_mean);
    // across processes: the ranks, and what rank 0 took part in (collectives, bytes received)
    json_key(&w, "ranks");
    json_int(&w, blo_comm_size(comm));
    json_key(&w, "comm_messages");
    json_int(&w, comm ? comm->messages : 0);
    json_key(&w, "comm_bytes");
    json_int(&w, comm ? comm->bytes : 0);
    json_key(&w, "comm_seconds"); // wall, waiting for the other ranks included
    json_number(&w, comm ? comm->seconds : 0);
    json_key(&w, "comm_cpu_seconds");
    json_number(&w, comm ? comm->cpu_seconds : 0);
    json_key(&w, "cpu_seconds"); // the process's, so far: what the ranks compute is this less the above
    json_number(&w, cpu_now());
    for (int k = 0; r->has_eval && k < m->n_metrics; k++) json_key(&w, m->metrics[k].name), json_number(&w, r->eval[k]);
    json_key(&w, "error");
    if (r->status) json_string(&w, r->error);
    else json_null(&w);
    json_end(&w);
}

static void report_text(FILE *o, const cli_plan *p, const mdl_model *m, const run_result *r) {
    // with n_x = 0 what the run learned is z, the LL start
    int nx = m->prob.n_x ? m->prob.n_x : r->n_z;
    const double *v = m->prob.n_x ? r->x : r->z;
    fprintf(o, "%s on %s\n  %s =", p->label, p->entry->name, m->prob.n_x ? "x" : "z");
    for (int i = 0; i < nx && i < 8; i++) fprintf(o, " %.6g", v[i]);
    fprintf(o, "%s\n  F = %.10g  f = %.10g  x_err = %.3g  LL residual %.3g", nx > 8 ? " ..." : "", r->F,
            r->f, r->x_err, r->ll_residual);
    if (!isnan(r->gap)) fprintf(o, "  gap to the optimal set = %.3g", r->gap);
    fprintf(o, "  %d UL iterations in %.3f s", r->done, r->seconds);
    if (!isnan(r->kbar_mean)) fprintf(o, "  Kbar mean %.2f", r->kbar_mean);
    for (int k = 0; r->has_eval && k < m->n_metrics; k++)
        fprintf(o, "%s%s %.6g", k ? "  " : "\n  ", m->metrics[k].title, r->eval[k]);
    fputc('\n', o);
}

// Everything a run holds, freed together.
typedef struct {
    json_value *earlier;
    cli_plan plan;
    mdl_model m;
    double *x0;
    blo_solver *s;
    char *meta;
    FILE *trace;
    blo_comm *comm; // under mpirun (an MPI build): the ranks; else NULL, one process
    int rank;       // only rank 0 writes files and prints
} run_parts;

static void parts_free(run_parts *r) {
    blo_solver_free(r->s);
    blo_comm_free(r->comm);
    if (r->trace) fclose(r->trace);
    free(r->x0), free(r->meta);
    mdl_free(&r->m);
    cli_plan_free(&r->plan);
    json_free(r->earlier);
}

// The plan, model, solver (loaded from --resume's state), the checkpoints' meta and the trace;
// 2 with a message on bad usage.
static int run_setup(const cli_args *a, run_parts *r, char *err, size_t n) {
    double *y0;
    blo_error be;
    if ((a->resume || a->settings) && !(r->earlier = cli_earlier_settings(a, err, n))) return 2;
    if (cli_plan_make(a, a->method, r->earlier, 0, &r->plan, err, n)) return 2;
    if (cli_plan_model(&r->plan, &r->m, &r->x0, &y0, err, n)) return 2;
    if (mdl_set_comm(&r->m, r->comm, err, n)) return 2;
    if (!(r->s = blo_solver_new(&r->m.prob, r->plan.config, r->x0, y0, r->m.z_prior, &be))) {
        snprintf(err, n, "%s", be.msg);
        return 2;
    }
    if (a->resume && blo_solver_load(r->s, a->resume, &be)) {
        snprintf(err, n, "--resume %s", be.msg);
        return 2;
    }
    // rank 0 alone saves; a path it cannot write stops the run now, not at its first save
    if (a->checkpoint && r->rank == 0 && blo_solver_save_check(a->checkpoint, &be)) {
        snprintf(err, n, "--checkpoint: %s", be.msg);
        return 2;
    }
    if (a->checkpoint && !(r->meta = settings_text(&r->plan))) {
        snprintf(err, n, "out of memory");
        return 2;
    }
    if (a->trace && r->rank == 0) {
        // a resumed run goes on with the trace it had (each record says which iterate it is)
        int append = a->resume && access(a->trace, F_OK) == 0;
        if (!(r->trace = fopen(a->trace, append ? "a" : "w"))) {
            snprintf(err, n, "cannot write %s: %s", a->trace, strerror(errno));
            return 2;
        }
        if (!append) trace_header(r->trace, &r->m);
    }
    return 0;
}

// Whether the command was started by mpirun (Open MPI's, or a PMI launcher's variables): then an
// MPI build runs across the ranks; otherwise it is one process and MPI is never initialized.
static int under_mpirun(void) {
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMI_SIZE") || getenv("PMIX_RANK");
}

// The ranks mpirun started (Open MPI's or a PMI launcher's variables; 1 when none) and this one's.
static int mpirun_ranks(int *rank) {
    const char *n = getenv("OMPI_COMM_WORLD_SIZE"), *r = getenv("OMPI_COMM_WORLD_RANK");
    if (!n) n = getenv("PMI_SIZE"), r = getenv("PMI_RANK");
    *rank = r ? atoi(r) : 0;
    return n && atoi(n) > 1 ? atoi(n) : 1;
}

int cli_refuse_ranks(const char *cmd, const char *why) {
    int rank, n = mpirun_ranks(&rank);
    if (n == 1) return 0;
    if (rank == 0) fprintf(stderr, "hypertape %s: started by mpirun on %d ranks, but %s\n", cmd, n, why);
    return 2;
}

// Whether every rank set up: one all-gather of each rank's status and message, so that a failure
// on one rank (the trace, which rank 0 alone opens; memory) stops every rank here instead of
// leaving the others waiting in the run's first collective. Returns the first failing rank's
// status, its message in err (from another rank: "rank R: ..."), or 0.
static int setup_agreed(run_parts *r, int rc, char *err, size_t n) {
    int size = blo_comm_size(r->comm);
    if (size == 1) return rc;
    typedef struct {
        int32_t rc;
        char msg[252];
    } part;
    part mine, *all = calloc((size_t)size, sizeof mine);
    size_t *counts = calloc((size_t)size, sizeof *counts);
    memset(&mine, 0, sizeof mine);
    mine.rc = rc;
    if (rc) snprintf(mine.msg, sizeof mine.msg, "%.*s", (int)sizeof mine.msg - 1, err);
    blo_error e;
    for (int k = 0; counts && k < size; k++) counts[k] = sizeof mine;
    if (!all || !counts) rc = 2, snprintf(err, n, "out of memory");
    else if (blo_comm_allgatherv(r->comm, &mine, all, counts, &e)) rc = 2, snprintf(err, n, "%s", e.msg);
    for (int k = 0; all && counts && !rc && k < size; k++)
        if (all[k].rc && k == 0) rc = all[k].rc, snprintf(err, n, "%s", all[k].msg); // as one process says it
        else if (all[k].rc) rc = all[k].rc, snprintf(err, n, "rank %d: %s", k, all[k].msg);
    free(all), free(counts);
    return rc;
}

int cli_run(const cli_args *a) {
    char err[600];
    run_parts r;
    memset(&r, 0, sizeof r);
    blo_error ce;
    // each rank would run the whole problem
    if (!blo_comm_mpi_built() && cli_refuse_ranks("run", "it was built without MPI (meson setup -Dmpi=enabled)"))
        return 2;
    if (blo_comm_mpi_built() && under_mpirun() && !(r.comm = blo_comm_mpi_new(&ce))) {
        fprintf(stderr, "hypertape run: %s\n", ce.msg);
        return 2;
    }
    r.rank = blo_comm_rank(r.comm);
    int rc = setup_agreed(&r, run_setup(a, &r, err, sizeof err), err, sizeof err);
    if (rc) {
        if (r.rank == 0) fprintf(stderr, "hypertape run: %s\n", err);
        parts_free(&r);
        return rc;
    }
    stop_signal = 0;
    catch_signals();
    run_log log = {.m = &r.m, .s = r.s, .label = r.plan.label, .T = blo_config_solve_params(r.plan.config)->T,
                   .trace = r.trace, .trace_path = a->trace, .progress = r.rank == 0 && isatty(2),
                   .checkpoint = r.rank == 0 ? a->checkpoint : NULL,
                   .every = a->checkpoint_every, .meta = r.meta, .signal = &stop_signal};
    run_result res;
    cli_run_solver(r.s, &log, &res);
    // a signal that stopped a healthy run (after an error, the error is the report)
    bool healthy = res.status == BLO_OK || res.status == BLO_STOPPED;
    int sig = stop_signal;
    if (sig && healthy) {
        snprintf(res.error, sizeof res.error, "interrupted by %s after %d UL iterations%s%s",
                 sig == SIGINT ? "SIGINT" : "SIGTERM", res.done, a->checkpoint ? "; state saved to " : "",
                 a->checkpoint ? a->checkpoint : "");
        res.status = BLO_STOPPED;
    }
    // the state at the end, or where a signal stopped it (not after an error: the last periodic
    // save stands)
    blo_error be;
    if (a->checkpoint && r.rank == 0 && healthy && blo_solver_save(r.s, a->checkpoint, r.meta, &be))
        res.status = BLO_EIO, snprintf(res.error, sizeof res.error, "%s", be.msg);
    errno = 0;
    if (r.rank != 0) { // the other ranks print nothing: their results are rank 0's
        int status = res.status ? 1 : 0;
        parts_free(&r);
        return sig ? 128 + sig : status;
    }
    if (a->json) report_json(stdout, &r.plan, &r.m, &res, r.comm);
    else report_text(stdout, &r.plan, &r.m, &res);
    int out_failed = fflush(stdout) != 0 || ferror(stdout);
    FILE *trace = r.trace;
    r.trace = NULL;
    if (trace && fclose(trace) && !res.status)
        res.status = BLO_EIO, snprintf(res.error, sizeof res.error, "cannot write %s", a->trace);
    if (out_failed) fprintf(stderr, "hypertape run: cannot write the report: %s\n", strerror(errno ? errno : EIO));
    else if (res.status) fprintf(stderr, "hypertape run: stopped: %s\n", res.error);
    parts_free(&r);
    if (sig) return 128 + sig;
    return out_failed || res.status ? 1 : 0;
}
