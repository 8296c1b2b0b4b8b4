import CSupport

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// How p(x|z) is modelled from the decoder's output.
public enum Likelihood: Sendable, Hashable, Codable {
  /// Bernoulli with logits (binary or [0,1] pixels); stable form.
  case bernoulli
  /// Gaussian N(f(z), σ²I) with fixed σ (tutorial eq. 5, §2.4); the decoder output is the mean.
  case gaussian(sigma: Float)
  /// Gaussian N(μ(z), diag σ²(z)) with a learned per-dimension variance (Kingma & Welling's
  /// Frey Face model): the decoder outputs μ and then log σ² for every dimension.
  case gaussianLearned

  public var name: String {
    switch self {
    case .bernoulli: "bernoulli"
    case .gaussian, .gaussianLearned: "gaussian"
    }
  }

  /// Decoder outputs per predicted value: 2 when the variance is learned (μ, then log σ²).
  public var outputsPerValue: Int { self == .gaussianLearned ? 2 : 1 }

  /// Whether log p(x|z) is a density (continuous data: the ELBO may be positive).
  public var isDensity: Bool { self != .bernoulli }

  /// The mean of p(x|z) from a decoder output: σ(logit) for Bernoulli, the output itself for
  /// a Gaussian (with a learned variance: the mean outputs, which come first).
  public func mean(_ output: Float) -> Float {
    switch self {
    case .bernoulli: 1 / (1 + expf(-output))
    case .gaussian, .gaussianLearned: output
    }
  }

  /// A decoder output as a pixel in [0, 1]: the mean, clamped (a Bernoulli mean always is in range).
  public func pixel(_ output: Float) -> Float { min(max(mean(output), 0), 1) }
}

/// Loss terms summed over a batch: `recon` = Σ log p(x|z), `kl` = Σ KL(q(z|x) ‖ N(0, I)).
/// The per-example negative ELBO is `kl − recon`.
public struct LossTerms: Sendable, Hashable {
  public var recon: Double
  public var kl: Double
  public init(recon: Double = 0, kl: Double = 0) {
    self.recon = recon
    self.kl = kl
  }
  public var negativeELBO: Double { kl - recon }
  public static func + (a: LossTerms, b: LossTerms) -> LossTerms {
    LossTerms(recon: a.recon + b.recon, kl: a.kl + b.kl)
  }
}


/// The model of any `ModelKind`, composed of towers over one parameter arena and one gradient
/// arena, with activation buffers sized once for `maxBatch` rows. Forward and backward allocate
/// nothing.
public final class VAEModel: @unchecked Sendable {
  public let config: ModelConfig
  public let maxBatch: Int
  public let params: Arena
  public let grads: Arena
  /// Encoder hidden layers (empty for a regressor), the heads (nil for a regressor), the
  /// decoder's hidden layers plus its output layer, and the condition tower (conditional kinds).
  public let encoder: Tower
  let muHead: Linear?
  let logvarHead: Linear?
  public let decoder: Tower
  public let condition: Tower?

  /// X and Y of the last rows given (conditional kinds), [maxBatch, conditionSize / targetSize].
  let conditionRows: Buffer
  let targetRows: Buffer
  public let mu: Buffer
  public let logvar: Buffer
  let std: Buffer
  /// The decoder's latent rows and their gradients, [maxBatch·samples, latentSize] (the
  /// objective's samples per row; row r's sample i is row r·samples + i).
  public let z: Buffer
  let dz: Buffer
  let dmu: Buffer
  let dlogvar: Buffer
  /// Per-example log p(target|z) and KL of the last `loss` call.
  public let reconPerExample: Buffer
  public let klPerExample: Buffer
  let rowScratch: Buffer
  /// log p(target|z) per decoder row of the last `loss` call, [maxBatch·samples] (summed in
  /// Double when the objective asks for `exactLikelihood`).
  let rowLogLikelihood: UnsafeMutablePointer<Double>
  /// The target repeated once per sample (with more than one sample per row).
  let sampleTargets: Buffer
  /// What training minimises over the encoder's and decoder's outputs (nil for a regressor).
  let objective: LatentObjective?
  /// The KL term's weight in the gradient `backward` writes (β, or β during warm-up:
  /// `TrainingObjective.klWeight`); 1 is the ELBO. The loss terms stay unweighted.
  public var klWeight: Float = 1
  /// Free bits: per latent dimension, 1 where its KL (averaged over the global batch) is above
  /// λ and so is trained, 0 where max(λ, KL_j) is the constant λ (no KL gradient); nil: all 1.
  public var klMask: UnsafePointer<Float>?
  // Inputs of the last `loss` call, read by `backward`.
  var lastTarget: UnsafePointer<Float>?
  var lastEps: UnsafePointer<Float>?
  var lastBatch = 0

