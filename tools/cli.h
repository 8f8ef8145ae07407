// Shared by the `hypertape` subcommands: the parsed command line, the method-option table, and
// the commands themselves. Exit status: 0 done, 1 a run stopped by an error, 2 bad usage.
#ifndef HYPERTAPE_CLI_H
#define HYPERTAPE_CLI_H

#include "methods.h"
#include "models.h"

#include <stdint.h>
#include <stdio.h>

enum { CLI_MAX_SETS = 64, CLI_MAX_OPTS = 128 };

typedef struct {
    const char *cmd;          // run, compare, gradcheck
    const char *problem;
    const char *method;       // run, gradcheck
    const char *methods;      // compare: comma-separated
    const char *sets[CLI_MAX_SETS];
    int n_sets;
    const char *start;        // comma-separated x then y
    int start_index;          // which of the model's start points (default 0)
    uint64_t seed;
    int has_seed;
    const char *trace, *plot;
    int json;
    // method and loop options, applied after the defaults in order: name, value (NULL for flags)
    const char *opt_name[CLI_MAX_OPTS], *opt_val[CLI_MAX_OPTS];
    int n_opt;
} cli_args;

// Every settable method / loop option; 0 on success, -1 with a message in err.
typedef struct {
    blo_method_config c;
    blo_solve_params s;
} cli_settings;

// Parses argv (after the subcommand) into a; 0, or -1 with a one-line message.
int cli_parse(const char *cmd, int argc, char **argv, cli_args *a, char *err, size_t n);
// The settings for one method on one problem: the method's defaults, the problem's defaults
// for it, then the command line's options. Returns 0 or -1 with a message.
int cli_settings_for(const cli_args *a, const mdl_entry *e, const char *method, cli_settings *st,
                     char *err, size_t n);
// Builds the model with --set and --seed applied, and its start point (from --start or the
// model's start_index); x0 [n_x] and y0 [n_y] are allocated. want_prior: the method uses an IA
// prior, so a model with a `prior` setting is made with prior=1 (unless --set says otherwise).
// 0, or -1 with a message.
int cli_make_model(const cli_args *a, mdl_model *m, double **x0, double **y0, int want_prior,
                   char *err, size_t n);
void cli_print_options(FILE *f);
// The settings as one line ("K=20 s_l=0.1 ...") for `list PROBLEM`.
void cli_describe(FILE *f, const cli_settings *st);

int cli_run(const cli_args *a);
int cli_compare(const cli_args *a);
int cli_gradcheck(const cli_args *a);

#endif
