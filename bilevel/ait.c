// ait: "Augmenting Iterative Trajectory for Bilevel Optimization" (AIT; IAPTT-GM extended):
// the initialization auxiliary z (Eq. 5), optimized with x, and pessimistic trajectory
// truncation at Kbar = argmax_k F(x, y_k) (Alg. 3, AIT_NC), on any dynamics. With BDA dynamics
// and no PTT it is AIT_C (Alg. 2): the problems' paper settings choose per problem.
#include "family.h"

static const blo_unrolled_params defaults = {.K = 20, .ia = 1, .ptt = 1, .graph_mb = 64};

const blo_method_type blo_method_ait = BLO_UNROLLED_TYPE(
    "ait", "AIT: initialization auxiliary z + pessimistic trajectory truncation on a chosen dynamics",
    "gd", defaults);
