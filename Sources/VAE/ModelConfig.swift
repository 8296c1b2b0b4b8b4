import Foundation
/// What the network models. `vae`: p(x) through a latent z (Kingma & Welling). `cvae`: p(Y|X)
/// through z, with a condition tower on X added into the encoder and the decoder (Doersch's
/// tutorial §4, its `mnist_cvae.prototxt`). `regressor`: p(Y|X) straight from the condition
/// tower, no latent (the tutorial's `mnist_regressor.prototxt`). Raw values are the config's
/// and the checkpoint's `kind`.
public enum ModelKind: String, Sendable, Hashable, Codable, CaseIterable {
  case vae
  case cvae
  case regressor
}

/// The network's shape. VAE encoder: input → hidden… (ReLU) → (mu, logvar) heads of size
/// `zdim`; decoder: zdim → decoderHidden… (ReLU) → input-sized output (logits or Gaussian mean).
/// Conditional kinds split each input row into X (its first `conditionSize` values) and the
/// target Y (the rest): the encoder reads Y, the output predicts Y, and the condition tower
/// reads X (`conditionHidden` widths, ReLU between layers). In a CVAE, condition layer
/// `conditionIntoEncoder`'s pre-activation is added to the encoder layer of the same index, and
/// the tower's last output to the decoder's first hidden pre-activation. In a regressor the
/// decoder's hidden layers follow the tower directly (after a ReLU).
public struct ModelConfig: Sendable, Hashable, Codable {
  public var kind: ModelKind
  public var inputSize: Int
  public var conditionSize: Int
  public var conditionHidden: [Int]
  public var conditionIntoEncoder: Int
  public var hidden: [Int]
  public var decoderHidden: [Int]
  public var zdim: Int
  public var likelihood: Likelihood
  /// A vae's encoder and decoder as layer lists (`model.encoder`, `model.decoder`); empty: the
  /// dense towers of `hidden` and `decoderHidden`.
  public var encoderLayers: [LayerDecl] = []
  public var decoderLayers: [LayerDecl] = []
  /// An example's shape as an image, `[channels, height, width]`, when the data gives one (an
  /// `.npy` file's `[N, H, W]` or `[N, H, W, C]`); empty: square grey images when `inputSize` is
  /// a square (the 28×28 data sets), else flat.
  public var inputShape: [Int] = []

  public init(
    kind: ModelKind = .vae, inputSize: Int = 784, hidden: [Int], decoderHidden: [Int]? = nil, zdim: Int,
    likelihood: Likelihood = .bernoulli, conditionSize: Int = 0, conditionHidden: [Int] = [],
    conditionIntoEncoder: Int = 1
  ) {
    self.kind = kind
    self.inputSize = inputSize
    self.hidden = hidden
    self.decoderHidden = decoderHidden ?? hidden.reversed()
    self.zdim = zdim
    self.likelihood = likelihood
    self.conditionSize = conditionSize
    self.conditionHidden = conditionHidden
    self.conditionIntoEncoder = conditionIntoEncoder
  }

  /// Values the model predicts per row: the whole input (VAE) or Y.
  public var targetSize: Int { kind == .vae ? inputSize : inputSize - conditionSize }
  /// Decoder outputs per row: the target, twice over when the variance is learned (μ, log σ²).
  public var outputSize: Int { targetSize * likelihood.outputsPerValue }
  /// Width of the reparameterisation noise ε per row (0 for the regressor).
  public var latentSize: Int { kind == .regressor ? 0 : zdim }

  /// Whether the encoder and decoder are layer lists.
  public var usesLayerLists: Bool { !encoderLayers.isEmpty || !decoderLayers.isEmpty }

  /// The image shape `[c, h, w]` conv layers see: `inputShape`, else square and grey when the
  /// input size is a square, else `[inputSize]`.
  public var imageShape: [Int] {
    if inputShape.count == 3 { return inputShape }
    let side = Int(Double(inputSize).squareRoot().rounded())
    return side * side == inputSize ? [1, side, side] : [inputSize]
  }

  /// Floats the gradient exchange carries after the parameters (its vote slots).
  public static let exchangeTail = 8

  /// The most parameters a model may have: 2³¹ − 1 less `exchangeTail`, so that every count
  /// the gradient exchange hands to MPI (a C int) fits, on any number of ranks.
  public static let maxParameters = Int(Int32.max) - exchangeTail

