// Communicators: how the processes of one run (MPI ranks) talk. A blo_comm is an object the
// caller makes and passes in (blo_problem.comm); there is no global one. The serial communicator
// (one process, always built) and the MPI one (built with -Dmpi=enabled, comm_mpi.c) have the
// same interface: rank, size and the one collective the library needs, an all-gather of byte
// blocks in rank order, whose result is the same on every rank. Sums over ranks are never taken
// by the communicator: callers gather the parts and add them in a fixed order (task order, shard
// order), so that the bits do not depend on the number of ranks. Errors of MPI calls come back as
// blo errors (MPI_ERRORS_RETURN), never as an abort.
#ifndef HYPERTAPE_BLO_COMM_H
#define HYPERTAPE_BLO_COMM_H

#include "blo.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct blo_comm blo_comm;

struct blo_comm {
    int rank, size;
    // Every rank passes its block mine [counts[rank] bytes]; out [sum of counts bytes] receives
    // rank 0's block, then rank 1's, ... on every rank. counts [size] is the same on every rank.
    blo_status (*allgatherv)(blo_comm *c, const void *mine, void *out, const size_t *counts,
                             blo_error *err);
    void (*free)(blo_comm *c);
    void *impl;
    // What this rank took part in: collectives called, bytes it received from other ranks, and
    // the wall and CPU seconds it spent in them (waiting for the others included; MPI may spin).
    int64_t messages, bytes;
    double seconds, cpu_seconds;
};

// A one-process communicator in c (rank 0 of 1; its gather is a copy). Returns c.
blo_comm *blo_comm_serial(blo_comm *c);

// Whether the library was built with MPI (-Dmpi=enabled).
int blo_comm_mpi_built(void);

// A communicator over MPI_COMM_WORLD (a duplicate of it, whose errors return), initializing MPI
// if no one has (then blo_comm_free finalizes it). NULL with a message when the library was built
// without MPI or MPI fails.
blo_comm *blo_comm_mpi_new(blo_error *err);

// Frees a communicator from blo_comm_mpi_new (NULL and serial ones are fine: nothing to free).
void blo_comm_free(blo_comm *c);

// The collective through c (NULL: one process), counting the call and the bytes received.
blo_status blo_comm_allgatherv(blo_comm *c, const void *mine, void *out, const size_t *counts,
                               blo_error *err);

// Rank and size of c (NULL: 0 and 1).
int blo_comm_rank(const blo_comm *c);
int blo_comm_size(const blo_comm *c);

// The contiguous block [*lo, *hi) of n items (tasks of a batch, shards) that rank r of size
// ranks owns: the first n % size ranks own one more. Every item is owned by exactly one rank.
void blo_comm_block(int n, int rank, int size, int *lo, int *hi);

#ifdef __cplusplus
}
#endif

#endif
