/* The intra-node shared-memory exchange (MPI-3 shared windows) and the rank-order sums both
 * exchanges use; declared in mpishim.h. */
#include "mpishim.h"
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- Intra-node shared-memory exchange ---------------------------------------------------- */

static MPI_Comm g_node = MPI_COMM_NULL;
static MPI_Win g_win = MPI_WIN_NULL;
static int g_win_locked = 0;   /* MPI_Win_lock_all done on g_win */
static int g_node_rank = 0, g_node_size = 0;
static float **g_seg = NULL;  /* g_seg[q]: rank q's gradient segment */
static float *g_params = NULL; /* the node's one parameter copy (after rank 0's gradients), or NULL */

/* vae_mpi_shm_init's error exit: frees whatever it had created (window, node communicator,
 * segment table) and returns rc. */
static int shm_init_failed(int rc) {
  vae_mpi_shm_free();
  return rc;
}

int vae_mpi_shm_init(size_t count, int share_params, float **grads, float **params) {
  int world = 0, rc;
  if (count > (size_t)PTRDIFF_MAX / (2 * sizeof(float))) return MPI_ERR_COUNT;
  rc = MPI_Comm_size(MPI_COMM_WORLD, &world);
  if (rc != MPI_SUCCESS) return rc;
  rc = MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &g_node);
  if (rc != MPI_SUCCESS) return rc;
  rc = MPI_Comm_rank(g_node, &g_node_rank);
  if (rc == MPI_SUCCESS) rc = MPI_Comm_size(g_node, &g_node_size);
  if (rc != MPI_SUCCESS) return shm_init_failed(rc);
  /* Every rank must agree: all on one node, or nobody uses the window. */
  int one_node = g_node_size == world, all = 0;
  rc = MPI_Allreduce(&one_node, &all, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
  if (rc != MPI_SUCCESS) return shm_init_failed(rc);
  if (!all) return shm_init_failed(-1);
  MPI_Info info;
  rc = MPI_Info_create(&info);
  if (rc != MPI_SUCCESS) return shm_init_failed(rc);
  MPI_Info_set(info, "alloc_shared_noncontig", "true");  /* a hint: the window works without it */
  float *base = NULL;
  size_t mine = count + (share_params && g_node_rank == 0 ? count : 0);
  rc = MPI_Win_allocate_shared((MPI_Aint)(mine * sizeof(float)), sizeof(float), info, g_node,
                               &base, &g_win);
  MPI_Info_free(&info);
  if (rc != MPI_SUCCESS) return shm_init_failed(rc);
  /* From here a failure may strike one rank only (calloc, a segment query, the lock). Freeing
   * the window is collective, so the ranks first agree on the outcome and then all free it
   * together. */
  int mine_rc = MPI_SUCCESS;
  g_seg = calloc((size_t)g_node_size, sizeof(float *));
  if (g_seg == NULL) mine_rc = MPI_ERR_NO_MEM;
  for (int q = 0; mine_rc == MPI_SUCCESS && q < g_node_size; q++) {
    MPI_Aint size = 0;
    int disp = 0;
    void *ptr = NULL;
    mine_rc = MPI_Win_shared_query(g_win, q, &size, &disp, &ptr);
    g_seg[q] = ptr;
  }
  if (mine_rc == MPI_SUCCESS) {
    memset(base, 0, mine * sizeof(float));
    mine_rc = MPI_Win_lock_all(MPI_MODE_NOCHECK, g_win);
    g_win_locked = mine_rc == MPI_SUCCESS;
  }
  int worst = MPI_SUCCESS;  /* MPI error codes are positive: the max is some rank's failure */
  rc = MPI_Allreduce(&mine_rc, &worst, 1, MPI_INT, MPI_MAX, g_node);
  if (rc != MPI_SUCCESS) return rc;  /* as after the last barrier below */
  if (worst != MPI_SUCCESS) return shm_init_failed(mine_rc != MPI_SUCCESS ? mine_rc : worst);
  g_params = share_params ? g_seg[0] + count : NULL;
  *grads = base;
  *params = g_params;
  MPI_Win_sync(g_win);
  /* Should this last collective fail, the window stays for vae_mpi_finalize to free: freeing
   * is collective too, and ranks whose collective failed cannot be relied on to meet there. */
  return MPI_Barrier(g_node);
}

