#ifndef VAE_CSUPPORT_H
#define VAE_CSUPPORT_H
#include <stddef.h>

/// Sets flush-to-zero and denormals-are-zero (MXCSR FTZ|DAZ on x86-64, FZ on AArch64) for the
/// calling thread. Adam's first moments decay into subnormal floats after ~700 steps; without
/// this every arithmetic operation on them takes a slow microcode path.
void vae_enable_flush_to_zero(void);
/// 1 when the calling thread has FTZ and DAZ set, else 0.
int vae_flush_to_zero_enabled(void);
/// 1 when the CPU supports AVX2 and FMA (the OpenBLAS "Haswell" kernel's requirements).
int vae_cpu_has_avx2_fma(void);
/// The fastest OpenBLAS 0.3.21 kernel name this CPU can run among those that need only the
/// instruction sets checked here: "Cooperlake" (AVX-512 + BF16), "SkylakeX" (AVX-512 F/BW/DQ/VL),
/// "Haswell" (AVX2 + FMA), or NULL when none applies.
const char *vae_cpu_best_openblas_core(void);
/* The CPU's instruction-set extensions that decide which OpenBLAS kernels it can run, one bit
 * each (VAE_CPU_*). */
enum {
  VAE_CPU_AVX2 = 1, VAE_CPU_FMA = 2, VAE_CPU_AVX512F = 4, VAE_CPU_AVX512BW = 8,
  VAE_CPU_AVX512DQ = 16, VAE_CPU_AVX512VL = 32, VAE_CPU_AVX512BF16 = 64
};
int vae_cpu_features(void);

/* Convolution layers (conv.c), a whole micro-batch per call; images NCHW, or NHWC with
 * channels_last (the model's input and output rows, as image files hold them). im2col writes one
 * row per output position (b, oh, ow) holding the input taps in (c, ki, kj) order (PyTorch's
 * weight order), zeros for padding; col2im is its adjoint (overwrites x with the sums). */
void vae_im2col(const float *restrict x, float *restrict col, size_t batch, size_t channels, size_t h, size_t w,
                size_t k, size_t stride, size_t pad, size_t ho, size_t wo, int channels_last);
void vae_col2im(const float *restrict col, float *restrict x, size_t batch, size_t channels, size_t h, size_t w,
                size_t k, size_t stride, size_t pad, size_t ho, size_t wo, int channels_last);
/* rows[batch·hw, channels] → y[batch, channels, hw] (+ bias[c] when not NULL), and back. */
void vae_rows_to_nchw(const float *restrict rows, float *restrict y, const float *restrict bias, size_t batch,
                      size_t channels, size_t hw);
void vae_nchw_to_rows(const float *restrict y, float *restrict rows, size_t batch, size_t channels, size_t hw);
/* y[b, c, :] += bias[c]; db[c] = Σ_b Σ_p dy[b, c, p] (each channel's plane summed, then batch
 * in order); NCHW, or NHWC with channels_last. */
void vae_channel_bias(float *restrict y, const float *restrict bias, size_t batch, size_t channels, size_t hw,
                      int channels_last);
void vae_channel_sum(const float *restrict dy, float *restrict db, size_t batch, size_t channels, size_t hw,
                     int channels_last);
/* Activations (VAE.Activation's raw values): out = f(pre) (out may be pre), and in place
 * d ← d · f'(pre) from pre and out. ReLU as Swift's max(v, 0); leaky ReLU slope 0.01; ELU α 1;
 * softplus β 1 with PyTorch's threshold 20. */
enum { VAE_ACT_NONE = 0, VAE_ACT_RELU = 1, VAE_ACT_LEAKY_RELU = 2, VAE_ACT_ELU = 3, VAE_ACT_TANH = 4, VAE_ACT_SOFTPLUS = 5 };
void vae_activation_forward(int kind, const float *pre, float *out, size_t n);
void vae_activation_backward(int kind, const float *pre, const float *out, float *d,
                             size_t n);
/// One fused Adam pass over n elements (the arithmetic of torch.optim.Adam's default path):
///   g = scale·grad + l2·p;  m = b1·m + (1−b1)·g;  v = b2·v + (1−b2)·g²;
///   p = decay·p − step_size·m / (√v · inv_sqrt_bc2 + eps)
/// Compiled for AVX-512, AVX2+FMA and baseline x86-64, chosen at load time.
void vae_adam_update(float *restrict p, const float *restrict grad, float *restrict m,
                     float *restrict v, size_t n, float scale, float l2, float decay, float b1,
                     float b2, float step_size, float inv_sqrt_bc2, float eps);
