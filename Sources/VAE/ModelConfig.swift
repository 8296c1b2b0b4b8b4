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

  /// Floats the gradient exchange carries after the parameters (its vote slots).
  public static let exchangeTail = 8

  /// The most parameters a model may have: 2³¹ − 1 less `exchangeTail`, so that every count
  /// the gradient exchange hands to MPI (a C int) fits, on any number of ranks.
  public static let maxParameters = Int(Int32.max) - exchangeTail

  /// Why this shape cannot be built (one line), or nil.
  public var problem: String? {
    // In Double: widths of any size neither trap nor wrap here.
    let count = linears.reduce(0.0) { $0 + Double($1.inFeatures + 1) * Double($1.outFeatures) }
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

  /// The fully connected layers in arena order, named like a PyTorch module: the encoder's
  /// hidden layers, the μ and log σ² heads, the decoder's hidden layers and its output, then
  /// the condition tower (`cond.k`). A regressor has the tower and the decoder only. The one
  /// walk over the shape: the layout, the MAC count and `VAEModel` all read it.
  public var linears: [LinearSpec] {
    var out: [LinearSpec] = []
    func chain(_ prefix: String, from: Int, _ widths: [Int]) -> Int {
      var prev = from
      for (i, h) in widths.enumerated() {
        out.append(LinearSpec(name: "\(prefix).\(i)", inFeatures: prev, outFeatures: h))
        prev = h
      }
      return prev
    }
    if kind == .regressor {
      let top = chain("cond", from: conditionSize, conditionHidden)
      let last = chain("decoder", from: top, decoderHidden)
      out.append(LinearSpec(name: "decoder.out", inFeatures: last, outFeatures: targetSize))
      return out
    }
    let top = chain("encoder", from: targetSize, hidden)
    out.append(LinearSpec(name: "encoder.mu", inFeatures: top, outFeatures: zdim))
    out.append(LinearSpec(name: "encoder.logvar", inFeatures: top, outFeatures: zdim))
    let last = chain("decoder", from: zdim, decoderHidden)
    out.append(LinearSpec(name: "decoder.out", inFeatures: last, outFeatures: outputSize))
    if kind == .cvae { _ = chain("cond", from: conditionSize, conditionHidden) }
    return out
  }

  /// Tensors in arena order: each layer's `weight` [out, in], then its `bias` [out].
  public var layout: ParameterLayout { ParameterLayout(linears: linears) }

  /// Multiply-adds of one forward pass of one example (GEMMs only).
  public var forwardMACs: Int { linears.reduce(0) { $0 + $1.inFeatures * $1.outFeatures } }
}
