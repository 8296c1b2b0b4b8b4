import CSupport

/// A fully connected layer, `y = x·Wᵀ + b` with PyTorch's `nn.Linear` layout (weight
/// `[out, in]` row-major, bias `[out]`). A plain value: it names its slices of the arenas and
/// works on caller-owned buffers.
public struct Linear: Sendable {
  public let weight: Range<Int>
  public let bias: Range<Int>
  public let inFeatures: Int
  public let outFeatures: Int

  public init(weight: Range<Int>, bias: Range<Int>, inFeatures: Int, outFeatures: Int) {
    precondition(weight.count == inFeatures * outFeatures && bias.count == outFeatures)
    self.weight = weight
    self.bias = bias
    self.inFeatures = inFeatures
    self.outFeatures = outFeatures
  }

  /// y[batch, out] = x·Wᵀ + b (+ addend, [batch, out]), then ReLU when `relu`.
  @inlinable
  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, params: Arena,
    relu: Bool, addend: UnsafePointer<Float>? = nil
  ) {
    let p = params.base
    GEMM.forward(x, p + weight.lowerBound, y, batch: batch, inF: inFeatures, outF: outFeatures)
    vae_bias_activation(y, p + bias.lowerBound, addend, batch, outFeatures, relu ? 1 : 0)
  }

  /// The weight then the bias: one contiguous range of the arena (`LayerSpec.tensors`).
  public var arenaRange: Range<Int> { weight.lowerBound..<bias.upperBound }

  /// Given dL/dy, writes dL/dW and dL/db into `grads` (overwriting) and, when `dx` is given,
  /// dL/dx (overwriting, or adding when `accumulateDx`). With `reluOutput` (this layer's
  /// output after a ReLU), dy is first masked in place where the output is 0, in the same pass
  /// that sums the bias gradient.
  @inlinable
  public func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    batch: Int, params: Arena, grads: Arena, accumulateDx: Bool = false, reluOutput: UnsafePointer<Float>? = nil
  ) {
    let g = grads.base
    vae_bias_gradient(dy, reluOutput, g + bias.lowerBound, batch, outFeatures)
    GEMM.weightGrad(dy, x, g + weight.lowerBound, batch: batch, inF: inFeatures, outF: outFeatures)
    if let dx {
      GEMM.inputGrad(
        dy, params.base + weight.lowerBound, dx, batch: batch, inF: inFeatures, outF: outFeatures,
        beta: accumulateDx ? 1 : 0)
    }
  }
}

/// In place: dh *= (h > 0), the ReLU derivative from its (post-activation) output.
@inlinable
public func reluBackward(_ h: UnsafePointer<Float>, _ dh: UnsafeMutablePointer<Float>, count: Int) {
  for i in 0..<count where h[i] <= 0 { dh[i] = 0 }
}
