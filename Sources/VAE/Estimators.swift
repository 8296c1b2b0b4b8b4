#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// How the evaluation noise ε is chosen.
public enum EvalNoise: Sendable, Hashable {
  /// ε from the counter RNG: sample `s` of example `g` uses stream (evalNoise, epoch s, index g).
  case sampled(CounterRNG)
  /// ε = 0: z is the posterior mean (a deterministic check, not a bound).
  case zero
}

/// Held-out estimators over a model's parameters: the ELBO (one or more samples) and the
/// importance-weighted bound of Burda et al. (2016), computed in chunks of at most `maxRows`
/// decoder rows so that thousands of samples per image fit in memory.
public final class Estimator: @unchecked Sendable {
  public let model: VAEModel
  let eps: Buffer
  let xRows: Buffer
  let zRows: Buffer
  let correction: UnsafeMutablePointer<Double>
  let recon: Buffer
  let rowExample: UnsafeMutablePointer<Int>
  let muSave: Buffer
  let lvSave: Buffer

  public init(config: ModelConfig, params: Arena, maxRows: Int = 500) {
    model = VAEModel(config: config, maxBatch: maxRows, params: params)
    let d = config.latentSize, n = config.inputSize
    eps = Buffer(maxRows * d)
    xRows = Buffer(maxRows * n)
    zRows = Buffer(maxRows * d)
    recon = Buffer(maxRows)
    correction = .allocate(capacity: maxRows)
    rowExample = .allocate(capacity: maxRows)
    muSave = Buffer(maxRows * d)
    lvSave = Buffer(maxRows * d)
  }

  deinit {
    correction.deallocate()
    rowExample.deallocate()
  }

  public var maxRows: Int { model.maxBatch }

  func fillNoise(_ noise: EvalNoise, sample: Int, firstIndex: Int, count: Int) {
    let d = model.config.latentSize
    switch noise {
    case .zero:
      eps.ptr.update(repeating: 0, count: count * d)
    case .sampled(let rng):
      rng.fillNormal(eps.ptr, rows: count, dim: d, purpose: .evalNoise, epoch: UInt64(sample)) {
        UInt64(firstIndex + $0)
      }
    }
  }

  /// Σ over `count` examples (rows of `x`, global indices from `firstIndex`) of the ELBO terms,
  /// averaged over `samples` draws of ε per example. Accumulated in Double.
  public func elbo(
    x: UnsafePointer<Float>, count: Int, firstIndex: Int, samples: Int = 1, noise: EvalNoise
  ) -> LossTerms {
    var total = LossTerms()
    let n = model.config.inputSize
    var start = 0
    while start < count {
      let b = min(maxRows, count - start)
      for s in 0..<samples {
        fillNoise(noise, sample: s, firstIndex: firstIndex + start, count: b)
        total = total + model.loss(x: x + start * n, eps: UnsafePointer(eps.ptr), batch: b)
      }
      start += b
    }
    return LossTerms(recon: total.recon / Double(samples), kl: total.kl / Double(samples))
  }

  /// log p(x) ≥ log (1/K) Σ_k p(x, z_k) / q(z_k|x), per example, into `out[0..<count]`.
  /// Examples go in groups of up to `maxRows`; their K samples fill decoder rows, which are
  /// decoded whenever a chunk of `maxRows` is full.
  public func importanceWeighted(
    x: UnsafePointer<Float>, count: Int, firstIndex: Int, samples K: Int, rng: CounterRNG,
    out: UnsafeMutablePointer<Double>
  ) {
    precondition(K >= 1 && model.config.kind != .regressor, "the importance-weighted bound needs a latent")
    let n = model.config.inputSize
    var start = 0
    while start < count {
      let g = min(maxRows, count - start)
      encodeAndSavePosterior(x + start * n, batch: g)
      var weights = [LogSumExp](repeating: LogSumExp(), count: g)
      var rows = 0  // rows are (example, sample) pairs
      for i in 0..<g {
        for k in 0..<K {
          var noise = rng.stream(.evalNoise, epoch: UInt64(k), index: UInt64(firstIndex + start + i))
          correction[rows] = drawLatent(row: rows, example: i, noise: &noise)
          rowExample[rows] = i
          (xRows.ptr + rows * n).update(from: x + (start + i) * n, count: n)
          rows += 1
          if rows == maxRows { addLogWeights(rows: rows, to: &weights); rows = 0 }
        }
      }
      addLogWeights(rows: rows, to: &weights)
      for i in 0..<g { out[start + i] = weights[i].value - log(Double(K)) }
      start += g
    }
  }

