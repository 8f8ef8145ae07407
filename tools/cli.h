// Shared by the `hypertape` subcommands: the parsed command line, the plan of a run (a problem with
// its settings and start, and a configured method), and the commands themselves. Every option of
// the methods, dynamics and solver comes from their settings tables (--ll-iters is ll_iters); the
// problems' from theirs (--set NAME=VALUE). Exit status: 0 done, 1 a run stopped by an error or
// output that could not be written, 2 bad usage (one line on stderr), 130 / 143 interrupted.
#ifndef HYPERTAPE_CLI_H
#define HYPERTAPE_CLI_H

#include "json.h"
#include "methods.h"
#include "models.h"

#include <stdint.h>
#include <stdio.h>

// One NAME=VALUE for the method, dynamics or solver, in command-line order.
typedef struct {
    const char *name; // the setting's name (ll_iters), or "dynamics"
    const char *value;
    const char *option; // as typed, for messages (--ll-iters)
} cli_assign;

typedef struct {
    const char *cmd;          // run, compare, gradcheck
    const char *problem;
    const char *method;       // run, gradcheck: METHOD[:DYNAMICS][+FLAG|+noFLAG ...]
    const char *methods;      // compare: comma-separated
    const char **sets;        // --set NAME=VALUE (the problem's)
    int n_sets;
    const char *start;        // --start: comma-separated x then y
    int start_index, has_start_index;
    const char *seed;         // --seed: the problem's seed setting
    const char *trace, *plot, *settings, *resume, *checkpoint;
    int checkpoint_every;     // 0: only at the end and on a signal
    int json;
    double rtol, atol;        // gradcheck
    cli_assign *opts;         // the settings tables' options, in order
    int n_opts;
    void *mem;                // what the arrays above live in
} cli_args;

// Parses argv (after the subcommand) into a; 0, or -1 with a one-line message.
int cli_parse(const char *cmd, int argc, char **argv, cli_args *a, char *err, size_t n);
void cli_args_free(cli_args *a);

// A run's plan: the problem (its entry, params and start) and the configured method.
typedef struct {
    const mdl_entry *entry;
    void *problem_params;     // [entry->params_size]
    int start_index;
    double *start;            // an explicit start (x then y), or NULL
    int n_start;
    blo_config *config;
    char label[96];           // the method as given (METHOD[:DYNAMICS][+FLAG])
} cli_plan;

// The plan for one method as given: the problem's defaults and --set; the method's defaults, the
// problem's paper settings for it, the dynamics and flags given with the method, then the command line's
// options (the dynamics chosen first, wherever it is named). With settings (an earlier run's
// "settings" object) the plan is that run's instead, with the command line's options on top.
// lenient: options the method does not have are skipped (compare checks them across methods).
// 0, or -1 with a one-line message.
int cli_plan_make(const cli_args *a, const char *given, const json_value *settings, int lenient,
                  cli_plan *p, char *err, size_t n);
void cli_plan_free(cli_plan *p);
// The settings an earlier run was made with: --resume's state file's or --settings's JSON (NULL
// with a message).
json_value *cli_earlier_settings(const cli_args *a, char *err, size_t n);
// The model of the plan and its start point (x0 [n_x], y0 [n_y], owned by the caller). 0, or -1.
int cli_plan_model(const cli_plan *p, mdl_model *m, double **x0, double **y0, char *err, size_t n);
// The plan as the "settings" object of the JSON report: every setting that affected the run.
void cli_plan_write_settings(const cli_plan *p, json_writer *w);
// A JSON report's beginning: {"problem": ..., "method": ..., "settings": {...}
void cli_json_begin(json_writer *w, FILE *f, const cli_plan *p);
// Whether some table the plan's method, dynamics or solver has knows this option's name.
int cli_plan_has(const cli_plan *p, const char *name);

// Help: the command's own options (cli_opts.c), then every settings table (generated).
void cli_print_command_options(FILE *f, const char *cmd);
void cli_print_help(FILE *f, const char *cmd);
// `hypertape list [PROBLEM]`.
int cli_list(int argc, char **argv);

int cli_run(const cli_args *a);
// 0 in one process; under mpirun on more than one rank, rank 0 prints "hypertape CMD: started by
// mpirun on N ranks, but WHY" and every rank gets 2 (the command's exit status).
int cli_refuse_ranks(const char *cmd, const char *why);
int cli_compare(const cli_args *a);
int cli_gradcheck(const cli_args *a);

#endif
