// The tape: node storage, the value arena with mark / rewind, the first-error record, leaves,
// and lazy values (forced on first use).
#include "internal.h"
#include "smallk.h"
#include "thin.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double ad_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

ad_shape ad_scalar_shape(void) { return (ad_shape){0, 1, 1}; }
ad_shape ad_vec_shape(int n) { return (ad_shape){1, 1, n}; }
ad_shape ad_mat_shape(int rows, int cols) { return (ad_shape){2, rows, cols}; }


const char *ad_shape_str(ad_shape s, char buf[32]) {
    if (s.rank == 0) snprintf(buf, 32, "[]");
    else if (s.rank == 1) snprintf(buf, 32, "[%d]", s.cols);
    else snprintf(buf, 32, "[%d, %d]", s.rows, s.cols);
    return buf;
}

bool ad_broadcast_shape(ad_shape a, ad_shape b, ad_shape *out) {
    if ((a.rows != b.rows && a.rows != 1 && b.rows != 1) ||
        (a.cols != b.cols && a.cols != 1 && b.cols != 1))
        return false;
    int rows = a.rows > b.rows ? a.rows : b.rows, cols = a.cols > b.cols ? a.cols : b.cols;
    int rank = a.rank > b.rank ? a.rank : b.rank;
    if (rank < 2 && rows > 1) rank = 2;
    if (rank == 0 && cols > 1) rank = 1;
    *out = (ad_shape){rank, rows, cols};
    return true;
}

// ---- errors ----

static void fail_v(ad_tape *t, ad_status s, const char *fmt, va_list ap) {
    if (t->status != AD_OK) return;
    t->status = s;
    vsnprintf(t->err, sizeof t->err, fmt, ap);
}

void ad_fail(ad_tape *t, ad_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_v(t, s, fmt, ap);
    va_end(ap);
}

void ad_fail_in_rule(ad_tape *t, int rule) {
    static const char tag[] = "reverse of ";
    if (!rule || t->status == AD_OK || !strncmp(t->err, tag, sizeof tag - 1)) return;
    char msg[sizeof t->err];
    int n = snprintf(msg, sizeof msg, "%s%s: ", tag, ad_ops[rule]->name);
    if (n < 0 || (size_t)n >= sizeof msg) return;
    size_t len = strnlen(t->err, sizeof msg - (size_t)n - 1); // the inner message, cut to fit
    memcpy(msg + n, t->err, len);
    msg[(size_t)n + len] = 0;
    memcpy(t->err, msg, sizeof msg);
}

void ad_tape_fail(ad_tape *t, ad_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fail_v(t, s == AD_OK ? AD_EARG : s, fmt, ap);
    va_end(ap);
}

ad_status ad_tape_status(const ad_tape *t) { return t->status; }
const char *ad_tape_error(const ad_tape *t) { return t->err; }
void ad_tape_clear_error(ad_tape *t) {
    t->status = AD_OK;
    t->err[0] = 0;
}

// Why handle v is not live: stale (its index was on the tape in an earlier epoch, or still is,
// with a node of another epoch), or not a handle of this tape at all.
static void handle_fail(ad_tape *t, const char *op, int pos, ad_var v) {
    uint32_t i = (uint32_t)v, e = ad_epoch_of(v);
    if (v == AD_NONE)
        ad_fail(t, AD_EARG, "%s: operand %d is AD_NONE (the result of a failed op)", op, pos);
    else if (e == 0 || e > 0x7fffffffu || i == 0)
        ad_fail(t, AD_EARG, "%s: operand %d is not a handle (value %lld)", op, pos, (long long)v);
    else if (i < (uint32_t)t->n_nodes || e != t->epoch)
        ad_fail(t, AD_EARG,
                "%s: operand %d is a stale handle (node %u of epoch %u; a rewind or reset has "
                "dropped it since, and the tape is at epoch %u)",
                op, pos, i, e, t->epoch);
    else
        ad_fail(t, AD_EARG, "%s: operand %d is not a node of this tape (node %u of %d)", op, pos,
                i, (int)t->n_nodes);
}

