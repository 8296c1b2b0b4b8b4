import Foundation
import VAE
import VAEData

/// One key of the run config: its section and name, what it accepts, its help, and how it is
/// read from and written to a `RunConfig`. Defaults are `RunConfig.defaults`' values.
public struct ConfigKey: Sendable {
  public let section: String
  public let name: String
  public let rule: ConfigRule
  public let help: String
  /// The default in words, where it is not one value of `RunConfig.defaults` (derived, or none).
  let defaultNote: String?
  /// The value to write out; nil when the key is absent (e.g. `sigma` of a Bernoulli model).
  let get: @Sendable (RunConfig) -> ConfigValue?
  let set: @Sendable (inout RunConfig, ConfigValue) -> Void

  public var path: String { "\(section).\(name)" }
  /// This key's value in `config` as `config.yaml` writes it (nil: absent).
  public func yaml(of config: RunConfig) -> String? { self.get(config).map(yamlText) }
  /// A value as YAML text: file paths quoted when YAML would read them as something else.
  func yamlText(_ v: ConfigValue) -> String {
    if case .path = rule, case .string(let s) = v { return ConfigSchema.yamlString(s) }
    return v.yaml
  }
  /// The default, as written in `config.yaml` (nil: none).
  public var defaultText: String? { self.get(RunConfig.defaults)?.yaml }

  /// The default for the key reference: the note, else the value in `RunConfig.defaults`, else
  /// (keys of the conditional kinds and of the Gaussian likelihood) the value in a config of that
  /// kind.
  public var documentedDefault: String {
    var conditional = RunConfig.defaults
    conditional.model.kind = .cvae
    conditional.model.likelihood = .gaussian(sigma: 1)
    return defaultNote ?? defaultText ?? get(conditional)?.yaml ?? "none"
  }
}

/// The one source of truth for the config: every key, in `config.yaml` order, with its rule,
/// help and accessors. The YAML loader, the YAML and JSON writers, the checkpoint's model
/// metadata and the CLI's flag checks all read this table.
public enum ConfigSchema {
  public static let sections = ["model", "data", "train"]