  /// `params` may be shared with another model (e.g. an evaluator with a larger batch);
  /// `grads` may live in memory other ranks read (MPI shared window).
  /// `objective` is what `loss` and `backward` compute (the ELBO unless told; its kind and
  /// samples per row, not its weights, which are `klWeight` and `klMask`); the decoder is sized
  /// for its samples.
  public init(
    config: ModelConfig, maxBatch: Int, params: Arena? = nil, grads: Arena? = nil,
    objective: TrainingObjective = TrainingObjective()
  ) {
    precondition(maxBatch > 0 && config.problem == nil, config.problem ?? "maxBatch \(maxBatch)")
    self.config = config
    self.maxBatch = maxBatch
    let towers = config.layers, layout = towers.layout
    if let params { precondition(params.layout == layout) }
    if let grads { precondition(grads.layout == layout) }
    self.params = params ?? Arena(layout: layout)
    self.grads = grads ?? Arena(layout: layout)
    let b = maxBatch
    func tower(_ specs: [LayerSpec], exportPre: Set<Int> = [], rows: Int = b) -> Tower {
      Tower(
        layers: specs.map { $0.makeLayer(layout: layout, maxBatch: rows) }, activations: specs.map(\.activation),
        maxBatch: rows, exportPre: exportPre)
    }
    func dense(_ spec: LayerSpec) -> Linear {
      guard let l = spec.makeLayer(layout: layout, maxBatch: b) as? Linear else { preconditionFailure("\(spec.name) is not dense") }
      return l
    }
    self.objective = makeLatentObjective(objective, config: config, rows: b)
    let samples = self.objective?.samples ?? 1
    decoder = tower(towers.decoder, rows: b * samples)
    encoder = tower(towers.encoder)
    muHead = towers.heads.first.map(dense)
    logvarHead = towers.heads.last.map(dense)
    if config.kind == .vae {
      condition = nil
    } else {
      // A CVAE's tower output is an addend (no activation); a regressor's feeds the decoder after a ReLU.
      let into = config.conditionIntoEncoder, last = towers.condition.count - 1
      let cond = tower(towers.condition, exportPre: config.kind == .cvae ? [into] : [])
      if config.kind == .cvae {
        encoder.addend[into] = cond.preActivation(into)
        decoder.addend[0] = cond.preActivation(last)
        cond.extraPreGradients[into].append(encoder.gradPreActivation(into))
        cond.extraPreGradients[last].append(decoder.gradPreActivation(0))
      }
      condition = cond
    }
    let conditional = config.kind != .vae
    conditionRows = Buffer(conditional ? b * config.conditionSize : 1)
    targetRows = Buffer(conditional ? b * config.targetSize : 1)
    let d = config.latentSize
    mu = Buffer(b * d)
    logvar = Buffer(b * d)
    std = Buffer(b * d)
    z = Buffer(b * samples * d)
    dz = Buffer(b * samples * d)
    dmu = Buffer(b * d)
    dlogvar = Buffer(b * d)
    reconPerExample = Buffer(b)
    klPerExample = Buffer(b)
    rowScratch = Buffer(b * samples)
    rowLogLikelihood = .allocate(capacity: b * samples)
    rowLogLikelihood.initialize(repeating: 0, count: b * samples)
    sampleTargets = Buffer(samples > 1 ? b * samples * config.targetSize : 1)
  }

  deinit { rowLogLikelihood.deallocate() }

  /// The decoder's outputs of the last `decode`/`loss`/`predict` (logits or Gaussian means),
  /// [batch, targetSize].
  public var logits: UnsafeMutablePointer<Float> { decoder.output }

