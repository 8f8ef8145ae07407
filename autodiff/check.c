// Public finite-difference checkers: a user's gradient, Hessian-vector product or Jacobian-vector
// product against central differences, reporting the worst entry. Each evaluation records on a fresh tape.
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

ad_check_params ad_check_default_params(void) {
    return (ad_check_params){.h = 1e-5, .rtol = 1e-6, .atol = 1e-9, .seed = 1};
}

typedef struct {
    ad_fn fn;
    void *ctx;
    int n_in;
    const ad_shape *shapes;
    double **x;  // the point (perturbed in place)
    ad_tape *t;
    ad_var in[16];
} evaluator;

// Records the inputs at the current point and calls fn; returns f or AD_NONE (error on tape).
// any_shape: f may be a tensor of any shape (the forward-mode check), else a scalar.
static ad_var record_fn(evaluator *e, bool any_shape) {
    ad_tape_reset(e->t);
    for (int k = 0; k < e->n_in; k++) e->in[k] = ad_param(e->t, e->shapes[k], e->x[k]);
    if (ad_tape_status(e->t) != AD_OK) return AD_NONE;
    ad_var f = e->fn(e->t, e->in, e->ctx);
    if (ad_tape_status(e->t) != AD_OK) return AD_NONE;
    if (!ad_tape_holds(e->t, f)) {
        ad_tape_fail(e->t, AD_EARG, "check: the function returned no node of the tape");
        return AD_NONE;
    }
    ad_shape s = ad_shape_of(e->t, f);
    if (!any_shape && s.rows * s.cols != 1) {
        ad_tape_fail(e->t, AD_ESHAPE, "check: the function did not return a scalar");
        return AD_NONE;
    }
    return f;
}

static ad_var record(evaluator *e) { return record_fn(e, false); }

static int total_size(const evaluator *e) {
    int n = 0;
    for (int k = 0; k < e->n_in; k++) n += ad_shape_size(e->shapes[k]);
    return n;
}

// Gradient of all inputs at the current point into g (flattened). hv: if non-NULL, also the
// Hessian times the direction hv (flattened), through ad_hvp / ad_hvp_mixed.
static bool gradient(evaluator *e, double *g, const double *dir, double *hv) {
    ad_var f = record(e);
    if (!f) return false;
    ad_var out[16];
    if (ad_grad(e->t, f, e->n_in, e->in, out, 0) != AD_OK) return false;
    for (int k = 0, off = 0; k < e->n_in; k++) {
        int n = ad_shape_size(e->shapes[k]);
        memcpy(g + off, ad_value(e->t, out[k]), (size_t)n * sizeof(double));
        off += n;
    }
    if (!hv) return true;
    // (H v)_k = sum_j d/dx_k <grad_{x_j} f, v_j>
    memset(hv, 0, (size_t)total_size(e) * sizeof(double));
    for (int j = 0, offj = 0; j < e->n_in; j++) {
        int nj = ad_shape_size(e->shapes[j]);
        ad_var v = ad_const(e->t, e->shapes[j], dir + offj);
        for (int k = 0, offk = 0; k < e->n_in; k++) {
            int nk = ad_shape_size(e->shapes[k]);
            ad_var r;
            ad_status st = j == k ? ad_hvp(e->t, f, e->in[k], v, &r, 0)
                                  : ad_hvp_mixed(e->t, f, e->in[k], e->in[j], v, &r, 0);
            if (st != AD_OK) return false;
            const double *rv = ad_value(e->t, r);
            for (int i = 0; i < nk; i++) hv[offk + i] += rv[i];
            offk += nk;
        }
        offj += nj;
    }
    return ad_tape_status(e->t) == AD_OK;
}

