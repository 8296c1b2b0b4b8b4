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

  public var name: String {
    switch self {
    case .bernoulli: "bernoulli"
    case .gaussian: "gaussian"
    }
  }
}

/// The network's shape. Encoder: input → hidden… (ReLU) → (mu, logvar) heads of size `zdim`.
/// Decoder: zdim → decoderHidden… (ReLU) → input-sized output (logits or Gaussian mean).
public struct ModelConfig: Sendable, Hashable, Codable {
  public var inputSize: Int
  public var hidden: [Int]
  public var decoderHidden: [Int]
  public var zdim: Int
  public var likelihood: Likelihood

  public init(
    inputSize: Int = 784, hidden: [Int], decoderHidden: [Int]? = nil, zdim: Int,
    likelihood: Likelihood = .bernoulli
  ) {
    self.inputSize = inputSize
    self.hidden = hidden
    self.decoderHidden = decoderHidden ?? hidden.reversed()
    self.zdim = zdim
    self.likelihood = likelihood
  }

  /// The fully connected layers in arena order, named like a PyTorch module: the encoder's
  /// hidden layers, the μ and log σ² heads, the decoder's hidden layers and its output. The
  /// one walk over the shape: the layout, the MAC count and `VAEModel` all read it.
  public var linears: [LinearSpec] {
    var out: [LinearSpec] = []
    var prev = inputSize
    for (i, h) in hidden.enumerated() {
      out.append(LinearSpec(name: "encoder.\(i)", inFeatures: prev, outFeatures: h))
      prev = h
    }
    out.append(LinearSpec(name: "encoder.mu", inFeatures: prev, outFeatures: zdim))
    out.append(LinearSpec(name: "encoder.logvar", inFeatures: prev, outFeatures: zdim))
    prev = zdim
    for (i, h) in decoderHidden.enumerated() {
      out.append(LinearSpec(name: "decoder.\(i)", inFeatures: prev, outFeatures: h))
      prev = h
    }
    out.append(LinearSpec(name: "decoder.out", inFeatures: prev, outFeatures: inputSize))
    return out
  }

  /// Tensors in arena order: each layer's `weight` [out, in], then its `bias` [out].
  public var layout: ParameterLayout { ParameterLayout(linears: linears) }

  /// Multiply-adds of one forward pass of one example (GEMMs only).
  public var forwardMACs: Int { linears.reduce(0) { $0 + $1.inFeatures * $1.outFeatures } }
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

/// The VAE: its layers, its parameter and gradient arenas, and activation buffers sized once
/// for `maxBatch` rows. Forward and backward allocate nothing.
public final class VAEModel: @unchecked Sendable {
  public let config: ModelConfig
  public let maxBatch: Int
  public let params: Arena
  public let grads: Arena
  public let encoder: [Linear]
  public let muHead: Linear
  public let logvarHead: Linear
  public let decoder: [Linear]
  public let output: Linear

  // Activations (post-ReLU for hidden layers), [maxBatch, features] each.
  let encH: [Buffer]
  public let mu: Buffer
  public let logvar: Buffer
  let std: Buffer
  public let z: Buffer
  let decH: [Buffer]
  public let logits: Buffer
  /// Per-example log p(x|z) and KL of the last `loss` call.
  public let reconPerExample: Buffer
  public let klPerExample: Buffer
  let rowScratch: Buffer
  // Gradients of activations.
  let dLogits: Buffer
  let dDecH: [Buffer]
  let dz: Buffer
  let dmu: Buffer
  let dlogvar: Buffer
  let dEncH: [Buffer]
  // Inputs of the last `loss` call, read by `backward`.
  var lastX: UnsafePointer<Float>?
  var lastEps: UnsafePointer<Float>?
  var lastBatch = 0

