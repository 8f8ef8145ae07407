// The problem description: validation, calling the F / f callbacks with their outputs checked,
// the gradients a step map takes, projection onto the Y box; and the small shared plumbing
// (errors, borrowing a tape).
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Callback failures are recorded on the tape with this prefix so blo_tape_check can tell them
// from the tape's own errors (BLO_ECALLBACK rather than BLO_ETAPE).
#define CALLBACK_TAG "callback: "

const char *blo_status_name(blo_status s) {
    switch (s) {
    case BLO_OK: return "ok";
    case BLO_EARG: return "bad argument";
    case BLO_ECALLBACK: return "bad callback output";
    case BLO_ETAPE: return "tape error";
    case BLO_ENOMEM: return "out of memory";
    case BLO_EIO: return "file error";
    case BLO_STOPPED: return "stopped";
    }
    return "?";
}

blo_status blo_fail(blo_error *err, blo_status s, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->status = s;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return s;
}

blo_status blo_tape_acquire(blo_tape_use *u, ad_tape *given, blo_error *err) {
    u->own = given == NULL;
    // a private tape lives for one call: start it small (it grows as values need)
    ad_tape_params tp = ad_tape_default_params();
    tp.chunk_bytes = 64 << 10;
    u->t = given ? given : ad_tape_new(&tp);
    if (!u->t) return blo_fail(err, BLO_ENOMEM, "cannot allocate a tape");
    if (ad_tape_status(u->t) != AD_OK)
        return blo_fail(err, BLO_EARG, "the given tape already holds an error: %s",
                        ad_tape_error(u->t));
    u->base = ad_tape_mark(u->t);
    return BLO_OK;
}

void blo_tape_release(blo_tape_use *u) {
    if (!u->t) return;
    if (u->own) {
        ad_tape_free(u->t);
    } else {
        ad_tape_clear_error(u->t);
        ad_tape_rewind(u->t, u->base);
    }
    u->t = NULL;
}

blo_status blo_tape_check(ad_tape *t, blo_error *err, const char *where) {
    ad_status s = ad_tape_status(t);
    if (s == AD_OK) return BLO_OK;
    const char *m = ad_tape_error(t);
    size_t tag = strlen(CALLBACK_TAG);
    if (strncmp(m, CALLBACK_TAG, tag) == 0)
        return blo_fail(err, BLO_ECALLBACK, "%s: %s", where, m + tag);
    return blo_fail(err, s == AD_ENOMEM ? BLO_ENOMEM : BLO_ETAPE, "%s: %s", where, m);
}

// ---- calling the objectives ---------------------------------------------------------------------

static ad_var call_obj(ad_tape *t, const blo_problem *p, int upper, ad_var x, ad_var y) {
    const char *name = upper ? "F" : "f";
    blo_objective_fn fn = upper ? p->F : p->f;
    if (ad_tape_status(t) != AD_OK) return AD_NONE;
    if (!fn) {
        ad_tape_fail(t, AD_EARG, CALLBACK_TAG "%s is NULL", name);
        return AD_NONE;
    }
    ad_var v = fn(t, x, y, p->user);
    if (ad_tape_status(t) != AD_OK) return AD_NONE; // the tape's own message says what failed
    if (v == AD_NONE) {
        ad_tape_fail(t, AD_EARG, CALLBACK_TAG "%s(x, y) returned AD_NONE", name);
        return AD_NONE;
    }
    if (!ad_tape_holds(t, v)) {
        ad_tape_fail(t, AD_EARG, CALLBACK_TAG "%s(x, y) returned an invalid handle %lld", name,
                     (long long)v);
        return AD_NONE;
    }
    ad_shape s = ad_shape_of(t, v);
    if (ad_shape_size(s) != 1) {
        ad_tape_fail(t, AD_ESHAPE, CALLBACK_TAG "%s(x, y) returned a [%d, %d] tensor, not a scalar",
                     name, s.rows, s.cols);
        return AD_NONE;
    }
    return v;
}

