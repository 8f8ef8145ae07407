// Task sets (tasks.h): any method run on batches of tasks. The solver wraps its method when the
// problem has a task set: the wrapper keeps one state of the method per task of a batch (each with
// its own tape and generator, so no two threads share anything they write), draws the batch of UL
// step t from (seed, t), calls the method's direction for each task on the set's threads, and
// averages in task order (a fixed-order sum, then / B), so the bits do not depend on the threads.
// A method needs no change: each task is a blo_problem of its own (the reference problem with user
// pointing at the task).
//
// Across processes (the problem's comm, comm.h): rank r computes the contiguous block of tasks
// blo_comm_block gives it, then ONE all-gather per UL step brings every task's results (its
// status, F, f, residual, g_x, g_z and, with more than one rank, its saved state) to every rank,
// which averages all B tasks in task order exactly as one process does: 1, 2 or 4 ranks give the
// same bits, and every rank takes the same UL step. The states travel so that every rank holds
// every task's state: rank 0 alone writes the checkpoint, and a resumed run (any rank count)
// reads them all.
#include "comm.h"
#include "solver.h"
#include "tasks.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void blo_tasks_rng(ad_rng *r, uint64_t seed, uint64_t t) {
    // splitmix64 of the pair: neighbouring (seed, t) give unrelated generator seeds
    uint64_t z = seed * 0x9E3779B97F4A7C15ull + t + 0x632BE59BD9B4E019ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    ad_rng_seed(r, (z ^ (z >> 31)) ^ (t * 0xD1B54A32D192ED03ull));
}

blo_status blo_tasks_check(const blo_task_set *ts, blo_error *err) {
    if (!ts) return blo_fail(err, BLO_EARG, "tasks: NULL task set");
    if (!ts->draw || ts->task_size == 0)
        return blo_fail(err, BLO_EARG, "tasks: a task set needs a draw and a task size > 0");
    if (ts->batch < 1 || ts->threads < 1)
        return blo_fail(err, BLO_EARG, "tasks: batch = %d and threads = %d must be >= 1", ts->batch, ts->threads);
    return BLO_OK;
}

blo_status blo_tasks_draw(const blo_task_set *ts, uint64_t seed, uint64_t t, int n, void *tasks,
                          blo_error *err) {
    blo_status st = blo_tasks_check(ts, err);
    if (st) return st;
    ad_rng r;
    blo_tasks_rng(&r, seed, t);
    for (int j = 0; j < n; j++)
        if ((st = ts->draw((unsigned char *)tasks + (size_t)j * ts->task_size, &r, ts->user, err))) return st;
    return blo_ok(err);
}

// ---- the wrapper's state ------------------------------------------------------------------------

// One task of the batch: its problem, the method's state on it, and what its direction gave.
typedef struct {
    blo_problem prob;  // the reference problem with user = this task
    void *state;       // the method's
    ad_tape *tape;
    ad_rng rng;
    double *gx, *gz, *y, *gy; // [n_x], [n_z], [n_y], [n_y]
    blo_record rec;
    double F, f, residual, phi;
    blo_status st;
    blo_error err;
} task_slot;

typedef enum { JOB_DIRECTION, JOB_PHI } job_kind;

typedef struct {
    const blo_method_type *base;
    const blo_task_set *ts;
    const blo_problem *p;
    int B, nx, ny, nz;
    blo_comm *comm;         // the problem's (NULL: one process)
    int lo, hi;             // this rank's tasks [lo, hi)
    size_t state_bytes;     // a task's saved state in the exchange (0 on one rank)
    size_t per;             // doubles per task in the exchange
    double *mine, *all;     // the exchange: this rank's tasks [(hi - lo) per], all [B per]
    size_t *counts;         // bytes from each rank [size]
    blo_writer saved;       // scratch for a task's saved state
    task_slot *slots;       // [B]
    unsigned char *tasks;   // the batch [B task_size]
    double *mem;            // the slots' vectors
    void *ref;              // the method's state on the reference task (its solution)
    // the job in flight: read by the threads, written only between parallel sections
    job_kind job;
    int t;
    const double *x, *z;
} tasks_state;

