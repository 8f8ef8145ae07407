// hypertape models: the papers' problems as bilevel problems (blo_problem) with their known
// optima, start points, settings (a table, like every method's) and the settings that reproduce
// each paper per method (as data), and data hyper-cleaning on MNIST-format data. A model is
// made from its entry and a params struct; it owns everything it points to.
#ifndef HYPERTAPE_MODELS_H
#define HYPERTAPE_MODELS_H

#include "blo.h"
#include "data.h"
#include "methods.h"

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mdl_model mdl_model;

// A learning task's metric on held-out data: its name (the JSON key and the trace's column:
// "test_acc", "f1", "modes") and a title for tables and figures ("test accuracy (%)").
typedef struct {
    const char *name;
    const char *title;
} mdl_metric;

enum { MDL_METRICS_MAX = 8 }; // metrics a model reports, at most

struct mdl_model {
    const char *name;
    blo_problem prob;       // n_x, n_y, F, f, boxes, user = this model's data
    // Known optimum, where the paper gives one (NULL / NaN otherwise). y_star is one point of
    // the LL solution set; optimal_gap, if set, measures the distance of (x, y) to the optimal set.
    const double *x_star, *y_star;
    double F_star;
    double (*optimal_gap)(const mdl_model *m, const double *x, const double *y);
    // Start points: n_starts pairs, x0 [n_x] then y0 [n_y] each; start 0 is the default.
    int n_starts;
    const double *x0[4], *y0[4];
    // Learning tasks: metrics [n_metrics] (at most MDL_METRICS_MAX) of (x, y) on held-out data,
    // evaluate filling values [n_metrics] in their order; 0, or -1 with a message (NULL for the toys).
    const mdl_metric *metrics;
    int n_metrics;
    int (*evaluate)(const mdl_model *m, const double *x, const double *y, double *values, char *err,
                    size_t errlen);
    // Meta-learning tasks: the metrics of x and the learned LL start z [n_z] (NULL, 0 when the
    // method learns none), used instead of evaluate when set.
    int (*evaluate_z)(const mdl_model *m, const double *x, const double *z, int n_z, double *values,
                      char *err, size_t errlen);
    // Prior for the initialization auxiliary (AIT_P): z_p [n_y] (NULL: none known).
    const double *z_prior;
    void *data;             // owned storage
    void (*free_data)(mdl_model *m);
    // Data-parallel models: spread the model's shards over c's ranks (NULL: none; mdl_set_comm).
    int (*set_comm)(mdl_model *m, struct blo_comm *c, char *err, size_t errlen);
};

// Settings that reproduce a paper: for one method (its registry name) or for every method ("*"),
// "NAME=VALUE ..." of the method's, its dynamics' and the solver's settings, applied in the
// table's order after the method's defaults. A name a method does not have is skipped for it.
typedef struct {
    const char *method;
    const char *settings;
} mdl_paper_row;

typedef struct {
    const char *name;
    const char *summary;    // one line for `hypertape list`
    const char *source;     // which paper, equation or example
    size_t params_size;     // the model's params struct (0: it has none)
    const void *defaults;
    const blo_setting *settings;
    // Builds the model from its params (checked against the table's bounds first). Returns 0, or
    // -1 with a one-line message naming the bad setting.
    int (*make)(mdl_model *m, const void *params, char *err, size_t errlen);
    const mdl_paper_row *papers; // ended by {NULL, NULL}
} mdl_entry;

// The entries, one per model, each defined next to its model's code (toys.c, hyperclean.c, pentagram.c,
// nas.c).
extern const mdl_entry mdl_counterexample_entry;
extern const mdl_entry mdl_llc_entry;
extern const mdl_entry mdl_lls_entry;
extern const mdl_entry mdl_nonconvex_entry;
extern const mdl_entry mdl_sin_entry;
extern const mdl_entry mdl_coreset_entry;
extern const mdl_entry mdl_minimax_entry;
extern const mdl_entry mdl_degenerate_entry;
extern const mdl_entry mdl_pl_entry;
extern const mdl_entry mdl_quadratic_entry;
extern const mdl_entry mdl_hyperclean_entry;
extern const mdl_entry mdl_meta_entry;
extern const mdl_entry mdl_pentagram_entry;
extern const mdl_entry mdl_nas_entry;
extern const mdl_entry mdl_sinusoid_entry;
extern const mdl_entry mdl_fewshot_entry;

// All models, NULL-terminated, in `hypertape list` order.
const mdl_entry *const *mdl_registry(void);
const mdl_entry *mdl_find(const char *name);
// params: the model's params struct (NULL = its defaults).
int mdl_make(const mdl_entry *e, const void *params, mdl_model *m, char *err, size_t errlen);
// By name with "NAME=VALUE ..." settings (the same parser as the command line's --set).
int mdl_make_named(const char *name, const char *settings, mdl_model *m, char *err, size_t errlen);
void mdl_free(mdl_model *m);
// Runs m across the ranks of c (bilevel/comm.h; NULL: one process): its problem's comm (a task
// set's batch is split) and its shards (a sharded model's sums). Before a solver is made on it.
// 0, or -1 with a message.
int mdl_set_comm(mdl_model *m, struct blo_comm *c, char *err, size_t errlen);

// Whether a paper row applies to method m ("*", or the row's name is m's in the registry).
int mdl_paper_row_applies(const mdl_paper_row *row, const blo_method_type *m);
// The configuration that reproduces the papers for method m on this problem: m's defaults, the
// dynamics named (NULL: the rows' choice, else m's default; it is set before anything else), then
// the rows that apply, in order, each setting m, its dynamics or the solver has (others are
// skipped: a row for every method names some that only some have). NULL with a message.
blo_config *mdl_paper_config(const mdl_entry *e, const blo_method_type *m, const char *dynamics,
                             char *err, size_t errlen);

// The index of the metric named name among m's, or -1.
int mdl_metric_find(const mdl_model *m, const char *name);

// ||x - x*|| / ||x*||, or ||x - x*|| when x* = 0; NaN if x* is unknown.
double mdl_x_error(const mdl_model *m, const double *x);

#ifdef __cplusplus
}
#endif

#endif
