// bvfim: "A Value-Function-based Interior-point Method for Non-convex Bi-level Optimization"
// (Liu et al., ICML 2021), Alg. 1 with L = 1: the regularized LL value function f*_mu(x) by a
// z-loop (Eq. 18), a y-loop on the log-barrier objective (Eq. 19), and d_x (Eqs. 20-21). At UL
// iteration l the schedule is mu_1 = mu_2 = mu0 / (l+1)^p, theta = theta0 / (l+1)^p,
// tau = tau0 / (l+1)^p (the paper's defaults are in a supplement we do not have; README, readings).
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int Tz, Ty;                      // z-loop and y-loop GD steps
    double s1, s2;                   // their steps
    double mu0, theta0, tau0, power; // the schedule
} bvfim_params;

static const bvfim_params defaults = {.Tz = 50, .Ty = 50, .s1 = 0.1, .s2 = 0.1, .mu0 = 1,
                                      .theta0 = 1, .tau0 = 1, .power = 1};
static const blo_setting settings[] = {
    BLO_ROW_INT(bvfim_params, Tz, "Tz", 1, BLO_MAX_ITERS, "T", "z-loop GD steps (Eq. 18)"),
    BLO_ROW_INT(bvfim_params, Ty, "Ty", 1, BLO_MAX_ITERS, "T", "y-loop steps (Eq. 19)"),
    BLO_ROW_DBL(bvfim_params, s1, "s1", 0, INFINITY, BLO_SET_LO_OPEN, "s", "z-loop step"),
    BLO_ROW_DBL(bvfim_params, s2, "s2", 0, INFINITY, BLO_SET_LO_OPEN, "s", "y-loop first trial step"),
    BLO_ROW_DBL(bvfim_params, mu0, "mu0", 0, INFINITY, BLO_SET_LO_OPEN, "m", "mu_0 of the schedule mu0 / (l+1)^p"),
    BLO_ROW_DBL(bvfim_params, theta0, "theta0", 0, INFINITY, 0, "t", "theta_0"),
    BLO_ROW_DBL(bvfim_params, tau0, "tau0", 0, INFINITY, BLO_SET_LO_OPEN, "t", "tau_0"),
    BLO_ROW_DBL(bvfim_params, power, "power", 0, INFINITY, BLO_SET_LO_OPEN, "p", "schedule power p"),
    BLO_ROW_END,
};

// mem: y, z [n_y] each, then l, resets, halvings and gap (carried: 2 n_y + 4), then scratch.
typedef struct {
    blo_fo_state fo;
    bvfim_params par;
    double *y, *z;         // warm starts
    double *count;         // [4]: l (the schedule index), resets and halvings of the safeguard, the
                           // barrier gap f*_mu(x) - f(x, y) at the last direction
    double *g, *gF, *cand, *gxz, *gxy; // scratch: [n_y] x 3, [n_x] x 2
} bvfim;

enum { L, RESETS, HALVINGS, GAP };

static blo_status bvfim_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err) {
    size_t nx = (size_t)env->p->n_x, ny = (size_t)env->p->n_y;
    (void)z0;
    blo_status st = blo_fo_new(state, sizeof(bvfim), env, 5 * ny + 4 + 2 * nx, 2 * ny + 4, err);
    if (st) return st;
    bvfim *s = *state;
    s->par = *(const bvfim_params *)env->params;
    s->y = s->fo.mem, s->z = s->y + ny, s->count = s->z + ny;
    s->g = s->count + 4, s->gF = s->g + ny, s->cand = s->gF + ny, s->gxz = s->cand + ny, s->gxy = s->gxz + nx;
    memcpy(s->z, s->y, ny * sizeof(double));
    *n_z = 0;
    return BLO_OK;
}

// z-loop (Eq. 18): GD on f(x, .) + mu/2 ||.||^2, projected onto the Y box; then f*_mu(x).
static blo_status z_loop(bvfim *s, const double *x, double mu, double *fstar, blo_error *err) {
    const blo_problem *p = s->fo.p;
    int ny = p->n_y;
    blo_status st = BLO_OK;
    for (int k = 0; k < s->par.Tz && st == BLO_OK; k++) {
        st = blo_eval(p, 0, x, s->z, NULL, NULL, s->g, s->fo.tape, err);
        for (int i = 0; i < ny; i++) s->z[i] -= s->par.s1 * (s->g[i] + mu * s->z[i]);
        blo_clamp_y(p, s->z);
    }
    double fz = 0;
    if (st == BLO_OK) st = blo_eval(p, 0, x, s->z, &fz, s->gxz, NULL, s->fo.tape, err);
    *fstar = fz + 0.5 * mu * blo_dot(s->z, s->z, ny) + mu; // f*_mu(x) with mu_1 = mu_2 = mu
    return st;
}

