// The heads of the methods' states, shared by the files of several methods: an LL start that
// warm starts move with y_K as the solution (the unrolled and implicit families, darts, iga), and the
// vectors a first-order method carries (bome, galet, bvfim, pgdo, bamm, meso).
#include "family.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

blo_status blo_ll_check_states(const blo_method_env *env, int K, blo_error *err) {
    char what[96];
    snprintf(what, sizeof what, "K + 1 = %d LL states of %d doubles", K + 1, env->dyn->state_size);
    return blo_check_memory((double)K + 1, 8.0 * env->dyn->state_size, what, err);
}

blo_status blo_ll_new(void **state, size_t size, const blo_method_env *env, int K, int ia,
                      int keep_states, blo_error *err) {
    *state = NULL;
    if (!env->dyn) return blo_fail(err, BLO_EARG, "this method needs LL dynamics");
    const blo_problem *p = env->p;
    int S = env->dyn->state_size, nx = p->n_x, ny = p->n_y;
    blo_status st = keep_states ? blo_ll_check_states(env, K, err) : BLO_OK;
    if (st) return st;
    blo_ll_state *h = calloc(1, size);
    double *buf = malloc(sizeof(double) * (2 * (size_t)ny + (size_t)nx));
    double *states = keep_states ? malloc(sizeof(double) * ((size_t)K + 1) * (size_t)S) : NULL;
    if (!h || !buf || (keep_states && !states)) {
        free(h), free(buf), free(states);
        return blo_fail(err, BLO_ENOMEM, "out of memory for K + 1 = %d LL states of %d doubles", K + 1, S);
    }
    *h = (blo_ll_state){.p = p, .dyn = *env->dyn, .tape = env->tape, .K = K, .ia = ia, .y0 = buf,
                        .y0_ref = buf + ny, .x_ref = buf + 2 * ny, .states = states};
    memcpy(h->y0, env->y0, sizeof(double) * (size_t)ny);
    memcpy(h->y0_ref, env->y0, sizeof(double) * (size_t)ny);
    memset(h->x_ref, 0, sizeof(double) * (size_t)nx);
    *state = h;
    return blo_ok(err);
}

blo_status blo_ll_new_scratch(void **state, size_t size, const blo_method_env *env, int K, size_t n,
                              blo_error *err) {
    blo_status st = blo_ll_new(state, size, env, K, 0, 1, err);
    if (st) return st;
    blo_ll_state *h = *state;
    if (!(h->scratch = malloc(sizeof(double) * (n ? n : 1)))) {
        blo_ll_free(h);
        *state = NULL;
        return blo_fail(err, BLO_ENOMEM, "out of memory for the method's %zu doubles", n);
    }
    return blo_ok(err);
}

// y_n of the dynamics from `start`, two states at a time: memory O(S), not O(n S).
static blo_status ll_walk(const blo_ll_state *h, const double *x, const double *start, int n, double *y,
                          blo_error *err) {
    size_t S = (size_t)h->dyn.state_size;
    double *st = malloc(sizeof(double) * 2 * S);
    if (!st) return blo_fail(err, BLO_ENOMEM, "out of memory for 2 LL states of %zu doubles", S);
    blo_status s = blo_state_init(h->p, &h->dyn, start, st, h->tape, err);
    for (int k = 0; k < n && !s; k++) {
        s = blo_unroll(h->p, &h->dyn, x, k, st, 1, st, NULL, h->tape, err);
        memcpy(st, st + S, sizeof(double) * S);
    }
    if (!s) s = blo_state_read_y(h->p, &h->dyn, st, y, h->tape, err);
    free(st);
    return s;
}

// y_K of the dynamics from y0 (or z under IA): all K steps even under PTT (the LL model the
// papers evaluate is the one after K steps). Without the family's stored states, two states at a
// time (ll_walk).
blo_status blo_ll_solution(void *state, const double *x, const double *z, double *y, blo_error *err) {
    blo_ll_state *h = state;
    const double *start = h->ia ? z : h->y0;
    if (!h->states) return ll_walk(h, x, start, h->K, y, err);
    double *st = h->states;
    blo_status s = blo_state_init(h->p, &h->dyn, start, st, h->tape, err);
    if (!s) s = blo_unroll(h->p, &h->dyn, x, 0, st, h->K, st, NULL, h->tape, err);
    if (!s) s = blo_state_read_y(h->p, &h->dyn, st + (size_t)h->K * (size_t)h->dyn.state_size, y, h->tape, err);
    return s;
}

blo_status blo_ll_warm_steps(blo_ll_state *h, const double *x, int n, blo_error *err) {
    return ll_walk(h, x, h->y0_ref, n, h->y0, err);
}

blo_status blo_ll_steps(blo_ll_state *h, const double *x, double *y, blo_error *err) {
    memcpy(h->y0_ref, h->y0, sizeof(double) * (size_t)h->p->n_y);
    memcpy(h->x_ref, x, sizeof(double) * (size_t)h->p->n_x);
    return blo_ll_solution(h, x, NULL, y, err);
}

blo_status blo_ll_phi(void *state, const double *x, const double *z, double *value, blo_error *err) {
    const blo_ll_state *h = state;
    (void)z;
    blo_hypergrad_params hp = blo_hypergrad_default_params();
    hp.K = h->K, hp.tape = h->tape;
    blo_hypergrad_info info = {.k_start = 0, .k_end = h->K, .kbar = h->K};
    return blo_hypergrad_phi(h->p, &h->dyn, &hp, &info, h->x_ref, h->y0_ref, x, h->y0_ref, value, err);
}