typedef struct {
    tasks_state *w;
    int first, stride;
} worker;

static void tasks_free(void *state) {
    tasks_state *w = state;
    if (!w) return;
    for (int j = 0; w->slots && j < w->B; j++) {
        if (w->slots[j].state) w->base->free(w->slots[j].state);
        ad_tape_free(w->slots[j].tape);
    }
    if (w->ref) w->base->free(w->ref);
    free(w->mine), free(w->all), free(w->counts), free(w->saved.data);
    free(w->slots), free(w->tasks), free(w->mem), free(w);
}

// F, f and ||grad_y f|| of the slot's task at its y.
static blo_status slot_objectives(tasks_state *w, task_slot *s, const double *x) {
    blo_status st = blo_eval(&s->prob, 1, x, s->y, &s->F, NULL, NULL, s->tape, &s->err);
    if (!st) st = blo_eval(&s->prob, 0, x, s->y, &s->f, NULL, s->gy, s->tape, &s->err);
    if (!st) s->residual = sqrt(blo_dot(s->gy, s->gy, w->ny));
    return st;
}

static void run_slot(tasks_state *w, task_slot *s) {
    ad_tape_reset(s->tape); // each task on a tape with no history: the same bits on any thread
    if (w->job == JOB_PHI) {
        s->st = w->base->phi(s->state, w->x, w->z, &s->phi, &s->err);
        return;
    }
    s->rec = (blo_record){.t = w->t};
    s->st = w->base->direction(s->state, w->t, w->x, w->z, s->gx, w->nz ? s->gz : NULL, s->y, &s->rec,
                               &s->err);
    if (!s->st) s->st = slot_objectives(w, s, w->x);
}

static void *run_worker(void *arg) {
    worker *k = arg;
    for (int j = k->w->lo + k->first; j < k->w->hi; j += k->stride) run_slot(k->w, &k->w->slots[j]);
    return NULL;
}

// Runs the job on this rank's slots, its i-th on thread i mod threads; the caller's thread is
// thread 0 and does a thread's share itself when it cannot be started. A slot's failure stays in
// the slot (the exchange tells every rank).
static void run_batch(tasks_state *w) {
    enum { MAX_THREADS = 64 };
    int mine = w->hi - w->lo;
    int n = w->ts->threads < mine ? w->ts->threads : mine;
    if (n > MAX_THREADS) n = MAX_THREADS;
    worker k[MAX_THREADS];
    pthread_t th[MAX_THREADS];
    bool started[MAX_THREADS] = {false};
    for (int i = 0; i < n; i++) k[i] = (worker){w, i, n};
    for (int i = 1; i < n; i++) started[i] = pthread_create(&th[i], NULL, run_worker, &k[i]) == 0;
    run_worker(&k[0]);
    for (int i = 1; i < n; i++)
        if (started[i]) pthread_join(th[i], NULL);
        else run_worker(&k[i]);
}

// ---- the exchange: what each task gave, from its rank to every rank ------------------------------

// A task's record in the exchange [per doubles]: status, F, f, residual, extra, kbar, phi, then
// g_x [nx], g_z [nz], then its saved state (state_bytes, in whole doubles).
enum { X_ST, X_F, X_LF, X_RES, X_EXTRA, X_KBAR, X_PHI, X_HEAD };

// Task s's generator and method state into the writer (reset first).
static blo_status slot_save(tasks_state *w, const task_slot *s) {
    w->saved.len = 0, w->saved.failed = false;
    blo_status st = blo_write(&w->saved, &s->rng, sizeof s->rng);
    if (!st && w->base->save) st = w->base->save(s->state, &w->saved);
    return st;
}

static blo_status slot_load(tasks_state *w, task_slot *s, const void *data, size_t n, blo_error *err) {
    blo_reader r = {.data = data, .len = n};
    if (blo_read(&r, &s->rng, sizeof s->rng)) return blo_fail(err, BLO_EIO, "tasks: a task's state is truncated");
    return w->base->load ? w->base->load(s->state, &r, err) : BLO_OK;
}

