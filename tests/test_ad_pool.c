// The worker pool (autodiff/pool.h): every piece of a job run exactly once, for every thread
// count on pools of 1 and 3 workers and on none (threads made per call), a job run from inside a
// job (on the calling thread alone), many jobs in a row (what a sweep does, its workers
// spinning between them), jobs after pauses long enough for the workers to sleep, and a pool
// freed while its workers spin; and through the tape: the thin kernel's and the elementwise
// ops' results the same bits on 1, 2 and 3 threads.
#include "harness.h"
#include "tests.h"

#include "../autodiff/ad.h"
#include "../autodiff/ad_extra.h"
#include "../autodiff/pool.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

// Pieces [0, n) taken from a shared counter, as the library's jobs take theirs; each piece
// counts its runs. nest: each piece also runs a job of 3 pieces on the same pool (on its thread
// alone there, as the pool is busy).
enum { PIECES = 97 };
typedef struct {
    ad_pool *pool;
    atomic_int next, runs[PIECES];
    int nest_threads;
    atomic_int nested; // pieces of the nested jobs
} count_job;

// The nested job: 3 pieces from its own counter, each adding 1 to *count.
enum { NESTED_PIECES = 3 };
typedef struct {
    atomic_int next, *count;
} nested_job;
static void nested_pieces(void *a) {
    nested_job *n = a;
    while (atomic_fetch_add(&n->next, 1) < NESTED_PIECES) atomic_fetch_add(n->count, 1);
}

static void count_pieces(void *a) {
    count_job *j = a;
    for (int p; (p = atomic_fetch_add(&j->next, 1)) < PIECES;) {
        atomic_fetch_add(&j->runs[p], 1);
        if (!j->nest_threads) continue;
        nested_job n = {.count = &j->nested};
        atomic_init(&n.next, 0);
        ad_pool_run(j->pool, j->nest_threads, nested_pieces, &n);
    }
}

// Runs the job `times` times on pool with `threads`; false (after reporting) unless every piece
// ran once each time, and each piece of the nested jobs once.
static bool check_runs(ad_pool *pool, int workers, int threads, int nest, int times) {
    for (int r = 0; r < times; r++) {
        count_job j = {.pool = pool, .nest_threads = nest};
        atomic_init(&j.next, 0), atomic_init(&j.nested, 0);
        for (int p = 0; p < PIECES; p++) atomic_init(&j.runs[p], 0);
        ad_pool_run(pool, threads, count_pieces, &j);
        int bad = -1;
        for (int p = 0; p < PIECES && bad < 0; p++)
            if (atomic_load(&j.runs[p]) != 1) bad = p;
        int nested = atomic_load(&j.nested), want = nest ? PIECES * NESTED_PIECES : 0;
        if (bad >= 0 || nested != want) {
            EXPECT(false, "%d workers, %d threads, nest %d, run %d: piece %d ran %d times, %d nested",
                   workers, threads, nest, r, bad, bad >= 0 ? atomic_load(&j.runs[bad]) : 1,
                   nested);
            return false;
        }
    }
    return true;
}

static void pool_jobs(void) {
    TEST_CASE("pool: every piece once, any thread count, with and without workers, nested") {
        const int workers[] = {0, 1, 3}; // 0: no pool (threads made per call)
        const int threads[] = {1, 2, 3, 4, 9};
        for (size_t w = 0; w < sizeof workers / sizeof *workers; w++) {
            ad_pool *pool = workers[w] ? ad_pool_new(workers[w]) : NULL;
            EXPECT(!workers[w] || pool, "no pool of %d workers", workers[w]);
            bool ok = true;
            for (size_t h = 0; h < sizeof threads / sizeof *threads && ok; h++)
                for (int nest = 0; nest <= 2 && ok; nest += 2)
                    ok = check_runs(pool, workers[w], threads[h], nest, workers[w] ? 200 : 5);
            ad_pool_free(pool);
        }
        EXPECT(ad_pool_new(0) == NULL, "a pool of no workers");
        ad_pool_free(NULL); // nothing to do
    }
    TEST_CASE("pool: jobs after pauses that put the workers to sleep; freed while they spin") {
        ad_pool *pool = ad_pool_new(3);
        EXPECT(pool, "no pool of 3 workers");
        // 2 ms: 20 times the workers' spin (pool.c), so each job finds them asleep
        const struct timespec pause = {0, 2000000};
        bool ok = true;
        for (int r = 0; r < 10 && ok; r++) {
            nanosleep(&pause, NULL);
            ok = check_runs(pool, 3, 4, r % 2 ? 2 : 0, 1);
        }
        ad_pool_free(pool); // at once after a job: the workers are spinning
        for (int r = 0; r < 20 && ok; r++) { // and fresh pools, each freed right after its one job
            pool = ad_pool_new(2);
            ok = check_runs(pool, 2, 3, 0, 1);
            ad_pool_free(pool);
        }
    }
}

