import Foundation

/// A small, independent, loop-based reference in `Double` for the two conditional model kinds
/// (Doersch, "Tutorial on Variational Autoencoders", §4 and its Caffe prototxts):
///
/// - `cvae` (`mnist_cvae.prototxt`): models p(Y|X) through a latent z.
/// - `regressor` (`mnist_regressor.prototxt`): models p(Y|X) directly, no latent.
///
/// It shares no code with the engine (no BLAS, no `Tower`, no `Linear`, no arena): parameters
/// are looked up by their PyTorch-style names (`cond.0.weight` [out, in] row-major, `cond.0.bias`
/// [out]) in a `[String: [Double]]`. The only helpers it borrows are the test-side
/// `ReferenceVAE.linear` and `ReferenceVAE.logLikelihood` loops (also engine-independent,
/// and checked by `GradientCheckTests`).
///
/// Each input row is [X | Y]: X is its first `conditionSize` values, Y (the target, what the
/// likelihood scores) the remaining `inputSize − conditionSize`.
///
/// Forward pass, written out (pre = pre-activation, ReLU(v) = max(v, 0)):
///
///     cvae
///       c_pre_k = W_cond.k · c_{k−1} + b            c_{−1} = X
///       c_k     = ReLU(c_pre_k) for k < last, c_pre_last for the last layer (no ReLU)
///       e_pre_k = W_encoder.k · e_{k−1} + b  (+ c_pre_K when k == K = conditionIntoEncoder)
///       e_k     = ReLU(e_pre_k)                      e_{−1} = Y
///       mu, logvar = heads on e_last;  z = mu + exp(logvar/2)·eps
///       KL      = Σ_j −½(1 + logvar − mu² − exp(logvar))
///       d_pre_0 = W_decoder.0 · z + b + c_last;  d_pre_k = W · d_{k−1} + b (k ≥ 1)
///       d_k     = ReLU(d_pre_k);  out = W_decoder.out · d_last + b
///       recon   = Σ_j log p(Y_j | out_j)
///
///     regressor
///       c_k     = ReLU(W_cond.k · c_{k−1} + b) for every k (the last one too)
///       d_k     = ReLU(W_decoder.k · d_{k−1} + b),  d_{−1} = c_last
///       out     = W_decoder.out · d_last + b;  recon = Σ_j log p(Y_j | out_j);  KL = 0
///
/// The loss is the negative ELBO (regressor: the negative log-likelihood) summed over the
/// batch: Σ_r (kl_r − recon_r), the quantity whose gradient `VAEModel.backward` writes.
struct ReferenceConditional {
  enum Kind {
    case cvae
    case regressor
  }

  let kind: Kind
  let inputSize: Int
  let conditionSize: Int
  let conditionHidden: [Int]
  let conditionIntoEncoder: Int
  /// Encoder widths (cvae only; ignored for a regressor).
  let hidden: [Int]
  let decoderHidden: [Int]
  /// Latent width (cvae only; a regressor has none).
  let zdim: Int
  let likelihood: ReferenceVAE.Likelihood
  /// cvae only: which copy of the condition tower feeds the addition into the encoder (resp.
  /// the decoder). The model is `"cond"` for both. The tests that prove the checks are
  /// sensitive use mutants:
  /// - `nil`: the addition is missing (a model that forgot it);
  /// - another prefix, e.g. `"frozen"`: that addition reads a copy of the tower's parameters
  ///   stored under `frozen.k.weight`/`frozen.k.bias`. Finite differences over `cond.*` then do
  ///   not see that path: they give exactly the gradient of a model whose backward pass
  ///   dropped that addition's gradient.
  var encoderConditionSource: String? = "cond"
  var decoderConditionSource: String? = "cond"

  var targetSize: Int { inputSize - conditionSize }
  /// ε values per row.
  var latentSize: Int { kind == .cvae ? zdim : 0 }

