// galet: "GALET: Generalized Alternating Method for Bilevel Optimization under the PL condition"
// (Xiao et al., NeurIPS 2023), Alg. 1: N LL GD steps on y (Eq. 10), T shadow-implicit steps on
// w (Eq. 12) with Hessian-vector products from the tape, and the x direction of Eq. 13. w is
// warm-started from the previous iteration by default (the README's reading).
#include "curvature.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    int N;       // LL GD steps per iteration
    double beta; // LL step
    int T;       // shadow steps on w
    double rho;  // shadow step (gamma in the paper's appendix)
    int w_warm;  // w starts from the previous iteration's w
} galet_params;

static const galet_params defaults = {.N = 1, .beta = 1, .T = 1, .rho = 0.1, .w_warm = 1};
static const blo_setting settings[] = {
    BLO_ROW_INT(galet_params, N, "N", 0, BLO_MAX_ITERS, "N", "LL GD steps per UL iteration (Eq. 10)"),
    BLO_ROW_DBL(galet_params, beta, "beta", 0, INFINITY, BLO_SET_LO_OPEN, "b", "LL step"),
    BLO_ROW_INT(galet_params, T, "T_w", 0, BLO_MAX_ITERS, "T", "shadow steps on w per UL iteration (Eq. 12)"),
    BLO_ROW_DBL(galet_params, rho, "rho", 0, INFINITY, BLO_SET_LO_OPEN, "r", "shadow step (gamma)"),
    BLO_ROW_BOOL(galet_params, w_warm, "w_warm", "w starts from the previous iteration's w (else 0)"),
    BLO_ROW_END,
};

typedef struct {
    galet_params par;
    const blo_problem *p;
    ad_tape *tape;
    double *y, *w;     // [n_y] each, carried between iterations
    double *g, *mixed; // scratch: 3 n_y, n_x
} galet;

static void galet_free(void *state) {
    galet *s = state;
    if (s) free(s->y), free(s->g), free(s);
}

static blo_status galet_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err) {
    int nx = env->p->n_x, ny = env->p->n_y;
    (void)z0;
    galet *s = calloc(1, sizeof *s);
    if (s) {
        s->y = calloc(2 * (size_t)ny, sizeof(double));
        s->g = malloc(sizeof(double) * (3 * (size_t)ny + (size_t)nx));
    }
    if (!s || !s->y || !s->g) {
        galet_free(s);
        return blo_fail(err, BLO_ENOMEM, "galet: out of memory");
    }
    s->par = *(const galet_params *)env->params;
    s->p = env->p, s->tape = env->tape;
    s->w = s->y + ny, s->mixed = s->g + 3 * ny;
    memcpy(s->y, env->y0, sizeof(double) * (size_t)ny);
    *state = s, *n_z = 0;
    return blo_ok(err);
}

static blo_status galet_direction(void *state, int t, const double *x, const double *z, double *dx,
                                  double *dz, double *y_out, blo_record *rec, blo_error *err) {
    galet *s = state;
    const blo_problem *p = s->p;
    int ny = p->n_y;
    double *g = s->g, *Hw = g + ny, *HHw = Hw + ny;
    (void)t, (void)z, (void)dz, (void)rec;
    blo_status st = BLO_OK;
    for (int n = 0; n < s->par.N && st == BLO_OK; n++) { // Eq. 10
        st = blo_eval(p, 0, x, s->y, NULL, NULL, g, s->tape, err);
        for (int i = 0; i < ny; i++) s->y[i] -= s->par.beta * g[i];
        blo_clamp_y(p, s->y);
    }
    // grad F at (x, y^{k+1}): d_x starts as grad_x F, g = grad_y F
    if (st == BLO_OK) st = blo_eval(p, 1, x, s->y, NULL, dx, g, s->tape, err);
    blo_tape_use u = {0};
    if (st == BLO_OK) st = blo_tape_acquire(&u, s->tape, err);
    if (st != BLO_OK) return st;
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
    ok = ok && blo_curv_mixed(&c, s->w, s->mixed);
    for (int i = 0; ok && i < p->n_x; i++) dx[i] += s->mixed[i];
    st = blo_tape_check(u.t, err, "galet");
    blo_tape_release(&u);
    if (st == BLO_OK) memcpy(y_out, s->y, sizeof(double) * (size_t)ny);
    return st;
}

// The y GALET carries (from the last direction; not advanced at x).
static blo_status galet_solution(void *state, const double *x, const double *z, double *y,
                                 blo_error *err) {
    galet *s = state;
    (void)x, (void)z;
    memcpy(y, s->y, sizeof(double) * (size_t)s->p->n_y);
    return blo_ok(err);
}

static blo_status galet_save(const void *state, blo_writer *w) {
    const galet *s = state;
    return blo_write_doubles(w, s->y, 2 * (size_t)s->p->n_y); // y, w
}

static blo_status galet_load(void *state, blo_reader *r, blo_error *err) {
    galet *s = state;
    if (blo_read_doubles(r, s->y, 2 * (size_t)s->p->n_y)) return blo_fail(err, BLO_EIO, "galet: the state is truncated");
    return blo_ok(err);
}

const blo_method_type blo_method_galet = {
    "galet", "GALET: N LL steps, T shadow implicit steps on w with Hessian-vector products (Alg. 1)",
    BLO_NEEDS_HVP, BLO_GRAD_NONE, NULL, sizeof(galet_params), &defaults, settings, NULL, NULL,
    galet_init, galet_direction, galet_solution, NULL, galet_save, galet_load, galet_free};