bool ad_check_args_slow(ad_tape *t, const char *op, int n, const ad_var *v) {
    if (t->status != AD_OK) return false;
    for (int i = 0; i < n; i++) {
        if (!ad_live(t, v[i])) {
            handle_fail(t, op, i + 1, v[i]);
            return false;
        }
    }
    return true;
}

// ---- memory ----

static bool account(ad_tape *t, size_t add, const char *what) {
    if (t->par.max_bytes && t->bytes + add > t->par.max_bytes) {
        ad_fail(t, AD_ENOMEM, "%s: tape memory cap of %zu bytes reached (%zu in use, %zu more needed)",
                what, t->par.max_bytes, t->bytes, add);
        return false;
    }
    t->bytes += add;
    if (t->bytes > t->peak_bytes) t->peak_bytes = t->bytes;
    return true;
}

void *ad_scratch(ad_tape *t, size_t bytes) {
    if (bytes <= t->scratch_bytes) return t->scratch;
    size_t nb = bytes + bytes / 2;
    if (!account(t, nb - t->scratch_bytes, "reverse sweep scratch")) return NULL;
    void *p = realloc(t->scratch, nb);
    if (!p) {
        t->bytes -= nb - t->scratch_bytes;
        ad_fail(t, AD_ENOMEM, "reverse sweep scratch: out of memory (%zu bytes)", nb);
        return NULL;
    }
    t->scratch = p;
    t->scratch_bytes = nb;
    return p;
}

// The node array, 64-byte aligned so that each node is one cache line.
bool ad_grow_nodes(ad_tape *t) {
    if (t->cap_nodes > INT32_MAX / 2) {
        ad_fail(t, AD_ENOMEM, "tape nodes: more than %d nodes", (int)t->cap_nodes);
        return false;
    }
    int32_t nc = t->cap_nodes * 2;
    if (!account(t, (size_t)(nc - t->cap_nodes) * sizeof(ad_node), "tape nodes")) return false;
    ad_node *p = aligned_alloc(64, (size_t)nc * sizeof(ad_node));
    if (!p) {
        t->bytes -= (size_t)(nc - t->cap_nodes) * sizeof(ad_node);
        ad_fail(t, AD_ENOMEM, "tape nodes: out of memory growing to %d nodes", (int)nc);
        return false;
    }
    if (t->n_nodes) memcpy(p, t->nodes, (size_t)t->n_nodes * sizeof(ad_node));
    free(t->nodes);
    t->nodes = p;
    t->cap_nodes = nc;
    return true;
}

// The slow path of ad_arena_alloc: the next free chunk, or a new one.
double *ad_arena_alloc_slow(ad_tape *t, size_t n, const char *what) {
    if (n >= 8) n = (n + 7) & ~(size_t)7;
    for (;;) {
        if (t->n_chunks) {
            chunk *c = &t->chunks[t->cur_chunk];
            size_t off = t->cur_off;
            if (n >= 8) off = (off + 7) & ~(size_t)7;
            if (off + n <= c->cap) {
                t->cur_off = off + n;
                t->arena_used += n;
                return c->mem + off;
            }
            if (t->cur_chunk + 1 < t->n_chunks && t->chunks[t->cur_chunk + 1].cap >= n) {
                t->cur_chunk++;
                t->cur_off = 0;
                continue;
            }
        }
        // drop the (free) chunks after the current one that are too small, then add one
        size_t keep = t->n_chunks ? t->cur_chunk + 1 : 0;
        for (size_t i = keep; i < t->n_chunks; i++) {
            t->bytes -= t->chunks[i].cap * sizeof(double);
            free(t->chunks[i].mem);
        }
        t->n_chunks = keep;
        size_t cap = t->par.chunk_bytes / sizeof(double);
        if (cap < n) cap = n;
        if (!account(t, cap * sizeof(double), what)) return NULL;
        chunk *nc = realloc(t->chunks, (t->n_chunks + 1) * sizeof(chunk));
        double *mem = nc ? aligned_alloc(64, ((cap * sizeof(double) + 63) / 64) * 64) : NULL;
        if (nc) t->chunks = nc;
        if (!mem) {
            t->bytes -= cap * sizeof(double);
            ad_fail(t, AD_ENOMEM, "%s: out of memory allocating %zu bytes", what,
                    cap * sizeof(double));
            return NULL;
        }
        t->chunks[t->n_chunks] = (chunk){mem, cap};
        t->cur_chunk = t->n_chunks++;
        t->cur_off = 0;
    }
}

