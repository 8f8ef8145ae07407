// hypertape models: the papers' problems as bilevel problems (blo_problem) with their known
// optima, start points and settable parameters, and data hyper-cleaning on MNIST-format data.
// A model is made by name with NAME=VALUE settings; it owns everything it points to.
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

// Test-set evaluation of a learning task at (x, y): accuracy and F1 of the "clean" prediction
// sigma(x_i) >= 1/2 against the truth, both in percent.
typedef struct {
    double test_acc, f1;
} mdl_eval;

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
    // Learning tasks: evaluation on held-out data (NULL for the toys).
    int (*evaluate)(const mdl_model *m, const double *x, const double *y, mdl_eval *out, char *err,
                    size_t errlen);
    // Prior for the initialization auxiliary (AIT_P): z_p [n_y] (NULL: none known).
    const double *z_prior;
    void *data;             // owned storage
    void (*free_data)(mdl_model *m);
};

typedef struct {
    const char *name;
    const char *summary;    // one line for `hypertape list`
    const char *source;     // which paper, equation or example
    const char *params;     // the settable parameters with defaults, e.g. "n=20"
    // Builds the model from NAME=VALUE settings (n_set of them). Returns 0, or -1 with a one-line
    // message naming the bad setting.
    int (*make)(mdl_model *m, int n_set, const char *const *set, char *err, size_t errlen);
    // The settings that reproduce the papers for this problem and method (c and s arrive holding
    // the method's generic defaults; K, step sizes, T, ...). NULL: keep the generic ones.
    void (*defaults)(const char *method, blo_method_config *c, blo_solve_params *s);
} mdl_entry;

// The entries, one per model, each defined next to its model's code (toys.c, hyperclean.c).
extern const mdl_entry mdl_counterexample_entry, mdl_llc_entry, mdl_lls_entry, mdl_nonconvex_entry,
    mdl_sin_entry, mdl_coreset_entry, mdl_minimax_entry, mdl_degenerate_entry, mdl_pl_entry,
    mdl_quadratic_entry, mdl_hyperclean_entry;

// All models, NULL-terminated, in `hypertape list` order.
const mdl_entry *const *mdl_registry(void);
const mdl_entry *mdl_find(const char *name);
int mdl_make(const char *name, int n_set, const char *const *set, mdl_model *m, char *err, size_t errlen);
void mdl_free(mdl_model *m);

// ||x - x*|| / ||x*||, or ||x - x*|| when x* = 0; NaN if x* is unknown.
double mdl_x_error(const mdl_model *m, const double *x);

// Parsing helpers for make(): finds "key=value" among the settings. Each returns 0 (found or
// not: *out keeps its default) or -1 with a message (bad number, unknown key are checked by
// mdl_check_keys).
int mdl_set_double(int n_set, const char *const *set, const char *key, double *out, char *err, size_t errlen);
int mdl_set_int(int n_set, const char *const *set, const char *key, int *out, char *err, size_t errlen);
int mdl_set_string(int n_set, const char *const *set, const char *key, const char **out);
// -1 with "unknown setting 'k' for model NAME (known: a, b)" if a setting's key is not in keys.
int mdl_check_keys(const char *model, int n_set, const char *const *set, const char *const *keys,
                   char *err, size_t errlen);

#ifdef __cplusplus
}
#endif

#endif
