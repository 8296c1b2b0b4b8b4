import Formats
import Foundation
import TensorBoard
import VAE
import VAEData

/// The run around the step: the start-up agreement, resume, the loop with its periodic duties
/// (metrics, held-out ELBO, replica checks, checkpoints), an agreed stop, and the final
/// evaluation and save. Rank 0 alone writes the run directory; every rank evaluates its slice of
/// the held-out set. It prints nothing: what happens is reported through `RunOptions.events`.
public final class TrainingRun {
  public let config: RunConfig
  public let comm: Communicator
  public let data: DataSplits
  public let runDirectory: String
  public let options: RunOptions
  public let trainer: Trainer
  /// Ranks × micro-batches: the given micro-batches, or (auto) the resumed checkpoint's split
  /// kept where this run's ranks divide it.
  public let split: BatchSplit
  public let totalSteps: Int
  let files: RunDirectory
  let estimator: Estimator
  let testX: [Float]
  let testRange: Range<Int>
  let dataChecksum: UInt32
  /// `data.standardize`: the training split's per-dimension mean and standard deviation.
  let standardization: Standardization?
  /// The loss sums and timing of the steps since the last metrics line.
  var window: MetricsWindow
  /// Run time logged before a resume.
  var elapsedBefore = 0.0
  /// When the last checkpoint was written (for `checkpoint_minutes`; rank 0's clock).
  var lastCheckpointTime = MonotonicClock.now()
  /// The step the last checkpoint was written after (-1: none in this process).
  var lastSavedStep = -1
  /// Rank 0's TensorBoard event file (nil when turned off or on other ranks).
  var tensorboard: TensorBoardWriter?
  /// A metrics line recording a resume with changed settings, written once the log is open.
  var resumeEvent: JSONObject?
  /// The resume's fields (checkpoint, split before and now, same bits) for segments.jsonl.
  var resumeRecord: JSONObject?
  /// The command's start and the start-up phases timed so far (the `startup` metrics line).
  var startup: StartupTimes
  /// The checkpoint to resume from, read before the Trainer is built and restored by `begin`.
  var resuming: LoadedCheckpoint?

  /// Start-up, in the order every rank follows: the option record, then config, data and model
  /// size, then the exchange (shared-memory window) and the initial parameters.
  public init(config: RunConfig, data: DataSplits, comm: Communicator, runDirectory: String, options: RunOptions = RunOptions())
    throws
  {
    try Self.validate(config: config, data: data, comm: comm)
    // A given count is checked before any collective; auto's, once the checkpoint decided it.
    if let k = options.parallel.microBatches { try Self.validate(microBatches: k, config: config, comm: comm) }
    let replicas = ReplicaCheck(comm: comm)
    let t0 = MonotonicClock.now()
    options.events(.waiting("the start-up option agreement (an allgather every rank makes first)"))
    try StartupRecord.agree(StartupRecord.fields(parallel: options.parallel, start: options.start), comm: comm)
    options.events(.waiting("the config handshake (broadcast of rank 0's config)"))
    let t1 = MonotonicClock.now()
    dataChecksum = data.dataChecksum()
    let t2 = MonotonicClock.now()
    try replicas.handshake(configYAML: config.yaml, dataChecksum: dataChecksum, parameterCount: config.model.layout.total)
    startup = options.startup
    startup.phases += [("data_checksum_s", t2 - t1), ("handshake_s", t1 - t0 + MonotonicClock.now() - t2)]
    standardization = config.standardize ? Standardization.fit(data.train) : nil
    files = RunDirectory(path: runDirectory)
    resuming = try Self.readResumeCheckpoint(options.start.resume, files: files, comm: comm, events: options.events)
    split = Self.batchSplit(microBatches: options.parallel.microBatches, resuming: resuming, ranks: comm.size, batch: config.batch)
    if options.parallel.microBatches == nil { try Self.validate(microBatches: split.microBatches, config: config, comm: comm) }
    var parallel = options.parallel
    parallel.microBatches = split.microBatches
    options.events(.waiting("the gradient exchange (shared-memory window) and the initial parameters"))
    trainer = try Trainer(
      config: config, train: data.train, comm: comm, parallel: parallel, standardization: standardization)
    self.config = config
    self.comm = comm
    self.data = data
    self.runDirectory = runDirectory
    self.options = options
    estimator = Estimator(config: config.model, params: trainer.model.params)
    testRange = shardRange(rank: comm.rank, size: comm.size, count: data.test.count)
    testX = Batcher.heldOut(
      data.test, binarization: config.binarize, conditioning: config.conditioning, standardization: standardization)
    totalSteps = config.totalSteps(trainCount: data.train.count)
    window = MetricsWindow(step: 0, exchangeSeconds: 0)
  }