const int32_t *ad_copy_idx(ad_tape *t, int n, const int32_t *idx) {
    double *m = ad_arena_alloc(t, ((size_t)n * sizeof(int32_t) + sizeof(double) - 1) / sizeof(double),
                            "index copy");
    if (!m) return NULL;
    memcpy(m, idx, (size_t)n * sizeof(int32_t));
    return (const int32_t *)m;
}

// ---- the tape ----

ad_tape_params ad_tape_default_params(void) {
    return (ad_tape_params){.max_bytes = 0, .check_finite = 0, .chunk_bytes = 1 << 20};
}

ad_tape *ad_tape_new(const ad_tape_params *p) {
    ad_tape *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->par = p ? *p : ad_tape_default_params();
    if (!t->par.chunk_bytes) t->par.chunk_bytes = 1 << 20;
    t->nan_ = NAN;
    t->bytes = sizeof *t;
    t->threads = t->par.threads > 0 ? t->par.threads : ad_thin_default_threads();
    t->pool_spin_us = AD_POOL_SPIN_US;
    // without AVX2 + FMA, cblas: the portable kernel measured 14 ms on [5000, 784] x [784, 10]
    // against OpenBLAS's 5-10 ms
    t->thin_isa = ad_thin_best() != AD_THIN_PORTABLE ? ad_thin_best() : 0;
    // Node 0 and the first nodes come with the tape, under no cap: handles are checked against
    // the array, which must be there.
    enum { FIRST_NODES = 16 };
    t->nodes = aligned_alloc(64, FIRST_NODES * sizeof(ad_node));
    if (!t->nodes) {
        free(t);
        return NULL;
    }
    t->cap_nodes = FIRST_NODES;
    t->bytes += FIRST_NODES * sizeof(ad_node);
    t->peak_bytes = t->bytes;
    ad_tape_reset(t);
    return t;
}

void ad_tape_free(ad_tape *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_chunks; i++) free(t->chunks[i].mem);
    free(t->chunks);
    free(t->nodes);
    free(t->scratch);
    free(t->thin_work);
    ad_pool_free(t->pool);
    ad_kept_pool_free(t);
    free(t);
}

// Node 0 (the NaN every invalid handle reads) is recorded in the new epoch too, so marks taken
// before the reset (all of them end at node 0 or later) are stale after it. What decides which
// nodes are found again (the view cache and its clock, the unit, the memo) is cleared as on a
// new tape: a recording after the reset is the one a new tape makes, node for node, so its sums
// run in the same order and give the same bits (a run resumed on a new tape ends as one that
// went through). Memory, counters and settings (deferral aside) stay.
void ad_tape_reset(ad_tape *t) {
    ad_tape_clear_error(t);
    t->epoch = ad_next_epoch(t->epoch);
    t->cur_chunk = 0;
    t->cur_off = 0;
    t->arena_used = 0;
    t->lazy = t->nograd = 0;
    memset(t->memo, 0, sizeof t->memo);
    memset(t->view_cache, 0, sizeof t->view_cache);
    memset(t->view_data, 0, sizeof t->view_data);
    memset(t->view_used, 0, sizeof t->view_used);
    t->view_clock = 0;
    t->unit = 0;
    t->nodes[0] = (ad_node){.op = OP_ERROR, .flags = NF_VALUE | NF_NOGRAD | NF_VIEW | NF_STABLE, .rows = 1,
                            .cols = 1, .epoch = t->epoch, .val = &t->nan_};
    t->n_nodes = 1;
}

int ad_tape_holds(const ad_tape *t, ad_var v) { return t && ad_live(t, v); }

ad_mark ad_tape_mark(const ad_tape *t) {
    return (ad_mark){.tape = t, .nodes = t->n_nodes, .epoch = t->nodes[t->n_nodes - 1].epoch,
                     .chunk = t->cur_chunk, .offset = t->cur_off, .used = t->arena_used};
}