  /// (name, shape) of every tensor, derived from the names alone. The tests compare the engine
  /// layout against hand-written tables; this list is the set of tensors the reference reads
  /// (and the finite differences walk over).
  var specs: [(name: String, shape: [Int])] {
    var out: [(name: String, shape: [Int])] = []
    func linear(_ name: String, _ inF: Int, _ outF: Int) {
      out.append((name: "\(name).weight", shape: [outF, inF]))
      out.append((name: "\(name).bias", shape: [outF]))
    }
    func chain(_ prefix: String, from: Int, _ widths: [Int]) -> Int {
      var prev = from
      for (i, h) in widths.enumerated() {
        linear("\(prefix).\(i)", prev, h)
        prev = h
      }
      return prev
    }
    switch kind {
    case .cvae:
      let top = chain("encoder", from: targetSize, hidden)
      linear("encoder.mu", top, zdim)
      linear("encoder.logvar", top, zdim)
      let last = chain("decoder", from: zdim, decoderHidden)
      linear("decoder.out", last, targetSize)
      _ = chain("cond", from: conditionSize, conditionHidden)
    case .regressor:
      let top = chain("cond", from: conditionSize, conditionHidden)
      let last = chain("decoder", from: top, decoderHidden)
      linear("decoder.out", last, targetSize)
    }
    return out
  }

  struct Output {
    /// log p(Y|·) per example.
    var recon: [Double]
    /// KL(q(z|Y,X) ‖ N(0, I)) per example (0 for a regressor).
    var kl: [Double]
    /// Σ over the batch of (kl − recon).
    var loss: Double
    /// Smallest |pre-activation| of any ReLU unit (condition tower layers that have a ReLU,
    /// encoder, decoder): central finite differences with step h are only valid when no unit
    /// lies within h of the kink at 0.
    var minAbsPreActivation: Double
    /// Fewest positive (active) units of any ReLU layer, counted over the whole batch. A layer
    /// with none cuts every path through it: the gradients of the layers before it vanish and
    /// a gradient check of them would be vacuous.
    var fewestActiveUnits: Int
  }

