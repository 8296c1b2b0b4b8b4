import Formats
import Foundation
import VAE
import VAEData

/// Checkpoints of a run: the one save path (always checked for finite parameters first),
/// resume, and initial weights.
extension TrainingRun {
  /// The end of a stop line: which checkpoint is the newest ("so …/step-N.safetensors is the
  /// newest checkpoint"), or that none was written yet.
  var newestCheckpointNote: String {
    files.checkpoints.first.map { "so \($0) is the newest checkpoint" } ?? "and no checkpoint of this run was written yet"
  }

  /// Why a checkpoint is written: every N steps or minutes, an agreed stop, or the end.
  enum SaveReason {
    case periodic
    case stop(signal: Int32, elapsed: Double)
    case final
  }

  /// The one way a checkpoint is written (collective): the parameters are checked to be finite,
  /// Adam's moments and the metrics window are gathered to rank 0, which writes the file
  /// (`checkpoints/step-N` or `final.safetensors`) and prunes old ones; a stop also logs why.
  func save(_ reason: SaveReason) throws {
    try checkDataUnchanged()
    try checkParametersFinite()
    let moments = try gatherMoments()
    let w = try comm.allreduceSum(window.sums)
    let isFinal: Bool
    if case .final = reason { isFinal = true } else { isFinal = false }
    if comm.isRoot, let moments {
      try saveCheckpoint(path: isFinal ? files.finalPath : files.stepPath(completedSteps), window: w, moments: moments)
      if !isFinal { files.pruneCheckpoints(keep: config.keepCheckpoints) }
      if case .stop(let signal, let elapsed) = reason { try logStop(signal: signal, elapsed: elapsed) }
    }
    lastCheckpointTime = MonotonicClock.now()
    lastSavedStep = completedSteps
  }

  /// A data file rewritten in place (or truncated, before a read faulted) since the run mapped
  /// it: the steps since may have read other data, so nothing more is saved.
  func checkDataUnchanged() throws {
    do {
      try data.checkFilesUnchanged()
    } catch {
      throw TrainError.dataChanged(
        "\(error); stopped at step \(completedSteps) before saving, \(newestCheckpointNote)")
    }
  }

  /// An update from a non-finite gradient (whose loss was still finite) must not become the
  /// newest checkpoint.
  func checkParametersFinite() throws {
    let params = trainer.model.params
    guard let bad = params.data.firstIndex(where: { !$0.isFinite }) else { return }
    let name = params.layout.specs.indices.first { params.layout.range(of: $0).contains(bad) }
      .map { params.layout.specs[$0].name } ?? "?"
    throw TrainError.nonFinite(
      "step \(completedSteps): parameter \(name) is not finite after the update (the gradient was not finite); stopped before saving, \(newestCheckpointNote)")
  }

  /// `window`: the metrics window's sums over all ranks (recon, kl, count).
  func saveCheckpoint(path: String, window w: [Double], moments: (m: Arena, v: Arena)) throws {
    let state = TrainingState(
      step: completedSteps, epoch: trainer.epochNumber(afterSteps: completedSteps), seed: config.seed,
      worldSize: comm.size, shards: split.shards, globalBatch: config.batch, adamStep: trainer.adam.step, dataChecksum: dataChecksum,
      windowRecon: w[0], windowKL: w[1], windowCount: Int(w[2]))
    do {
      try Checkpoint.save(
        path: path, params: trainer.model.params, moments: moments, state: state, modelJSON: config.modelJSON,
        configYAML: config.yaml, standardization: standardization)
    } catch let e as FileIOError {
      // Disk full, quota, read-only: stop rather than train on without checkpoints, and say
      // what is safe. The write was atomic, so every earlier checkpoint is intact.
      let newest = files.checkpoints.first { $0 != path }
      throw TrainError.io(
        "\(e.description); training stopped at step \(completedSteps). "
          + (newest.map { "The newest checkpoint, \($0), is intact: free space and resume from it" }
            ?? "No checkpoint of this run was written yet"))
    }
  }

  /// Adam's moments of the whole arena, for a checkpoint: rank 0 gets them (the others nil).
  /// With the sharded optimizer each rank holds only its slice, so the slices are gathered to
  /// rank 0 into arenas allocated for this checkpoint; checkpoints keep one (whole) format.
  func gatherMoments() throws -> (m: Arena, v: Arena)? {
    let adam = trainer.adam
    if adam.ownsAll { return (adam.m, adam.v) }
    let layout = trainer.model.params.layout
    let full = comm.isRoot ? (m: Arena(layout: layout), v: Arena(layout: layout)) : nil
    try trainer.exchange.gatherToRoot(UnsafeBufferPointer(adam.mSlice), into: full?.m.data)
    try trainer.exchange.gatherToRoot(UnsafeBufferPointer(adam.vSlice), into: full?.v.data)
    return full
  }

