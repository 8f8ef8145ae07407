// Task sets: a problem that is a family of tasks (meta-learning, few-shot classification). The UL
// variable x (and a meta-learned LL start z) is shared; each task has its own F, f and LL variable
// y; each UL step works on a batch of tasks drawn from (seed, t), and its direction is the mean of
// the tasks' directions, in task order.
//
// A blo_problem with tasks != NULL is one task of its family (its user points to that task, the
// reference task: what checks, records of the final iterate and single-task programs see), and
// tasks says how to draw the others: a task is task_size bytes that draw fills, and the problem
// with user pointing at them is that task's problem. The solver runs any method on it unchanged:
// it keeps one state of the method per task of a batch (each on its own tape), calls the method's
// direction for each task on `threads` threads, and averages g_x, g_z, F, f and the LL residual in
// task order, so that the bits do not depend on the thread count.
#ifndef HYPERTAPE_BLO_TASKS_H
#define HYPERTAPE_BLO_TASKS_H

#include "blo.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct blo_task_set {
    size_t task_size; // bytes of one task (the problem's user points at one)
    // Draws one task into task [task_size bytes] from r; user is the set's. Returns BLO_OK, or an
    // error with a message.
    blo_status (*draw)(void *task, ad_rng *r, const void *user, blo_error *err);
    const void *user;
    int batch;     // tasks per UL step (>= 1)
    int threads;   // threads a batch runs on (>= 1); the results do not depend on it
    uint64_t seed; // the batch at UL step t is drawn from (seed, t)
} blo_task_set;

// The settings rows every task-set model has (in its params struct T: int batch, threads, seed,
// test_tasks, test_seed), written once.
#define BLO_ROWS_TASK_SET(T)                                                                       \
    BLO_ROW_INT(T, batch, "batch", 1, 100000, "B", "tasks per UL step"),                           \
    BLO_ROW_INT(T, threads, "threads", 1, 64, "n", "threads a batch runs on (the bits do not change)"), \
    BLO_ROW_INT(T, seed, "seed", 0, INT32_MAX, "S", "the training tasks' stream: step t's batch is (S, t)"), \
    BLO_ROW_INT(T, test_tasks, "test_tasks", 1, 1000000, "n", "held-out tasks of the metrics"),   \
    BLO_ROW_INT(T, test_seed, "test_seed", 0, INT32_MAX, "S", "the held-out tasks' stream")

// The generator of stream (seed, t): the batch of UL step t, or a program's own streams (held-out
// tasks). Distinct (seed, t) give unrelated streams.
void blo_tasks_rng(ad_rng *r, uint64_t seed, uint64_t t);

// Draws n tasks in order from (seed, t) into tasks [n task_size bytes] (the batch of UL step t
// when seed is the set's and n its batch).
blo_status blo_tasks_draw(const blo_task_set *ts, uint64_t seed, uint64_t t, int n, void *tasks,
                          blo_error *err);

// BLO_OK if the set's fields are usable (a draw, a size, batch and threads >= 1).
blo_status blo_tasks_check(const blo_task_set *ts, blo_error *err);

#ifdef __cplusplus
}
#endif

#endif
