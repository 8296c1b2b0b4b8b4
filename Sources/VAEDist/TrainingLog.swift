import Formats
import Foundation
import TensorBoard
import VAE
import VAEData

extension JSONValue {
  /// The value as a number, for TensorBoard scalars (nil for text).
  var scalar: Double? {
    switch self {
    case .int(let i): Double(i)
    case .number(let x): x
    default: nil
    }
  }
}

/// Rounded to milliseconds (times in metrics.jsonl).
func milliseconds(_ seconds: Double) -> JSONValue { .number((seconds * 1000).rounded() / 1000) }

/// metrics.jsonl and TensorBoard event files (rank 0): the same scalars, and at every
/// evaluation a picture of the model (VAE: samples and reconstructions; conditional kinds:
/// completions of held-out digits).
extension TrainingRun {
  /// The metrics line of the steps since the last one: loss terms summed over ranks.
  func logWindow(epoch: Int, _ clock: RunClock) throws {
    let step = completedSteps
    // The gradient norm: shards add up; whole copies count once (rank 0's).
    let squares = trainer.exchange.updatedSlice != nil || comm.isRoot ? trainer.gradientSquares : 0
    let sums = try comm.allreduceSum(window.sums + [squares])
    let steps = step - window.clockStep
    let now = MonotonicClock.now()
    let sps = Double(config.batch * steps) / max(now - window.clockStart, 1e-9)
    let exchangeMs = (trainer.exchange.seconds - window.exchangeSecondsAtStart) / Double(max(steps, 1)) * 1000
    let recon = -sums[0] / sums[2] + (standardization?.logJacobian ?? 0), kl = sums[1] / sums[2]
    if comm.isRoot {
      let wall = Date().timeIntervalSince1970
      var fields: JSONObject = [
        "step": .int(step), "epoch": .int(epoch), "loss": .number(recon + kl), "recon": .number(recon), "kl": .number(kl),
      ]
      if config.objective.kind == .elbo && !config.objective.isPlainELBO {
        // The training objective at the logged step's weight: weighted_loss = kl_weight·kl + recon.
        let w = Double(trainer.model.klWeight)
        fields.append(contentsOf: ["kl_weight": .number(w), "weighted_loss": .number(w * kl + recon)])
      }
      fields.append(contentsOf: [
        "world_size": .int(comm.size), "lr": .number(Double(trainer.adam.config.lr)),
        "grad_norm": .number(sums[3].squareRoot()), "samples_per_sec": .number(sps.rounded()),
        "allreduce_ms": .number((exchangeMs * 1000).rounded() / 1000), "time_s": milliseconds(clock.elapsed),
        "wall_time": milliseconds(wall),
      ])
      try writingLogs {
        try files.appendMetrics(fields)
        try tensorboardScalars(fields, prefix: "train", wallTime: wall)
      }
      options.events(
        .progress(
          TrainingProgress(
            step: step, totalSteps: totalSteps, epoch: epoch, epochs: trainer.epochNumber(afterSteps: totalSteps),
            loss: recon + kl, samplesPerSecond: sps, elapsed: clock.elapsed,
            remainingSamples: (totalSteps - step) * config.batch)))
    }
    window.clearSums()
    window.restartClock(step: step, exchangeSeconds: trainer.exchange.seconds)
  }

  func logEvaluation(_ e: (elbo: Double, recon: Double, kl: Double), epoch: Int, elapsed: Double) throws {
    guard comm.isRoot else { return }
    let wall = Date().timeIntervalSince1970
    try writingLogs {
      try files.appendMetrics([
        "step": .int(completedSteps), "epoch": .int(epoch), "test_elbo": .number(e.elbo),
        "test_recon": .number(e.recon), "test_kl": .number(e.kl), "time_s": milliseconds(elapsed),
        "wall_time": milliseconds(wall),
      ])
      try tensorboardScalars(["elbo": .number(e.elbo), "recon": .number(e.recon), "kl": .number(e.kl)], prefix: "test", wallTime: wall)
      try tensorboardImages(wallTime: wall)
    }
    options.events(.evaluation(step: completedSteps, elbo: e.elbo, recon: e.recon, kl: e.kl))
  }