  public static let keys: [ConfigKey] = [
    key("model", "kind", .choice(ModelKind.allCases.map(\.rawValue)),
        "vae: p(x) through z; cvae: p(Y|X) through z, with a condition tower on X; regressor: p(Y|X) from the condition tower alone.",
        { .string($0.model.kind.rawValue) },
        { c, v in if case .string(let s) = v, let k = ModelKind(rawValue: s) { c.model.kind = k } }),
    key("model", "input_size", .int(1...1_048_576), "Pixels per image (784 for MNIST).",
        { .int($0.model.inputSize) }, { c, v in if case .int(let i) = v { c.model.inputSize = i } }),
    key("model", "condition_size", .int(1...1_048_575), "cvae, regressor: pixels of the condition X.",
        default: "from data.condition",
        { $0.model.kind == .vae ? nil : .int($0.model.conditionSize) },
        { c, v in if case .int(let i) = v { c.model.conditionSize = i } }),
    key("model", "condition_hidden", .layers,
        "cvae, regressor: the condition tower's widths, e.g. the tutorial's [1000, 500, 250, 250].",
        default: "none (a cvae or regressor needs one)",
        { $0.model.kind == .vae ? nil : .ints($0.model.conditionHidden) },
        { c, v in if case .ints(let a) = v { c.model.conditionHidden = a } }),
    key("model", "condition_into_encoder", .int(0...1000),
        "cvae: condition layer k's pre-activation is added to encoder layer k's (same width); the tower's last output is added to the decoder's first hidden pre-activation.",
        { $0.model.kind == .cvae ? .int($0.model.conditionIntoEncoder) : nil },
        { c, v in if case .int(let i) = v { c.model.conditionIntoEncoder = i } }),
    key("model", "input_shape", .layers,
        "An example's shape as an image, [channels, height, width], for conv layers: from the data file ([N, H, W] is grey, [N, H, W, C] has C channels); square grey images when input_size is a square.",
        default: "from the data",
        { $0.model.inputShape.count == 3 ? .ints($0.model.inputShape) : nil },
        { c, v in if case .ints(let a) = v { c.model.inputShape = a } }),
    key("model", "encoder", .layerList,
        "vae: the encoder as a layer list, input side first, e.g. [conv 32 k4 s2 p1, conv 64 k4 s2 p1, flatten, dense 256]; each layer's activation defaults to relu; dense μ and log σ² heads follow. Instead of hidden.",
        default: "none (hidden)",
        { $0.model.encoderLayers.isEmpty ? nil : .layers($0.model.encoderLayers) },
        { c, v in if case .layers(let a) = v { c.model.encoderLayers = a } }),
    key("model", "decoder", .layerList,
        "vae: the decoder as a layer list from z, ending in the data's shape, e.g. [dense 3136, reshape 64x7x7, deconv 32 k4 s2 p1, deconv 1 k4 s2 p1]; activations default to relu, none for the last layer (its outputs are logits or means). Instead of decoder_hidden.",
        default: "none (decoder_hidden)",
        { $0.model.decoderLayers.isEmpty ? nil : .layers($0.model.decoderLayers) },
        { c, v in if case .layers(let a) = v { c.model.decoderLayers = a } }),
    key("model", "hidden", .layers, "Encoder hidden layer sizes, input side first (ReLU between).",
        { $0.model.kind == .regressor || $0.model.usesLayerLists ? nil : .ints($0.model.hidden) },
        { c, v in if case .ints(let a) = v { c.model.hidden = a } }),
    key("model", "decoder_hidden", .layers, "Decoder hidden layer sizes, z side first.", default: "hidden reversed",
        { $0.model.usesLayerLists ? nil : .ints($0.model.decoderHidden) },
        { c, v in if case .ints(let a) = v { c.model.decoderHidden = a } }),
    key("model", "zdim", .int(1...10_000), "Latent dimensions.",
        { $0.model.kind == .regressor ? nil : .int($0.model.zdim) }, { c, v in if case .int(let i) = v { c.model.zdim = i } }),
    key("model", "likelihood", .choice(["bernoulli", "gaussian"]),
        "p(x|z): bernoulli (from logits, stable form; values in [0, 1]) or gaussian (continuous data: the decoder outputs the mean, and with sigma: learned also a per-dimension log-variance; the ELBO is then a density and may be positive).",
        { .string($0.model.likelihood.name) },
        { c, v in if case .string(let s) = v { c.model.likelihood = s == "gaussian" ? .gaussian(sigma: 1) : .bernoulli } }),
    key("model", "sigma", .positiveOrLearned,
        "Standard deviation of the Gaussian likelihood, or learned: the decoder also outputs log σ² per dimension (Kingma & Welling's Frey Face model).",
        {
          switch $0.model.likelihood {
          case .gaussian(let s): .float(s)
          case .gaussianLearned: .string("learned")
          case .bernoulli: nil
          }
        },
        { c, v in
          guard c.model.likelihood != .bernoulli else { return }
          if case .float(let f) = v { c.model.likelihood = .gaussian(sigma: f) }
          if case .string("learned") = v { c.model.likelihood = .gaussianLearned }
        }),
    key("data", "dataset", .choice(DatasetRegistry.names), "Data set by name (or give data.train).",
        { $0.trainFile == nil ? .string($0.dataset) : nil }, { c, v in if case .string(let s) = v { c.dataset = s } }),
    key("data", "train", .path,
        "Training data from a file instead of a named data set: NumPy .npy [N, ...] of uint8 (read as value/255) or float32, mapped read-only (one copy per node), or IDX (raw or .gz). A relative path is relative to the config file. model.input_size follows from it.",
        default: "none", { $0.trainFile.map { .string($0) } }, { c, v in if case .string(let s) = v { c.trainFile = s } }),
    key("data", "test", .path, "with data.train: the held-out file (the same width); relative to the config file.",
        default: "none", { $0.testFile.map { .string($0) } }, { c, v in if case .string(let s) = v { c.testFile = s } }),
    key("data", "test_fraction", .unitInterval,
        "with data.train and no data.test: hold out this fraction of the training file (a split seeded by train.seed).",
        default: "none", { $0.testFraction.map { .float($0) } }, { c, v in if case .float(let f) = v { c.testFraction = f } }),
    key("data", "standardize", .bool,
        "Continuous data (likelihood gaussian): standardise every dimension with the training split's mean and standard deviation; stored in checkpoints, undone by sample, decode and reconstruct; ELBOs stay in the data's own units.",
        default: "false", { $0.standardize ? .string("true") : nil }, { c, v in if case .string(let s) = v { c.standardize = s == "true" } }),
    key("data", "binarize", .choice(Binarization.allCases.map(\.rawValue)),
        "Pixels: none (intensity / 255), static (one seeded draw per image), dynamic (a new draw every epoch and image).",
        default: "dynamic (none for gaussian)",
        { .string($0.binarize.rawValue) },
        { c, v in if case .string(let s) = v, let b = Binarization(rawValue: s) { c.binarize = b } }),
    key("data", "condition", .choice(Conditioning.Mask.allCases.map(\.rawValue)),
        "cvae, regressor: the pixels that are X (the rest are the target Y); middle-column is column 13 of 28.",
        { $0.model.kind == .vae ? nil : .string($0.condition.rawValue) },
        { c, v in if case .string(let s) = v, let m = Conditioning.Mask(rawValue: s) { c.condition = m } }),
    key("data", "condition_binarize", .choice(Binarization.allCases.map(\.rawValue)),
        "cvae, regressor: X in training; dynamic draws it anew every time an image is used (the tutorial's choice), static once per image, none keeps grey levels.",
        { $0.model.kind == .vae ? nil : .string($0.conditionBinarize.rawValue) },
        { c, v in if case .string(let s) = v, let b = Binarization(rawValue: s) { c.conditionBinarize = b } }),
    key("data", "train_limit", .int(1...100_000_000), "Use only the first N training images.", default: "all",
        { $0.trainLimit.map { .int($0) } }, { c, v in if case .int(let i) = v { c.trainLimit = i } }),
    key("train", "batch", .int(1...1_000_000), "Global batch size (split across MPI ranks).",
        { .int($0.batch) }, { c, v in if case .int(let i) = v { c.batch = i } }),
    key("train", "epochs", .int(1...1_000_000),
        "Passes over the training set (or give steps); the remainder of an epoch is dropped.",
        { $0.steps == nil ? .int($0.epochs ?? 1) : nil }, { c, v in if case .int(let i) = v { c.epochs = i; c.steps = nil } }),
    key("train", "steps", .int(1...1_000_000_000), "Optimizer steps in total (instead of epochs).",
        default: "none (epochs decides)",
        { $0.steps.map { .int($0) } }, { c, v in if case .int(let i) = v { c.steps = i; c.epochs = nil } }),
    key("train", "lr", .positive, "Adam learning rate.",
        { .float($0.adam.lr) }, { c, v in if case .float(let f) = v { c.adam.lr = f } }),
    key("train", "lr_schedule", .choice(LearningRateSchedule.Shape.allCases.map(\.rawValue)),
        "constant; cosine: from lr down to 0 at the last step; iwae: Burda et al.'s stepwise decay, lr·10^(−i/7) for 3^i epochs (i = 0, 1, …).",
        default: "constant",
        { $0.lrSchedule.shape == .constant ? nil : .string($0.lrSchedule.shape.rawValue) },
        { c, v in if case .string(let s) = v, let shape = LearningRateSchedule.Shape(rawValue: s) { c.lrSchedule.shape = shape } }),
    key("train", "lr_warmup", .int(0...1_000_000_000), "Steps over which the learning rate rises linearly from lr/N to the schedule's value (0: none).",
        default: "0 (none)",
        { $0.lrSchedule.warmup == 0 ? nil : .int($0.lrSchedule.warmup) },
        { c, v in if case .int(let i) = v { c.lrSchedule.warmup = i } }),
    key("train", "objective", .choice(TrainingObjective.Kind.allCases.map(\.rawValue)),
        "elbo: the evidence lower bound (with beta and kl_warmup); iwae: the importance-weighted bound of Burda et al. 2016 with train.samples samples per row, all through the decoder as one batch. Held-out metrics stay the ELBO and the importance-weighted bound.",
        default: "elbo",
        { $0.objective.kind == .elbo ? nil : .string($0.objective.kind.rawValue) },
        { c, v in if case .string(let s) = v, let k = TrainingObjective.Kind(rawValue: s) { c.objective.kind = k } }),
    key("train", "samples", .int(1...5000), "iwae: latent samples per row (k).",
        default: "1",
        { $0.objective.samples == 1 ? nil : .int($0.objective.samples) },
        { c, v in if case .int(let i) = v { c.objective.samples = i } }),
    key("train", "iwae_gradient", .choice(TrainingObjective.Gradient.allCases.map(\.rawValue)),
        "iwae: how the bound's gradient is estimated. standard: Burda et al.'s; dreg: doubly reparameterised (Tucker et al. 2019), the encoder's gradient through z alone with squared weights: the same expectation with less noise, the more so the more train.samples, at the same cost. The loss and the held-out metrics are the same.",
        default: "standard",
        { $0.objective.gradient == .standard ? nil : .string($0.objective.gradient.rawValue) },
        { c, v in if case .string(let s) = v, let g = TrainingObjective.Gradient(rawValue: s) { c.objective.gradient = g } }),
    key("train", "beta", .nonNegative,
        "The KL term's weight in the training loss (β-VAE; 1 is the ELBO). Held-out metrics stay the ELBO.",
        default: "1",
        { $0.objective.beta == 1 ? nil : .float($0.objective.beta) },
        { c, v in if case .float(let f) = v { c.objective.beta = f } }),
    key("train", "free_bits", .nonNegative,
        "Free bits λ, nats per latent dimension (Kingma et al. 2016): each dimension's KL, averaged over the global batch, counts as max(λ, KL_j), so a dimension below λ gets no KL gradient (0: off).",
        default: "0 (off)",
        { $0.objective.freeBits == 0 ? nil : .float($0.objective.freeBits) },
        { c, v in if case .float(let f) = v { c.objective.freeBits = f } }),
    key("train", "kl_warmup", .int(0...1_000_000_000),
        "Steps over which the KL weight rises linearly from 0 to beta (KL warm-up, Bowman et al. 2016; 0: none).",
        default: "0 (none)",
        { $0.objective.klWarmup == 0 ? nil : .int($0.objective.klWarmup) },
        { c, v in if case .int(let i) = v { c.objective.klWarmup = i } }),
    key("train", "beta1", .unitInterval, "Adam β1.",
        { .float($0.adam.beta1) }, { c, v in if case .float(let f) = v { c.adam.beta1 = f } }),
    key("train", "beta2", .unitInterval, "Adam β2.",
        { .float($0.adam.beta2) }, { c, v in if case .float(let f) = v { c.adam.beta2 = f } }),
    key("train", "adam_eps", .positive, "Adam ε.",
        { .float($0.adam.eps) }, { c, v in if case .float(let f) = v { c.adam.eps = f } }),
    key("train", "weight_decay", .nonNegative, "Weight decay coefficient (0: none).",
        { .float($0.adam.weightDecay) }, { c, v in if case .float(let f) = v { c.adam.weightDecay = f } }),
    key("train", "weight_decay_mode", .choice(["l2", "decoupled"]),
        "l2: added to the gradient (Caffe, torch.optim.Adam); decoupled: AdamW.",
        { .string($0.adam.decoupled ? "decoupled" : "l2") },
        { c, v in if case .string(let s) = v { c.adam.decoupled = s == "decoupled" } }),
    key("train", "weight_decay_biases", .bool,
        "Whether weight decay also applies to biases (true as in torch.optim.Adam; the tutorial's configs set false, as its Caffe networks do).",
        { .string($0.adam.decayBiases ? "true" : "false") },
        { c, v in if case .string(let s) = v { c.adam.decayBiases = s == "true" } }),
    key("train", "seed", .int(0...Int.max), "Seed of every random draw (initialisation, shuffling, binarisation, noise).",
        { .string(String($0.seed)) }, { c, v in if case .int(let i) = v { c.seed = UInt64(i) } }),
    key("train", "checkpoint_every", .int(0...Int.max), "Checkpoint every N steps (0: only the final one).",
        { .int($0.checkpointEvery) }, { c, v in if case .int(let i) = v { c.checkpointEvery = i } }),
    key("train", "checkpoint_minutes", .nonNegative,
        "Also checkpoint when this many minutes passed since the last one (0: off); rank 0's clock decides, and the ranks agree in the per-step collective.",
        default: "0 (off)",
        { $0.checkpointMinutes > 0 ? .float(Float($0.checkpointMinutes)) : nil },
        { c, v in if case .float(let f) = v { c.checkpointMinutes = Double(f) } }),
    key("train", "eval_every", .int(0...Int.max), "Held-out ELBO every N steps (0: only at the end).",
        { .int($0.evalEvery) }, { c, v in if case .int(let i) = v { c.evalEvery = i } }),
    key("train", "keep_checkpoints", .int(1...1_000_000), "Step checkpoints kept (the newest).",
        { .int($0.keepCheckpoints) }, { c, v in if case .int(let i) = v { c.keepCheckpoints = i } }),
    key("train", "log_every", .int(1...Int.max), "Metrics line every N steps.",
        { .int($0.logEvery) }, { c, v in if case .int(let i) = v { c.logEvery = i } }),
    key("train", "eval_samples", .int(1...100_000), "Samples of z per held-out image for the ELBO.",
        { .int($0.evalSamples) }, { c, v in if case .int(let i) = v { c.evalSamples = i } }),
    key("train", "check_every", .int(0...Int.max),
        "Under MPI: compare replicas' parameter checksums every N steps (0: only at start and end).",
        { .int($0.checkEvery) }, { c, v in if case .int(let i) = v { c.checkEvery = i } }),
  ]