  /// Resume: rank 0 picks the newest valid checkpoint (auto) or reads the given one and
  /// broadcasts its bytes, so other hosts need no copy of the run directory (nor the file);
  /// every rank decodes them. Fresh: refuse to overwrite an existing run. Runs before the
  /// Trainer is built, because the checkpoint's split decides the micro-batches.
  static func readResumeCheckpoint(
    _ resume: ResumeMode, files: RunDirectory, comm: Communicator, events: (RunEvent) -> Void
  ) throws -> LoadedCheckpoint? {
    var bytes: [UInt8] = []
    var path: [UInt8] = []
    events(.waiting(comm.isRoot ? "this rank to read the checkpoint" : "rank 0's checkpoint (the resume broadcast)"))
    if comm.isRoot {
      switch resume {
      case .none:
        if !files.checkpoints.isEmpty { throw TrainError.runExists(files.path) }
        files.removeMetrics()
      case .auto:
        if let best = files.newestValidCheckpoint(warn: { events(.warning($0)) }) {
          (bytes, path) = (best.bytes, Array(best.path.utf8))
        } else {
          events(.info("no checkpoint in \(files.path); starting from step 0"))
        }
      case .path(let p):
        (bytes, path) = (try FileIO.readAll(path: p), Array(p.utf8))
      }
    }
    if resume == .none { return nil }
    try comm.broadcast(&path, root: 0)
    try comm.broadcast(&bytes, root: 0)
    if bytes.isEmpty { return nil }
    return try Checkpoint.load(bytes: bytes, path: String(decoding: path, as: UTF8.self))
  }

  /// This run's split: the given micro-batches, or (auto) the resumed checkpoint's shards kept
  /// when this run's ranks divide them.
  static func batchSplit(microBatches: Int?, resuming c: LoadedCheckpoint?, ranks: Int, batch: Int) -> BatchSplit {
    if let k = microBatches { return BatchSplit(ranks: ranks, microBatches: k) }
    // Another global batch is refused by `restore`, naming it; until then, one micro-batch.
    guard let c, c.state.globalBatch == batch else { return BatchSplit(ranks: ranks, microBatches: 1) }
    return .resuming(c.savedSplit, on: ranks)
  }

  /// Rank 0 reads and checks the weights, every rank gets its bytes (no shared file system
  /// needed), and the parameters are replaced before the first step.
  func loadInitialWeights(_ path: String) throws {
    options.events(.waiting(comm.isRoot ? "this rank to read \(path)" : "rank 0's initial weights (broadcast)"))
    var bytes: [UInt8] = comm.isRoot ? try FileIO.readAll(path: path) : []
    try comm.broadcast(&bytes, root: 0)
    let file = try SafeTensors.decode(bytes, file: path)
    let params = trainer.model.params
    guard let weights = try Checkpoint.arena(file, "", layout: params.layout, required: true) else { return }
    try trainer.exchange.writeParameters(isRoot: comm.isRoot) { params.copy(from: weights) }
    if comm.isRoot { options.events(.info("initial weights from \(path)")) }
  }

  func restore(_ c: LoadedCheckpoint) throws {
    try checkCompatible(c)
    guard let m = c.adamM, let v = c.adamV else {
      throw CheckpointError.badMetadata(file: c.path, field: "adam.m.*", expected: "Adam moments to resume training")
    }
    guard c.state.step <= totalSteps else {
      throw TrainError.badSetting(
        "\(c.path): the checkpoint is at step \(c.state.step), past this run's \(totalSteps) steps")
    }
    let params = trainer.model.params
    try trainer.exchange.writeParameters(isRoot: comm.isRoot) { params.copy(from: c.params) }
    trainer.adam.load(m: m, v: v)
    trainer.adam.step = c.state.adamStep
    trainer.completedSteps = c.state.step
    // The saved window holds every rank's sums: rank 0 carries them, the others start empty.
    if comm.isRoot { (window.recon, window.kl, window.count) = (c.state.windowRecon, c.state.windowKL, c.state.windowCount) }
    guard comm.isRoot else { return }
    elapsedBefore = try files.truncateMetrics(after: c.state.step, finished: c.state.step == totalSteps)
    options.events(.info("resuming from \(c.path) at step \(c.state.step)"))
    for note in resumeNotes(c) { options.events(note) }
  }

