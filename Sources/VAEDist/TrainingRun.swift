import CSupport
import Formats
import Foundation
import VAE
import VAEData

/// The run around the step: start-up agreement, resume, the loop with its periodic duties
/// (metrics, held-out ELBO, replica checks, checkpoints), and the final evaluation and save.
extension Trainer {
  /// Runs to the last step (or an agreed stop). `start.initialWeights`: a fresh run starts from
  /// this safetensors file's model tensors (any file with the model's tensor names and shapes,
  /// e.g. PyTorch's `save_file(model.state_dict())`) instead of the seeded initialisation;
  /// Adam's moments start at zero.
  public func run() throws -> TrainSummary {
    try restoreOrCheckFresh(resume: start.resume)
    if let initialWeights = start.initialWeights, start.resume == .none { try loadInitialWeights(initialWeights) }
    StartupWatchdog.waiting(for: "the replica check of the initial parameters (allgather)")
    try replicas.checkParameters(model.params, what: "initial parameters")  // fresh or restored
    StartupWatchdog.disarm()
    if comm.isRoot {
      let stale = try files.create()
      if stale > 0 {
        Console.error("note: removed \(stale) temporary file(s) an interrupted checkpoint write left in \(runDirectory)")
      }
      try files.writeConfig(configFileText)
      try files.openMetrics()
      try openTensorBoard()
      if let e = resumeEvent { try files.appendMetrics(e) }
      for w in output.warnings { Console.error(w) }
    }
    announce()
    var clock = RunClock(step: step, elapsedBefore: elapsedBefore)
    vae_install_stop_handlers()
    while step < totalSteps {
      let t = try trainStep()
      try checkFinite(t)
      window.recon += t.recon
      window.kl += t.kl
      window.count += shard.count
      try duties(&clock)
      if let signal = try agreedStop() { return try stop(signal: signal, clock) }
      if checkpointDue && step < totalSteps { try checkpoint() }
    }
    return try finish(clock)
  }

  /// Wall-clock bookkeeping of a run: since its start (for `time_s`) and since the last
  /// metrics line (for samples/s).
  struct RunClock {
    let start = Date()
    let firstStep: Int
    let elapsedBefore: Double
    var windowStart = Date()
    var windowStep: Int
    init(step: Int, elapsedBefore: Double) {
      firstStep = step
      windowStep = step
      self.elapsedBefore = elapsedBefore
    }
    var elapsed: Double { elapsedBefore + Date().timeIntervalSince(start) }
    mutating func restartWindow(at step: Int) {
      windowStart = Date()
      windowStep = step
    }
  }

  /// Whether some rank received SIGTERM, SIGINT or SIGUSR1: each rank adds its flag into one
  /// Double summed after every step (single process: just the flag), so all ranks stop after
  /// the same step. Returns the signal (the lowest one seen on any rank).
  /// The same collective carries rank 0's "a time-based checkpoint is due" (`checkpointDue`).
  func agreedStop() throws -> Int32? {
    let mine = Double(vae_stop_signal())
    let minutes = config.checkpointMinutes
    let due = comm.isRoot && minutes > 0 && Date().timeIntervalSince(lastCheckpointTime) >= minutes * 60
    guard comm.size > 1 else {
      checkpointDue = due
      return mine > 0 ? Int32(mine) : nil
    }
    // Encode the signal so the sum says both "someone stopped" and which: 1000 + signal per rank.
    stopFlag[0] = mine > 0 ? 1000 + mine : 0
    stopFlag[1] = due ? 1 : 0
    try comm.allreduceSum(stopFlag)
    checkpointDue = stopFlag[1] > 0
    guard stopFlag[0] > 0 else { return nil }
    if mine > 0 { return Int32(mine) }
    let peer = Int(stopFlag[0].rounded()) % 1000  // one rank's signal, or a sum of several
    return Int32([2, 10, 15].contains(peer) ? peer : 15)
  }