/// Bernoulli log-likelihood from logits, stable form x·l − max(l, 0) − log(1 + e^−|l|), summed
/// per row into row_out[rows]; when grad is not NULL also d(−log p)/dl = σ(l) − x. Vectorised
/// (own exp and log1p, ≤ 2 ulp on the ranges used) and picked at load time like Adam.
void vae_bernoulli_loglik(const float *restrict x, const float *restrict logits, size_t rows,
                          size_t cols, float *restrict row_out, float *restrict grad);
/// The same with each row's sum accumulated in double into row_out[rows] (importance weights).
void vae_bernoulli_loglik_f64(const float *restrict x, const float *restrict logits, size_t rows,
                              size_t cols, double *restrict row_out, float *restrict grad);
/// A linear layer's epilogue over y[rows, cols] = x·Wᵀ, in place, one pass per row while it is
/// in cache: y = (y + bias) (+ addend[rows, cols] when not NULL), then, with relu, max(y, 0)
/// as Swift's max computes it. Plain adds, so the bits are those of the scalar loop.
void vae_bias_activation(float *restrict y, const float *restrict bias, const float *restrict addend,
                         size_t rows, size_t cols, int relu);
/// A linear layer's bias gradient db[cols] = Σ_rows dy (from 0, rows in order), in the same pass
/// masking dy in place by its ReLU (dy = 0 where relu_out ≤ 0) when relu_out is not NULL.
void vae_bias_gradient(float *restrict dy, const float *restrict relu_out, float *restrict db, size_t rows,
                       size_t cols);
/// n Bernoulli draws from a SplitMix64 stream at `state` (VAE.RandomStream's generator): draw j
/// takes the stream's next 64 bits z and gives 1 when (z >> 40)·255 < intensity[j]·2²⁴, i.e.
/// u < intensity/255 for u uniform on 24 bits, else 0. Returns the stream's state after the n
/// draws. Vectorised (draw j depends only on state and j) and picked at load time like Adam.
unsigned long long vae_bernoulli_bytes(unsigned long long state, const unsigned char *restrict intensity,
                                       float *restrict out, size_t n);
/// Writes bytes to stdout / stderr unbuffered-ish and flushes (C globals are not
/// concurrency-safe from Swift 6).
void vae_write_stdout(const char *s, size_t n);
void vae_write_stderr(const char *s, size_t n);
/// 1 when stdout is a terminal.
int vae_stdout_isatty(void);

/* Stop requests (preemption): SIGTERM, SIGINT and SIGUSR1 (Slurm's --signal) set a flag that the
 * trainer folds into a collective, so every rank stops after the same step; a second signal
 * exits at once with 128 + its number. vae_stop_signal returns the first signal seen, or 0. */
void vae_install_stop_handlers(void);
int vae_stop_signal(void);

/* Past a file-size limit (ulimit -f, RLIMIT_FSIZE) the kernel sends SIGXFSZ, which kills the
 * process with a core dump. Ignored, the write fails with EFBIG instead and becomes a one-line
 * error naming the file. */
void vae_ignore_file_size_signal(void);

/* Mapped data files: a read of a mapped file that was truncated raises SIGBUS. The guard's
 * handler (SIGBUS and SIGSEGV) compares the fault address with the ranges registered here; in
 * one, it writes the line prepared at registration (naming the file) to stderr with write(2) and
 * calls _exit(1); any other fault gets the action installed before the guard (the default crash,
 * or the Swift runtime's backtracer), as without the guard.
 * vae_mapped_file_guard_install sets the handlers (once; later calls do nothing).
 * vae_mapped_file_guard_register adds a range [start, start + length) and the whole line to
 * print (at most VAE_MAPPED_FILE_GUARD_LINE bytes; longer is cut); it returns 0, or -1 when all
 * VAE_MAPPED_FILE_GUARD_SLOTS are taken. Call both from the main thread before the mapped
 * memory is read; registration is never undone (the ranges live until the process ends). */
#define VAE_MAPPED_FILE_GUARD_SLOTS 16
#define VAE_MAPPED_FILE_GUARD_LINE 4096
void vae_mapped_file_guard_install(void);
int vae_mapped_file_guard_register(const void *start, size_t length, const char *line);

#endif
