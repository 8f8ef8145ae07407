// fhg: the forward-mode hypergradient through all K steps of the LL dynamics (Franceschi et al.,
// "Forward and Reverse Gradient-Based Hyperparameter Optimization", ICML 2017, the forward-mode
// procedure: the recursion Z_t = A_t Z_{t-1} + B_t; BVFIM Table 2's FHG row). It carries the
// tangents of the dynamics' state, Z_k = d state_k / dx [S, n_x], forward with the steps:
//     Z_0 = 0 (y_0 does not depend on x),  Z_{k+1} = A_k Z_k + B_k,
//     A_k = d Phi_k / d state [S, S],  B_k = d Phi_k / dx [S, n_x],
// column j of Z_{k+1} being the Jacobian-vector product of the recorded step along (e_j, Z_k e_j)
// (ad_jvp, `block` columns per call sharing one inner reverse), and ends with
//     grad = dF/dx (x, y_K) + Z_K^T dF/dstate_K.
// Memory O(S n_x) and no stored trajectory (its solution steps through two states too); time
// n_x JVPs per step against RHG's one VJP per step and K + 1 stored states: on the quadratic it
// meets RHG's time at n_x = 1 when products dominate and is slower beyond (the README's bench).
// It differentiates what rhg does, F(x, y_K(x)) from a fixed y_0, so its phi is rhg's value
// (blo_ll_phi) and blo_check_hypergrad checks it. IA, PTT and truncation are not settings of fhg
// (a run that asks for them is refused as for any setting a method lacks): they change where a
// reverse sweep starts and stops, and a forward pass would need Z at K-bar or a held state
// instead (rhg, trhg and ait have them).
#include "family.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int K;          // ll_iters
    int block;      // tangent columns per ad_jvp call
    int warm_start;
} fhg_params;

static const fhg_params defaults = {.K = 20, .block = 32};
static const blo_setting settings[] = {
    BLO_ROW_LL_ITERS(fhg_params),
    BLO_ROW_INT(fhg_params, block, "block", 1, 4096, "b",
                "tangent columns per forward-mode product (the tape holds b of them per step)"),
    BLO_ROW_WARM_START(fhg_params),
    BLO_ROW_END,
};

typedef struct {
    blo_ll_state ll; // first: the shared phi, save, load and free use it
    fhg_params par;
    double *mem;          // what the buffers below are carved from (they swap every step)
    double *state, *next; // state_k, state_{k+1} [S]
    double *Z, *Zn;       // Z_k, Z_{k+1} by columns: column j at [j S, (j + 1) S)
    double *e;            // e_j [n_x] (zeros between uses)
    ad_var *tan, *out;    // a block's tangents [2 block] and products [block]
} fhg;

static void fhg_free(void *state) {
    fhg *s = state;
    if (s) free(s->mem), free(s->tan);
    blo_ll_free(state);
}

static blo_status fhg_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                           blo_error *err) {
    const fhg_params *q = env->params;
    (void)z0;
    *n_z = 0;
    blo_status st = blo_ll_new(state, sizeof(fhg), env, q->K, 0, 0, err);
    if (st) return st;
    fhg *s = *state;
    s->par = *q;
    size_t S = (size_t)s->ll.dyn.state_size, nx = (size_t)env->p->n_x, b = (size_t)q->block;
    char what[96];
    snprintf(what, sizeof what, "2 n_x = %zu tangents of %zu doubles", 2 * nx, S);
    if ((st = blo_check_memory(2.0 * (double)nx + 2, 8.0 * (double)S, what, err))) {
        fhg_free(s);
        *state = NULL;
        return st;
    }
    s->mem = calloc(2 * S + 2 * nx * S + nx, sizeof(double));
    s->tan = malloc(sizeof(ad_var) * 3 * b);
    if (!s->mem || !s->tan) {
        fhg_free(s);
        *state = NULL;
        return blo_fail(err, BLO_ENOMEM, "fhg: out of memory for %s", what);
    }
    s->state = s->mem, s->next = s->state + S, s->Z = s->next + S, s->Zn = s->Z + nx * S, s->e = s->Zn + nx * S;
    s->out = s->tan + 2 * b;
    return blo_ok(err);
}

// v's value [n] into out; a NaN or Inf is an error naming what diverged at step k.
static blo_status take(ad_tape *t, ad_var v, int n, double *out, const char *what, int k,
                       blo_error *err) {
    blo_status st = blo_tape_check(t, err, what);
    if (st) return st;
    memcpy(out, ad_value(t, v), sizeof(double) * (size_t)n);
    int i = 0;
    while (i < n && isfinite(out[i])) i++;
    return i == n ? BLO_OK
                  : blo_fail(err, BLO_ETAPE, "%s at k = %d: entry %d is %g (is a step size too large?)",
                             what, k, i, out[i]);
}

// Columns j0 .. j0+nb-1 of Z_{k+1}: one ad_jvp of the step next = Phi_k(wrt) along (e_j, Z_k e_j).
static blo_status tangent_block(fhg *s, ad_tape *t, ad_var next, const ad_var wrt[2], int j0,
                                int nb, int k, blo_error *err) {
    int S = s->ll.dyn.state_size, nx = s->ll.p->n_x;
    for (int j = 0; j < nb; j++) {
        s->e[j0 + j] = 1;
        s->tan[2 * j] = ad_const(t, ad_vec_shape(nx), s->e);
        s->e[j0 + j] = 0;
        s->tan[2 * j + 1] = ad_const(t, ad_vec_shape(S), s->Z + (size_t)(j0 + j) * S);
    }
    ad_jvp(t, next, 2, wrt, nb, s->tan, s->out, 0);
    blo_status st = BLO_OK;
    for (int j = 0; j < nb && !st; j++)
        st = take(t, s->out[j], S, s->Zn + (size_t)(j0 + j) * S, "forward-mode tangent", k, err);
    return st;
}