  /// An agreed stop: a checkpoint at this step (rank 0), a metrics line saying why, no final
  /// evaluation; `--resume auto` continues from here bit-identically.
  func stop(signal: Int32, _ clock: RunClock) throws -> TrainSummary {
    let moments = try gatherMoments()
    let w = try comm.allreduceSum([window.recon, window.kl, Double(window.count)])
    let path = files.stepPath(step)
    if comm.isRoot, let moments {
      try saveCheckpoint(path: path, window: w, moments: moments)
      files.pruneCheckpoints(keep: config.keepCheckpoints)
      let name = [2: "SIGINT", 10: "SIGUSR1", 15: "SIGTERM"][Int(signal)] ?? "signal \(signal)"
      try files.appendMetrics([
        ("step", "\(step)"), ("event", "\"stopped\""), ("signal", "\"\(name)\""),
        ("time_s", json((clock.elapsed * 1000).rounded() / 1000)),
      ])
      progress.finish()
      try files.closeMetrics()
      try tensorboard?.close()
    }
    return TrainSummary(
      steps: step, testELBO: .nan, testRecon: .nan, testKL: .nan, seconds: clock.elapsed, samplesPerSecond: 0,
      runDirectory: runDirectory, stopSignal: signal)
  }

  /// A non-finite loss stops the run before anything is saved, so the newest checkpoint is
  /// the last good one. (A non-finite gradient shows in the next step's loss.) The rank that
  /// sees it says so; under MPI its exit ends the job.
  func checkFinite(_ t: LossTerms) throws {
    guard !t.recon.isFinite || !t.kl.isFinite else { return }
    let term = t.recon.isFinite ? "the KL term (\(t.kl))" : "the reconstruction term (\(-t.recon))"
    throw TrainError.nonFinite(
      "step \(step): \(term) of the loss is not finite; stopped before saving, so \(files.checkpoints.first ?? "no checkpoint") is the newest checkpoint (try a lower train.lr)")
  }

  /// Before a checkpoint: an update from a non-finite gradient must not become the newest
  /// checkpoint (its loss was still finite).
  func checkParametersFinite() throws {
    guard let bad = model.params.data.firstIndex(where: { !$0.isFinite }) else { return }
    let name = model.params.layout.specs.indices.first { model.params.layout.range(of: $0).contains(bad) }
      .map { model.params.layout.specs[$0].name } ?? "?"
    throw TrainError.nonFinite(
      "step \(step): parameter \(name) is not finite after the update (the gradient was not finite); stopped before saving, so \(files.checkpoints.first ?? "no checkpoint") is the newest checkpoint")
  }

  /// What happens after step `step` (1-based count of steps done) when it is due.
  func duties(_ clock: inout RunClock) throws {
    let epoch = epochNumber(afterSteps: step)
    if step % config.logEvery == 0 || step == totalSteps { try logWindow(epoch: epoch, &clock) }
    if config.evalEvery > 0 && step % config.evalEvery == 0 && step < totalSteps {
      try logEvaluation(try evaluate(), epoch: epoch, elapsed: clock.elapsed)
      clock.restartWindow(at: step)
    }
    if config.checkEvery > 0 && step % config.checkEvery == 0 {
      try replicas.checkParameters(model.params, what: "parameters at step \(step)")
    }
    if config.checkpointEvery > 0 && step % config.checkpointEvery == 0 && step < totalSteps {
      try checkpoint()
    }
  }

  /// A step checkpoint (collective: moments are gathered to rank 0, which writes).
  func checkpoint() throws {
    try checkParametersFinite()
    let moments = try gatherMoments()
    let w = try comm.allreduceSum([window.recon, window.kl, Double(window.count)])
    if comm.isRoot, let moments {
      try saveCheckpoint(path: files.stepPath(step), window: w, moments: moments)
      files.pruneCheckpoints(keep: config.keepCheckpoints)
    }
    lastCheckpointTime = Date()
  }

  /// The metrics line of the steps since the last one: loss terms summed over ranks.
  func logWindow(epoch: Int, _ clock: inout RunClock) throws {
    // The gradient norm: shards add up; whole copies count once (rank 0's).
    let squares = adamShards != nil || comm.isRoot ? gradientSquares : 0
    let sums = try comm.allreduceSum([window.recon, window.kl, Double(window.count), squares])
    let now = Date()
    let steps = step - clock.windowStep
    let sps = Double(config.batch * steps) / max(now.timeIntervalSince(clock.windowStart), 1e-9)
    let elapsed = clock.elapsed
    let recon = -sums[0] / sums[2], kl = sums[1] / sums[2]
    if comm.isRoot {
      let fields = [
        ("step", "\(step)"), ("epoch", "\(epoch)"), ("loss", json(recon + kl)),
        ("recon", json(recon)), ("kl", json(kl)), ("world_size", "\(comm.size)"),
        ("lr", json(Double(config.adam.lr))), ("grad_norm", json(sums[3].squareRoot())),
        ("samples_per_sec", json(sps.rounded())),
        ("allreduce_ms", json((meter.exchangeSeconds / Double(steps) * 1e6).rounded() / 1000)),
        ("time_s", json((elapsed * 1000).rounded() / 1000)),
        ("wall_time", json((now.timeIntervalSince1970 * 1000).rounded() / 1000)),
      ]
      try files.appendMetrics(fields)
      try tensorboardScalars(fields, prefix: "train", wallTime: now.timeIntervalSince1970)
      progress.step(
        step: step, totalSteps: totalSteps, epoch: epoch, epochs: epochNumber(afterSteps: totalSteps),
        loss: recon + kl, samplesPerSecond: sps, remainingSamples: (totalSteps - step) * config.batch,
        elapsed: elapsed)
    }
    window = (0, 0, 0)
    meter.reset()
    clock.restartWindow(at: step)
  }

