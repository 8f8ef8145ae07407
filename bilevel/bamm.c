// bamm: the single-loop Bi-level Averaged Method of Multipliers of "Averaged Method of Multipliers
// for Bi-Level Optimization without Lower-Level Strong Convexity" (Liu et al., ICML 2023), sl-BAMM,
// as BOAT's DM (with its GDA averaging) and the authors' code compute it. The LL objective is
// averaged with the UL one, phi_t = (1 - mu_t) f + mu_t F, mu_t = mu0 / (t+1)^(1/p) (mu0 = 0: f
// alone, BOAT's DM without GDA). Per UL iteration t, one step of each:
//   y <- Proj_Y(y - beta grad_y phi_t(x, y));
//   at (x, y) after that step, with H = d²phi_t/dy², r = H v - grad_y F:
//   d_x = grad_x F - (d²phi_t/dx dy) v        (the multiplier v before its update, as BOAT's DM),
//   v  <- v - eta_v r,  eta_v = ||r||^2 / (r^T H r + 1e-12)   (an exact line search on
//        1/2 v^T H v - <grad_y F, v>, BOAT's and the authors' choice) or a fixed eta > 0.
// Guard: where r^T H r <= 0 (H not positive along r: a non-convex or degenerate LL) the line
// search has no minimum and v is left as it is (eta_v = 0, the record's extra). Three
// Hessian-vector products per iteration, from the tape. y and v are carried and saved.
#include "curvature.h"
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    double beta; // LL step
    double eta;  // v's step: 0 = the exact line search
    double mu0;  // weight of F in the LL step at t = 0 (0: none)
    double p;    // mu_t = mu0 / (t+1)^(1/p)
} bamm_params;

// BOAT's DM defaults (mu0 = 0: its DM without GDA); p = 10 as the authors' code (BOAT's: 100)
static const bamm_params defaults = {.beta = 0.1, .eta = 0, .mu0 = 0, .p = 10};
static const blo_setting settings[] = {
    BLO_ROW_DBL(bamm_params, beta, "beta", 0, INFINITY, BLO_SET_LO_OPEN, "b", "LL step"),
    BLO_ROW_DBL(bamm_params, eta, "eta", 0, INFINITY, 0, "e",
                "step on the multiplier v (0 = exact line search on 1/2 v'Hv - <grad_y F, v>)"),
    BLO_ROW_DBL(bamm_params, mu0, "mu0", 0, 1, 0, "m", "weight of F in the averaged LL step at t = 0"),
    BLO_ROW_DBL(bamm_params, p, "p", 0, INFINITY, BLO_SET_LO_OPEN, "p", "mu_t = mu0 / (t+1)^(1/p)"),
    BLO_ROW_END,
};

typedef struct {
    blo_fo_state fo; // first: mem = y, v [n_y] each (carried), then scratch 5 n_y, n_x
    bamm_params par;
    double *y, *v, *g, *gF, *r, *Hv, *Hr, *mixed;
} bamm;

static blo_status bamm_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    size_t nx = (size_t)env->p->n_x, ny = (size_t)env->p->n_y;
    (void)z0;
    blo_status st = blo_fo_new(state, sizeof(bamm), env, 7 * ny + nx, 2 * ny, err);
    if (st) return st;
    bamm *s = *state;
    s->par = *(const bamm_params *)env->params;
    s->y = s->fo.mem, s->v = s->y + ny, s->g = s->v + ny, s->gF = s->g + ny, s->r = s->gF + ny;
    s->Hv = s->r + ny, s->Hr = s->Hv + ny, s->mixed = s->Hr + ny;
    *n_z = 0;
    return BLO_OK;
}

// phi_t = (1 - mu) f + mu F as the LL objective of a problem that is p otherwise.
typedef struct {
    const blo_problem *p;
    double mu;
} averaged;

static ad_var averaged_f(ad_tape *t, ad_var x, ad_var y, void *user) {
    const averaged *a = user;
    return ad_add(t, ad_scale(t, blo_call_f(t, a->p, x, y), 1 - a->mu), ad_scale(t, blo_call_F(t, a->p, x, y), a->mu));
}

// The averaged LL step on y, on *q (p itself when mu_t = 0, else p with f replaced by phi_t).
static blo_status ll_step(bamm *s, const blo_problem *q, const double *x, blo_error *err) {
    blo_status st = blo_eval(q, 0, x, s->y, NULL, NULL, s->g, s->fo.tape, err);
    if (st) return st;
    for (int i = 0; i < q->n_y; i++) s->y[i] -= s->par.beta * s->g[i];
    blo_clamp_y(q, s->y);
    return BLO_OK;
}

// dx -= (d²f/dx dy) v, then v's step along r = H v - grad_y F (in s->gF); returns the step taken
// (NaN if the tape failed).
static double multiplier_step(bamm *s, blo_curv *c, double *dx) {
    int ny = s->fo.p->n_y;
    if (!blo_curv_mixed(c, s->v, s->mixed) || !blo_curv_hvp(c, s->v, s->Hv)) return NAN;
    for (int i = 0; i < s->fo.p->n_x; i++) dx[i] -= s->mixed[i];
    for (int i = 0; i < ny; i++) s->r[i] = s->Hv[i] - s->gF[i];
    double eta = s->par.eta;
    if (!(eta > 0)) { // the exact line search, guarded
        if (!blo_curv_hvp(c, s->r, s->Hr)) return NAN;
        double rHr = blo_dot(s->r, s->Hr, ny);
        eta = rHr > 0 ? blo_dot(s->r, s->r, ny) / (rHr + 1e-12) : 0;
    }
    for (int i = 0; i < ny; i++) s->v[i] -= eta * s->r[i];
    return eta;
}

static blo_status bamm_direction(void *state, int t, const double *x, const double *z, double *dx,
                                 double *dz, double *y_out, blo_record *rec, blo_error *err) {
    bamm *s = state;
    (void)z, (void)dz;
    averaged a = {s->fo.p, s->par.mu0 > 0 ? s->par.mu0 / pow(t + 1.0, 1 / s->par.p) : 0};
    blo_problem avg = *s->fo.p;
    if (a.mu > 0) avg.f = averaged_f, avg.user = &a;
    blo_status st = ll_step(s, &avg, x, err);
    if (!st) st = blo_eval(s->fo.p, 1, x, s->y, NULL, dx, s->gF, s->fo.tape, err);
    blo_tape_use u = {0};
    if (!st) st = blo_tape_acquire(&u, s->fo.tape, err);
    if (st) return st;
    blo_curv c;
    if (blo_curv_record(&c, u.t, &avg, x, s->y)) rec->extra = multiplier_step(s, &c, dx);
    st = blo_tape_check(u.t, err, "bamm");
    blo_tape_release(&u);
    if (!st) memcpy(y_out, s->y, sizeof(double) * (size_t)s->fo.p->n_y);
    return st;
}

const blo_method_type blo_method_bamm = {
    "bamm", "sl-BAMM (BOAT's DM): one averaged LL step, one multiplier step on v, d_x = grad_x F - phi_xy v",
    BLO_NEEDS_HVP, BLO_GRAD_NONE, NULL, sizeof(bamm_params), &defaults, settings, NULL, NULL,
    bamm_init, bamm_direction, blo_fo_solution, NULL, blo_fo_save, blo_fo_load, blo_fo_free};