  /// The model, seed, batch and data must be the checkpoint's; the first differing field is
  /// named (model.zdim 20 vs 5), not two JSON objects.
  func checkCompatible(_ c: LoadedCheckpoint) throws {
    func check(_ field: String, _ a: String, _ b: String) throws {
      if a != b { throw CheckpointError.mismatch(file: c.path, field: field, checkpoint: a, run: b) }
    }
    var saved = config
    saved.model = c.model
    for key in ConfigSchema.keys(in: "model") {
      try check(key.path, key.yaml(of: saved) ?? "(absent)", key.yaml(of: config) ?? "(absent)")
    }
    try check("seed", String(c.state.seed), String(config.seed))
    try check("global batch", String(c.state.globalBatch), String(config.batch))
    try check("data checksum", hexCRC(c.state.dataChecksum), hexCRC(dataChecksum))
  }

  /// What differs from the run the checkpoint was written by and still allows continuing it:
  /// the split of the batch, and settings other than the model, seed, batch and data (which
  /// `restore` refuses). Sets the `resume` metrics line, which records each segment's split.
  func resumeNotes(_ c: LoadedCheckpoint) -> [RunEvent] {
    var notes: [RunEvent] = []
    let saved = c.savedSplit
    var sameBits = saved.addsLike(split, batch: config.batch)
    var fields: [(String, JSONValue)] = [
      ("step", .int(c.state.step)), ("event", .string("resume")), ("checkpoint", .string(c.path)), ("world_size", .int(split.ranks)),
      ("micro_batches", .int(split.microBatches)), ("from_world_size", .int(saved.ranks)),
      ("from_micro_batches", .int(saved.microBatches)),
    ]
    var changedSettings = false
    defer {
      resumeRecord = JSONObject(fields + [("same_bits", .bool(sameBits))])
      // metrics.jsonl says when the split or a setting changed; an unchanged resume leaves
      // the uninterrupted run's lines.
      if saved != split || changedSettings { resumeEvent = resumeRecord }
    }
    if let note = splitNote(saved) { notes.append(note) }
    // Length and cadence may change freely; anything else in `train` changes the numbers.
    let free: Set<String> = [
      "epochs", "steps", "checkpoint_every", "checkpoint_minutes", "eval_every", "keep_checkpoints", "log_every",
      "check_every",
    ]
    // The checkpoint's config read by the same loader and schema as a config file, so values
    // compare as what they mean (0.001 and 1e-3 agree), not as text.
    guard let before = try? ConfigLoader.parse(c.configYAML, file: c.path, defaultName: config.name) else {
      notes.append(.warning("\(c.path): its config cannot be read to compare settings; resuming with this run's"))
      (sameBits, changedSettings) = (false, true)
      return notes
    }
    let changed = ConfigSchema.keys(in: "train").filter { !free.contains($0.name) }.compactMap { key -> String? in
      let a = key.yaml(of: before) ?? "(absent)", b = key.yaml(of: config) ?? "(absent)"
      return a == b ? nil : "\(key.path) \(a) → \(b)"
    }
    if !changed.isEmpty {
      let list = changed.joined(separator: ", ")
      notes.append(.warning("resuming with changed settings (\(list)): the curve continues but is not bit-identical to an unchanged run"))
      fields.append(("changed", .string(list)))
      (sameBits, changedSettings) = (false, true)
    }
    return notes
  }

  /// What a change of split means for the bits (nil when the split is the checkpoint's). The
  /// step's bits follow the parts' rows and the order they are added in (`BatchSplit`).
  func splitNote(_ saved: BatchSplit) -> RunEvent? {
    guard saved != split else { return nil }
    let from = "resuming a run of \(saved) on \(split)"
    if saved.addsLike(split, batch: config.batch) {
      return .info("\(from): the same \(split.shards) parts of each global batch, added in the same order, so it continues bit for bit")
    }
    let keeping = BatchSplit.rankCounts(keeping: saved.shards).filter {
      saved.addsLike(BatchSplit(ranks: $0, microBatches: saved.shards / $0), batch: config.batch)
    }
    let ranks = keeping.map(String.init).joined(separator: keeping.count == 2 ? " or " : ", ")
    let why = saved.shards == split.shards
      ? "the same \(split.shards) parts of each global batch, but added in another order"
      : "each global batch is split into \(split.shards) part(s) instead of \(saved.shards)"
    return .warning(
      "\(from): \(why), so the curve continues (same global batch of \(config.batch)) but is not bit-identical to an unchanged run; to keep its bits, resume on \(ranks) rank(s) with the micro-batch count left to auto")
  }
}

extension LoadedCheckpoint {
  /// The split of the run that wrote it.
  var savedSplit: BatchSplit { BatchSplit(ranks: state.worldSize, microBatches: state.shards / state.worldSize) }
}
