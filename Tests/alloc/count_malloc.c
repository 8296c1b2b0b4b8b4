/* LD_PRELOAD interposer for the allocation tests: counts calls to the C allocator, each by the
 * code address that called it, and at exit attributes them to the shared object holding that
 * address. It prints on stderr:
 *   allocations N            every allocation whose caller is not inside OpenBLAS: vae-dist's
 *                            own code, the Swift runtime and Foundation it calls, Open MPI;
 *   allocations-openblas N   allocations OpenBLAS makes itself (its AVX-512 small-matrix
 *                            kernels malloc a packing buffer on some call shapes).
 * An allocation can only move to the second line when the instruction that called malloc lies in
 * a mapped object whose file name contains "libopenblas", so none of vae-dist's can hide there.
 * Calls glibc's __libc_* entry points directly, so it never recurses through dlsym; the table
 * of callers is static (no allocation), and callers that do not fit are counted as ours. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

#define SLOTS 16384 /* a power of two; a run has a few thousand distinct call sites at most */
static uintptr_t g_caller[SLOTS];
static unsigned long g_calls[SLOTS];
static unsigned long g_overflow;

static void count(void *caller) {
  uintptr_t key = (uintptr_t)caller;
  size_t h = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 50) & (SLOTS - 1);
  for (size_t probe = 0; probe < SLOTS; probe++, h = (h + 1) & (SLOTS - 1)) {
    uintptr_t seen = __atomic_load_n(&g_caller[h], __ATOMIC_ACQUIRE);
    if (seen == 0) {
      uintptr_t expected = 0;
      if (__atomic_compare_exchange_n(&g_caller[h], &expected, key, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        seen = key;
      else
        seen = expected;
    }
    if (seen == key) {
      __atomic_add_fetch(&g_calls[h], 1, __ATOMIC_RELAXED);
      return;
    }
  }
  __atomic_add_fetch(&g_overflow, 1, __ATOMIC_RELAXED);
}

#define CALLER __builtin_extract_return_addr(__builtin_return_address(0))
void *malloc(size_t n) { count(CALLER); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(CALLER); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(CALLER); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { count(CALLER); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { count(CALLER); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
  count(CALLER);
  void *p = __libc_memalign(a, n);
  if (!p) return 12; /* ENOMEM */
  *out = p;
  return 0;
}

static int in_openblas(uintptr_t address) {
  Dl_info info;
  if (!dladdr((void *)address, &info) || !info.dli_fname) return 0;
  const char *slash = strrchr(info.dli_fname, '/');
  return strstr(slash ? slash + 1 : info.dli_fname, "libopenblas") != NULL;
}

__attribute__((destructor)) static void report(void) {
  unsigned long ours = __atomic_load_n(&g_overflow, __ATOMIC_RELAXED), openblas = 0;
  for (size_t h = 0; h < SLOTS; h++) {
    uintptr_t caller = __atomic_load_n(&g_caller[h], __ATOMIC_ACQUIRE);
    unsigned long calls = __atomic_load_n(&g_calls[h], __ATOMIC_RELAXED);
    if (!caller || !calls) continue;
    if (in_openblas(caller)) openblas += calls; else ours += calls;
  }
  char buf[128];
  int n = snprintf(buf, sizeof buf, "allocations %lu\nallocations-openblas %lu\n", ours, openblas);
  if (n > 0) (void)!write(2, buf, (size_t)n);
}
