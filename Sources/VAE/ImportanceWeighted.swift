#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Buffers of importance-weighted training, for `rows` rows of `samples` latent samples each
/// (sample i of row r is row r·samples + i of the decoder's batch).
final class ImportanceWeightedBuffers: @unchecked Sendable {
  let samples: Int
  /// z and dL/dz per sample, [rows·samples, zdim]; the target repeated per sample, [rows·samples, n].
  let z: Buffer, dz: Buffer, targets: Buffer
  /// log p(x|z) and log w per sample, then the normalised weights w̃ (softmax over a row's samples).
  let logLikelihood: Buffer, logWeight: Buffer, normalized: Buffer

  init(rows: Int, samples: Int, zdim: Int, inputSize: Int) {
    self.samples = samples
    z = Buffer(rows * samples * zdim)
    dz = Buffer(rows * samples * zdim)
    targets = Buffer(rows * samples * inputSize)
    logLikelihood = Buffer(rows * samples)
    logWeight = Buffer(rows * samples)
    normalized = Buffer(rows * samples)
  }
}

extension VAEModel {
  /// The importance-weighted objective of Burda et al. (2016) with the k samples the model was
  /// built for: per row L = log (1/k) Σ_i w_i, w_i = p(x|z_i) p(z_i) / q(z_i|x), z_i = μ + σ·ε_i,
  /// the k·B samples through the decoder as one batch. `eps` is [batch, k·zdim]. Returns
  /// recon = Σ_rows of the mean log p(x|z_i) and kl = Σ_rows (that mean − L), so that
  /// `negativeELBO` is −Σ L (the bound, not the ELBO). Prepares `importanceWeightedBackward`.
  @discardableResult
  public func importanceWeightedLoss(x: UnsafePointer<Float>, eps: UnsafePointer<Float>, batch: Int) -> LossTerms {
    guard let iw, config.kind == .vae else { preconditionFailure("importance-weighted training needs a vae built with samples > 1") }
    let k = iw.samples, d = config.zdim, n = config.targetSize
    let target = setInput(x, batch: batch)
    encodeTarget(target, batch: batch)
    for r in 0..<batch {
      for i in 0..<k {
        let row = r * k + i
        (iw.targets.ptr + row * n).update(from: target + r * n, count: n)
        var prior: Float = 0, posterior: Float = 0
        for j in 0..<d {
          let lv = logvar.ptr[r * d + j], e = eps[row * d + j]
          let s = expf(0.5 * lv)
          if i == 0 { std.ptr[r * d + j] = s }
          let zj = mu.ptr[r * d + j] + s * e
          iw.z.ptr[row * d + j] = zj
          prior += -0.5 * zj * zj
          posterior += -0.5 * e * e - 0.5 * lv
        }
        iw.logWeight.ptr[row] = prior - posterior  // log p(z) − log q(z|x); the 2π terms cancel
      }
    }
    decoder.forward(UnsafePointer(iw.z.ptr), batch: batch * k, params: params)
    _ = reconstruction(
      x: UnsafePointer(iw.targets.ptr), logits: UnsafePointer(logits), batch: batch * k, perExample: iw.logLikelihood.ptr,
      gradient: decoder.gradOutput)
    var recon = 0.0, bound = 0.0
    for r in 0..<batch {
      var top = -Float.infinity, mean = 0.0
      for i in 0..<k {
        let row = r * k + i
        iw.logWeight.ptr[row] += iw.logLikelihood.ptr[row]
        top = max(top, iw.logWeight.ptr[row])
        mean += Double(iw.logLikelihood.ptr[row])
      }
      var sum = 0.0
      for i in 0..<k { sum += exp(Double(iw.logWeight.ptr[r * k + i] - top)) }
      for i in 0..<k { iw.normalized.ptr[r * k + i] = Float(exp(Double(iw.logWeight.ptr[r * k + i] - top)) / sum) }
      let l = Double(top) + log(sum) - log(Double(k))
      reconPerExample.ptr[r] = Float(mean / Double(k))
      klPerExample.ptr[r] = Float(mean / Double(k) - l)
      recon += mean / Double(k)
      bound += l
    }
    lastTarget = target
    lastEps = eps
    lastBatch = batch
    return LossTerms(recon: recon, kl: recon - bound)
  }

  /// The gradient of −Σ_rows L for the last `importanceWeightedLoss`: each sample's gradient of
  /// −log w_i weighted by w̃_i (the plain IWAE estimator), into `grads` (overwriting).
  public func importanceWeightedBackward(ready: GradientReady? = nil) {
    guard let iw, let muHead, let logvarHead, let target = lastTarget, let eps = lastEps else {
      preconditionFailure("importanceWeightedBackward() before importanceWeightedLoss()")
    }
    let batch = lastBatch, k = iw.samples, d = config.zdim, width = config.outputSize
    for row in 0..<(batch * k) {
      let w = iw.normalized.ptr[row], g = decoder.gradOutput + row * width
      for j in 0..<width { g[j] *= w }
    }
    decoder.backward(UnsafePointer(iw.z.ptr), batch: batch * k, params: params, grads: grads, dInput: iw.dz.ptr, ready: ready)
    // d(−log w_i)/dz_i = −d log p(x|z_i)/dz_i + z_i; through z_i = μ + σ·ε_i, and −log q's −½ log σ².
    for r in 0..<batch {
      for j in 0..<d {
        let s = std.ptr[r * d + j]
        var gm: Float = 0, gl: Float = 0
        for i in 0..<k {
          let row = r * k + i
          let g = iw.dz.ptr[row * d + j] + iw.normalized.ptr[row] * iw.z.ptr[row * d + j]
          gm += g
          gl += g * eps[row * d + j] * 0.5 * s
        }
        dmu.ptr[r * d + j] = gm
        dlogvar.ptr[r * d + j] = gl - 0.5
      }
    }
    backwardEncoder(target: target, batch: batch, muHead: muHead, logvarHead: logvarHead, ready: ready)
  }
}