static void compare(ad_check_report *r, const ad_check_params *p, const evaluator *e,
                    const double *a, const double *num) {
    r->pass = 1;
    r->worst_ratio = -1;
    for (int k = 0, off = 0; k < e->n_in; k++) {
        for (int i = 0, n = ad_shape_size(e->shapes[k]); i < n; i++, off++) {
            double err = fabs(a[off] - num[off]);
            double mag = fmax(fabs(a[off]), fabs(num[off]));
            double ratio = err / (p->atol + p->rtol * mag);
            if (!(ratio <= 1)) r->pass = 0;
            if (ratio > r->worst_ratio || isnan(ratio)) {
                r->worst_ratio = isnan(ratio) ? INFINITY : ratio;
                r->worst_input = k;
                r->worst_index = i;
                r->analytic = a[off];
                r->numeric = num[off];
                r->abs_err = err;
                r->rel_err = err / fmax(mag, 1e-300);
            }
        }
    }
    snprintf(r->msg, sizeof r->msg,
             "%s: worst entry input %d [%d]: analytic %.12g, numeric %.12g (abs %.3g, rel %.3g)",
             r->pass ? "pass" : "FAIL", r->worst_input, r->worst_index, r->analytic, r->numeric,
             r->abs_err, r->rel_err);
}

// What is wrong with the arguments, in r->msg (false), before anything is allocated: shapes as
// the tape takes them (ad_shape_valid), a point for every input with entries, a positive
// finite step and finite tolerances >= 0.
static bool check_args(ad_check_report *r, ad_fn fn, int n_in, const ad_shape *shapes,
                       const double *const *point, const ad_check_params *p) {
    char b[96] = "";
    if (!fn) snprintf(b, sizeof b, "no function (fn is NULL)");
    else if (n_in < 1 || n_in > 16) snprintf(b, sizeof b, "%d inputs (1 to 16)", n_in);
    else if (!shapes) snprintf(b, sizeof b, "shapes is NULL");
    else if (!point) snprintf(b, sizeof b, "point is NULL");
    else if (!(p->h > 0) || !isfinite(p->h))
        snprintf(b, sizeof b, "step h = %g must be finite and > 0", p->h);
    else if (!(p->rtol >= 0) || !isfinite(p->rtol))
        snprintf(b, sizeof b, "rtol = %g must be finite and >= 0", p->rtol);
    else if (!(p->atol >= 0) || !isfinite(p->atol))
        snprintf(b, sizeof b, "atol = %g must be finite and >= 0", p->atol);
    int64_t total = 0;
    for (int k = 0; !b[0] && k < n_in; k++) {
        ad_shape s = shapes[k];
        if (!ad_shape_valid(s))
            snprintf(b, sizeof b, "input %d has an invalid shape (rank %d, %d x %d; at most %d "
                     "entries)", k, s.rank, s.rows, s.cols, (int)INT32_MAX);
        else if ((total += (int64_t)s.rows * s.cols) > INT32_MAX)
            snprintf(b, sizeof b, "the inputs have more than %d entries together", (int)INT32_MAX);
        else if (!point[k] && s.rows * s.cols > 0)
            snprintf(b, sizeof b, "input %d has no point (point[%d] is NULL)", k, k);
    }
    if (!b[0]) return true;
    r->status = AD_EARG;
    snprintf(r->msg, sizeof r->msg, "check: %s", b);
    return false;
}

static bool setup(evaluator *e, ad_check_report *r, ad_fn fn, void *ctx, int n_in,
                  const ad_shape *shapes, const double *const *point, const ad_check_params *p) {
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    if (!check_args(r, fn, n_in, shapes, point, p)) return false;
    *e = (evaluator){.fn = fn, .ctx = ctx, .n_in = n_in, .shapes = shapes};
    e->t = ad_tape_new(NULL);
    e->x = calloc((uint32_t)n_in, sizeof *e->x); // checked: 1 <= n_in <= 16
    bool ok = e->t && e->x;
    for (int k = 0; ok && k < n_in; k++) {
        size_t n = (uint32_t)ad_shape_size(shapes[k]); // checked: 0 <= n <= INT32_MAX
        e->x[k] = malloc((n ? n : 1) * sizeof(double));
        ok = e->x[k] != NULL;
        if (ok && n) memcpy(e->x[k], point[k], n * sizeof(double));
    }
    if (!ok) {
        r->status = AD_ENOMEM;
        snprintf(r->msg, sizeof r->msg, "check: out of memory");
    }
    return ok;
}

