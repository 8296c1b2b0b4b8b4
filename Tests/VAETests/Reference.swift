import Foundation

/// A small, independent, loop-based VAE in `Double`: no BLAS and no code shared with the
/// engine. It names its parameters like a PyTorch module (weight `[out, in]` row-major, bias
/// `[out]`), which is the layout `ModelConfig.layout` promises, and computes the same loss the
/// engine does: per example `kl − recon`, summed over the batch.
struct ReferenceVAE {
  enum Likelihood {
    case bernoulli
    case gaussian(sigma: Double)
    /// The decoder outputs μ for every dimension, then log σ² for every dimension.
    case gaussianLearned

    var outputsPerValue: Int {
      if case .gaussianLearned = self { return 2 }
      return 1
    }
  }

  let inputSize: Int
  let hidden: [Int]
  let decoderHidden: [Int]
  let zdim: Int
  let likelihood: Likelihood
  /// The KL term's weight in `loss` (β, or β during warm-up); 1 is the ELBO.
  var klWeight = 1.0
  /// Free bits λ: with λ > 0 the KL term is B·Σ_j max(λ, K̄_j), K̄_j dimension j's KL averaged
  /// over the batch (Kingma et al. 2016).
  var freeBits = 0.0

  /// (name, shape) in module order: encoder layers, mu head, logvar head, decoder layers, output.
  var specs: [(name: String, shape: [Int])] {
    var out: [(String, [Int])] = []
    func linear(_ name: String, _ inF: Int, _ outF: Int) {
      out.append(("\(name).weight", [outF, inF]))
      out.append(("\(name).bias", [outF]))
    }
    var prev = inputSize
    for (i, h) in hidden.enumerated() {
      linear("encoder.\(i)", prev, h)
      prev = h
    }
    linear("encoder.mu", prev, zdim)
    linear("encoder.logvar", prev, zdim)
    prev = zdim
    for (i, h) in decoderHidden.enumerated() {
      linear("decoder.\(i)", prev, h)
      prev = h
    }
    linear("decoder.out", prev, inputSize * likelihood.outputsPerValue)
    return out.map { (name: $0.0, shape: $0.1) }
  }

  struct Output {
    /// log p(x|z) per example.
    var recon: [Double]
    /// KL(q(z|x) ‖ N(0, I)) per example.
    var kl: [Double]
    /// Σ over the batch of (klWeight · kl − recon).
    var loss: Double
    /// Smallest |pre-activation| of any ReLU unit: finite differences are only valid when the
    /// step cannot carry a unit across the kink at 0.
    var minAbsPreActivation: Double
    /// The encoder's outputs, [batch, zdim].
    var mu: [Double] = []
    var logvar: [Double] = []
    /// K̄_j: each latent dimension's KL averaged over the batch.
    var meanKLPerDimension: [Double] = []
  }

  /// y[r, o] = Σ_i x[r, i]·W[o, i] + b[o]
  static func linear(
    _ x: [Double], rows: Int, inF: Int, outF: Int, weight w: [Double], bias b: [Double]
  ) -> [Double] {
    precondition(x.count == rows * inF && w.count == outF * inF && b.count == outF)
    var y = [Double](repeating: 0, count: rows * outF)
    for r in 0..<rows {
      for o in 0..<outF {
        var s = b[o]
        for i in 0..<inF { s += x[r * inF + i] * w[o * inF + i] }
        y[r * outF + o] = s
      }
    }
    return y
  }

  /// log p(x|l) for one element: Bernoulli from a logit, or Gaussian with mean `l`.
  static func logLikelihood(x: Double, l: Double, likelihood: Likelihood) -> Double {
    switch likelihood {
    case .bernoulli:
      return x * l - max(l, 0) - log(1 + exp(-abs(l)))
    case .gaussian(let sigma):
      let d = x - l
      return -d * d / (2 * sigma * sigma) - 0.5 * log(2 * Double.pi * sigma * sigma)
    case .gaussianLearned:
      preconditionFailure("a learned variance needs two outputs: logDensity(x:mean:logVariance:)")
    }
  }

  /// log N(x; mean, exp(logVariance)) for one element.
  static func logDensity(x: Double, mean: Double, logVariance: Double) -> Double {
    let d = x - mean
    return -0.5 * (log(2 * Double.pi) + logVariance + d * d / exp(logVariance))
  }