  private static func key(
    _ section: String, _ name: String, _ rule: ConfigRule, _ help: String, default note: String? = nil,
    _ get: @escaping @Sendable (RunConfig) -> ConfigValue?,
    _ set: @escaping @Sendable (inout RunConfig, ConfigValue) -> Void
  ) -> ConfigKey {
    ConfigKey(section: section, name: name, rule: rule, help: help, defaultNote: note, get: get, set: set)
  }

  /// The key at `path` ("train.lr"). Every path used in code is in the table.
  public static func key(_ path: String) -> ConfigKey {
    guard let k = keys.first(where: { $0.path == path }) else { preconditionFailure("no config key \(path)") }
    return k
  }

  public static func keys(in section: String) -> [ConfigKey] { keys.filter { $0.section == section } }

  /// A key's help with its default, for `--help` of the flag that overrides it.
  public static func flagHelp(_ path: String) -> String {
    let k = key(path)
    return "\(k.help) Overrides \(k.path)\(k.defaultText.map { " (default \($0))" } ?? "")."
  }

  /// A bad value of one key: (key path, what was expected, what was given).
  public struct Invalid: Error, Sendable {
    public let path: String
    public let expected: String
    public let got: String
  }

  /// Checks `value` against `path`'s rule and writes it into `config`.
  public static func apply(_ path: String, _ value: Any, to config: inout RunConfig) throws(Invalid) {
    let k = key(path)
    guard let v = k.rule.check(value) else { throw Invalid(path: path, expected: k.rule.expected, got: "\(value)") }
    k.set(&config, v)
  }

