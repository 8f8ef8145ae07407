// Methods by name and the runner that binds a configured method to a problem: each UL
// iteration's direction for blo_solve, composed the way the papers compose methods (a dynamics,
// truncation choices, the initialization auxiliary and its prior; implicit differentiation at y_K;
// or a first-order loop).
#include "internal.h"
#include "methods.h"
#include "ad_extra.h" // ad_tape_blas_seconds

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char *const method_names[] = {"rhg", "trhg", "bda", "cg", "neumann", "ait", "aitp",
                                           "bvfim", "bome", "galet", NULL};
static const char *const method_summaries[] = {
    "reverse-mode hypergradient through all K LL steps (RHG)",
    "truncated RHG: back-propagate only the last K' steps (T-RHG)",
    "BDA: LL steps aggregate UL and LL gradients (BDA Eq. 10), reverse mode through them",
    "implicit differentiation at y_K, conjugate gradients on H q = grad_y F",
    "implicit differentiation at y_K, Neumann series for H^-1 grad_y F",
    "AIT: initialization auxiliary z + pessimistic trajectory truncation on a chosen dynamics",
    "AIT_P: AIT with the prior lambda/2 ||z - z_p||^2 on the first UL iteration",
    "BVFIM: regularized value function with a log barrier, first order (Alg. 1)",
    "BOME: value-function barrier step on (x, y), first order (Alg. 1)",
    "GALET: N LL steps, T shadow implicit steps on w with Hessian-vector products (Alg. 1)",
    NULL};
static const char *const dyn_names[] = {"gd", "bda", "nesterov", "accel", "momentum", NULL};
static const char *const dyn_summaries[] = {
    "projected gradient descent on f (BDA Eq. 4, AIT Eq. 8)",
    "aggregated UL and LL gradients (BDA Eq. 10 / AIT Eq. 7)",
    "Nesterov / FISTA acceleration (AIT Eq. 9)",
    "accelerated scheme for non-convex LL, state (y, u, v) (AIT Eq. 10)",
    "heavy-ball momentum",
    NULL};

const char *const *blo_method_names(void) { return method_names; }
const char *const *blo_method_summaries(void) { return method_summaries; }
const char *const *blo_dynamics_names(void) { return dyn_names; }
const char *const *blo_dynamics_summaries(void) { return dyn_summaries; }

static int find(const char *const *names, const char *s) {
    for (int i = 0; s && names[i]; i++)
        if (!strcmp(names[i], s)) return i;
    return -1;
}

enum { M_RHG, M_TRHG, M_BDA, M_CG, M_NEUMANN, M_AIT, M_AITP, M_BVFIM, M_BOME, M_GALET };

blo_status blo_method_default_config(const char *method, blo_method_config *c, blo_error *err) {
    int m = find(method_names, method);
    if (m < 0) return blo_fail(err, BLO_EARG, "unknown method '%s'", method ? method : "");
    *c = (blo_method_config){
        .method = method_names[m], .dynamics = "gd", .K = 20, .prior_first_only = 1,
        .graph_mb = (double)(blo_hypergrad_default_params().graph_budget >> 20),
        .gd = blo_gd_default_params(), .bda = blo_bda_default_params(),
        .nesterov = blo_nesterov_default_params(), .momentum = blo_momentum_default_params(),
        .accel = blo_accel_default_params(),
        .implicit = blo_implicit_default_params(m == M_NEUMANN ? BLO_IMPLICIT_NEUMANN : BLO_IMPLICIT_CG),
        .bome = blo_bome_default_params(), .galet = blo_galet_default_params(),
        .bvfim = blo_bvfim_default_params()};
    switch (m) {
    case M_TRHG: c->truncate = c->K / 2; break;
    case M_BDA: c->dynamics = "bda"; break;
    case M_AIT: c->ia = c->ptt = 1; break;
    case M_AITP: c->ia = c->ptt = 1, c->prior_lambda = -1; break; // z starts at z_p
    case M_NEUMANN: c->implicit.eta = 0; break;                    // the LL step (spec 0.2)
    default: break;
    }
    return blo_ok(err);
}

struct blo_runner {
    const blo_problem *p;
    blo_method_config c;
    int m;                  // the method's index
    blo_dynamics dyn;
    double *y0, *y, *buf;   // LL start [n_y] (warm starts move it), the last LL iterate [n_y]
    double *states;         // cg / neumann: the unrolled states [(K+1) S]
    ad_tape *tape;          // reused across iterations
    blo_galet_state galet;
    blo_bvfim_state bvfim;
};

