/* An LD_PRELOAD wrapper over libmpi for MPITests.testAStepRunsNoCollectiveBesidesTheExchange:
 * counts the calls of each world collective a training step could make and prints
 * "mpi calls: allreduce=N … start=N alltoallv_init=N" on stderr when MPI is
 * finalized (or the process is aborted), so a test can compare runs of different lengths. */
#define _GNU_SOURCE
#include <mpi.h>
#include <stdio.h>
#include <unistd.h>

static long n_allreduce, n_reduce_scatter, n_allgatherv, n_barrier, n_ialltoallv, n_start, n_init;

static void report(void) {
  char line[160];
  int n = snprintf(line, sizeof line, "mpi calls: allreduce=%ld reduce_scatter=%ld allgatherv=%ld barrier=%ld ialltoallv=%ld start=%ld alltoallv_init=%ld\n",
                   n_allreduce, n_reduce_scatter, n_allgatherv, n_barrier, n_ialltoallv, n_start, n_init);
  (void)!write(2, line, (size_t)n);
}

int MPI_Allreduce(const void *s, void *r, int c, MPI_Datatype t, MPI_Op o, MPI_Comm comm) {
  n_allreduce++;
  return PMPI_Allreduce(s, r, c, t, o, comm);
}
int MPI_Reduce_scatter(const void *s, void *r, const int c[], MPI_Datatype t, MPI_Op o, MPI_Comm comm) {
  n_reduce_scatter++;
  return PMPI_Reduce_scatter(s, r, c, t, o, comm);
}
int MPI_Allgatherv(const void *s, int sc, MPI_Datatype st, void *r, const int rc[], const int d[], MPI_Datatype rt,
                   MPI_Comm comm) {
  n_allgatherv++;
  return PMPI_Allgatherv(s, sc, st, r, rc, d, rt, comm);
}
int MPI_Ialltoallv(const void *s, const int sc[], const int sd[], MPI_Datatype st, void *r, const int rc[],
                   const int rd[], MPI_Datatype rt, MPI_Comm comm, MPI_Request *req) {
  n_ialltoallv++;
  return PMPI_Ialltoallv(s, sc, sd, st, r, rc, rd, rt, comm, req);
}
int MPI_Start(MPI_Request *req) {
  n_start++;
  return PMPI_Start(req);
}
#if MPI_VERSION >= 4
int MPI_Alltoallv_init(const void *s, const int sc[], const int sd[], MPI_Datatype st, void *r, const int rc[],
                       const int rd[], MPI_Datatype rt, MPI_Comm comm, MPI_Info info, MPI_Request *req) {
  n_init++;
  return PMPI_Alltoallv_init(s, sc, sd, st, r, rc, rd, rt, comm, info, req);
}
#else
#include <mpi-ext.h>
#if defined(OMPI_HAVE_MPI_EXT_PCOLLREQ) && OMPI_HAVE_MPI_EXT_PCOLLREQ
int MPIX_Alltoallv_init(const void *s, const int sc[], const int sd[], MPI_Datatype st, void *r, const int rc[],
                        const int rd[], MPI_Datatype rt, MPI_Comm comm, MPI_Info info, MPI_Request *req) {
  n_init++;
  return PMPIX_Alltoallv_init(s, sc, sd, st, r, rc, rd, rt, comm, info, req);
}
#endif
#endif
int MPI_Barrier(MPI_Comm comm) {
  n_barrier++;
  return PMPI_Barrier(comm);
}
int MPI_Finalize(void) {
  report();
  return PMPI_Finalize();
}
