// What `run` and `compare` share: a run's log (the trace and the figure's data, written as the
// records come so nothing is held per iteration) and the end-of-run summary.
#ifndef HYPERTAPE_CLI_RECORD_H
#define HYPERTAPE_CLI_RECORD_H

#include "cli.h"

#include <signal.h>

typedef struct {
    const mdl_model *m;
    blo_solver *s;
    const char *label;
    int T;
    FILE *trace, *dat;         // a CSV row per record; a figure data row per record
    const char *trace_path, *dat_path;
    int progress;              // stderr is a terminal
    double last_progress;
    const char *checkpoint;    // save every `every` iterations (with meta) when set
    int every;
    const char *meta;
    volatile sig_atomic_t *signal; // set by SIGINT / SIGTERM: stop after this iteration
    char failure[400];         // an output that could not be written (the run stops)
    blo_record final;          // the run's final record (its y stays the solver's)
} run_log;


// What a run ends with: the final iterate's values (its last record's) and the learning task's
// evaluation there.
typedef struct {
    blo_status status;
    char error[440];
    const double *x;     // the solver's
    const double *z;     // the solver's second variable (the learned LL start, BOME's y) [n_z]
    int n_z;             // 0: none
    double F, f, ll_residual, x_err, gap, F_gap, seconds, kbar_mean;
    int done;            // UL iterations done in all (a resumed run counts the earlier ones)
    int has_eval;
    double eval[MDL_METRICS_MAX]; // the model's metrics (m->metrics), when has_eval
} run_result;

// Runs s (its record callback writing log) and fills res from the final record.
void cli_run_solver(blo_solver *s, run_log *log, run_result *res);

#endif
