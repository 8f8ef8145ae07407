// Internals of the tape shared by the autodiff sources: the node layout, the op table and the
// helpers ops use to record themselves. Not installed; users include ad.h (and ad_extra.h).
#ifndef HYPERTAPE_AD_INTERNAL_H
#define HYPERTAPE_AD_INTERNAL_H

#include "ad_extra.h" // and ad.h

#include <stdbool.h>

// Every op, once: the enum, the per-op definitions (ad_def_NAME, next to the op's code) and the
// table are generated from this list.
#define AD_OP_LIST(X) \
    /* the NaN node and leaves */ \
    X(ERROR, error) X(LEAF, leaf) \
    /* elementwise binary (broadcasting) */ \
    X(ADD, add) X(SUB, sub) X(AXPY, axpy) X(MUL, mul) X(DIV, div) X(MIN, min) X(MAX, max) \
    X(RELU_MASK, relu_mask) /* relu's reverse rule: g where x > 0 */ \
    /* elementwise unary */ \
    X(NEG, neg) X(SCALE, scale) X(SHIFT, shift) X(POW, pow) X(ABS, abs) X(SQRT, sqrt) X(SQUARE, square) X(EXP, exp) X(LOG, log) X(SIN, sin) \
    X(COS, cos) X(TANH, tanh) X(SIGMOID, sigmoid) X(SOFTPLUS, softplus) X(RELU, relu) X(CLAMP, clamp) \
    /* piecewise constant (zero derivative) */ \
    X(SIGN, sign) X(STEP, step) X(INBOX, inbox) X(CMP, cmp) X(ARGMAX1H, argmax1h) X(DETACH, detach) X(ONEHOT, onehot) \
    /* reductions and broadcasting */ \
    X(SUM_TO, sum_to) X(EXPAND, expand) X(MAX_ALL, max_all) \
    /* linear algebra */ \
    X(DOT, dot) X(MATVEC, matvec) X(MATMUL, matmul) X(OUTER, outer) X(SYMV, symv) X(QUADFORM, quadform) \
    X(MATMUL_CODED, matmul_coded) X(SOFTMAX_CODED, softmax_coded) X(XENT_CODED, xent_coded) \
    /* shape */ \
    X(RESHAPE, reshape) X(SLICE, slice) X(PAD, pad) X(CONCAT, concat) X(TAKE_ROWS, take_rows) X(PUT_ROWS, put_rows) \
    /* losses and norms */ \
    X(LOGSUMEXP, logsumexp) X(LOG_SOFTMAX, log_softmax) X(SOFTMAX, softmax) X(XENT, xent) X(SQNORM, sqnorm) X(NORMP, normp) X(POWZ, powz) \
    /* images (ops_image.c) */ \
    X(CONV2D, conv2d) X(CONV2D_WGRAD, conv2d_wgrad) X(CONV_FLIP, conv_flip) X(POOL_GATHER, pool_gather) X(POOL_SCATTER, pool_scatter) \
    X(CHAN_NORM, chan_norm) X(CHAN_RSTD, chan_rstd) X(CHAN_PROJ, chan_proj) X(CHAN_AFFINE, chan_affine) X(CHAN_SUMS, chan_sums) X(CHAN_NORM_ADJ, chan_norm_adj) \
    /* a block's batch norm, ReLU and max-pool (ops_image_block.c) */ \
    X(BN_POOL, bn_pool) X(BN_POOL_DP, bn_pool_dp) X(BN_POOL_DY, bn_pool_dy) \
    X(CONV_BN_POOL, conv_bn_pool) X(CONV_BN_POOL_DWP, conv_bn_pool_dwp) \
    /* linear maps the caller computes (ops_linear.c) */ \
    X(LINEAR, linear) \

#define AD_OP_ENUM(E, name) OP_##E,
typedef enum { AD_OP_LIST(AD_OP_ENUM) OP_COUNT } ad_op;
#undef AD_OP_ENUM

enum {
    NF_VALUE = 1,    // the value has been computed
    NF_NOGRAD = 2,   // no gradient flows into or through this node (constants, detached)
    NF_VIEW = 4,     // val points at memory the tape does not own (const view, reshape alias)
    NF_STABLE = 8,   // a leaf, or a node the memo found again: ops on it are looked up (ad_memo)
};

