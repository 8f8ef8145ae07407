// galet: "GALET: Generalized Alternating Method for Bilevel Optimization under the PL condition"
// (Xiao et al., NeurIPS 2023), Alg. 1: N LL GD steps on y (Eq. 10), T shadow-implicit steps on
// w (Eq. 12) with Hessian-vector products from the tape, and the x direction of Eq. 13. w is
// warm-started from the previous iteration by default (the README's reading). The record's extra
// is the shadow level's relative residual ||grad_y F + H w|| / ||grad_y F|| at the w used, the
// quantity CG and MINRES report for their q (one more product).
#include "curvature.h"
#include "family.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int N;       // LL GD steps per iteration
    double beta; // LL step
    int T;       // shadow steps on w
    double rho;  // shadow step (gamma in the paper's appendix)
    int w_warm;  // w starts from the previous iteration's w
} galet_params;

static const galet_params defaults = {.N = 1, .beta = 1, .T = 1, .rho = 0.1, .w_warm = 1};
static const blo_setting settings[] = {
    BLO_ROW_INT(galet_params, N, "N", 0, BLO_MAX_ITERS, "N", "LL GD steps per UL iteration (Eq. 10)"),
    BLO_ROW_DBL(galet_params, beta, "beta", 0, INFINITY, BLO_SET_LO_OPEN, "b", "LL step"),
    BLO_ROW_INT(galet_params, T, "T_w", 0, BLO_MAX_ITERS, "T", "shadow steps on w per UL iteration (Eq. 12)"),
    BLO_ROW_DBL(galet_params, rho, "rho", 0, INFINITY, BLO_SET_LO_OPEN, "r", "shadow step (gamma)"),
    BLO_ROW_BOOL(galet_params, w_warm, "w_warm", "w starts from the previous iteration's w (else 0)"),
    BLO_ROW_END,
};

typedef struct {
    blo_fo_state fo;   // first: mem = y, w [n_y] each (carried), then scratch 3 n_y, n_x
    galet_params par;
    double *y, *w, *g, *mixed;
} galet;

static blo_status galet_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err) {
    size_t nx = (size_t)env->p->n_x, ny = (size_t)env->p->n_y;
    (void)z0;
    blo_status st = blo_fo_new(state, sizeof(galet), env, 5 * ny + nx, 2 * ny, err);
    if (st) return st;
    galet *s = *state;
    s->par = *(const galet_params *)env->params;
    s->y = s->fo.mem, s->w = s->y + ny, s->g = s->w + ny, s->mixed = s->g + 3 * ny;
    *n_z = 0;
    return BLO_OK;
}

// Eq. 10: N projected GD steps on f(x, .) from the carried y.
static blo_status ll_steps(galet *s, const double *x, blo_error *err) {
    blo_status st = BLO_OK;
    for (int n = 0; n < s->par.N && st == BLO_OK; n++) {
        st = blo_eval(s->fo.p, 0, x, s->y, NULL, NULL, s->g, s->fo.tape, err);
        for (int i = 0; i < s->fo.p->n_y; i++) s->y[i] -= s->par.beta * s->g[i];
        blo_clamp_y(s->fo.p, s->y);
    }
    return st;
}

// Eq. 12, T times: w <- w - rho H (grad_y F + H w), grad_y F in s->g; then dx += (d²f/dx dy) w
// (Eq. 13). *residual = ||grad_y F + H w|| / ||grad_y F|| at the final w (0 when grad_y F = 0).
// false if the tape failed.
static bool shadow_steps(galet *s, blo_curv *c, double *dx, double *residual) {
    int ny = s->fo.p->n_y;
    double *Hw = s->g + ny, *HHw = Hw + ny;
    bool ok = true;
    if (!s->par.w_warm) memset(s->w, 0, (size_t)ny * sizeof(double));
    for (int k = 0; ok && k < s->par.T; k++) {
        ok = blo_curv_hvp(c, s->w, Hw);
        for (int i = 0; ok && i < ny; i++) Hw[i] += s->g[i];
        ok = ok && blo_curv_hvp(c, Hw, HHw);
        for (int i = 0; ok && i < ny; i++) s->w[i] -= s->par.rho * HHw[i];
    }
    ok = ok && blo_curv_hvp(c, s->w, Hw);
    for (int i = 0; ok && i < ny; i++) Hw[i] += s->g[i];
    double gn = sqrt(blo_dot(s->g, s->g, ny));
    if (ok) *residual = gn > 0 ? sqrt(blo_dot(Hw, Hw, ny)) / gn : 0;
    ok = ok && blo_curv_mixed(c, s->w, s->mixed);
    for (int i = 0; ok && i < s->fo.p->n_x; i++) dx[i] += s->mixed[i];
    return ok;
}

static blo_status galet_direction(void *state, int t, const double *x, const double *z, double *dx,
                                  double *dz, double *y_out, blo_record *rec, blo_error *err) {
    galet *s = state;
    (void)t, (void)z, (void)dz;
    blo_status st = ll_steps(s, x, err);
    // grad F at (x, y^{k+1}): d_x starts as grad_x F, g = grad_y F
    if (st == BLO_OK) st = blo_eval(s->fo.p, 1, x, s->y, NULL, dx, s->g, s->fo.tape, err);
    blo_tape_use u = {0};
    if (st == BLO_OK) st = blo_tape_acquire(&u, s->fo.tape, err);
    if (st != BLO_OK) return st;
    blo_curv c;
    if (blo_curv_record(&c, u.t, s->fo.p, x, s->y)) shadow_steps(s, &c, dx, &rec->extra);
    st = blo_tape_check(u.t, err, "galet");
    blo_tape_release(&u);
    if (st == BLO_OK) memcpy(y_out, s->y, sizeof(double) * (size_t)s->fo.p->n_y);
    return st;
}

const blo_method_type blo_method_galet = {
    "galet", "GALET: N LL steps, T shadow implicit steps on w with Hessian-vector products (Alg. 1)",
    BLO_NEEDS_HVP, BLO_GRAD_NONE, NULL, sizeof(galet_params), &defaults, settings, NULL, NULL,
    galet_init, galet_direction, blo_fo_solution, NULL, blo_fo_save, blo_fo_load, blo_fo_free};