  static func validate(config: RunConfig, data: DataSplits, comm: Communicator) throws {
    guard config.batch >= comm.size else {
      throw TrainError.badSetting(
        "train.batch: the global batch (\(config.batch)) must be at least the number of ranks (\(comm.size))")
    }
    guard config.batch <= data.train.count else {
      throw TrainError.badSetting(
        "train.batch: the global batch (\(config.batch)) is larger than the training set (\(data.train.count) examples)")
    }
    guard data.train.pixelsPerImage == config.model.inputSize else {
      throw TrainError.badSetting(
        "model.input_size: \(config.model.inputSize) but \(data.train.name) examples have \(data.train.pixelsPerImage) values")
    }
  }

  static func validate(microBatches k: Int, config: RunConfig, comm: Communicator) throws {
    let perRank = config.batch / comm.size
    guard k >= 1, k <= perRank else {
      throw TrainError.invalidOption(
        .microBatches, "micro-batches: \(k) micro-batches need at least \(k) rows per rank, but a global batch of \(config.batch) over \(comm.size) rank(s) gives \(perRank); expected 1…\(perRank)")
    }
  }

  /// Steps done so far.
  public var completedSteps: Int { trainer.completedSteps }
  var replicas: ReplicaCheck { ReplicaCheck(comm: comm) }

  /// Runs to the last step (or an agreed stop).
  public func run() throws -> TrainSummary {
    try begin()
    let clock = RunClock(step: completedSteps, elapsedBefore: elapsedBefore)
    while completedSteps < totalSteps {
      trainer.measuresGradientNorm = (completedSteps + 1) % config.logEvery == 0 || completedSteps + 1 == totalSteps
      castVotes()
      let terms = try trainer.step()
      try checkFinite(terms)
      window.add(terms, rows: trainer.rowsPerStep)
      try duties(clock)
      let (signal, checkpointDue) = countedVotes()
      if let signal { return try stop(signal: signal, clock) }
      if checkpointDue && completedSteps < totalSteps && lastSavedStep != completedSteps { try save(.periodic) }
    }
    return try finish(clock)
  }

  /// Restores the checkpoint `init` read to resume from (nothing for a fresh run).
  func restoreResumed() throws {
    if let c = resuming { try restore(c) }
    resuming = nil
  }

  /// Resume or initial weights, the first replica check, then rank 0 opens the run directory.
  func begin() throws {
    try restoreResumed()
    if let weights = options.start.initialWeights, options.start.resume == .none { try loadInitialWeights(weights) }
    options.events(.waiting("the replica check of the initial parameters (allgather)"))
    try replicas.checkParameters(trainer.model.params, what: "initial parameters")
    options.events(.started)
    if comm.isRoot {
      let stale = try files.create()
      if stale > 0 {
        options.events(.info("removed \(stale) temporary file(s) an interrupted checkpoint write left in \(runDirectory)"))
      }
      try files.writeConfig(configFileText)
      try files.openMetrics()
      try openTensorBoard()
      if let e = resumeEvent { try files.appendMetrics(e) }
      try files.appendSegment(segmentFields())
      // A fresh run's start-up; a resumed one keeps it, so its lines stay the uninterrupted run's.
      if completedSteps == 0 { try files.appendMetrics(startupFields()) }
      announce()
    }
    window = MetricsWindow(step: completedSteps, exchangeSeconds: trainer.exchange.seconds, sums: window)
  }

  /// What happens after step `completedSteps` when it is due.
  func duties(_ clock: RunClock) throws {
    let step = completedSteps, epoch = trainer.epochNumber(afterSteps: step)
    if step % config.logEvery == 0 || step == totalSteps { try logWindow(epoch: epoch, clock) }
    if config.evalEvery > 0 && step % config.evalEvery == 0 && step < totalSteps {
      try checkDataUnchanged()
      try logEvaluation(try evaluate(), epoch: epoch, elapsed: clock.elapsed)
      window.restartClock(step: step, exchangeSeconds: trainer.exchange.seconds)
    }
    if config.checkEvery > 0 && step % config.checkEvery == 0 {
      try replicas.checkParameters(trainer.model.params, what: "parameters at step \(step)")
    }
    if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 && step < totalSteps {
      try save(.periodic)
    }
  }

  /// This rank's votes for the coming step, which ride in its gradient exchange (no
  /// collective of their own): one per signal this rank received (SIGINT, SIGUSR1, SIGTERM,
  /// `options.stopRequest`), and [3] rank 0's "a time-based checkpoint is due".
  func castVotes() {
    let votes = trainer.exchange.votes, mine = options.stopRequest()
    let minutes = config.checkpointMinutes
    let due = comm.isRoot && minutes > 0 && MonotonicClock.now() - lastCheckpointTime >= minutes * 60
    votes.update(repeating: 0)
    if mine != 0 { votes[Self.stopSignals.firstIndex(of: mine) ?? 2] = 1 }
    votes[3] = due ? 1 : 0
  }

  /// The votes summed over the ranks by the step's exchange: every rank stops after the same
  /// step with the same signal, the lowest-numbered one any rank received, and saves when
  /// rank 0 said a checkpoint is due.
  func countedVotes() -> (signal: Int32?, checkpointDue: Bool) {
    let votes = trainer.exchange.votes
    let signal = Self.stopSignals.indices.first { votes[$0] > 0 }.map { Self.stopSignals[$0] }
    return (signal, votes[3] > 0)
  }