// One node: 64 bytes, one cache line (the node array is 64-byte aligned).
typedef struct {
    uint8_t op, flags, rank;
    uint8_t rule;      // the op whose reverse rule recorded this node deferred (0: none): its
                       // errors, when it is computed later, name that rule
    int32_t rows, cols;
    int32_t a, b;      // inputs by index (0 when unused); ad_input makes their handles
    int32_t i0, i1;    // integer parameters (transpose flags, offsets, sizes)
    uint32_t epoch;    // the tape's epoch when the node was recorded: its handles carry it
    double p0, p1;     // real parameters (scale, exponent, box)
    double *val;       // rows * cols doubles, row-major
    union {
        const int32_t *idx; // index arrays (labels, rows), copied onto the tape
        const void *ext;    // the caller's constant an op reads (matmul_coded: an ad_coded)
    };
} ad_node;
_Static_assert(sizeof(ad_node) == 64, "a node is one cache line");

// Forward: compute n->val from its inputs' values. Returns AD_OK or a domain error (the caller
// writes the message). Reverse: given the node y and its adjoint gy (handles; ad_input gives the
// inputs' handles), set gin[k] to the adjoint contribution for input k when need[k] (recorded
// with tape ops); leave AD_NONE for no gradient.
// A contribution may be given negated, as -handle (ad_negated): the sweep folds the sign into
// its sums instead of recording a negation.
typedef ad_status (*ad_fwd_fn)(ad_tape *t, ad_node *n);
typedef void (*ad_rev_fn)(ad_tape *t, ad_var y, ad_var gy, const bool need[2], ad_var gin[2]);

static inline ad_var ad_negated(ad_var v) { return -v; }

typedef struct {
    const char *name;
    int arity;
    ad_fwd_fn fwd;
    ad_rev_fn rev; // NULL: zero derivative
} ad_op_def;

// Each op file defines its ops' entries; ad_ops[op] points at them (optable.c).
#define AD_OP_DECL(E, name) extern const ad_op_def ad_def_##name;
AD_OP_LIST(AD_OP_DECL)
#undef AD_OP_DECL
extern const ad_op_def *const ad_ops[OP_COUNT];
#define AD_DEF(name, arity, fwd, rev) const ad_op_def ad_def_##name = {#name, arity, fwd, rev}

typedef struct chunk {
    double *mem;
    size_t cap; // doubles
} chunk;

struct ad_tape {
    ad_node *nodes; // 64-byte aligned
    int32_t n_nodes, cap_nodes;
    // Handles are (epoch << 32) | index. The epoch changes at every rewind that drops nodes and
    // at every reset, so a handle to a dropped node never names what is recorded at its index
    // later (ad_live). It runs 1, 2, ..., 2^31 - 1, then 1 again (ad_next_epoch): 0 is never an
    // epoch, so a bare index, or a handle cut to 32 bits, names no node.
    uint32_t epoch;
    chunk *chunks;
    size_t n_chunks, cur_chunk, cur_off; // allocation position in chunks[cur_chunk]
    size_t arena_used; // doubles handed out since the last reset (a mark keeps it too)
    size_t bytes, peak_bytes;
    ad_tape_params par;
    ad_status status;
    char err[256];
    int lazy;   // record nodes without computing values (inside ad_hvp's inner gradient)
    int nograd; // mark new nodes NF_NOGRAD (a gradient recorded without AD_CREATE_GRAPH)
    double nan_;
    // scratch for the reverse sweep and for forcing lazy values
    void *scratch;
    size_t scratch_bytes;
    // Constants that recording makes again and again are found again instead of re-recorded:
    // const views of the same memory and shape (a problem's matrices, met at every unrolled step) and the scalar 1
    // that seeds gradients. An entry is only a hint: it is used if the node it names is still on
    // the tape and still that constant (a rewind drops nodes without telling the cache).
    // The view cache is searched whole and refilled least recently used first, never by a hash
    // of the address: which views are found again (and so which products are shared, and the
    // rounding of sums over them) must not depend on where the caller's memory happens to be.
    // view_data[i] is the memory of the view view_cache[i] names whenever that node is a view
    // leaf (set for every entry naming a view when it is made), so only entries made for the
    // same memory are looked at further.
    int32_t view_cache[16]; // node indices, like the unit and the memo's entries
    const double *view_data[16];
    int64_t view_used[16], view_clock;
    int32_t unit;
    // Nodes of stable inputs recorded lately (ad_memo): 16 sets of two by a hash of op and inputs.
    struct ad_memo {
        int32_t v;
        int hit;
    } memo[32];
    int no_share; // record fresh nodes only (an accumulator about to be summed into in place)
    int64_t op_uses[OP_COUNT];
    double blas_seconds;
    int64_t op_evals[OP_COUNT]; // values computed, per op
    // the thin-product kernel (thin.c): its threads, whether it is used, its workspace
    int threads, thin_isa; // thin_isa: an ad_thin_isa, 0 when products go to cblas
    double *thin_work;
    size_t thin_work_cap; // doubles
    // the workers of the thin kernel and of imk_parallel (pool.h), made on first use with threads
    // - 1 of them (ad_tape_pool)
    struct ad_pool *pool;
    int pool_spin_us; // its threads' spin (ad_pool_set_spin), kept for a pool made later
    // arrays of kept products given back by ad_kept_free, for the next ad_keep (keep.c): a sweep
    // per UL iteration keeps the same sizes again, and fresh memory costs a page fault per 4 KiB
    struct ad_kept_pool *kept_pool;
};

