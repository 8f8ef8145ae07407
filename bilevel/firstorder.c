// First-order and alternating methods as direction routines (spec sections 3-5): BOME's
// value-function barrier step, GALET's shadow implicit step, BVFIM's regularized value function
// with a log barrier. Gradients and Hessian-vector products come from the tape.
#include "curvature.h"
#include "methods.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

blo_status blo_eval(const blo_problem *p, int upper, const double *x, const double *y,
                    double *value, double *gx, double *gy, ad_tape *tape, blo_error *err) {
    blo_tape_use u;
    blo_status st = blo_tape_acquire(&u, tape, err);
    if (st != BLO_OK) return st;
    ad_tape *t = u.t;
    ad_var in[2] = {ad_param(t, ad_vec_shape(p->n_x), x), ad_param(t, ad_vec_shape(p->n_y), y)}, g[2];
    ad_var v = upper ? blo_call_F(t, p, in[0], in[1]) : blo_call_f(t, p, in[0], in[1]);
    if ((gx || gy) && v) ad_grad(t, v, 2, in, g, 0);
    if (ad_tape_status(t) == AD_OK) {
        if (value) *value = ad_item(t, v);
        if (gx) memcpy(gx, ad_value(t, g[0]), (size_t)p->n_x * sizeof(double));
        if (gy) memcpy(gy, ad_value(t, g[1]), (size_t)p->n_y * sizeof(double));
    }
    st = blo_tape_check(t, err, upper ? "F" : "f");
    blo_tape_release(&u);
    return st;
}