// The dynamics named in c, and its LL step (Neumann's default eta, spec 0.2).
static blo_status make_dynamics(const blo_problem *p, const blo_method_config *c, blo_dynamics *d,
                                double *ll_step, blo_error *err) {
    switch (find(dyn_names, c->dynamics)) {
    case 0: *d = blo_dynamics_gd(p->n_y, c->gd), *ll_step = c->gd.s_l; break;
    case 1: *d = blo_dynamics_bda(p->n_y, c->bda), *ll_step = c->bda.s_l; break;
    case 2: *d = blo_dynamics_nesterov(p->n_y, c->nesterov), *ll_step = c->nesterov.s_l; break;
    case 3: *d = blo_dynamics_accel(p->n_y, c->accel), *ll_step = 0.5 / c->accel.L_f; break;
    case 4: *d = blo_dynamics_momentum(p->n_y, c->momentum), *ll_step = c->momentum.s_l; break;
    default: return blo_fail(err, BLO_EARG, "unknown dynamics '%s'", c->dynamics ? c->dynamics : "");
    }
    return blo_dynamics_validate(p, d, err);
}

blo_status blo_runner_new(blo_runner **out, const blo_problem *p, const blo_method_config *c,
                          const double *y0, blo_error *err) {
    *out = NULL;
    blo_ok(err);
    if (!p || !c) return blo_fail(err, BLO_EARG, "runner: NULL argument");
    blo_runner *r = calloc(1, sizeof *r);
    if (!r) return blo_fail(err, BLO_ENOMEM, "runner: out of memory");
    r->p = p;
    r->c = *c;
    r->m = find(method_names, c->method);
    blo_status st = r->m < 0 ? blo_fail(err, BLO_EARG, "unknown method '%s'", c->method ? c->method : "")
                             : BLO_OK;
    if (!st && (c->K < 1 || c->truncate < 0))
        st = blo_fail(err, BLO_EARG, "%s: needs K >= 1 and K' >= 0 (K = %d, K' = %d)", c->method, c->K, c->truncate);
    bool unrolled = r->m != M_BOME && r->m != M_GALET && r->m != M_BVFIM;
    bool implicit = r->m == M_CG || r->m == M_NEUMANN;
    if (!st && (c->ia || c->ptt) && (!unrolled || implicit)) // nothing to attach them to
        st = blo_fail(err, BLO_EARG, "%s: --ia and --ptt apply to unrolled methods (rhg, trhg, bda, ait, "
                      "aitp), not to %s", c->method, c->method);
    double ll_step = 0;
    if (!st && unrolled) st = make_dynamics(p, c, &r->dyn, &ll_step, err);
    if (!st && r->m == M_NEUMANN && !(r->c.implicit.eta > 0)) r->c.implicit.eta = ll_step;
    if (!st && c->ia && c->prior_lambda != 0 && !c->z_prior)
        st = blo_fail(err, BLO_EARG, "%s: the prior needs z_p (this problem has none)", c->method);
    int ny = p->n_y;
    if (!st && !(r->buf = calloc(2 * (size_t)ny, sizeof(double))))
        st = blo_fail(err, BLO_ENOMEM, "runner: out of memory");
    if (!st) {
        r->y0 = r->buf, r->y = r->buf + ny;
        if (y0) memcpy(r->y0, y0, (size_t)ny * sizeof(double));
        memcpy(r->y, r->y0, (size_t)ny * sizeof(double));
        ad_tape_params tp = ad_tape_default_params();
        tp.time_blas = 1; // for benchmarks: two clock reads per product, nothing on small ones
        if (!(r->tape = ad_tape_new(&tp))) st = blo_fail(err, BLO_ENOMEM, "runner: out of memory");
    }
    if (!st && (r->m == M_CG || r->m == M_NEUMANN) &&
        !(r->states = malloc(sizeof(double) * (size_t)(c->K + 1) * (size_t)r->dyn.state_size)))
        st = blo_fail(err, BLO_ENOMEM, "%s: cannot store %d states", c->method, c->K + 1);
    if (!st && r->m == M_GALET) st = blo_galet_init(&r->galet, p, &c->galet, r->y0, err);
    if (!st && r->m == M_BVFIM) st = blo_bvfim_init(&r->bvfim, p, &c->bvfim, r->y0, err);
    if (st) {
        blo_runner_free(r);
        return st;
    }
    *out = r;
    return BLO_OK;
}

void blo_runner_free(blo_runner *r) {
    if (!r) return;
    blo_galet_free(&r->galet);
    blo_bvfim_free(&r->bvfim);
    ad_tape_free(r->tape);
    free(r->states);
    free(r->buf);
    free(r);
}

int blo_runner_n_z(const blo_runner *r) { return r->c.ia || r->m == M_BOME ? r->p->n_y : 0; }

