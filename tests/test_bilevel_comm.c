// Communicators (bilevel/comm.h) and what runs on them: the split into blocks, the serial
// communicator, and, with threads standing in for MPI ranks (a communicator whose all-gather is
// a barrier over shared memory), the two patterns: a task set's batch split across 1, 2 and 3
// ranks, and hyper-cleaning's training set in 4 shards across 1, 2 and 3 ranks, each giving the
// bits of one process; and the shard maps (models/shard.c) against finite differences, first and
// second order, and the sharded f against the plain one.
#include "harness.h"
#include "tests.h"

#include "../bilevel/blo_extra.h"
#include "../bilevel/comm.h"
#include "../bilevel/tasks.h"
#include "../models/shard.h"
#include "models.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

// ---- threads as ranks --------------------------------------------------------------------------

enum { MAX_RANKS = 4 };

typedef struct {
    pthread_barrier_t bar;
    const void *blocks[MAX_RANKS];
} shared_room;

// Every rank posts its block, waits for the others, copies all in rank order, and waits again
// (so no block is reused before everyone has read it).
static blo_status room_allgatherv(blo_comm *c, const void *mine, void *out, const size_t *counts,
                                  blo_error *err) {
    shared_room *s = c->impl;
    s->blocks[c->rank] = mine;
    pthread_barrier_wait(&s->bar);
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        if (counts[r]) memcpy((unsigned char *)out + off, s->blocks[r], counts[r]);
        off += counts[r];
    }
    pthread_barrier_wait(&s->bar);
    (void)err;
    return BLO_OK;
}

typedef struct {
    blo_comm comm;
    void *job;          // what each rank runs (the test's)
    double x[64];       // the rank's x after the run
    char err[400];
} rank_slot;

// Runs fn on size threads, thread r as rank r of a shared-memory communicator.
static void run_ranks(int size, void *(*fn)(void *), rank_slot *slots, void *job) {
    shared_room room;
    pthread_barrier_init(&room.bar, NULL, (unsigned)size);
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        slots[r] = (rank_slot){.comm = {.rank = r, .size = size, .allgatherv = room_allgatherv, .impl = &room},
                               .job = job};
        pthread_create(&th[r], NULL, fn, &slots[r]);
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&room.bar);
}

// The solver on p from (x0, y0) with config c; its x [n_x <= 64] into slot->x, or a message.
static void solve_into(const blo_problem *p, const char *method, const char *set, const double *x0,
                       const double *y0, rank_slot *slot) {
    blo_error e;
    blo_config *c = blo_config_new(blo_method_find(method), &e);
    if (c && blo_config_apply(c, set, &e)) blo_config_free(c), c = NULL;
    blo_solver *s = c ? blo_solver_new(p, c, x0, y0, NULL, &e) : NULL;
    if (!s) snprintf(slot->err, sizeof slot->err, "%s", e.msg);
    else if (blo_solver_run(s)) snprintf(slot->err, sizeof slot->err, "%s", blo_solver_error(s));
    else memcpy(slot->x, blo_solver_x(s), sizeof(double) * (size_t)p->n_x);
    blo_solver_free(s);
    blo_config_free(c);
}

// ---- a task family: n = 4, F_j = 1/2 ||y||^2 - b_j . y + 1/2 ||x||^2, f_j = 1/2 ||y - x o c_j||^2 ----

enum { NT = 4 };

typedef struct {
    double b[NT], c[NT];
} ctask;

static ad_var c_F(ad_tape *t, ad_var x, ad_var y, void *u) {
    const ctask *k = u;
    ad_var v = ad_scale(t, ad_add(t, ad_sqnorm(t, y), ad_sqnorm(t, x)), 0.5);
    return ad_sub(t, v, ad_dot(t, ad_const_view(t, ad_vec_shape(NT), k->b), y));
}

static ad_var c_f(ad_tape *t, ad_var x, ad_var y, void *u) {
    const ctask *k = u;
    return ad_scale(t, ad_sqnorm(t, ad_sub(t, y, ad_mul(t, x, ad_const_view(t, ad_vec_shape(NT), k->c)))), 0.5);
}