  /// Writes to metrics.jsonl or the TensorBoard file mid-run; a failure (a full disk, a file-size
  /// limit) stops the run with the file's error and what is safe: the step and the newest checkpoint.
  func writingLogs(_ body: () throws -> Void) throws {
    do {
      try body()
    } catch {
      throw TrainError.io("\(error); stopped at step \(completedSteps), \(newestCheckpointNote)")
    }
  }

  /// The metrics line of an agreed stop.
  func logStop(signal: Int32, elapsed: Double) throws {
    let name = [SIGINT: "SIGINT", SIGUSR1: "SIGUSR1", SIGTERM: "SIGTERM"][signal] ?? "signal \(signal)"
    try files.appendMetrics([
      "step": .int(completedSteps), "event": .string("stopped"), "signal": .string(name), "time_s": milliseconds(elapsed),
    ])
  }

  /// Rank 0 closes metrics.jsonl and the event file at the end of the run.
  func closeFiles() throws {
    guard comm.isRoot else { return }
    options.events(.finished)
    try files.closeMetrics()
    try tensorboard?.close()
  }

  /// What is being trained, on what: the first lines of a run's log.
  func announce() {
    let sharded = trainer.exchange.updatedSlice != nil ? ", sharded optimizer" : ""
    let k = trainer.microShards.count
    let micro = k > 1 ? ", \(k) micro-batches per rank" : ""
    options.events(.info(
      "training \(config.name): \(totalSteps) steps of \(config.batch) (\(trainer.batcher.stepsPerEpoch) per epoch), \(trainer.model.params.count) parameters, \(comm.size) rank(s)\(sharded)\(micro)"))
    options.events(.info(environmentNote))
    if comm.size > 1 { options.events(.info("gradient exchange: \(trainer.exchange.transport)")) }
    if let note = objectiveNote { options.events(.info(note)) }
    if config.objective.klWarmup > totalSteps {
      let end = config.objective.klWeight(step: totalSteps - 1)
      options.events(.warning(
        "train.kl_warmup (\(config.objective.klWarmup) steps) is longer than the run (\(totalSteps) steps): the KL weight ends at \(end), not beta \(config.objective.beta)"))
    }
  }

  /// The objective and learning-rate schedule when they are not the plain ELBO at a constant rate.
  var objectiveNote: String? {
    let o = config.objective, s = config.lrSchedule
    var parts: [String] = []
    if o.kind == .iwae {
      parts.append("importance-weighted bound, \(o.samples) samples per row" + (o.gradient == .dreg ? ", DReG gradient" : "")
        + " (metrics: loss is −bound, kl the bound's gap to the mean log-likelihood)")
    } else if !o.isPlainELBO {
      parts.append("ELBO with KL weight \(o.beta)" + (o.klWarmup > 0 ? ", warmed up over \(o.klWarmup) steps" : "")
        + (o.freeBits > 0 ? ", free bits \(o.freeBits) nats per dimension" : ""))
    }
    if s.shape != .constant || s.warmup > 0 {
      parts.append("learning rate \(s.shape.rawValue) from \(config.adam.lr)" + (s.warmup > 0 ? " after \(s.warmup) warm-up steps" : ""))
    }
    return parts.isEmpty ? nil : "objective: " + parts.joined(separator: "; ") + " (held-out metrics stay the ELBO)"
  }

  /// A line naming the BLAS kernel and its threads, and whether flush-to-zero is on.
  var environmentNote: String {
    "BLAS: OpenBLAS kernel \(BLASInfo.coreName), \(BLASInfo.threads) thread(s); flush-to-zero \(FloatingPointEnvironment.flushToZeroEnabled ? "on" : "off")"
  }

  /// `config.yaml` of the run directory: the resolved config, then the environment (for people).
  var configFileText: String {
    config.yaml + "# environment (informational)\nenvironment:\n  blas_kernel: \(BLASInfo.coreName)\n"
      + "  blas_threads: \(BLASInfo.threads)\n  world_size: \(comm.size)\n"
  }

  func openTensorBoard() throws {
    guard comm.isRoot, options.tensorboard else { return }
    tensorboard = try TensorBoardWriter(directory: runDirectory)
  }

