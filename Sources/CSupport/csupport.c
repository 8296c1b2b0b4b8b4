#include "csupport.h"
#include <stdio.h>
#include <unistd.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#include <pmmintrin.h>
#endif

/* The C types of csupport.h as Swift imports them: int as Int32, size_t as Int, float as Float.
 * A platform where these differ would corrupt arguments silently, so refuse to build there. */
_Static_assert(sizeof(int) == 4, "Swift imports int as Int32");
_Static_assert(sizeof(size_t) == sizeof(void *), "Swift imports size_t as Int, which is pointer-sized");
_Static_assert(sizeof(float) == 4, "Swift imports float as Float (32 bits)");

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

int vae_cpu_features(void) {
  int f = 0;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2")) f |= VAE_CPU_AVX2;
  if (__builtin_cpu_supports("fma")) f |= VAE_CPU_FMA;
  if (__builtin_cpu_supports("avx512f")) f |= VAE_CPU_AVX512F;
  if (__builtin_cpu_supports("avx512bw")) f |= VAE_CPU_AVX512BW;
  if (__builtin_cpu_supports("avx512dq")) f |= VAE_CPU_AVX512DQ;
  if (__builtin_cpu_supports("avx512vl")) f |= VAE_CPU_AVX512VL;
  if (__builtin_cpu_supports("avx512bf16")) f |= VAE_CPU_AVX512BF16;
#endif
  return f;
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

/* e^x for x ≤ 0 (Cephes expf): x = n·ln2 + r, |r| ≤ ln2/2, degree-6 polynomial, 2^n from bits.
 * Below −87 (where e^x < 1.7e-38, the smallest normal float) the result is 0, as with
 * flush-to-zero. */
static inline float vae_exp_nonpositive(float x0) {
  float x = x0 < -87.0f ? -87.0f : x0;
  float fn = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int n = (int)fn;
  union { int i; float f; } scale = {(n + 127) << 23};
  return x0 < -87.0f ? 0.0f : p * scale.f;
}

/* log(1 + e) for e in [0, 1]: 2·atanh(t) with t = e / (2 + e) ≤ 1/3, a series in t² that is
 * exact to float precision with nine terms and keeps full relative accuracy for tiny e. */
static inline float vae_log1p_unit(float e) {
  float t = e / (2.0f + e);
  float s = t * t;
  float q = 1.0f / 17;
  q = q * s + 1.0f / 15;
  q = q * s + 1.0f / 13;
  q = q * s + 1.0f / 11;
  q = q * s + 1.0f / 9;
  q = q * s + 1.0f / 7;
  q = q * s + 1.0f / 5;
  q = q * s + 1.0f / 3;
  q = q * s + 1.0f;
  return 2.0f * t * q;
}

VAE_MULTIVERSION
void vae_bernoulli_loglik(const float *restrict x, const float *restrict logits, size_t rows,
                          size_t cols, float *restrict row_out, float *restrict grad) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols, *lr = logits + r * cols;
    float acc = 0;
    if (grad) {
      float *gr = grad + r * cols;
#pragma clang loop vectorize(enable)
      for (size_t j = 0; j < cols; j++) {
        float v = lr[j], a = v < 0 ? -v : v;
        float e = vae_exp_nonpositive(-a);
        acc += xr[j] * v - (v > 0 ? v : 0) - vae_log1p_unit(e);
        float inv = 1.0f / (1.0f + e);
        gr[j] = (v >= 0 ? inv : e * inv) - xr[j];
      }
    } else {
#pragma clang loop vectorize(enable)
      for (size_t j = 0; j < cols; j++) {
        float v = lr[j], a = v < 0 ? -v : v;
        acc += xr[j] * v - (v > 0 ? v : 0) - vae_log1p_unit(vae_exp_nonpositive(-a));
      }
    }
    row_out[r] = acc;
  }
}

/* The same log-likelihood and gradient with each row's terms summed in double (the terms and
 * the gradient are the float computations above): a row of 784 terms near −540 summed in one
 * float accumulator is off by ~1e-4 nats, which importance weights turn into gradient error. */
VAE_MULTIVERSION
void vae_bernoulli_loglik_f64(const float *restrict x, const float *restrict logits, size_t rows,
                              size_t cols, double *restrict row_out, float *restrict grad) {
  for (size_t r = 0; r < rows; r++) {
    const float *xr = x + r * cols, *lr = logits + r * cols;
    float *gr = grad ? grad + r * cols : NULL;
    double acc = 0;
#pragma clang loop vectorize(enable)
    for (size_t j = 0; j < cols; j++) {
      float v = lr[j], a = v < 0 ? -v : v;
      float e = vae_exp_nonpositive(-a);
      acc += (double)(xr[j] * v - (v > 0 ? v : 0) - vae_log1p_unit(e));
      if (gr) gr[j] = (v >= 0 ? 1.0f / (1.0f + e) : e * (1.0f / (1.0f + e))) - xr[j];
    }
    row_out[r] = acc;
  }
}

