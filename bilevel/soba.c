// soba: "A framework for bilevel optimization that enables stochastic and global variance
// reduction algorithms" (Dagréou, Ablin, Vaiter and Moreau, NeurIPS 2022), Sec. 2: SOBA, the
// stochastic directions (D_z, D_v, D_x) taken at one point and the three variables updated
// together (the README says which equation numbers we could not check). Our y is the paper's
// inner z, our x its outer x. One loop: at (x^t, y^t, v^t), with one LL minibatch i (f) and one
// UL minibatch j (F),
//   D_y = grad_y f_i(x, y)
//   D_v = (d²f_i/dy²)(x, y) v + grad_y F_j(x, y)
//   D_x = (d²f_i/dx dy)(x, y) v + grad_x F_j(x, y)
// then y <- Proj_Y(y - rho D_y) and v <- v - rho D_v together, and x steps along D_x (the
// solver's step, the paper's gamma). v tends to -H^{-1} grad_y F, so D_x tends to the
// hypergradient. Both products come from one reverse sweep of <grad_y f_i, v> on the tape.
// Constant steps rho (the paper's theory decays them; its experiments use constants).
#include "curvature.h"
#include "family.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    double rho;   // y and v step
    double rho_v; // v step (0 = rho)
} soba_params;

static const soba_params defaults = {.rho = 0.1, .rho_v = 0};
static const blo_setting settings[] = {
    BLO_ROW_DBL(soba_params, rho, "rho", 0, INFINITY, BLO_SET_LO_OPEN, "r", "y step (and v's when rho_v = 0)"),
    BLO_ROW_DBL(soba_params, rho_v, "rho_v", 0, INFINITY, 0, "r", "v step (0 = rho; needs rho_v ||H|| < 2)"),
    BLO_ROW_END,
};

typedef struct {
    blo_fo_state fo; // first: mem = y, v [n_y] (carried), then Fy, Hv [n_y], mixed [n_x]
    soba_params par;
} soba;

// rho_v = 0 takes rho.
static blo_status soba_resolve(void *params, const blo_dynamics *d, blo_error *err) {
    soba_params *q = params;
    (void)d;
    if (!(q->rho_v > 0)) q->rho_v = q->rho;
    return blo_ok(err);
}

// mem: y, v [n_y] carried (v starts at 0), then the scratch.
static blo_status soba_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    size_t ny = (size_t)env->p->n_y, scratch = 2 * ny + (size_t)env->p->n_x;
    *n_z = 0, (void)z0;
    blo_status st = blo_fo_new(state, sizeof(soba), env, 2 * ny + scratch, 2 * ny, err);
    if (st == BLO_OK) ((soba *)*state)->par = *(const soba_params *)env->params;
    return st;
}

// grad_y f_i (into gy), H v and (d²f/dx dy) v at (x, y) on the current LL minibatch, by one
// recording of grad_y f and one sweep of <grad_y f, v> to (y, x).
static blo_status products(soba *s, const double *x, double *gy, double *Hv, double *mixed,
                           blo_error *err) {
    const blo_problem *p = s->fo.p;
    const double *y = s->fo.mem, *v = y + p->n_y;
    blo_tape_use u = {0};
    blo_status st = blo_tape_acquire(&u, s->fo.tape, err);
    if (st) return st;
    blo_curv c;
    if (blo_curv_record(&c, u.t, p, x, y)) {
        ad_var wrt[2] = {c.y, c.x}, d[2];
        ad_var vv = ad_const(u.t, ad_vec_shape(p->n_y), v);
        if (ad_grad(u.t, ad_dot(u.t, c.gy, vv), 2, wrt, d, 0) == AD_OK) {
            memcpy(gy, ad_value(u.t, c.gy), sizeof(double) * (size_t)p->n_y);
            memcpy(Hv, ad_value(u.t, d[0]), sizeof(double) * (size_t)p->n_y);
            memcpy(mixed, ad_value(u.t, d[1]), sizeof(double) * (size_t)p->n_x);
        }
    }
    st = blo_tape_check(u.t, err, "soba");
    blo_tape_release(&u);
    return st;
}

static blo_status soba_direction(void *state, int t, const double *x, const double *z, double *gx,
                                 double *gz, double *y_out, blo_record *rec, blo_error *err) {
    soba *s = state;
    int ny = s->fo.p->n_y;
    const blo_problem *p = s->fo.p;
    double *y = s->fo.mem, *v = y + ny, *Fy = v + ny, *Hv = Fy + ny, *mixed = Hv + ny;
    (void)t, (void)z, (void)gz, (void)rec;
    // grad F_j: D_x starts as grad_x F, Fy = grad_y F
    blo_status st = blo_sample(p, BLO_SAMPLE_UL, s->fo.rng, err);
    if (!st) st = blo_eval(p, 1, x, y, NULL, gx, Fy, s->fo.tape, err);
    if (!st) st = blo_sample(p, BLO_SAMPLE_LL, s->fo.rng, err);
    // y_out holds D_y = grad_y f_i until y is reported
    if (!st) st = products(s, x, y_out, Hv, mixed, err);
    if (st) return st;
    for (int i = 0; i < p->n_x; i++) gx[i] += mixed[i];
    for (int i = 0; i < ny; i++) {
        double dy = y_out[i];
        y_out[i] = y[i];
        y[i] -= s->par.rho * dy;
        v[i] -= s->par.rho_v * (Hv[i] + Fy[i]);
    }
    blo_clamp_y(p, y);
    return BLO_OK;
}

const blo_method_type blo_method_soba = {
    "soba", "SOBA: single loop, y, v and x stepped together, v by minibatch Hessian-vector products",
    BLO_NEEDS_HVP, BLO_GRAD_NONE, NULL, sizeof(soba_params), &defaults, settings, soba_resolve, NULL,
    soba_init, soba_direction, blo_fo_solution, NULL, blo_fo_save, blo_fo_load, blo_fo_free};