  /// PyTorch's default for `nn.Linear`, `nn.Conv2d` and `nn.ConvTranspose2d`: weight and bias
  /// ~ U(−1/√fan_in, 1/√fan_in), fan_in = the weight's dimension 1 times its kernel size (in·k²
  /// for a convolution, out·k² for a transposed one, as PyTorch computes it), one stream per tensor.
  public func initialise(rng: CounterRNG) {
    let layout = params.layout
    func fanIn(_ w: TensorSpec) -> Int { w.shape.dropFirst().reduce(1, *) }
    for (i, spec) in layout.specs.enumerated() {
      let fanIn = spec.name.hasSuffix(".weight") ? fanIn(spec) : fanIn(layout.specs[i - 1])
      let bound = 1 / Float(fanIn).squareRoot()
      var s = rng.stream(.initialisation, index: UInt64(i))
      let p = params.base + layout.offsets[i]
      for j in 0..<spec.count { p[j] = s.nextFloat(in: -bound, bound) }
    }
  }

  /// Conditional kinds: splits `batch` input rows into X and Y and runs the condition tower
  /// on X; returns the target rows (for a VAE, `x` itself). Every later `encode`/`decode` of
  /// these rows uses this condition.
  @discardableResult
  public func setInput(_ x: UnsafePointer<Float>, batch: Int) -> UnsafePointer<Float> {
    precondition(batch <= maxBatch)
    guard let condition else { return x }
    let c = config.conditionSize, t = config.targetSize, n = config.inputSize
    for r in 0..<batch {
      (conditionRows.ptr + r * c).update(from: x + r * n, count: c)
      (targetRows.ptr + r * t).update(from: x + r * n + c, count: t)
    }
    condition.forward(UnsafePointer(conditionRows.ptr), batch: batch, params: params)
    return UnsafePointer(targetRows.ptr)
  }

  /// Encoder only: fills `mu` and `logvar` for `batch` rows of input `x` (not for a regressor).
  public func encode(_ x: UnsafePointer<Float>, batch: Int) {
    encodeTarget(setInput(x, batch: batch), batch: batch)
  }

  func encodeTarget(_ target: UnsafePointer<Float>, batch: Int) {
    guard let muHead, let logvarHead else { preconditionFailure("a regressor has no encoder") }
    encoder.forward(target, batch: batch, params: params)
    let top = encoder.result(of: target)
    muHead.forward(top, mu.ptr, batch: batch, params: params, relu: false)
    logvarHead.forward(top, logvar.ptr, batch: batch, params: params, relu: false)
  }

  /// Decoder only: fills `logits` from `z` rows (conditional kinds: under the condition of the
  /// last `setInput`, row for row).
  public func decode(_ zIn: UnsafePointer<Float>, batch: Int) {
    precondition(batch <= maxBatch && config.kind != .regressor)
    decoder.forward(zIn, batch: batch, params: params)
  }

  /// Regressor: fills `logits` with the prediction of Y for `batch` input rows.
  public func predict(_ x: UnsafePointer<Float>, batch: Int) {
    precondition(config.kind == .regressor)
    setInput(x, batch: batch)
    decoder.forward(UnsafePointer(condition!.output), batch: batch, params: params)
  }

  /// Forward pass with given noise ε ([batch, latentSize·samples]) of the model's objective:
  /// the encoder, the objective's z rows (`reparameterize`), the decoder and the likelihood of
  /// each row, then the objective's loss terms, summed over the batch (a regressor's KL is 0).
  /// Fills the per-example buffers and prepares `backward`. `x` and `eps` must stay valid until
  /// `backward` returns.
  @discardableResult
  public func loss(x: UnsafePointer<Float>, eps: UnsafePointer<Float>, batch: Int) -> LossTerms {
    let target = setInput(x, batch: batch)
    lastTarget = target
    lastEps = eps
    lastBatch = batch
    guard let objective else {
      decoder.forward(UnsafePointer(condition!.output), batch: batch, params: params)
      klPerExample.ptr.update(repeating: 0, count: batch)
      let recon = reconstruction(
        x: target, logits: UnsafePointer(logits), batch: batch, perExample: reconPerExample.ptr,
        gradient: decoder.gradOutput)
      return LossTerms(recon: recon, kl: 0)
    }
    encodeTarget(target, batch: batch)
    objective.drawLatents(self, eps: eps, batch: batch)
    let k = objective.samples, n = config.targetSize
    decoder.forward(UnsafePointer(z.ptr), batch: batch * k, params: params)
    var targets = target
    if k > 1 {
      for row in 0..<(batch * k) { (sampleTargets.ptr + row * n).update(from: target + (row / k) * n, count: n) }
      targets = UnsafePointer(sampleTargets.ptr)
    }
    rowLogLikelihoods(
      x: targets, logits: UnsafePointer(logits), batch: batch * k, into: rowLogLikelihood,
      exact: objective.exactLikelihood, gradient: decoder.gradOutput)
    return objective.lossTerms(self, batch: batch)
  }

