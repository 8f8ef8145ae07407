// The solver: a run of one configured method on one problem. Each UL iteration takes the
// method's direction at x_t (and z_t), evaluates F, f and the LL residual at the LL iterate the
// direction used, takes a projected plain / momentum / Adam step, and makes a record; an error or
// a NaN keeps the last good iterate. The state it carries is what blo_solver_save writes.
#include "solver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void set_error(blo_solver *s, const blo_error *e) {
    snprintf(s->error, sizeof s->error, "%s", e->msg);
}

void blo_solver_free(blo_solver *s) {
    if (!s) return;
    if (s->state) s->m->free(s->state);
    ad_tape_free(s->tape);
    blo_config_free(s->c);
    free(s->mem);
    free(s->zmem);
    free(s);
}

static blo_status check_point(const char *what, const double *v, int n, blo_error *err) {
    for (int i = 0; v && i < n; i++)
        if (!isfinite(v[i])) return blo_fail(err, BLO_EARG, "solver: %s[%d] = %g is not finite", what, i, v[i]);
    return BLO_OK;
}

blo_solver *blo_solver_new(const blo_problem *p, const blo_config *c, const double *x0,
                           const double *y0, const double *z_prior, blo_error *err) {
    blo_status st = blo_problem_check(p, x0, y0, NULL, err);
    if (!st && !c) st = blo_fail(err, BLO_EARG, "solver: NULL configuration");
    if (!st) st = check_point("x0", x0, p->n_x, err);
    if (!st) st = check_point("y0", y0, p->n_y, err);
    if (st) return NULL;
    blo_solver *s = calloc(1, sizeof *s);
    if (!s) {
        blo_fail(err, BLO_ENOMEM, "solver: out of memory");
        return NULL;
    }
    s->p = p, s->nx = p->n_x, s->ny = p->n_y;
    s->c = blo_config_copy(c, err);
    st = s->c ? blo_config_resolve(s->c, p->n_y, err) : BLO_ENOMEM;
    ad_tape_params tp = ad_tape_default_params();
    tp.time_blas = 1; // for benchmarks: two clock reads per product, nothing on small ones
    if (!st && !(s->tape = ad_tape_new(&tp))) st = blo_fail(err, BLO_ENOMEM, "solver: out of memory");
    size_t nx = (size_t)s->nx, ny = (size_t)s->ny;
    // x [nx], y0 [ny], z_prior [ny], y [ny], gy [ny]; the z parts come with the method
    if (!st && !(s->mem = calloc(nx + 4 * ny, sizeof(double)))) st = blo_fail(err, BLO_ENOMEM, "solver: out of memory");
    if (st) {
        blo_solver_free(s);
        return NULL;
    }
    s->x = s->mem, s->y0 = s->x + nx, s->z_prior = s->y0 + ny, s->y = s->z_prior + ny, s->gy = s->y + ny;
    if (x0) memcpy(s->x, x0, nx * sizeof(double));
    if (y0) memcpy(s->y0, y0, ny * sizeof(double));
    if (z_prior) memcpy(s->z_prior, z_prior, ny * sizeof(double));
    s->m = p->tasks ? blo_tasks_wrap(&s->tasks_type, s->c->method) : s->c->method;
    if (s->c->dyn) s->dyn = s->c->dyn->make(p->n_y, s->c->dyn_params), s->has_dyn = true;
    if (s->has_dyn) st = blo_dynamics_validate(p, &s->dyn, err);
    ad_rng_seed(&s->rng, (uint64_t)s->c->solve.seed);
    blo_method_env env = {.p = p, .params = s->c->method_params, .dyn = s->has_dyn ? &s->dyn : NULL,
                          .y0 = s->y0, .z_prior = z_prior ? s->z_prior : NULL, .tape = s->tape,
                          .rng = &s->rng, .method = s->c->method};
    double *z0 = NULL;
    if (!st) st = s->m->init(&s->state, &env, &s->nz, &z0, err);
    if (!st && (s->nz < 0 || (s->nz > 0 && !z0)))
        st = blo_fail(err, BLO_EARG, "method %s: init gave n_z = %d without a start", s->m->name, s->nz);
    if (!st && s->nx + s->nz == 0) // n_x = 0 is for methods that learn the LL start
        st = blo_fail(err, BLO_EARG, "method %s: the problem has n_x = 0 and the method learns no LL start "
                      "(z): nothing to optimize", s->m->name);
    if (!st) st = blo_solver_alloc_z(s, err);
    if (!st && s->nz) memcpy(s->z, z0, (size_t)s->nz * sizeof(double));
    if (st) {
        blo_solver_free(s);
        return NULL;
    }
    blo_ok(err);
    return s;
}

