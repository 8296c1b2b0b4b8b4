import VAE
import VAEData

/// Everything a training run is made of, resolved (config file + flags). Rendered to
/// `config.yaml` in the run directory and into every checkpoint's metadata.
public struct RunConfig: Sendable, Hashable {
  public var name: String
  public var model: ModelConfig
  public var dataset: String
  public var binarize: Binarization
  public var trainLimit: Int?
  public var batch: Int
  public var epochs: Int?
  public var steps: Int?
  public var adam: AdamConfig
  public var seed: UInt64
  public var checkpointEvery: Int
  public var evalEvery: Int
  public var keepCheckpoints: Int
  public var logEvery: Int
  public var evalSamples: Int
  /// Under MPI: compare replicas' parameter checksums every N steps (0: only at start and end).
  public var checkEvery: Int

  public init(
    name: String, model: ModelConfig, dataset: String = "mnist", binarize: Binarization = .dynamic,
    trainLimit: Int? = nil, batch: Int = 100, epochs: Int? = 10, steps: Int? = nil,
    adam: AdamConfig = AdamConfig(), seed: UInt64 = 1, checkpointEvery: Int = 1000,
    evalEvery: Int = 0, keepCheckpoints: Int = 3, logEvery: Int = 50, evalSamples: Int = 1,
    checkEvery: Int = 1000
  ) {
    self.name = name
    self.model = model
    self.dataset = dataset
    self.binarize = binarize
    self.trainLimit = trainLimit
    self.batch = batch
    self.epochs = epochs
    self.steps = steps
    self.adam = adam
    self.seed = seed
    self.checkpointEvery = checkpointEvery
    self.evalEvery = evalEvery
    self.keepCheckpoints = keepCheckpoints
    self.logEvery = logEvery
    self.evalSamples = evalSamples
    self.checkEvery = checkEvery
  }

  /// Total optimizer steps for a training set of `trainCount` examples.
  public func totalSteps(trainCount: Int) -> Int {
    if let steps { return steps }
    return (epochs ?? 1) * max(trainCount / batch, 1)
  }

  /// The canonical YAML form (stable key order), which is also hashed for run identity.
  public var yaml: String {
    func list(_ a: [Int]) -> String { "[" + a.map(String.init).joined(separator: ", ") + "]" }
    var s = "name: \(name)\nmodel:\n"
    s += "  input_size: \(model.inputSize)\n"
    s += "  hidden: \(list(model.hidden))\n"
    s += "  decoder_hidden: \(list(model.decoderHidden))\n"
    s += "  zdim: \(model.zdim)\n"
    s += "  likelihood: \(model.likelihood.name)\n"
    if case .gaussian(let sigma) = model.likelihood { s += "  sigma: \(sigma)\n" }
    s += "data:\n  dataset: \(dataset)\n  binarize: \(binarize.rawValue)\n"
    if let trainLimit { s += "  train_limit: \(trainLimit)\n" }
    s += "train:\n  batch: \(batch)\n"
    if let steps { s += "  steps: \(steps)\n" } else { s += "  epochs: \(epochs ?? 1)\n" }
    s += "  lr: \(adam.lr)\n  beta1: \(adam.beta1)\n  beta2: \(adam.beta2)\n  adam_eps: \(adam.eps)\n"
    s += "  weight_decay: \(adam.weightDecay)\n"
    s += "  weight_decay_mode: \(adam.decoupled ? "decoupled" : "l2")\n"
    s += "  seed: \(seed)\n  checkpoint_every: \(checkpointEvery)\n  eval_every: \(evalEvery)\n"
    s += "  keep_checkpoints: \(keepCheckpoints)\n  log_every: \(logEvery)\n"
    s += "  eval_samples: \(evalSamples)\n  check_every: \(checkEvery)\n"
    return s
  }

  /// The model's shape as JSON for checkpoint metadata (read by Python users).
  public var modelJSON: String { Self.modelJSON(model) }

  public static func modelJSON(_ m: ModelConfig) -> String {
    func list(_ a: [Int]) -> String { "[" + a.map(String.init).joined(separator: ",") + "]" }
    var s = "{\"input_size\":\(m.inputSize),\"hidden\":\(list(m.hidden)),"
    s += "\"decoder_hidden\":\(list(m.decoderHidden)),\"zdim\":\(m.zdim),"
    s += "\"likelihood\":\"\(m.likelihood.name)\""
    if case .gaussian(let sigma) = m.likelihood { s += ",\"sigma\":\(sigma)" }
    return s + "}"
  }

  /// The parts of the config that must agree for a run to resume from a checkpoint.
  public var resumeIdentity: String {
    "\(modelJSON)|\(dataset)|\(binarize.rawValue)|\(trainLimit.map(String.init) ?? "-")|\(batch)|\(seed)"
  }
}