static blo_status c_draw(void *task, ad_rng *r, const void *user, blo_error *err) {
    ctask *k = task;
    (void)user, (void)err;
    for (int i = 0; i < NT; i++) k->b[i] = ad_rng_normal(r), k->c[i] = 1 + 0.5 * ad_rng_normal(r);
    return BLO_OK;
}

static const ctask c_ref = {{1, -1, 0.5, 0}, {1, 2, 0.5, 1}};
static const double c_x0[NT] = {0.5, -0.5, 0.25, 1}, c_y0[NT] = {0};

typedef struct {
    const char *method;
} task_job;

static void *task_rank(void *arg) {
    rank_slot *slot = arg;
    const task_job *j = slot->job;
    blo_task_set ts = {.task_size = sizeof(ctask), .draw = c_draw, .batch = 5, .threads = 2, .seed = 3};
    blo_problem p = {.n_x = NT, .n_y = NT, .F = c_F, .f = c_f, .user = (void *)&c_ref, .tasks = &ts,
                     .comm = &slot->comm};
    solve_into(&p, j->method, "ul_iters=5 ll_iters=4 lr_x=0.1 lr_z=0.1 optimizer=adam", c_x0, c_y0, slot);
    return NULL;
}

static void tasks_across_ranks(void) {
    static const char *const methods[] = {"rhg", "maml", "reptile", "cg"};
    for (size_t m = 0; m < sizeof methods / sizeof *methods; m++) {
        task_job job = {methods[m]};
        rank_slot one[1], many[MAX_RANKS];
        run_ranks(1, task_rank, one, &job);
        EXPECT(!one[0].err[0], "%s on 1 rank: %s", methods[m], one[0].err);
        EXPECT(one[0].x[0] != c_x0[0], "%s: x did not move", methods[m]);
        for (int size = 2; size <= 3; size++) {
            run_ranks(size, task_rank, many, &job);
            for (int r = 0; r < size; r++)
                EXPECT(!many[r].err[0] && !memcmp(many[r].x, one[0].x, sizeof(double) * NT),
                       "%s, rank %d of %d: x[0] %.17g, one rank %.17g %s", methods[m], r, size, many[r].x[0],
                       one[0].x[0], many[r].err);
        }
    }
}

// ---- hyper-cleaning in shards --------------------------------------------------------------------

enum { HC_N = 24 };
static const char hc_set[] = "n_train=24 n_val=20 n_test=20 shards=4 data=" MDL_FASHION_MNIST_DIR;

typedef struct {
    const char *method, *set;
    mdl_model *models; // one per rank, made once (loading the data is most of the cost)
} shard_job;

static void *shard_rank(void *arg) {
    rank_slot *slot = arg;
    const shard_job *j = slot->job;
    mdl_model *m = &j->models[slot->comm.rank];
    char err[400];
    if (mdl_set_comm(m, &slot->comm, err, sizeof err)) {
        snprintf(slot->err, sizeof slot->err, "%s", err);
        return NULL;
    }
    solve_into(&m->prob, j->method, j->set, m->x0[0], m->y0[0], slot);
    return NULL;
}

static void shards_across_ranks(mdl_model *models) {
    static const char *const jobs[][2] = {
        {"rhg", "ul_iters=3 ll_iters=3 s_l=0.3 lr_x=1"},
        {"cg", "ul_iters=3 ll_iters=3 s_l=0.3 J=3 lr_x=1"},
        {"bome", "ul_iters=3 T=2 lr_x=1"},
    };
    for (size_t k = 0; k < sizeof jobs / sizeof *jobs; k++) {
        shard_job job = {jobs[k][0], jobs[k][1], models};
        rank_slot one[1], many[MAX_RANKS];
        run_ranks(1, shard_rank, one, &job);
        EXPECT(!one[0].err[0], "%s on 1 rank: %s", job.method, one[0].err);
        bool moved = false;
        for (int i = 0; i < HC_N; i++) moved |= one[0].x[i] != 0;
        EXPECT(moved, "%s: x did not move", job.method);
        for (int size = 2; size <= 3; size++) {
            run_ranks(size, shard_rank, many, &job);
            for (int r = 0; r < size; r++)
                EXPECT(!many[r].err[0] && !memcmp(many[r].x, one[0].x, sizeof(double) * HC_N),
                       "%s, rank %d of %d: x[0] %.17g, one rank %.17g %s", job.method, r, size,
                       many[r].x[0], one[0].x[0], many[r].err);
        }
    }
}