  /// log p(target|z) per row from decoder outputs; optionally d(−log p)/d(output) into
  /// `gradient`. `x`: target rows, [batch, targetSize]. Each row is summed in Float.
  public func reconstruction(
    x: UnsafePointer<Float>, logits l: UnsafePointer<Float>, batch: Int,
    perExample: UnsafeMutablePointer<Float>?, gradient: UnsafeMutablePointer<Float>?
  ) -> Double {
    switch config.likelihood {
    case .bernoulli:
      // Vectorised in C (CSupport): one exp and one log1p per pixel, plus the gradient.
      let rows = perExample ?? rowScratch.ptr
      vae_bernoulli_loglik(x, l, batch, config.targetSize, rows, gradient)
      var total = 0.0
      for r in 0..<batch { total += Double(rows[r]) }
      return total
    case .gaussian(let sigma):
      return fixedGaussian(sigma: sigma, x: x, outputs: l, batch: batch, perExample: perExample, gradient: gradient)
    case .gaussianLearned:
      return learnedGaussian(x: x, outputs: l, batch: batch, perExample: perExample, gradient: gradient)
    }
  }

  /// log p(target|z) per row into `rows` (and d(−log p)/d(output) into `gradient`), each row
  /// summed in Double from the same Float terms when `exact`, else `reconstruction`'s Float
  /// sums (widened). `rowScratch` holds `batch` rows.
  func rowLogLikelihoods(
    x: UnsafePointer<Float>, logits l: UnsafePointer<Float>, batch: Int, into rows: UnsafeMutablePointer<Double>,
    exact: Bool, gradient: UnsafeMutablePointer<Float>?
  ) {
    guard exact else {
      _ = reconstruction(x: x, logits: l, batch: batch, perExample: rowScratch.ptr, gradient: gradient)
      for r in 0..<batch { rows[r] = Double(rowScratch.ptr[r]) }
      return
    }
    switch config.likelihood {
    case .bernoulli: vae_bernoulli_loglik_f64(x, l, batch, config.targetSize, rows, gradient)
    case .gaussian(let sigma):
      _ = fixedGaussian(sigma: sigma, x: x, outputs: l, batch: batch, perExample: rows, gradient: gradient)
    case .gaussianLearned: _ = learnedGaussian(x: x, outputs: l, batch: batch, perExample: rows, gradient: gradient)
    }
  }

  /// log N(x; f(z), σ²I) per row, summed in `T`; d(−log p)/d f = (f − x)/σ².
  func fixedGaussian<T: BinaryFloatingPoint>(
    sigma: Float, x: UnsafePointer<Float>, outputs l: UnsafePointer<Float>, batch: Int,
    perExample: UnsafeMutablePointer<T>?, gradient: UnsafeMutablePointer<Float>?
  ) -> Double {
    let n = config.targetSize
    let inv = 1 / (sigma * sigma)
    let c = -0.5 * logf(2 * Float.pi * sigma * sigma) * Float(n)
    var total = 0.0
    for r in 0..<batch {
      var acc: T = 0
      let xr = x + r * n
      let lr = l + r * n
      for j in 0..<n {
        let diff = lr[j] - xr[j]
        acc += T(diff * diff)
        gradient?[r * n + j] = diff * inv
      }
      let lp = T(-0.5 * inv) * acc + T(c)
      perExample?[r] = lp
      total += Double(lp)
    }
    return total
  }