  /// Why this shape cannot be built (one line), or nil.
  public var problem: String? {
    if !inputShape.isEmpty && (inputShape.count != 3 || inputShape.reduce(1, *) != inputSize) {
      return "model.input_shape: \(Self.shown(inputShape)) is not [channels, height, width] of model.input_size \(inputSize) values"
    }
    let towers: ModelLayers
    switch walk() {
    case .failure(let e): return e.description
    case .success(let t): towers = t
    }
    // In Double: sizes of any magnitude neither trap nor wrap here.
    let count = towers.arenaOrder.reduce(0.0) { total, l in
      total + l.tensors.reduce(0.0) { $0 + $1.shape.reduce(1.0) { $0 * Double($1) } }
    }
    if count > Double(Self.maxParameters) {
      return "the model has \(String(format: "%.0f", count)) parameters; at most \(Self.maxParameters) (2^31 - 1 less the exchange's \(Self.exchangeTail) vote slots: its counts are 32-bit)"
    }
    if likelihood == .gaussianLearned && kind != .vae {
      return "model.sigma: learned needs model.kind vae (a \(kind.rawValue) predicts Y with a fixed sigma)"
    }
    switch kind {
    case .vae:
      return nil
    case .cvae, .regressor:
      guard conditionSize >= 1, conditionSize < inputSize else {
        return "a \(kind.rawValue) needs a condition of 1…\(inputSize - 1) pixels, got \(conditionSize)"
      }
      guard let last = conditionHidden.last else { return "model.condition_hidden: a \(kind.rawValue) needs a condition tower" }
      guard kind == .cvae else { return nil }
      guard conditionHidden.indices.contains(conditionIntoEncoder), hidden.indices.contains(conditionIntoEncoder),
        conditionHidden[conditionIntoEncoder] == hidden[conditionIntoEncoder]
      else {
        return "model.condition_into_encoder: condition layer \(conditionIntoEncoder) must exist and have the width of encoder layer \(conditionIntoEncoder) (condition_hidden \(conditionHidden), hidden \(hidden))"
      }
      guard decoderHidden.first == last else {
        return "model.condition_hidden: its last width (\(last)) must equal the decoder's first hidden width (decoder_hidden \(decoderHidden))"
      }
      return nil
    }
  }

  /// The layers in arena order, named like a PyTorch module: the encoder's layers, the μ and
  /// log σ² heads, the decoder's layers (its last `decoder.out`), then the condition tower
  /// (`cond.k`). A regressor has the tower and the decoder only. The one walk over the shape: the
  /// layout, the MAC count and `VAEModel` all read it. Only for a shape without a `problem`.
  public var layers: ModelLayers {
    switch walk() {
    case .success(let t): return t
    case .failure(let e): preconditionFailure(e.description)
    }
  }

  /// Tensors in arena order: each layer's `weight` (PyTorch's shape), then its `bias` [out].
  public var layout: ParameterLayout { layers.layout }

  /// Multiply-adds of one forward pass of one example (GEMMs only).
  public var forwardMACs: Int { layers.arenaOrder.reduce(0) { $0 + $1.forwardMACs } }

  /// The towers' layers, with every shape inferred and checked, or why they cannot be built.
  public func walk() -> Result<ModelLayers, LayerDeclError> {
    if usesLayerLists { return layerListWalk() }
    var t = ModelLayers()
    func chain(_ prefix: String, from: Int, _ widths: [Int], relu: (Int) -> Bool) -> (Int, [LayerSpec]) {
      var prev = from, out: [LayerSpec] = []
      for (i, h) in widths.enumerated() {
        out.append(.dense("\(prefix).\(i)", prev, h, relu(i) ? .relu : .none))
        prev = h
      }
      return (prev, out)
    }
    let condLast = conditionHidden.count - 1
    if kind == .regressor {
      let (top, cond) = chain("cond", from: conditionSize, conditionHidden) { _ in true }
      let (last, dec) = chain("decoder", from: top, decoderHidden) { _ in true }
      t.condition = cond
      t.decoder = dec + [.dense("decoder.out", last, targetSize)]
      return .success(t)
    }
    let (top, enc) = chain("encoder", from: targetSize, hidden) { _ in true }
    t.encoder = enc
    t.heads = [.dense("encoder.mu", top, zdim), .dense("encoder.logvar", top, zdim)]
    let (last, dec) = chain("decoder", from: zdim, decoderHidden) { _ in true }
    t.decoder = dec + [.dense("decoder.out", last, outputSize)]
    if kind == .cvae { t.condition = chain("cond", from: conditionSize, conditionHidden) { $0 < condLast }.1 }
    return .success(t)
  }
}

/// A model's layers by tower, in the order the arena holds them.
public struct ModelLayers: Sendable, Hashable {
  public var encoder: [LayerSpec] = []
  public var heads: [LayerSpec] = []
  public var decoder: [LayerSpec] = []
  public var condition: [LayerSpec] = []
  /// Every entry of the layer lists in order, flatten and reshape included (for `info`).
  public var table: [LayerSpec] = []

  public var arenaOrder: [LayerSpec] {
    heads.isEmpty ? condition + decoder : encoder + heads + decoder + condition
  }

  /// Tensors in arena order: each layer's `weight` (PyTorch's shape), then its `bias` [out].
  public var layout: ParameterLayout { ParameterLayout(specs: arenaOrder.flatMap(\.tensors)) }
}