// ---- helpers for op definitions (tape.c) ----

// Handles and indices. Inside the tape a node is named by its index (int32_t): a node's inputs,
// the memo, the view cache, the unit, the reverse sweep's arrays. A handle is made from an index
// with the node's own epoch (ad_ref) when it leaves the tape: returned by an op, or passed to one
// by a reverse rule (ad_input). The accessors below take a live handle or a bare index (whose
// epoch bits are 0), and look only at the index.
static inline int32_t ad_index(ad_var v) { return (int32_t)(uint32_t)v; }
static inline uint32_t ad_epoch_of(ad_var v) { return (uint32_t)((uint64_t)v >> 32); }
static inline ad_var ad_ref(const ad_tape *t, int32_t i) {
    return (ad_var)((uint64_t)t->nodes[i].epoch << 32 | (uint32_t)i);
}
static inline ad_node *ad_node_at(const ad_tape *t, ad_var v) { return &t->nodes[ad_index(v)]; }
static inline double *ad_val(const ad_tape *t, ad_var v) { return ad_node_at(t, v)->val; }
// The handle of node y's input k (0: a, 1: b), for a reverse rule to pass to ops.
static inline ad_var ad_input(const ad_tape *t, ad_var y, int k) {
    const ad_node *n = ad_node_at(t, y);
    return ad_ref(t, k ? n->b : n->a);
}
// The epoch after e: 2^31 - 1 wraps to 1 (0 is never an epoch).
static inline uint32_t ad_next_epoch(uint32_t e) { return e >= 0x7fffffffu ? 1u : e + 1u; }
// v names a node of the tape now: its index is on the tape (not node 0) and the node there was
// recorded in v's epoch. A handle from before a rewind or reset that dropped its node fails the
// second test (epochs differ), whatever was recorded at that index since; a negative or
// hand-made value fails one of them (its epoch bits are 0 or at least 2^31). The range test
// comes first, so a bad handle reads nothing outside the array.
static inline bool ad_live(const ad_tape *t, ad_var v) {
    int32_t i = ad_index(v); // as ad_node_at takes it, so that the two share the address
    return (uint32_t)i - 1u < (uint32_t)t->n_nodes - 1u && t->nodes[i].epoch == ad_epoch_of(v);
}
static inline int ad_size(const ad_node *n) { return n->rows * n->cols; }
static inline ad_shape ad_node_shape(const ad_node *n) {
    return (ad_shape){n->rank, n->rows, n->cols};
}

// True if the tape is healthy and every handle is live; otherwise records an AD_EARG naming op
// and saying what is wrong with the first bad one (AD_NONE, stale, not of this tape).
bool ad_check_args_slow(ad_tape *t, const char *op, int n, const ad_var *v);
// True if m is a point of t's recording now (ad_tape_rewind's test); otherwise records an AD_EARG
// naming op.
bool ad_mark_check(ad_tape *t, ad_mark m, const char *op);
// Recording is two steps so parameters are set in place: ad_push appends a node of op with
// shape s and inputs a, b (other fields zero) and returns it, or NULL after an error; the caller
// sets parameters (and may record nothing else meanwhile); ad_commit allocates the value and
// computes it unless the tape is lazy. ad_commit drops the node if an error happened in between.
// Both are inline: every recorded node passes through them, and most of what they do is a few
// loads and stores.
bool ad_grow_nodes(ad_tape *t);
static inline ad_node *ad_push(ad_tape *t, ad_op op, ad_shape s, ad_var a, ad_var b) {
    if (t->status != AD_OK) return NULL;
    if (t->n_nodes == t->cap_nodes && !ad_grow_nodes(t)) return NULL;
    ad_node *n = &t->nodes[t->n_nodes++];
    *n = (ad_node){.op = (uint8_t)op, .rank = (uint8_t)s.rank, .rows = s.rows, .cols = s.cols,
                   .a = ad_index(a), .b = ad_index(b), .epoch = t->epoch};
    return n;
}