int vae_mpi_shm_active(void) { return g_win != MPI_WIN_NULL; }

static int shm_sync(void) {
  MPI_Win_sync(g_win);
  int rc = MPI_Barrier(g_node);
  MPI_Win_sync(g_win);
  return rc;
}

#if defined(__x86_64__) && defined(__clang__) && defined(__linux__)
#define SHM_MULTIVERSION __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define SHM_MULTIVERSION
#endif

SHM_MULTIVERSION
static void add_into(float *restrict out, const float *restrict a, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] += a[i];
}

SHM_MULTIVERSION
static void sum2_into(float *restrict out, const float *restrict a, const float *restrict b, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void vae_mpi_sum_slabs(float *out, const float *slabs, int count, size_t stride, size_t n) {
  if (count < 2) {
    if (count == 1) memmove(out, slabs, n * sizeof(float));
    return;
  }
  sum2_into(out, slabs, slabs + stride, n);
  for (int q = 2; q < count; q++) add_into(out, slabs + (size_t)q * stride, n);
}

void vae_mpi_shm_reduce_chunk(size_t at, size_t n, float *out) {
  if (g_node_size < 2) {
    memcpy(out, g_seg[0] + at, n * sizeof(float));
    return;
  }
  sum2_into(out, g_seg[0] + at, g_seg[1] + at, n);
  for (int q = 2; q < g_node_size; q++) add_into(out, g_seg[q] + at, n);
}

int vae_mpi_shm_reduce_scatter(size_t lo, size_t hi) {
  int rc = shm_sync();
  if (rc != MPI_SUCCESS) return rc;
  if (hi <= lo || g_node_size < 2) return MPI_SUCCESS;
  /* In rank order, ((g0 + g1) + g2) + …, through a small buffer (our own segment is one of
   * the inputs), then into our own segment's [lo, hi). Only we touch this range of any
   * segment until the next synchronisation. */
  float tmp[2048];
  for (size_t at = lo; at < hi; at += 2048) {
    size_t m = hi - at < 2048 ? hi - at : 2048;
    vae_mpi_shm_reduce_chunk(at, m, tmp);
    memcpy(g_seg[g_node_rank] + at, tmp, m * sizeof(float));
  }
  return MPI_SUCCESS;
}

int vae_mpi_shm_allgather(int which, const size_t *counts, const size_t *displs) {
  int rc = shm_sync();
  if (rc != MPI_SUCCESS) return rc;
  /* The shared parameter copy is everyone's already: the barrier is the whole gather. */
  if (which) return MPI_SUCCESS;
  float *mine = g_seg[g_node_rank];
  for (int q = 0; q < g_node_size; q++) {
    if (q == g_node_rank || counts[q] == 0) continue;
    memcpy(mine + displs[q], g_seg[q] + displs[q], counts[q] * sizeof(float));
  }
  return shm_sync();
}

const float *vae_mpi_shm_segment(int q) {
  if (g_seg == NULL || q < 0 || q >= g_node_size) return NULL;
  return g_seg[q];
}

int vae_mpi_shm_sync(void) { return shm_sync(); }

void vae_mpi_shm_free(void) {
  if (g_win != MPI_WIN_NULL) {
    if (g_win_locked) MPI_Win_unlock_all(g_win);
    MPI_Win_free(&g_win);
  }
  g_win = MPI_WIN_NULL;
  g_win_locked = 0;
  if (g_node != MPI_COMM_NULL) MPI_Comm_free(&g_node);
  g_node = MPI_COMM_NULL;
  free(g_seg);
  g_seg = NULL;
  g_params = NULL;
  g_node_rank = 0;
  g_node_size = 0;
}
