import VAE
import VAEData

/// Everything a training run is made of, resolved (config file + flags). Rendered to
/// `config.yaml` in the run directory and into every checkpoint's metadata.
public struct RunConfig: Sendable, Hashable {
  public var name: String
  public var model: ModelConfig
  public var dataset: String
  /// Data from files instead of `dataset`: the training file, and the held-out file or the
  /// fraction of the training file held out by a seeded split (absolute paths once loaded).
  public var trainFile: String?
  public var testFile: String?
  public var testFraction: Float?
  /// Standardise every dimension with the training split's mean and standard deviation.
  public var standardize = false
  public var binarize: Binarization
  public var trainLimit: Int?
  /// Conditional kinds: which pixels are X, and how X is binarised in training.
  public var condition: Conditioning.Mask
  public var conditionBinarize: Binarization
  public var batch: Int
  public var epochs: Int?
  public var steps: Int?
  public var adam: AdamConfig
  /// The KL weight and its warm-up (the ELBO by default), and the learning rate's schedule.
  public var objective = TrainingObjective()
  public var lrSchedule = LearningRateSchedule()
  public var seed: UInt64
  public var checkpointEvery: Int
  /// Also checkpoint when this many minutes have passed since the last checkpoint (0: off);
  /// rank 0's clock decides and the ranks agree through the per-step collective.
  public var checkpointMinutes: Double = 0
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
    checkEvery: Int = 1000, condition: Conditioning.Mask = .middleColumn, conditionBinarize: Binarization = .dynamic
  ) {
    self.name = name
    self.model = model
    self.dataset = dataset
    self.trainFile = nil
    self.testFile = nil
    self.testFraction = nil
    self.binarize = binarize
    self.trainLimit = trainLimit
    self.condition = condition
    self.conditionBinarize = conditionBinarize
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

  /// The X/Y split of a conditional model's images (nil for a VAE).
  public var conditioning: Conditioning? {
    guard model.kind != .vae else { return nil }
    let side = Int(Double(model.inputSize).squareRoot().rounded())
    return Conditioning(mask: condition, binarization: conditionBinarize, rows: side, cols: side)
  }

  /// Every key's default (docs/ARCHITECTURE.md, "Config"): a 784-500-500-20 Bernoulli VAE on
  /// dynamically binarised MNIST, batch 100, 10 epochs of Adam 1e-3.
  public static let defaults = RunConfig(name: "", model: ModelConfig(hidden: [500, 500], zdim: 20))

  /// The data this config names: its files (`trainFile`, checked: finite, and in [0, 1] for a
  /// Bernoulli likelihood, in the pass that also computes their checksum), else the named data
  /// set from `dataDirectory`. `whenMapped` sees the splits as soon as the files are mapped,
  /// before their values are first read, e.g. to register `DataSplits.mappedFiles` with a fault
  /// handler.
  public func loadData(dataDirectory: String, whenMapped: (DataSplits) -> Void = { _ in }) throws -> DataSplits {
    guard let trainFile else {
      return try DatasetRegistry.load(name: dataset, dataDirectory: dataDirectory, trainLimit: trainLimit)
    }
    let splits = try DataFiles.load(
      train: trainFile, test: testFile, testFraction: testFraction, seed: seed, trainLimit: trainLimit)
    whenMapped(splits)
    var unit = false
    if case .bernoulli = model.likelihood { unit = true }
    guard splits.train.rowWidth == model.inputSize else {
      throw DataFiles.Problem(
        "\(trainFile): examples of \(splits.train.rowWidth) values (shape \(splits.train.shape)), but model.input_size is \(model.inputSize)")
    }
    return try DataFiles.checkValues(splits, unitInterval: unit)
  }

  /// The canonical YAML form (stable key order; see `ConfigSchema`).
  public var yaml: String { ConfigSchema.yaml(self) }

  /// The model's shape as JSON for checkpoint metadata (read by Python users).
  public var modelJSON: String { ConfigSchema.modelJSON(model) }

  public static func modelJSON(_ m: ModelConfig) -> String { ConfigSchema.modelJSON(m) }
}
