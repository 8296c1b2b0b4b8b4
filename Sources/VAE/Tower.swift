/// Called as a layer's gradients (weight and bias, one arena range) become final.
public typealias GradientReady = (Range<Int>) -> Void

/// A chain of layers over buffers sized once for `maxBatch` rows. Layer k computes
/// pre_k = layer_k(in_k) (+ addend_k) and out_k = act_k(pre_k); in_0 is the tower's input,
/// in_k = out_{k−1}. A model is a composition of towers: an addend is another tower's exported
/// pre-activation (the conditional VAE adds its condition tower into the encoder and the decoder
/// this way), and a tower's exported pre-activations receive the gradients of the places they
/// were added to. Dense layers with ReLU or no activation take the fused path (bias and ReLU in
/// one epilogue, the ReLU mask in the bias-gradient pass); every other layer or activation runs
/// the layer, then the activation as its own pass.
public final class Tower: @unchecked Sendable {
  public let layers: [any Layer]
  public let activations: [Activation]
  /// Layer k as a `Linear` when it takes the fused path, else nil.
  let fused: [Linear?]
  public let maxBatch: Int
  /// out_k, [maxBatch, width_k].
  let out: [Buffer]
  /// pre_k where it is kept apart from out_k (an activation other than ReLU and none, or an
  /// exported ReLU layer), else nil.
  let pre: [Buffer?]
  /// dL/d out_k; the caller writes the last one (`gradOutput`) before `backward`.
  let dOut: [Buffer]
  /// Per layer: a [maxBatch, width] buffer added to the pre-activation (nil: none).
  var addend: [UnsafePointer<Float>?]
  /// Per layer: gradients to add to dL/d pre_k, one from each place pre_k was added in.
  var extraPreGradients: [[UnsafePointer<Float>]]

  /// `exportPre`: layers whose pre-activation another tower will read (`preActivation(_:)`).
  public init(layers: [any Layer], activations: [Activation], maxBatch: Int, exportPre: Set<Int> = []) {
    precondition(layers.count == activations.count)
    self.layers = layers
    self.activations = activations
    self.maxBatch = maxBatch
    let fused: [Linear?] = layers.indices.map { k in
      [.relu, .none].contains(activations[k]) ? layers[k] as? Linear : nil
    }
    self.fused = fused
    out = layers.map { Buffer(maxBatch * $0.outputCount) }
    dOut = layers.map { Buffer(maxBatch * $0.outputCount) }
    pre = layers.indices.map { k in
      let separate = activations[k] != .none && (fused[k] == nil || exportPre.contains(k))
      return separate ? Buffer(maxBatch * layers[k].outputCount) : nil
    }
    addend = Array(repeating: nil, count: layers.count)
    extraPreGradients = Array(repeating: [], count: layers.count)
  }

  public var isEmpty: Bool { layers.isEmpty }
  /// The last layer's output (the tower's result); only when not empty.
  public var output: UnsafeMutablePointer<Float> { out[out.count - 1].ptr }
  /// Where the caller writes dL/d(output) before `backward`.
  public var gradOutput: UnsafeMutablePointer<Float> { dOut[dOut.count - 1].ptr }
  /// Layer k's pre-activation (valid after `forward`); k must be in `exportPre` or have no activation.
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
    for k in layers.indices {
      let n = batch * layers[k].outputCount
      if let layer = fused[k] {
        if let p = pre[k] {
          layer.forward(x, p.ptr, batch: batch, params: params, relu: false, addend: addend[k])
          for i in 0..<n { out[k].ptr[i] = max(p.ptr[i], 0) }
        } else {
          layer.forward(x, out[k].ptr, batch: batch, params: params, relu: activations[k] == .relu, addend: addend[k])
        }
      } else if let p = pre[k] {
        layers[k].forward(x, p.ptr, batch: batch, params: params, addend: addend[k])
        activations[k].apply(p.ptr, out[k].ptr, count: n)
      } else {
        layers[k].forward(x, out[k].ptr, batch: batch, params: params, addend: addend[k])
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
      let n = batch * layers[k].outputCount
      let extras = extraPreGradients[k], relu = activations[k] == .relu
      // dL/d pre_k = act′ ⊙ dL/d out_k + the gradients from where pre_k was added. A fused
      // dense ReLU layer without the latter applies its mask in the bias-gradient pass.
      let fuseMask = fused[k] != nil && relu && extras.isEmpty
      if relu && fused[k] != nil && !fuseMask {
        reluBackward(out[k].ptr, dOut[k].ptr, count: n)
      } else if fused[k] == nil && activations[k] != .none {
        activations[k].backward(pre: UnsafePointer(pre[k]!.ptr), out: UnsafePointer(out[k].ptr), dOut[k].ptr, count: n)
      }
      for e in extras {
        let d = dOut[k].ptr
        for i in 0..<n { d[i] += e[i] }
      }
      let x = k == 0 ? input : UnsafePointer(out[k - 1].ptr)
      let dx = k == 0 ? dInput : dOut[k - 1].ptr
      let accumulate = k == 0 && accumulateDInput
      if let layer = fused[k] {
        layer.backward(
          x, dOut[k].ptr, dx, batch: batch, params: params, grads: grads, accumulateDx: accumulate,
          reluOutput: fuseMask ? UnsafePointer(out[k].ptr) : nil)
      } else {
        layers[k].backward(x, dOut[k].ptr, dx, batch: batch, params: params, grads: grads, accumulateDx: accumulate)
      }
      ready?(layers[k].arenaRange)
    }
  }
}