blo_status blo_ll_save(const void *state, blo_writer *w) {
    const blo_ll_state *h = state;
    return blo_write_doubles(w, h->y0, (size_t)h->p->n_y);
}

blo_status blo_ll_load(void *state, blo_reader *r, blo_error *err) {
    blo_ll_state *h = state;
    if (blo_read_doubles(r, h->y0, (size_t)h->p->n_y))
        return blo_fail(err, BLO_EIO, "the LL start in the state is truncated");
    return blo_ok(err);
}

void blo_ll_free(void *state) {
    blo_ll_state *h = state;
    if (!h) return;
    free(h->y0);
    free(h->states);
    free(h->scratch);
    free(h);
}

blo_status blo_step_or_ll(double *step, const blo_dynamics *d, const char *method, blo_error *err) {
    if (*step > 0) return blo_ok(err);
    if (!d || !(d->ll_step > 0))
        return blo_fail(err, BLO_EARG, "%s: a step of 0 takes the LL step, which dynamics %s does not give; "
                        "set it", method, d ? d->name : "(none)");
    *step = d->ll_step;
    return blo_ok(err);
}

// ---- first-order methods ---------------------------------------------------------------------------------

blo_status blo_fo_new(void **state, size_t size, const blo_method_env *env, size_t n, size_t saved,
                      blo_error *err) {
    size_t ny = (size_t)env->p->n_y;
    blo_fo_state *h = calloc(1, size);
    double *mem = calloc(n, sizeof(double));
    if (!h || !mem) {
        free(h), free(mem);
        *state = NULL;
        return blo_fail(err, BLO_ENOMEM, "out of memory for the method's state");
    }
    *h = (blo_fo_state){.p = env->p, .tape = env->tape, .mem = mem, .saved = saved, .rng = env->rng};
    memcpy(mem, env->y0, ny * sizeof(double));
    *state = h;
    return blo_ok(err);
}

blo_status blo_fo_new_z(void **state, size_t size, const blo_method_env *env, size_t n, size_t saved,
                        size_t par_offset, size_t par_size, int *n_z, double **z0, blo_error *err) {
    blo_status st = blo_fo_new(state, size, env, n, saved, err);
    if (st) return st;
    memcpy((char *)*state + par_offset, env->params, par_size);
    *n_z = env->p->n_y, *z0 = ((blo_fo_state *)*state)->mem;
    return BLO_OK;
}

blo_status blo_fo_solution(void *state, const double *x, const double *z, double *y, blo_error *err) {
    const blo_fo_state *h = state;
    (void)x, (void)z;
    memcpy(y, h->mem, sizeof(double) * (size_t)h->p->n_y);
    return blo_ok(err);
}

blo_status blo_fo_z_solution(void *state, const double *x, const double *z, double *y, blo_error *err) {
    const blo_fo_state *h = state;
    (void)x;
    memcpy(y, z, sizeof(double) * (size_t)h->p->n_y);
    return blo_ok(err);
}

blo_status blo_penalty_value(const blo_problem *p, const blo_penalty *w, const double *x, const double *z,
                             const double *yhat, double *value, ad_tape *t, blo_error *err) {
    double F = 0, fz = 0, fh = 0, d2 = 0;
    blo_status st = blo_eval(p, 1, x, z, &F, NULL, NULL, t, err);
    if (!st) st = blo_eval(p, 0, x, z, &fz, NULL, NULL, t, err);
    if (!st) st = blo_eval(p, 0, x, yhat, &fh, NULL, NULL, t, err);
    for (int i = 0; i < p->n_y; i++) d2 += (yhat[i] - z[i]) * (yhat[i] - z[i]);
    *value = w->a * F + w->b * (fz - fh) - 0.5 * w->e * d2;
    return st;
}

blo_status blo_penalty_grad(const blo_problem *p, const blo_penalty *w, const double *x, const double *z,
                            const double *yhat, double *scratch, double *gx, double *gz, ad_tape *t,
                            blo_error *err) {
    int nx = p->n_x, ny = p->n_y;
    double *fxh = scratch, *fx = fxh + nx, *fy = fx + nx;
    blo_status st = blo_eval(p, 0, x, yhat, NULL, fxh, NULL, t, err);
    if (!st) st = blo_eval(p, 0, x, z, NULL, fx, fy, t, err);
    if (!st) st = blo_eval(p, 1, x, z, NULL, gx, gz, t, err);
    if (st) return st;
    for (int i = 0; i < nx; i++) gx[i] = w->a * gx[i] + w->b * (fx[i] - fxh[i]);
    for (int i = 0; i < ny; i++) gz[i] = w->a * gz[i] + w->b * fy[i] + w->e * (yhat[i] - z[i]);
    return BLO_OK;
}

blo_status blo_fo_save(const void *state, blo_writer *w) {
    const blo_fo_state *h = state;
    return blo_write_doubles(w, h->mem, h->saved);
}

blo_status blo_fo_load(void *state, blo_reader *r, blo_error *err) {
    blo_fo_state *h = state;
    if (blo_read_doubles(r, h->mem, h->saved)) return blo_fail(err, BLO_EIO, "the method's state is truncated");
    return blo_ok(err);
}

void blo_fo_free(void *state) {
    blo_fo_state *h = state;
    if (h) free(h->mem), free(h);
}
