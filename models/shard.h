// Data-parallel models (shard.c): a training set of n samples split into S fixed shards
// (contiguous rows, shard s = [off[s], off[s+1])), each rank of the problem's communicator
// owning a contiguous block of shards. A sharded objective computes each of its shards apart
// and meets the other ranks only through four linear maps on the tape (ad_linear), two pairs of
// mutual transposes, so that the reverse sweeps (and their reverse sweeps: RHG, CG's
// Hessian-vector products) reduce exactly where the forward pass does:
//   copy:   w [m] (the same on every rank) -> [S_loc, m], a row per local shard; no message.
//   sum:    [S_loc, m] -> [m], every shard's row gathered and added in shard order (copy's
//           transpose: the adjoint of the shared LL variable is the sum of the shards' parts).
//   take:   x [n] -> the local shards' entries [n_loc] (x_i stays on its shard); no message.
//   gather: [n_loc] -> [n], the blocks of every rank in order (take's transpose: the gradient
//           in x_i comes from x_i's shard).
// The sums are over shards, never over ranks, so the bits depend on S, not on the rank count.
// Private to models/.
#ifndef HYPERTAPE_MDL_SHARD_H
#define HYPERTAPE_MDL_SHARD_H

#include "../bilevel/comm.h"
#include "ad_extra.h"
#include "data.h"

typedef struct mdl_shards mdl_shards;

typedef struct {
    mdl_shards *sh;
    ad_linmap copy, sum; // of width m
} mdl_shard_sum;

struct mdl_shards {
    int S, n;          // shards, samples
    int *off;          // [S + 1]
    blo_comm *comm;    // NULL: one process, every shard local
    int lo, hi;        // this rank's shards [lo, hi)
    mdl_shard_sum wide, one; // widths m and 1 (an objective's parts)
    ad_linmap take, gather;
    int m;
    double *buf;       // the gathers' room [max(S m, n)]
    size_t *counts;    // [ranks]
};

// S shards of n samples and sums of width m (the LL variable's size); one process until
// mdl_shards_set_comm. NULL with a message.
mdl_shards *mdl_shards_new(int S, int n, int m, char *err, size_t errlen);
void mdl_shards_free(mdl_shards *sh);
// Spreads the shards over c's ranks (NULL: one process). Needs at least one shard per rank. Not
// while nodes made from the maps are on a tape.
int mdl_shards_set_comm(mdl_shards *sh, blo_comm *c, char *err, size_t errlen);

// The four maps on a tape (see above); the local shard j of copy's [S_loc * m] rows as [m].
ad_var mdl_shard_copy(ad_tape *t, const mdl_shard_sum *p, ad_var w);
ad_var mdl_shard_row(ad_tape *t, const mdl_shard_sum *p, ad_var rows, int j);
ad_var mdl_shard_sum_all(ad_tape *t, const mdl_shard_sum *p, ad_var rows);
ad_var mdl_shard_take(ad_tape *t, const mdl_shards *sh, ad_var x);

// The rows [off[s], off[s+1]) of full as a dataset that shares full's memory.
mdl_dataset mdl_shard_view(const mdl_shards *sh, const mdl_dataset *full, int s);

#endif
