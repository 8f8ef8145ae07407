// imaml: implicit MAML (Rajeswaran, Finn, Kakade and Levine, "Meta-Learning with Implicit
// Gradients", NeurIPS 2019, Sec. 3, Eqs. 4-6, Alg. 2). The LL is proximal to the initialization
// z (Eq. 4),
//     y_lambda(x, z) = argmin_y f(x, y) + lambda/2 ||y - z||^2,
// solved approximately by K steps of the dynamics from y_0 = z; the meta-gradient is implicit
// (Lemma 1, Eq. 6): g_z = (I + H/lambda)^-1 grad_y F(x, y_K), H = d²f/dy² at y_K, by conjugate
// gradients with Hessian-vector products (Alg. 2, step 3), never through the K steps.
//
// No second solver: the proximal LL is a problem of its own (below) whose UL variable is
// x' = (x, z) [n_x + n_y], so blo_implicit_hypergrad's CG on (H + lambda I) q = grad_y F gives
// g_x = grad_x F - (d²f/dx dy) q and g_z = -(d/dz d/dy (lambda/2 ||y - z||²)) q = lambda q =
// (I + H/lambda)^-1 grad_y F, iMAML's Eq. 6, in one call. The direction approximates the gradient
// of phi(x, z) = F(x, y_K(x, z)), exactly as y_K -> y_lambda and CG converges (BLO_GRAD_APPROX).
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int K;         // ll_iters
    double lambda; // the proximal weight
    int J;         // CG iterations (at most)
    double tol;    // CG's relative residual
} imaml_params;

// iMAML's Omniglot runs: lambda = 2, 5 CG steps (Sec. 4, Table 2); K is ours (its GD runs take 16-25).
static const imaml_params defaults = {.K = 20, .lambda = 2, .J = 5, .tol = 1e-10};
static const blo_setting settings[] = {
    BLO_ROW_LL_ITERS(imaml_params),
    BLO_ROW_DBL(imaml_params, lambda, "lambda", 0, INFINITY, BLO_SET_LO_OPEN, "l",
                "proximal weight: the LL is f + lambda/2 ||y - z||^2"),
    BLO_ROW_INT(imaml_params, J, "J", 0, BLO_MAX_ITERS, "J", "CG iterations (at most)"),
    BLO_ROW_DBL(imaml_params, tol, "tol", 0, INFINITY, 0, "t",
                "CG stops at this relative residual (0 = run all J)"),
    BLO_ROW_END,
};

typedef struct {
    const blo_problem *p; // the problem
    blo_problem prox;     // the proximal one: x' = (x, z), user = this state
    blo_dynamics dyn;
    ad_tape *tape;
    imaml_params par;
    double *xz, *states;  // x' [n_x + n_y]; the unroll [(K+1) S]
    double *gxz;          // its gradient [n_x + n_y]
} imaml;

// F'(x', y) = F(x, y)
static ad_var prox_F(ad_tape *t, ad_var xz, ad_var y, void *u) {
    const imaml *m = u;
    return blo_call_F(t, m->p, ad_slice(t, xz, 0, m->p->n_x), y);
}

// f'(x', y) = f(x, y) + lambda/2 ||y - z||^2
static ad_var prox_f(ad_tape *t, ad_var xz, ad_var y, void *u) {
    const imaml *m = u;
    int nx = m->p->n_x, ny = m->p->n_y;
    ad_var d = ad_sub(t, y, ad_slice(t, xz, nx, ny));
    return ad_add(t, blo_call_f(t, m->p, ad_slice(t, xz, 0, nx), y),
                  ad_scale(t, ad_sqnorm(t, d), 0.5 * m->par.lambda));
}

static void imaml_free(void *state) {
    imaml *m = state;
    if (m) free(m->xz), free(m);
}

