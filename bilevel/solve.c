// The upper-level loop: projected plain / momentum / Adam steps on x (and a second variable z)
// along any method's direction, a record per iteration, and a clean stop on a NaN that keeps the
// last good iterate.
#include "internal.h"
#include "methods.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

blo_solve_params blo_solve_default_params(void) {
    return (blo_solve_params){.T = 100, .opt = BLO_OPT_PLAIN, .lr_x = 0.1, .lr_z = 0.1,
                              .momentum = 0.9, .beta1 = 0.9, .beta2 = 0.999, .adam_eps = 1e-8};
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// One optimizer step on v [n] with gradient g, state m, s [n], then the box.
static void step(const blo_solve_params *sp, int t, double lr, int n, double *v, const double *g,
                 double *m, double *s, const double *lo, const double *hi) {
    for (int i = 0; i < n; i++) {
        double d = g[i];
        if (sp->opt == BLO_OPT_MOMENTUM) {
            m[i] = sp->momentum * m[i] + g[i];
            d = m[i];
        } else if (sp->opt == BLO_OPT_ADAM) {
            m[i] = sp->beta1 * m[i] + (1 - sp->beta1) * g[i];
            s[i] = sp->beta2 * s[i] + (1 - sp->beta2) * g[i] * g[i];
            double mh = m[i] / (1 - pow(sp->beta1, t + 1)), sh = s[i] / (1 - pow(sp->beta2, t + 1));
            d = mh / (sqrt(sh) + sp->adam_eps);
        }
        v[i] -= lr * d;
        if (lo && v[i] < lo[i]) v[i] = lo[i];
        if (hi && v[i] > hi[i]) v[i] = hi[i];
    }
}

// The first non-finite entry of v [n], or -1.
static int nonfinite(const double *v, int n) {
    for (int i = 0; i < n; i++)
        if (!isfinite(v[i])) return i;
    return -1;
}

blo_status blo_solve(const blo_problem *p, blo_direction_fn dir, void *method, int n_z,
                     const blo_solve_params *sp, double *x, double *z, int *done, blo_error *err) {
    blo_ok(err);
    if (done) *done = 0;
    if (!p || !dir || !sp || !x || (n_z > 0 && !z) || n_z < 0)
        return blo_fail(err, BLO_EARG, "solve: NULL argument");
    if (sp->T < 1 || !(sp->lr_x > 0) || (n_z > 0 && !(sp->lr_z > 0)) ||
        !(sp->momentum >= 0 && sp->momentum < 1) || !(sp->beta1 >= 0 && sp->beta1 < 1) ||
        !(sp->beta2 >= 0 && sp->beta2 < 1) || !(sp->adam_eps > 0))
        return blo_fail(err, BLO_EARG, "solve: needs T >= 1 (T = %d), positive step sizes "
                        "(x %g, z %g), momentum and Adam betas in [0, 1)", sp->T, sp->lr_x, sp->lr_z);
    int nx = p->n_x;
    size_t n = (size_t)nx + (size_t)n_z;
    // [g | m | s] for x then z, and a copy of the iterate to restore on failure
    double *buf = calloc(4 * n + 1, sizeof(double));
    if (!buf) return blo_fail(err, BLO_ENOMEM, "solve: out of memory");
    double *g = buf, *m = g + n, *s = m + n, *keep = s + n;
    blo_status st = BLO_OK;
    for (int t = 0; t < sp->T && st == BLO_OK; t++) {
        double t0 = now();
        blo_record rec = {.t = t, .F = NAN, .f = NAN};
        memcpy(keep, x, (size_t)nx * sizeof(double));
        if (n_z) memcpy(keep + nx, z, (size_t)n_z * sizeof(double));
        st = dir(method, p, t, x, z, g, n_z ? g + nx : NULL, &rec, err);
        if (st != BLO_OK) {
            blo_error inner = err ? *err : (blo_error){0};
            st = blo_fail(err, st, "iteration %d: %s", t, inner.msg);
            break;
        }
        int bad = nonfinite(g, (int)n);
        if (bad >= 0 || !isfinite(rec.F)) {
            st = bad >= 0 ? blo_fail(err, BLO_ETAPE, "iteration %d: the direction has %g at entry %d "
                                     "of %s; stopped at the last good iterate", t, g[bad],
                                     bad < nx ? bad : bad - nx, bad < nx ? "x" : "z")
                          : blo_fail(err, BLO_ETAPE, "iteration %d: F is %g; stopped at the last "
                                     "good iterate", t, rec.F);
            break;
        }
        double gg = 0;
        for (size_t i = 0; i < n; i++) gg += g[i] * g[i];
        step(sp, t, sp->lr_x, nx, x, g, m, s, p->x_lo, p->x_hi);
        if (n_z) step(sp, t, sp->lr_z, n_z, z, g + nx, m + nx, s + nx, p->y_lo, p->y_hi);
        if (nonfinite(x, nx) >= 0 || (n_z && nonfinite(z, n_z) >= 0)) { // an overflowing step
            memcpy(x, keep, (size_t)nx * sizeof(double));
            if (n_z) memcpy(z, keep + nx, (size_t)n_z * sizeof(double));
            st = blo_fail(err, BLO_ETAPE, "iteration %d: the step overflowed; stopped at the last "
                          "good iterate", t);
            break;
        }
        rec.x = x;
        rec.z = n_z ? z : NULL;
        rec.grad_norm = sqrt(gg);
        rec.seconds = now() - t0;
        if (sp->record) sp->record(&rec, sp->record_user);
        if (done) *done = t + 1;
    }
    free(buf);
    return st;
}