// ---- the shard maps, one process ------------------------------------------------------------------

// g(w, x) = sum over shards s of (row_s . a_s) (take(x)_s . c_s)^2 with w [3] and x [7] in 3 shards:
// every map in a nonlinear expression, so first and second derivatives pass through each.
typedef struct {
    mdl_shards *sh;
} maps_ctx;

static ad_var maps_fn(ad_tape *t, const ad_var *in, void *u) {
    const maps_ctx *c = u;
    const mdl_shards *sh = c->sh;
    ad_var rows = mdl_shard_copy(t, &sh->wide, in[0]), xl = mdl_shard_take(t, sh, in[1]);
    ad_var terms = AD_NONE;
    for (int j = 0; j < sh->S; j++) {
        ad_var r = mdl_shard_row(t, &sh->wide, rows, j);
        ad_var xs = ad_slice(t, xl, sh->off[j], sh->off[j + 1] - sh->off[j]);
        ad_var v = ad_mul(t, ad_sum(t, ad_scale(t, r, 1.0 + j)), ad_square(t, ad_sum(t, ad_sin(t, xs))));
        terms = j ? ad_concat(t, terms, v) : ad_reshape(t, v, ad_vec_shape(1));
    }
    ad_var f = ad_linear(t, &sh->one.sum, ad_reshape(t, terms, ad_mat_shape(sh->S, 1)));
    // and x back through gather: its own sum of squares
    ad_var back = ad_linear(t, &sh->gather, xl);
    return ad_add(t, ad_reshape(t, f, ad_scalar_shape()), ad_scale(t, ad_sqnorm(t, back), 0.25));
}

static void shard_maps(void) {
    char err[200];
    mdl_shards *sh = mdl_shards_new(3, 7, 3, err, sizeof err);
    EXPECT(sh && sh->off[0] == 0 && sh->off[3] == 7, "shards: %s", sh ? "bad offsets" : err);
    if (!sh) return;
    maps_ctx c = {sh};
    ad_shape shapes[2] = {ad_vec_shape(3), ad_vec_shape(7)};
    const double w[3] = {0.3, -0.7, 1.1}, x[7] = {0.1, 0.9, -0.4, 0.6, -1.2, 0.2, 0.5};
    const double *pt[2] = {w, x};
    ad_check_params p = ad_check_default_params();
    ad_check_report g = ad_check_grad(maps_fn, &c, 2, shapes, pt, &p);
    EXPECT(g.status == AD_OK && g.pass, "first derivatives: %s", g.msg);
    ad_check_report h = ad_check_hvp(maps_fn, &c, 2, shapes, pt, &p);
    EXPECT(h.status == AD_OK && h.pass, "second derivatives: %s", h.msg);
    blo_comm two = {.rank = 0, .size = 4};
    EXPECT(mdl_shards_set_comm(sh, &two, err, sizeof err) == -1 && strstr(err, "fewer shards"),
           "3 shards on 4 ranks: '%s'", err);
    EXPECT(!mdl_shards_new(8, 7, 3, err, sizeof err) && strstr(err, "shards=8"), "8 shards of 7: '%s'", err);
    mdl_shards_free(sh);
}