  /// The `startup` event line: seconds from the command's start to the first step
  /// (`startup_s`), then the phases timed (`StartupTimes`).
  func startupFields() -> JSONObject {
    JSONObject(
      [("step", .int(completedSteps)), ("event", .string("startup")), ("world_size", .int(split.ranks)),
       ("micro_batches", .int(split.microBatches)), ("startup_s", milliseconds(MonotonicClock.now() - startup.since))]
        + startup.phases.map { ($0.name, milliseconds($0.seconds)) })
  }

  /// segments.jsonl's line for this start: the step it starts at, its split and transport, the
  /// wall-clock time, what it resumed (checkpoint, the split before, whether the bits are kept)
  /// and what launched it (`RunOptions.launch`).
  func segmentFields() -> JSONObject {
    var line = JSONObject(
      [("segment", .int(files.segmentCount + 1)), ("step", .int(completedSteps)), ("world_size", .int(split.ranks)),
       ("micro_batches", .int(split.microBatches)), ("transport", .string(trainer.exchange.transport)),
       ("started", .string(ISO8601DateFormatter().string(from: Date())))])
    for f in resumeRecord?.fields ?? [] where !["step", "event", "world_size", "micro_batches"].contains(f.key) {
      line.append(f.key, f.value)
    }
    line.append(contentsOf: options.launch)
    return line
  }

  /// The scalars of one metrics line, tagged `train/<field>` (JSON numbers only).
  func tensorboardScalars(_ line: JSONObject, prefix: String, wallTime: Double) throws {
    guard let tb = tensorboard else { return }
    for f in line.fields where !["step", "epoch", "world_size", "time_s", "wall_time"].contains(f.key) {
      if let x = f.value.scalar { tb.scalar("\(prefix)/\(f.key)", x, step: completedSteps, wallTime: wallTime) }
    }
    try flushTensorBoard(tb)
  }

  /// Images at an evaluation: 64 samples and 8 reconstructions (VAE), or 8 completions.
  func tensorboardImages(wallTime: Double) throws {
    guard let tb = tensorboard else { return }
    for (tag, image) in evaluationImages() {
      tb.image(tag, png: PNG.encodeGray(width: image.width, height: image.height, pixels: image.pixels),
               width: image.width, height: image.height, channels: 1, step: completedSteps, wallTime: wallTime)
    }
    try flushTensorBoard(tb)
  }

  /// Like metrics.jsonl, a failed write stops the run (one line naming the events file).
  func flushTensorBoard(_ tb: TensorBoardWriter) throws {
    do { try tb.flush() } catch let e as FileIOError { throw TrainError.io(e.description) }
  }

  func evaluationImages() -> [(String, (width: Int, height: Int, pixels: [UInt8]))] {
    let cfg = config.model
    let (h, w) = ModelImages.shape(inputSize: cfg.inputSize)
    let n = cfg.inputSize
    let shown = min(8, data.test.count)
    let rows = Array(testX.prefix(shown * n))
    if cfg.kind == .vae {
      let model = VAEModel(config: cfg, maxBatch: 64, params: trainer.model.params)
      let z = Buffer(64 * cfg.zdim)
      ModelImages.latentSamples(count: 64, dim: cfg.zdim, seed: 0, into: z.ptr)
      model.decode(UnsafePointer(z.ptr), batch: 64)
      let samples = PNG.grid(images: ModelImages.decoded(model, rows: 64), rows: h, cols: w, gridColumns: 8)
      rows.withUnsafeBufferPointer { model.encode($0.baseAddress!, batch: shown) }
      model.decode(UnsafePointer(model.mu.ptr), batch: shown)
      let originals = (0..<shown).map { Array(rows[($0 * n)..<(($0 + 1) * n)]) }
      let tiles = ModelImages.pairedRows(
        originals: originals, reconstructions: ModelImages.decoded(model, rows: shown), columns: shown)
      return [("samples", samples), ("reconstructions", PNG.grid(images: tiles, rows: h, cols: w, gridColumns: shown))]
    }
    guard let cond = config.conditioning else { return [] }
    let completer = Completer(config: cfg, params: trainer.model.params, chunk: shown)
    let draws = cfg.kind == .cvae ? 3 : 1
    let means = (0..<draws).map { completer.means(rows, count: shown, draw: $0) }
    let tiles = cond.completionTiles(rows: rows, count: shown, completions: means)
    return [("completions", PNG.grid(images: tiles, rows: h, cols: w, gridColumns: 1 + draws))]
  }
}
