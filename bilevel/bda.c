// bda: the bi-level descent aggregation of Liu et al., "A Generic First-Order Algorithmic
// Framework for Bi-Level Programming Beyond Lower-Level Singleton" (ICML 2020): LL steps that
// aggregate the UL and LL gradients (Eq. 10), differentiated in reverse mode like RHG.
#include "family.h"

static const blo_unrolled_params defaults = {.K = 20, .graph_mb = 64};

const blo_method_type blo_method_bda = BLO_UNROLLED_TYPE(
    "bda", "BDA: LL steps aggregate UL and LL gradients (BDA Eq. 10), reverse mode through them",
    "bda", defaults);