  func logEvaluation(_ e: (elbo: Double, recon: Double, kl: Double), epoch: Int, elapsed: Double) throws {
    guard comm.isRoot else { return }
    let now = Date().timeIntervalSince1970
    try files.appendMetrics([
      ("step", "\(step)"), ("epoch", "\(epoch)"), ("test_elbo", json(e.elbo)),
      ("test_recon", json(e.recon)), ("test_kl", json(e.kl)),
      ("time_s", json((elapsed * 1000).rounded() / 1000)),
      ("wall_time", json((now * 1000).rounded() / 1000)),
    ])
    try tensorboardScalars([("elbo", json(e.elbo)), ("recon", json(e.recon)), ("kl", json(e.kl))], prefix: "test", wallTime: now)
    try tensorboardImages(wallTime: now)
    progress.evaluation(step: step, elbo: e.elbo, recon: e.recon, kl: e.kl)
  }

  func announce() {
    guard comm.isRoot else { return }
    let sharded = adamShards != nil ? ", sharded optimizer" : ""
    let micro = microShards.count > 1 ? ", \(microShards.count) micro-batches per rank" : ""
    progress.line(
      "training \(config.name): \(totalSteps) steps of \(config.batch) (\(batcher.stepsPerEpoch) per epoch), \(model.params.count) parameters, \(comm.size) rank(s)\(sharded)\(micro)")
    progress.line(environmentNote)
    if let m = comm as? MPICommunicator { progress.line("gradient exchange: \(m.transport)") }
  }

  /// The final evaluation, replica check and `final.safetensors`.
  func finish(_ clock: RunClock) throws -> TrainSummary {
    let elapsed = clock.elapsed
    let e = try evaluate()
    try logEvaluation(e, epoch: epochNumber(afterSteps: step), elapsed: elapsed)
    try replicas.checkParameters(model.params, what: "final parameters")
    let moments = try gatherMoments()
    if comm.isRoot, let moments {
      try saveCheckpoint(path: files.finalPath, window: [0, 0, 0], moments: moments)
      progress.finish()
      try files.closeMetrics()
      try tensorboard?.close()
    }
    let trained = Date().timeIntervalSince(clock.start)
    return TrainSummary(
      steps: step, testELBO: e.elbo, testRecon: e.recon, testKL: e.kl, seconds: elapsed,
      samplesPerSecond: trained > 0 ? Double(config.batch) * Double(step - clock.firstStep) / trained : 0,
      runDirectory: runDirectory)
  }

  /// `config.yaml` of the run directory: the resolved config, then the environment (for people).
  var configFileText: String {
    config.yaml + "# environment (informational)\nenvironment:\n  blas_kernel: \(BLASInfo.coreName)\n"
      + "  blas_threads: \(BLASInfo.threads)\n  world_size: \(comm.size)\n"
  }

  // MARK: - Checkpoints

