import CSupport

/// A layer's nonlinearity, applied after its bias (PyTorch's defaults: leaky ReLU slope 0.01,
/// ELU α = 1, softplus β = 1 with threshold 20). Raw values are the config's words.
public enum Activation: String, Sendable, Hashable, Codable, CaseIterable {
  case relu, leaky_relu, elu, tanh, softplus, none

  /// CSupport's `VAE_ACT_*` number.
  var code: Int32 {
    switch self {
    case .none: Int32(VAE_ACT_NONE)
    case .relu: Int32(VAE_ACT_RELU)
    case .leaky_relu: Int32(VAE_ACT_LEAKY_RELU)
    case .elu: Int32(VAE_ACT_ELU)
    case .tanh: Int32(VAE_ACT_TANH)
    case .softplus: Int32(VAE_ACT_SOFTPLUS)
    }
  }

  /// out = f(pre) over n values (out may be pre).
  public func apply(_ pre: UnsafePointer<Float>, _ out: UnsafeMutablePointer<Float>, count n: Int) {
    vae_activation_forward(code, pre, out, n)
  }

  /// In place d ← d · f′(pre), from the pre-activation and the output.
  public func backward(pre: UnsafePointer<Float>, out: UnsafePointer<Float>, _ d: UnsafeMutablePointer<Float>, count n: Int) {
    vae_activation_backward(code, pre, out, d, n)
  }
}

/// One layer kind with parameters, as the engine runs it: a plain value or an object over
/// caller-owned or self-owned buffers (sized once for `maxBatch` rows), its weight and bias one
/// contiguous range of the arenas. Rows are `inputCount` floats in, `outputCount` out (images
/// in NCHW order, so a flatten is free). A new kind is a type conforming to this, a case of
/// `LayerOp` (its config word, shapes and tensors) and its entry in `LayerOp.makeLayer`.
public protocol Layer: Sendable {
  /// The weight then the bias: what backward reports ready.
  var arenaRange: Range<Int> { get }
  var inputCount: Int { get }
  var outputCount: Int { get }
  /// y[batch, outputCount] = the layer's affine map of x (+ addend, same shape), no activation.
  func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, params: Arena,
    addend: UnsafePointer<Float>?)
  /// Given dL/dy in `dy` (which it may overwrite), writes the weight and bias gradients into
  /// `grads` (overwriting) and, when `dx` is given, dL/dx (overwriting, or adding with
  /// `accumulateDx`). x is the input of the last `forward`.
  func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    batch: Int, params: Arena, grads: Arena, accumulateDx: Bool)
}

extension Linear: Layer {
  public var inputCount: Int { inFeatures }
  public var outputCount: Int { outFeatures }

  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, params: Arena,
    addend: UnsafePointer<Float>?
  ) {
    forward(x, y, batch: batch, params: params, relu: false, addend: addend)
  }

  public func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    batch: Int, params: Arena, grads: Arena, accumulateDx: Bool
  ) {
    backward(x, dy, dx, batch: batch, params: params, grads: grads, accumulateDx: accumulateDx, reluOutput: nil)
  }
}
