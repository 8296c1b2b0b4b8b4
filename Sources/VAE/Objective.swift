#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// What training minimises, apart from the network: the ELBO with a KL weight (β-VAE, Higgins
/// et al. 2017) that may rise linearly from 0 over the first steps (KL warm-up, Bowman et al.
/// 2016; Sønderby et al. 2016). A pure function of the step, so every rank, every micro-batch
/// and a resumed run use the same weight. Held-out metrics stay the ELBO with weight 1.
public struct TrainingObjective: Sendable, Hashable, Codable {
  public enum Kind: String, Sendable, Hashable, Codable, CaseIterable {
    /// The ELBO, its KL term weighted by `klWeight(step:)`.
    case elbo
    /// The importance-weighted bound of Burda et al. (2016) with `samples` samples per row.
    case iwae
  }
  public var kind: Kind
  /// The KL weight β once warm-up is over (the ELBO only).
  public var beta: Float
  /// Steps over which the weight rises linearly from 0 to β (0: β from the first step).
  public var klWarmup: Int
  /// Latent samples per row (iwae).
  public var samples: Int
  /// Free bits λ (Kingma et al. 2016), nats per latent dimension: the KL term of dimension j,
  /// averaged over the global batch, counts as max(λ, KL_j); 0: off.
  public var freeBits: Float = 0
  /// The estimator of the importance-weighted bound's gradient (iwae).
  public enum Gradient: String, Sendable, Hashable, Codable, CaseIterable {
    /// Burda et al.'s: each sample's gradient of log w_i weighted by w̃_i.
    case standard
    /// Doubly reparameterised (Tucker et al. 2019): the encoder's gradient through z alone,
    /// weighted by w̃_i², with no score term; the decoder's as `standard`. Same expectation,
    /// lower variance for the encoder, the more so the larger k.
    case dreg
  }
  public var gradient: Gradient = .standard

  public init(kind: Kind = .elbo, beta: Float = 1, klWarmup: Int = 0, samples: Int = 1) {
    self.kind = kind
    self.beta = beta
    self.klWarmup = klWarmup
    self.samples = samples
  }

  /// Latent samples per row the objective draws (and noise values per row per latent dimension).
  public var samplesPerRow: Int { kind == .iwae ? samples : 1 }

  /// Why these settings do not go together (one line), or nil.
  public var problem: String? {
    if kind == .iwae && (beta != 1 || klWarmup != 0) {
      return "train.beta and train.kl_warmup weight the ELBO's KL term; train.objective iwae has none (set them back, or use elbo)"
    }
    if kind == .elbo && samples != 1 { return "train.samples: \(samples) samples per row are for train.objective iwae" }
    if kind == .iwae && freeBits > 0 { return "train.free_bits applies to the ELBO's KL term; train.objective iwae has none" }
    if kind == .elbo && gradient != .standard {
      return "train.iwae_gradient \(gradient.rawValue) is an estimator of train.objective iwae's gradient (set train.objective: iwae)"
    }
    return nil
  }

  /// The weight of step `step` (counted from 0): β · min(1, step / klWarmup).
  public func klWeight(step: Int) -> Float {
    guard klWarmup > 0, step < klWarmup else { return beta }
    return beta * (Float(step) / Float(klWarmup))
  }

  /// Whether this is the plain ELBO (weight 1 at every step).
  public var isPlainELBO: Bool { kind == .elbo && beta == 1 && klWarmup == 0 && freeBits == 0 }
}

/// How the learning rate moves over a run: constant; cosine decay to 0 over the run (Loshchilov &
/// Hutter 2017); or the IWAE paper's stepwise decay (Burda et al. 2016: lr · 10^(−i/7) for 3^i
/// epochs, i = 0, 1, …). Optionally a linear warm-up from 0 over the first `warmup` steps.
/// A pure function of the step, like the objective.
public struct LearningRateSchedule: Sendable, Hashable, Codable {
  public enum Shape: String, Sendable, Hashable, Codable, CaseIterable {
    case constant, cosine, iwae
  }
  public var shape: Shape
  public var warmup: Int

  public init(shape: Shape = .constant, warmup: Int = 0) {
    self.shape = shape
    self.warmup = warmup
  }

  /// The learning rate of step `step` (from 0) of `totalSteps`, `stepsPerEpoch` steps an epoch.
  public func lr(base: Float, step: Int, stepsPerEpoch: Int, totalSteps: Int) -> Float {
    var lr = base
    switch shape {
    case .constant:
      break
    case .cosine:
      let t = Double(min(step, totalSteps)) / Double(max(totalSteps, 1))
      lr = Float(Double(base) * 0.5 * (1 + cos(Double.pi * t)))
    case .iwae:
      lr = Float(Double(base) * pow(10, -Double(Self.iwaeStage(epoch: step / max(stepsPerEpoch, 1))) / 7))
    }
    if warmup > 0 && step < warmup { lr *= Float(step + 1) / Float(warmup) }
    return lr
  }

  /// The stage i of epoch `epoch` (from 0) in the IWAE schedule: stage i lasts 3^i epochs.
  public static func iwaeStage(epoch: Int) -> Int {
    var stage = 0, end = 1, length = 1
    while epoch >= end {
      stage += 1
      length *= 3
      end += length
    }
    return stage
  }
}
