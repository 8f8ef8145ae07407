// Checking any method's hypergradient on any problem: its first UL iteration's direction against
// central differences of the value the method says it differentiates (its phi, with what the
// direction held fixed still held), entry by entry, reported like ad_check_grad.
#include "solver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

blo_check_params blo_check_default_params(void) {
    return (blo_check_params){.h = 1e-6, .rtol = 1e-6, .atol = 1e-9, .max_coords = 40, .seed = 1};
}

static const char *claim_name(blo_grad_claim c) {
    return c == BLO_GRAD_EXACT ? "exact" : c == BLO_GRAD_APPROX ? "approximate" : "none";
}

// Which entries of (x, z) [n] to compare: all, or max distinct ones drawn by the seed.
static int pick(int n, const blo_check_params *cp, int *idx) {
    for (int i = 0; i < n; i++) idx[i] = i;
    if (cp->max_coords <= 0 || cp->max_coords >= n) return n;
    ad_rng r;
    ad_rng_seed(&r, cp->seed);
    for (int i = 0; i < cp->max_coords; i++) { // the first max entries of a seeded shuffle
        int j = i + (int)(ad_rng_next(&r) % (uint64_t)(n - i)), t = idx[i];
        idx[i] = idx[j], idx[j] = t;
    }
    return cp->max_coords;
}

static void verdict(blo_check_report *r, const blo_check_params *cp, int nx, int i, double a, double num) {
    double err = fabs(a - num), mag = fmax(fabs(a), fabs(num)), tol = cp->atol + cp->rtol * mag;
    if (!(err <= tol)) r->pass = 0; // a NaN fails
    double ratio = tol > 0 ? err / tol : err > 0 ? INFINITY : 0;
    if (isnan(ratio)) ratio = INFINITY;
    if (r->checked == 0 || ratio > r->worst_ratio) {
        r->worst_ratio = ratio;
        r->worst_in_z = i >= nx, r->worst_index = i >= nx ? i - nx : i;
        r->analytic = a, r->numeric = num, r->abs_err = err, r->rel_err = err / fmax(mag, 1e-300);
    }
    r->checked++;
}

static blo_status compare_all(blo_solver *s, const blo_check_params *cp, blo_check_report *r,
                              blo_error *err) {
    blo_record rec;
    blo_status st = blo_solver_direction(s, &rec, err);
    int nx = s->nx, n = nx + s->nz;
    int *idx = malloc(sizeof(int) * (size_t)n);
    const double *g = s->g; // phi leaves the direction alone
    if (!st && !idx) st = blo_fail(err, BLO_ENOMEM, "check: out of memory");
    int count = st ? 0 : pick(n, cp, idx);
    r->pass = 1;
    for (int k = 0; !st && k < count; k++) {
        int i = idx[k];
        double *v = i < nx ? &s->x[i] : &s->z[i - nx], v0 = *v, h = cp->h * fmax(1, fabs(v0)), fp, fm;
        *v = v0 + h;
        st = s->m->phi(s->state, s->x, s->z, &fp, err);
        *v = v0 - h;
        if (!st) st = s->m->phi(s->state, s->x, s->z, &fm, err);
        *v = v0;
        if (!st) verdict(r, cp, nx, i, g[i], (fp - fm) / (2 * h));
    }
    free(idx);
    return st;
}

blo_check_report blo_check_hypergrad(const blo_problem *p, const blo_config *c, const double *x,
                                     const double *y0, const double *z_prior,
                                     const blo_check_params *cp_in) {
    blo_check_report r = {.status = BLO_OK};
    blo_check_params cp = cp_in ? *cp_in : blo_check_default_params();
    blo_error e = {0};
    const blo_method_type *m = blo_config_method(c);
    if (!m) {
        r.status = BLO_EARG;
        snprintf(r.msg, sizeof r.msg, "check: NULL configuration");
        return r;
    }
    r.claim = m->claim;
    if (!(cp.h > 0) || !isfinite(cp.h) || !(cp.rtol >= 0) || !isfinite(cp.rtol) || !(cp.atol >= 0) ||
        !isfinite(cp.atol)) {
        r.status = BLO_EARG;
        snprintf(r.msg, sizeof r.msg, "check: h = %g must be > 0, rtol = %g and atol = %g >= 0, all finite",
                 cp.h, cp.rtol, cp.atol);
        return r;
    }
    if (m->claim == BLO_GRAD_NONE || !m->phi) {
        r.status = BLO_EARG;
        snprintf(r.msg, sizeof r.msg, "%s steps along a direction that is not the gradient of an "
                 "objective: there is nothing to compare it with", m->name);
        return r;
    }
    blo_solver *s = blo_solver_new(p, c, x, y0, z_prior, &e);
    blo_status st = s ? compare_all(s, &cp, &r, &e) : e.status;
    blo_solver_free(s);
    if (st) {
        r.status = st, r.pass = 0;
        snprintf(r.msg, sizeof r.msg, "check stopped: %s", e.msg);
        return r;
    }
    snprintf(r.msg, sizeof r.msg, "%s: %s's hypergradient (%s) vs central differences of the value it "
             "differentiates, %d entries; worst %s[%d]: analytic %.12g, numeric %.12g (abs %.3g, rel %.3g)",
             r.pass ? "PASS" : "FAIL", m->name, claim_name(m->claim), r.checked, r.worst_in_z ? "z" : "x",
             r.worst_index, r.analytic, r.numeric, r.abs_err, r.rel_err);
    return r;
}