static void pack(tasks_state *w, task_slot *s, double *v) {
    if (!s->st && w->state_bytes && (slot_save(w, s) || w->saved.len != w->state_bytes))
        s->st = blo_fail(&s->err, BLO_ENOMEM, "its state could not be saved (out of memory, or not %zu bytes)",
                         w->state_bytes); // a failure of the task, told to every rank
    v[X_ST] = s->st, v[X_F] = s->F, v[X_LF] = s->f, v[X_RES] = s->residual, v[X_PHI] = s->phi;
    v[X_EXTRA] = s->rec.extra, v[X_KBAR] = s->rec.kbar;
    memcpy(v + X_HEAD, s->gx, sizeof(double) * (size_t)w->nx);
    memcpy(v + X_HEAD + w->nx, s->gz, sizeof(double) * (size_t)w->nz);
    if (w->state_bytes && !s->st) memcpy(v + X_HEAD + w->nx + w->nz, w->saved.data, w->state_bytes);
}

static void unpack(tasks_state *w, task_slot *s, const double *v, blo_error *err) {
    s->st = (blo_status)v[X_ST], s->F = v[X_F], s->f = v[X_LF], s->residual = v[X_RES], s->phi = v[X_PHI];
    s->rec.extra = v[X_EXTRA], s->rec.kbar = (int)v[X_KBAR];
    memcpy(s->gx, v + X_HEAD, sizeof(double) * (size_t)w->nx);
    memcpy(s->gz, v + X_HEAD + w->nx, sizeof(double) * (size_t)w->nz);
    if (w->state_bytes && !s->st && slot_load(w, s, v + X_HEAD + w->nx + w->nz, w->state_bytes, err))
        s->st = err->status ? err->status : BLO_EIO;
}

// Runs the job on this rank's tasks and gives every rank every task's results (one all-gather;
// nothing on one rank), then the first failure of any task, in task order, on every rank.
static blo_status run_and_exchange(tasks_state *w, blo_error *err) {
    run_batch(w);
    int size = blo_comm_size(w->comm);
    if (size > 1) {
        size_t per = w->job == JOB_PHI ? X_HEAD : w->per; // phi: the head only
        for (int j = w->lo; j < w->hi; j++) {
            task_slot *s = &w->slots[j];
            if (w->job == JOB_PHI) w->mine[(size_t)(j - w->lo) * per + X_ST] = s->st,
                                   w->mine[(size_t)(j - w->lo) * per + X_PHI] = s->phi;
            else pack(w, s, w->mine + (size_t)(j - w->lo) * per);
        }
        for (int r = 0; r < size; r++) {
            int lo, hi;
            blo_comm_block(w->B, r, size, &lo, &hi);
            w->counts[r] = (size_t)(hi - lo) * per * sizeof(double);
        }
        blo_status st = blo_comm_allgatherv(w->comm, w->mine, w->all, w->counts, err);
        if (st) return st;
        for (int j = 0; j < w->B; j++) {
            if (j >= w->lo && j < w->hi) continue;
            const double *v = w->all + (size_t)j * per;
            task_slot *s = &w->slots[j];
            if (w->job == JOB_PHI) s->st = (blo_status)v[X_ST], s->phi = v[X_PHI];
            else unpack(w, s, v, &s->err);
        }
    }
    for (int j = 0; j < w->B; j++) {
        const task_slot *s = &w->slots[j];
        if (!s->st) continue;
        if (j >= w->lo && j < w->hi) return blo_fail(err, s->st, "task %d of the batch: %s", j, s->err.msg);
        return blo_fail(err, s->st, "task %d of the batch failed on another rank (%s)", j, blo_status_name(s->st));
    }
    return BLO_OK;
}