  /// `params` may be shared with another model (e.g. an evaluator with a larger batch);
  /// `grads` may live in memory other ranks read (MPI shared window).
  public init(config: ModelConfig, maxBatch: Int, params: Arena? = nil, grads: Arena? = nil) {
    precondition(maxBatch > 0)
    self.config = config
    self.maxBatch = maxBatch
    let layout = config.layout
    if let params { precondition(params.layout == layout) }
    if let grads { precondition(grads.layout == layout) }
    self.params = params ?? Arena(layout: layout)
    self.grads = grads ?? Arena(layout: layout)
    let layers = Linear.layers(config.linears, layout: layout)
    let e = config.hidden.count, d = config.decoderHidden.count
    encoder = Array(layers[0..<e])
    muHead = layers[e]
    logvarHead = layers[e + 1]
    decoder = Array(layers[(e + 2)..<(e + 2 + d)])
    output = layers[e + 2 + d]

    let b = maxBatch
    encH = config.hidden.map { Buffer(b * $0) }
    dEncH = config.hidden.map { Buffer(b * $0) }
    decH = config.decoderHidden.map { Buffer(b * $0) }
    dDecH = config.decoderHidden.map { Buffer(b * $0) }
    mu = Buffer(b * config.zdim)
    logvar = Buffer(b * config.zdim)
    std = Buffer(b * config.zdim)
    z = Buffer(b * config.zdim)
    dz = Buffer(b * config.zdim)
    dmu = Buffer(b * config.zdim)
    dlogvar = Buffer(b * config.zdim)
    logits = Buffer(b * config.inputSize)
    dLogits = Buffer(b * config.inputSize)
    reconPerExample = Buffer(b)
    klPerExample = Buffer(b)
    rowScratch = Buffer(b)
  }

  /// PyTorch's `nn.Linear` default: weight and bias ~ U(−1/√in, 1/√in), one stream per tensor.
  public func initialise(rng: CounterRNG) {
    let layout = params.layout
    for (i, spec) in layout.specs.enumerated() {
      let fanIn = spec.name.hasSuffix(".weight") ? spec.shape[1] : layout.specs[i - 1].shape[1]
      let bound = 1 / Float(fanIn).squareRoot()
      var s = rng.stream(.initialisation, index: UInt64(i))
      let p = params.base + layout.offsets[i]
      for j in 0..<spec.count { p[j] = s.nextFloat(in: -bound, bound) }
    }
  }

  /// Encoder only: fills `mu` and `logvar` for `batch` rows of `x`.
  public func encode(_ x: UnsafePointer<Float>, batch: Int) {
    precondition(batch <= maxBatch)
    var input = x
    for (i, layer) in encoder.enumerated() {
      layer.forward(input, encH[i].ptr, batch: batch, params: params, relu: true)
      input = UnsafePointer(encH[i].ptr)
    }
    muHead.forward(input, mu.ptr, batch: batch, params: params, relu: false)
    logvarHead.forward(input, logvar.ptr, batch: batch, params: params, relu: false)
  }

  /// Decoder only: fills `logits` (Bernoulli logits or Gaussian means) from `z` rows.
  public func decode(_ zIn: UnsafePointer<Float>, batch: Int) {
    precondition(batch <= maxBatch)
    var input = zIn
    for (i, layer) in decoder.enumerated() {
      layer.forward(input, decH[i].ptr, batch: batch, params: params, relu: true)
      input = UnsafePointer(decH[i].ptr)
    }
    output.forward(input, logits.ptr, batch: batch, params: params, relu: false)
  }

  /// Forward pass with given noise ε ([batch, zdim]): z = μ + exp(½·logvar)·ε. Returns the loss
  /// terms summed over the batch, fills the per-example buffers, and prepares `backward`.
  /// `x` and `eps` must stay valid until `backward` returns.
  @discardableResult
  public func loss(x: UnsafePointer<Float>, eps: UnsafePointer<Float>, batch: Int) -> LossTerms {
    encode(x, batch: batch)
    let d = config.zdim
    var klTotal = 0.0
    for r in 0..<batch {
      var kl: Float = 0
      for j in (r * d)..<(r * d + d) {
        let lv = logvar.ptr[j]
        let s = expf(0.5 * lv)
        std.ptr[j] = s
        z.ptr[j] = mu.ptr[j] + s * eps[j]
        let m = mu.ptr[j]
        kl += -0.5 * (1 + lv - m * m - s * s)
      }
      klPerExample.ptr[r] = kl
      klTotal += Double(kl)
    }
    decode(UnsafePointer(z.ptr), batch: batch)
    let reconTotal = reconstruction(x: x, logits: UnsafePointer(logits.ptr), batch: batch,
                                    perExample: reconPerExample.ptr, gradient: dLogits.ptr)
    lastX = x
    lastEps = eps
    lastBatch = batch
    return LossTerms(recon: reconTotal, kl: klTotal)
  }

