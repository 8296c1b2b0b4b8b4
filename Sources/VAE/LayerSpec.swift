/// What one entry of a config's layer list does (`model.encoder`, `model.decoder`). Shapes are
/// per example: `[features]` or `[channels, height, width]`.
public enum LayerOp: Sendable, Hashable {
  /// `nn.Linear`: `[in]` → `[out]`.
  case dense(out: Int)
  /// `nn.Conv2d` with a square kernel: `[c, h, w]` → `[out, (h + 2p − k)/s + 1, …]`.
  case conv(out: Int, kernel: Int, stride: Int, padding: Int)
  /// `nn.ConvTranspose2d`: `[c, h, w]` → `[out, (h − 1)s − 2p + k + op, …]`.
  case deconv(out: Int, kernel: Int, stride: Int, padding: Int, outputPadding: Int)
  /// `[c, h, w]` → `[c·h·w]` (free: rows are NCHW).
  case flatten
  /// `[n]` → the given shape of n values (free).
  case reshape([Int])

  /// Whether the op has a weight and a bias (and so an activation and a place in the arena).
  public var hasParameters: Bool {
    switch self {
    case .dense, .conv, .deconv: true
    case .flatten, .reshape: false
    }
  }
}

/// One entry of a layer list as a config writes it, one string: `dense 500`, `conv 32 k4 s2 p1`,
/// `deconv 1 k4 s2 p1 op1 none`, `flatten`, `reshape 64x7x7`, with an optional activation word
/// last (relu, leaky_relu, elu, tanh, softplus, none; the default depends on the layer's place).
/// Stride defaults to 1, padding and output padding to 0.
public struct LayerDecl: Sendable, Hashable, Codable, CustomStringConvertible {
  public var op: LayerOp
  public var activation: Activation?

  public init(op: LayerOp, activation: Activation? = nil) {
    self.op = op
    self.activation = activation
  }

  /// Parses one entry; the error says what was expected (one line, without the key's name).
  public init(parsing text: String) throws(LayerDeclError) {
    var words = text.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
    guard let kind = words.first else { throw LayerDeclError("an empty layer; expected e.g. 'dense 500' or 'conv 32 k4 s2 p1'") }
    if let last = words.last, words.count > 1, let a = Activation(rawValue: last) {
      activation = a
      words.removeLast()
    }
    let args = Array(words.dropFirst())
    switch kind {
    case "dense":
      guard args.count == 1, let n = Int(args[0]), (1...100_000).contains(n) else {
        throw LayerDeclError("'\(text)': expected 'dense N' with N from 1 to 100000 (and an optional activation)")
      }
      op = .dense(out: n)
    case "conv", "deconv":
      op = try Self.convolution(kind, args, text)
    case "flatten":
      guard args.isEmpty, activation == nil else { throw LayerDeclError("'\(text)': flatten takes no size and no activation") }
      op = .flatten
    case "reshape":
      let dims = args.count == 1 ? args[0].split(separator: "x").compactMap { Int($0) } : []
      guard dims.count == 3, dims.allSatisfy({ (1...100_000).contains($0) }), activation == nil else {
        throw LayerDeclError("'\(text)': expected 'reshape CxHxW', e.g. 'reshape 64x7x7'")
      }
      op = .reshape(dims)
    default:
      throw LayerDeclError("'\(text)': unknown layer '\(kind)'; expected dense, conv, deconv, flatten or reshape")
    }
  }

  /// `conv N kK [sS] [pP]`, `deconv N kK [sS] [pP] [opO]`.
  static func convolution(_ kind: String, _ args: [String], _ text: String) throws(LayerDeclError) -> LayerOp {
    let usage = "expected '\(kind) CHANNELS kK [sS] [pP]\(kind == "deconv" ? " [opO]" : "")', e.g. '\(kind) 32 k4 s2 p1'"
    guard let first = args.first, let channels = Int(first), (1...100_000).contains(channels) else {
      throw LayerDeclError("'\(text)': \(usage)")
    }
    var values: [String: Int] = [:]
    for a in args.dropFirst() {
      let key = a.hasPrefix("op") ? "op" : String(a.prefix(1))
      guard ["k", "s", "p"].contains(key) || (key == "op" && kind == "deconv"), values[key] == nil,
        let v = Int(a.dropFirst(key.count))
      else { throw LayerDeclError("'\(text)': '\(a)' is not a setting; \(usage)") }
      values[key] = v
    }
    guard let k = values["k"] else { throw LayerDeclError("'\(text)': no kernel size; \(usage)") }
    let s = values["s"] ?? 1, p = values["p"] ?? 0, op = values["op"] ?? 0
    guard (1...64).contains(k) else { throw LayerDeclError("'\(text)': kernel size \(k); expected 1 to 64") }
    guard (1...64).contains(s) else { throw LayerDeclError("'\(text)': stride \(s); expected 1 to 64") }
    guard (0...64).contains(p) else { throw LayerDeclError("'\(text)': padding \(p); expected 0 to 64") }
    if kind == "conv" { return .conv(out: channels, kernel: k, stride: s, padding: p) }
    guard op >= 0 && op < s else {
      throw LayerDeclError("'\(text)': output padding \(op); expected 0 to stride − 1 (\(s - 1)), as PyTorch requires")
    }
    return .deconv(out: channels, kernel: k, stride: s, padding: p, outputPadding: op)
  }