// n doubles from the value arena: a bump of the current chunk; values of 8 or more doubles start
// on a 64-byte boundary. The slow path moves to the next chunk or adds one (NULL after an error).
double *ad_arena_alloc_slow(ad_tape *t, size_t n, const char *what);
__attribute__((always_inline)) static inline double *ad_arena_alloc(ad_tape *t, size_t n,
                                                                     const char *what) {
    if (t->n_chunks) {
        size_t off = t->cur_off, need = n;
        if (n >= 8) off = (off + 7) & ~(size_t)7, need = (n + 7) & ~(size_t)7;
        const chunk *c = &t->chunks[t->cur_chunk];
        if (off + need <= c->cap) {
            t->cur_off = off + need;
            t->arena_used += need;
            return c->mem + off;
        }
    }
    return ad_arena_alloc_slow(t, n, what);
}

// Computes node v (an index), forcing its inputs first if they are lazy; false after an error.
bool ad_eval(ad_tape *t, int32_t v);
// Records that node v's forward returned st (false).
bool ad_eval_failed(ad_tape *t, int32_t v, ad_status st);
// Shared subexpressions. A node recorded again with the same op, inputs and parameters is the
// same value: B x at every unrolled step of a loop over y, with x and the view B unchanged, or
// the scalar 1/2 a gradient of 1/2 y^T A y scales its seed by. Such repeats are built on stable
// nodes (leaves, and nodes found again this way), so only a node whose inputs are all stable is
// looked up: v (just pushed, its gradient flag set) is dropped for an equal node still on the
// tape, which is returned (computed unless the tape defers) and marked stable; otherwise v is
// remembered and returned. A shared node's adjoint collects every use, so its reverse rule runs
// once too. Indices in and out.
int32_t ad_memo(ad_tape *t, int32_t v);