ad_var blo_call_F(ad_tape *t, const blo_problem *p, ad_var x, ad_var y) {
    return call_obj(t, p, 1, x, y);
}
ad_var blo_call_f(ad_tape *t, const blo_problem *p, ad_var x, ad_var y) {
    return call_obj(t, p, 0, x, y);
}

// The objective is recorded deferred: a step needs only what its gradient reads (f's own value,
// say, is never computed); the gradient is recorded as the tape is set.
static ad_var grad_y(ad_tape *t, const blo_problem *p, int upper, ad_var x, ad_var y) {
    int was = ad_tape_defer(t, 1);
    ad_var v = call_obj(t, p, upper, x, y), g = AD_NONE;
    ad_tape_defer(t, was);
    if (v == AD_NONE) return AD_NONE;
    if (ad_grad(t, v, 1, &y, &g, AD_CREATE_GRAPH) != AD_OK) return AD_NONE;
    return g;
}
ad_var blo_ll_grad_y(ad_tape *t, const blo_problem *p, ad_var x, ad_var y) {
    return grad_y(t, p, 0, x, y);
}
ad_var blo_ul_grad_y(ad_tape *t, const blo_problem *p, ad_var x, ad_var y) {
    return grad_y(t, p, 1, x, y);
}

ad_var blo_y_project(ad_tape *t, const blo_problem *p, ad_var y) {
    // Per-entry bounds as constant views of the caller's arrays (ad_max / ad_min: slope 1 inside,
    // 0 outside, 1/2 exactly on a bound).
    if (p->y_lo) y = ad_max(t, y, ad_const_view(t, ad_vec_shape(p->n_y), p->y_lo));
    if (p->y_hi) y = ad_min(t, y, ad_const_view(t, ad_vec_shape(p->n_y), p->y_hi));
    return y;
}

blo_status blo_sample(const blo_problem *p, blo_sample_which which, ad_rng *rng, blo_error *err) {
    static const char *const what[] = {"the full data", "an LL minibatch", "a UL minibatch"};
    if (!p->sample || p->sample(p->user, (int)which, rng) == 0) return BLO_OK;
    return blo_fail(err, BLO_ECALLBACK, "the problem's sample callback failed to select %s", what[which]);
}

// ---- evaluating the objectives ----------------------------------------------------------------

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

// ---- validation -------------------------------------------------------------------------------------

static blo_status check_box(const char *name, int n, const double *lo, const double *hi,
                            blo_error *err) {
    for (int i = 0; i < n; i++) {
        double l = lo ? lo[i] : -INFINITY, h = hi ? hi[i] : INFINITY;
        if (isnan(l) || isnan(h) || l > h)
            return blo_fail(err, BLO_EARG, "box %s: entry %d has lo = %g > hi = %g (or a NaN)", name,
                            i, l, h);
    }
    return BLO_OK;
}

static blo_status check_sizes(const blo_problem *p, blo_error *err) {
    if (!p) return blo_fail(err, BLO_EARG, "problem is NULL");
    // n_x = 0: nothing but the LL start is learned (meta-learning an initialization: maml, ...)
    if (p->n_x < 0 || p->n_y < 1)
        return blo_fail(err, BLO_EARG, "sizes n_x = %d, n_y = %d: n_x must be >= 0, n_y >= 1", p->n_x, p->n_y);
    if (!p->F || !p->f)
        return blo_fail(err, BLO_EARG, "callback %s is NULL", !p->F ? "F" : "f");
    blo_status s = check_box("X", p->n_x, p->x_lo, p->x_hi, err);
    return s ? s : check_box("Y", p->n_y, p->y_lo, p->y_hi, err);
}