static double dot(const double *a, const double *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void clamp_y(const blo_problem *p, double *y) {
    for (int i = 0; i < p->n_y; i++) {
        if (p->y_lo && y[i] < p->y_lo[i]) y[i] = p->y_lo[i];
        if (p->y_hi && y[i] > p->y_hi[i]) y[i] = p->y_hi[i];
    }
}

// ---- BOME ---------------------------------------------------------------------------------------

blo_bome_params blo_bome_default_params(void) {
    return (blo_bome_params){.T = 10, .alpha = 0.05, .eta = 0.5, .phi_value = 0, .eps = 1e-8};
}

blo_status blo_bome_direction(const blo_problem *p, const blo_bome_params *bp, const double *x,
                              const double *y, double *dx, double *dy, blo_bome_info *info,
                              ad_tape *t, blo_error *err) {
    blo_ok(err);
    if (!p || !bp || !x || !y || !dx || !dy) return blo_fail(err, BLO_EARG, "bome: NULL argument");
    if (bp->T < 1 || !(bp->alpha > 0) || !(bp->eta >= 0) || !(bp->eps >= 0))
        return blo_fail(err, BLO_EARG, "bome: needs T >= 1, alpha > 0, eta >= 0, eps >= 0 "
                        "(T = %d, alpha = %g, eta = %g)", bp->T, bp->alpha, bp->eta);
    int nx = p->n_x, ny = p->n_y;
    double *th = malloc(sizeof(double) * (size_t)(3 * ny + 2 * nx)), *g = th + ny;
    double *qx = g + ny, *qy = qx + nx, *fx = qy + ny; // grad qhat = (qx, qy); grad_x f(x, theta^T)
    if (!th) return blo_fail(err, BLO_ENOMEM, "bome: out of memory");
    // theta^(T): T projected GD steps on f(x, .) from y (Eq. 8)
    memcpy(th, y, (size_t)ny * sizeof *th);
    blo_status st = BLO_OK;
    for (int k = 0; k < bp->T && st == BLO_OK; k++) {
        st = blo_eval(p, 0, x, th, NULL, NULL, g, t, err);
        for (int i = 0; i < ny; i++) th[i] -= bp->alpha * g[i];
        clamp_y(p, th);
    }
    // qhat = f(x, y) - f(x, theta^T), with theta^T held fixed
    double f_y = 0, f_th = 0;
    if (st == BLO_OK) st = blo_eval(p, 0, x, y, &f_y, qx, qy, t, err);
    if (st == BLO_OK) st = blo_eval(p, 0, x, th, &f_th, fx, NULL, t, err);
    if (st == BLO_OK) st = blo_eval(p, 1, x, y, NULL, dx, dy, t, err); // grad F into (dx, dy)
    if (st == BLO_OK) {
        for (int i = 0; i < nx; i++) qx[i] -= fx[i];
        double qhat = f_y - f_th, qq = dot(qx, qx, nx) + dot(qy, qy, ny);
        double Fq = dot(dx, qx, nx) + dot(dy, qy, ny);
        double phi = bp->phi_value ? bp->eta * qhat : bp->eta * qq;
        double lambda = qq > 0 ? fmax((phi - Fq) / (qq + bp->eps), 0) : 0;
        for (int i = 0; i < nx; i++) dx[i] += lambda * qx[i];
        for (int i = 0; i < ny; i++) dy[i] += lambda * qy[i];
        if (info) *info = (blo_bome_info){.qhat = qhat, .lambda = lambda};
    }
    free(th);
    return st;
}

// ---- GALET --------------------------------------------------------------------------------------

blo_galet_params blo_galet_default_params(void) {
    return (blo_galet_params){.N = 1, .beta = 1, .T = 1, .rho = 0.1, .w_warm = 1};
}

blo_status blo_galet_init(blo_galet_state *s, const blo_problem *p, const blo_galet_params *gp,
                          const double *y0, blo_error *err) {
    memset(s, 0, sizeof *s);
    if (!p || !gp) return blo_fail(err, BLO_EARG, "galet: NULL argument");
    if (gp->N < 0 || gp->T < 0 || !(gp->beta > 0) || !(gp->rho > 0))
        return blo_fail(err, BLO_EARG, "galet: needs N >= 0, T >= 0 and positive steps "
                        "(N = %d, T = %d, beta = %g, rho = %g)", gp->N, gp->T, gp->beta, gp->rho);
    s->par = *gp;
    s->y = calloc(2 * (size_t)p->n_y, sizeof(double));
    if (!s->y) return blo_fail(err, BLO_ENOMEM, "galet: out of memory");
    s->w = s->y + p->n_y;
    if (y0) memcpy(s->y, y0, (size_t)p->n_y * sizeof(double));
    return blo_ok(err);
}

void blo_galet_free(blo_galet_state *s) {
    free(s->y);
    memset(s, 0, sizeof *s);
}

blo_status blo_galet_direction(blo_galet_state *s, const blo_problem *p, const double *x,
                               double *dx, ad_tape *tape, blo_error *err) {
    blo_ok(err);
    if (!s || !s->y || !p || !x || !dx) return blo_fail(err, BLO_EARG, "galet: NULL argument or state");
    int ny = p->n_y;
    double *g = malloc(sizeof(double) * 3 * (size_t)ny), *Hw = g + ny, *HHw = Hw + ny;
    if (!g) return blo_fail(err, BLO_ENOMEM, "galet: out of memory");
    blo_status st = BLO_OK;
    for (int n = 0; n < s->par.N && st == BLO_OK; n++) { // Eq. 10
        st = blo_eval(p, 0, x, s->y, NULL, NULL, g, tape, err);
        for (int i = 0; i < ny; i++) s->y[i] -= s->par.beta * g[i];
        clamp_y(p, s->y);
    }
    // grad F at (x, y^{k+1}): d_x starts as grad_x F, g = grad_y F
    if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, NULL, dx, g, tape, err);
    blo_tape_use u = {0};
    if (st == BLO_OK) st = blo_tape_acquire(&u, tape, err);
    if (st == BLO_OK) {
        blo_curv c;
        bool ok = blo_curv_record(&c, u.t, p, x, s->y);
        if (!s->par.w_warm) memset(s->w, 0, (size_t)ny * sizeof(double));
        // Eq. 12: w <- w - rho H (grad_y F + H w)
        for (int k = 0; ok && k < s->par.T; k++) {
            ok = blo_curv_hvp(&c, s->w, Hw);
            for (int i = 0; ok && i < ny; i++) Hw[i] += g[i];
            ok = ok && blo_curv_hvp(&c, Hw, HHw);
            for (int i = 0; ok && i < ny; i++) s->w[i] -= s->par.rho * HHw[i];
        }
        // Eq. 13: d_x = grad_x F + (d²f/dx dy) w
        double *mixed = malloc(sizeof(double) * (size_t)p->n_x);
        ok = ok && mixed && blo_curv_mixed(&c, s->w, mixed);
        for (int i = 0; ok && i < p->n_x; i++) dx[i] += mixed[i];
        free(mixed);
        st = blo_tape_check(u.t, err, "galet");
        if (st == BLO_OK && !ok) st = blo_fail(err, BLO_ENOMEM, "galet: out of memory");
        blo_tape_release(&u);
    }
    free(g);
    return st;
}

