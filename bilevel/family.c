// The heads of the methods' states, shared by the files of several methods: an LL start that
// warm starts move with y_K as the solution (the unrolled and implicit families, darts), and the
// vectors a first-order method carries (bome, galet, bvfim).
#include "family.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

blo_status blo_ll_new(void **state, size_t size, const blo_method_env *env, int K, int ia,
                      int keep_states, blo_error *err) {
    *state = NULL;
    if (!env->dyn) return blo_fail(err, BLO_EARG, "this method needs LL dynamics");
    const blo_problem *p = env->p;
    int S = env->dyn->state_size, nx = p->n_x, ny = p->n_y;
    char what[96];
    snprintf(what, sizeof what, "K + 1 = %d LL states of %d doubles", K + 1, S);
    blo_status st = blo_check_memory((double)K + 1, 8.0 * S, what, err);
    if (st) return st;
    blo_ll_state *h = calloc(1, size);
    double *buf = malloc(sizeof(double) * (2 * (size_t)ny + (size_t)nx));
    double *states = keep_states ? malloc(sizeof(double) * ((size_t)K + 1) * (size_t)S) : NULL;
    if (!h || !buf || (keep_states && !states)) {
        free(h), free(buf), free(states);
        return blo_fail(err, BLO_ENOMEM, "out of memory for %s", what);
    }
    *h = (blo_ll_state){.p = p, .dyn = *env->dyn, .tape = env->tape, .K = K, .ia = ia, .y0 = buf,
                        .y0_ref = buf + ny, .x_ref = buf + 2 * ny, .states = states};
    memcpy(h->y0, env->y0, sizeof(double) * (size_t)ny);
    memcpy(h->y0_ref, env->y0, sizeof(double) * (size_t)ny);
    memset(h->x_ref, 0, sizeof(double) * (size_t)nx);
    *state = h;
    return blo_ok(err);
}

// y_K of the dynamics from y0 (or z under IA): all K steps even under PTT (the LL model the
// papers evaluate is the one after K steps).
blo_status blo_ll_solution(void *state, const double *x, const double *z, double *y, blo_error *err) {
    blo_ll_state *h = state;
    int S = h->dyn.state_size;
    double *st = h->states ? h->states : malloc(sizeof(double) * ((size_t)h->K + 1) * (size_t)S);
    if (!st) return blo_fail(err, BLO_ENOMEM, "out of memory for %d LL states", h->K + 1);
    blo_status s = blo_state_init(h->p, &h->dyn, h->ia ? z : h->y0, st, h->tape, err);
    if (!s) s = blo_unroll(h->p, &h->dyn, x, 0, st, h->K, st, NULL, h->tape, err);
    if (!s) s = blo_state_read_y(h->p, &h->dyn, st + (size_t)h->K * S, y, h->tape, err);
    if (st != h->states) free(st);
    return s;
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
    *h = (blo_fo_state){.p = env->p, .tape = env->tape, .mem = mem, .saved = saved};
    memcpy(mem, env->y0, ny * sizeof(double));
    *state = h;
    return blo_ok(err);
}

blo_status blo_fo_solution(void *state, const double *x, const double *z, double *y, blo_error *err) {
    const blo_fo_state *h = state;
    (void)x, (void)z;
    memcpy(y, h->mem, sizeof(double) * (size_t)h->p->n_y);
    return blo_ok(err);
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
