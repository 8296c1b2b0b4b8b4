/* The convolution layers' data movement (VAE.Conv2d, VAE.ConvTranspose2d): im2col and col2im
 * over a whole micro-batch in NCHW order, the transposes between NCHW and GEMM rows, and the
 * activations other than ReLU. The arithmetic is in cblas_sgemm; these only move and add. */
#include <math.h>
#include <string.h>
#include "csupport.h"

/* The input position a kernel tap reads: in [0, n) or out of the image (padding). */
static inline long tap(size_t o, size_t stride, size_t pad, size_t k) { return (long)(o * stride + k) - (long)pad; }

/* An image's strides: NCHW (channel planes) or NHWC (channels last, as image files hold them). */
static inline void strides(int channels_last, size_t channels, size_t h, size_t w, size_t *sc, size_t *sh, size_t *sw) {
  *sc = channels_last ? 1 : h * w;
  *sh = channels_last ? w * channels : w;
  *sw = channels_last ? channels : 1;
}

void vae_im2col(const float *restrict x, float *restrict col, size_t batch, size_t channels, size_t h, size_t w,
                size_t k, size_t stride, size_t pad, size_t ho, size_t wo, int channels_last) {
  const size_t kk = channels * k * k;
  size_t sc, sh, sw;
  strides(channels_last, channels, h, w, &sc, &sh, &sw);
  for (size_t b = 0; b < batch; b++) {
    const float *xb = x + b * channels * h * w;
    for (size_t oh = 0; oh < ho; oh++) {
      for (size_t ow = 0; ow < wo; ow++) {
        float *row = col + ((b * ho + oh) * wo + ow) * kk;
        for (size_t c = 0; c < channels; c++) {
          const float *xc = xb + c * sc;
          for (size_t ki = 0; ki < k; ki++) {
            long ih = tap(oh, stride, pad, ki);
            float *dst = row + (c * k + ki) * k;
            if (ih < 0 || ih >= (long)h) {
              memset(dst, 0, k * sizeof(float));
              continue;
            }
            for (size_t kj = 0; kj < k; kj++) {
              long iw = tap(ow, stride, pad, kj);
              dst[kj] = (iw < 0 || iw >= (long)w) ? 0.0f : xc[(size_t)ih * sh + (size_t)iw * sw];
            }
          }
        }
      }
    }
  }
}

void vae_col2im(const float *restrict col, float *restrict x, size_t batch, size_t channels, size_t h, size_t w,
                size_t k, size_t stride, size_t pad, size_t ho, size_t wo, int channels_last) {
  const size_t kk = channels * k * k;
  size_t sc, sh, sw;
  strides(channels_last, channels, h, w, &sc, &sh, &sw);
  memset(x, 0, batch * channels * h * w * sizeof(float));
  for (size_t b = 0; b < batch; b++) {
    float *xb = x + b * channels * h * w;
    for (size_t oh = 0; oh < ho; oh++) {
      for (size_t ow = 0; ow < wo; ow++) {
        const float *row = col + ((b * ho + oh) * wo + ow) * kk;
        for (size_t c = 0; c < channels; c++) {
          float *xc = xb + c * sc;
          for (size_t ki = 0; ki < k; ki++) {
            long ih = tap(oh, stride, pad, ki);
            if (ih < 0 || ih >= (long)h) continue;
            const float *src = row + (c * k + ki) * k;
            for (size_t kj = 0; kj < k; kj++) {
              long iw = tap(ow, stride, pad, kj);
              if (iw >= 0 && iw < (long)w) xc[(size_t)ih * sh + (size_t)iw * sw] += src[kj];
            }
          }
        }
      }
    }
  }
}

void vae_rows_to_nchw(const float *restrict rows, float *restrict y, const float *restrict bias, size_t batch,
                      size_t channels, size_t hw) {
  for (size_t b = 0; b < batch; b++) {
    const float *rb = rows + b * hw * channels;
    float *yb = y + b * channels * hw;
    for (size_t c = 0; c < channels; c++) {
      const float add = bias ? bias[c] : 0.0f;
      float *yc = yb + c * hw;
      for (size_t p = 0; p < hw; p++) yc[p] = rb[p * channels + c] + add;
    }
  }
}

