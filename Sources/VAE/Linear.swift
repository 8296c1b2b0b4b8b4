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
    let b = UnsafePointer(p + bias.lowerBound)
    let n = outFeatures
    for r in 0..<batch {
      let row = y + r * n
      if let addend {
        let a = addend + r * n
        if relu {
          for j in 0..<n { row[j] = max(row[j] + b[j] + a[j], 0) }
        } else {
          for j in 0..<n { row[j] = row[j] + b[j] + a[j] }
        }
      } else if relu {
        for j in 0..<n { row[j] = max(row[j] + b[j], 0) }
      } else {
        for j in 0..<n { row[j] += b[j] }
      }
    }
  }

  /// Given dL/dy, writes dL/dW and dL/db into `grads` (overwriting) and, when `dx` is given,
  /// dL/dx (overwriting, or adding when `accumulateDx`).
  @inlinable
  public func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    batch: Int, params: Arena, grads: Arena, accumulateDx: Bool = false
  ) {
    let g = grads.base
    GEMM.weightGrad(dy, x, g + weight.lowerBound, batch: batch, inF: inFeatures, outF: outFeatures)
    let db = g + bias.lowerBound
    let n = outFeatures
    db.update(repeating: 0, count: n)
    for r in 0..<batch {
      let row = dy + r * n
      for j in 0..<n { db[j] += row[j] }
    }
    if let dx {
      GEMM.inputGrad(
        dy, params.base + weight.lowerBound, dx, batch: batch, inF: inFeatures, outF: outFeatures,
        beta: accumulateDx ? 1 : 0)
    }
  }
}

/// A layer's name and shape, before it has a place in an arena.
public struct LinearSpec: Sendable, Hashable {
  public let name: String
  public let inFeatures: Int
  public let outFeatures: Int
  public init(name: String, inFeatures: Int, outFeatures: Int) {
    self.name = name
    self.inFeatures = inFeatures
    self.outFeatures = outFeatures
  }
}

extension Linear {
  /// The layers of `specs`, each over its `weight` and `bias` in `layout` (built from `specs`).
  public static func layers(_ specs: [LinearSpec], layout: ParameterLayout) -> [Linear] {
    specs.map { s in
      guard let w = layout.range(named: s.name + ".weight"), let b = layout.range(named: s.name + ".bias") else {
        preconditionFailure("layout has no tensors for layer \(s.name)")
      }
      return Linear(weight: w, bias: b, inFeatures: s.inFeatures, outFeatures: s.outFeatures)
    }
  }
}

/// In place: dh *= (h > 0), the ReLU derivative from its (post-activation) output.
@inlinable
public func reluBackward(_ h: UnsafePointer<Float>, _ dh: UnsafeMutablePointer<Float>, count: Int) {
  for i in 0..<count where h[i] <= 0 { dh[i] = 0 }
}
