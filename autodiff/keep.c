// Keeping the products over large constants across a rewind. A reverse sweep that re-records
// an unrolled step (bilevel/hypergrad.c) computes that step's products again: for a linear
// model on data X, the logits X W_k, a full pass over X per step, whose value the forward pass
// had and dropped. ad_keep copies such products out of a recording before it is rewound, with
// the operand they were computed from; ad_reuse, on the recording made again, gives a product
// not yet computed the kept value when its constant is the same and its operand equal entry by
// entry, which makes it the same value (the products are deterministic). Nothing is guessed:
// an operand that differs in one bit, or a product kept nowhere, is computed as usual.
//
// Kept: matmul_coded (and softmax_coded, the softmax of its rows), and matmul with one operand
// a constant view (the caller's unchanging memory), whose other operand is a leaf seen through
// reshapes and slices (the recorded state itself, as W_k is a slice of y_k), or an intermediate
// at most a quarter of the product's size (a folded 2-layer model's W1 W2 [785, 10] under its
// logits [5000, 10]). Products of data-sized intermediates, like X^T G, are needed forward and
// rarely again, so keeping them would spend memory for nothing.
#include "internal.h"

#include <stdlib.h>
#include <string.h>

// Below this many multiply-adds a product is cheaper to compute than to keep and compare.
enum { KEEP_MIN_WORK = 1 << 20 };
// An operand made from the state (not a leaf itself) is kept with its product when it is this many
// times smaller: the folded model's X1 [W1 W2; b1 W2] [5000, 785] x [785, 10], 0.16 of the product.
// The operands of X^T G, [5000, 10] for a [785, 10] product, are not.
enum { KEEP_OPERAND_RATIO = 4 };

typedef struct {
    ad_node node;   // the product as recorded (op, shape, transposes, ext); a and b are stale
    const double *cval; // the constant view's memory (matmul), NULL for matmul_coded
    int crows, ccols, cside; // its shape and which operand it is
    ad_shape bs;    // the operand's shape
    double *b, *val; // the operand's value and the product's
} kept_entry;

struct ad_kept {
    ad_tape *t; // whose pool the arrays go back to
    int n;
    size_t bytes;
    kept_entry e[];
};

// The arrays given back, by size: a sweep keeps one X W_k [n, h] and one W_k per step, the same
// sizes at every UL iteration, so an exact size is asked for. Kept until the tape is freed; at
// most what one sweep kept (each is taken again before a new one is made).
typedef struct {
    double *p;
    size_t n;
} pooled;
struct ad_kept_pool {
    int n, cap;
    pooled a[];
};

static double *pool_take(ad_tape *t, size_t n) {
    struct ad_kept_pool *q = t->kept_pool;
    for (int i = 0; q && i < q->n; i++)
        if (q->a[i].n == n) {
            double *p = q->a[i].p;
            q->a[i] = q->a[--q->n];
            return p;
        }
    return malloc(n * sizeof(double));
}

static void pool_give(ad_tape *t, double *p, size_t n) {
    struct ad_kept_pool *q = t->kept_pool;
    if (!p) return;
    if (!q || q->n == q->cap) {
        int cap = q ? 2 * q->cap : 64;
        struct ad_kept_pool *r = realloc(q, sizeof *q + (size_t)cap * sizeof(pooled));
        if (!r) {
            free(p);
            return;
        }
        if (!q) r->n = 0;
        r->cap = cap;
        t->kept_pool = q = r;
    }
    q->a[q->n++] = (pooled){p, n};
}

void ad_kept_pool_free(ad_tape *t) {
    struct ad_kept_pool *q = t->kept_pool;
    for (int i = 0; q && i < q->n; i++) free(q->a[i].p);
    free(q);
    t->kept_pool = NULL;
}

static bool is_view_leaf(const ad_node *n) {
    return n->op == OP_LEAF && (n->flags & NF_VIEW) && (n->flags & NF_NOGRAD);
}

// A leaf seen through reshapes and slices: what a re-recording makes again from the same values.
static bool from_leaf(const ad_tape *t, int32_t v) {
    for (;;) {
        const ad_node *n = &t->nodes[v];
        if (n->op == OP_LEAF) return !(n->flags & NF_VIEW);
        if (n->op != OP_RESHAPE && n->op != OP_SLICE) return false;
        v = n->a;
    }
}

// Whether node v is a product worth keeping; if so its variable operand and, for matmul, which
// operand is the constant view. Nodes by index.
static bool keepable(const ad_tape *t, int32_t v, int32_t *operand, int *cside) {
    const ad_node *n = &t->nodes[v];
    bool coded = n->op == OP_MATMUL_CODED || n->op == OP_SOFTMAX_CODED; // X's codes in ext
    if (!coded && n->op != OP_MATMUL) return false;
    int k;
    if (coded) {
        const ad_coded *X = n->ext;
        k = n->i0 ? X->rows : X->cols;
        *operand = n->a, *cside = -1;
    } else {
        const ad_node *A = &t->nodes[n->a], *B = &t->nodes[n->b];
        bool ca = is_view_leaf(A), cb = is_view_leaf(B);
        if (ca == cb) return false;
        k = n->i0 ? A->rows : A->cols;
        *operand = ca ? n->b : n->a, *cside = ca ? 0 : 1;
    }
    size_t size = (size_t)n->rows * (size_t)n->cols;
    return size * (size_t)k >= KEEP_MIN_WORK &&
           (from_leaf(t, *operand) || (size_t)ad_size(&t->nodes[*operand]) * KEEP_OPERAND_RATIO <= size);
}

