/* An LD_PRELOAD wrapper over libmpi for MPITests.testWatchdogMakesNoMPICallOffTheMainThread:
 * remembers the thread that initialised MPI and prints "off-thread MPI call: NAME" on stderr
 * whenever another thread calls one of the functions a watchdog might reach for. vae-dist
 * initialises MPI FUNNELED, so only that thread may call MPI at all. */
#define _GNU_SOURCE
#include <mpi.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

static pthread_t init_thread;
static volatile int initialised = 0;

static void check(const char *name) {
  if (initialised && !pthread_equal(pthread_self(), init_thread)) {
    char line[128];
    int n = snprintf(line, sizeof line, "off-thread MPI call: %s\n", name);
    (void)!write(2, line, (size_t)n);
  }
}

int MPI_Init_thread(int *argc, char ***argv, int required, int *provided) {
  init_thread = pthread_self();
  initialised = 1;
  return PMPI_Init_thread(argc, argv, required, provided);
}
int MPI_Initialized(int *flag) { check("MPI_Initialized"); return PMPI_Initialized(flag); }
int MPI_Finalized(int *flag) { check("MPI_Finalized"); return PMPI_Finalized(flag); }
int MPI_Comm_rank(MPI_Comm comm, int *rank) { check("MPI_Comm_rank"); return PMPI_Comm_rank(comm, rank); }
int MPI_Abort(MPI_Comm comm, int code) { check("MPI_Abort"); return PMPI_Abort(comm, code); }