static void teardown(evaluator *e, ad_check_report *r) {
    if (r->status == AD_OK && e->t && ad_tape_status(e->t) != AD_OK) {
        r->status = ad_tape_status(e->t);
        r->pass = 0;
        snprintf(r->msg, sizeof r->msg, "check stopped: %s", ad_tape_error(e->t));
    }
    for (int k = 0; e->x && k < e->n_in; k++) free(e->x[k]);
    free(e->x);
    ad_tape_free(e->t);
}

static double step(const ad_check_params *p, double x) { return p->h * fmax(1.0, fabs(x)); }

ad_check_report ad_check_grad(ad_fn fn, void *ctx, int n_in, const ad_shape *shapes,
                              const double *const *point, const ad_check_params *par) {
    ad_check_params p = par ? *par : ad_check_default_params();
    ad_check_report r;
    evaluator e;
    if (setup(&e, &r, fn, ctx, n_in, shapes, point, &p)) {
        int n = total_size(&e);
        double *a = malloc((size_t)(n ? n : 1) * sizeof *a), *num = malloc((size_t)(n ? n : 1) * sizeof *num);
        bool ok = a && num && gradient(&e, a, NULL, NULL);
        for (int k = 0, off = 0; ok && k < n_in; k++) {
            for (int i = 0, nk = ad_shape_size(shapes[k]); ok && i < nk; i++, off++) {
                double x0 = e.x[k][i], h = step(&p, x0);
                e.x[k][i] = x0 + h;
                ad_var f = record(&e);
                double fp = f ? ad_item(e.t, f) : NAN;
                e.x[k][i] = x0 - h;
                f = f ? record(&e) : AD_NONE;
                double fm = f ? ad_item(e.t, f) : NAN;
                e.x[k][i] = x0;
                ok = f != AD_NONE;
                num[off] = (fp - fm) / (2 * h);
            }
        }
        if (ok) compare(&r, &p, &e, a, num);
        else if (!a || !num) r.status = AD_ENOMEM;
        free(a);
        free(num);
    }
    teardown(&e, &r);
    return r;
}

// A seeded random direction v over all inputs (flattened) and the central-difference step along
// it, h scaled by the point's largest entry.
static double direction(const evaluator *e, const ad_check_params *p, double *v) {
    ad_rng rng;
    ad_rng_seed(&rng, p->seed);
    double xmax = 0;
    for (int k = 0, off = 0; k < e->n_in; k++)
        for (int i = 0, nk = ad_shape_size(e->shapes[k]); i < nk; i++, off++) {
            v[off] = ad_rng_normal(&rng);
            xmax = fmax(xmax, fabs(e->x[k][i]));
        }
    return p->h * fmax(1.0, xmax);
}

ad_check_report ad_check_hvp(ad_fn fn, void *ctx, int n_in, const ad_shape *shapes,
                             const double *const *point, const ad_check_params *par) {
    ad_check_params p = par ? *par : ad_check_default_params();
    ad_check_report r;
    evaluator e;
    if (setup(&e, &r, fn, ctx, n_in, shapes, point, &p)) {
        int n = total_size(&e);
        size_t sz = (size_t)(n ? n : 1) * sizeof(double);
        double *v = malloc(sz), *hv = malloc(sz), *gp = malloc(sz), *gm = malloc(sz), *g = malloc(sz);
        bool ok = v && hv && gp && gm && g;
        double h = ok ? direction(&e, &p, v) : 0;
        ok = ok && gradient(&e, g, v, hv);
        for (int sgn = 1; ok && sgn >= -1; sgn -= 2) {
            for (int k = 0, off = 0; k < n_in; k++)
                for (int i = 0, nk = ad_shape_size(shapes[k]); i < nk; i++, off++)
                    e.x[k][i] = point[k][i] + sgn * h * v[off];
            ok = gradient(&e, sgn > 0 ? gp : gm, NULL, NULL);
        }
        if (ok) {
            for (int i = 0; i < n; i++) g[i] = (gp[i] - gm[i]) / (2 * h);
            compare(&r, &p, &e, hv, g);
        } else if (!(v && hv && gp && gm && g)) {
            r.status = AD_ENOMEM;
        }
        free(v), free(hv), free(gp), free(gm), free(g);
    }
    teardown(&e, &r);
    return r;
}

