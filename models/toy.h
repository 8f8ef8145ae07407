// Private to models/: the storage every toy model carves its arrays from, and the helpers the toy
// files (toys.c, quadratic.c, meta.c) share.
#ifndef HYPERTAPE_MODELS_TOY_H
#define HYPERTAPE_MODELS_TOY_H

#include "models.h"

#include <stdlib.h>

// A model's data: the constants its callbacks read (by model) and one zeroed allocation that
// every array the model points to (boxes, optimum, starts, constants) is carved from.
typedef struct {
    int n, m;             // sizes: n (llc, lls, nonconvex; quadratic n_y), m (quadratic n_x)
    double a, rho;        // nonconvex / sin: a; quadratic: rho
    const double *c;      // nonconvex: c [n]
    const double *X, *target;       // coreset: X [2, 4], x0 [2]
    const double *A, *B, *b;        // quadratic: A [n, n], B [n, m], b [n]
    double diag, off;               // tridiagonal quadratic: A's constant diagonal and off-diagonal
    double *mem;
    size_t used, cap;
} toy;

static inline void toy_free(mdl_model *m) {
    toy *d = m->data;
    if (d) free(d->mem), free(d);
    m->data = NULL;
}

static inline toy *toy_new(mdl_model *m, size_t n_doubles) {
    toy *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    m->data = d;
    m->free_data = toy_free; // set at once: mdl_make frees a half-made model on failure
    d->mem = calloc(n_doubles ? n_doubles : 1, sizeof(double));
    d->cap = n_doubles;
    return d->mem ? d : NULL;
}

static inline double *toy_take(toy *d, size_t n) {
    double *p = d->mem + d->used; // calloc'd: zero until written
    d->used += n;
    return p;
}

static inline double *fill(double *p, size_t n, double v) {
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}

static inline int oom(const char *model, char *err, size_t errlen) {
    return mdl_fail(err, errlen, "problem %s: out of memory", model);
}

#endif
