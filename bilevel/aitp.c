// aitp: AIT with the prior on the initialization auxiliary (AIT Eq. 6, AIT_P), which acts "only
// on the first iteration". Our reading (the README's readings table): z starts at the problem's
// z_p, which is what lambda/2 ||z - z_p||^2 with lambda = 1/lr_z does to a first plain step,
// made independent of the optimizer; `prior` gives the literal penalty instead.
#include "family.h"

static const blo_unrolled_params defaults = {.K = 20, .ia = 1, .ptt = 1, .prior_start = 1,
                                             .graph_mb = 64};

const blo_method_type blo_method_aitp = BLO_UNROLLED_TYPE(
    "aitp", "AIT_P: AIT with the prior lambda/2 ||z - z_p||^2 on the first UL iteration", "gd",
    defaults);
