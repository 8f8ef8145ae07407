// reptile: Reptile (Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018,
// Alg. 1): K steps of the dynamics on the LL objective f from the initialization z give y_K
// (Reptile's W = U^k(phi)), and z moves toward it, z <- z + epsilon (y_K - z). Here that is the
// direction g_z = z - y_K for the solver's z step: with the plain optimizer, lr_z is Reptile's
// epsilon (its Adam and momentum variants take the same direction). F is not used for z; x, when
// the problem has one, takes FOMAML's first-order step grad_x F(x, y_K) (Reptile has no x: our
// reading). A direction, not the gradient of an objective. The driver is fomaml.c's.
#include "family.h"

static const blo_fo_meta_params defaults = {.K = 5, .kind = BLO_FO_META_REPTILE};

const blo_method_type blo_method_reptile = BLO_FO_META_TYPE(
    "reptile", "Reptile: z <- z + lr_z (y_K - z), y_K after K LL steps from the initialization z",
    defaults);
