// alto: alternating optimization (BOAT's ALTO; the vanilla GAN's training, Goodfellow et al.,
// "Generative Adversarial Nets", NeurIPS 2014, Alg. 1): K steps of the LL dynamics from the
// last y (a warm start, always), then a UL step along grad_x F(x, y_K) alone, the implicit term
// dropped. It differentiates nothing through the LL: a direction, not a hypergradient.
#include "family.h"

#include <string.h>

typedef struct {
    int K;
} alto_params;

static const alto_params defaults = {.K = 1};
static const blo_setting settings[] = {BLO_ROW_LL_ITERS(alto_params), BLO_ROW_END};

static blo_status alto_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                            blo_error *err) {
    (void)z0;
    *n_z = 0;
    return blo_ll_new(state, sizeof(blo_ll_state), env, ((const alto_params *)env->params)->K, 0, 1, err);
}

static blo_status alto_direction(void *state, int t, const double *x, const double *z, double *gx,
                                 double *gz, double *y, blo_record *rec, blo_error *err) {
    blo_ll_state *h = state;
    const blo_problem *p = h->p;
    (void)t, (void)z, (void)gz;
    size_t ny = (size_t)p->n_y;
    blo_status st = blo_ll_steps(h, x, y, err);
    if (!st) st = blo_eval(p, 1, x, y, NULL, gx, NULL, h->tape, err);
    if (st) return st;
    rec->kbar = h->K;
    memcpy(h->y0, y, sizeof(double) * ny); // the LL goes on from here at the next iteration
    return BLO_OK;
}

const blo_method_type blo_method_alto = {
    "alto", "alternating: K warm-started LL steps, then grad_x F at y_K (the vanilla GAN's loop)",
    BLO_NEEDS_DYNAMICS, BLO_GRAD_NONE, "gd", sizeof(alto_params), &defaults, settings, NULL, NULL,
    alto_init, alto_direction, blo_ll_solution, NULL, blo_ll_save, blo_ll_load, blo_ll_free};