static void entry_free(ad_tape *t, kept_entry *e) {
    pool_give(t, e->val, (size_t)e->node.rows * (size_t)e->node.cols);
    pool_give(t, e->b, (size_t)ad_shape_size(e->bs) ? (size_t)ad_shape_size(e->bs) : 1);
}

void ad_kept_free(ad_kept *k) {
    if (!k) return;
    for (int i = 0; i < k->n; i++) entry_free(k->t, &k->e[i]);
    free(k);
}

size_t ad_kept_bytes(const ad_kept *k) { return k ? k->bytes : 0; }

ad_kept *ad_keep(ad_tape *t, ad_mark m, size_t max_bytes) {
    if (t->status != AD_OK || !ad_mark_check(t, m, "keep")) return NULL;
    int count = 0;
    int32_t operand;
    int cside;
    for (int32_t v = m.nodes; v < t->n_nodes; v++)
        count += (t->nodes[v].flags & NF_VALUE) && keepable(t, v, &operand, &cside);
    if (!count) return NULL;
    ad_kept *k = calloc(1, sizeof *k + (size_t)count * sizeof(kept_entry));
    if (!k) return NULL;
    k->t = t;
    for (int32_t v = m.nodes; v < t->n_nodes && k->n < count; v++) {
        const ad_node *n = &t->nodes[v];
        if (!(n->flags & NF_VALUE) || !keepable(t, v, &operand, &cside)) continue;
        const ad_node *b = &t->nodes[operand];
        if (!(b->flags & NF_VALUE)) continue;
        size_t nv = (size_t)ad_size(n), nb = (size_t)ad_size(b);
        k->bytes += (nv + nb) * sizeof(double);
        kept_entry *e = &k->e[k->n];
        *e = (kept_entry){.node = *n, .cside = cside, .bs = ad_node_shape(b)};
        if (cside >= 0) {
            const ad_node *c = &t->nodes[cside == 0 ? n->a : n->b];
            e->cval = c->val, e->crows = c->rows, e->ccols = c->cols;
        }
        e->val = pool_take(t, nv);
        e->b = pool_take(t, nb ? nb : 1);
        if (k->bytes > max_bytes || !e->val || !e->b) { // over the budget: keep nothing
            entry_free(t, e);
            ad_kept_free(k);
            return NULL;
        }
        memcpy(e->val, n->val, nv * sizeof(double));
        memcpy(e->b, b->val, nb * sizeof(double));
        k->n++;
    }
    return k;
}

// The kept entry that is node v's value, or NULL: the same product of the same constant, and
// an operand with the same entries (computed here if it was deferred).
static const kept_entry *find(ad_tape *t, const ad_kept *k, int32_t v, int32_t operand, int cside) {
    const ad_node *n = &t->nodes[v];
    for (int i = 0; i < k->n; i++) {
        const kept_entry *e = &k->e[i];
        const ad_node *o = &e->node;
        if (o->op != n->op || o->rows != n->rows || o->cols != n->cols || o->i0 != n->i0 ||
            o->i1 != n->i1 || o->ext != n->ext || e->cside != cside ||
            !ad_shape_eq(e->bs, ad_node_shape(&t->nodes[operand])))
            continue;
        if (cside >= 0) {
            const ad_node *c = &t->nodes[cside == 0 ? n->a : n->b];
            if (c->val != e->cval || c->rows != e->crows || c->cols != e->ccols) continue;
        }
        if (!ad_force(t, operand)) return NULL;
        const ad_node *b = &t->nodes[operand];
        if (!memcmp(b->val, e->b, (size_t)ad_size(b) * sizeof(double))) return e;
    }
    return NULL;
}

int ad_reuse(ad_tape *t, ad_mark m, const ad_kept *k) {
    if (!k || t->status != AD_OK || !ad_mark_check(t, m, "reuse")) return 0;
    int reused = 0;
    int32_t operand;
    int cside;
    for (int32_t v = m.nodes; v < t->n_nodes && t->status == AD_OK; v++) {
        if ((t->nodes[v].flags & NF_VALUE) || !keepable(t, v, &operand, &cside)) continue;
        const kept_entry *e = find(t, k, v, operand, cside);
        if (!e) continue;
        // the node reads the kept value where it is (a view: never written, never summed into),
        // not a copy of it: a pass over [n, h] less per step. Reshapes recorded since alias its
        // old memory (and nothing else can point there): they follow.
        ad_node *n = &t->nodes[v];
        double *old = n->val;
        n->val = e->val;
        n->flags |= NF_VALUE | NF_VIEW;
        for (int32_t w = v + 1; w < t->n_nodes; w++)
            if (t->nodes[w].val == old) t->nodes[w].val = e->val;
        reused++;
    }
    return reused;
}