blo_status blo_solver_alloc_z(blo_solver *s, blo_error *err) {
    size_t n = (size_t)s->nx + (size_t)s->nz;
    // z [nz], then g, mom, sec, keep [n] each
    s->zmem = calloc((size_t)s->nz + 4 * n, sizeof(double));
    if (!s->zmem) return blo_fail(err, BLO_ENOMEM, "solver: out of memory");
    s->z = s->nz ? s->zmem : NULL;
    s->g = s->zmem + s->nz, s->mom = s->g + n, s->sec = s->mom + n, s->keep = s->sec + n;
    return BLO_OK;
}

void blo_solver_set_record(blo_solver *s, blo_record_fn fn, void *user) {
    s->record = fn, s->record_user = user;
}

// One optimizer step on v [n] with gradient g, state m, q [n], then the box.
static void opt_step(const blo_solve_params *sp, int t, double lr, int n, double *v, const double *g,
                     double *m, double *q, const double *lo, const double *hi) {
    for (int i = 0; i < n; i++) {
        double d = g[i];
        if (sp->opt == BLO_OPT_MOMENTUM) {
            m[i] = sp->momentum * m[i] + g[i];
            d = m[i];
        } else if (sp->opt == BLO_OPT_ADAM) {
            m[i] = sp->beta1 * m[i] + (1 - sp->beta1) * g[i];
            q[i] = sp->beta2 * q[i] + (1 - sp->beta2) * g[i] * g[i];
            double mh = m[i] / (1 - pow(sp->beta1, t + 1)), sh = q[i] / (1 - pow(sp->beta2, t + 1));
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

// F, f and ||grad_y f|| at (x, y) into rec.
static blo_status objectives(blo_solver *s, const double *x, const double *y, blo_record *rec,
                             blo_error *err) {
    blo_status st = blo_eval(s->p, 1, x, y, &rec->F, NULL, NULL, s->tape, err);
    if (!st) st = blo_eval(s->p, 0, x, y, &rec->f, NULL, s->gy, s->tape, err);
    if (!st) rec->ll_residual = sqrt(blo_dot(s->gy, s->gy, s->ny));
    return st;
}

blo_status blo_solver_direction(blo_solver *s, blo_record *rec, blo_error *err) {
    int nx = s->nx, nz = s->nz;
    *rec = (blo_record){.t = s->t, .F = NAN, .f = NAN, .ll_residual = NAN, .grad_norm = NAN};
    // every iteration on a tape with no history: a run resumed on a new tape gives the same bits
    ad_tape_reset(s->tape);
    blo_status st = s->m->direction(s->state, s->t, s->x, s->z, s->g, nz ? s->g + nx : NULL, s->y, rec, err);
    // on a batch of tasks the method gives the tasks' mean F, f and residual itself
    if (!st && !(s->m->needs & BLO_NEEDS_TASKS)) st = objectives(s, s->x, s->y, rec, err);
    if (st) return st;
    int bad = nonfinite(s->g, nx + nz);
    if (bad >= 0)
        return blo_fail(err, BLO_ETAPE, "the direction has %g at entry %d of %s", s->g[bad],
                        bad < nx ? bad : bad - nx, bad < nx ? "x" : "z");
    if (!isfinite(rec->F)) return blo_fail(err, BLO_ETAPE, "F is %g", rec->F);
    rec->grad_norm = sqrt(blo_dot(s->g, s->g, nx + nz));
    return BLO_OK;
}

blo_status blo_solver_step(blo_solver *s) {
    blo_error e;
    int nx = s->nx, nz = s->nz, t = s->t;
    double t0 = now();
    if (s->broken || t == INT32_MAX) {
        snprintf(s->error, sizeof s->error, "%s", s->broken ? "the solver's state was partly loaded from a bad file"
                                                            : "the iteration count is at its end");
        return BLO_EARG;
    }
    blo_record rec;
    memcpy(s->keep, s->x, (size_t)nx * sizeof(double));
    if (nz) memcpy(s->keep + nx, s->z, (size_t)nz * sizeof(double));
    blo_status st = blo_solver_direction(s, &rec, &e);
    if (st) {
        blo_error inner = e;
        blo_fail(&e, st, "iteration %d: %s; stopped at the last good iterate", t, inner.msg);
        set_error(s, &e);
        return st;
    }
    const blo_solve_params *sp = &s->c->solve;
    opt_step(sp, t, sp->lr_x, nx, s->x, s->g, s->mom, s->sec, s->p->x_lo, s->p->x_hi);
    if (nz) opt_step(sp, t, sp->lr_z, nz, s->z, s->g + nx, s->mom + nx, s->sec + nx, s->p->y_lo, s->p->y_hi);
    if (nonfinite(s->x, nx) >= 0 || (nz && nonfinite(s->z, nz) >= 0)) { // an overflowing step
        memcpy(s->x, s->keep, (size_t)nx * sizeof(double));
        if (nz) memcpy(s->z, s->keep + nx, (size_t)nz * sizeof(double));
        blo_fail(&e, BLO_ETAPE, "iteration %d: the step overflowed; stopped at the last good iterate", t);
        set_error(s, &e);
        return BLO_ETAPE;
    }
    s->t = t + 1;
    if (rec.kbar > 0) s->kbar_sum += rec.kbar, s->kbar_n++;
    rec.x = s->keep, rec.z = nz ? s->keep + nx : NULL, rec.y = s->y;
    rec.seconds = now() - t0;
    s->error[0] = 0;
    if (s->record && s->record(&rec, s->record_user)) s->stop = true;
    return BLO_OK;
}

blo_status blo_solver_run(blo_solver *s) {
    blo_status st = BLO_OK;
    s->stop = false;
    while (s->t < s->c->solve.T) {
        if ((st = blo_solver_step(s))) break;
        if (s->stop) {
            st = BLO_STOPPED;
            break;
        }
    }
    s->stop = false;
    blo_record rec;
    char keep[sizeof s->error];
    memcpy(keep, s->error, sizeof keep); // the run's error, not the report's
    blo_solver_report(s, &rec);
    memcpy(s->error, keep, sizeof keep);
    return st;
}

blo_status blo_solver_report(blo_solver *s, blo_record *rec) {
    blo_error e;
    double t0 = now();
    *rec = (blo_record){.t = s->t, .x = s->x, .z = s->z, .y = s->y, .F = NAN, .f = NAN,
                        .ll_residual = NAN, .grad_norm = NAN, .final = 1};
    ad_tape_reset(s->tape);
    // the final record on the full data, not on the last minibatch a stochastic method drew
    blo_status st = blo_sample(s->p, BLO_SAMPLE_FULL, NULL, &e);
    if (!st) st = s->m->solution(s->state, s->x, s->z, s->y, &e);
    if (!st) st = objectives(s, s->x, s->y, rec, &e);
    if (st) set_error(s, &e);
    rec->seconds = now() - t0;
    if (s->record) s->record(rec, s->record_user); // the final record: its answer is not asked
    return st;
}

blo_status blo_solver_solution(blo_solver *s, double *y, blo_error *err) {
    ad_tape_reset(s->tape);
    blo_status st = blo_sample(s->p, BLO_SAMPLE_FULL, NULL, err);
    return st ? st : s->m->solution(s->state, s->x, s->z, y, err);
}

int blo_solver_iterations(const blo_solver *s) { return s->t; }
const double *blo_solver_x(const blo_solver *s) { return s->x; }
const double *blo_solver_z(const blo_solver *s) { return s->z; }
int blo_solver_n_z(const blo_solver *s) { return s->nz; }
const blo_config *blo_solver_config(const blo_solver *s) { return s->c; }
const double *blo_solver_gradient(const blo_solver *s) { return s->g; }
const char *blo_solver_error(const blo_solver *s) { return s->error; }
ad_tape *blo_solver_tape(blo_solver *s) { return s->tape; }
double blo_solver_kbar_mean(const blo_solver *s) {
    return s->kbar_n ? s->kbar_sum / (double)s->kbar_n : NAN;
}