// m names a point of t's recording now: taken on t, at most the nodes recorded, and its last
// node still the one recorded then (a rewind below it and a new recording would give that node
// a later epoch). Otherwise records an AD_EARG naming op.
bool ad_mark_check(ad_tape *t, ad_mark m, const char *op) {
    const char *why = NULL;
    if (m.tape != t) why = "is not a mark of this tape";
    else if (m.nodes < 1 || m.nodes > t->n_nodes || m.used > t->arena_used)
        why = "is past the end of the recording (a rewind or reset has dropped its point since)";
    else if (t->nodes[m.nodes - 1].epoch != m.epoch)
        why = "is stale (a rewind or reset has dropped its point since)";
    if (!why) return true;
    ad_fail(t, AD_EARG, "%s: the mark (at node %d) %s", op, (int)m.nodes, why);
    return false;
}

void ad_tape_rewind(ad_tape *t, ad_mark m) {
    if (!ad_mark_check(t, m, "rewind")) return;
    if (m.nodes < t->n_nodes) t->epoch = ad_next_epoch(t->epoch); // the dropped nodes' handles
    t->n_nodes = m.nodes;
    t->cur_chunk = m.chunk;
    t->cur_off = m.offset;
    t->arena_used = m.used;
}

int ad_tape_defer(ad_tape *t, int on) {
    int was = t->lazy;
    t->lazy = on != 0;
    return was;
}

int64_t ad_tape_evals(const ad_tape *t) {
    int64_t s = 0;
    for (int i = 0; i < OP_COUNT; i++) s += t->op_evals[i];
    return s;
}

size_t ad_tape_bytes(const ad_tape *t) { return t->bytes; }

size_t ad_tape_used_bytes(const ad_tape *t) {
    return (size_t)t->n_nodes * sizeof(ad_node) + t->arena_used * sizeof(double);
}
size_t ad_tape_peak_bytes(const ad_tape *t) { return t->peak_bytes; }
int32_t ad_tape_nodes(const ad_tape *t) { return t->n_nodes; }
double ad_tape_blas_seconds(const ad_tape *t) { return t->blas_seconds; }

int ad_tape_thin_products(ad_tape *t, int on) {
    int was = t->thin_isa != 0;
    t->thin_isa = on && ad_thin_best() != AD_THIN_PORTABLE ? ad_thin_best() : 0;
    return was;
}

int ad_tape_pool_spin(ad_tape *t, int spin_us) {
    int was = t->pool_spin_us;
    t->pool_spin_us = spin_us < 0 ? 0 : spin_us;
    ad_pool_set_spin(t->pool, t->pool_spin_us);
    return was;
}

const char *ad_tape_product_kernel(const ad_tape *t, char buf[64]) {
    if (!t->thin_isa) snprintf(buf, 64, "cblas");
    else snprintf(buf, 64, "%s kernel, %d thread%s", ad_thin_name((ad_thin_isa)t->thin_isa),
                  t->threads, t->threads == 1 ? "" : "s");
    return buf;
}

static double *thin_workspace(ad_tape *t, size_t n) {
    if (n <= t->thin_work_cap) return t->thin_work;
    size_t cap = (n + n / 2 + 7) & ~(size_t)7, add = (cap - t->thin_work_cap) * sizeof(double);
    if (t->par.max_bytes && t->bytes + add > t->par.max_bytes) return NULL;
    double *p = aligned_alloc(64, cap * sizeof(double));
    if (!p) return NULL;
    free(t->thin_work);
    t->thin_work = p;
    t->bytes += add;
    if (t->bytes > t->peak_bytes) t->peak_bytes = t->bytes;
    t->thin_work_cap = cap;
    return p;
}