  /// log N(x; μ, diag exp(log σ²)) per row, summed in `T`, from outputs [μ (n) | log σ² (n)] per
  /// row; d(−log p)/dμ = (μ − x)·exp(−log σ²), d(−log p)/d log σ² = ½·(1 − (x − μ)²·exp(−log σ²)).
  func learnedGaussian<T: BinaryFloatingPoint>(
    x: UnsafePointer<Float>, outputs l: UnsafePointer<Float>, batch: Int,
    perExample: UnsafeMutablePointer<T>?, gradient: UnsafeMutablePointer<Float>?
  ) -> Double {
    let n = config.targetSize
    let log2pi = logf(2 * Float.pi)
    var total = 0.0
    for r in 0..<batch {
      var acc: T = 0
      let xr = x + r * n, mu = l + r * 2 * n, lv = mu + n
      for j in 0..<n {
        let diff = mu[j] - xr[j]
        let precision = expf(-lv[j])
        acc += T(log2pi + lv[j] + diff * diff * precision)
        if let g = gradient {
          g[r * 2 * n + j] = diff * precision
          g[r * 2 * n + n + j] = 0.5 * (1 - diff * diff * precision)
        }
      }
      perExample?[r] = T(-0.5) * acc
      total += Double(T(-0.5) * acc)
    }
    return total
  }

  /// Backward pass of the last `loss` call: writes the gradient of the objective's loss summed
  /// over the batch (the ELBO's: Σ (klWeight·kl − recon)) into `grads` (overwriting). The caller
  /// scales by 1/global batch. `ready` receives each layer's arena range as soon as its gradients
  /// are written and its weights no longer read (the decoder's last layer first): every parameter
  /// exactly once.
  public func backward(ready: GradientReady? = nil) {
    guard let target = lastTarget, let eps = lastEps else { preconditionFailure("backward() before loss()") }
    let batch = lastBatch
    guard let muHead, let logvarHead, let objective else {
      // Regressor: the decoder, then the condition tower it read (after the tower's ReLU).
      let cond = condition!
      decoder.backward(
        UnsafePointer(cond.output), batch: batch, params: params, grads: grads, dInput: cond.gradOutput, ready: ready)
      cond.backward(UnsafePointer(conditionRows.ptr), batch: batch, params: params, grads: grads, dInput: nil, ready: ready)
      return
    }
    decoder.backward(
      UnsafePointer(z.ptr), batch: batch * objective.samples, params: params, grads: grads, dInput: dz.ptr, ready: ready)
    objective.headGradients(self, eps: eps, batch: batch)
    backwardEncoder(target: target, batch: batch, muHead: muHead, logvarHead: logvarHead, ready: ready)
  }

  /// Backward from dL/dμ and dL/d log σ² (in `dmu`, `dlogvar`): the heads, the encoder and, for
  /// a CVAE, the condition tower.
  func backwardEncoder(
    target: UnsafePointer<Float>, batch: Int, muHead: Linear, logvarHead: Linear, ready: GradientReady?
  ) {
    // Heads, then encoder.
    let top = encoder.result(of: target)
    let dTop = encoder.isEmpty ? nil : encoder.gradOutput
    muHead.backward(top, dmu.ptr, dTop, batch: batch, params: params, grads: grads)
    ready?(muHead.arenaRange)
    logvarHead.backward(top, dlogvar.ptr, dTop, batch: batch, params: params, grads: grads, accumulateDx: true)
    ready?(logvarHead.arenaRange)
    encoder.backward(target, batch: batch, params: params, grads: grads, dInput: nil, ready: ready)
    // CVAE: the condition tower receives, through `extraPreGradients`, the gradients of the
    // pre-activations it was added to; its output has no other reader.
    if let cond = condition {
      cond.gradOutput.update(repeating: 0, count: batch * config.conditionHidden[config.conditionHidden.count - 1])
      cond.backward(UnsafePointer(conditionRows.ptr), batch: batch, params: params, grads: grads, dInput: nil, ready: ready)
    }
  }

  /// Adds Σ over `batch` rows of KL(q(z_j|x) ‖ N(0, 1)) per latent dimension j into `sums`
  /// ([zdim], rows in order), from the `mu` and `logvar` of the last `encode`.
  public func addKLPerDimension(batch: Int, into sums: UnsafeMutablePointer<Double>) {
    let d = config.zdim
    for r in 0..<batch {
      for j in 0..<d {
        let m = mu.ptr[r * d + j], lv = logvar.ptr[r * d + j]
        sums[j] += Double(-0.5 * (1 + lv - m * m - expf(lv)))
      }
    }
  }
}
