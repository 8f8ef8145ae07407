// The serial communicator and what every communicator shares (comm.h): counting, the split of n
// items into contiguous blocks. The MPI communicator is in comm_mpi.c, compiled only with
// -Dmpi=enabled; without it comm_none.c's blo_comm_mpi_new says so.
#include "comm.h"
#include "internal.h"

#include <string.h>
#include <time.h>

static double clock_seconds(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static blo_status serial_allgatherv(blo_comm *c, const void *mine, void *out, const size_t *counts,
                                    blo_error *err) {
    (void)c;
    if (counts[0] && mine != out) memmove(out, mine, counts[0]);
    return blo_ok(err);
}

blo_comm *blo_comm_serial(blo_comm *c) {
    *c = (blo_comm){.rank = 0, .size = 1, .allgatherv = serial_allgatherv};
    return c;
}

void blo_comm_free(blo_comm *c) {
    if (c && c->free) c->free(c);
}

blo_status blo_comm_allgatherv(blo_comm *c, const void *mine, void *out, const size_t *counts,
                               blo_error *err) {
    if (!c) {
        if (counts[0] && mine != out) memmove(out, mine, counts[0]);
        return blo_ok(err);
    }
    double w0 = clock_seconds(CLOCK_MONOTONIC), c0 = clock_seconds(CLOCK_PROCESS_CPUTIME_ID);
    blo_status st = c->allgatherv(c, mine, out, counts, err);
    c->seconds += clock_seconds(CLOCK_MONOTONIC) - w0;
    c->cpu_seconds += clock_seconds(CLOCK_PROCESS_CPUTIME_ID) - c0;
    if (st) return st;
    c->messages++;
    for (int r = 0; r < c->size; r++)
        if (r != c->rank) c->bytes += (int64_t)counts[r];
    return BLO_OK;
}

int blo_comm_rank(const blo_comm *c) { return c ? c->rank : 0; }
int blo_comm_size(const blo_comm *c) { return c ? c->size : 1; }

void blo_comm_block(int n, int rank, int size, int *lo, int *hi) {
    int q = n / size, r = n % size;
    *lo = rank * q + (rank < r ? rank : r);
    *hi = *lo + q + (rank < r);
}