// fn at the point x + sgn h v (v flattened over the inputs) into out [size], its shape in *os.
static bool value_along(evaluator *e, const double *const *point, const double *v, double h,
                        int sgn, double *out, int size, ad_shape *os) {
    for (int k = 0, off = 0; k < e->n_in; k++)
        for (int i = 0, nk = ad_shape_size(e->shapes[k]); i < nk; i++, off++)
            e->x[k][i] = point[k][i] + sgn * h * v[off];
    ad_var f = record_fn(e, true);
    if (!f) return false;
    *os = ad_shape_of(e->t, f);
    if (ad_shape_size(*os) != size) {
        ad_tape_fail(e->t, AD_ESHAPE, "check: the function's output changed size along the tangent");
        return false;
    }
    memcpy(out, ad_value(e->t, f), (size_t)size * sizeof(double));
    return true;
}

// J v (ad_jvp, one tangent set) at the point for the flattened tangent v, into jv [size of f];
// the output's size in *size (jv is allocated here).
static bool jvp_at(evaluator *e, const double *v, double **jv, int *size) {
    ad_var f = record_fn(e, true), tan[16], out = AD_NONE;
    if (!f) return false;
    for (int k = 0, off = 0; k < e->n_in; k++) {
        tan[k] = ad_const(e->t, e->shapes[k], v + off);
        off += ad_shape_size(e->shapes[k]);
    }
    if (ad_jvp(e->t, f, e->n_in, e->in, 1, tan, &out, 0) != AD_OK) return false;
    *size = ad_shape_size(ad_shape_of(e->t, f));
    *jv = malloc((size_t)(*size ? *size : 1) * sizeof(double));
    if (!*jv) {
        ad_tape_fail(e->t, AD_ENOMEM, "check: out of memory");
        return false;
    }
    memcpy(*jv, ad_value(e->t, out), (size_t)*size * sizeof(double));
    return true;
}

ad_check_report ad_check_jvp(ad_fn fn, void *ctx, int n_in, const ad_shape *shapes,
                             const double *const *point, const ad_check_params *par) {
    ad_check_params p = par ? *par : ad_check_default_params();
    ad_check_report r;
    evaluator e;
    if (setup(&e, &r, fn, ctx, n_in, shapes, point, &p)) {
        int n = total_size(&e), m = 0;
        double *v = malloc((size_t)(n ? n : 1) * sizeof *v), *jv = NULL, *fp = NULL, *fm = NULL;
        bool ok = v != NULL;
        double h = ok ? direction(&e, &p, v) : 0;
        ok = ok && jvp_at(&e, v, &jv, &m);
        if (ok) {
            fp = malloc((size_t)(m ? m : 1) * sizeof *fp), fm = malloc((size_t)(m ? m : 1) * sizeof *fm);
            ok = fp && fm;
            if (!ok) r.status = AD_ENOMEM;
        }
        ad_shape os = ad_vec_shape(m);
        ok = ok && value_along(&e, point, v, h, 1, fp, m, &os) && value_along(&e, point, v, h, -1, fm, m, &os);
        if (ok) {
            for (int i = 0; i < m; i++) fp[i] = (fp[i] - fm[i]) / (2 * h);
            // the entries compared are the output's: one "input" of its shape
            evaluator out = {.n_in = 1, .shapes = &os};
            compare(&r, &p, &out, jv, fp);
        } else if (!v) {
            r.status = AD_ENOMEM;
        }
        free(v), free(jv), free(fp), free(fm);
    }
    teardown(&e, &r);
    return r;
}
