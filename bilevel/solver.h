// The solver's insides, shared by solver.c, checkpoint.c (its state file) and check.c (a
// hypergradient's check uses one direction). Private to bilevel/.
#ifndef HYPERTAPE_BLO_SOLVER_H
#define HYPERTAPE_BLO_SOLVER_H

#include "blo_extra.h"
#include "internal.h"

struct blo_solver {
    const blo_problem *p;
    blo_config *c;            // resolved copy
    const blo_method_type *m; // the configuration's, or it wrapped to run on batches (tasks_type)
    blo_method_type tasks_type;
    void *state;              // the method's
    blo_dynamics dyn;
    bool has_dyn;
    int nx, ny, nz;
    int t;                    // UL iterations done
    double *x;                // the iterate [nx]
    double *y0, *z_prior;     // copies [ny] (the method's env points at them)
    double *y;                // the LL iterate of the last direction or report [ny]
    double *gy;               // grad_y f scratch [ny]
    double *mem;              // x, y0, z_prior, y, gy
    double *z;                // [nz] (NULL when nz = 0)
    double *g, *mom, *sec;    // direction and optimizer moments [nx + nz] each
    double *keep;             // x_t, z_t [nx + nz]: the last good iterate during a step
    double *zmem;             // z, g, mom, sec, keep
    ad_tape *tape;
    ad_rng rng;
    blo_record_fn record;
    void *record_user;
    bool stop;                // the record callback asked to stop
    bool broken;              // a load failed half way: the state is not one to go on from
    double kbar_sum;
    int64_t kbar_n;
    char error[400];
};

// Fills out with base run on batches of tasks (tasks.c), for a problem with a task set. Returns out.
const blo_method_type *blo_tasks_wrap(blo_method_type *out, const blo_method_type *base);

// Allocates z and the optimizer's vectors once nz is known.
blo_status blo_solver_alloc_z(blo_solver *s, blo_error *err);

#endif