  func evaluate(params: [String: [Double]], x: [Double], eps: [Double], batch: Int) -> Output {
    func p(_ name: String) -> [Double] {
      guard let v = params[name] else { preconditionFailure("reference: no parameter \(name)") }
      return v
    }
    precondition(x.count == batch * inputSize, "reference: x has \(x.count) values")
    precondition(eps.count == batch * latentSize, "reference: eps has \(eps.count) values")
    precondition(conditionSize >= 1 && conditionSize < inputSize && !conditionHidden.isEmpty)
    let ySize = targetSize
    var minPre = Double.infinity
    var fewestActive = Int.max

    /// pre = input·Wᵀ + b (+ addend), element for element.
    func affine(_ input: [Double], _ name: String, _ inF: Int, _ outF: Int, addend: [Double]? = nil) -> [Double] {
      var pre = ReferenceVAE.linear(
        input, rows: batch, inF: inF, outF: outF, weight: p("\(name).weight"), bias: p("\(name).bias"))
      if let addend {
        precondition(addend.count == pre.count, "reference: addend of \(name) has the wrong width")
        for i in 0..<pre.count { pre[i] += addend[i] }
      }
      return pre
    }
    /// ReLU, recording how close to the kink the units are.
    func relu(_ pre: [Double]) -> [Double] {
      for v in pre { minPre = min(minPre, abs(v)) }
      fewestActive = min(fewestActive, pre.filter { $0 > 0 }.count)
      return pre.map { max($0, 0) }
    }

    // Split each row into X (first conditionSize values) and Y (the rest), row by row.
    var xs = [Double](repeating: 0, count: batch * conditionSize)
    var ys = [Double](repeating: 0, count: batch * ySize)
    for r in 0..<batch {
      for j in 0..<conditionSize { xs[r * conditionSize + j] = x[r * inputSize + j] }
      for j in 0..<ySize { ys[r * ySize + j] = x[r * inputSize + conditionSize + j] }
    }

    // Condition tower on X: every layer's pre-activation (before its ReLU) and the tower's
    // output. `prefix` names the parameters ("cond", or a frozen copy for the mutants); each
    // distinct prefix is evaluated once.
    let lastCond = conditionHidden.count - 1
    var towers: [String: (pre: [[Double]], out: [Double])] = [:]
    func tower(_ prefix: String) -> (pre: [[Double]], out: [Double]) {
      if let t = towers[prefix] { return t }
      var pres: [[Double]] = []
      var c = xs
      var prev = conditionSize
      for (k, n) in conditionHidden.enumerated() {
        let pre = affine(c, "\(prefix).\(k)", prev, n)
        pres.append(pre)
        // A regressor's tower has a ReLU after every layer; a cvae's last layer is a plain
        // addend (no ReLU).
        let hasReLU = kind == .regressor || k < lastCond
        c = hasReLU ? relu(pre) : pre
        prev = n
      }
      towers[prefix] = (pres, c)
      return (pres, c)
    }
    var prev: Int
    var kl = [Double](repeating: 0, count: batch)
    let decoderInput: [Double]
    var decoderAddend: [Double]? = nil
    switch kind {
    case .regressor:
      decoderInput = tower("cond").out
    case .cvae:
      // Encoder on Y, with cond.K's pre-activation added into encoder.K's pre-activation.
      var h = ys
      prev = ySize
      for (k, n) in hidden.enumerated() {
        let add = k == conditionIntoEncoder ? encoderConditionSource.map { tower($0).pre[k] } : nil
        h = relu(affine(h, "encoder.\(k)", prev, n, addend: add))
        prev = n
      }
      let mu = affine(h, "encoder.mu", prev, zdim)
      let logvar = affine(h, "encoder.logvar", prev, zdim)
      // Reparameterisation and the closed-form KL to N(0, I).
      var z = [Double](repeating: 0, count: batch * zdim)
      for r in 0..<batch {
        var acc = 0.0
        for j in 0..<zdim {
          let i = r * zdim + j
          z[i] = mu[i] + exp(0.5 * logvar[i]) * eps[i]
          acc += -0.5 * (1 + logvar[i] - mu[i] * mu[i] - exp(logvar[i]))
        }
        kl[r] = acc
      }
      decoderInput = z
      // The tower's last output (no ReLU) goes into decoder.0's pre-activation.
      decoderAddend = decoderConditionSource.map { tower($0).out }
    }

    // Decoder (ReLU hidden layers) and its output layer over Y.
    var d = decoderInput
    prev = kind == .cvae ? zdim : conditionHidden[lastCond]
    for (k, n) in decoderHidden.enumerated() {
      d = relu(affine(d, "decoder.\(k)", prev, n, addend: k == 0 ? decoderAddend : nil))
      prev = n
    }
    precondition(decoderAddend == nil || !decoderHidden.isEmpty, "reference: a cvae needs a decoder hidden layer")
    let out = affine(d, "decoder.out", prev, ySize)

    var recon = [Double](repeating: 0, count: batch)
    for r in 0..<batch {
      var acc = 0.0
      for j in 0..<ySize {
        acc += ReferenceVAE.logLikelihood(x: ys[r * ySize + j], l: out[r * ySize + j], likelihood: likelihood)
      }
      recon[r] = acc
    }
    var loss = 0.0
    for r in 0..<batch { loss += kl[r] - recon[r] }
    return Output(recon: recon, kl: kl, loss: loss, minAbsPreActivation: minPre, fewestActiveUnits: fewestActive)
  }

  /// Central finite differences of `evaluate(...).loss` with respect to every parameter
  /// (restricted to the tensors named in `only` when given).
  func finiteDifferenceGradients(
    params: [String: [Double]], x: [Double], eps: [Double], batch: Int, h: Double = 1e-6,
    only: Set<String>? = nil
  ) -> [String: [Double]] {
    let names = specs.map(\.0).filter { only?.contains($0) ?? true }
    return centralDifferences(params: params, names: names, h: h) {
      evaluate(params: $0, x: x, eps: eps, batch: batch).loss
    }
  }
}