// y = sum of (X W) * (X W) + exp of it + sigmoid of X W's first 4000 entries, through ad_matmul
// (the thin kernel) and elementwise ops large enough to run in parallel ([4000, 10]: they split
// from 2^15 entries; the sigmoid's [4000], as libm's ops split from 2^11), on a tape with
// `threads` whose pool spins `spin` us between jobs (ad_tape_pool_spin; 0: sleeps at once): the
// value and the gradient in W into out [1 + 300 * 10].
enum { PT_M = 4000, PT_K = 300, PT_N = 10 }; // 12 M multiply-adds: 3 threads (ad_thin_plan)
static void tape_run(int threads, int spin, const double *X, const double *W, double *out) {
    ad_tape_params p = ad_tape_default_params();
    p.threads = threads;
    ad_tape *t = ad_tape_new(&p);
    EXPECT(ad_tape_pool_spin(t, spin) == AD_POOL_SPIN_US, "a new tape's spin is not the default");
    ad_var w = ad_param(t, ad_mat_shape(PT_K, PT_N), W);
    ad_var z = ad_matmul(t, ad_const_view(t, ad_mat_shape(PT_M, PT_K), X), w, 0, 0);
    ad_var y = ad_sum(t, ad_add(t, ad_mul(t, z, z), ad_exp(t, ad_mul(t, z, z))));
    ad_var head = ad_slice(t, ad_reshape(t, z, ad_vec_shape(PT_M * PT_N)), 0, 4000);
    y = ad_add(t, y, ad_sum(t, ad_sigmoid(t, head)));
    ad_var g;
    ad_grad(t, y, 1, &w, &g, 0);
    out[0] = ad_value(t, y)[0];
    memcpy(out + 1, ad_value(t, g), sizeof(double) * PT_K * PT_N);
    EXPECT(ad_tape_status(t) == AD_OK, "%d threads: %s", threads, ad_tape_error(t));
    ad_tape_free(t);
}

static void pool_tape(void) {
    TEST_CASE("pool: a tape's products and elementwise ops give the same bits on 1, 2, 3 threads, "
              "spinning or not") {
        ad_rng g;
        ad_rng_seed(&g, 71);
        double *X = malloc(sizeof(double) * PT_M * PT_K), W[PT_K * PT_N];
        for (int i = 0; i < PT_M * PT_K; i++) X[i] = (ad_rng_uniform(&g) - 0.5) * 0.1;
        for (int i = 0; i < PT_K * PT_N; i++) W[i] = ad_rng_uniform(&g) - 0.5;
        static double out[5][1 + PT_K * PT_N];
        for (int th = 1; th <= 3; th++) tape_run(th, AD_POOL_SPIN_US, X, W, out[th - 1]);
        for (int th = 2; th <= 3; th++) tape_run(th, 0, X, W, out[th + 1]); // workers that sleep
        for (int k = 1; k < 5; k++)
            EXPECT(!memcmp(out[0], out[k], sizeof out[0]), "%d threads%s differ from 1", k < 3 ? k + 1 : k - 1,
                   k < 3 ? "" : " sleeping between jobs");
        free(X);
    }
}

void test_ad_pool(void) {
    pool_jobs();
    pool_tape();
}
