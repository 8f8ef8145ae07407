// trhg: truncated back-propagation (Shaban et al., "Truncated Back-propagation for Bilevel
// Optimization", AISTATS 2019): the reverse sweep runs over the last K' of the K steps only, the
// state K' steps before the end held fixed. K' defaults to K / 2 (BDA's Table 2 uses K' = 25 of
// K = 100 on hyper-cleaning; the problem's paper settings say so there).
#include "family.h"

static const blo_unrolled_params defaults = {.K = 20, .truncate = -1, .graph_mb = 64};

const blo_method_type blo_method_trhg = BLO_UNROLLED_TYPE(
    "trhg", "truncated RHG: back-propagate only the last K' steps (T-RHG)", "gd", defaults);