  func evaluate(params: [String: [Double]], x: [Double], eps: [Double], batch: Int) -> Output {
    func p(_ name: String) -> [Double] {
      guard let v = params[name] else { preconditionFailure("reference: no parameter \(name)") }
      return v
    }
    precondition(x.count == batch * inputSize && eps.count == batch * zdim)
    var minPre = Double.infinity
    func reluLayer(_ input: [Double], _ name: String, _ inF: Int, _ outF: Int) -> [Double] {
      let pre = Self.linear(
        input, rows: batch, inF: inF, outF: outF, weight: p("\(name).weight"), bias: p("\(name).bias"))
      for v in pre { minPre = min(minPre, abs(v)) }
      return pre.map { max($0, 0) }
    }
    // Encoder.
    var h = x
    var prev = inputSize
    for (i, n) in hidden.enumerated() {
      h = reluLayer(h, "encoder.\(i)", prev, n)
      prev = n
    }
    let mu = Self.linear(
      h, rows: batch, inF: prev, outF: zdim, weight: p("encoder.mu.weight"), bias: p("encoder.mu.bias"))
    let logvar = Self.linear(
      h, rows: batch, inF: prev, outF: zdim, weight: p("encoder.logvar.weight"),
      bias: p("encoder.logvar.bias"))
    // Reparameterisation and KL.
    var z = [Double](repeating: 0, count: batch * zdim)
    var kl = [Double](repeating: 0, count: batch)
    for r in 0..<batch {
      var acc = 0.0
      for j in 0..<zdim {
        let k = r * zdim + j
        z[k] = mu[k] + exp(0.5 * logvar[k]) * eps[k]
        acc += -0.5 * (1 + logvar[k] - mu[k] * mu[k] - exp(logvar[k]))
      }
      kl[r] = acc
    }
    // Decoder.
    var d = z
    prev = zdim
    for (i, n) in decoderHidden.enumerated() {
      d = reluLayer(d, "decoder.\(i)", prev, n)
      prev = n
    }
    let width = inputSize * likelihood.outputsPerValue
    let out = Self.linear(
      d, rows: batch, inF: prev, outF: width, weight: p("decoder.out.weight"),
      bias: p("decoder.out.bias"))
    var recon = [Double](repeating: 0, count: batch)
    for r in 0..<batch {
      var acc = 0.0
      for j in 0..<inputSize {
        if case .gaussianLearned = likelihood {
          acc += Self.logDensity(
            x: x[r * inputSize + j], mean: out[r * width + j], logVariance: out[r * width + inputSize + j])
        } else {
          acc += Self.logLikelihood(x: x[r * inputSize + j], l: out[r * width + j], likelihood: likelihood)
        }
      }
      recon[r] = acc
    }
    var loss = 0.0
    var meanKL = [Double](repeating: 0, count: zdim)
    for r in 0..<batch {
      for j in 0..<zdim {
        let k = r * zdim + j
        meanKL[j] += -0.5 * (1 + logvar[k] - mu[k] * mu[k] - exp(logvar[k])) / Double(batch)
      }
    }
    if freeBits > 0 {
      for r in 0..<batch { loss -= recon[r] }
      for j in 0..<zdim { loss += klWeight * Double(batch) * max(freeBits, meanKL[j]) }
    } else {
      for r in 0..<batch { loss += klWeight * kl[r] - recon[r] }
    }
    return Output(
      recon: recon, kl: kl, loss: loss, minAbsPreActivation: minPre, mu: mu, logvar: logvar, meanKLPerDimension: meanKL)
  }

  /// −Σ_rows of the importance-weighted bound with k samples per row (Burda et al. 2016): eps is
  /// [batch, k·zdim]; log w = log p(x|z) + log N(z; 0, I) − log N(z; μ, σ²), written out here
  /// from the definitions (each sample through `evaluate` on the repeated row).
  func importanceWeightedLoss(params: [String: [Double]], x: [Double], eps: [Double], batch: Int, k: Int) -> Double {
    let lw = logWeights(params: params, x: x, eps: eps, batch: batch, k: k).logw
    var loss = 0.0
    for r in 0..<batch {
      let row = lw[(r * k)..<((r + 1) * k)], top = row.max()!
      loss -= top + log(row.reduce(0) { $0 + exp($1 - top) }) - log(Double(k))
    }
    return loss
  }