// The thin kernel takes C [m, n] = op(A) [m, k] op(B) [k, n] when n is small: it packs op(B)
// and streams A once. Past the plain loop (SMALL_MATMUL) it beats cblas_dgemm at every size
// measured, [64, 64] x [64, 10] (5 vs 8 us) to [5000, 784] x [784, 10] (`hypertape bench
// autodiff`); m >= 32 keeps packing op(B) [k, n] cheap next to the product. Below
// THIN_WORK_PER_THREAD multiply-adds per thread an extra thread costs more than it saves:
// creating and joining one took 25-35 us here (more on a loaded host), 4 M multiply-adds
// ~150 us. (The threads are now the tape's pool's, ad_tape_pool: a wake-up, not a creation;
// the threshold was not measured again.)
enum { THIN_WORK_PER_THREAD = 1 << 22 };
double *ad_thin_plan(ad_tape *t, int ta, int m, int n, int k, int *threads) {
    if (!t->thin_isa || n > AD_THIN_MAX_N || m < 32) return NULL;
    ad_tape_pool(t); // first: threads is 1 if the pool cannot be made
    size_t work_per = (size_t)m * (size_t)n * (size_t)k / THIN_WORK_PER_THREAD;
    *threads = work_per + 1 < (size_t)t->threads ? (int)work_per + 1 : t->threads;
    return thin_workspace(t, ad_thin_work_size(ta, m, n, k));
}
// The small-k kernel (smallk.h) takes C [m, n] = op(A) [m, k] op(B) when C is wide and k <= 16,
// from SMALLK_MIN_WORK multiply-adds on (C of 5000 x 300 at k = 10 is 15 M): there cblas's
// zeroing pass over C and its threads' wake-ups cost more than the arithmetic; below it they do
// not matter. Threads as for the thin kernel.
enum { SMALLK_MIN_WORK = 1 << 22 };
double *ad_smallk_plan(ad_tape *t, int m, int n, int k, int *threads) {
    size_t work = (size_t)m * (size_t)n * (size_t)k;
    if (!t->thin_isa || n <= AD_THIN_MAX_N || k < 1 || k > AD_SMALLK_MAX_K || work < SMALLK_MIN_WORK)
        return NULL;
    ad_tape_pool(t); // first: threads is 1 if the pool cannot be made
    size_t work_per = work / THIN_WORK_PER_THREAD;
    *threads = work_per + 1 < (size_t)t->threads ? (int)work_per + 1 : t->threads;
    return thin_workspace(t, ad_smallk_work_size(n, k));
}
ad_pool *ad_tape_pool(ad_tape *t) {
    if (!t->pool && t->threads > 1) {
        t->pool = ad_pool_new(t->threads - 1);
        ad_pool_set_spin(t->pool, t->pool_spin_us); // (no pool: nothing to do)
        // no memory or no thread for it: the calling thread alone from now on, which is what
        // threads made per call would come to
        if (!t->pool) t->threads = 1;
    }
    return t->pool;
}

int ad_op_count(void) { return OP_COUNT; }
const char *ad_op_name(int op) { return op >= 0 && op < OP_COUNT ? ad_ops[op]->name : "?"; }
int ad_op_find(const char *name) {
    for (int i = 0; name && i < OP_COUNT; i++)
        if (!strcmp(ad_ops[i]->name, name)) return i;
    return -1;
}
int64_t ad_tape_op_evals(const ad_tape *t, int op) {
    return op >= 0 && op < OP_COUNT ? t->op_evals[op] : 0;
}
int64_t ad_tape_op_uses(const ad_tape *t, int op) {
    return op >= 0 && op < OP_COUNT ? t->op_uses[op] : 0;
}

// ---- recording ----

static bool check_finite(ad_tape *t, const ad_node *n) {
    int size = ad_size(n);
    for (int i = 0; i < size; i++) {
        if (!isfinite(n->val[i])) {
            char b[32];
            ad_fail(t, AD_ENAN, "%s: produced %g at entry %d of %s", ad_ops[n->op]->name, n->val[i],
                    i, ad_shape_str(ad_node_shape(n), b));
            ad_fail_in_rule(t, n->rule);
            return false;
        }
    }
    return true;
}

bool ad_eval_failed(ad_tape *t, int32_t v, ad_status st) {
    char b[32];
    const ad_node *n = &t->nodes[v];
    ad_fail(t, st, "%s: failed on %s", ad_ops[n->op]->name, ad_shape_str(ad_node_shape(n), b));
    ad_fail_in_rule(t, n->rule); // a node a reverse rule recorded, maybe computed long after
    return false;
}