  /// The signals that stop a run, in the order the agreement prefers them (lowest number first).
  static let stopSignals: [Int32] = [SIGINT, SIGUSR1, SIGTERM]

  /// An agreed stop: a checkpoint at this step (rank 0), a metrics line saying why, no final
  /// evaluation; resuming continues from here bit-identically.
  func stop(signal: Int32, _ clock: RunClock) throws -> TrainSummary {
    try save(.stop(signal: signal, elapsed: clock.elapsed))
    try closeFiles()
    return TrainSummary(
      steps: completedSteps, testELBO: .nan, testRecon: .nan, testKL: .nan, seconds: clock.elapsed,
      samplesPerSecond: 0, runDirectory: runDirectory, stopSignal: signal)
  }

  /// The final evaluation, replica check and `final.safetensors`.
  func finish(_ clock: RunClock) throws -> TrainSummary {
    let elapsed = clock.elapsed
    try checkDataUnchanged()
    let e = try evaluate()
    try logEvaluation(e, epoch: trainer.epochNumber(afterSteps: completedSteps), elapsed: elapsed)
    try replicas.checkParameters(trainer.model.params, what: "final parameters")
    try save(.final)
    try closeFiles()
    let trained = MonotonicClock.now() - clock.start, steps = completedSteps - clock.firstStep
    return TrainSummary(
      steps: completedSteps, testELBO: e.elbo, testRecon: e.recon, testKL: e.kl, seconds: elapsed,
      samplesPerSecond: trained > 0 ? Double(config.batch) * Double(steps) / trained : 0,
      runDirectory: runDirectory, stepsTrained: steps)
  }

  /// A non-finite loss stops the run before anything is saved, so the newest checkpoint is
  /// the last good one. (A non-finite gradient shows in the next step's loss, and in the
  /// parameters checked before every save.) Under MPI this rank's exit ends the job.
  func checkFinite(_ t: LossTerms) throws {
    guard !t.recon.isFinite || !t.kl.isFinite else { return }
    let term = t.recon.isFinite ? "the KL term (\(t.kl))" : "the reconstruction term (\(-t.recon))"
    throw TrainError.nonFinite(
      "step \(completedSteps): \(term) of the loss is not finite; stopped before saving, \(newestCheckpointNote) (try a lower train.lr)")
  }

  // MARK: - Evaluation

  /// The held-out ELBO (mean over the whole test set, nats per example), each rank on its
  /// slice, sums allreduced in Double.
  public func evaluate() throws -> (elbo: Double, recon: Double, kl: Double) {
    let n = config.model.inputSize
    let local = testX.withUnsafeBufferPointer { t in
      estimator.elbo(
        x: t.baseAddress! + testRange.lowerBound * n, count: testRange.count,
        firstIndex: testRange.lowerBound, samples: config.evalSamples,
        noise: .sampled(CounterRNG(seed: heldOutBinarizationSeed)))
    }
    let sums = try comm.allreduceSum([local.recon, local.kl])
    let count = Double(data.test.count)
    // In the data's own units: log p(x) = log p(x') − Σ log std.
    let recon = -sums[0] / count + (standardization?.logJacobian ?? 0)
    let kl = sums[1] / count
    return (-(recon + kl), recon, kl)
  }
}

/// Wall-clock bookkeeping of a run on the monotonic clock: since its start (for `time_s`).
struct RunClock {
  let start = MonotonicClock.now()
  let firstStep: Int
  let elapsedBefore: Double
  init(step: Int, elapsedBefore: Double) {
    firstStep = step
    self.elapsedBefore = elapsedBefore
  }
  var elapsed: Double { elapsedBefore + MonotonicClock.now() - start }
}

/// The steps since the last metrics line: this rank's loss sums, and the clock and exchange
/// time since the window's clock was last restarted (a metrics line, or after an evaluation,
/// so neither samples/s nor the exchange time per step counts the evaluation).
struct MetricsWindow {
  var recon = 0.0
  var kl = 0.0
  var count = 0
  private(set) var clockStart = MonotonicClock.now()
  private(set) var clockStep: Int
  private(set) var exchangeSecondsAtStart: Double

  init(step: Int, exchangeSeconds: Double, sums: MetricsWindow? = nil) {
    clockStep = step
    exchangeSecondsAtStart = exchangeSeconds
    if let sums { (recon, kl, count) = (sums.recon, sums.kl, sums.count) }
  }

  mutating func add(_ t: LossTerms, rows: Int) {
    recon += t.recon
    kl += t.kl
    count += rows
  }

  mutating func restartClock(step: Int, exchangeSeconds: Double) {
    clockStart = MonotonicClock.now()
    clockStep = step
    exchangeSecondsAtStart = exchangeSeconds
  }

  mutating func clearSums() { (recon, kl, count) = (0, 0, 0) }

  var sums: [Double] { [recon, kl, Double(count)] }
}
