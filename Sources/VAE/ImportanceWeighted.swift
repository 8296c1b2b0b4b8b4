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
/// each sample's gradient of −log w_i weighted by w̃_i (the plain IWAE estimator), or, with
/// `gradient: .dreg`, DReG's (Tucker et al. 2019) for the encoder.
///
/// log w is kept in Double, and log p(x|z) summed in Double (`exactLikelihood`): near −540 nats
/// a Float resolves 3e-5, and one Float accumulator over 784 pixels is off by up to ~5e-4 nats;
/// w̃ carries that error into every sample's share of the gradient (TorchObjectiveTests).
final class ImportanceWeightedBound: LatentObjective {
  let samples: Int
  let gradient: TrainingObjective.Gradient
  var exactLikelihood: Bool { true }
  /// log p(z) − log q(z|x) per sample, then log w.
  let logWeight: UnsafeMutablePointer<Double>
  /// The normalised weights w̃ (softmax over a row's samples).
  let normalized: Buffer

  init(rows: Int, samples: Int, gradient: TrainingObjective.Gradient = .standard) {
    precondition(samples >= 1)
    self.samples = samples
    self.gradient = gradient
    logWeight = .allocate(capacity: rows * samples)
    logWeight.initialize(repeating: 0, count: rows * samples)
    normalized = Buffer(rows * samples)
  }

  deinit { logWeight.deallocate() }

  func drawLatents(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int) {
    let k = samples, d = m.config.zdim
    for r in 0..<batch {
      let mu = m.mu.ptr + r * d, lv = m.logvar.ptr + r * d
      for i in 0..<k {
        let row = r * k + i, e = eps + row * d, z = m.z.ptr + row * d
        reparameterize(mu: mu, logvar: lv, eps: e, d: d, z: z, std: i == 0 ? m.std.ptr + r * d : nil)
        logWeight[row] = logPriorOverPosterior(z: z, eps: e, logvar: lv, d: d)
      }
    }
  }

  /// log w = log p(x|z) + log p(z) − log q(z|x) per sample, each row's log-mean-exp (L) and
  /// its samples' w̃, which weight their rows of the output gradient.
  func lossTerms(_ m: VAEModel, batch: Int) -> LossTerms {
    let k = samples, width = m.config.outputSize
    var recon = 0.0, bound = 0.0
    for r in 0..<batch {
      var top = -Double.infinity, mean = 0.0
      for i in 0..<k {
        let row = r * k + i
        logWeight[row] += m.rowLogLikelihood[row]
        top = max(top, logWeight[row])
        mean += m.rowLogLikelihood[row]
      }
      var sum = 0.0
      for i in 0..<k { sum += exp(logWeight[r * k + i] - top) }
      for i in 0..<k { normalized.ptr[r * k + i] = Float(exp(logWeight[r * k + i] - top) / sum) }
      let l = top + log(sum) - log(Double(k))
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
  /// weighted already); through z_i = μ + σ·ε_i, and −log q's −½ log σ² (the score term).
  ///
  /// DReG: −w̃_i² ∂log w_i/∂z_i, q's parameters held fixed in log q (∂(−log q)/∂z = ε/σ), so
  /// w̃_i·(dz_i + w̃_i·(z_i − ε_i/σ)) with dz_i = −w̃_i ∂log p(x|z_i)/∂z_i as the decoder left it;
  /// through z_i alone, no score term.
  func headGradients(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int) {
    let k = samples, d = m.config.zdim, dreg = gradient == .dreg
    for r in 0..<batch {
      for j in 0..<d {
        let s = m.std.ptr[r * d + j]
        var gm: Float = 0, gl: Float = 0
        for i in 0..<k {
          let row = r * k + i, w = normalized.ptr[row], e = eps[row * d + j], z = m.z.ptr[row * d + j]
          let g = dreg ? w * (m.dz.ptr[row * d + j] + w * (z - e / s)) : m.dz.ptr[row * d + j] + w * z
          gm += g
          gl += g * e * 0.5 * s
        }
        m.dmu.ptr[r * d + j] = gm
        m.dlogvar.ptr[r * d + j] = dreg ? gl : gl - 0.5
      }
    }
  }
}
