import Formats
import Foundation
import VAE
import VAEData

/// Where a run starts: from scratch, from the newest valid checkpoint of the run directory, or
/// from a given file.
public enum ResumeMode: Sendable, Equatable {
  case none
  case auto
  case path(String)
}

public enum TrainError: Error, CustomStringConvertible {
  case runExists(String)
  case noUsableCheckpoint(String)
  case badSetting(String)
  case io(String)
  /// A collective check failed on this rank: the message names the rank and the field.
  case handshake(String)
  /// Another rank found the problem and prints it; this rank waits for the job to end.
  case peerFailed

  public var description: String {
    switch self {
    case .runExists(let dir):
      "\(dir) already holds a run (checkpoints or final.safetensors); pass --resume auto to continue it, or choose another --out"
    case .noUsableCheckpoint(let s): s
    case .badSetting(let s): s
    case .io(let s): s
    case .handshake(let s): s
    case .peerFailed: "another rank reported an error"
    }
  }
}

/// What a finished run reports.
public struct TrainSummary: Sendable {
  public var steps: Int
  public var testELBO: Double
  public var testRecon: Double
  public var testKL: Double
  public var seconds: Double
  public var samplesPerSecond: Double
  public var runDirectory: String
}

/// Output options of a run (none of them changes the numbers).
public struct OutputOptions: Sendable {
  public var quiet: Bool
  /// Print progress on a terminal as one updating line; otherwise plain periodic lines.
  public var terminal: Bool
  public init(quiet: Bool = false, terminal: Bool = Console.isTerminal) {
    self.quiet = quiet
    self.terminal = terminal
  }
}

/// How the step runs across ranks (none of it changes the numbers).
public struct ParallelOptions: Sendable {
  /// ZeRO stage 1: reduce-scatter the gradients, Adam on this rank's 1/P of the arena, then
  /// allgather the parameters. Same bytes on the wire as one allreduce; Adam work ÷ P.
  public var shardOptimizer: Bool
  /// Testing only: after step `step`, rank `rank` nudges one parameter, as a silent hardware or
  /// software fault would, so the replica check can be seen to catch it.
  public var perturb: (rank: Int, step: Int)?
  /// Benchmarks: a barrier before the gradient exchange, timed on its own (`waitSeconds`), so
  /// waiting for the slowest rank is not counted as exchange.
  public var separateWait: Bool
  /// Gradient accumulation: each rank splits its shard into this many micro-batches (floor
  /// split, like the ranks' shards), runs forward and backward on each in turn and sums their
  /// gradients in order, so activation memory shrinks by this factor. The sum is the same
  /// one-step gradient up to summation order; with K micro-batches on one process it is
  /// bit-identical to K ranks on one node, whose shared-memory reduction adds in rank order.
  public var microBatches: Int
  public init(
    shardOptimizer: Bool = true, perturb: (rank: Int, step: Int)? = nil,
    separateWait: Bool = false, microBatches: Int = 1
  ) {
    self.shardOptimizer = shardOptimizer
    self.perturb = perturb
    self.separateWait = separateWait
    self.microBatches = microBatches
  }
}