  /// Checks `text` (a command-line value, see `ConfigRule.check(text:)`) against `path`'s rule
  /// and writes it into `config`. Setting `epochs` clears `steps` and the other way round.
  public static func apply(_ path: String, text: String, to config: inout RunConfig) throws(Invalid) {
    let k = key(path)
    guard let v = k.rule.check(text: text) else { throw Invalid(path: path, expected: k.rule.expected, got: text) }
    k.set(&config, v)
  }

  /// The top-level `name`, which is in no section (`ConfigLoader` checks it): what it accepts.
  public static let nameExpected = "a non-empty string of at most 255 bytes without '/', line breaks or U+FEFF"

  /// One line of the key reference (`vae-dist config --keys`).
  public struct ReferenceEntry: Sendable {
    public let path: String
    public let accepts: String
    public let defaultValue: String
    public let help: String
  }

  /// Every key with what it accepts, its default and its help: `name`, then `keys` in order.
  public static var reference: [ReferenceEntry] {
    [ReferenceEntry(
      path: "name", accepts: nameExpected,
      defaultValue: "the config file's name without .yaml",
      help: "The run's name; the run directory defaults to runs/<name>.")]
      + keys.map { ReferenceEntry(path: $0.path, accepts: $0.rule.summary, defaultValue: $0.documentedDefault, help: $0.help) }
  }