  /// `window`: the metrics window's sums over all ranks (recon, kl, count).
  func saveCheckpoint(path: String, window w: [Double], moments: (m: Arena, v: Arena)) throws {
    let state = TrainingState(
      step: step, epoch: epochNumber(afterSteps: step), seed: config.seed, worldSize: comm.size,
      globalBatch: config.batch, adamStep: adam.step, dataChecksum: dataChecksum,
      windowRecon: w[0], windowKL: w[1], windowCount: Int(w[2]))
    do {
      try Checkpoint.save(
        path: path, params: model.params, moments: moments, state: state, modelJSON: config.modelJSON,
        configYAML: config.yaml)
    } catch let e as FileIOError {
      // Disk full, quota, read-only: stop rather than train on without checkpoints, and say
      // what is safe. The write was atomic, so every earlier checkpoint is intact.
      let newest = files.checkpoints.first { $0 != path }
      throw TrainError.io(
        "\(e.description); training stopped at step \(step). "
          + (newest.map { "The newest checkpoint, \($0), is intact: free space and continue with --resume auto" }
            ?? "No checkpoint of this run was written yet"))
    }
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

  /// Resume: rank 0 picks the newest valid checkpoint (auto) or reads the given one and
  /// broadcasts its bytes, so other hosts need no copy of the run directory. Fresh: refuse to
  /// overwrite an existing run.
  func restoreOrCheckFresh(resume: ResumeMode) throws {
    var bytes: [UInt8] = []
    var path: [UInt8] = []
    StartupWatchdog.waiting(for: comm.isRoot ? "this rank to read the checkpoint" : "rank 0's checkpoint (the resume broadcast)")
    if comm.isRoot {
      switch resume {
      case .none:
        if !files.checkpoints.isEmpty { throw TrainError.runExists(runDirectory) }
        files.removeMetrics()
      case .auto:
        if let best = files.newestValidCheckpoint(warn: Console.error) {
          bytes = best.bytes
          path = Array(best.path.utf8)
        } else {
          progress.line("no checkpoint in \(runDirectory); starting from step 0")
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

  /// What differs from the run the checkpoint was written by and still allows continuing it:
  /// the world size, and settings other than the model, seed, batch and data (which `restore`
  /// refuses). The curve continues, but not bit-identically to an unchanged run.
  func resumeNotes(_ c: LoadedCheckpoint) -> [String] {
    var notes: [String] = []
    if c.state.worldSize != comm.size {
      notes.append(
        "resuming a \(c.state.worldSize)-rank run on \(comm.size) rank(s): the curve continues but is not bit-identical to an unchanged run (summation order)")
    }
    // Length and cadence may change freely; anything else in `train` changes the numbers.
    let free: Set<String> = [
      "epochs", "steps", "checkpoint_every", "checkpoint_minutes", "eval_every", "keep_checkpoints", "log_every",
      "check_every",
    ]
    // The checkpoint's config read by the same loader and schema as a config file, so values
    // compare as what they mean (0.001 and 1e-3 agree), not as text.
    guard let before = try? ConfigLoader.parse(c.configYAML, file: c.path, defaultName: config.name) else {
      notes.append("\(c.path): its config cannot be read to compare settings; resuming with this run's")
      return notes
    }
    let changed = ConfigSchema.keys(in: "train").filter { !free.contains($0.name) }.compactMap { key -> String? in
      let a = key.yaml(of: before) ?? "(absent)", b = key.yaml(of: config) ?? "(absent)"
      return a == b ? nil : "\(key.path) \(a) → \(b)"
    }
    if !changed.isEmpty {
      let list = changed.joined(separator: ", ")
      notes.append("resuming with changed settings (\(list)): the curve continues but is not bit-identical to an unchanged run")
      resumeEvent = [("step", "\(step)"), ("event", "\"resume\""), ("changed", "\"\(list)\"")]
    }
    return notes
  }

  /// Rank 0 reads and checks the weights, every rank gets its bytes (no shared file system
  /// needed), and the parameters are replaced before the first step.
  func loadInitialWeights(_ path: String) throws {
    StartupWatchdog.waiting(for: comm.isRoot ? "this rank to read \(path)" : "rank 0's initial weights (the --init broadcast)")
    var bytes: [UInt8] = comm.isRoot ? try FileIO.readAll(path: path) : []
    try comm.broadcast(&bytes, root: 0)
    let file = try SafeTensors.decode(bytes, file: path)
    guard let weights = try Checkpoint.arena(file, "", layout: model.params.layout, required: true) else { return }
    try writeParameters { model.params.copy(from: weights) }
    progress.line("initial weights from \(path)")
  }

  func restore(_ c: LoadedCheckpoint) throws {
    func check(_ field: String, _ a: String, _ b: String) throws {
      if a != b { throw CheckpointError.mismatch(file: c.path, field: field, checkpoint: a, run: b) }
    }
    // The model: name the first differing field (model.zdim 20 vs 5), not two JSON objects.
    var saved = config
    saved.model = c.model
    for key in ConfigSchema.keys(in: "model") {
      try check(key.path, key.yaml(of: saved) ?? "(absent)", key.yaml(of: config) ?? "(absent)")
    }
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
      elapsedBefore = files.truncateMetrics(after: step, finished: step == totalSteps)
      progress.line("resuming from \(c.path) at step \(step)")
      for note in resumeNotes(c) { Console.error("note: " + note) }
    }
  }
}