// ---- BVFIM --------------------------------------------------------------------------------------

blo_bvfim_params blo_bvfim_default_params(void) {
    return (blo_bvfim_params){.Tz = 50, .Ty = 50, .s1 = 0.1, .s2 = 0.1, .mu0 = 1, .theta0 = 1,
                              .tau0 = 1, .power = 1};
}

blo_status blo_bvfim_init(blo_bvfim_state *s, const blo_problem *p, const blo_bvfim_params *bp,
                          const double *y0, blo_error *err) {
    memset(s, 0, sizeof *s);
    if (!p || !bp) return blo_fail(err, BLO_EARG, "bvfim: NULL argument");
    if (bp->Tz < 1 || bp->Ty < 1 || !(bp->s1 > 0) || !(bp->s2 > 0) || !(bp->mu0 > 0) ||
        !(bp->theta0 >= 0) || !(bp->tau0 > 0) || !(bp->power > 0))
        return blo_fail(err, BLO_EARG, "bvfim: needs Tz, Ty >= 1, positive steps and mu0, tau0, "
                        "power > 0, theta0 >= 0");
    s->par = *bp;
    s->z = calloc(2 * (size_t)p->n_y, sizeof(double));
    if (!s->z) return blo_fail(err, BLO_ENOMEM, "bvfim: out of memory");
    s->y = s->z + p->n_y;
    if (y0) {
        memcpy(s->z, y0, (size_t)p->n_y * sizeof(double));
        memcpy(s->y, y0, (size_t)p->n_y * sizeof(double));
    }
    return blo_ok(err);
}

void blo_bvfim_free(blo_bvfim_state *s) {
    free(s->z);
    memset(s, 0, sizeof *s);
}