/// The step loop: batch → forward → backward → allreduce(grads) → scale 1/B → Adam, plus
/// metrics, held-out evaluation and checkpoints (rank 0 writes; every rank evaluates its slice).
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
  let paramShards: [Range<Int>]
  /// The ranks of this node share one parameter copy (sharded optimizer on the shared-memory
  /// window): rank 0 alone writes it outside Adam, and each rank's Adam writes its own slice.
  public let parametersShared: Bool
  /// Seconds spent in gradient/parameter collectives since the last metrics line.
  public var commSeconds = 0.0
  /// With `parallel.separateWait`: seconds spent waiting for the slowest rank before exchanges.
  public var waitSeconds = 0.0
  let estimator: Estimator
  let testX: [Float]
  let testRange: Range<Int>
  let dataChecksum: UInt32
  let shard: Range<Int>
  /// The rows of `shard` each micro-batch takes (one range without accumulation).
  let microShards: [Range<Int>]
  /// The running gradient sum over micro-batches (nil without accumulation).
  let accumulated: Buffer?
  let x: Buffer
  let eps: Buffer
  let indices: UnsafeMutablePointer<Int>
  public private(set) var step = 0
  var elapsedBefore = 0.0
  var window = (recon: 0.0, kl: 0.0, count: 0)
  var lastPrint = 0.0
  var metrics: FileHandle?
  public let totalSteps: Int
  /// A line for the log and `config.yaml` naming the BLAS kernel and its threads.
  public let environmentNote: String

  public init(
    config: RunConfig, data: DataSplits, comm: Communicator, runDirectory: String,
    output: OutputOptions = OutputOptions(), parallel: ParallelOptions = ParallelOptions()
  ) throws {
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
    FloatingPointEnvironment.enableFlushToZero()
    self.config = config
    self.comm = comm
    self.data = data
    self.runDirectory = runDirectory
    self.output = output
    self.parallel = parallel
    let shard = comm.shard(of: config.batch)
    self.shard = shard
    let k = parallel.microBatches
    guard k >= 1, k <= config.batch / comm.size else {
      throw TrainError.badSetting(
        "--micro-batches: \(k) micro-batches need at least \(k) rows per rank, but a global batch of \(config.batch) over \(comm.size) rank(s) gives \(config.batch / comm.size); expected 1…\(config.batch / comm.size)")
    }
    // Split as the ranks split the batch, so K micro-batches take K ranks' rows.
    microShards = (0..<k).map { j in
      let r = shardRange(rank: j, size: k, count: shard.count)
      return (shard.lowerBound + r.lowerBound)..<(shard.lowerBound + r.upperBound)
    }
    let rows = max(microShards.map(\.count).max() ?? 1, 1)
    let shared = try comm.makeSharedArenas(
      layout: config.model.layout, shareParameters: parallel.shardOptimizer && comm.size > 1)
    parametersShared = shared?.params != nil
    model = VAEModel(
      config: config.model, maxBatch: rows, params: shared?.params, grads: shared?.grads)
    let paramShards = comm.shards(of: model.params.count)
    self.paramShards = paramShards
    // Sharded: this rank keeps Adam's moments for its slice only (memory ÷ P).
    adam = Adam(
      config: config.adam, layout: model.params.layout,
      owning: parallel.shardOptimizer && comm.size > 1 ? paramShards[comm.rank] : nil)
    batcher = Batcher(
      dataset: data.train, binarization: config.binarize, rng: CounterRNG(seed: config.seed),
      globalBatch: config.batch)
    estimator = Estimator(config: config.model, params: model.params)
    testRange = shardRange(rank: comm.rank, size: comm.size, count: data.test.count)
    testX = Batcher.heldOut(data.test, binarization: config.binarize)
    dataChecksum = data.dataChecksum()
    x = Buffer(rows * config.model.inputSize)
    eps = Buffer(rows * config.model.zdim)
    indices = .allocate(capacity: rows)
    accumulated = k > 1 ? Buffer(model.grads.count) : nil
    totalSteps = config.totalSteps(trainCount: data.train.count)
    environmentNote =
      "BLAS: OpenBLAS kernel \(BLASInfo.coreName), \(BLASInfo.threads) thread(s); flush-to-zero \(FloatingPointEnvironment.flushToZeroEnabled ? "on" : "off")"
    try writeParameters { model.initialise(rng: CounterRNG(seed: config.seed)) }
  }

  /// Writes the parameters outside Adam (initialisation, restore): every rank its own replica,
  /// or, when the node shares one copy, rank 0 alone and then a barrier.
  func writeParameters(_ body: () -> Void) throws {
    guard parametersShared else { return body() }
    if comm.isRoot { body() }
    try comm.allgather(model.params.data, shards: paramShards)  // on the shared copy: a barrier
  }

  deinit { indices.deallocate() }

  var checkpointsDirectory: String { (runDirectory as NSString).appendingPathComponent("checkpoints") }
  var metricsPath: String { (runDirectory as NSString).appendingPathComponent("metrics.jsonl") }

  // MARK: - The step

  /// One optimizer step on global batch `step`. Returns this rank's loss terms (sums).
  @discardableResult
  public func trainStep() throws -> LossTerms { try step(timer: nil) }

  /// `trainStep` with each phase timed (seconds, accumulated into `phases`), for
  /// `vae-dist bench --profile`. Waiting for the slowest rank is timed apart ("wait").
  public func profiledStep(_ phases: inout [String: Double]) throws {
    let timer = PhaseTimer(clock: comm.wallTime)
    timer.phases = phases
    try step(timer: timer)
    phases = timer.phases
  }

  /// batch → forward → backward → sum the gradients over ranks → scale 1/B → Adam.
  private func step(timer: PhaseTimer?) throws -> LossTerms {
    let spe = batcher.stepsPerEpoch
    let epoch = step / spe
    var terms = LossTerms()
    for (j, rows) in microShards.enumerated() {
      let b = rows.count
      batcher.fill(epoch: epoch, batchInEpoch: step % spe, rows: rows, x: x.ptr, indices: indices)
      fillNoise(epoch: epoch, rows: b)
      timer?.lap("batch+noise")
      terms = terms + model.loss(x: UnsafePointer(x.ptr), eps: UnsafePointer(eps.ptr), batch: b)
      timer?.lap("forward")
      model.backward()
      if let acc = accumulated { accumulate(acc, micro: j) }
      timer?.lap("backward")
    }
    if comm.size > 1 && (parallel.separateWait || timer != nil) {
      let w = comm.wallTime()
      try comm.barrier()
      waitSeconds += comm.wallTime() - w
    }
    timer?.lap("wait")
    let scale = 1 / Float(config.batch)
    var adamSeconds = 0.0
    if parallel.shardOptimizer && comm.size > 1 {
      // ZeRO-1: Adam on this rank's shard of the summed gradients, then gather the parameters.
      adam.beginStep()
      commSeconds += try comm.withReducedShard(model.grads.data, shards: paramShards) { range, g in
        let a = timer == nil ? 0 : comm.wallTime()
        adam.apply(params: model.params, gradients: g, range: range, scale: scale)
        if timer != nil { adamSeconds += comm.wallTime() - a }
      }
      let t2 = comm.wallTime()
      try comm.allgather(model.params.data, shards: paramShards)
      commSeconds += comm.wallTime() - t2
    } else {
      adam.beginStep()
      commSeconds += try comm.withAllreducedSum(model.grads.data) { range, g in
        let a = timer == nil ? 0 : comm.wallTime()
        adam.apply(params: model.params, gradients: g, range: range, scale: scale)
        if timer != nil { adamSeconds += comm.wallTime() - a }
      }
    }
    timer?.lap("allreduce")
    timer?.move(adamSeconds, from: "allreduce", to: "adam")
    step += 1
    return terms
  }

  /// Adds micro-batch `j`'s gradients to the running sum in order, ((g0 + g1) + g2) + …, the
  /// last one into the gradient arena itself (the same order as the ranks' reduction).
  func accumulate(_ acc: Buffer, micro j: Int) {
    let g = model.grads.base, a = acc.ptr, n = model.grads.count
    if j == 0 {
      a.update(from: g, count: n)
    } else if j < microShards.count - 1 {
      for i in 0..<n { a[i] += g[i] }
    } else {
      for i in 0..<n { g[i] = a[i] + g[i] }
    }
  }

  func fillNoise(epoch: Int, rows: Int) {
    let d = config.model.zdim
    let rng = CounterRNG(seed: config.seed)
    for r in 0..<rows {
      var s = rng.stream(.noise, epoch: UInt64(epoch), index: UInt64(indices[r]))
      for j in 0..<d { eps.ptr[r * d + j] = s.nextNormal() }
    }
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

  // MARK: - The run

  public func run(resume: ResumeMode) throws -> TrainSummary {
    let fm = FileManager.default
    try handshake()
    try restoreOrCheckFresh(resume: resume)
    if comm.size > 1 { try checkReplicas(what: "initial parameters") }  // fresh or restored
    if comm.isRoot {
      do {
        try fm.createDirectory(atPath: checkpointsDirectory, withIntermediateDirectories: true)
      } catch {
        throw TrainError.io("\(checkpointsDirectory): cannot create the run directory: \(error.localizedDescription)")
      }
      try writeRunConfig()
      try openMetrics()
      if let w = BLASInfo.fallbackWarning() { Console.error(w) }
    }
    let start = Date()
    let firstStep = step  // after a resume, only this session's steps count for samples/s
    var windowStart = Date()
    var windowStepStart = step
    if comm.isRoot && !output.quiet {
      Console.out(
        "training \(config.name): \(totalSteps) steps of \(config.batch) (\(batcher.stepsPerEpoch) per epoch), \(model.params.count) parameters, \(comm.size) rank(s)\(parallel.shardOptimizer && comm.size > 1 ? ", sharded optimizer" : "")\(microShards.count > 1 ? ", \(microShards.count) micro-batches per rank" : "")")
      Console.out(environmentNote)
      if let m = comm as? MPICommunicator { Console.out("gradient exchange: \(m.transport)") }
    }
    while step < totalSteps {
      let t = try trainStep()
      if let p = parallel.perturb, p.rank == comm.rank, p.step == step { model.params.base[0] += 1e-3 }
      window.recon += t.recon
      window.kl += t.kl
      window.count += shard.count
      let epoch = (step - 1) / batcher.stepsPerEpoch
      if step % config.logEvery == 0 || step == totalSteps {
        let sums = try comm.allreduceSum([window.recon, window.kl, Double(window.count)])
        let now = Date()
        let dt = now.timeIntervalSince(windowStart)
        let sps = Double(config.batch * (step - windowStepStart)) / max(dt, 1e-9)
        let elapsed = elapsedBefore + now.timeIntervalSince(start)
        let recon = -sums[0] / sums[2], kl = sums[1] / sums[2]
        if comm.isRoot {
          try writeMetrics([
            ("step", "\(step)"), ("epoch", "\(epoch)"), ("loss", json(recon + kl)),
            ("recon", json(recon)), ("kl", json(kl)), ("world_size", "\(comm.size)"),
            ("samples_per_sec", json(sps.rounded())),
            ("allreduce_ms", json((commSeconds / Double(step - windowStepStart) * 1e6).rounded() / 1000)),
            ("time_s", json((elapsed * 1000).rounded() / 1000)),
          ])
          progress(epoch: epoch, loss: recon + kl, samplesPerSecond: sps, elapsed: elapsed)
        }
        window = (0, 0, 0)
        commSeconds = 0
        windowStart = now
        windowStepStart = step
      }
      if config.evalEvery > 0 && step % config.evalEvery == 0 && step < totalSteps {
        let e = try evaluate()
        try logEvaluation(e, epoch: epoch, elapsed: elapsedBefore + Date().timeIntervalSince(start))
        windowStart = Date()
        windowStepStart = step
      }
      if comm.size > 1 && config.checkEvery > 0 && step % config.checkEvery == 0 {
        try checkReplicas(what: "parameters at step \(step)")
      }
      if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 && step < totalSteps {
        let moments = try gatherMoments()
        let w = try comm.allreduceSum([window.recon, window.kl, Double(window.count)])
        if comm.isRoot, let moments {
          try saveCheckpoint(
            path: Checkpoint.stepPath(runDirectory: runDirectory, step: step), window: w, moments: moments)
          pruneCheckpoints()
        }
      }
    }
    let elapsed = elapsedBefore + Date().timeIntervalSince(start)
    let e = try evaluate()
    let epoch = max(step - 1, 0) / batcher.stepsPerEpoch
    try logEvaluation(e, epoch: epoch, elapsed: elapsed)
    if comm.size > 1 { try checkReplicas(what: "final parameters") }
    let moments = try gatherMoments()
    if comm.isRoot, let moments {
      try saveCheckpoint(
        path: (runDirectory as NSString).appendingPathComponent("final.safetensors"), window: [0, 0, 0],
        moments: moments)
      if output.terminal && !output.quiet { Console.raw("\n") }
      try metrics?.close()
    }
    let trained = Date().timeIntervalSince(start)
    return TrainSummary(
      steps: step, testELBO: e.elbo, testRecon: e.recon, testKL: e.kl, seconds: elapsed,
      samplesPerSecond: trained > 0 ? Double(config.batch) * Double(step - firstStep) / trained : 0,
      runDirectory: runDirectory)
  }

  func logEvaluation(_ e: (elbo: Double, recon: Double, kl: Double), epoch: Int, elapsed: Double) throws {
    guard comm.isRoot else { return }
    try writeMetrics([
      ("step", "\(step)"), ("epoch", "\(epoch)"), ("test_elbo", json(e.elbo)),
      ("test_recon", json(e.recon)), ("test_kl", json(e.kl)),
      ("time_s", json((elapsed * 1000).rounded() / 1000)),
    ])
    if !output.quiet {
      if output.terminal { Console.raw("\r\u{1B}[K") }
      Console.out(
        "step \(step): held-out ELBO \(fmt(e.elbo)) nats/image (reconstruction loss \(fmt(e.recon)), KL \(fmt(e.kl)))")
    }
  }

  func progress(epoch: Int, loss: Double, samplesPerSecond: Double, elapsed: Double) {
    guard !output.quiet else { return }
    let remaining = Double(totalSteps - step) * Double(config.batch) / max(samplesPerSecond, 1)
    let line =
      "epoch \(epoch + 1)/\((totalSteps + batcher.stepsPerEpoch - 1) / batcher.stepsPerEpoch) step \(step)/\(totalSteps) loss \(fmt(loss)) \(Int(samplesPerSecond)) samples/s ETA \(duration(remaining))"
    if output.terminal {
      Console.raw("\r\u{1B}[K" + line)
    } else if elapsed - lastPrint >= 10 || step == totalSteps {
      lastPrint = elapsed
      Console.out(line)
    }
  }

  // MARK: - Files

  func writeRunConfig() throws {
    let text =
      config.yaml + "# environment (informational)\nenvironment:\n  blas_kernel: \(BLASInfo.coreName)\n"
      + "  blas_threads: \(BLASInfo.threads)\n  world_size: \(comm.size)\n"
    let path = (runDirectory as NSString).appendingPathComponent("config.yaml")
    do {
      try FileIO.writeAtomically(Array(text.utf8), to: path)
    } catch {
      throw TrainError.io("\(path): cannot write: \(error)")
    }
  }

  func openMetrics() throws {
    let fm = FileManager.default
    if !fm.fileExists(atPath: metricsPath) && !fm.createFile(atPath: metricsPath, contents: nil) {
      throw TrainError.io("\(metricsPath): cannot create")
    }
    guard let h = FileHandle(forWritingAtPath: metricsPath) else {
      throw TrainError.io("\(metricsPath): cannot open for writing")
    }
    h.seekToEndOfFile()
    metrics = h
  }

  func writeMetrics(_ fields: [(String, String)]) throws {
    let line = "{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}\n"
    metrics?.write(Data(line.utf8))
  }

  /// `window`: the metrics window's sums over all ranks (recon, kl, count).
  func saveCheckpoint(path: String, window w: [Double], moments: (m: Arena, v: Arena)) throws {
    let state = TrainingState(
      step: step, epoch: step / batcher.stepsPerEpoch, seed: config.seed, worldSize: comm.size,
      globalBatch: config.batch, adamStep: adam.step, dataChecksum: dataChecksum,
      windowRecon: w[0], windowKL: w[1], windowCount: Int(w[2]))
    try Checkpoint.save(
      path: path, params: model.params, moments: moments, state: state, modelJSON: config.modelJSON,
      configYAML: config.yaml)
  }

  func pruneCheckpoints() {
    let keep = max(config.keepCheckpoints, 1)
    let steps = Checkpoint.candidates(runDirectory: runDirectory).filter { !$0.hasSuffix("final.safetensors") }
    for old in steps.dropFirst(keep) { try? FileManager.default.removeItem(atPath: old) }
  }

  /// Resume: rank 0 picks the newest valid checkpoint (auto) or reads the given one and
  /// broadcasts its bytes, so other hosts need no copy of the run directory. Fresh: refuse to
  /// overwrite an existing run.
  func restoreOrCheckFresh(resume: ResumeMode) throws {
    var bytes: [UInt8] = []
    var path: [UInt8] = []
    if comm.isRoot {
      switch resume {
      case .none:
        if !Checkpoint.candidates(runDirectory: runDirectory).isEmpty {
          throw TrainError.runExists(runDirectory)
        }
        try? FileManager.default.removeItem(atPath: metricsPath)
      case .auto:
        var best: (step: Int, path: String, bytes: [UInt8])?
        for p in Checkpoint.candidates(runDirectory: runDirectory) {
          do {
            let b = try FileIO.readAll(path: p)
            let c = try Checkpoint.load(bytes: b, path: p)
            if best == nil || c.state.step > best!.step { best = (c.state.step, p, b) }
          } catch {
            Console.error("warning: skipping \(p): \(error)")
          }
        }
        if let best {
          bytes = best.bytes
          path = Array(best.path.utf8)
        } else if !output.quiet {
          Console.out("no checkpoint in \(runDirectory); starting from step 0")
        }
      case .path(let p):
        bytes = try FileIO.readAll(path: p)
        path = Array(p.utf8)
      }
    }
    if resume == .none { return }
    try comm.broadcast(&path, root: 0)
    try comm.broadcast(&bytes, root: 0)
    if bytes.isEmpty { return }
    try restore(try Checkpoint.load(bytes: bytes, path: String(decoding: path, as: UTF8.self)))
  }

  // MARK: - Agreement between ranks

  /// Every rank contributes `value`; when some rank differs from rank 0, the lowest such rank
  /// throws a one-line error naming itself and the field, the others wait for the abort.
  func agree(_ field: String, _ value: UInt64, show: (UInt64) -> String = { String($0) }) throws {
    let all = try comm.allgather(value)
    guard let bad = all.firstIndex(where: { $0 != all[0] }) else { return }
    if comm.rank == bad {
      throw TrainError.handshake(
        "\(field) differs from rank 0's: \(show(value)) here, \(show(all[0])) on rank 0")
    }
    throw TrainError.peerFailed
  }

  /// Start-up: config, data, binary and parameters must agree on every rank.
  func handshake() throws {
    guard comm.size > 1 else { return }
    var rootYAML = Array(config.yaml.utf8)
    try comm.broadcast(&rootYAML, root: 0)
    let mine = config.yaml
    let theirs = String(decoding: rootYAML, as: UTF8.self)
    let differs: UInt64 = mine == theirs ? 0 : 1
    let all = try comm.allgather(differs)
    if let bad = all.firstIndex(of: 1) {
      if comm.rank == bad {
        let a = mine.split(separator: "\n"), b = theirs.split(separator: "\n")
        let i = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
        let here = i < a.count ? String(a[i]).trimmingCharacters(in: .whitespaces) : "(nothing)"
        let there = i < b.count ? String(b[i]).trimmingCharacters(in: .whitespaces) : "(nothing)"
        throw TrainError.handshake("config differs from rank 0's: '\(here)' here, '\(there)' on rank 0")
      }
      throw TrainError.peerFailed
    }
    try agree("data checksum", UInt64(dataChecksum)) { String(format: "%08x", $0) }
    try agree("binary version", fnv1a(Array(vaeDistVersion.utf8)))
    try agree("parameter count", UInt64(model.params.count))
    // The initial parameters are compared once they are final (after a resume, if any): run().
  }

  func parameterChecksum() -> UInt64 {
    fnv1aFloats(UnsafeBufferPointer(model.params.data))
  }

  /// Replicas must hold bit-identical parameters; a diverged one stops the job.
  func checkReplicas(what: String) throws {
    try agree("checksum of \(what)", parameterChecksum()) { String(format: "%016llx", $0) }
  }

  /// Adam's moments of the whole arena, for a checkpoint: rank 0 gets them (the others nil).
  /// With the sharded optimizer each rank holds only its slice, so the slices are gathered to
  /// rank 0 into arenas allocated for this checkpoint; checkpoints keep one (whole) format.
  func gatherMoments() throws -> (m: Arena, v: Arena)? {
    if adam.ownsAll { return (adam.m, adam.v) }
    let layout = model.params.layout
    let full = comm.isRoot ? (m: Arena(layout: layout), v: Arena(layout: layout)) : nil
    try comm.gather(UnsafeBufferPointer(adam.mSlice), into: full?.m.data, shards: paramShards, root: 0)
    try comm.gather(UnsafeBufferPointer(adam.vSlice), into: full?.v.data, shards: paramShards, root: 0)
    return full
  }

  func restore(_ c: LoadedCheckpoint) throws {
    func check(_ field: String, _ a: String, _ b: String) throws {
      if a != b { throw CheckpointError.mismatch(file: c.path, field: field, checkpoint: a, run: b) }
    }
    try check("model", RunConfig.modelJSON(c.model), config.modelJSON)
    try check("seed", String(c.state.seed), String(config.seed))
    try check("global batch", String(c.state.globalBatch), String(config.batch))
    try check("data checksum", String(c.state.dataChecksum), String(dataChecksum))
    guard let m = c.adamM, let v = c.adamV else {
      throw CheckpointError.badMetadata(file: c.path, field: "adam.m.*", expected: "Adam moments to resume training")
    }
    guard c.state.step <= totalSteps else {
      throw TrainError.badSetting(
        "\(c.path): the checkpoint is at step \(c.state.step), past this run's \(totalSteps) steps")
    }
    try writeParameters { model.params.copy(from: c.params) }
    adam.load(m: m, v: v)
    adam.step = c.state.adamStep
    step = c.state.step
    // The saved window holds every rank's sums: rank 0 carries them, the others start empty.
    window = comm.isRoot ? (c.state.windowRecon, c.state.windowKL, c.state.windowCount) : (0, 0, 0)
    if comm.isRoot {
      elapsedBefore = truncateMetrics(after: step)
      if !output.quiet { Console.out("resuming from \(c.path) at step \(step)") }
    }
  }

  /// Drops metrics lines past `step` (written after the checkpoint by the interrupted run) and
  /// returns the run time logged up to there, so `time_s` continues where it was.
  func truncateMetrics(after step: Int) -> Double {
    guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return 0 }
    var kept: [Substring] = []
    var elapsed = 0.0
    for line in text.split(separator: "\n") {
      guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let s = (obj["step"] as? NSNumber)?.intValue
      else { continue }
      // Everything at or before the checkpoint's step was written before the checkpoint was,
      // except a finished run's final evaluation, which a resumed run logs again.
      if step == totalSteps && s == step && obj["test_elbo"] != nil { continue }
      if s <= step {
        kept.append(line)
        elapsed = (obj["time_s"] as? NSNumber)?.doubleValue ?? elapsed
      }
    }
    let out = kept.map { $0 + "\n" }.joined()
    try? FileIO.writeAtomically(Array(out.utf8), to: metricsPath)
    return elapsed
  }
}

