#ifndef VAE_MPISHIM_H
#define VAE_MPISHIM_H
#include <stddef.h>

/* A handful of plain C functions over MPI. No MPI type crosses into Swift: Open MPI's
 * MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM and MPI_IN_PLACE are macros over addresses of global
 * structs that Swift cannot import. Every function returns 0 or an MPI error code; turn a
 * code into text with vae_mpi_error_string. All calls act on MPI_COMM_WORLD. */

/* MPI_Init_thread(FUNNELED); errors on MPI_COMM_WORLD return codes instead of aborting.
 * Also registers an exit hook: a process that exits non-zero after init without finalizing
 * calls MPI_Abort, so the other ranks never hang in a collective (with glibc's on_exit; where
 * only atexit exists, which cannot see the status, any exit without finalizing aborts). */
int vae_mpi_init(int *rank, int *size);
int vae_mpi_finalize(void);
int vae_mpi_is_initialized(void);
/* In-place sum over all ranks; counts beyond INT_MAX are sent in chunks. */
int vae_mpi_allreduce_sum_f32(float *buf, size_t count);
int vae_mpi_allreduce_sum_f64(double *buf, size_t count);
/* In-place reduce-scatter: the sum of every rank's buf; rank r keeps (only) the elements
 * [displs[r], displs[r] + counts[r]) of the sum, at that position in buf. */
int vae_mpi_reduce_scatter_sum_f32(float *buf, const int *counts, const int *displs);
/* In-place allgather: rank r contributes buf[displs[r] ..< displs[r] + counts[r]]. */
int vae_mpi_allgather_f32(float *buf, const int *counts, const int *displs);
/* Gather of every rank's `count` floats to `root`, into recv at displs[q] (recv: root only). */
int vae_mpi_gather_f32(const float *send, int count, float *recv, const int *counts, const int *displs,
                       int root);
/* In-place allgather of one uint64 per rank into out[size]. */
int vae_mpi_allgather_u64(unsigned long long value, unsigned long long *out);
/* Allgather of n uint64 per rank (the same n on every rank) into out[size * n], rank-major. */
int vae_mpi_allgather_u64n(const unsigned long long *values, int n, unsigned long long *out);
int vae_mpi_bcast_bytes(void *buf, size_t count, int root);
int vae_mpi_barrier(void);
/* Prints nothing; ends every rank of the job with `code`. */
void vae_mpi_abort(int code);
double vae_mpi_wtime(void);
void vae_mpi_error_string(int code, char *buf, int len);

/* Non-blocking exchange in buckets: up to VAE_MPI_MAX_REQUESTS outstanding requests, kept here
 * (MPI_Request does not cross into Swift) and named by slot. vae_mpi_ialltoallv_f32 starts an
 * all-to-all of floats in `slot`: a persistent one (built once per slot and arguments, lo and hi
 * naming the bucket, then restarted) where MPI has persistent collectives, else
 * MPI_Ialltoallv; the arrays must stay valid and unchanged until the slot is freed.
 * vae_mpi_test_requests drives progress on slots [0, n) and sets *done to 1 when all have
 * completed; vae_mpi_wait_requests waits for them; vae_mpi_free_requests frees every slot's
 * request (none may be active; vae_mpi_finalize calls it). */
#define VAE_MPI_MAX_REQUESTS 64
int vae_mpi_ialltoallv_f32(const float *send, const int *send_counts, const int *send_displs, float *recv,
                           const int *recv_counts, const int *recv_displs, int slot, long long lo, long long hi);
int vae_mpi_test_requests(int n, int *done);
int vae_mpi_wait_requests(int n);
void vae_mpi_free_requests(void);
/* out[i] = ((slab_0[i] + slab_1[i]) + slab_2[i]) + … for i < n, slab_q = slabs + q·stride:
 * every rank's copy of a shard summed in rank order, the order of the shared window. */
void vae_mpi_sum_slabs(float *out, const float *slabs, int count, size_t stride, size_t n);

/* Intra-node shared-memory exchange (MPI-3 shared windows), used when every rank runs on one
 * node. Each rank owns a segment of `count` floats, its gradient arena, which the model
 * computes straight into, so nothing is copied in. With share_params, rank 0's segment is
 * followed by the node's single parameter copy: the sharded optimizer updates it in disjoint
 * slices, so no parameter allgather copies anything. vae_mpi_shm_init returns 0 and the
 * pointers (params NULL without share_params), or a non-zero code when the ranks span several
 * nodes (-1), memory for the segment table ran out (MPI_ERR_NO_MEM) or MPI refused the window
 * (an MPI error code). A failure frees the window and node communicator again, except after a
 * failed collective, when they are left for vae_mpi_finalize (freeing them is collective). */
int vae_mpi_shm_init(size_t count, int share_params, float **grads, float **params);
int vae_mpi_shm_active(void);
/* Reduce-scatter of the gradient segments: rank r sums rows [lo, hi) over every rank's segment,
 * in rank order, into its own segment. Synchronises first (the others' backward must be done). */
int vae_mpi_shm_reduce_scatter(size_t lo, size_t hi);
/* Allgather of the gradient segments (which = 0): copies every other rank's
 * [displs[q], displs[q] + counts[q]) from its segment into ours, synchronising before and after
 * (so the next step may overwrite). For the shared parameters (which = 1) only the first
 * synchronisation: every rank's slice is already in the one copy. */
int vae_mpi_shm_allgather(int which, const size_t *counts, const size_t *displs);
/* Sum over every rank's gradient segment of [at, at + n), in rank order, into out[n]. No
 * synchronisation: call vae_mpi_shm_sync first. The same order as vae_mpi_shm_reduce_scatter,
 * so the results are bit-identical. */
void vae_mpi_shm_reduce_chunk(size_t at, size_t n, float *out);
/* Rank q's gradient segment, readable by every rank. */
const float *vae_mpi_shm_segment(int q);
/* Memory fence + barrier over the node: after it, every rank sees every other's writes. */
int vae_mpi_shm_sync(void);
void vae_mpi_shm_free(void);

/* Start-up watchdog (a second line of defence behind the option agreement): a thread that, if
 * vae_watchdog_disarm is not called within `seconds` of vae_watchdog_arm, prints one line on
 * stderr naming this rank and what it is waiting for (the last vae_watchdog_phase) and calls
 * _exit(1), which makes mpirun end the others. It calls no MPI function (MPI is FUNNELED: only
 * the main thread may), so the rank is recorded beforehand by vae_watchdog_set_rank. Phases
 * may be set without arming (no effect). */
void vae_watchdog_arm(double seconds, const char *setting);
void vae_watchdog_set_rank(int rank);
void vae_watchdog_phase(const char *what);
void vae_watchdog_disarm(void);
#endif
