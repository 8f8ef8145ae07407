// Benchmark and introspection hooks of the bilevel layer: what a program needs to time a run or
// look inside it, not to make one (methods.h has that).
#ifndef HYPERTAPE_BLO_EXTRA_H
#define HYPERTAPE_BLO_EXTRA_H

#include "methods.h"

#ifdef __cplusplus
extern "C" {
#endif

// The solver's tape (its product kernel can be switched, its counters read).
ad_tape *blo_solver_tape(blo_solver *s);
// The method's direction at the current iterate, with F, f and the LL residual in rec, without a
// step: one UL iteration's work, for timing it.
blo_status blo_solver_direction(blo_solver *s, blo_record *rec, blo_error *err);
// The last direction taken: (g_x, g_z) [n_x + n_z].
const double *blo_solver_gradient(const blo_solver *s);

#ifdef __cplusplus
}
#endif

#endif
