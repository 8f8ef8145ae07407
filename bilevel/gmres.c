// gmres: implicit differentiation at the fixed point of the LL dynamics' step map. K steps reach
// the state s_K; taking s_K for the fixed point s* = Phi(x, s*) of the next step (heavy ball,
// Nesterov, a user's step map; the state [S] holds the momentum), GMRES(m) (Saad and Schultz,
// "GMRES: a generalized minimal residual algorithm for solving nonsymmetric linear systems", SIAM
// J. Sci. Stat. Comput. 7(3), 1986) solves (I - dPhi/ds)^T q = dF/ds, non-symmetric, from
// vector-Jacobian products of one step, and grad = grad_x F + (dPhi/dx)^T q. With gd or heavy-ball
// dynamics and no active box this is CG's hypergradient at y_K; unlike CG it differentiates the
// map the dynamics iterate, the box's projection included. Heavy ball by default.
#include "family.h"

static const blo_implicit_method_params defaults = {
    .K = 20, .kind = BLO_IMPLICIT_GMRES, .J = 40, .tol = 1e-10, .restart = 20, .fixed_point = 1};

BLO_IMPLICIT_METHOD_DYN(gmres, "momentum",
                        "implicit differentiation at the fixed point of the dynamics' step, GMRES(m)",
                        "GMRES iterations (at most; each one VJP of a step)", BLO_ROW_IMPLICIT_TOL("GMRES"),
                        BLO_ROW_INT(blo_implicit_method_params, restart, "restart", 1, 10000, "m",
                                    "GMRES restarts after m iterations (keeps m + 1 vectors of the state)"));
