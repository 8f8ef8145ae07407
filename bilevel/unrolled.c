// The unrolled family's driver (rhg, trhg, bda, ait, aitp): each UL iteration's direction is the
// reverse-mode hypergradient through K steps of the dynamics (blo_hypergrad), with the choices
// the papers compose: truncation (T-RHG), pessimistic trajectory truncation (PTT, AIT Alg. 3),
// the initialization auxiliary z (IA, AIT Eq. 5) and its prior (AIT Eq. 6).
#include "family.h"

#include <string.h>

const blo_setting blo_unrolled_settings[] = {
    BLO_ROW_LL_ITERS(blo_unrolled_params),
    BLO_ROW_INT(blo_unrolled_params, truncate, "truncate", -1, BLO_MAX_ITERS, "K'",
                "T-RHG: back-propagate only the last K' LL steps (0 = all, -1 = K/2)"),
    BLO_ROW_BOOL(blo_unrolled_params, ia, "ia", "initialization auxiliary: y_0 = z, optimized with x"),
    BLO_ROW_BOOL(blo_unrolled_params, ptt, "ptt",
                 "pessimistic trajectory truncation: differentiate at Kbar = argmax_k F(x, y_k)"),
    BLO_ROW_DBL(blo_unrolled_params, prior, "prior", 0, INFINITY, 0, "lambda",
                "IA prior lambda/2 ||z - z_p||^2 at the first UL iteration (implies ia)"),
    BLO_ROW_BOOL(blo_unrolled_params, prior_every, "prior_every",
                 "apply the prior at every UL iteration, not only the first"),
    BLO_ROW_BOOL(blo_unrolled_params, prior_start, "prior_start",
                 "z starts at the problem's z_p (AIT_P's first-iteration prior; implies ia)"),
    BLO_ROW_WARM_START(blo_unrolled_params),
    BLO_ROW_INT(blo_unrolled_params, warm_steps, "warm_steps", 0, BLO_MAX_ITERS, "n",
                "the warm start keeps y_n, n of the K steps (Metz et al.'s one D step per G step); "
                "0 = the direction's y (y_K, y_Kbar under PTT)"),
    BLO_ROW_DBL(blo_unrolled_params, graph_mb, "graph_mb", 0, 1e9, 0, "M",
                "keep the unrolled graph when it fits M MiB (faster), else the forward pass's "
                "products over the data; 0 = re-record each step"),
    BLO_ROW_DBL(blo_unrolled_params, memory_mb, "memory_mb", 0, 1e9, 0, "M",
                "keep the sweep's LL states within M MiB, recomputing the others (binomial "
                "checkpointing, same result); 0 = store all K + 1"),
    BLO_ROW_END,
};

blo_status blo_unrolled_resolve(void *params, const blo_dynamics *d, blo_error *err) {
    blo_unrolled_params *q = params;
    (void)d;
    if (q->truncate < 0) q->truncate = q->K / 2; // T-RHG's default K' (BDA Table 2 halves K)
    if (q->truncate > q->K)
        return blo_fail(err, BLO_EARG, "truncate = %d is more than ll_iters = %d LL steps", q->truncate, q->K);
    if (q->warm_steps > q->K)
        return blo_fail(err, BLO_EARG, "warm_steps = %d is more than ll_iters = %d LL steps", q->warm_steps, q->K);
    if (q->prior > 0 || q->prior_start) q->ia = 1; // a prior acts on z
    return blo_ok(err);
}

unsigned blo_unrolled_needs(const void *params) {
    const blo_unrolled_params *q = params;
    return q->prior > 0 || q->prior_start ? BLO_NEEDS_PRIOR : 0;
}

typedef struct {
    blo_ll_state ll;           // first: the shared solution, save, load and free use it
    blo_unrolled_params par;
    const double *z_prior;
    blo_hypergrad_params hp;   // the last direction's, for phi
    blo_hypergrad_info info;
} unrolled;

blo_status blo_unrolled_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err) {
    const blo_unrolled_params *q = env->params;
    int ny = env->p->n_y;
    if ((q->prior > 0 || q->prior_start) && !env->z_prior)
        return blo_fail(err, BLO_EARG, "the IA prior needs the problem's z_p (this problem has none)");
    // the sweep stores K + 1 states unless a memory budget bounds them
    blo_status st = q->memory_mb > 0 ? BLO_OK : blo_ll_check_states(env, q->K, err);
    if (!st) st = blo_ll_new(state, sizeof(unrolled), env, q->K, q->ia, 0, err);
    if (st) return st;
    unrolled *u = *state;
    u->par = *q;
    u->z_prior = env->z_prior;
    *n_z = q->ia ? ny : 0;
    // AIT_P's reading of the first-iteration prior: z starts at z_p (README, readings)
    if (q->ia) *z0 = (double *)(q->prior_start ? env->z_prior : u->ll.y0);
    return blo_ok(err);
}

blo_status blo_unrolled_direction(void *state, int t, const double *x, const double *z, double *gx,
                                  double *gz, double *y, blo_record *rec, blo_error *err) {
    unrolled *u = state;
    const blo_unrolled_params *q = &u->par;
    const blo_problem *p = u->ll.p;
    blo_hypergrad_params hp = blo_hypergrad_default_params();
    hp.K = q->K, hp.truncate = q->truncate, hp.ptt = q->ptt, hp.ia = q->ia;
    hp.prior_lambda = q->ia && q->prior > 0 && (t == 0 || q->prior_every) ? q->prior : 0;
    hp.z_prior = u->z_prior;
    hp.tape = u->ll.tape;
    hp.y_end_out = y;
    hp.graph_budget = (size_t)(q->graph_mb * 1048576.0);
    hp.memory_budget = (size_t)(q->memory_mb * 1048576.0);
    const double *start = q->ia ? z : u->ll.y0;
    memcpy(u->ll.y0_ref, start, sizeof(double) * (size_t)p->n_y);
    memcpy(u->ll.x_ref, x, sizeof(double) * (size_t)p->n_x);
    blo_status st = blo_hypergrad(p, &u->ll.dyn, &hp, x, start, gx, gz, NULL, &u->info, err);
    if (st) return st;
    hp.y_end_out = NULL;
    u->hp = hp;
    rec->kbar = u->info.kbar;
    if (!q->warm_start || q->ia) return BLO_OK;
    if (q->warm_steps > 0) return blo_ll_warm_steps(&u->ll, x, q->warm_steps, err);
    memcpy(u->ll.y0, y, sizeof(double) * (size_t)p->n_y);
    return BLO_OK;
}

blo_status blo_unrolled_phi(void *state, const double *x, const double *z, double *value,
                            blo_error *err) {
    unrolled *u = state;
    return blo_hypergrad_phi(u->ll.p, &u->ll.dyn, &u->hp, &u->info, u->ll.x_ref, u->ll.y0_ref, x,
                             u->par.ia ? z : u->ll.y0_ref, value, err);
}
