// Shards of a training set across the ranks of a communicator (shard.h): the split, the four
// linear maps (copy / sum, take / gather) and their place on a tape.
#include "models.h"
#include "shard.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int local_shards(const mdl_shards *sh) { return sh->hi - sh->lo; }

// Gathers every rank's block of its shards' rows of width w into sh->buf [S w].
static int gather_rows(mdl_shards *sh, const double *mine, int w, char *err) {
    int size = blo_comm_size(sh->comm);
    for (int r = 0; r < size; r++) {
        int lo, hi;
        blo_comm_block(sh->S, r, size, &lo, &hi);
        sh->counts[r] = (size_t)(hi - lo) * (size_t)w * sizeof(double);
    }
    blo_error e;
    if (blo_comm_allgatherv(sh->comm, mine, sh->buf, sh->counts, &e)) {
        snprintf(err, 200, "shards: %.180s", e.msg);
        return -1;
    }
    return 0;
}

// copy: x [m] -> y [S_loc, m], each row x.
static int apply_copy(const ad_linmap *L, const double *x, double *y, char *err) {
    (void)err;
    int m = L->in.cols, k = L->out.rows;
    for (int j = 0; j < k; j++) memcpy(y + (size_t)j * m, x, sizeof(double) * (size_t)m);
    return 0;
}

// sum: x [S_loc, m] -> y [m], all S rows added in shard order.
static int apply_sum(const ad_linmap *L, const double *x, double *y, char *err) {
    mdl_shards *sh = L->ctx;
    int m = L->out.cols;
    if (gather_rows(sh, x, m, err)) return -1;
    memcpy(y, sh->buf, sizeof(double) * (size_t)m);
    for (int s = 1; s < sh->S; s++)
        for (int i = 0; i < m; i++) y[i] += sh->buf[(size_t)s * m + i];
    return 0;
}

// take: x [n] -> its local shards' entries [n_loc].
static int apply_take(const ad_linmap *L, const double *x, double *y, char *err) {
    (void)err;
    const mdl_shards *sh = L->ctx;
    memcpy(y, x + sh->off[sh->lo], sizeof(double) * (size_t)L->out.cols);
    return 0;
}

// gather: the local shards' entries [n_loc] -> [n], every rank's block in place.
static int apply_gather(const ad_linmap *L, const double *x, double *y, char *err) {
    mdl_shards *sh = L->ctx;
    int size = blo_comm_size(sh->comm);
    for (int r = 0; r < size; r++) {
        int lo, hi;
        blo_comm_block(sh->S, r, size, &lo, &hi);
        sh->counts[r] = (size_t)(sh->off[hi] - sh->off[lo]) * sizeof(double);
    }
    blo_error e;
    if (blo_comm_allgatherv(sh->comm, x, y, sh->counts, &e)) {
        snprintf(err, 200, "shards: %.180s", e.msg);
        return -1;
    }
    return 0;
}

// The maps' shapes for the current split.
static void shape_maps(mdl_shards *sh) {
    int k = local_shards(sh), nl = sh->off[sh->hi] - sh->off[sh->lo];
    mdl_shard_sum *p[2] = {&sh->wide, &sh->one};
    for (int i = 0; i < 2; i++) {
        int w = i ? 1 : sh->m;
        p[i]->sh = sh;
        p[i]->copy = (ad_linmap){ad_vec_shape(w), ad_mat_shape(k, w), apply_copy, &p[i]->sum, sh};
        p[i]->sum = (ad_linmap){ad_mat_shape(k, w), ad_vec_shape(w), apply_sum, &p[i]->copy, sh};
    }
    sh->take = (ad_linmap){ad_vec_shape(sh->n), ad_vec_shape(nl), apply_take, &sh->gather, sh};
    sh->gather = (ad_linmap){ad_vec_shape(nl), ad_vec_shape(sh->n), apply_gather, &sh->take, sh};
}

mdl_shards *mdl_shards_new(int S, int n, int m, char *err, size_t errlen) {
    if (S < 1 || S > n || m < 1) {
        mdl_fail(err, errlen, "shards=%d: between 1 and the %d training samples", S, n);
        return NULL;
    }
    mdl_shards *sh = calloc(1, sizeof *sh);
    size_t room = (size_t)S * (size_t)m > (size_t)n ? (size_t)S * (size_t)m : (size_t)n;
    if (sh) sh->off = malloc(sizeof(int) * (size_t)(S + 1)), sh->buf = malloc(sizeof(double) * room),
            sh->counts = calloc(1, sizeof(size_t));
    if (!sh || !sh->off || !sh->buf || !sh->counts) {
        mdl_shards_free(sh);
        mdl_fail(err, errlen, "shards: out of memory");
        return NULL;
    }
    sh->S = S, sh->n = n, sh->m = m, sh->lo = 0, sh->hi = S;
    for (int s = 0; s <= S; s++) sh->off[s] = (int)((int64_t)s * n / S);
    shape_maps(sh);
    return sh;
}

void mdl_shards_free(mdl_shards *sh) {
    if (!sh) return;
    free(sh->off), free(sh->buf), free(sh->counts), free(sh);
}

int mdl_shards_set_comm(mdl_shards *sh, blo_comm *c, char *err, size_t errlen) {
    int size = blo_comm_size(c);
    if (sh->S < size)
        return mdl_fail(err, errlen, "shards=%d: fewer shards than the %d ranks (each needs one)", sh->S, size);
    size_t *counts = realloc(sh->counts, sizeof(size_t) * (size_t)size);
    if (!counts) return mdl_fail(err, errlen, "shards: out of memory");
    sh->counts = counts, sh->comm = c;
    blo_comm_block(sh->S, blo_comm_rank(c), size, &sh->lo, &sh->hi);
    shape_maps(sh);
    return 0;
}

ad_var mdl_shard_copy(ad_tape *t, const mdl_shard_sum *p, ad_var w) { return ad_linear(t, &p->copy, w); }

ad_var mdl_shard_row(ad_tape *t, const mdl_shard_sum *p, ad_var rows, int j) {
    int m = p->copy.in.cols, k = p->copy.out.rows;
    return ad_slice(t, ad_reshape(t, rows, ad_vec_shape(k * m)), j * m, m);
}

ad_var mdl_shard_sum_all(ad_tape *t, const mdl_shard_sum *p, ad_var rows) { return ad_linear(t, &p->sum, rows); }

ad_var mdl_shard_take(ad_tape *t, const mdl_shards *sh, ad_var x) { return ad_linear(t, &sh->take, x); }

mdl_dataset mdl_shard_view(const mdl_shards *sh, const mdl_dataset *full, int s) {
    int a = sh->off[s], n = sh->off[s + 1] - a;
    size_t d = (size_t)full->d;
    mdl_dataset v = *full;
    v.n = n, v.X = full->X + (size_t)a * d, v.y = full->y + a;
    v.Xc.rows = n, v.Xc.codes = full->Xc.codes + (size_t)a * d;
    v.Xc.values = full->Xc.values ? full->Xc.values + (size_t)a * d : NULL;
    return v;
}

int mdl_set_comm(mdl_model *m, blo_comm *c, char *err, size_t errlen) {
    if (m->set_comm && m->set_comm(m, c, err, errlen)) return -1;
    m->prob.comm = c;
    return 0;
}