  /// log w per sample ([batch·k]), and each sample row's μ and log σ². With `posterior` (μ and
  /// log σ² per sample row, from other parameters) log q is that posterior's density at z: held
  /// fixed while z moves with `params`, as DReG's surrogate holds it.
  func logWeights(
    params: [String: [Double]], x: [Double], eps: [Double], batch: Int, k: Int,
    posterior: (mu: [Double], logvar: [Double])? = nil
  ) -> (logw: [Double], mu: [Double], logvar: [Double]) {
    var xs: [Double] = []
    for r in 0..<batch { for _ in 0..<k { xs += x[(r * inputSize)..<((r + 1) * inputSize)] } }
    let out = evaluate(params: params, x: xs, eps: eps, batch: batch * k)
    let qmu = posterior?.mu ?? out.mu, qlv = posterior?.logvar ?? out.logvar
    var logw: [Double] = []
    for row in 0..<(batch * k) {
      var lw = out.recon[row]
      for j in 0..<zdim {
        let t = row * zdim + j
        let z = out.mu[t] + exp(0.5 * out.logvar[t]) * eps[t]
        lw += -0.5 * (log(2 * Double.pi) + z * z)  // log N(z; 0, 1)
        lw -= Self.logDensity(x: z, mean: qmu[t], logVariance: qlv[t])  // log N(z; μ, σ²)
      }
      logw.append(lw)
    }
    return (logw, out.mu, out.logvar)
  }

  /// DReG's surrogate (Tucker et al. 2019): −Σ w̃^power · log w, the normalised weights w̃ and
  /// log q's μ, σ² taken at `base` and held fixed, z = μ + σ·ε moving with `params`. Its
  /// gradient at params = base is DReG's: power 2 for the encoder's parameters, 1 (the plain
  /// IWAE gradient) for the decoder's.
  func dregSurrogate(
    params: [String: [Double]], base: [String: [Double]], x: [Double], eps: [Double], batch: Int, k: Int, power: Double
  ) -> Double {
    let fixed = logWeights(params: base, x: x, eps: eps, batch: batch, k: k)
    let lw = logWeights(params: params, x: x, eps: eps, batch: batch, k: k, posterior: (fixed.mu, fixed.logvar)).logw
    var loss = 0.0
    for r in 0..<batch {
      let row = fixed.logw[(r * k)..<((r + 1) * k)], top = row.max()!
      let total = row.reduce(0) { $0 + exp($1 - top) }
      for i in 0..<k { loss -= pow(exp(row[row.startIndex + i] - top) / total, power) * lw[r * k + i] }
    }
    return loss
  }

  /// Central finite differences of `evaluate(...).loss` with respect to every parameter.
  func finiteDifferenceGradients(
    params: [String: [Double]], x: [Double], eps: [Double], batch: Int, h: Double = 1e-6
  ) -> [String: [Double]] {
    centralDifferences(params: params, names: specs.map(\.name), h: h) {
      evaluate(params: $0, x: x, eps: eps, batch: batch).loss
    }
  }
}

/// Error measures shared by the tests.
enum ErrorMeasure {
  /// ‖a − b‖₂ / max(‖b‖₂, tiny)
  static func normRelative(_ a: [Double], _ b: [Double], tiny: Double = 1e-30) -> Double {
    precondition(a.count == b.count)
    var num = 0.0
    var den = 0.0
    for i in 0..<a.count {
      num += (a[i] - b[i]) * (a[i] - b[i])
      den += b[i] * b[i]
    }
    return num.squareRoot() / max(den.squareRoot(), tiny)
  }

  /// max |a − b| / max(|b|, tiny) over the entries with |b| ≥ `floor`; 0 when there are none.
  static func maxElementRelative(_ a: [Double], _ b: [Double], floor: Double) -> Double {
    precondition(a.count == b.count)
    var worst = 0.0
    for i in 0..<a.count where abs(b[i]) >= floor {
      worst = max(worst, abs(a[i] - b[i]) / abs(b[i]))
    }
    return worst
  }

  static func relative(_ a: Double, _ b: Double, tiny: Double = 1e-30) -> Double {
    abs(a - b) / max(abs(b), tiny)
  }
}

/// Central finite differences of `loss` with respect to every value of the tensors `names` of
/// `params` (the references' one finite-difference loop).
func centralDifferences(
  params: [String: [Double]], names: [String], h: Double, loss: ([String: [Double]]) -> Double
) -> [String: [Double]] {
  var work = params
  var grads: [String: [Double]] = [:]
  for name in names {
    guard let values = params[name] else { preconditionFailure("reference: no parameter \(name)") }
    var g = [Double](repeating: 0, count: values.count)
    for i in 0..<values.count {
      let v = values[i]
      work[name]![i] = v + h
      let plus = loss(work)
      work[name]![i] = v - h
      let minus = loss(work)
      work[name]![i] = v
      g[i] = (plus - minus) / (2 * h)
    }
    grads[name] = g
  }
  return grads
}