  /// A config from parsed sections (`[section: [name: value]]`, values as YAML or JSON parse
  /// them), on top of `RunConfig.defaults`. Unknown keys are the caller's to reject first.
  /// Cross-key rules: `epochs` and `steps` exclude each other; a Gaussian model's data default
  /// to `binarize: none`; `decoder_hidden` defaults to `hidden` reversed.
  public static func decode(_ sections: [String: [String: Any]], name: String) throws -> RunConfig {
    var c = RunConfig.defaults
    c.name = name
    let train = sections["train"] ?? [:]
    if train["epochs"].map(isPresent) == true && train["steps"].map(isPresent) == true {
      throw ConfigConflict("train.epochs and train.steps both given; set one of them")
    }
    try checkLayerLists(sections["model"] ?? [:])
    for k in keys {
      guard let raw = sections[k.section]?[k.name], isPresent(raw) else { continue }
      try apply(k.path, raw, to: &c)
    }
    if sections["model"]?["decoder_hidden"].map(isPresent) != true { c.model.decoderHidden = c.model.hidden.reversed() }
    try checkDataKeys(sections["data"] ?? [:], c)
    if sections["data"]?["binarize"].map(isPresent) != true, c.model.likelihood != .bernoulli { c.binarize = .none }
    try checkStandardize(c)
    if let cond = c.conditioning {
      let given = sections["model"]?["condition_size"].map(isPresent) == true ? c.model.conditionSize : nil
      guard cond.pixels == c.model.inputSize else {
        throw ConfigConflict("data.condition: \(cond.mask.rawValue) needs square images, but model.input_size is \(c.model.inputSize)")
      }
      if let given, given != cond.conditionSize {
        throw ConfigConflict("model.condition_size: \(given), but data.condition \(cond.mask.rawValue) has \(cond.conditionSize) pixels")
      }
      c.model.conditionSize = cond.conditionSize
    }
    // Layer lists with a data file: the shapes follow from the file (ConfigLoader checks them then).
    if c.trainFile == nil || !c.model.usesLayerLists, let problem = c.model.problem { throw ConfigConflict(problem) }
    try checkObjective(c)
    return c
  }