__attribute__((always_inline)) static inline ad_var ad_commit(ad_tape *t, ad_node *n) {
    if (!n) return AD_NONE;
    int32_t v = t->n_nodes - 1; // n is the node ad_push appended last
    if (t->status != AD_OK) { // something between push and commit failed
        t->n_nodes = v;
        return AD_NONE;
    }
    const ad_op_def *d = ad_ops[n->op];
    uint8_t fa = NF_VALUE, fb = NF_VALUE; // the inputs' flags (node 0 when unused)
    if (n->op != OP_LEAF) {
        // no gradient through constants-only expressions, piecewise-constant ops, or adjoints
        // recorded without AD_CREATE_GRAPH
        fa = t->nodes[n->a].flags, fb = t->nodes[n->b].flags;
        if (t->nograd || !d->rev || (fa & fb & NF_NOGRAD)) n->flags |= NF_NOGRAD;
        if ((fa & fb & NF_STABLE) && !t->no_share) {
            int32_t w = ad_memo(t, v);
            if (w != v) return w ? ad_ref(t, w) : AD_NONE;
        }
    }
    if (!n->val) { // leaves and reshapes set theirs
        size_t size = (size_t)n->rows * (size_t)n->cols;
        if (!(n->val = ad_arena_alloc(t, size ? size : 1, d->name))) {
            t->n_nodes = v;
            return AD_NONE;
        }
    }
    t->op_uses[n->op]++;
    ad_var h = (ad_var)((uint64_t)t->epoch << 32 | (uint32_t)v); // n->epoch is the tape's
    if (t->lazy || (n->flags & NF_VALUE)) return h;
    if (!(fa & fb & NF_VALUE) || t->par.check_finite) return ad_eval(t, v) ? h : AD_NONE;
    t->op_evals[n->op]++; // the common case inline: computed inputs, no finiteness check
    ad_status st = d->fwd(t, n);
    if (st != AD_OK) return ad_eval_failed(t, v, st) ? h : AD_NONE;
    n->flags |= NF_VALUE;
    return h;
}
// A healthy tape and a live handle of it (the fast test; ad_check_args_slow reports).
static inline bool ad_valid(const ad_tape *t, ad_var v) {
    return t->status == AD_OK && ad_live(t, v);
}
static inline bool ad_check_args(ad_tape *t, const char *op, int n, const ad_var *v) {
    bool ok = t->status == AD_OK;
    for (int i = 0; i < n; i++) ok &= ad_live(t, v[i]);
    return ok || ad_check_args_slow(t, op, n, v);
}
static inline ad_shape ad_shape_fast(const ad_tape *t, ad_var v) {
    return ad_node_shape(ad_node_at(t, v));
}
// The scalar constant 1 (the seed of a gradient), shared while it stays on the tape.
ad_var ad_unit(ad_tape *t);
// Copy n ints onto the tape (NULL on failure, error recorded).
const int32_t *ad_copy_idx(ad_tape *t, int n, const int32_t *idx);
// Make sure v's value (and its ancestors') are computed. The test for a value already there is
// inline: most calls (a gradient passed through, an output read) find one.
bool ad_force_slow(ad_tape *t, ad_var v);
static inline bool ad_force(ad_tape *t, ad_var v) {
    return (ad_node_at(t, v)->flags & NF_VALUE) || ad_force_slow(t, v);
}
void ad_fail(ad_tape *t, ad_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
// After a failure inside the reverse rule of op (rule != 0), or while computing a node that rule
// recorded: puts "reverse of OP: " before the tape's message, once (the innermost rule is named).
void ad_fail_in_rule(ad_tape *t, int rule);
// "[m, n]" for messages.
const char *ad_shape_str(ad_shape s, char buf[32]);
void *ad_scratch(ad_tape *t, size_t bytes);
// A shape a tensor can have: rank 0 (1 x 1), 1 (1 x n) or 2, no negative dimension, at most
// INT32_MAX entries.
bool ad_shape_valid(ad_shape s);
// Broadcast result of two shapes; false if they do not combine.
bool ad_broadcast_shape(ad_shape a, ad_shape b, ad_shape *out);
static inline bool ad_shape_eq(ad_shape a, ad_shape b) {
    return a.rank == b.rank && a.rows == b.rows && a.cols == b.cols;
}
double ad_now(void); // monotonic seconds
// Frees the arrays ad_kept_free gave back to t (ad_tape_free; keep.c).
void ad_kept_pool_free(ad_tape *t);
// Whether C [m, n] = op(A) [m, k] op(B) goes to the thin-product kernel: its workspace (kept by
// the tape, 64-byte aligned) and in *threads how many threads pay for it; NULL when it does not
// (kernel off, more than AD_THIN_MAX_N columns, few rows, or no room under the memory cap: no
// error recorded), and the caller uses cblas.
double *ad_thin_plan(ad_tape *t, int ta, int m, int n, int k, int *threads);
// The same for the small-k kernel (smallk.h): C wide, k <= AD_SMALLK_MAX_K, large work.
double *ad_smallk_plan(ad_tape *t, int m, int n, int k, int *threads);
// The tape's worker pool (pool.h): made on first use, joined in ad_tape_free; NULL with one
// thread, or when it cannot be made (then threads becomes 1: the calling thread does the work).
struct ad_pool *ad_tape_pool(ad_tape *t);
// Row-wise softmax and cross-entropy (ops_loss.c), shared with the coded ops (ops_coded.c) so a
// fused op computes the bits of the composition: y [m, k] = softmax of each row of z [m, k];
// ce [m] = logsumexp(z_i) - z_i[labels[i]].
void ad_softmax_rows(const double *z, int m, int k, double *y);
void ad_xent_rows(const double *z, int m, int k, const int32_t *labels, double *ce);
// The reverse rules' bodies in tape ops, likewise shared: the adjoint of the logits of softmax
// given its value P and adjoint g (P * (g - rowsum(g * P))), and of xent's given softmax P of
// its logits, the labels' one-hot rows (of P's shape) and its adjoint g [m] ((P - onehot) * g
// per row).
ad_var ad_softmax_adjoint(ad_tape *t, ad_var P, ad_var g);
ad_var ad_xent_adjoint(ad_tape *t, ad_var P, ad_var onehot, ad_var g);
// The plain loop beside conv2d's im2col + dgemm (ops_image.c), which a test compares them with:
// y [n, c_out*h*w] = the 3x3 convolution (stride 1, padding 1) of x [n, c_in*h*w] by
// wt [c_out, c_in*9].
void ad_conv3x3_direct(const double *x, const double *wt, int n, int c_in, int h, int w, int c_out,
                       double *y);

#endif
