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
  /// Whether weight decay also applies to biases (`torch.optim.Adam`'s default does; Caffe's
  /// tutorial networks set `decay_mult: 0` on biases).
  public var decayBiases: Bool
  public init(
    lr: Float = 1e-3, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
    weightDecay: Float = 0, decoupled: Bool = false, decayBiases: Bool = true
  ) {
    self.decayBiases = decayBiases
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
/// A sharded optimizer (ZeRO stage 1) owns the moments of one slice of the arena only.
public final class Adam: @unchecked Sendable {
  public var config: AdamConfig
  public let layout: ParameterLayout
  /// The slice of the arena whose moments this optimizer keeps: all of it, or a rank's shard.
  public let owned: Range<Int>
  /// First and second moments of `owned` (element 0 is arena element `owned.lowerBound`).
  public let mSlice: UnsafeMutableBufferPointer<Float>
  public let vSlice: UnsafeMutableBufferPointer<Float>
  /// Number of updates applied so far.
  public var step: Int = 0
  /// Arena ranges that take no weight decay (the biases, unless `decayBiases`), in order.
  let undecayed: [Range<Int>]

  public init(config: AdamConfig, layout: ParameterLayout, owning: Range<Int>? = nil) {
    self.config = config
    self.layout = layout
    owned = owning ?? 0..<layout.total
    precondition(owned.lowerBound >= 0 && owned.upperBound <= layout.total, "moments outside the arena")
    mSlice = .allocate(capacity: owned.count)
    vSlice = .allocate(capacity: owned.count)
    mSlice.initialize(repeating: 0)
    vSlice.initialize(repeating: 0)
    undecayed =
      config.decayBiases || config.weightDecay == 0
      ? [] : layout.specs.indices.filter { layout.specs[$0].name.hasSuffix(".bias") }.map(layout.range(of:))
  }

  deinit {
    mSlice.deallocate()
    vSlice.deallocate()
  }

  /// True when this optimizer keeps the moments of the whole arena.
  public var ownsAll: Bool { owned.count == layout.total }
  /// The first moments as an arena (a view: no copy). Only when `ownsAll`.
  public var m: Arena { whole(mSlice) }
  /// The second moments as an arena (a view: no copy). Only when `ownsAll`.
  public var v: Arena { whole(vSlice) }

  private func whole(_ b: UnsafeMutableBufferPointer<Float>) -> Arena {
    precondition(ownsAll, "a sharded optimizer holds only its slice of the moments")
    return Arena(layout: layout, view: b.baseAddress!)
  }

  /// Takes this optimizer's slice of whole-arena moments (e.g. from a checkpoint).
  public func load(m: Arena, v: Arena) {
    precondition(m.count == layout.total && v.count == layout.total)
    mSlice.baseAddress!.update(from: m.base + owned.lowerBound, count: owned.count)
    vSlice.baseAddress!.update(from: v.base + owned.lowerBound, count: owned.count)
  }

  /// One update: g = scale·grads (+ L2), then Adam. `range` restricts it to a slice of the
  /// arenas (a rank's shard); the step counter advances once per call.
  public func update(params: Arena, grads: Arena, scale: Float, range: Range<Int>? = nil) {
    beginStep()
    let r = range ?? owned
    apply(params: params, gradients: UnsafePointer(grads.base + r.lowerBound), range: r, scale: scale)
  }

  /// Advances the step counter: call once per optimizer step, before `apply`.
  public func beginStep() { step += 1 }

  /// The update of step `step` on `range` of the arenas (within `owned`), reading the
  /// gradients of that range from `gradients` (which may point into memory another rank
  /// owns). Call `beginStep` first.
  public func apply(params: Arena, gradients: UnsafePointer<Float>, range r: Range<Int>, scale: Float) {
    precondition(r.lowerBound >= owned.lowerBound && r.upperBound <= owned.upperBound, "update outside the owned slice")
    guard !undecayed.isEmpty else { return kernel(params, gradients, r, scale, decay: true) }
    // Elementwise, so the range may be cut where decayed and undecayed tensors meet.
    var at = r.lowerBound
    for u in undecayed where u.upperBound > at && u.lowerBound < r.upperBound {
      let lo = max(u.lowerBound, at), hi = min(u.upperBound, r.upperBound)
      if lo > at { kernel(params, gradients + (at - r.lowerBound), at..<lo, scale, decay: true) }
      kernel(params, gradients + (lo - r.lowerBound), lo..<hi, scale, decay: false)
      at = hi
    }
    if at < r.upperBound { kernel(params, gradients + (at - r.lowerBound), at..<r.upperBound, scale, decay: true) }
  }

  private func kernel(_ params: Arena, _ gradients: UnsafePointer<Float>, _ r: Range<Int>, _ scale: Float, decay: Bool) {
    let c = config
    let t = Double(step)
    let bc1 = 1 - pow(Double(c.beta1), t)
    let bc2 = 1 - pow(Double(c.beta2), t)
    let stepSize = Float(Double(c.lr) / bc1)
    let invSqrtBC2 = Float(1 / bc2.squareRoot())
    let wd: Float = decay ? c.weightDecay : 0
    let l2: Float = c.decoupled ? 0 : wd
    let shrink: Float = c.decoupled ? 1 - c.lr * wd : 1
    let o = r.lowerBound - owned.lowerBound
    vae_adam_update(
      params.base + r.lowerBound, gradients, mSlice.baseAddress! + o, vSlice.baseAddress! + o, r.count,
      scale, l2, shrink, c.beta1, c.beta2, stepSize, invSqrtBC2, c.eps)
  }
}
