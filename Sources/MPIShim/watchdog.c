#define _GNU_SOURCE
#include "mpishim.h"
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The start-up watchdog (see mpishim.h). One thread sleeps on a condition variable until the
 * deadline or vae_watchdog_disarm; the phase text is copied under the lock, so callers may pass
 * temporary strings. */
static pthread_mutex_t wd_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wd_cond;
static int wd_armed = 0;
static double wd_seconds = 0;
static char wd_phase[256] = "start-up";
static char wd_setting[128] = "";
static struct timespec wd_deadline;

/* This process's rank in the job, set by the main thread (vae_watchdog_set_rank): the
 * launcher's word for it before MPI_Init, MPI's after; -1 when unknown. The watchdog thread
 * never calls MPI: MPI is initialised FUNNELED, so only the main thread may, and the main
 * thread may be inside a collective when it fires. */
static volatile int wd_known_rank = -1;

void vae_watchdog_set_rank(int rank) { wd_known_rank = rank; }

static int wd_rank(void) { return wd_known_rank; }

/* Prints one line and exits at once with status 1, without MPI calls and without exit
 * handlers (the shim's exit hook would call MPI_Abort from this thread). A rank that exits
 * non-zero without MPI_Finalize makes mpirun (and srun --kill-on-bad-exit) end the job. */
static void wd_fire(const char *phase, double seconds, const char *setting) {
  char line[640];
  int rank = wd_rank();
  char who[32] = "";
  if (rank >= 0) snprintf(who, sizeof who, "rank %d: ", rank);
  snprintf(line, sizeof line,
           "vae-dist: error: %sstart-up did not finish within %g s: still waiting for %s; "
           "ending the job (%s)\n",
           who, seconds, phase, setting);
  (void)!write(2, line, strlen(line));
  _exit(1);
}

static void *wd_main(void *arg) {
  (void)arg;
  pthread_mutex_lock(&wd_lock);
  while (wd_armed) {
    int rc = pthread_cond_timedwait(&wd_cond, &wd_lock, &wd_deadline);
    if (rc == ETIMEDOUT && wd_armed) {
      char phase[sizeof wd_phase], setting[sizeof wd_setting];
      memcpy(phase, wd_phase, sizeof phase);
      memcpy(setting, wd_setting, sizeof setting);
      double seconds = wd_seconds;
      pthread_mutex_unlock(&wd_lock);
      wd_fire(phase, seconds, setting);
    }
  }
  pthread_mutex_unlock(&wd_lock);
  return NULL;
}

void vae_watchdog_arm(double seconds, const char *setting) {
  if (!(seconds > 0)) return;
  pthread_mutex_lock(&wd_lock);
  if (wd_armed) {
    pthread_mutex_unlock(&wd_lock);
    return;
  }
  pthread_condattr_t attr;
  pthread_condattr_init(&attr);
  pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
  pthread_cond_init(&wd_cond, &attr);
  pthread_condattr_destroy(&attr);
  clock_gettime(CLOCK_MONOTONIC, &wd_deadline);
  double whole = (double)(long)seconds;
  wd_deadline.tv_sec += (time_t)whole;
  wd_deadline.tv_nsec += (long)((seconds - whole) * 1e9);
  if (wd_deadline.tv_nsec >= 1000000000L) {
    wd_deadline.tv_sec += 1;
    wd_deadline.tv_nsec -= 1000000000L;
  }
  wd_seconds = seconds;
  snprintf(wd_setting, sizeof wd_setting, "%s", setting != NULL ? setting : "");
  wd_armed = 1;
  pthread_t thread;
  if (pthread_create(&thread, NULL, wd_main, NULL) == 0) {
    pthread_detach(thread);
  } else {
    wd_armed = 0;  /* no thread: run without the safety net rather than fail the run */
  }
  pthread_mutex_unlock(&wd_lock);
}

void vae_watchdog_phase(const char *what) {
  pthread_mutex_lock(&wd_lock);
  snprintf(wd_phase, sizeof wd_phase, "%s", what != NULL ? what : "start-up");
  pthread_mutex_unlock(&wd_lock);
}

void vae_watchdog_disarm(void) {
  pthread_mutex_lock(&wd_lock);
  if (wd_armed) {
    wd_armed = 0;
    pthread_cond_signal(&wd_cond);
  }
  pthread_mutex_unlock(&wd_lock);
}
