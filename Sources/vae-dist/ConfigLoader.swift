import Foundation
import VAE
import VAEData
import VAEDist
import Yams

/// A config or flag problem, printed as one line.
struct ConfigError: Error, CustomStringConvertible {
  let description: String
  init(_ d: String) { description = d }
}

/// Reads `configs/*.yaml` (DESIGN.md §4) into a `RunConfig`, strictly: unknown keys, wrong
/// types and out-of-range values are one-line errors naming the file and the key.
enum ConfigLoader {
  static let sections: [String: [String]] = [
    "model": ["input_size", "hidden", "decoder_hidden", "zdim", "likelihood", "sigma"],
    "data": ["dataset", "binarize", "train_limit"],
    "train": [
      "batch", "epochs", "steps", "lr", "beta1", "beta2", "adam_eps", "weight_decay",
      "weight_decay_mode", "seed", "checkpoint_every", "eval_every", "keep_checkpoints",
      "log_every", "eval_samples", "check_every",
    ],
  ]
  static let topLevel = ["name", "model", "data", "train", "environment"]

  static func load(path: String) throws -> RunConfig {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigError("\(path): cannot read the config file (does it exist?)")
    }
    guard let text = String(data: data, encoding: .utf8) else {
      throw ConfigError("\(path): not UTF-8 text")
    }
    let defaultName = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    return try parse(text, file: path, defaultName: defaultName)
  }

  static func parse(_ text: String, file: String, defaultName: String) throws -> RunConfig {
    let root: Any?
    do {
      root = try Yams.load(yaml: text)
    } catch {
      let detail = "\(error)".split(separator: "\n").first.map(String.init) ?? "invalid YAML"
      throw ConfigError("\(file): not valid YAML: \(detail)")
    }
    guard let top = root as? [String: Any] else {
      throw ConfigError("\(file): expected a mapping with keys \(topLevel.dropLast().joined(separator: ", "))")
    }
    for key in top.keys where !topLevel.contains(key) {
      throw ConfigError("\(file): unknown key '\(key)'; valid top-level keys: name, model, data, train")
    }
    var sec: [String: [String: Any]] = [:]
    for (name, keys) in sections {
      guard let raw = top[name] else { sec[name] = [:]; continue }
      guard let m = raw as? [String: Any] else {
        throw ConfigError("\(file): '\(name)' must be a mapping with keys \(keys.joined(separator: ", "))")
      }
      for key in m.keys where !keys.contains(key) {
        throw ConfigError("\(file): unknown key '\(name).\(key)'; valid keys: \(keys.joined(separator: ", "))")
      }
      sec[name] = m
    }
    let r = Reader(file: file)
    let model = sec["model"]!, dataS = sec["data"]!, train = sec["train"]!
    let hidden = try r.intList(model["hidden"], "model.hidden", default: [500, 500])
    let decoderHidden = try r.optionalIntList(model["decoder_hidden"], "model.decoder_hidden")
    let zdim = try r.int(model["zdim"], "model.zdim", default: 20, range: 1...10_000)
    let inputSize = try r.int(model["input_size"], "model.input_size", default: 784, range: 1...1_048_576)
    let likelihoodName = try r.string(model["likelihood"], "model.likelihood", default: "bernoulli",
                                      allowed: ["bernoulli", "gaussian"])
    let sigma = try r.double(model["sigma"], "model.sigma", default: 1.0, positive: true)
    let likelihood: Likelihood = likelihoodName == "gaussian" ? .gaussian(sigma: Float(sigma)) : .bernoulli
    let dataset = try r.string(dataS["dataset"], "data.dataset", default: "mnist", allowed: DatasetRegistry.names)
    let binName = try r.string(dataS["binarize"], "data.binarize", default: likelihoodName == "gaussian" ? "none" : "dynamic",
                               allowed: Binarization.allCases.map(\.rawValue))
    let trainLimit = try r.optionalInt(dataS["train_limit"], "data.train_limit", range: 1...100_000_000)
    let steps = try r.optionalInt(train["steps"], "train.steps", range: 1...1_000_000_000)
    let epochs = try r.optionalInt(train["epochs"], "train.epochs", range: 1...1_000_000)
    if steps != nil && epochs != nil {
      throw ConfigError("\(file): train.epochs and train.steps both given; set one of them")
    }
    let mode = try r.string(train["weight_decay_mode"], "train.weight_decay_mode", default: "l2", allowed: ["l2", "decoupled"])
    let adam = AdamConfig(
      lr: Float(try r.double(train["lr"], "train.lr", default: 1e-3, positive: true)),
      beta1: Float(try r.double(train["beta1"], "train.beta1", default: 0.9, unit: true)),
      beta2: Float(try r.double(train["beta2"], "train.beta2", default: 0.999, unit: true)),
      eps: Float(try r.double(train["adam_eps"], "train.adam_eps", default: 1e-8, positive: true)),
      weightDecay: Float(try r.double(train["weight_decay"], "train.weight_decay", default: 0, nonNegative: true)),
      decoupled: mode == "decoupled")
    let name: String
    if let n = top["name"] {
      guard let s = n as? String, !s.isEmpty, !s.contains("/") else {
        throw ConfigError("\(file): name: expected a non-empty string without '/'")
      }
      name = s
    } else {
      name = defaultName
    }
    return RunConfig(
      name: name,
      model: ModelConfig(inputSize: inputSize, hidden: hidden, decoderHidden: decoderHidden, zdim: zdim, likelihood: likelihood),
      dataset: dataset, binarize: Binarization(rawValue: binName)!, trainLimit: trainLimit,
      batch: try r.int(train["batch"], "train.batch", default: 100, range: 1...1_000_000),
      epochs: steps == nil ? (epochs ?? 10) : nil, steps: steps, adam: adam,
      seed: UInt64(try r.int(train["seed"], "train.seed", default: 1, range: 0...Int.max)),
      checkpointEvery: try r.int(train["checkpoint_every"], "train.checkpoint_every", default: 1000, range: 0...Int.max),
      evalEvery: try r.int(train["eval_every"], "train.eval_every", default: 0, range: 0...Int.max),
      keepCheckpoints: try r.int(train["keep_checkpoints"], "train.keep_checkpoints", default: 3, range: 1...1_000_000),
      logEvery: try r.int(train["log_every"], "train.log_every", default: 50, range: 1...Int.max),
      evalSamples: try r.int(train["eval_samples"], "train.eval_samples", default: 1, range: 1...100_000),
      checkEvery: try r.int(train["check_every"], "train.check_every", default: 1000, range: 0...Int.max))
  }

  struct Reader {
    let file: String
    func fail(_ key: String, _ expected: String, _ got: Any) -> ConfigError {
      ConfigError("\(file): \(key): expected \(expected), got '\(got)'")
    }
    func int(_ v: Any?, _ key: String, default d: Int, range: ClosedRange<Int>) throws -> Int {
      try optionalInt(v, key, range: range) ?? d
    }
    func optionalInt(_ v: Any?, _ key: String, range: ClosedRange<Int>) throws -> Int? {
      guard let v, !(v is NSNull) else { return nil }
      let expected = "an integer from \(range.lowerBound) to \(range.upperBound == Int.max ? "∞" : String(range.upperBound))"
      guard let i = v as? Int, range.contains(i) else { throw fail(key, expected, v) }
      return i
    }
    func double(_ v: Any?, _ key: String, default d: Double, positive: Bool = false,
                nonNegative: Bool = false, unit: Bool = false) throws -> Double {
      guard let v, !(v is NSNull) else { return d }
      let x: Double
      // YAML 1.1 reads `1e-3` (no dot) as a string: accept numeric strings too.
      if let i = v as? Int { x = Double(i) } else if let f = v as? Double { x = f } else if let s = v as? String,
        let f = Double(s.trimmingCharacters(in: .whitespaces)) { x = f } else {
        throw fail(key, "a number", v)
      }
      if !x.isFinite { throw fail(key, "a finite number", v) }
      if positive && !(x > 0) { throw fail(key, "a number > 0", v) }
      if nonNegative && !(x >= 0) { throw fail(key, "a number ≥ 0", v) }
      if unit && !(x >= 0 && x < 1) { throw fail(key, "a number in [0, 1)", v) }
      return x
    }
    func string(_ v: Any?, _ key: String, default d: String, allowed: [String]) throws -> String {
      guard let v, !(v is NSNull) else { return d }
      guard let s = v as? String, allowed.contains(s) else {
        throw fail(key, "one of \(allowed.joined(separator: ", "))", v)
      }
      return s
    }
    func intList(_ v: Any?, _ key: String, default d: [Int]) throws -> [Int] {
      try optionalIntList(v, key) ?? d
    }
    func optionalIntList(_ v: Any?, _ key: String) throws -> [Int]? {
      guard let v, !(v is NSNull) else { return nil }
      let expected = "a list of layer sizes from 1 to 100000, e.g. [500, 500]"
      guard let a = v as? [Any] else { throw fail(key, expected, v) }
      return try a.map {
        guard let i = $0 as? Int, (1...100_000).contains(i) else { throw fail(key, expected, v) }
        return i
      }
    }
  }
}
