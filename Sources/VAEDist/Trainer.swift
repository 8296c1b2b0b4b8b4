import Formats
import Foundation
import TensorBoard
import VAE
import VAEData

/// Data-parallel training of one model: every rank runs the same step on its shard of each
/// global batch (see `step`), the gradients are summed with one exchange, and every rank applies
/// the same Adam update. Rank 0 writes the run directory; every rank evaluates its slice of the
/// held-out set. docs/ARCHITECTURE.md describes the data flow.
public final class Trainer {
  public let config: RunConfig
  public let comm: Communicator
  public let data: DataSplits
  public let model: VAEModel
  public let adam: Adam
  public let batcher: Batcher
  public let runDirectory: String
  public let output: OutputOptions
  public let parallel: ParallelOptions
  /// How the run begins (fresh, resumed, or from `--init` weights); agreed by every rank.
  public let start: StartOptions
  /// Exchange (and, for benchmarks, wait) time of the steps; the metrics log reads and resets it.
  public let meter: StepMeter
  /// The ranks of this node share one parameter copy (sharded optimizer on the shared-memory
  /// window): rank 0 alone writes it outside Adam, and each rank's Adam writes its own slice.
  public let parametersShared: Bool
  public let totalSteps: Int
  /// A line for the log naming the BLAS kernel and its threads.
  public let environmentNote: String
  public internal(set) var step = 0