extension ModelConfig {
  /// `walk()` for layer lists (a vae only): the encoder from the image (or flat input) to a flat
  /// top that the dense μ and log σ² heads read, the decoder from z to the data's shape.
  func layerListWalk() -> Result<ModelLayers, LayerDeclError> {
    guard kind == .vae else { return .failure(LayerDeclError("model.encoder and model.decoder: layer lists are for model.kind vae; a \(kind.rawValue) takes hidden and condition_hidden")) }
    guard !encoderLayers.isEmpty, !decoderLayers.isEmpty else {
      return .failure(LayerDeclError("model.encoder and model.decoder: give both layer lists (or neither, and hidden)"))
    }
    var t = ModelLayers()
    let image = imageShape
    if let problem = colourProblem(image) { return .failure(LayerDeclError(problem)) }
    let first = encoderLayers[0].op
    var shape: [Int]
    switch first {
    case .conv, .deconv, .flatten: shape = image
    case .dense, .reshape: shape = [inputSize]
    }
    switch chain("encoder", encoderLayers, from: shape, lastName: nil, lastActivation: .relu) {
    case .failure(let e): return .failure(e)
    case .success(let (specs, table, top)):
      guard top.count == 1 else {
        return .failure(LayerDeclError("model.encoder: ends with shape \(Self.shown(top)); end it with flatten (the μ and log σ² heads are dense)"))
      }
      t.encoder = specs
      t.table = table
      shape = top
    }
    t.heads = [.dense("encoder.mu", shape[0], zdim), .dense("encoder.logvar", shape[0], zdim)]
    t.table += t.heads
    switch chain("decoder", decoderLayers, from: [zdim], lastName: "decoder.out", lastActivation: .none) {
    case .failure(let e): return .failure(e)
    case .success(let (specs, table, out)):
      let want = image.count == 3 ? [image[0] * likelihood.outputsPerValue, image[1], image[2]] : [outputSize]
      guard out == want || (out.count == 1 && out[0] == outputSize) else {
        let values = likelihood.outputsPerValue == 2 ? " (a mean and a log-variance per value: twice the channels)" : ""
        return .failure(LayerDeclError("model.decoder: ends with shape \(Self.shown(out)), but the data's examples need \(Self.shown(want))\(values)"))
      }
      t.decoder = specs
      t.table += table
    }
    return .success(t)
  }

  /// One tower's list from `shape`: its layers with parameters (named prefix.index, the last
  /// one `lastName` when given), the table of every entry, and the final shape.
  func chain(
    _ prefix: String, _ decls: [LayerDecl], from start: [Int], lastName: String?, lastActivation: Activation
  ) -> Result<([LayerSpec], [LayerSpec], [Int]), LayerDeclError> {
    let lastParam = decls.lastIndex { $0.op.hasParameters }
    guard let lastParam else { return .failure(LayerDeclError("model.\(prefix): has no dense, conv or deconv layer")) }
    var shape = start, specs: [LayerSpec] = [], table: [LayerSpec] = []
    for (i, d) in decls.enumerated() {
      switch outputShape(of: d.op, input: shape) {
      case .failure(let e):
        return .failure(LayerDeclError("model.\(prefix)[\(i)] (\(d)): \(e.description)"))
      case .success(let next):
        let isLast = i == lastParam
        let name = isLast && lastName != nil ? lastName! : "\(prefix).\(i)"
        let act = d.activation ?? (isLast && prefix == "decoder" ? lastActivation : .relu)
        // The model's own rows are the data's, channels-last: the layer reading or writing them does so.
        // (With one channel the two orders are one, and a learned variance's two channels stay planes.)
        let boundary = imageShape.count == 3 && imageShape[0] > 1
          && ((prefix == "encoder" && i == 0) || (prefix == "decoder" && i == decls.count - 1))
        let spec = LayerSpec(
          name: name, op: d.op, activation: d.op.hasParameters ? act : .none, inShape: shape, outShape: next,
          channelsLast: boundary)
        if d.op.hasParameters { specs.append(spec) }
        table.append(spec)
        shape = next
      }
    }
    return .success((specs, table, shape))
  }

  /// With several channels the model's rows are [H, W, C]: only a conv may read them and only
  /// a deconv write them (learning means and variances, two images, is for one channel).
  func colourProblem(_ image: [Int]) -> String? {
    guard image.count == 3, image[0] > 1, let first = encoderLayers.first?.op, let last = decoderLayers.last?.op else { return nil }
    switch first {
    case .deconv, .reshape: return "model.encoder[0]: the data's [H, W, \(image[0])] images are read by a conv (or flatten, or dense) layer"
    default: break
    }
    if case .conv = last { return "model.decoder: its last layer writes [H, W, \(image[0])] images: end with deconv (k1 s1 for a 1×1 convolution)" }
    if case .deconv = last, likelihood == .gaussianLearned {
      return "model.sigma: learned with a deconv output on \(image[0])-channel images is not supported; end the decoder with dense and reshape, or use a fixed sigma"
    }
    return nil
  }

  static func shown(_ s: [Int]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }
}