  /// Encodes `batch` examples and keeps their μ and log σ² (decoding reuses the model's buffers).
  func encodeAndSavePosterior(_ x: UnsafePointer<Float>, batch: Int) {
    let d = model.config.zdim
    model.encode(x, batch: batch)
    muSave.ptr.update(from: model.mu.ptr, count: batch * d)
    lvSave.ptr.update(from: model.logvar.ptr, count: batch * d)
  }

  /// z = μ + σ·ε (`reparameterize`) for `example` of the saved posteriors into row `row` of
  /// `zRows`, ε from `noise` (kept in row `row` of `eps`); returns `logPriorOverPosterior`.
  func drawLatent(row: Int, example i: Int, noise: inout RandomStream) -> Double {
    let d = model.config.zdim
    let e = eps.ptr + row * d, lv = lvSave.ptr + i * d, z = zRows.ptr + row * d
    for j in 0..<d { e[j] = noise.nextNormal() }
    reparameterize(mu: muSave.ptr + i * d, logvar: lv, eps: e, d: d, z: z, std: nil)
    return logPriorOverPosterior(z: z, eps: e, logvar: lv, d: d)
  }

  /// Decodes the first `rows` rows (inputs in `xRows`, latents in `zRows`) and adds each row's
  /// log weight log p(x|z) + `correction` to its example's sum. Conditional kinds: each row's
  /// condition comes with it, and the target is its Y.
  func addLogWeights(rows: Int, to weights: inout [LogSumExp]) {
    guard rows > 0 else { return }
    let target = model.setInput(UnsafePointer(xRows.ptr), batch: rows)
    model.decode(UnsafePointer(zRows.ptr), batch: rows)
    _ = model.reconstruction(
      x: target, logits: UnsafePointer(model.logits), batch: rows, perExample: recon.ptr, gradient: nil)
    for r in 0..<rows { weights[rowExample[r]].add(Double(recon.ptr[r]) + correction[r]) }
  }

  /// Per latent dimension, over the `count` examples (in Double): the variance of the posterior
  /// mean E_q[z_j | x] = μ_j(x) — Burda et al. (2016) call dimension j active when it exceeds
  /// 0.01: only then does the code carry information about x — and the mean KL of that
  /// dimension, ½(μ_j² + σ_j² − 1 − log σ_j²), which sums over j to the ELBO's KL term. The
  /// KL of inactive dimensions is what a model pays for units it does not use.
  public func latentStatistics(x: UnsafePointer<Float>, count: Int) -> (meanVariance: [Double], kl: [Double]) {
    precondition(model.config.kind != .regressor, "a regressor has no latent")
    let n = model.config.inputSize, d = model.config.zdim
    var sum = [Double](repeating: 0, count: d), squares = [Double](repeating: 0, count: d)
    var kl = [Double](repeating: 0, count: d)
    var start = 0
    while start < count {
      let b = min(maxRows, count - start)
      model.encode(x + start * n, batch: b)
      for r in 0..<b {
        for j in 0..<d {
          let m = Double(model.mu.ptr[r * d + j]), lv = Double(model.logvar.ptr[r * d + j])
          sum[j] += m
          squares[j] += m * m
          kl[j] += 0.5 * (m * m + exp(lv) - 1 - lv)
        }
      }
      start += b
    }
    let c = Double(max(count, 1))
    return ((0..<d).map { max(squares[$0] / c - (sum[$0] / c) * (sum[$0] / c), 0) }, kl.map { $0 / c })
  }

  /// The per-dimension variance of the posterior mean (see `latentStatistics`).
  public func posteriorMeanVariance(x: UnsafePointer<Float>, count: Int) -> [Double] {
    latentStatistics(x: x, count: count).meanVariance
  }
}

/// log Σ exp(wᵢ) accumulated one term at a time, rescaled to the largest term so far so that
/// nothing overflows.
struct LogSumExp {
  var maximum = -Double.infinity
  var sum = 0.0

  mutating func add(_ w: Double) {
    if w > maximum {
      sum = sum * exp(maximum - w) + 1
      maximum = w
    } else {
      sum += exp(w - maximum)
    }
  }

  var value: Double { maximum + log(sum) }
}