VAE_MULTIVERSION
void vae_bias_activation(float *restrict y, const float *restrict bias, const float *restrict addend,
                         size_t rows, size_t cols, int relu) {
  for (size_t r = 0; r < rows; r++) {
    float *yr = y + r * cols;
    const float *ar = addend ? addend + r * cols : NULL;
    if (ar) {
#pragma clang loop vectorize(enable)
      for (size_t j = 0; j < cols; j++) yr[j] = yr[j] + bias[j] + ar[j];
    } else {
#pragma clang loop vectorize(enable)
      for (size_t j = 0; j < cols; j++) yr[j] = yr[j] + bias[j];
    }
    if (relu) {
      /* Swift's max(v, 0): 0 when 0 >= v (so −0 becomes +0), v otherwise (NaN stays NaN). */
#pragma clang loop vectorize(enable)
      for (size_t j = 0; j < cols; j++) yr[j] = 0.0f >= yr[j] ? 0.0f : yr[j];
    }
  }
}

VAE_MULTIVERSION
void vae_bias_gradient(float *restrict dy, const float *restrict relu_out, float *restrict db, size_t rows,
                       size_t cols) {
  memset(db, 0, cols * sizeof(float));
  for (size_t r = 0; r < rows; r++) {
    float *dr = dy + r * cols;
    if (relu_out) {
      const float *hr = relu_out + r * cols;
#pragma clang loop vectorize(enable)
      for (size_t j = 0; j < cols; j++) {
        float d = hr[j] <= 0.0f ? 0.0f : dr[j];
        dr[j] = d;
        db[j] += d;
      }
    } else {
#pragma clang loop vectorize(enable)
      for (size_t j = 0; j < cols; j++) db[j] += dr[j];
    }
  }
}

VAE_MULTIVERSION
unsigned long long vae_bernoulli_bytes(unsigned long long state, const unsigned char *restrict intensity,
                                       float *restrict out, size_t n) {
  const uint64_t gamma = 0x9E3779B97F4A7C15ULL;
#pragma clang loop vectorize(enable)
  for (size_t j = 0; j < n; j++) {
    uint64_t z = (uint64_t)state + (uint64_t)(j + 1) * gamma;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    out[j] = (z >> 40) * 255 < ((uint64_t)intensity[j] << 24) ? 1.0f : 0.0f;
  }
  return (uint64_t)state + (uint64_t)n * gamma;
}

void vae_write_stdout(const char *s, size_t n) { fwrite(s, 1, n, stdout); fflush(stdout); }
void vae_write_stderr(const char *s, size_t n) { fwrite(s, 1, n, stderr); fflush(stderr); }
int vae_stdout_isatty(void) { return isatty(STDOUT_FILENO); }

static volatile sig_atomic_t vae_stop_requested = 0;

static void vae_on_stop_signal(int sig) {
  if (vae_stop_requested) _exit(128 + sig); /* second signal: leave now (async-signal-safe) */
  vae_stop_requested = sig;
}

void vae_install_stop_handlers(void) {
  struct sigaction sa;
  sa.sa_handler = vae_on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGUSR1, &sa, NULL);
}

int vae_stop_signal(void) { return (int)vae_stop_requested; }

void vae_ignore_file_size_signal(void) { signal(SIGXFSZ, SIG_IGN); }

/* The mapped-file guard (csupport.h). The table is written by the main thread before the
 * mapped memory is read and only read by the handler; `count` is published last. */
struct vae_mapped_range {
  uintptr_t start, end;
  size_t line_length;
  char line[VAE_MAPPED_FILE_GUARD_LINE];
};
static struct vae_mapped_range vae_mapped_ranges[VAE_MAPPED_FILE_GUARD_SLOTS];
static volatile sig_atomic_t vae_mapped_count = 0;
static struct sigaction vae_previous_bus, vae_previous_segv;

static void vae_on_mapped_fault(int sig, siginfo_t *info, void *context) {
  (void)context;
  uintptr_t a = (uintptr_t)info->si_addr;
  int fault = info->si_code > 0; /* raised by the kernel for an access, not sent by kill(2) */
  for (int i = 0; fault && i < vae_mapped_count; i++) {
    const struct vae_mapped_range *r = &vae_mapped_ranges[i];
    if (a >= r->start && a < r->end) {
      size_t done = 0;
      while (done < r->line_length) {
        ssize_t n = write(STDERR_FILENO, r->line + done, r->line_length - done);
        if (n <= 0) break;
        done += (size_t)n;
      }
      _exit(1);
    }
  }
  /* Not a mapped data file: the action from before the guard (the default, or the Swift
   * runtime's backtracer) is restored. Returning re-executes the faulting instruction, which
   * faults again and gets that action. */
  sigaction(sig, sig == SIGBUS ? &vae_previous_bus : &vae_previous_segv, NULL);
  if (!fault) raise(sig); /* sent by kill(2): deliver it again */
}

void vae_mapped_file_guard_install(void) {
  static int installed = 0;
  if (installed) return;
  installed = 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = vae_on_mapped_fault;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGBUS, &sa, &vae_previous_bus);
  sigaction(SIGSEGV, &sa, &vae_previous_segv);
}

int vae_mapped_file_guard_register(const void *start, size_t length, const char *line) {
  int i = vae_mapped_count;
  if (i >= VAE_MAPPED_FILE_GUARD_SLOTS) return -1;
  struct vae_mapped_range *r = &vae_mapped_ranges[i];
  r->start = (uintptr_t)start;
  r->end = (uintptr_t)start + length;
  size_t n = strlen(line);
  if (n > sizeof r->line) n = sizeof r->line;
  memcpy(r->line, line, n);
  r->line_length = n;
  __atomic_signal_fence(__ATOMIC_SEQ_CST);
  vae_mapped_count = i + 1;
  return 0;
}