void vae_nchw_to_rows(const float *restrict y, float *restrict rows, size_t batch, size_t channels, size_t hw) {
  for (size_t b = 0; b < batch; b++) {
    const float *yb = y + b * channels * hw;
    float *rb = rows + b * hw * channels;
    for (size_t c = 0; c < channels; c++) {
      const float *yc = yb + c * hw;
      for (size_t p = 0; p < hw; p++) rb[p * channels + c] = yc[p];
    }
  }
}

void vae_channel_bias(float *restrict y, const float *restrict bias, size_t batch, size_t channels, size_t hw,
                      int channels_last) {
  const size_t sc = channels_last ? 1 : hw, sp = channels_last ? channels : 1;
  for (size_t b = 0; b < batch; b++)
    for (size_t c = 0; c < channels; c++) {
      float *yc = y + b * channels * hw + c * sc;
      for (size_t p = 0; p < hw; p++) yc[p * sp] += bias[c];
    }
}

void vae_channel_sum(const float *restrict dy, float *restrict db, size_t batch, size_t channels, size_t hw,
                     int channels_last) {
  const size_t sc = channels_last ? 1 : hw, sp = channels_last ? channels : 1;
  memset(db, 0, channels * sizeof(float));
  for (size_t b = 0; b < batch; b++)
    for (size_t c = 0; c < channels; c++) {
      const float *dc = dy + b * channels * hw + c * sc;
      float s = 0.0f;
      for (size_t p = 0; p < hw; p++) s += dc[p * sp];
      db[c] += s;
    }
}

void vae_activation_forward(int kind, const float *pre, float *out, size_t n) {
  switch (kind) {
  case VAE_ACT_RELU:
    for (size_t i = 0; i < n; i++) out[i] = 0.0f >= pre[i] ? 0.0f : pre[i];
    break;
  case VAE_ACT_LEAKY_RELU:
    for (size_t i = 0; i < n; i++) out[i] = pre[i] > 0.0f ? pre[i] : 0.01f * pre[i];
    break;
  case VAE_ACT_ELU:
    for (size_t i = 0; i < n; i++) out[i] = pre[i] > 0.0f ? pre[i] : expm1f(pre[i]);
    break;
  case VAE_ACT_TANH:
    for (size_t i = 0; i < n; i++) out[i] = tanhf(pre[i]);
    break;
  case VAE_ACT_SOFTPLUS: /* PyTorch's: beta 1, threshold 20 */
    for (size_t i = 0; i < n; i++) out[i] = pre[i] > 20.0f ? pre[i] : log1pf(expf(pre[i]));
    break;
  default:
    if (out != pre) memcpy(out, pre, n * sizeof(float));
  }
}

void vae_activation_backward(int kind, const float *pre, const float *out, float *d,
                             size_t n) {
  switch (kind) {
  case VAE_ACT_RELU:
    for (size_t i = 0; i < n; i++) d[i] = out[i] <= 0.0f ? 0.0f : d[i];
    break;
  case VAE_ACT_LEAKY_RELU:
    for (size_t i = 0; i < n; i++) d[i] = pre[i] > 0.0f ? d[i] : 0.01f * d[i];
    break;
  case VAE_ACT_ELU:
    for (size_t i = 0; i < n; i++) d[i] = pre[i] > 0.0f ? d[i] : d[i] * (out[i] + 1.0f);
    break;
  case VAE_ACT_TANH:
    for (size_t i = 0; i < n; i++) d[i] = d[i] * (1.0f - out[i] * out[i]);
    break;
  case VAE_ACT_SOFTPLUS:
    for (size_t i = 0; i < n; i++) d[i] = pre[i] > 20.0f ? d[i] : d[i] / (1.0f + expf(-pre[i]));
    break;
  default:
    break;
  }
}