blo_status blo_bvfim_direction(blo_bvfim_state *s, const blo_problem *p, const double *x,
                               double *dx, ad_tape *t, blo_error *err) {
    blo_ok(err);
    if (!s || !s->z || !p || !x || !dx) return blo_fail(err, BLO_EARG, "bvfim: NULL argument or state");
    const blo_bvfim_params *b = &s->par;
    int ny = p->n_y, nx = p->n_x;
    double decay = pow(s->l + 1, -b->power);
    double mu = b->mu0 * decay, theta = b->theta0 * decay, tau = b->tau0 * decay;
    double *g = malloc(sizeof(double) * (2 * (size_t)ny + (size_t)nx)), *gF = g + ny, *gxz = gF + ny;
    double *cand = malloc(sizeof(double) * (size_t)ny);
    if (!g || !cand) {
        free(g), free(cand);
        return blo_fail(err, BLO_ENOMEM, "bvfim: out of memory");
    }
    // z-loop (Eq. 18): GD on f(x, .) + mu/2 ||.||^2
    blo_status st = BLO_OK;
    for (int k = 0; k < b->Tz && st == BLO_OK; k++) {
        st = blo_eval(p, 0, x, s->z, NULL, NULL, g, t, err);
        for (int i = 0; i < ny; i++) s->z[i] -= b->s1 * (g[i] + mu * s->z[i]);
        clamp_y(p, s->z); // projected onto the Y box, like every LL iterate
    }
    double fz = 0, fy = 0;
    if (st == BLO_OK) st = blo_eval(p, 0, x, s->z, &fz, gxz, NULL, t, err);
    double fstar = fz + 0.5 * mu * dot(s->z, s->z, ny) + mu; // f*_mu(x) with mu_1 = mu_2 = mu
    // y-loop (Eq. 19) on F + theta/2 ||y||^2 - tau ln(f*_mu - f(x, y)), staying feasible
    if (st == BLO_OK) st = blo_eval(p, 0, x, s->y, &fy, NULL, NULL, t, err);
    if (st == BLO_OK && !(fstar - fy > 0)) {
        memcpy(s->y, s->z, (size_t)ny * sizeof(double)); // z is feasible: f(x,z) < f*_mu
        fy = fz;
        s->resets++;
    }
    // Each y step backtracks (Armijo) on the barrier objective
    //   phi(y) = F(x, y) + theta/2 ||y||^2 - tau ln(f*_mu - f(x, y)),
    // which also keeps y feasible: a step that only stays feasible could jump to a far basin of a
    // periodic f.
    double Fy = 0;
    if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, &Fy, NULL, NULL, t, err);
    for (int k = 0; k < b->Ty && st == BLO_OK; k++) {
        st = blo_eval(p, 0, x, s->y, &fy, NULL, g, t, err);
        if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, &Fy, NULL, gF, t, err);
        double phi = Fy + 0.5 * theta * dot(s->y, s->y, ny) - tau * log(fstar - fy), gg = 0;
        for (int i = 0; i < ny; i++) {
            gF[i] += theta * s->y[i] + tau * g[i] / (fstar - fy); // the barrier objective's gradient
            gg += gF[i] * gF[i];
        }
        double step = b->s2, fc = fy, Fc = Fy;
        bool accepted = false;
        for (int tries = 0; st == BLO_OK && tries < 40 && !accepted; tries++) {
            for (int i = 0; i < ny; i++) cand[i] = s->y[i] - step * gF[i];
            clamp_y(p, cand);
            st = blo_eval(p, 0, x, cand, &fc, NULL, NULL, t, err);
            if (st == BLO_OK && fstar - fc > 0) st = blo_eval(p, 1, x, cand, &Fc, NULL, NULL, t, err);
            accepted = st == BLO_OK && fstar - fc > 0 &&
                       Fc + 0.5 * theta * dot(cand, cand, ny) - tau * log(fstar - fc) <= phi - 1e-4 * step * gg;
            if (!accepted) step *= 0.5, s->halvings++;
        }
        if (!accepted) break; // no decrease found: y is (numerically) stationary; keep it
        memcpy(s->y, cand, (size_t)ny * sizeof(double));
    }
    // Eqs. 20-21: d_x = grad_x F(x, y) + tau (grad_x f(x, y) - grad_x f(x, z)) / (f*_mu - f(x, y))
    double *gxy = cand; // reuse: [n_x] needed, cand has n_y; allocate if too small
    if (nx > ny) gxy = malloc(sizeof(double) * (size_t)nx);
    if (st == BLO_OK && !gxy) st = blo_fail(err, BLO_ENOMEM, "bvfim: out of memory");
    if (st == BLO_OK) st = blo_eval(p, 0, x, s->y, &fy, gxy, NULL, t, err);
    if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, NULL, dx, NULL, t, err);
    s->gap = fstar - fy;
    if (st == BLO_OK && !(s->gap > 0))
        st = blo_fail(err, BLO_EARG, "bvfim: the barrier argument f*_mu(x) - f(x, y) = %g is not "
                      "positive at iteration %d", s->gap, s->l);
    if (st == BLO_OK) {
        for (int i = 0; i < nx; i++) dx[i] += tau * (gxy[i] - gxz[i]) / s->gap;
        s->l++;
    }
    if (gxy != cand) free(gxy);
    free(g), free(cand);
    return st;
}