// Computes node v from its (computed) inputs.
static inline bool eval_node(ad_tape *t, int32_t v) {
    ad_node *n = &t->nodes[v];
    t->op_evals[n->op]++;
    ad_status st = ad_ops[n->op]->fwd(t, n);
    if (st != AD_OK) return ad_eval_failed(t, v, st);
    n = &t->nodes[v];
    n->flags |= NF_VALUE;
    return !t->par.check_finite || check_finite(t, n);
}

static int cmp_index(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

// Lazy values: collect v's uncomputed ancestors (a DFS marked with the node flags), then compute
// them in recording order, which is a topological order. Usually they lie close together (a
// deferred step read by the next op): then one pass over their index range finds them in order;
// scattered ones are sorted instead. Small sets stay on the stack.
bool ad_force_slow(ad_tape *t, ad_var h) {
    int32_t v = ad_index(h);
    if (t->nodes[v].flags & NF_VALUE) return true;
    if (t->status != AD_OK) return false;
    enum { MARK = 0x80, SMALL = 64 };
    int32_t small_list[SMALL], small_stack[SMALL];
    size_t cap = SMALL, n = 0, top = 0;
    int32_t *list = small_list, *stack = small_stack, lo = v;
    bool ok = true;
    stack[top++] = v;
    t->nodes[v].flags |= MARK;
    while (ok && top) {
        int32_t u = stack[--top];
        list[n++] = u;
        if (u < lo) lo = u;
        int32_t in[2] = {t->nodes[u].a, t->nodes[u].b};
        for (int k = 0; k < 2 && ok; k++) {
            ad_node *c = &t->nodes[in[k]];
            if (!in[k] || (c->flags & (NF_VALUE | MARK))) continue;
            c->flags |= MARK;
            if (n + top + 1 >= cap) { // grow both onto the heap
                size_t nc = cap * 4;
                int32_t *l2 = malloc(nc * sizeof *l2), *s2 = malloc(nc * sizeof *s2);
                if (!l2 || !s2) {
                    free(l2), free(s2);
                    ok = false;
                    break;
                }
                memcpy(l2, list, n * sizeof *l2);
                memcpy(s2, stack, top * sizeof *s2);
                if (list != small_list) free(list), free(stack);
                list = l2, stack = s2, cap = nc;
            }
            stack[top++] = in[k];
        }
    }
    if (!ok) {
        for (int32_t i = 1; i < t->n_nodes; i++) t->nodes[i].flags &= (uint8_t)~MARK;
        ad_fail(t, AD_ENOMEM, "forcing a lazy value: out of memory");
    } else if ((size_t)(v - lo) < 4 * n + 64) {
        for (int32_t i = lo; i <= v; i++) { // after a failure only the marks are cleared
            if (!(t->nodes[i].flags & MARK)) continue;
            t->nodes[i].flags &= (uint8_t)~MARK;
            if (ok) ok = eval_node(t, i);
        }
    } else {
        qsort(list, n, sizeof *list, cmp_index);
        for (size_t i = 0; i < n; i++) t->nodes[list[i]].flags &= (uint8_t)~MARK;
        for (size_t i = 0; i < n && ok; i++) ok = eval_node(t, list[i]);
    }
    if (list != small_list) free(list), free(stack);
    return ok;
}

bool ad_eval(ad_tape *t, int32_t v) {
    const ad_node *n = &t->nodes[v];
    int32_t a = n->a, b = n->b;
    if (!(t->nodes[a].flags & NF_VALUE) && !ad_force(t, a)) return false;
    if (!(t->nodes[b].flags & NF_VALUE) && !ad_force(t, b)) return false;
    return eval_node(t, v);
}

// ---- leaves ----

static bool dims_valid(ad_shape s) {
    return (s.rank == 0 && s.rows == 1 && s.cols == 1) ||
           (s.rank == 1 && s.rows == 1 && s.cols >= 0) ||
           (s.rank == 2 && s.rows >= 0 && s.cols >= 0);
}
bool ad_shape_valid(ad_shape s) {
    return dims_valid(s) && (size_t)s.rows * (size_t)s.cols <= (size_t)INT32_MAX;
}

static bool check_shape(ad_tape *t, const char *op, ad_shape s) {
    if (t->status != AD_OK) return false;
    if (ad_shape_valid(s)) return true;
    if (dims_valid(s))
        ad_fail(t, AD_ESHAPE, "%s: shape %d x %d is too large", op, s.rows, s.cols);
    else
        ad_fail(t, AD_ESHAPE, "%s: invalid shape (rank %d, %d x %d)", op, s.rank, s.rows, s.cols);
    return false;
}

static ad_var leaf(ad_tape *t, const char *what, ad_shape s, const double *data, bool grad,
                   bool view) {
    if (!check_shape(t, what, s)) return AD_NONE;
    if (!data && ad_shape_size(s) > 0) {
        ad_fail(t, AD_EARG, "%s: NULL data", what);
        return AD_NONE;
    }
    ad_node *p = ad_push(t, OP_LEAF, s, 0, 0);
    if (!p) return AD_NONE;
    p->flags = NF_VALUE | NF_STABLE | (grad ? 0 : NF_NOGRAD) | (view ? NF_VIEW : 0);
    if (view) p->val = (double *)data; // never written: NF_VIEW nodes are read-only
    ad_var v = ad_commit(t, p);
    if (v && !view && ad_shape_size(s) > 0)
        memcpy(ad_val(t, v), data, (size_t)ad_shape_size(s) * sizeof(double));
    if (v && t->par.check_finite && !check_finite(t, ad_node_at(t, v))) return AD_NONE;
    return v;
}

ad_var ad_param(ad_tape *t, ad_shape s, const double *init) { return leaf(t, "param", s, init, true, false); }
ad_var ad_const(ad_tape *t, ad_shape s, const double *d) { return leaf(t, "const", s, d, false, false); }

// A view of the same memory with the same shape is the same constant: the cached node is returned.
ad_var ad_const_view(ad_tape *t, ad_shape s, const double *d) {
    enum { NV = sizeof t->view_cache / sizeof t->view_cache[0] };
    // The first entry (in order) naming a view of d with shape s, as a search of every entry
    // would find it: an entry whose view_data is not d names no view of d.
    for (int i = 0; i < NV; i++) {
        int32_t v = t->view_cache[i];
        if (t->view_data[i] != d || t->status != AD_OK || v <= 0 || v >= t->n_nodes) continue;
        const ad_node *n = &t->nodes[v];
        if (n->op == OP_LEAF && (n->flags & NF_VIEW) && n->val == d &&
            ad_shape_eq(ad_node_shape(n), s)) {
            t->view_used[i] = ++t->view_clock;
            return ad_ref(t, v);
        }
    }
    int old = 0;
    int64_t oldest = INT64_MAX;
    for (int i = 0; i < NV; i++) {
        int32_t v = t->view_cache[i];
        int64_t used = -1; // an entry whose node was rewound away is refilled first
        if (t->status == AD_OK && v > 0 && v < t->n_nodes) {
            const ad_node *n = &t->nodes[v];
            if (n->op == OP_LEAF && (n->flags & NF_VIEW)) used = t->view_used[i];
        }
        if (used < oldest) oldest = used, old = i;
    }
    ad_var v = leaf(t, "const_view", s, d, false, true);
    if (v) {
        int32_t i = ad_index(v);
        for (int k = 0; k < NV; k++) // entries left naming this index name this view now
            if (t->view_cache[k] == i) t->view_data[k] = d;
        t->view_cache[old] = i, t->view_data[old] = d, t->view_used[old] = ++t->view_clock;
    }
    return v;
}

ad_var ad_fill(ad_tape *t, ad_shape s, double v) {
    if (!check_shape(t, "fill", s)) return AD_NONE;
    ad_node *p = ad_push(t, OP_LEAF, s, 0, 0);
    if (!p) return AD_NONE;
    p->flags = NF_VALUE | NF_NOGRAD | NF_STABLE;
    ad_var r = ad_commit(t, p);
    if (r) {
        double *x = ad_val(t, r);
        for (int i = 0; i < ad_shape_size(s); i++) x[i] = v;
    }
    return r;
}

ad_var ad_scalar(ad_tape *t, double v) { return ad_fill(t, ad_scalar_shape(), v); }

// ---- shared subexpressions ----

// The set of two entries a node may be remembered in, by a hash of its op and inputs.
static struct ad_memo *memo_set(ad_tape *t, const ad_node *n) {
    uint32_t h = (uint32_t)n->a * 0x9E3779B1u ^ (uint32_t)n->b * 0x85EBCA77u ^ (uint32_t)n->op * 0xC2B2AE3Du;
    return &t->memo[2 * (h >> 28)]; // 16 sets
}

// Same op, shape, inputs and parameters (bit for bit), and the same gradient flag.
static bool same_node(const ad_node *x, const ad_node *y) {
    return x->op == y->op && x->rank == y->rank && x->rows == y->rows && x->cols == y->cols &&
           x->a == y->a && x->b == y->b && x->i0 == y->i0 && x->i1 == y->i1 &&
           !memcmp(&x->p0, &y->p0, sizeof x->p0) && !memcmp(&x->p1, &y->p1, sizeof x->p1) &&
           x->idx == y->idx && !((x->flags ^ y->flags) & NF_NOGRAD);
}

int32_t ad_memo(ad_tape *t, int32_t v) {
    ad_node *n = &t->nodes[v];
    struct ad_memo *set = memo_set(t, n);
    for (int k = 0; k < 2; k++) {
        int32_t w = set[k].v;
        // w is a hint: it must still be on the tape and equal (a node recorded at w since a
        // rewind reads the inputs those handles name now, so equal fields mean the same value)
        if (w > 0 && w < v && same_node(&t->nodes[w], n)) {
            t->n_nodes = v; // drop the new node
            set[k].hit = 1;
            t->nodes[w].flags |= NF_STABLE; // recorded twice: what is built on it may be too
            if (!t->lazy && !(t->nodes[w].flags & NF_VALUE) && !ad_force(t, w)) return AD_NONE;
            return w;
        }
    }
    // Two ways, so two nodes recorded at every step (B x, and the 1/2 that scales a gradient's
    // seed) keep their places even when they hash alike; an entry found again survives one
    // newcomer (which takes the other way, or passes when both were found).
    int k = set[0].hit ? 1 : set[1].hit ? 0 : set[0].v > set[1].v; // the older one, if neither
    if (set[k].hit) {
        set[0].hit = set[1].hit = 0;
        return v;
    }
    set[k] = (struct ad_memo){.v = v};
    return v;
}

ad_var ad_unit(ad_tape *t) {
    int32_t u = t->unit;
    if (t->status == AD_OK && u > 0 && u < t->n_nodes) {
        const ad_node *n = &t->nodes[u];
        if (n->op == OP_LEAF && n->rank == 0 && (n->flags & NF_NOGRAD) && !(n->flags & NF_VIEW) &&
            n->val[0] == 1.0)
            return ad_ref(t, u);
    }
    ad_var v = ad_fill(t, ad_scalar_shape(), 1.0);
    if (v) t->unit = ad_index(v);
    return v;
}

ad_shape ad_shape_of(const ad_tape *t, ad_var v) {
    if (!ad_live(t, v)) return ad_scalar_shape();
    return ad_node_shape(ad_node_at(t, v));
}

const double *ad_value(ad_tape *t, ad_var v) {
    if (!ad_live(t, v)) return &t->nan_;
    ad_node *n = ad_node_at(t, v);
    if (!ad_force(t, v) && !(n->flags & (NF_VALUE | NF_VIEW)))
        for (int i = 0; i < ad_size(n); i++) n->val[i] = NAN;
    return n->val;
}

double ad_item(ad_tape *t, ad_var v) { return ad_value(t, v)[0]; }

// Node 0 and leaves carry their values from the start; they have no reverse rule.
static ad_status fwd_none(ad_tape *t, ad_node *n) {
    (void)t, (void)n;
    return AD_OK;
}
AD_DEF(error, 0, fwd_none, NULL);
AD_DEF(leaf, 0, fwd_none, NULL);
