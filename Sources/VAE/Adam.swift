import CSupport

#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Adam's hyper-parameters. `weightDecay` is added to the gradient (L2, as Caffe and
/// `torch.optim.Adam(weight_decay=)` do) or, when `decoupled`, applied to the parameters
/// directly (AdamW, Loshchilov & Hutter).
public struct AdamConfig: Sendable, Hashable, Codable {
  public var lr: Float
  public var beta1: Float
  public var beta2: Float
  public var eps: Float
  public var weightDecay: Float
  public var decoupled: Bool
  public init(
    lr: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
    weightDecay: Float = 0, decoupled: Bool = false
  ) {
    self.lr = lr
    self.beta1 = beta1
    self.beta2 = beta2
    self.eps = eps
    self.weightDecay = weightDecay
    self.decoupled = decoupled
  }
}

/// Adam over whole arenas in one fused pass (gradient scale, weight decay, both moments and the
/// parameter update per element), the same arithmetic as `torch.optim.Adam`'s default path.
/// The loop is C (`vae_adam_update`), vectorised for AVX-512/AVX2 and picked at load time.
public final class Adam: @unchecked Sendable {
  public var config: AdamConfig
  public let m: Arena
  public let v: Arena
  /// Number of updates applied so far.
  public var step: Int = 0

  public init(config: AdamConfig, layout: ParameterLayout) {
    self.config = config
    m = Arena(layout: layout)
    v = Arena(layout: layout)
  }

  /// One update: g = scale·grads (+ L2), then Adam. `range` restricts it to a slice of the
  /// arenas (a rank's shard); the step counter advances once per call.
  public func update(params: Arena, grads: Arena, scale: Float, range: Range<Int>? = nil) {
    beginStep()
    let r = range ?? 0..<params.count
    apply(params: params, gradients: UnsafePointer(grads.base + r.lowerBound), range: r, scale: scale)
  }

  /// Advances the step counter: call once per optimizer step, before `apply`.
  public func beginStep() { step += 1 }

  /// The update of step `step` on `range` of the arenas, reading the gradients of that range
  /// from `gradients` (which may point into memory another rank owns). Call `beginStep` first.
  public func apply(params: Arena, gradients: UnsafePointer<Float>, range r: Range<Int>, scale: Float) {
    let c = config
    let t = Double(step)
    let bc1 = 1 - pow(Double(c.beta1), t)
    let bc2 = 1 - pow(Double(c.beta2), t)
    let stepSize = Float(Double(c.lr) / bc1)
    let invSqrtBC2 = Float(1 / bc2.squareRoot())
    let l2: Float = c.decoupled ? 0 : c.weightDecay
    let decay: Float = c.decoupled ? 1 - c.lr * c.weightDecay : 1
    let o = r.lowerBound
    vae_adam_update(
      params.base + o, gradients, m.base + o, v.base + o, r.count, scale, l2, decay,
      c.beta1, c.beta2, stepSize, invSqrtBC2, c.eps)
  }
}
