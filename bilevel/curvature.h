// Second derivatives of f at one point (x, y), for the implicit estimators and GALET: grad_y f is
// recorded once with its graph; each product is then one reverse sweep, and the tape goes back to
// the mark after it. Internal to bilevel/.
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

#endif
