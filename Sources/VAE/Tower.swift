/// Called as a layer's gradients (weight and bias, one arena range) become final.
public typealias GradientReady = (Range<Int>) -> Void

/// A chain of fully connected layers over buffers sized once for `maxBatch` rows. Layer k
/// computes pre_k = in_k · W_kᵀ + b_k (+ addend_k) and out_k = ReLU(pre_k) when `relu[k]`, else
/// pre_k; in_0 is the tower's input, in_k = out_{k−1}. A model is a composition of towers: an
/// addend is another tower's exported pre-activation (the conditional VAE adds its condition
/// tower into the encoder and the decoder this way), and a tower's exported pre-activations
/// receive the gradients of the places they were added to.
public final class Tower: @unchecked Sendable {
  public let layers: [Linear]
  let relu: [Bool]
  public let maxBatch: Int
  /// out_k, [maxBatch, width_k].
  let out: [Buffer]
  /// pre_k where it is exported and differs from out_k (a ReLU layer), else nil.
  let pre: [Buffer?]
  /// dL/d out_k; the caller writes the last one (`gradOutput`) before `backward`.
  let dOut: [Buffer]
  /// Per layer: a [maxBatch, width] buffer added to the pre-activation (nil: none).
  var addend: [UnsafePointer<Float>?]
  /// Per layer: gradients to add to dL/d pre_k, one from each place pre_k was added in.
  var extraPreGradients: [[UnsafePointer<Float>]]

  /// `exportPre`: layers whose pre-activation another tower will read (`preActivation(_:)`).
  public init(layers: [Linear], relu: [Bool], maxBatch: Int, exportPre: Set<Int> = []) {
    precondition(layers.count == relu.count)
    self.layers = layers
    self.relu = relu
    self.maxBatch = maxBatch
    out = layers.map { Buffer(maxBatch * $0.outFeatures) }
    dOut = layers.map { Buffer(maxBatch * $0.outFeatures) }
    pre = layers.indices.map { exportPre.contains($0) && relu[$0] ? Buffer(maxBatch * layers[$0].outFeatures) : nil }
    addend = Array(repeating: nil, count: layers.count)
    extraPreGradients = Array(repeating: [], count: layers.count)
  }

  public var isEmpty: Bool { layers.isEmpty }
  /// The last layer's output (the tower's result); only when not empty.
  public var output: UnsafeMutablePointer<Float> { out[out.count - 1].ptr }
  /// Where the caller writes dL/d(output) before `backward`.
  public var gradOutput: UnsafeMutablePointer<Float> { dOut[dOut.count - 1].ptr }
  /// Layer k's pre-activation (valid after `forward`); k must be in `exportPre` or have no ReLU.
  public func preActivation(_ k: Int) -> UnsafePointer<Float> { UnsafePointer((pre[k] ?? out[k]).ptr) }
  /// The gradient of layer k's pre-activation (valid after `backward`).
  public func gradPreActivation(_ k: Int) -> UnsafePointer<Float> { UnsafePointer(dOut[k].ptr) }

  /// The result for `input`: the last layer's output, or `input` itself when the tower is empty.
  public func result(of input: UnsafePointer<Float>) -> UnsafePointer<Float> {
    isEmpty ? input : UnsafePointer(output)
  }

  public func forward(_ input: UnsafePointer<Float>, batch: Int, params: Arena) {
    precondition(batch <= maxBatch)
    var x = input
    for (k, layer) in layers.enumerated() {
      if let p = pre[k] {
        layer.forward(x, p.ptr, batch: batch, params: params, relu: false, addend: addend[k])
        for i in 0..<(batch * layer.outFeatures) { out[k].ptr[i] = max(p.ptr[i], 0) }
      } else {
        layer.forward(x, out[k].ptr, batch: batch, params: params, relu: relu[k], addend: addend[k])
      }
      x = UnsafePointer(out[k].ptr)
    }
  }

  /// Backward of the last `forward` (same `input` and `batch`), given dL/d(output) in
  /// `gradOutput`: writes each layer's weight and bias gradients into `grads` (overwriting),
  /// leaves dL/d pre_k in `gradPreActivation(k)`, and writes dL/d input into `dInput` when given
  /// (overwriting, or adding with `accumulateDInput`). `ready` receives each layer's arena
  /// range (weight and bias) once its gradients are written and its weights no longer read,
  /// last layer first.
  public func backward(
    _ input: UnsafePointer<Float>, batch: Int, params: Arena, grads: Arena,
    dInput: UnsafeMutablePointer<Float>?, accumulateDInput: Bool = false, ready: GradientReady? = nil
  ) {
    for k in stride(from: layers.count - 1, through: 0, by: -1) {
      let layer = layers[k]
      let n = batch * layer.outFeatures
      // dL/d pre_k = ReLU mask ⊙ dL/d out_k + the gradients from where pre_k was added. Without
      // the latter the mask is applied in the bias-gradient pass (`reluOutput`).
      let extras = extraPreGradients[k], fuseMask = relu[k] && extras.isEmpty
      if relu[k] && !fuseMask { reluBackward(out[k].ptr, dOut[k].ptr, count: n) }
      for e in extras {
        let d = dOut[k].ptr
        for i in 0..<n { d[i] += e[i] }
      }
      let x = k == 0 ? input : UnsafePointer(out[k - 1].ptr)
      let dx = k == 0 ? dInput : dOut[k - 1].ptr
      layer.backward(
        x, dOut[k].ptr, dx, batch: batch, params: params, grads: grads,
        accumulateDx: k == 0 && accumulateDInput, reluOutput: fuseMask ? UnsafePointer(out[k].ptr) : nil)
      ready?(layer.arenaRange)
    }
  }
}
