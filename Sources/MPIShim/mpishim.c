#define _GNU_SOURCE
#include "mpishim.h"
#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_finalized = 0;

/* glibc's on_exit gives the exit status: abort the job on a non-zero exit after MPI_Init. */
static void vae_mpi_exit_hook(int status, void *arg) {
  (void)arg;
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized && !g_finalized) {
    if (status != 0) {
      MPI_Abort(MPI_COMM_WORLD, status);
    } else {
      MPI_Finalize();
    }
  }
}

int vae_mpi_init(int *rank, int *size) {
  int provided = 0;
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return rc;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  on_exit(vae_mpi_exit_hook, NULL);
  rc = MPI_Comm_rank(MPI_COMM_WORLD, rank);
  if (rc != MPI_SUCCESS) return rc;
  return MPI_Comm_size(MPI_COMM_WORLD, size);
}

int vae_mpi_finalize(void) {
  g_finalized = 1;
  return MPI_Finalize();
}

int vae_mpi_is_initialized(void) {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag;
}

#define CHUNK ((size_t)INT_MAX / 2)

int vae_mpi_allreduce_sum_f32(float *buf, size_t count) {
  for (size_t at = 0; at < count; at += CHUNK) {
    size_t n = count - at < CHUNK ? count - at : CHUNK;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf + at, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
  }
  return MPI_SUCCESS;
}

int vae_mpi_allreduce_sum_f64(double *buf, size_t count) {
  for (size_t at = 0; at < count; at += CHUNK) {
    size_t n = count - at < CHUNK ? count - at : CHUNK;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf + at, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
  }
  return MPI_SUCCESS;
}

int vae_mpi_reduce_scatter_sum_f32(float *buf, const int *counts, const int *displs) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  /* In place, MPI puts this rank's block at the start of buf: move it to its position. The
   * input must be laid out in rank order, which displs guarantee (contiguous shards). */
  int rc = MPI_Reduce_scatter(MPI_IN_PLACE, buf, counts, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return rc;
  if (displs[rank] != 0) memmove(buf + displs[rank], buf, (size_t)counts[rank] * sizeof(float));
  return MPI_SUCCESS;
}

int vae_mpi_allgather_f32(float *buf, const int *counts, const int *displs) {
  return MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, counts, displs, MPI_FLOAT,
                        MPI_COMM_WORLD);
}

int vae_mpi_allgather_u64(unsigned long long value, unsigned long long *out) {
  return MPI_Allgather(&value, 1, MPI_UNSIGNED_LONG_LONG, out, 1, MPI_UNSIGNED_LONG_LONG,
                       MPI_COMM_WORLD);
}

int vae_mpi_bcast_bytes(void *buf, size_t count, int root) {
  char *p = buf;
  for (size_t at = 0; at < count; at += CHUNK) {
    size_t n = count - at < CHUNK ? count - at : CHUNK;
    int rc = MPI_Bcast(p + at, (int)n, MPI_BYTE, root, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
  }
  return MPI_SUCCESS;
}

int vae_mpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }

void vae_mpi_abort(int code) {
  fflush(stdout);
  fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, code);
  _Exit(code);
}

double vae_mpi_wtime(void) { return MPI_Wtime(); }

int vae_mpi_processor_name(char *buf, int len) {
  char name[MPI_MAX_PROCESSOR_NAME];
  int n = 0;
  int rc = MPI_Get_processor_name(name, &n);
  if (rc != MPI_SUCCESS) return rc;
  snprintf(buf, (size_t)len, "%.*s", n, name);
  return MPI_SUCCESS;
}

void vae_mpi_error_string(int code, char *buf, int len) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(code, s, &n) != MPI_SUCCESS) n = snprintf(s, sizeof s, "MPI error %d", code);
  snprintf(buf, (size_t)len, "%.*s", n, s);
}