/// Accumulates the time between successive `lap` calls under each phase's name.
final class PhaseTimer {
  var phases: [String: Double] = [:]
  private let clock: () -> Double
  private var last: Double
  init(clock: @escaping () -> Double) {
    self.clock = clock
    last = clock()
  }
  func lap(_ name: String) {
    let now = clock()
    phases[name, default: 0] += now - last
    last = now
  }
  func move(_ seconds: Double, from: String, to: String) {
    phases[from, default: 0] -= seconds
    phases[to, default: 0] += seconds
  }
}

/// The version every rank must agree on at start-up.
public let vaeDistVersion = "vae-dist 0.2.0 (checkpoint format vae-dist/1)"

func fnv1a(_ bytes: [UInt8]) -> UInt64 {
  var h: UInt64 = 0xcbf2_9ce4_8422_2325
  for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
  return h
}

/// A 64-bit hash of float bits (FNV-1a over 32-bit words; fast enough for 1.3 M parameters).
func fnv1aFloats(_ a: UnsafeBufferPointer<Float>) -> UInt64 {
  var h: UInt64 = 0xcbf2_9ce4_8422_2325
  for x in a { h = (h ^ UInt64(x.bitPattern)) &* 0x100_0000_01b3 }
  return h
}

func json(_ x: Double) -> String {
  x.isFinite ? "\(x)" : "null"
}

func fmt(_ x: Double) -> String { String(format: "%.2f", x) }

func duration(_ s: Double) -> String {
  guard s.isFinite else { return "?" }
  let t = Int(s.rounded())
  if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
  if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
  return "\(t)s"
}
