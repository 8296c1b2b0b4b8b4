#define _GNU_SOURCE
#include "mpishim.h"
#include <limits.h>
#include <mpi.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The C types of mpishim.h as Swift imports them: int as Int32, unsigned long long as UInt64,
 * size_t as Int, float as Float, double as Double. A platform where these differ would corrupt
 * arguments silently, so refuse to build there. */
_Static_assert(sizeof(int) == 4, "Swift imports int as Int32");
_Static_assert(sizeof(unsigned long long) == 8, "Swift imports unsigned long long as UInt64");
_Static_assert(sizeof(size_t) == sizeof(void *), "Swift imports size_t as Int, which is pointer-sized");
_Static_assert(sizeof(float) == 4, "Swift imports float as Float (32 bits)");
_Static_assert(sizeof(double) == 8, "Swift imports double as Double (64 bits)");
_Static_assert(sizeof(float *) == sizeof(void *), "float pointers cross into Swift as UnsafeMutablePointer<Float>");

static int g_finalized = 0;

/* True when MPI is initialized and nobody has finalized it: the process is leaving mid-job. */
static int vae_mpi_exiting_mid_job(void) {
  int initialized = 0, finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  return initialized && !finalized && !g_finalized;
}

#if defined(__GLIBC__)
/* glibc's on_exit gives the exit status: abort the job on a non-zero exit after MPI_Init, so the
 * other ranks never hang in a collective; finalize on a zero exit. */
static void vae_mpi_exit_hook(int status, void *arg) {
  (void)arg;
  if (!vae_mpi_exiting_mid_job()) return;
  if (status != 0) {
    MPI_Abort(MPI_COMM_WORLD, status);
  } else {
    MPI_Finalize();
  }
}
#else
/* Elsewhere (macOS, musl) only atexit exists, which does not see the status. Every successful
 * run finalizes before it exits, so leaving without finalizing means a failure: abort the job
 * with status 1 rather than let the other ranks hang. */
static void vae_mpi_exit_hook(void) {
  if (vae_mpi_exiting_mid_job()) MPI_Abort(MPI_COMM_WORLD, 1);
}
#endif

/* Registers vae_mpi_exit_hook. It is a safety net: should registering fail (the C library is
 * out of memory), a run still works and only loses the abort on failure, so that is ignored. */
static void vae_mpi_register_exit_hook(void) {
#if defined(__GLIBC__)
  (void)on_exit(vae_mpi_exit_hook, NULL);
#else
  (void)atexit(vae_mpi_exit_hook);
#endif
}

int vae_mpi_init(int *rank, int *size) {
  int provided = 0;
  int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
  if (rc != MPI_SUCCESS) return rc;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  vae_mpi_register_exit_hook();
  rc = MPI_Comm_rank(MPI_COMM_WORLD, rank);
  if (rc != MPI_SUCCESS) return rc;
  return MPI_Comm_size(MPI_COMM_WORLD, size);
}

int vae_mpi_finalize(void) {
  vae_mpi_free_requests();
  vae_mpi_shm_free();
  g_finalized = 1;
  return MPI_Finalize();
}

int vae_mpi_is_initialized(void) {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag;
}

#define CHUNK ((size_t)INT_MAX / 2)

/* In-place sum of `count` elements of `size` bytes, in chunks whose counts fit in an int. */
static int allreduce_sum_chunked(char *buf, size_t count, size_t size, MPI_Datatype type) {
  for (size_t at = 0; at < count; at += CHUNK) {
    size_t n = count - at < CHUNK ? count - at : CHUNK;
    int rc = MPI_Allreduce(MPI_IN_PLACE, buf + at * size, (int)n, type, MPI_SUM, MPI_COMM_WORLD);
    if (rc != MPI_SUCCESS) return rc;
  }
  return MPI_SUCCESS;
}

int vae_mpi_allreduce_sum_f32(float *buf, size_t count) {
  return allreduce_sum_chunked((char *)buf, count, sizeof(float), MPI_FLOAT);
}

