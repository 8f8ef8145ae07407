// The MPI entry points of comm.h in a build without MPI (the default; -Dmpi=enabled compiles
// comm_mpi.c instead): nothing here refers to MPI.
#include "comm.h"
#include "internal.h"

int blo_comm_mpi_built(void) { return 0; }

blo_comm *blo_comm_mpi_new(blo_error *err) {
    blo_fail(err, BLO_EARG, "this hypertape was built without MPI (meson setup -Dmpi=enabled)");
    return NULL;
}
