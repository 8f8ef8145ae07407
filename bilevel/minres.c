// minres: implicit differentiation at y_K with H q = grad_y F solved by MINRES (Paige and Saunders,
// "Solution of sparse indefinite systems of linear equations", SIAM J. Numer. Anal. 12(4), 1975),
// for lower levels that are not strongly convex: H = d²f/dy² symmetric but indefinite (a saddle, a
// non-convex LL before its minimum), where CG meets non-positive curvature and stops. MINRES takes
// the least ||H q - grad_y F|| over the Krylov space, so a singular H gives the least-squares q
// and its residual (the record's extra), not a division by zero.
#include "family.h"

static const blo_implicit_method_params defaults = {.K = 20, .kind = BLO_IMPLICIT_MINRES, .J = 20, .tol = 1e-10};

BLO_IMPLICIT_METHOD(minres, "implicit differentiation at y_K, MINRES on H q = grad_y F (H may be indefinite)",
                    "MINRES iterations (at most)", BLO_ROW_IMPLICIT_TOL("MINRES"));