// An infeasible warm start y (f(x, y) >= f*_mu: x moved, or mu shrank) is first moved by up to Tz
// projected GD steps on f(x, .), which keep it in its own basin, and only if that does not make it
// feasible replaced by z (always feasible since mu_2 > 0). z is a local minimizer of the
// regularized LL, possibly in a worse basin of a periodic f than y (on `sin` with a = 2 from
// (0, 0), z stays in the branch it found at x = 0): replacing y by z at once made x jump there
// after ~6500 iterations.
static blo_status restore_feasible(bvfim *s, const double *x, double fstar, double fy, blo_error *err) {
    const blo_problem *p = s->fo.p;
    int ny = p->n_y;
    blo_status st = BLO_OK;
    for (int k = 0; k < s->par.Tz && st == BLO_OK && !(fstar - fy > 0); k++) {
        st = blo_eval(p, 0, x, s->y, NULL, NULL, s->g, s->fo.tape, err);
        for (int i = 0; i < ny; i++) s->y[i] -= s->par.s1 * s->g[i];
        blo_clamp_y(p, s->y);
        if (st == BLO_OK) st = blo_eval(p, 0, x, s->y, &fy, NULL, NULL, s->fo.tape, err);
    }
    if (st == BLO_OK && !(fstar - fy > 0)) {
        memcpy(s->y, s->z, (size_t)ny * sizeof(double));
        s->count[RESETS]++;
    }
    return st;
}

// y-loop (Eq. 19) on phi(y) = F(x, y) + theta/2 ||y||^2 - tau ln(f*_mu - f(x, y)) from a feasible
// y; each step backtracks (Armijo) on phi, which keeps y feasible and out of far basins of a
// periodic f.
static blo_status y_loop(bvfim *s, const double *x, double fstar, double theta, double tau,
                         blo_error *err) {
    const blo_problem *p = s->fo.p;
    int ny = p->n_y;
    double fy = 0, Fy = 0;
    blo_status st = blo_eval(p, 0, x, s->y, &fy, NULL, NULL, s->fo.tape, err);
    if (st == BLO_OK && !(fstar - fy > 0)) st = restore_feasible(s, x, fstar, fy, err);
    for (int k = 0; k < s->par.Ty && st == BLO_OK; k++) {
        st = blo_eval(p, 0, x, s->y, &fy, NULL, s->g, s->fo.tape, err);
        if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, &Fy, NULL, s->gF, s->fo.tape, err);
        double phi = Fy + 0.5 * theta * blo_dot(s->y, s->y, ny) - tau * log(fstar - fy), gg = 0;
        for (int i = 0; i < ny; i++) {
            s->gF[i] += theta * s->y[i] + tau * s->g[i] / (fstar - fy); // phi's gradient
            gg += s->gF[i] * s->gF[i];
        }
        double step = s->par.s2, fc = fy, Fc = Fy;
        bool accepted = false;
        for (int tries = 0; st == BLO_OK && tries < 40 && !accepted; tries++) {
            for (int i = 0; i < ny; i++) s->cand[i] = s->y[i] - step * s->gF[i];
            blo_clamp_y(p, s->cand);
            st = blo_eval(p, 0, x, s->cand, &fc, NULL, NULL, s->fo.tape, err);
            if (st == BLO_OK && fstar - fc > 0) st = blo_eval(p, 1, x, s->cand, &Fc, NULL, NULL, s->fo.tape, err);
            accepted = st == BLO_OK && fstar - fc > 0 &&
                       Fc + 0.5 * theta * blo_dot(s->cand, s->cand, ny) - tau * log(fstar - fc) <= phi - 1e-4 * step * gg;
            if (!accepted) step *= 0.5, s->count[HALVINGS]++;
        }
        if (!accepted) break; // no decrease found: y is (numerically) stationary; keep it
        memcpy(s->y, s->cand, (size_t)ny * sizeof(double));
    }
    return st;
}

static blo_status bvfim_direction(void *state, int t, const double *x, const double *zv, double *dx,
                                  double *dz, double *y_out, blo_record *rec, blo_error *err) {
    bvfim *s = state;
    const blo_problem *p = s->fo.p;
    int nx = p->n_x;
    (void)t, (void)zv, (void)dz;
    double decay = pow(s->count[L] + 1, -s->par.power);
    double mu = s->par.mu0 * decay, theta = s->par.theta0 * decay, tau = s->par.tau0 * decay, fstar = 0;
    blo_status st = z_loop(s, x, mu, &fstar, err);
    if (st == BLO_OK) st = y_loop(s, x, fstar, theta, tau, err);
    // Eqs. 20-21: d_x = grad_x F(x, y) + tau (grad_x f(x, y) - grad_x f(x, z)) / (f*_mu - f(x, y))
    double fy = 0;
    if (st == BLO_OK) st = blo_eval(p, 0, x, s->y, &fy, s->gxy, NULL, s->fo.tape, err);
    if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, NULL, dx, NULL, s->fo.tape, err);
    double gap = s->count[GAP] = fstar - fy;
    if (st == BLO_OK && !(gap > 0))
        st = blo_fail(err, BLO_EARG, "bvfim: the barrier argument f*_mu(x) - f(x, y) = %g is not "
                      "positive at iteration %.0f", gap, s->count[L]);
    if (st != BLO_OK) return st;
    for (int i = 0; i < nx; i++) dx[i] += tau * (s->gxy[i] - s->gxz[i]) / gap;
    s->count[L]++;
    memcpy(y_out, s->y, sizeof(double) * (size_t)p->n_y);
    rec->extra = gap;
    return BLO_OK;
}

const blo_method_type blo_method_bvfim = {
    "bvfim", "BVFIM: regularized value function with a log barrier, first order (Alg. 1)", 0,
    BLO_GRAD_NONE, NULL, sizeof(bvfim_params), &defaults, settings, NULL, NULL, bvfim_init,
    bvfim_direction, blo_fo_solution, NULL, blo_fo_save, blo_fo_load, blo_fo_free};
