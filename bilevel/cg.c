// cg: implicit differentiation at y_K by conjugate gradients on H q = grad_y F, H = d²f/dy²
// (Pedregosa, "Hyperparameter optimization with approximate gradient", ICML 2016; BVFIM Table 2's
// CG row). K steps of the dynamics give y_K; warm starts carry it to the next UL iteration.
#include "family.h"

static const blo_implicit_method_params defaults = {.K = 20, .kind = BLO_IMPLICIT_CG, .J = 20, .tol = 1e-10};

BLO_IMPLICIT_METHOD(cg, "implicit differentiation at y_K, conjugate gradients on H q = grad_y F",
                    "CG iterations (at most)",
                    BLO_ROW_IMPLICIT_TOL("CG"));
