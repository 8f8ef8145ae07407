// neumann: implicit differentiation at y_K with H^-1 grad_y F by the Neumann series
// q = eta sum_{j=0..J} (I - eta H)^j grad_y F (Lorraine et al., "Optimizing Millions of
// Hyperparameters by Implicit Differentiation", AISTATS 2020; BVFIM Table 2's Neumann row). eta
// defaults to the dynamics' LL step (the README's reading); a diverging series stops the run.
#include "family.h"

static const blo_implicit_method_params defaults = {.K = 20, .kind = BLO_IMPLICIT_NEUMANN, .J = 20};

// eta ||H|| < 2 keeps the series convergent
BLO_IMPLICIT_METHOD(neumann, "implicit differentiation at y_K, Neumann series for H^-1 grad_y F",
                    "Neumann terms after the first",
                    BLO_ROW_DBL(blo_implicit_method_params, eta, "eta", 0, INFINITY, 0, "e",
                                "Neumann step (0 = the dynamics' LL step; needs eta ||H|| < 2)"));
