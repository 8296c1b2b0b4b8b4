/* LD_PRELOAD interposer for the allocation test: counts calls to the C allocator and prints
 * "allocations N" on stderr at exit. Calls glibc's __libc_* entry points directly, so it never
 * recurses through dlsym. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static unsigned long g_count;

void *malloc(size_t n) { __atomic_add_fetch(&g_count, 1, __ATOMIC_RELAXED); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { __atomic_add_fetch(&g_count, 1, __ATOMIC_RELAXED); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { __atomic_add_fetch(&g_count, 1, __ATOMIC_RELAXED); return __libc_realloc(p, n); }
void *memalign(size_t a, size_t n) { __atomic_add_fetch(&g_count, 1, __ATOMIC_RELAXED); return __libc_memalign(a, n); }
void *aligned_alloc(size_t a, size_t n) { __atomic_add_fetch(&g_count, 1, __ATOMIC_RELAXED); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
  __atomic_add_fetch(&g_count, 1, __ATOMIC_RELAXED);
  void *p = __libc_memalign(a, n);
  if (!p) return 12; /* ENOMEM */
  *out = p;
  return 0;
}

__attribute__((destructor)) static void report(void) {
  char buf[64];
  int n = snprintf(buf, sizeof buf, "allocations %lu\n", g_count);
  if (n > 0) (void)!write(2, buf, (size_t)n);
}