// The sharded f and its gradients against the plain one's at a point off the start.
static void sharded_f_is_f(const mdl_model *a, const mdl_model *b) {
    int nx = a->prob.n_x, ny = a->prob.n_y;
    double *v = malloc(sizeof(double) * (size_t)(3 * (nx + ny)));
    double *x = v, *y = v + nx, *ga = y + ny, *g = ga + nx + ny;
    ad_rng r;
    ad_rng_seed(&r, 5);
    for (int i = 0; i < nx + ny; i++) v[i] = 0.1 * ad_rng_normal(&r);
    double fa, fb;
    ad_tape *t = ad_tape_new(NULL);
    blo_error e;
    EXPECT(blo_eval(&a->prob, 0, x, y, &fa, ga, ga + nx, t, &e) == BLO_OK, "%s", e.msg);
    EXPECT(blo_eval(&b->prob, 0, x, y, &fb, g, g + nx, t, &e) == BLO_OK, "%s", e.msg);
    EXPECT(fabs(fa - fb) <= 1e-14 * fabs(fa), "f %.17g sharded %.17g", fa, fb);
    double worst = 0, scale = 0; // another order of the sums: roundings apart, entry by entry
    for (int i = 0; i < nx + ny; i++) worst = fmax(worst, fabs(ga[i] - g[i])), scale = fmax(scale, fabs(ga[i]));
    EXPECT(worst <= 1e-13 * scale, "gradients differ by %g (largest entry %g)", worst, scale);
    ad_tape_free(t);
    free(v);
}

// The plain model and one sharded model per rank, then the two checks on them.
static void hyperclean_shards(void) {
    mdl_model plain, models[3];
    char err[400];
    memset(models, 0, sizeof models);
    int rc = mdl_make_named("hyperclean", "n_train=24 n_val=20 n_test=20 data=" MDL_FASHION_MNIST_DIR, &plain,
                            err, sizeof err);
    for (int r = 0; !rc && r < 3; r++) rc = mdl_make_named("hyperclean", hc_set, &models[r], err, sizeof err);
    EXPECT(rc == 0, "%s", err);
    if (!rc) {
        sharded_f_is_f(&plain, &models[0]);
        shards_across_ranks(models);
    }
    mdl_free(&plain);
    for (int r = 0; r < 3; r++) mdl_free(&models[r]);
}

// ---- the communicator itself -------------------------------------------------------------------

static void blocks(void) {
    static const int cases[][2] = {{5, 1}, {5, 2}, {5, 3}, {4, 4}, {3, 4}, {0, 2}, {100, 7}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        int n = cases[k][0], size = cases[k][1], next = 0, most = 0, least = n;
        for (int r = 0; r < size; r++) {
            int lo, hi;
            blo_comm_block(n, r, size, &lo, &hi);
            EXPECT(lo == next && hi >= lo, "n %d size %d rank %d: [%d, %d) after %d", n, size, r, lo, hi, next);
            next = hi;
            most = hi - lo > most ? hi - lo : most, least = hi - lo < least ? hi - lo : least;
        }
        EXPECT(next == n && most - least <= 1, "n %d size %d: ends at %d, blocks of %d to %d", n, size, next,
               least, most);
    }
}

static void serial(void) {
    blo_comm c;
    blo_comm_serial(&c);
    const double mine[3] = {1, 2, 3};
    double out[3] = {0};
    size_t counts[1] = {sizeof mine};
    blo_error e;
    EXPECT(blo_comm_allgatherv(&c, mine, out, counts, &e) == BLO_OK && !memcmp(out, mine, sizeof mine),
           "the serial gather is not a copy");
    EXPECT(c.messages == 1 && c.bytes == 0 && blo_comm_rank(&c) == 0 && blo_comm_size(&c) == 1,
           "messages %lld bytes %lld", (long long)c.messages, (long long)c.bytes);
    EXPECT(blo_comm_rank(NULL) == 0 && blo_comm_size(NULL) == 1, "NULL is one process");
    blo_comm_free(&c); // nothing to free
    if (!blo_comm_mpi_built()) {
        EXPECT(!blo_comm_mpi_new(&e) && strstr(e.msg, "-Dmpi=enabled"), "without MPI: '%s'", e.msg);
    }
}

void test_bilevel_comm(void) {
    TEST_CASE("comm: blocks of n items over ranks") blocks();
    TEST_CASE("comm: the serial communicator") serial();
    TEST_CASE("comm: a batch of tasks on 1, 2, 3 ranks gives the same x") tasks_across_ranks();
    TEST_CASE("comm: the shard maps against finite differences") shard_maps();
    TEST_CASE("comm: hyperclean's sharded f is f, and in 4 shards on 1, 2, 3 ranks gives the same x")
        hyperclean_shards();
}