blo_status blo_problem_check(const blo_problem *p, const double *x, const double *y, ad_tape *t,
                             blo_error *err) {
    blo_status s = check_sizes(p, err);
    if (s) return s;
    blo_tape_use u;
    if ((s = blo_tape_acquire(&u, t, err))) return s;
    ad_var xv = x ? ad_param(u.t, ad_vec_shape(p->n_x), x) : ad_fill(u.t, ad_vec_shape(p->n_x), 0);
    ad_var yv = y ? ad_param(u.t, ad_vec_shape(p->n_y), y) : ad_fill(u.t, ad_vec_shape(p->n_y), 0);
    // recorded deferred: what is checked is what recording finds (shapes, callbacks), and the
    // values, which the caller computes next anyway, cost up to two passes over a model's data
    int was = ad_tape_defer(u.t, 1);
    blo_call_F(u.t, p, xv, yv);
    s = blo_tape_check(u.t, err, "F(x, y)");
    if (!s) {
        blo_call_f(u.t, p, xv, yv);
        s = blo_tape_check(u.t, err, "f(x, y)");
    }
    ad_tape_defer(u.t, was);
    blo_tape_release(&u);
    return s ? s : blo_ok(err);
}

blo_status blo_dynamics_validate(const blo_problem *p, const blo_dynamics *d, blo_error *err) {
    blo_status s = check_sizes(p, err);
    if (s) return s;
    if (!d) return blo_fail(err, BLO_EARG, "dynamics is NULL");
    const char *name = d->name ? d->name : "(unnamed)";
    if (!d->step) return blo_fail(err, BLO_EARG, "dynamics %s has no step map", name);
    if (d->state_size < 1)
        return blo_fail(err, BLO_EARG, "dynamics %s: state size %d < 1", name, d->state_size);
    if (!d->init && d->state_size != p->n_y)
        return blo_fail(err, BLO_EARG, "dynamics %s: state size %d != n_y = %d needs its own init",
                        name, d->state_size, p->n_y);
    if (!d->read_y && d->state_size < p->n_y)
        return blo_fail(err, BLO_EARG, "dynamics %s: state size %d < n_y = %d needs its own read_y",
                        name, d->state_size, p->n_y);
    return d->check ? d->check(p, d, err) : BLO_OK;
}

// ---- recording a dynamics' pieces with their shapes checked --------------------------------------

static ad_var expect_vec(ad_tape *t, const blo_dynamics *d, const char *what, ad_var v, int n) {
    if (ad_tape_status(t) != AD_OK) return AD_NONE;
    if (!ad_tape_holds(t, v)) {
        ad_tape_fail(t, AD_EARG, CALLBACK_TAG "dynamics %s: %s returned no tensor", d->name, what);
        return AD_NONE;
    }
    ad_shape s = ad_shape_of(t, v);
    if (ad_shape_size(s) != n) {
        ad_tape_fail(t, AD_ESHAPE, CALLBACK_TAG "dynamics %s: %s returned [%d, %d], expected [%d]",
                     d->name, what, s.rows, s.cols, n);
        return AD_NONE;
    }
    return s.rank == 1 ? v : ad_reshape(t, v, ad_vec_shape(n));
}

ad_var blo_rec_init(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var y0) {
    if (!d->init) return y0;
    return expect_vec(t, d, "init", d->init(t, p, d, y0), d->state_size);
}

ad_var blo_rec_step(ad_tape *t, const blo_problem *p, const blo_dynamics *d, int k, ad_var x,
                    ad_var s) {
    return expect_vec(t, d, "step", d->step(t, p, d, k, x, s), d->state_size);
}

ad_var blo_rec_read_y(ad_tape *t, const blo_problem *p, const blo_dynamics *d, ad_var s) {
    if (!d->read_y) return d->state_size == p->n_y ? s : ad_slice(t, s, 0, p->n_y); // state[0 : n_y]
    return expect_vec(t, d, "read_y", d->read_y(t, p, d, s), p->n_y);
}

// ---- small numeric helpers --------------------------------------------------------------------------

void blo_clamp_y(const blo_problem *p, double *y) {
    for (int i = 0; i < p->n_y; i++) {
        if (p->y_lo && y[i] < p->y_lo[i]) y[i] = p->y_lo[i];
        if (p->y_hi && y[i] > p->y_hi[i]) y[i] = p->y_hi[i];
    }
}

double blo_dot(const double *a, const double *b, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}