// Step k: state_{k+1} and Z_{k+1} from state_k and Z_k (then swapped in).
static blo_status step(fhg *s, ad_tape *t, const double *x, int k, blo_error *err) {
    const blo_problem *p = s->ll.p;
    int S = s->ll.dyn.state_size, nx = p->n_x;
    ad_mark m0 = ad_tape_mark(t);
    ad_var wrt[2] = {ad_param(t, ad_vec_shape(nx), x), ad_param(t, ad_vec_shape(S), s->state)};
    // deferred: what the products read is computed when they read it
    int was = ad_tape_defer(t, 1);
    ad_var next = blo_rec_step(t, p, &s->ll.dyn, k, wrt[0], wrt[1]);
    ad_tape_defer(t, was);
    blo_status st = take(t, next, S, s->next, "LL step", k, err);
    for (int j0 = 0; j0 < nx && !st; j0 += s->par.block) {
        ad_mark m1 = ad_tape_mark(t);
        int nb = nx - j0 < s->par.block ? nx - j0 : s->par.block;
        st = tangent_block(s, t, next, wrt, j0, nb, k, err);
        ad_tape_rewind(t, m1);
    }
    ad_tape_rewind(t, m0);
    double *tmp = s->state;
    s->state = s->next, s->next = tmp;
    tmp = s->Z, s->Z = s->Zn, s->Zn = tmp;
    return st;
}

// grad = dF/dx + Z_K^T dF/dstate_K at state_K; y_K into y.
static blo_status finish(fhg *s, ad_tape *t, const double *x, double *gx, double *y,
                         blo_error *err) {
    const blo_problem *p = s->ll.p;
    int S = s->ll.dyn.state_size, nx = p->n_x;
    ad_mark m = ad_tape_mark(t);
    ad_var wrt[2] = {ad_param(t, ad_vec_shape(nx), x), ad_param(t, ad_vec_shape(S), s->state)};
    ad_var yv = blo_rec_read_y(t, p, &s->ll.dyn, wrt[1]), g[2];
    ad_grad(t, blo_call_F(t, p, wrt[0], yv), 2, wrt, g, 0);
    blo_status st = blo_tape_check(t, err, "F(x, y_K)");
    if (!st) {
        const double *gF = ad_value(t, g[0]), *lam = ad_value(t, g[1]);
        for (int j = 0; j < nx; j++) gx[j] = gF[j] + blo_dot(s->Z + (size_t)j * S, lam, S);
        memcpy(y, ad_value(t, yv), sizeof(double) * (size_t)p->n_y);
    }
    ad_tape_rewind(t, m);
    return st;
}

static blo_status fhg_direction(void *state, int t, const double *x, const double *z, double *gx,
                                double *gz, double *y, blo_record *rec, blo_error *err) {
    fhg *s = state;
    blo_ll_state *h = &s->ll;
    const blo_problem *p = h->p;
    int S = h->dyn.state_size, nx = p->n_x;
    (void)t, (void)z, (void)gz;
    memcpy(h->y0_ref, h->y0, sizeof(double) * (size_t)p->n_y);
    memcpy(h->x_ref, x, sizeof(double) * (size_t)nx);
    blo_tape_use u;
    blo_status st = blo_tape_acquire(&u, h->tape, err);
    if (st) return st;
    st = blo_problem_check(p, x, h->y0, u.t, err);
    if (!st) st = blo_state_init(p, &h->dyn, h->y0, s->state, u.t, err);
    memset(s->Z, 0, sizeof(double) * (size_t)nx * (size_t)S);
    for (int k = 0; k < h->K && !st; k++) st = step(s, u.t, x, k, err);
    if (!st) st = finish(s, u.t, x, gx, y, err);
    blo_tape_release(&u);
    if (st) return st;
    rec->kbar = h->K;
    if (s->par.warm_start) memcpy(h->y0, y, sizeof(double) * (size_t)p->n_y);
    return blo_ok(err);
}

// y_K from the LL start, one step at a time through two states [2 S]: the solution a run reports
// keeps no trajectory either.
static blo_status fhg_solution(void *state, const double *x, const double *z, double *y,
                               blo_error *err) {
    blo_ll_state *h = state;
    int S = h->dyn.state_size;
    (void)z;
    double *two = malloc(sizeof(double) * 2 * (size_t)S);
    if (!two) return blo_fail(err, BLO_ENOMEM, "fhg: out of memory for 2 LL states of %d doubles", S);
    blo_status st = blo_state_init(h->p, &h->dyn, h->y0, two, h->tape, err);
    for (int k = 0; k < h->K && !st; k++) {
        st = blo_unroll(h->p, &h->dyn, x, k, two, 1, two, NULL, h->tape, err);
        memcpy(two, two + S, sizeof(double) * (size_t)S);
    }
    if (!st) st = blo_state_read_y(h->p, &h->dyn, two, y, h->tape, err);
    free(two);
    return st;
}

const blo_method_type blo_method_fhg = {
    "fhg", "forward-mode hypergradient: tangents dstate/dx carried through all K LL steps (FHG)",
    BLO_NEEDS_DYNAMICS | BLO_NEEDS_HVP, BLO_GRAD_EXACT, "gd", sizeof(fhg_params), &defaults,
    settings, NULL, NULL, fhg_init, fhg_direction, fhg_solution, blo_ll_phi, blo_ll_save,
    blo_ll_load, fhg_free};
