// The worker pool (pool.h): threads that wait between jobs, so a parallel product or loop costs
// a wake-up instead of a pthread_create and a join. One job at a time: the caller posts it (a new
// generation), runs it itself, closes it, and waits for the workers that joined it.
//
// Waiting spins first, then sleeps. A worker done with a job watches for the next one for
// spin_us (AD_POOL_SPIN_US unless set) before it sleeps on the condition variable, and the
// caller watches for its workers to finish as long before it sleeps on its own. A sweep posts
// a job every few tens of microseconds (a linear model's products and its [5000, 10]
// elementwise passes), and a sleeping thread took 8-30 us to wake on a shared VM, against about
// 1 us for a spinning one. Spinning a bounded time after each job is what OpenMP runtimes do
// by default; a pool that sees no job for spin_us costs no CPU. The generation, the count of
// running workers, quit and spin_us are atomics, read without the mutex while spinning;
// everything else is read and written under the mutex.
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

struct ad_pool {
    pthread_mutex_t mu;
    pthread_cond_t go;   // a job is posted, or quit
    pthread_cond_t done; // the last worker of a job is done
    int n_workers;       // started
    pthread_t tid[AD_POOL_MAX_WORKERS];
    // the job: posted as generation gen, open to `want` more workers until the caller closes it
    _Atomic uint64_t gen;
    ad_pool_fn fn;
    void *arg;
    int want;
    atomic_int running; // workers that joined and have not returned
    atomic_bool quit;
    atomic_int spin_us;
    bool open, busy;
};

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return 1e6 * (double)ts.tv_sec + 1e-3 * (double)ts.tv_nsec;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

// Until the generation is no longer `seen` or quit is set (want_change), or the running count is
// 0 (!want_change), for at most spin_us: called without the mutex.
static void spin_while(ad_pool *p, bool want_change, uint64_t seen) {
    double spin = atomic_load_explicit(&p->spin_us, memory_order_relaxed);
    if (spin <= 0) return;
    double t0 = now_us();
    for (int k = 1;; k++) {
        bool done = want_change ? atomic_load(&p->gen) != seen || atomic_load(&p->quit)
                                : atomic_load(&p->running) == 0;
        if (done) return;
        cpu_relax();
        if (k % 64 == 0 && now_us() - t0 >= spin) return;
    }
}

static void *worker(void *a) {
    ad_pool *p = a;
    pthread_mutex_lock(&p->mu);
    uint64_t seen = p->gen; // jobs posted before this thread started are not its
    for (;;) {
        if (!p->quit && p->gen == seen) { // first watch for the next job, then sleep
            pthread_mutex_unlock(&p->mu);
            spin_while(p, true, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (!p->quit && p->gen == seen) pthread_cond_wait(&p->go, &p->mu);
        if (p->quit) break;
        seen = p->gen;
        if (!p->open || p->want == 0) continue; // closed, or enough workers: wait for the next
        p->want--, p->running++;
        ad_pool_fn fn = p->fn;
        void *arg = p->arg;
        pthread_mutex_unlock(&p->mu);
        fn(arg);
        pthread_mutex_lock(&p->mu);
        if (--p->running == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

ad_pool *ad_pool_new(int workers) {
    if (workers > AD_POOL_MAX_WORKERS) workers = AD_POOL_MAX_WORKERS;
    if (workers < 1) return NULL;
    ad_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    atomic_init(&p->gen, 0), atomic_init(&p->running, 0), atomic_init(&p->quit, false);
    atomic_init(&p->spin_us, AD_POOL_SPIN_US);
    if (pthread_mutex_init(&p->mu, NULL)) goto no_mutex;
    if (pthread_cond_init(&p->go, NULL)) goto no_go;
    if (pthread_cond_init(&p->done, NULL)) goto no_done;
    for (int w = 0; w < workers; w++)
        if (pthread_create(&p->tid[p->n_workers], NULL, worker, p) == 0) p->n_workers++;
    if (p->n_workers > 0) return p;
    pthread_cond_destroy(&p->done);
no_done:
    pthread_cond_destroy(&p->go);
no_go:
    pthread_mutex_destroy(&p->mu);
no_mutex:
    free(p);
    return NULL;
}

void ad_pool_free(ad_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->quit = true;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    for (int w = 0; w < p->n_workers; w++) pthread_join(p->tid[w], NULL);
    pthread_cond_destroy(&p->done);
    pthread_cond_destroy(&p->go);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

void ad_pool_set_spin(ad_pool *p, int spin_us) {
    if (p) atomic_store(&p->spin_us, spin_us < 0 ? 0 : spin_us);
}

// Without a pool: threads for this call, each running fn once; one that cannot be created is
// left out (fn's pieces go to the others).
enum { RUN_MAX_THREADS = AD_POOL_MAX_WORKERS + 1 };
typedef struct {
    ad_pool_fn fn;
    void *arg;
} fresh_job;
static void *run_once(void *a) {
    const fresh_job *j = a;
    j->fn(j->arg);
    return NULL;
}
static void run_fresh(int threads, ad_pool_fn fn, void *arg) {
    pthread_t tid[RUN_MAX_THREADS];
    bool started[RUN_MAX_THREADS] = {false};
    fresh_job j = {fn, arg};
    for (int w = 1; w < threads; w++) started[w] = pthread_create(&tid[w], NULL, run_once, &j) == 0;
    fn(arg);
    for (int w = 1; w < threads; w++)
        if (started[w]) pthread_join(tid[w], NULL);
}

void ad_pool_run(ad_pool *p, int threads, ad_pool_fn fn, void *arg) {
    if (threads > RUN_MAX_THREADS) threads = RUN_MAX_THREADS;
    if (threads <= 1) {
        fn(arg);
        return;
    }
    if (!p) {
        run_fresh(threads, fn, arg);
        return;
    }
    pthread_mutex_lock(&p->mu);
    if (p->busy) { // called from inside a job: this thread alone
        pthread_mutex_unlock(&p->mu);
        fn(arg);
        return;
    }
    p->busy = p->open = true;
    p->fn = fn, p->arg = arg;
    p->want = threads - 1 < p->n_workers ? threads - 1 : p->n_workers;
    p->gen++;
    pthread_cond_broadcast(&p->go);
    pthread_mutex_unlock(&p->mu);
    fn(arg);
    pthread_mutex_lock(&p->mu);
    p->open = false; // no piece is left: a worker not yet awake has nothing to join
    if (p->running > 0) { // first watch for the workers to finish, then sleep
        pthread_mutex_unlock(&p->mu);
        spin_while(p, false, 0);
        pthread_mutex_lock(&p->mu);
    }
    while (p->running > 0) pthread_cond_wait(&p->done, &p->mu);
    p->busy = false;
    pthread_mutex_unlock(&p->mu);
}
