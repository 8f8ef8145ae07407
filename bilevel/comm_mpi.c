// The MPI communicator (comm.h), compiled only with -Dmpi=enabled: a duplicate of MPI_COMM_WORLD
// whose error handler returns codes (MPI_ERRORS_RETURN), so a failed call becomes a blo error
// with MPI's own message, never an abort. The one collective is MPI_Allgatherv of bytes.
#include "comm.h"
#include "internal.h"

#include <limits.h>
#include <mpi.h>
#include <stdlib.h>

typedef struct {
    blo_comm c;
    MPI_Comm world;
    int finalize;        // this communicator initialized MPI, so it finalizes it
    int *counts, *displ; // [size] each, MPI's int counts
} mpi_comm;

static blo_status mpi_fail(blo_error *err, int code, const char *call) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, msg, &len) != MPI_SUCCESS) len = 0;
    msg[len < MPI_MAX_ERROR_STRING ? len : MPI_MAX_ERROR_STRING - 1] = 0;
    return blo_fail(err, BLO_EIO, "MPI: %s failed: %s", call, len ? msg : "unknown error");
}

static blo_status mpi_allgatherv(blo_comm *c, const void *mine, void *out, const size_t *counts,
                                 blo_error *err) {
    mpi_comm *m = c->impl;
    size_t off = 0;
    for (int r = 0; r < c->size; r++) {
        if (counts[r] > INT_MAX || off > INT_MAX)
            return blo_fail(err, BLO_EARG, "MPI: a gather of %zu bytes from rank %d is past MPI's int counts",
                            counts[r], r);
        m->counts[r] = (int)counts[r], m->displ[r] = (int)off;
        off += counts[r];
    }
    int rc = MPI_Allgatherv(mine, m->counts[c->rank], MPI_BYTE, out, m->counts, m->displ, MPI_BYTE, m->world);
    return rc == MPI_SUCCESS ? blo_ok(err) : mpi_fail(err, rc, "MPI_Allgatherv");
}

static void mpi_free(blo_comm *c) {
    mpi_comm *m = c->impl;
    if (m->world != MPI_COMM_NULL) MPI_Comm_free(&m->world);
    if (m->finalize) MPI_Finalize();
    free(m->counts), free(m->displ), free(m);
}

int blo_comm_mpi_built(void) { return 1; }

blo_comm *blo_comm_mpi_new(blo_error *err) {
    mpi_comm *m = calloc(1, sizeof *m);
    if (!m) {
        blo_fail(err, BLO_ENOMEM, "MPI: out of memory");
        return NULL;
    }
    m->world = MPI_COMM_NULL;
    m->c = (blo_comm){.allgatherv = mpi_allgatherv, .free = mpi_free, .impl = m};
    int inited = 0, rc = MPI_Initialized(&inited), provided;
    // the collectives are called from the thread that made the communicator (a batch's threads
    // compute, then that thread gathers): FUNNELED is enough
    if (rc == MPI_SUCCESS && !inited) {
        rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
        m->finalize = rc == MPI_SUCCESS;
    }
    if (rc == MPI_SUCCESS) rc = MPI_Comm_dup(MPI_COMM_WORLD, &m->world);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_set_errhandler(m->world, MPI_ERRORS_RETURN);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_rank(m->world, &m->c.rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(m->world, &m->c.size);
    if (rc != MPI_SUCCESS) {
        mpi_fail(err, rc, "setting up the communicator");
        mpi_free(&m->c);
        return NULL;
    }
    m->counts = calloc((size_t)m->c.size, sizeof(int)), m->displ = calloc((size_t)m->c.size, sizeof(int));
    if (!m->counts || !m->displ) {
        blo_fail(err, BLO_ENOMEM, "MPI: out of memory");
        mpi_free(&m->c);
        return NULL;
    }
    blo_ok(err);
    return &m->c;
}