void blo_runner_z0(const blo_runner *r, const double *y0, double *z) {
    bool at_prior = r->c.ia && r->c.prior_lambda < 0 && r->c.z_prior;
    memcpy(z, at_prior ? r->c.z_prior : y0, (size_t)r->p->n_y * sizeof(double));
}
const double *blo_runner_y(const blo_runner *r) { return r->y; }
const blo_dynamics *blo_runner_dynamics(const blo_runner *r) { return r->dyn.step ? &r->dyn : NULL; }
double blo_runner_blas_seconds(const blo_runner *r) { return ad_tape_blas_seconds(r->tape); }
ad_tape *blo_runner_tape(blo_runner *r) { return r->tape; }

// F and f at (x, y): the record's objectives.
static blo_status objectives(blo_runner *r, const double *x, const double *y, blo_record *rec,
                             blo_error *err) {
    blo_status st = blo_eval(r->p, 1, x, y, &rec->F, NULL, NULL, r->tape, err);
    return st ? st : blo_eval(r->p, 0, x, y, &rec->f, NULL, NULL, r->tape, err);
}

static blo_status direction(void *method, const blo_problem *p, int t, const double *x,
                            const double *z, double *gx, double *gz, blo_record *rec, blo_error *err) {
    blo_runner *r = method;
    const blo_method_config *c = &r->c;
    blo_status st;
    switch (r->m) {
    case M_BOME: {
        blo_bome_info info = {0};
        st = blo_bome_direction(p, &c->bome, x, z, gx, gz, &info, r->tape, err);
        memcpy(r->y, z, (size_t)p->n_y * sizeof(double));
        rec->extra = info.lambda;
        break;
    }
    case M_GALET:
        st = blo_galet_direction(&r->galet, p, x, gx, r->tape, err);
        memcpy(r->y, r->galet.y, (size_t)p->n_y * sizeof(double));
        break;
    case M_BVFIM:
        st = blo_bvfim_direction(&r->bvfim, p, x, gx, r->tape, err);
        memcpy(r->y, r->bvfim.y, (size_t)p->n_y * sizeof(double));
        rec->extra = r->bvfim.gap;
        break;
    case M_CG:
    case M_NEUMANN: {
        int S = r->dyn.state_size;
        st = blo_state_init(p, &r->dyn, r->y0, r->states, r->tape, err);
        if (!st) st = blo_unroll(p, &r->dyn, x, 0, r->states, c->K, r->states, NULL, r->tape, err);
        if (!st) st = blo_state_read_y(p, &r->dyn, r->states + (size_t)c->K * S, r->y, r->tape, err);
        blo_implicit_info info = {0};
        if (!st) st = blo_implicit_hypergrad(p, &c->implicit, x, r->y, gx, &info, r->tape, err);
        rec->extra = info.residual;
        rec->kbar = c->K;
        break;
    }
    default: { // unrolled: rhg, trhg, bda, ait, aitp (and any of them with --ia / --ptt)
        blo_hypergrad_params hp = blo_hypergrad_default_params();
        hp.K = c->K, hp.truncate = c->truncate, hp.ptt = c->ptt, hp.ia = c->ia;
        hp.prior_lambda = c->ia && c->prior_lambda > 0 && (t == 0 || !c->prior_first_only) ? c->prior_lambda : 0;
        hp.z_prior = c->z_prior;
        hp.tape = r->tape;
        hp.y_end_out = r->y;
        hp.graph_budget = (size_t)(c->graph_mb * 1048576.0);
        blo_hypergrad_info info = {0};
        st = blo_hypergrad(p, &r->dyn, &hp, x, c->ia ? z : r->y0, gx, gz, NULL, &info, err);
        rec->kbar = info.kbar;
        break;
    }
    }
    if (!st && c->warm_start && !c->ia) memcpy(r->y0, r->y, (size_t)p->n_y * sizeof(double));
    return st ? st : objectives(r, x, r->y, rec, err);
}

blo_direction_fn blo_runner_direction(void) { return direction; }

blo_status blo_runner_solution(blo_runner *r, const double *x, const double *z, double *y,
                               blo_error *err) {
    const blo_problem *p = r->p;
    if (r->m == M_BOME || r->m == M_GALET || r->m == M_BVFIM) {
        memcpy(y, r->y, (size_t)p->n_y * sizeof(double));
        return blo_ok(err);
    }
    int S = r->dyn.state_size;
    double *st = malloc(sizeof(double) * (size_t)(r->c.K + 1) * (size_t)S);
    if (!st) return blo_fail(err, BLO_ENOMEM, "runner: out of memory");
    blo_status s = blo_state_init(p, &r->dyn, r->c.ia ? z : r->y0, st, r->tape, err);
    if (!s) s = blo_unroll(p, &r->dyn, x, 0, st, r->c.K, st, NULL, r->tape, err);
    if (!s) s = blo_state_read_y(p, &r->dyn, st + (size_t)r->c.K * S, y, r->tape, err);
    free(st);
    return s;
}