  /// The canonical text (what `config.yaml` and checkpoints store).
  public var description: String {
    let act = activation.map { " \($0.rawValue)" } ?? ""
    switch op {
    case .dense(let n): return "dense \(n)\(act)"
    case .conv(let n, let k, let s, let p): return "conv \(n) k\(k) s\(s) p\(p)\(act)"
    case .deconv(let n, let k, let s, let p, let o): return "deconv \(n) k\(k) s\(s) p\(p) op\(o)\(act)"
    case .flatten: return "flatten"
    case .reshape(let d): return "reshape " + d.map(String.init).joined(separator: "x")
    }
  }

  public init(from decoder: Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    try self.init(parsing: text)
  }

  public func encode(to encoder: Encoder) throws {
    var c = encoder.singleValueContainer()
    try c.encode(description)
  }
}

public struct LayerDeclError: Error, CustomStringConvertible, Sendable {
  public let description: String
  public init(_ description: String) { self.description = description }
}

/// A layer placed in a model: its PyTorch name, op, activation and shapes.
public struct LayerSpec: Sendable, Hashable {
  public let name: String
  public let op: LayerOp
  public let activation: Activation
  public let inShape: [Int]
  public let outShape: [Int]
  /// A conv reading, or a deconv writing, the model's own image rows, which are channels-last
  /// ([H, W, C], as the data file holds them); inside the network images are NCHW.
  public var channelsLast = false

  public init(name: String, op: LayerOp, activation: Activation, inShape: [Int], outShape: [Int], channelsLast: Bool = false) {
    self.name = name
    self.op = op
    self.activation = activation
    self.inShape = inShape
    self.outShape = outShape
    self.channelsLast = channelsLast
  }

  /// A dense layer `in` → `out`.
  public static func dense(_ name: String, _ inF: Int, _ outF: Int, _ activation: Activation = .none) -> LayerSpec {
    LayerSpec(name: name, op: .dense(out: outF), activation: activation, inShape: [inF], outShape: [outF])
  }

  /// Its tensors with PyTorch's shapes: Linear `[out, in]`, Conv2d `[out, in, k, k]`,
  /// ConvTranspose2d `[in, out, k, k]`; each bias `[out]`. None for flatten and reshape.
  public var tensors: [TensorSpec] {
    switch op {
    case .dense(let n):
      return [TensorSpec(name: name + ".weight", shape: [n, inShape[0]]), TensorSpec(name: name + ".bias", shape: [n])]
    case .conv(let n, let k, _, _):
      return [TensorSpec(name: name + ".weight", shape: [n, inShape[0], k, k]), TensorSpec(name: name + ".bias", shape: [n])]
    case .deconv(let n, let k, _, _, _):
      return [TensorSpec(name: name + ".weight", shape: [inShape[0], n, k, k]), TensorSpec(name: name + ".bias", shape: [n])]
    case .flatten, .reshape:
      return []
    }
  }

  public var parameterCount: Int { tensors.reduce(0) { $0 + $1.count } }

  /// Multiply-adds of one example's forward pass.
  public var forwardMACs: Int {
    switch op {
    case .dense(let n): n * inShape[0]
    case .conv(let n, let k, _, _): n * outShape[1] * outShape[2] * inShape[0] * k * k
    case .deconv(_, let k, _, _, _): inShape[0] * inShape[1] * inShape[2] * outShape[0] * k * k
    case .flatten, .reshape: 0
    }
  }

