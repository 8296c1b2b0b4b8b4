#include "csupport.h"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#include <pmmintrin.h>
#endif

void vae_enable_flush_to_zero(void) {
#if defined(__x86_64__) || defined(__i386__)
  _mm_setcsr(_mm_getcsr() | 0x8040); /* FTZ (bit 15) | DAZ (bit 6) */
#elif defined(__aarch64__)
  unsigned long fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  fpcr |= (1UL << 24);
  __asm__ volatile("msr fpcr, %0" : : "r"(fpcr));
#endif
}

int vae_flush_to_zero_enabled(void) {
#if defined(__x86_64__) || defined(__i386__)
  return (_mm_getcsr() & 0x8040) == 0x8040;
#elif defined(__aarch64__)
  unsigned long fpcr;
  __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
  return (fpcr >> 24) & 1;
#else
  return 0;
#endif
}

int vae_cpu_has_avx2_fma(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return 0;
#endif
}

const char *vae_cpu_best_openblas_core(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return NULL;
}

#if defined(__x86_64__) && defined(__clang__) && defined(__linux__)
#define VAE_MULTIVERSION __attribute__((target_clones("avx512f", "arch=haswell", "default")))
#else
#define VAE_MULTIVERSION
#endif

/* A square root that never sets errno: the plain sqrtf may, which stops vectorisation unless
 * compiled with -fno-math-errno (an unsafe flag for SwiftPM). v ≥ 0 here. */
#if defined(__clang__) && __clang_major__ >= 16
#define VAE_SQRTF(x) __builtin_elementwise_sqrt(x)
#else
#define VAE_SQRTF(x) __builtin_sqrtf(x)
#endif

VAE_MULTIVERSION
void vae_adam_update(float *restrict p, const float *restrict grad, float *restrict m,
                     float *restrict v, size_t n, float scale, float l2, float decay, float b1,
                     float b2, float step_size, float inv_sqrt_bc2, float eps) {
  const float omb1 = 1.0f - b1, omb2 = 1.0f - b2;
#pragma clang loop vectorize(enable) interleave(enable)
  for (size_t i = 0; i < n; i++) {
    float g = grad[i] * scale + l2 * p[i];
    float mi = b1 * m[i] + omb1 * g;
    float vi = b2 * v[i] + omb2 * g * g;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (VAE_SQRTF(vi) * inv_sqrt_bc2 + eps);
  }
}

void vae_write_stdout(const char *s, size_t n) { fwrite(s, 1, n, stdout); fflush(stdout); }
void vae_write_stderr(const char *s, size_t n) { fwrite(s, 1, n, stderr); fflush(stderr); }
int vae_stdout_isatty(void) { return isatty(STDOUT_FILENO); }

int vae_fsync_path(const char *path) {
  int fd = open(path, O_RDONLY);
  if (fd < 0) return errno;
  int rc = fsync(fd) == 0 ? 0 : errno;
  close(fd);
  return rc;
}