// This rank's share of the batch and the exchange's buffers; the size of a task's saved state
// (the same for every task, measured on task 0) when there are other ranks.
static blo_status exchange_init(tasks_state *w, blo_error *err) {
    int size = blo_comm_size(w->comm);
    blo_comm_block(w->B, blo_comm_rank(w->comm), size, &w->lo, &w->hi);
    if (size == 1) return BLO_OK;
    if (slot_save(w, &w->slots[0])) return blo_fail(err, BLO_ENOMEM, "tasks: out of memory");
    w->state_bytes = w->saved.len;
    w->per = X_HEAD + (size_t)w->nx + (size_t)w->nz + (w->state_bytes + sizeof(double) - 1) / sizeof(double);
    w->mine = calloc((size_t)(w->hi - w->lo) * w->per + 1, sizeof(double));
    w->all = calloc((size_t)w->B * w->per, sizeof(double));
    w->counts = calloc((size_t)size, sizeof(size_t));
    if (!w->mine || !w->all || !w->counts) return blo_fail(err, BLO_ENOMEM, "tasks: out of memory");
    return BLO_OK;
}

static blo_status tasks_init(void **state, const blo_method_env *env, int *n_z, double **z0,
                             blo_error *err) {
    const blo_problem *p = env->p;
    const blo_task_set *ts = p->tasks;
    *state = NULL;
    blo_status st = blo_tasks_check(ts, err);
    if (st) return st;
    if (!env->method || !env->method->init)
        return blo_fail(err, BLO_EARG, "tasks: the environment names no method to run on the batches");
    // A task's problem is the reference one's with its own user: a minibatch sampler would be
    // handed a task for its user.
    if (p->sample) return blo_fail(err, BLO_EARG, "tasks: a task set with minibatches (sample) is not supported");
    tasks_state *w = calloc(1, sizeof *w);
    if (!w) return blo_fail(err, BLO_ENOMEM, "tasks: out of memory");
    *w = (tasks_state){.base = env->method, .ts = ts, .p = p, .B = ts->batch, .nx = p->n_x, .ny = p->n_y,
                       .comm = p->comm};
    *state = w;
    blo_method_env e = *env;
    if ((st = w->base->init(&w->ref, &e, &w->nz, z0, err))) return st;
    *n_z = w->nz;
    size_t B = (size_t)w->B, per = (size_t)w->nx + (size_t)w->nz + 2 * (size_t)w->ny;
    ad_tape_params tp = ad_tape_default_params();
    tp.threads = 1; // the batch's threads are the parallelism; a task's products stay on its own
    // a task's own tape takes a chunk of values at its first evaluation: on Linux an allocation
    // past the machine's memory succeeds and the process is killed later, so count it now
    double each = (double)ts->task_size + 8.0 * (double)per + (double)tp.chunk_bytes;
    if ((st = blo_check_memory((double)B, each, "tasks of a batch", err))) return st;
    w->slots = calloc(B, sizeof *w->slots);
    w->tasks = calloc(B, ts->task_size);
    w->mem = calloc(B * per + 1, sizeof(double));
    if (!w->slots || !w->tasks || !w->mem) return blo_fail(err, BLO_ENOMEM, "tasks: out of memory");
    for (size_t j = 0; j < B; j++) {
        task_slot *s = &w->slots[j];
        double *v = w->mem + j * per;
        s->gx = v, s->gz = v + w->nx, s->y = s->gz + w->nz, s->gy = s->y + w->ny;
        s->prob = *p;
        s->prob.user = w->tasks + j * ts->task_size, s->prob.tasks = NULL, s->prob.comm = NULL;
        if (!(s->tape = ad_tape_new(&tp))) return blo_fail(err, BLO_ENOMEM, "tasks: out of memory");
        ad_rng_seed(&s->rng, ad_rng_next(env->rng)); // the solver's generator gives each its own
        memcpy(s->prob.user, p->user, ts->task_size); // a task until the first batch is drawn
        e.p = &s->prob, e.tape = s->tape, e.rng = &s->rng;
        int nz;
        double *zj;
        if ((st = w->base->init(&s->state, &e, &nz, &zj, err))) return st;
        if (nz != w->nz) return blo_fail(err, BLO_EARG, "tasks: method %s gave n_z = %d for a task, %d for "
                                          "the reference", w->base->name, nz, w->nz);
    }
    if ((st = exchange_init(w, err))) return st;
    return blo_ok(err);
}

