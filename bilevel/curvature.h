// Second derivatives of f at one point (x, y), for the implicit estimators and GALET: grad_y f is
// recorded once with its graph; each product is then one reverse sweep, and the tape goes back to
// the mark after it. And the implicit solvers (CG, Neumann, MINRES, GMRES) on any operator given by
// its products. Internal to bilevel/.
#ifndef HYPERTAPE_BLO_CURVATURE_H
#define HYPERTAPE_BLO_CURVATURE_H

#include "internal.h"

typedef struct {
    ad_tape *t;
    ad_var x, y, gy; // params at the point, grad_y f [n_y] with its graph
    int nx, ny;
    ad_mark m;       // after gy
} blo_curv;

// Records x, y and grad_y f(x, y) on t; false if the tape holds an error.
bool blo_curv_record(blo_curv *c, ad_tape *t, const blo_problem *p, const double *x, const double *y);
// out [n_y] = (d²f/dy²) v
bool blo_curv_hvp(blo_curv *c, const double *v, double *out);
// out [n_x] = (d²f/dx dy) v = d/dx <grad_y f, v>
bool blo_curv_mixed(blo_curv *c, const double *v, double *out);

// ---- the implicit solvers on any linear operator (implicit.c) ----

// A linear operator on [n]: out = A v; false when the tape failed (it holds why).
typedef struct {
    int n;
    ad_tape *t; // where a solver's own error goes (Neumann's divergence)
    bool (*apply)(void *ctx, const double *v, double *out);
    void *ctx;
} blo_linop;

// The doubles of work blo_linop_solve needs for ip's solver on a system of size n.
double blo_linop_work(const blo_implicit_params *ip, int n);
// q [n] with A q ~ g [n] from q = 0 by ip's solver (ip checked by the caller), w its work; info
// gets iterations, residual and breakdown. false when a product failed (the tape holds why).
bool blo_linop_solve(const blo_linop *A, const blo_implicit_params *ip, const double *g, double *q,
                     double *w, blo_implicit_info *info);

#endif
