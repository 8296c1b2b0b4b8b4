#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// The objective seam: the part of a step between the network's outputs and its gradients.
/// `VAEModel.loss` runs the encoder (μ, log σ²), then `drawLatents` (the decoder's z rows,
/// `samples` per input row, through `reparameterize`), then the decoder over those rows and the
/// likelihood of each (log p(x|z) into `rowLogLikelihood`, d(−log p)/d output into the decoder's
/// output gradient), then `lossTerms`. `VAEModel.backward` runs the decoder's backward (dL/dz into
/// `dz`), then `headGradients` (dL/dμ, dL/d log σ²), then the heads and the encoder. The network
/// never looks inside an objective, and an objective never runs a layer.
///
/// Adding one: a case of `TrainingObjective.Kind`, a type conforming to this protocol, and its
/// line in `makeLatentObjective`.
protocol LatentObjective: AnyObject {
  /// Decoder rows per input row (samples of z per row): `z`, `dz` and `rowLogLikelihood` hold
  /// row r's sample i at row r·samples + i.
  var samples: Int { get }
  /// Whether each row's log p(x|z) must be summed in Double (`rowLogLikelihood`): when the
  /// gradient depends on its value (importance weights), not only on its per-output gradient.
  var exactLikelihood: Bool { get }
  /// The latents of `batch` rows into `m.z` from `m.mu`, `m.logvar` and `eps` ([batch, samples·zdim]),
  /// through `reparameterize`.
  func drawLatents(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int)
  /// The loss terms summed over the batch, from `m.rowLogLikelihood` (and whatever
  /// `drawLatents` kept); fills `m.reconPerExample` and `m.klPerExample`. May weight the rows of
  /// the decoder's output gradient (d(−log p)/d output per decoder row, as the likelihood wrote it).
  func lossTerms(_ m: VAEModel, batch: Int) -> LossTerms
  /// dL/dμ and dL/d log σ² into `m.dmu`, `m.dlogvar` from dL/dz (`m.dz`, the decoder's backward).
  func headGradients(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int)
}

/// The objective a model trains, with its buffers for `rows` rows (nil for a regressor: no latent).
func makeLatentObjective(_ objective: TrainingObjective, config: ModelConfig, rows: Int) -> LatentObjective? {
  guard config.kind != .regressor else { return nil }
  switch objective.kind {
  case .elbo: return EvidenceLowerBound()
  case .iwae:
    precondition(config.kind == .vae, "importance-weighted training needs a vae")
    return ImportanceWeightedBound(rows: rows, samples: objective.samples, gradient: objective.gradient)
  }
}

/// log p(z) − log q(z|x) of a z drawn by `reparameterize` from ε and log σ² (d latents):
/// −½Σz² + ½Σε² + ½Σ log σ², in Double (the 2π terms cancel). The importance weights of training
/// and of the held-out bound.
func logPriorOverPosterior(
  z: UnsafePointer<Float>, eps: UnsafePointer<Float>, logvar: UnsafePointer<Float>, d: Int
) -> Double {
  var c = 0.0
  for j in 0..<d { c += 0.5 * (Double(eps[j]) * Double(eps[j]) + Double(logvar[j]) - Double(z[j]) * Double(z[j])) }
  return c
}

/// The one reparameterisation (Kingma & Welling 2014) of one posterior's `d` latents:
/// z = μ + σ·ε with σ = exp(½ log σ²), into `z`, and σ into `std` when given. Training (every
/// objective) and the held-out estimators draw z here.
@inline(__always)
func reparameterize(
  mu: UnsafePointer<Float>, logvar: UnsafePointer<Float>, eps: UnsafePointer<Float>, d: Int,
  z: UnsafeMutablePointer<Float>, std: UnsafeMutablePointer<Float>?
) {
  for j in 0..<d {
    let s = expf(0.5 * logvar[j])
    std?[j] = s
    z[j] = mu[j] + s * eps[j]
  }
}

/// The ELBO: per row log p(x|z) − KL(q(z|x) ‖ N(0, I)), one z per row, the KL in closed form.
/// Its gradient weights the KL term by `m.klWeight` (β, or β during warm-up), each dimension also
/// by `m.klMask` (free bits); the loss terms stay unweighted.
final class EvidenceLowerBound: LatentObjective {
  var samples: Int { 1 }
  /// The gradient needs only d(−log p)/d output; the Float row sums keep the logged terms' bits.
  var exactLikelihood: Bool { false }

  func drawLatents(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int) {
    let d = m.config.zdim
    for r in 0..<batch {
      let o = r * d
      reparameterize(mu: m.mu.ptr + o, logvar: m.logvar.ptr + o, eps: eps + o, d: d, z: m.z.ptr + o, std: m.std.ptr + o)
      var kl: Float = 0
      for j in o..<(o + d) {
        let lv = m.logvar.ptr[j], s = m.std.ptr[j], mu = m.mu.ptr[j]
        kl += -0.5 * (1 + lv - mu * mu - s * s)
      }
      m.klPerExample.ptr[r] = kl
    }
  }

  func lossTerms(_ m: VAEModel, batch: Int) -> LossTerms {
    var terms = LossTerms()
    for r in 0..<batch {
      m.reconPerExample.ptr[r] = Float(m.rowLogLikelihood[r])
      terms.recon += m.rowLogLikelihood[r]
      terms.kl += Double(m.klPerExample.ptr[r])
    }
    return terms
  }

  /// Through z = μ + σ·ε, plus the KL term's own gradient, weighted (a weight of 1 changes no
  /// bit; free bits: dimension j's weight times its mask, w · 1 is w).
  func headGradients(_ m: VAEModel, eps: UnsafePointer<Float>, batch: Int) {
    let w = m.klWeight, mask = m.klMask, d = m.config.zdim
    for j in 0..<(batch * d) {
      let s = m.std.ptr[j], wj = mask.map { w * $0[j % d] } ?? w
      m.dmu.ptr[j] = m.dz.ptr[j] + wj * m.mu.ptr[j]
      m.dlogvar.ptr[j] = m.dz.ptr[j] * eps[j] * 0.5 * s + wj * (0.5 * (s * s - 1))
    }
  }
}
