// rhg: the reverse-mode hypergradient through all K steps of projected gradient descent on f
// (Franceschi et al., "Forward and Reverse Gradient-Based Hyperparameter Optimization", ICML 2017,
// Sec. 2.2; BVFIM Table 2's RHG row).
#include "family.h"

static const blo_unrolled_params defaults = {.K = 20, .graph_mb = 64};

const blo_method_type blo_method_rhg = BLO_UNROLLED_TYPE(
    "rhg", "reverse-mode hypergradient through all K LL steps (RHG)", "gd", defaults);