// The mean over the tasks of their g_x (or, with of_z, g_z) [n]: a sum in task order, then / B.
static void mean_into(const tasks_state *w, double *out, int n, bool of_z) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < w->B; j++) s += (of_z ? w->slots[j].gz : w->slots[j].gx)[i];
        out[i] = s / w->B;
    }
}

static blo_status tasks_direction(void *state, int t, const double *x, const double *z, double *gx,
                                  double *gz, double *y, blo_record *rec, blo_error *err) {
    tasks_state *w = state;
    blo_status st = blo_tasks_draw(w->ts, w->ts->seed, (uint64_t)t, w->B, w->tasks, err);
    if (st) return st;
    w->job = JOB_DIRECTION, w->t = t, w->x = x, w->z = z;
    if ((st = run_and_exchange(w, err))) return st;
    mean_into(w, gx, w->nx, false);
    if (w->nz) mean_into(w, gz, w->nz, true);
    double F = 0, f = 0, res = 0, extra = 0, kbar = 0;
    for (int j = 0; j < w->B; j++) {
        const task_slot *s = &w->slots[j];
        F += s->F, f += s->f, res += s->residual, extra += s->rec.extra, kbar += s->rec.kbar;
    }
    memcpy(y, w->slots[0].y, sizeof(double) * (size_t)w->ny); // the first task's, for the record (rank 0's)
    rec->F = F / w->B, rec->f = f / w->B, rec->ll_residual = res / w->B;
    rec->extra = extra / w->B, rec->kbar = (int)lround(kbar / w->B);
    return blo_ok(err);
}

// The method's solution on the reference task.
static blo_status tasks_solution(void *state, const double *x, const double *z, double *y,
                                 blo_error *err) {
    tasks_state *w = state;
    return w->base->solution(w->ref, x, z, y, err);
}

// The mean of the tasks' values of the last batch, each with what its direction held fixed.
static blo_status tasks_phi(void *state, const double *x, const double *z, double *value,
                            blo_error *err) {
    tasks_state *w = state;
    if (!w->base->phi) return blo_fail(err, BLO_EARG, "%s differentiates no value", w->base->name);
    w->job = JOB_PHI, w->x = x, w->z = z;
    blo_status st = run_and_exchange(w, err);
    if (st) return st;
    double s = 0;
    for (int j = 0; j < w->B; j++) s += w->slots[j].phi;
    *value = s / w->B;
    return BLO_OK;
}

// Each task's generator and the method's state, in task order.
static blo_status tasks_save(const void *state, blo_writer *w) {
    const tasks_state *q = state;
    blo_status st = BLO_OK;
    for (int j = 0; !st && j < q->B; j++) {
        st = blo_write(w, &q->slots[j].rng, sizeof q->slots[j].rng);
        if (!st && q->base->save) st = q->base->save(q->slots[j].state, w);
    }
    return st;
}

static blo_status tasks_load(void *state, blo_reader *r, blo_error *err) {
    tasks_state *q = state;
    blo_status st = BLO_OK;
    for (int j = 0; !st && j < q->B; j++) {
        st = blo_read(r, &q->slots[j].rng, sizeof q->slots[j].rng);
        if (st) return blo_fail(err, st, "tasks: the state of task %d is truncated", j);
        if (q->base->load) st = q->base->load(q->slots[j].state, r, err);
    }
    return st;
}

const blo_method_type *blo_tasks_wrap(blo_method_type *out, const blo_method_type *base) {
    *out = *base;
    out->needs |= BLO_NEEDS_TASKS;
    out->init = tasks_init, out->direction = tasks_direction, out->solution = tasks_solution;
    out->phi = base->phi ? tasks_phi : NULL;
    out->save = tasks_save, out->load = tasks_load, out->free = tasks_free;
    return out;
}