  /// The engine's layer over `layout`'s tensors for this spec, scratch for `maxBatch` rows.
  public func makeLayer(layout: ParameterLayout, maxBatch: Int) -> any Layer {
    guard let w = layout.range(named: name + ".weight"), let b = layout.range(named: name + ".bias") else {
      preconditionFailure("layout has no tensors for layer \(name)")
    }
    switch op {
    case .dense(let n):
      return Linear(weight: w, bias: b, inFeatures: inShape[0], outFeatures: n)
    case .conv(let n, let k, let s, let p):
      let g = ConvGeometry(
        channels: inShape[0], height: inShape[1], width: inShape[2], kernel: k, stride: s, padding: p, channelsLast: channelsLast)
      return Conv2d(weight: w, bias: b, input: g, outChannels: n, maxBatch: maxBatch)
    case .deconv(let n, let k, let s, let p, _):
      let g = ConvGeometry(
        channels: n, height: outShape[1], width: outShape[2], kernel: k, stride: s, padding: p, channelsLast: channelsLast)
      return ConvTranspose2d(weight: w, bias: b, inChannels: inShape[0], output: g, maxBatch: maxBatch)
    case .flatten, .reshape:
      preconditionFailure("\(name) has no parameters")
    }
  }
}

/// The shape after `op` applied to `shape`, or why it cannot apply (one line, naming the shapes).
public func outputShape(of op: LayerOp, input shape: [Int]) -> Result<[Int], LayerDeclError> {
  func fail(_ why: String) -> Result<[Int], LayerDeclError> { .failure(LayerDeclError(why)) }
  func shown(_ s: [Int]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }
  switch op {
  case .dense(let n):
    guard shape.count == 1 else { return fail("a dense layer is fed \(shown(shape)); put flatten before it") }
    return .success([n])
  case .conv(let n, let k, let s, let p):
    guard shape.count == 3 else { return fail("a conv layer needs [channels, height, width], is fed \(shown(shape)); put reshape CxHxW before it") }
    guard k <= shape[1] + 2 * p, k <= shape[2] + 2 * p else {
      return fail("kernel \(k) is larger than the padded input \(shape[1] + 2 * p)×\(shape[2] + 2 * p) (input \(shown(shape)), padding \(p))")
    }
    return .success([n, (shape[1] + 2 * p - k) / s + 1, (shape[2] + 2 * p - k) / s + 1])
  case .deconv(let n, let k, let s, let p, let o):
    guard shape.count == 3 else { return fail("a deconv layer needs [channels, height, width], is fed \(shown(shape)); put reshape CxHxW before it") }
    let h = (shape[1] - 1) * s - 2 * p + k + o, w = (shape[2] - 1) * s - 2 * p + k + o
    guard h >= 1, w >= 1 else { return fail("its output would be \(h)×\(w) from input \(shown(shape))") }
    return .success([n, h, w])
  case .flatten:
    return .success([shape.reduce(1, *)])
  case .reshape(let d):
    guard d.reduce(1, *) == shape.reduce(1, *) else {
      return fail("reshape to \(shown(d)) (\(d.reduce(1, *)) values) is fed \(shown(shape)) (\(shape.reduce(1, *)) values)")
    }
    return .success(d)
  }
}

extension ModelConfig {
  /// The layer table as Keras' `summary()` and torchinfo print it: each layer (flatten and
  /// reshape included) with its op, activation, output shape and parameters, then the totals.
  public var summary: String {
    let t = layers
    let rows = (t.table.isEmpty ? t.arenaOrder : t.table + t.condition)
    let first = rows.first?.inShape ?? [inputSize]
    func shape(_ s: [Int]) -> String { "[" + s.map(String.init).joined(separator: ", ") + "]" }
    var lines = [pad("layer", 16) + pad("op", 30) + pad("output", 16) + "parameters"]
    lines.append(pad("input", 16) + pad("", 30) + shape(first))
    for r in rows {
      let op = LayerDecl(op: r.op, activation: r.op.hasParameters ? r.activation : nil).description
      lines.append(pad(r.name, 16) + pad(op, 30) + pad(shape(r.outShape), 16) + String(r.parameterCount))
    }
    let total = t.arenaOrder.reduce(0) { $0 + $1.parameterCount }
    lines.append("total: \(total) parameters, \(forwardMACs) multiply-adds per example forward")
    return lines.joined(separator: "\n")
  }
}

private func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s + " " : s + String(repeating: " ", count: n - s.count) }