  static func isPresent(_ v: Any) -> Bool { !(v is NSNull) }

  /// Model keys that a checkpoint holds only when they are set.
  static let optionalModelKeys: Set<String> = ["input_shape", "encoder", "decoder"]

  /// The canonical YAML form (stable key order).
  public static func yaml(_ c: RunConfig) -> String {
    var s = "name: \(yamlString(c.name))\n"
    for section in sections {
      s += "\(section):\n"
      for k in keys(in: section) {
        if let v = k.get(c) { s += "  \(k.name): \(k.yamlText(v))\n" }
      }
    }
    return s
  }

  /// `s` as a YAML scalar that reads back as this string: plain when that is unambiguous (ASCII
  /// letters, digits, `.`, `_`, `-`, starting with a letter, not a YAML 1.1 boolean or null such
  /// as `yes`), else double-quoted, escaping what YAML would not keep as it is.
  static func yamlString(_ s: String) -> String {
    let plainWords: Set<String> = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"]
    let ascii = s.unicodeScalars.allSatisfy {
      ("a"..."z").contains($0) || ("A"..."Z").contains($0) || ("0"..."9").contains($0) || "._-".unicodeScalars.contains($0)
    }
    if ascii, let first = s.unicodeScalars.first, ("a"..."z").contains(first) || ("A"..."Z").contains(first),
      !plainWords.contains(s.lowercased())
    {
      return s
    }
    var out = "\""
    for u in s.unicodeScalars {
      switch u.value {
      case 0x22: out += "\\\""
      case 0x5C: out += "\\\\"
      // YAML's printable characters stay as they are, but for the line breaks U+2028 and U+2029
      // and the byte order mark; the others (controls, U+0085, …) become \uXXXX.
      case 0x2028, 0x2029, 0xFEFF: out += unicodeEscape(u)
      case 0x20...0x7E, 0xA0...0xD7FF, 0xE000...0xFFFD, 0x10000...: out.unicodeScalars.append(u)
      default: out += unicodeEscape(u)
      }
    }
    return out + "\""
  }

  private static func unicodeEscape(_ u: Unicode.Scalar) -> String {
    let hex = String(u.value, radix: 16)
    return "\\u" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex
  }

  /// The model section as one-line JSON, for checkpoint metadata (read by Python users).
  public static func modelJSON(_ m: ModelConfig) -> String {
    var c = RunConfig.defaults
    c.model = m
    return "{" + keys(in: "model").compactMap { k in k.get(c).map { "\"\(k.name)\":\($0.json)" } }
      .joined(separator: ",") + "}"
  }

  /// The model section back from `modelJSON`; every field that applies to the model's kind is
  /// required and checked (a missing `kind` is a VAE: checkpoints before model kinds).
  public static func decodeModel(_ object: [String: Any]) throws(Invalid) -> ModelConfig {
    var c = RunConfig.defaults
    for k in keys(in: "model") {
      if k.name == "kind" && object["kind"] == nil { continue }
      // Does not apply, given the fields read so far (the optional ones apply when present).
      if k.get(c) == nil && (object[k.name] == nil || !optionalModelKeys.contains(k.name)) { continue }
      guard let raw = object[k.name] else { throw Invalid(path: k.path, expected: k.rule.expected, got: "nothing") }
      try apply(k.path, raw, to: &c)
    }
    if let problem = c.model.problem { throw Invalid(path: "model", expected: "a consistent shape", got: problem) }
    return c.model
  }
}
