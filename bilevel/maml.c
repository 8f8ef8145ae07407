// maml: model-agnostic meta-learning (Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for
// Fast Adaptation of Deep Networks", ICML 2017, Sec. 2.2, Alg. 1) as BOAT's IAD reads it: the LL
// start y_0 is the UL variable z (the initialization auxiliary of the unrolled family), and the
// direction is the exact gradient of F(x, y_K(x, z)) through all K steps of the dynamics, second
// order included (blo_hypergrad with IA and nothing held); x, when the problem has one (n_x may
// be 0), is learned with it. It is rhg + ia: the unrolled family with IA on by default.
#include "family.h"

static const blo_unrolled_params defaults = {.K = 5, .ia = 1, .graph_mb = 64};

const blo_method_type blo_method_maml = BLO_UNROLLED_TYPE(
    "maml", "MAML: the LL start y_0 = z learned through K unrolled steps, second order (IAD)", "gd",
    defaults);