int vae_mpi_allreduce_sum_f64(double *buf, size_t count) {
  return allreduce_sum_chunked((char *)buf, count, sizeof(double), MPI_DOUBLE);
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

int vae_mpi_gather_f32(const float *send, int count, float *recv, const int *counts, const int *displs,
                       int root) {
  return MPI_Gatherv(send, count, MPI_FLOAT, recv, counts, displs, MPI_FLOAT, root, MPI_COMM_WORLD);
}

int vae_mpi_allgather_u64(unsigned long long value, unsigned long long *out) {
  return MPI_Allgather(&value, 1, MPI_UNSIGNED_LONG_LONG, out, 1, MPI_UNSIGNED_LONG_LONG,
                       MPI_COMM_WORLD);
}

int vae_mpi_allgather_u64n(const unsigned long long *values, int n, unsigned long long *out) {
  return MPI_Allgather(values, n, MPI_UNSIGNED_LONG_LONG, out, n, MPI_UNSIGNED_LONG_LONG,
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

void vae_mpi_error_string(int code, char *buf, int len) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(code, s, &n) != MPI_SUCCESS) n = snprintf(s, sizeof s, "MPI error %d", code);
  snprintf(buf, (size_t)len, "%.*s", n, s);
}

/* ---- Non-blocking bucketed exchange ------------------------------------------------------- */

/* Where MPI has persistent collectives (MPI-4 MPI_Alltoallv_init, or Open MPI 4's MPIX_ one),
 * each slot keeps one persistent all-to-all, built when the slot's arguments first appear and
 * restarted with MPI_Start while they stay the same (the exchange starts the same buckets every
 * step), so no step builds a new schedule. Elsewhere each start is an MPI_Ialltoallv. */
#if MPI_VERSION >= 4
#define VAE_ALLTOALLV_INIT MPI_Alltoallv_init
#else
#include <mpi-ext.h>
#if defined(OMPI_HAVE_MPI_EXT_PCOLLREQ) && OMPI_HAVE_MPI_EXT_PCOLLREQ
#define VAE_ALLTOALLV_INIT MPIX_Alltoallv_init
#endif
#endif

static MPI_Request g_requests[VAE_MPI_MAX_REQUESTS];
static int g_requests_ready = 0;
/* The arguments a slot's persistent request was built with. */
static struct { const float *send; float *recv; const int *counts; long long lo, hi; } g_built[VAE_MPI_MAX_REQUESTS];

static void requests_init(void) {
  if (g_requests_ready) return;
  for (int i = 0; i < VAE_MPI_MAX_REQUESTS; i++) g_requests[i] = MPI_REQUEST_NULL;
  memset(g_built, 0, sizeof g_built);
  g_requests_ready = 1;
}

int vae_mpi_ialltoallv_f32(const float *send, const int *send_counts, const int *send_displs, float *recv,
                           const int *recv_counts, const int *recv_displs, int slot, long long lo, long long hi) {
  requests_init();
  if (slot < 0 || slot >= VAE_MPI_MAX_REQUESTS) return MPI_ERR_REQUEST;
#ifdef VAE_ALLTOALLV_INIT
  if (g_requests[slot] == MPI_REQUEST_NULL || g_built[slot].send != send || g_built[slot].recv != recv ||
      g_built[slot].counts != send_counts || g_built[slot].lo != lo || g_built[slot].hi != hi) {
    if (g_requests[slot] != MPI_REQUEST_NULL) MPI_Request_free(&g_requests[slot]);
    int rc = VAE_ALLTOALLV_INIT(send, send_counts, send_displs, MPI_FLOAT, recv, recv_counts, recv_displs,
                                MPI_FLOAT, MPI_COMM_WORLD, MPI_INFO_NULL, &g_requests[slot]);
    if (rc != MPI_SUCCESS) return rc;
    g_built[slot].send = send;
    g_built[slot].recv = recv;
    g_built[slot].counts = send_counts;
    g_built[slot].lo = lo;
    g_built[slot].hi = hi;
  }
  return MPI_Start(&g_requests[slot]);
#else
  (void)lo;
  (void)hi;
  if (g_requests[slot] != MPI_REQUEST_NULL) return MPI_ERR_REQUEST;
  return MPI_Ialltoallv(send, send_counts, send_displs, MPI_FLOAT, recv, recv_counts, recv_displs, MPI_FLOAT,
                        MPI_COMM_WORLD, &g_requests[slot]);
#endif
}

int vae_mpi_test_requests(int n, int *done) {
  *done = 1;
  if (!g_requests_ready || n <= 0) return MPI_SUCCESS;
  return MPI_Testall(n < VAE_MPI_MAX_REQUESTS ? n : VAE_MPI_MAX_REQUESTS, g_requests, done, MPI_STATUSES_IGNORE);
}

int vae_mpi_wait_requests(int n) {
  if (!g_requests_ready || n <= 0) return MPI_SUCCESS;
  return MPI_Waitall(n < VAE_MPI_MAX_REQUESTS ? n : VAE_MPI_MAX_REQUESTS, g_requests, MPI_STATUSES_IGNORE);
}

void vae_mpi_free_requests(void) {
  if (!g_requests_ready) return;
  for (int i = 0; i < VAE_MPI_MAX_REQUESTS; i++) {
    if (g_requests[i] != MPI_REQUEST_NULL) MPI_Request_free(&g_requests[i]);
    g_requests[i] = MPI_REQUEST_NULL;
  }
  memset(g_built, 0, sizeof g_built);
}