  /// Every rank's slice of the arenas (the sharded optimizer's shards).
  let paramShards: [Range<Int>]
  /// The slices Adam is split into: `paramShards` when sharded, nil when every rank runs all of it.
  let adamShards: [Range<Int>]?
  /// This rank's rows of each global batch, and the rows of each of its micro-batches.
  let shard: Range<Int>
  let microShards: [Range<Int>]
  /// The running gradient sum over micro-batches (nil without accumulation).
  let accumulated: Buffer?
  let x: Buffer
  let eps: Buffer
  let indices: UnsafeMutablePointer<Int>
  let noiseRNG: CounterRNG
  let estimator: Estimator
  let testX: [Float]
  let testRange: Range<Int>
  let dataChecksum: UInt32
  let files: RunDirectory
  let progress: Progress
  var replicas: ReplicaCheck { ReplicaCheck(comm: comm) }
  /// Sums of this rank's loss terms since the last metrics line.
  var window = (recon: 0.0, kl: 0.0, count: 0)
  /// Σ g² of the averaged gradient this rank handed to Adam at the last step that measured it
  /// (the step before a metrics line): its shard when sharded, the whole gradient otherwise.
  var gradientSquares = 0.0
  /// Run time logged before a resume.
  var elapsedBefore = 0.0
  /// One Double the ranks sum after every step: > 0 when some rank received a stop signal.
  /// [1]: rank 0 says a time-based checkpoint is due.
  let stopFlag = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2)
  /// When the last checkpoint was written (for `checkpoint_minutes`; rank 0's clock).
  var lastCheckpointTime = Date()
  /// This step's agreed "checkpoint now" (time-based).
  var checkpointDue = false
  /// Rank 0's TensorBoard event file (nil with `--no-tensorboard` or on other ranks).
  var tensorboard: TensorBoardWriter?
  /// A metrics line recording a resume with changed settings, written once the log is open.
  var resumeEvent: [(String, String)]?

  public init(
    config: RunConfig, data: DataSplits, comm: Communicator, runDirectory: String,
    output: OutputOptions = OutputOptions(), parallel: ParallelOptions = ParallelOptions(),
    start: StartOptions = StartOptions(), meter: StepMeter = StepMeter()
  ) throws {
    try Self.validate(config: config, data: data, comm: comm, microBatches: parallel.microBatches)
    // Start-up agreement before any collective that depends on options: the option record,
    // then config, data and model size. Each is one collective every rank reaches.
    let replicas = ReplicaCheck(comm: comm)
    StartupWatchdog.waiting(for: "the start-up option agreement (an allgather every rank makes first)")
    try replicas.agreeOnStartup(ReplicaCheck.startupFields(parallel: parallel, start: start))
    StartupWatchdog.waiting(for: "the config handshake (broadcast of rank 0's config)")
    let checksum = data.dataChecksum()
    try replicas.handshake(
      configYAML: config.yaml, dataChecksum: checksum, parameterCount: config.model.layout.total)
    dataChecksum = checksum
    FloatingPointEnvironment.enableFlushToZero()
    self.start = start
    self.config = config
    self.comm = comm
    self.data = data
    self.runDirectory = runDirectory
    self.output = output
    self.parallel = parallel
    self.meter = meter
    files = RunDirectory(path: runDirectory)
    progress = Progress(options: output)
    shard = comm.shard(of: config.batch)
    // Split as the ranks split the batch, so K micro-batches take K ranks' rows.
    let k = parallel.microBatches
    microShards = (0..<k).map { [shard] j in
      let r = shardRange(rank: j, size: k, count: shard.count)
      return (shard.lowerBound + r.lowerBound)..<(shard.lowerBound + r.upperBound)
    }
    let rows = max(microShards.map(\.count).max() ?? 1, 1)
    let sharded = parallel.shardOptimizer && comm.size > 1
    StartupWatchdog.waiting(for: "the shared-memory window (MPI_Win_allocate_shared over this node's ranks)")
    let shared = try comm.makeSharedArenas(layout: config.model.layout, shareParameters: sharded)
    parametersShared = shared?.params != nil
    model = VAEModel(config: config.model, maxBatch: rows, params: shared?.params, grads: shared?.grads)
    paramShards = comm.shards(of: model.params.count)
    adamShards = sharded ? paramShards : nil
    // Sharded: this rank keeps Adam's moments for its slice only (memory ÷ P).
    adam = Adam(config: config.adam, layout: model.params.layout, owning: adamShards?[comm.rank])
    noiseRNG = CounterRNG(seed: config.seed)
    batcher = Batcher(
      dataset: data.train, binarization: config.binarize, rng: noiseRNG, globalBatch: config.batch,
      conditioning: config.conditioning)
    estimator = Estimator(config: config.model, params: model.params)
    testRange = shardRange(rank: comm.rank, size: comm.size, count: data.test.count)
    testX = Batcher.heldOut(data.test, binarization: config.binarize, conditioning: config.conditioning)
    x = Buffer(rows * config.model.inputSize)
    eps = Buffer(rows * config.model.latentSize)
    indices = .allocate(capacity: rows)
    accumulated = k > 1 ? Buffer(model.grads.count) : nil
    totalSteps = config.totalSteps(trainCount: data.train.count)
    environmentNote =
      "BLAS: OpenBLAS kernel \(BLASInfo.coreName), \(BLASInfo.threads) thread(s); flush-to-zero \(FloatingPointEnvironment.flushToZeroEnabled ? "on" : "off")"
    StartupWatchdog.waiting(for: "the initial parameters (allgather)")
    try writeParameters { model.initialise(rng: CounterRNG(seed: config.seed)) }
  }

  deinit {
    indices.deallocate()
    stopFlag.deallocate()
  }

  static func validate(config: RunConfig, data: DataSplits, comm: Communicator, microBatches k: Int) throws {
    guard config.batch >= comm.size else {
      throw TrainError.badSetting(
        "train.batch: the global batch (\(config.batch)) must be at least the number of ranks (\(comm.size))")
    }
    guard config.batch <= data.train.count else {
      throw TrainError.badSetting(
        "train.batch: the global batch (\(config.batch)) is larger than the training set (\(data.train.count) images)")
    }
    guard data.train.pixelsPerImage == config.model.inputSize else {
      throw TrainError.badSetting(
        "model.input_size: \(config.model.inputSize) but \(data.train.name) images have \(data.train.pixelsPerImage) pixels")
    }
    let perRank = config.batch / comm.size
    guard k >= 1, k <= perRank else {
      throw TrainError.badSetting(
        "--micro-batches: \(k) micro-batches need at least \(k) rows per rank, but a global batch of \(config.batch) over \(comm.size) rank(s) gives \(perRank); expected 1…\(perRank)")
    }
  }

  /// Writes the parameters outside Adam (initialisation, restore): every rank its own replica,
  /// or, when the node shares one copy, rank 0 alone and then a barrier.
  func writeParameters(_ body: () -> Void) throws {
    guard parametersShared else { return body() }
    if comm.isRoot { body() }
    try comm.allgather(model.params.data, shards: paramShards)  // on the shared copy: a barrier
  }

  // MARK: - The step

  /// One optimizer step on global batch `step`. Returns this rank's loss terms (sums).
  @discardableResult
  public func trainStep() throws -> LossTerms { try step(timer: nil) }

  /// `trainStep` with each phase timed (seconds, accumulated into `phases`), for
  /// `vae-dist bench --profile`. Waiting for the slowest rank is timed apart ("wait").
  public func profiledStep(_ phases: inout [String: Double]) throws {
    let timer = PhaseTimer(clock: comm.wallTime)
    timer.phases = phases
    _ = try step(timer: timer)
    phases = timer.phases
  }

  /// batch → forward → backward (per micro-batch) → one exchange that sums the gradients over
  /// ranks and runs Adam on the sum (scaled by 1/B) → done.
  private func step(timer: PhaseTimer?) throws -> LossTerms {
    var terms = LossTerms()
    for (j, rows) in microShards.enumerated() {
      loadBatch(rows)
      timer?.lap("batch+noise")
      terms = terms + model.loss(x: UnsafePointer(x.ptr), eps: UnsafePointer(eps.ptr), batch: rows.count)
      timer?.lap("forward")
      model.backward()
      accumulate(micro: j)
      timer?.lap("backward")
    }
    try waitForSlowestRank(timed: timer != nil)
    timer?.lap("wait")
    let scale = 1 / Float(config.batch)
    var adamSeconds = 0.0
    let measureNorm = (step + 1) % config.logEvery == 0 || step + 1 == totalSteps
    var squares = 0.0
    adam.beginStep()
    let seconds = try comm.exchange(
      gradients: model.grads.data, parameters: model.params.data, shards: adamShards
    ) { range, g in
      let a = timer == nil ? 0 : comm.wallTime()
      if measureNorm { squares += sumOfSquares(g, range.count) }
      adam.apply(params: model.params, gradients: g, range: range, scale: scale)
      if timer != nil { adamSeconds += comm.wallTime() - a }
    }
    if measureNorm { gradientSquares = squares * Double(scale) * Double(scale) }
    meter.add(exchange: seconds)
    timer?.lap("allreduce")
    timer?.move(adamSeconds, from: "allreduce", to: "adam")
    step += 1
    return terms
  }

  /// Σ x² over `n` values, in Double.
  func sumOfSquares(_ g: UnsafePointer<Float>, _ n: Int) -> Double {
    var s = 0.0
    for i in 0..<n { s += Double(g[i]) * Double(g[i]) }
    return s
  }

  /// The epoch a run that has done `steps` steps is in, counted from 1 (0 before the first
  /// step): what the progress line, metrics.jsonl and checkpoints (`vae-dist info`) all say.
  func epochNumber(afterSteps steps: Int) -> Int { steps == 0 ? 0 : (steps - 1) / batcher.stepsPerEpoch + 1 }

  /// Rows `rows` of global batch `step`: pixels (binarised as configured) and noise ε, each a
  /// pure function of (seed, epoch, example index).
  func loadBatch(_ rows: Range<Int>) {
    let spe = batcher.stepsPerEpoch
    let epoch = step / spe
    batcher.fill(epoch: epoch, batchInEpoch: step % spe, rows: rows, x: x.ptr, indices: indices)
    noiseRNG.fillNormal(eps.ptr, rows: rows.count, dim: config.model.latentSize, purpose: .noise, epoch: UInt64(epoch)) {
      UInt64(indices[$0])
    }
  }

  /// Adds micro-batch `j`'s gradients to the running sum in order, ((g0 + g1) + g2) + …, the
  /// last one into the gradient arena itself (the same order as the ranks' reduction).
  func accumulate(micro j: Int) {
    guard let acc = accumulated else { return }
    let g = model.grads.base, a = acc.ptr, n = model.grads.count
    if j == 0 {
      a.update(from: g, count: n)
    } else if j < microShards.count - 1 {
      for i in 0..<n { a[i] += g[i] }
    } else {
      for i in 0..<n { g[i] = a[i] + g[i] }
    }
  }

  /// For measurements: a barrier before the exchange, timed on its own.
  func waitForSlowestRank(timed: Bool) throws {
    guard comm.size > 1, meter.separateWait || timed else { return }
    let w = comm.wallTime()
    try comm.barrier()
    meter.add(wait: comm.wallTime() - w)
  }

  // MARK: - Evaluation

  /// The held-out ELBO (mean over the whole test set, nats per image), each rank on its slice,
  /// sums allreduced in Double.
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
    let recon = -sums[0] / count
    let kl = sums[1] / count
    return (-(recon + kl), recon, kl)
  }
}