  /// log p(x|z) per row from decoder outputs; optionally d(−log p)/d(output) into `gradient`.
  public func reconstruction(
    x: UnsafePointer<Float>, logits l: UnsafePointer<Float>, batch: Int,
    perExample: UnsafeMutablePointer<Float>?, gradient: UnsafeMutablePointer<Float>?
  ) -> Double {
    let n = config.inputSize
    var total = 0.0
    switch config.likelihood {
    case .bernoulli:
      // Vectorised in C (CSupport): one exp and one log1p per pixel, plus the gradient.
      let rows = perExample ?? rowScratch.ptr
      vae_bernoulli_loglik(x, l, batch, n, rows, gradient)
      for r in 0..<batch { total += Double(rows[r]) }
    case .gaussian(let sigma):
      let inv = 1 / (sigma * sigma)
      let c = -0.5 * logf(2 * Float.pi * sigma * sigma) * Float(n)
      for r in 0..<batch {
        var acc: Float = 0
        let xr = x + r * n
        let lr = l + r * n
        for j in 0..<n {
          let diff = lr[j] - xr[j]
          acc += diff * diff
          gradient?[r * n + j] = diff * inv
        }
        let lp = -0.5 * inv * acc + c
        perExample?[r] = lp
        total += Double(lp)
      }
    }
    return total
  }

  /// Backward pass of the last `loss` call: writes d(Σ over the batch of (kl − recon))/dθ into
  /// `grads` (overwriting). The caller scales by 1/global batch.
  public func backward() {
    guard let x = lastX, let eps = lastEps else { preconditionFailure("backward() before loss()") }
    let batch = lastBatch
    // Decoder, from the output down to z.
    var dOut = UnsafePointer(dLogits.ptr)
    for i in stride(from: decoder.count, through: 0, by: -1) {
      let layer = i == decoder.count ? output : decoder[i]
      let input = i == 0 ? UnsafePointer(z.ptr) : UnsafePointer(decH[i - 1].ptr)
      let dIn = i == 0 ? dz.ptr : dDecH[i - 1].ptr
      layer.backward(input, dOut, dIn, batch: batch, params: params, grads: grads)
      if i > 0 {
        reluBackward(decH[i - 1].ptr, dDecH[i - 1].ptr, count: batch * layer.inFeatures)
        dOut = UnsafePointer(dDecH[i - 1].ptr)
      }
    }
    // Reparameterisation and KL.
    for j in 0..<(batch * config.zdim) {
      let s = std.ptr[j]
      dmu.ptr[j] = dz.ptr[j] + mu.ptr[j]
      dlogvar.ptr[j] = dz.ptr[j] * eps[j] * 0.5 * s + 0.5 * (s * s - 1)
    }
    // Heads, then encoder.
    let top = encoder.isEmpty ? x : UnsafePointer(encH[encoder.count - 1].ptr)
    let dTop = encoder.isEmpty ? nil : dEncH[encoder.count - 1].ptr
    muHead.backward(top, dmu.ptr, dTop, batch: batch, params: params, grads: grads)
    logvarHead.backward(
      top, dlogvar.ptr, dTop, batch: batch, params: params, grads: grads, accumulateDx: true)
    for i in stride(from: encoder.count - 1, through: 0, by: -1) {
      let layer = encoder[i]
      reluBackward(encH[i].ptr, dEncH[i].ptr, count: batch * layer.outFeatures)
      let input = i == 0 ? x : UnsafePointer(encH[i - 1].ptr)
      layer.backward(
        input, dEncH[i].ptr, i == 0 ? nil : dEncH[i - 1].ptr, batch: batch, params: params,
        grads: grads)
    }
  }
}
