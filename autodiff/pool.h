// A small pool of worker threads (pool.c), owned by a tape (ad_tape_pool) and joined in its
// free: the thin-product kernel (thin.c) and the image and elementwise loops (imk_parallel) hand
// it their work instead of creating and joining threads on every call (~30 us each here, 800+
// per UL iteration of linear hyper-cleaning). Internal to the library.
//
// The work is a function that takes pieces from a shared counter until none are left (thin.c's
// run_chunks, imk_run): any number of threads may run it, each piece by one of them, so which
// threads take part changes no bit of the result, and the caller's own call leaves no piece
// untaken. So a worker the host is slow to wake is not waited for: once the caller's call
// returns, the job is closed to workers that have not joined it, and only those that have are
// waited for.
//
// Between jobs the threads spin for a while before they sleep (pool.c says why): a sweep's jobs
// come tens of microseconds apart, and waking a sleeping thread took 8-30 us on a shared VM.
#ifndef HYPERTAPE_AD_POOL_H
#define HYPERTAPE_AD_POOL_H

typedef struct ad_pool ad_pool;
typedef void (*ad_pool_fn)(void *arg);

// A pool with up to `workers` threads (at most AD_POOL_MAX_WORKERS; those that cannot be started
// are left out), or NULL when there is no memory for it or no thread can be started.
enum { AD_POOL_MAX_WORKERS = 63 };
ad_pool *ad_pool_new(int workers);
// How long a worker watches for the next job, and the caller for its workers to finish, before
// sleeping: AD_POOL_SPIN_US unless set (0: sleep at once; negative counts as 0). Any time
// between jobs.
enum { AD_POOL_SPIN_US = 100 };
void ad_pool_set_spin(ad_pool *p, int spin_us);
// Stops and joins the workers (they are idle: ad_pool_run returns only when its job is done).
void ad_pool_free(ad_pool *p);
// fn(arg) on the calling thread and up to threads - 1 workers, returning once every call that
// started has returned (fn as above). With p NULL the workers are threads created for this call
// and joined; one that cannot be created is left out. A call made while the pool runs a job
// (from inside fn) runs fn on the calling thread alone. Not for two threads at once on one pool
// (a tape is used by one thread at a time).
void ad_pool_run(ad_pool *p, int threads, ad_pool_fn fn, void *arg);

#endif
