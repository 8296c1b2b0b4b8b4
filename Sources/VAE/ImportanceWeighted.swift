#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The importance-weighted bound of Burda et al. (2016) with k samples per row: per row
/// L = log (1/k) Σ_i w_i, w_i = p(x|z_i) p(z_i) / q(z_i|x), z_i = μ + σ·ε_i, the k·B samples
/// through the decoder as one batch (sample i of row r is decoder row r·k + i; ε is
/// [batch, k·zdim]). Its loss terms: recon = Σ_rows of the mean log p(x|z_i) and kl = Σ_rows
/// (that mean − L), so that `negativeELBO` is −Σ L (the bound, not the ELBO). Its gradient is
/// each sample's gradient of −log w_i weighted by w̃_i (the plain IWAE estimator).
final class ImportanceWeightedBound: LatentObjective {
  let samples: Int
  /// log p(z) − log q(z|x) per sample, then log w; the normalised weights w̃ (softmax over a row's samples).
  let logWeight: Buffer, normalized: Buffer

  init(rows: Int, samples: Int) {
    precondition(samples >= 1)
    self.samples = samples
    logWeight = Buffer(rows * samples)
    normalized = Buffer(rows * samples)
  }

  func drawLatents(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int) {
    let k = samples, d = m.config.zdim
    for r in 0..<batch {
      let mu = m.mu.ptr + r * d, lv = m.logvar.ptr + r * d
      for i in 0..<k {
        let row = r * k + i, e = eps + row * d, z = m.z.ptr + row * d
        reparameterize(mu: mu, logvar: lv, eps: e, d: d, z: z, std: i == 0 ? m.std.ptr + r * d : nil)
        var prior: Float = 0, posterior: Float = 0
        for j in 0..<d {
          prior += -0.5 * z[j] * z[j]
          posterior += -0.5 * e[j] * e[j] - 0.5 * lv[j]
        }
        logWeight.ptr[row] = prior - posterior  // log p(z) − log q(z|x); the 2π terms cancel
      }
    }
  }

  /// log w = log p(x|z) + log p(z) − log q(z|x) per sample, each row's log-mean-exp (L) and
  /// its samples' w̃, which weight their rows of the output gradient.
  func lossTerms(_ m: VAEModel, batch: Int) -> LossTerms {
    let k = samples, width = m.config.outputSize
    var recon = 0.0, bound = 0.0
    for r in 0..<batch {
      var top = -Float.infinity, mean = 0.0
      for i in 0..<k {
        let row = r * k + i
        logWeight.ptr[row] += m.rowLogLikelihood.ptr[row]
        top = max(top, logWeight.ptr[row])
        mean += Double(m.rowLogLikelihood.ptr[row])
      }
      var sum = 0.0
      for i in 0..<k { sum += exp(Double(logWeight.ptr[r * k + i] - top)) }
      for i in 0..<k { normalized.ptr[r * k + i] = Float(exp(Double(logWeight.ptr[r * k + i] - top)) / sum) }
      let l = Double(top) + log(sum) - log(Double(k))
      m.reconPerExample.ptr[r] = Float(mean / Double(k))
      m.klPerExample.ptr[r] = Float(mean / Double(k) - l)
      recon += mean / Double(k)
      bound += l
    }
    for row in 0..<(batch * k) {
      let w = normalized.ptr[row], g = m.decoder.gradOutput + row * width
      for j in 0..<width { g[j] *= w }
    }
    return LossTerms(recon: recon, kl: recon - bound)
  }

  /// d(−log w_i)/dz_i = −d log p(x|z_i)/dz_i + z_i, each weighted by w̃_i (the decoder's part is
  /// weighted already); through z_i = μ + σ·ε_i, and −log q's −½ log σ².
  func headGradients(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int) {
    let k = samples, d = m.config.zdim
    for r in 0..<batch {
      for j in 0..<d {
        let s = m.std.ptr[r * d + j]
        var gm: Float = 0, gl: Float = 0
        for i in 0..<k {
          let row = r * k + i
          let g = m.dz.ptr[row * d + j] + normalized.ptr[row] * m.z.ptr[row * d + j]
          gm += g
          gl += g * eps[row * d + j] * 0.5 * s
        }
        m.dmu.ptr[r * d + j] = gm
        m.dlogvar.ptr[r * d + j] = gl - 0.5
      }
    }
  }
}