static blo_status imaml_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err) {
    const blo_problem *p = env->p;
    *state = NULL;
    if (!env->dyn) return blo_fail(err, BLO_EARG, "imaml needs LL dynamics");
    const imaml_params *q = env->params;
    size_t nxz = (size_t)p->n_x + (size_t)p->n_y, S = (size_t)env->dyn->state_size;
    blo_status st = blo_check_memory((double)q->K + 1, 8.0 * (double)S, "imaml's LL states", err);
    if (st) return st;
    imaml *m = calloc(1, sizeof *m);
    double *buf = malloc(sizeof(double) * (2 * nxz + ((size_t)q->K + 1) * S));
    if (!m || !buf) {
        free(m), free(buf);
        return blo_fail(err, BLO_ENOMEM, "imaml: out of memory");
    }
    *m = (imaml){.p = p, .dyn = *env->dyn, .tape = env->tape, .par = *q, .xz = buf,
                 .gxz = buf + nxz, .states = buf + 2 * nxz};
    m->prox = (blo_problem){.n_x = (int)nxz, .n_y = p->n_y, .F = prox_F, .f = prox_f,
                            .y_lo = p->y_lo, .y_hi = p->y_hi, .user = m};
    *state = m;
    *n_z = p->n_y;
    *z0 = (double *)env->y0; // z starts at the problem's LL start (copied by the solver)
    return blo_ok(err);
}

// x' = (x, z), then y_K of the proximal LL from y_0 = z into y [n_y].
static blo_status prox_solve(imaml *m, const double *x, const double *z, double *y, blo_error *err) {
    int nx = m->p->n_x, ny = m->p->n_y, S = m->dyn.state_size;
    memcpy(m->xz, x, sizeof(double) * (size_t)nx);
    memcpy(m->xz + nx, z, sizeof(double) * (size_t)ny);
    blo_status st = blo_state_init(&m->prox, &m->dyn, z, m->states, m->tape, err);
    if (!st) st = blo_unroll(&m->prox, &m->dyn, m->xz, 0, m->states, m->par.K, m->states, NULL, m->tape, err);
    if (!st) st = blo_state_read_y(&m->prox, &m->dyn, m->states + (size_t)m->par.K * S, y, m->tape, err);
    return st;
}

static blo_status imaml_direction(void *state, int t, const double *x, const double *z, double *gx,
                                  double *gz, double *y, blo_record *rec, blo_error *err) {
    imaml *m = state;
    int nx = m->p->n_x;
    (void)t;
    blo_implicit_params ip = {.kind = BLO_IMPLICIT_CG, .iters = m->par.J, .tol = m->par.tol};
    blo_implicit_info info = {0};
    blo_status st = prox_solve(m, x, z, y, err);
    if (!st) st = blo_implicit_hypergrad(&m->prox, &ip, m->xz, y, m->gxz, &info, m->tape, err);
    if (st) return st;
    memcpy(gx, m->gxz, sizeof(double) * (size_t)nx);
    memcpy(gz, m->gxz + nx, sizeof(double) * (size_t)m->p->n_y);
    rec->kbar = m->par.K;
    rec->extra = info.residual;
    return BLO_OK;
}

static blo_status imaml_solution(void *state, const double *x, const double *z, double *y,
                                 blo_error *err) {
    return prox_solve(state, x, z, y, err);
}

// phi(x, z) = F(x, y_K(x, z)): what the direction tends to the gradient of.
static blo_status imaml_phi(void *state, const double *x, const double *z, double *value,
                            blo_error *err) {
    imaml *m = state;
    double *y = malloc(sizeof(double) * (size_t)m->p->n_y);
    if (!y) return blo_fail(err, BLO_ENOMEM, "imaml: out of memory");
    blo_status st = prox_solve(m, x, z, y, err);
    if (!st) st = blo_eval(m->p, 1, x, y, value, NULL, NULL, m->tape, err);
    free(y);
    return st;
}

const blo_method_type blo_method_imaml = {
    "imaml", "iMAML: LL f + lambda/2 ||y - z||^2, g_z = (I + H/lambda)^-1 grad_y F by CG (NeurIPS 2019)",
    BLO_NEEDS_DYNAMICS | BLO_NEEDS_HVP, BLO_GRAD_APPROX, "gd", sizeof(imaml_params), &defaults,
    settings, NULL, NULL, imaml_init, imaml_direction, imaml_solution, imaml_phi, NULL, NULL,
    imaml_free};
