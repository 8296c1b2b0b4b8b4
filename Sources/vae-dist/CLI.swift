import ArgumentParser
import Formats
import Foundation
import VAE
import VAEData
import VAEDist

@main
struct VAEDistCLI: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vae-dist",
    abstract: "Train, evaluate and sample Variational Autoencoders on MNIST-like data.",
    discussion: """
      Single process:   vae-dist train --config configs/mnist.yaml
      Many processes:   mpirun -np 8 vae-dist train --config configs/mnist.yaml
      Then:             vae-dist eval --checkpoint runs/mnist/final.safetensors
      """,
    subcommands: [Train.self, Eval.self, Sample.self, Reconstruct.self, Info.self, Bench.self, BLAS.self])

  /// One-line errors: argument errors keep only their first line plus a pointer to --help;
  /// our own errors are printed as they are. Help and version exit 0 with full text.
  static func main() {
    var command: ParsableCommand
    do {
      command = try parseAsRoot()
    } catch {
      fail(error, helpHint: true)
    }
    do {
      try command.run()
    } catch {
      fail(error, helpHint: false)
    }
  }

  static func fail(_ error: Error, helpHint: Bool) -> Never {
    if case TrainError.peerFailed = error {
      // Another rank prints the reason and aborts the job; give it time, then leave quietly.
      sleep(30)
      Foundation.exit(1)
    }
    let code = exitCode(for: error)
    if code == .success { exit(withError: error) }
    let message: String
    if error is ExitCode {
      exit(withError: error)
    } else if !(error is ValidationError), String(describing: type(of: error)) != "CommandError" {
      message = String(describing: error)
    } else {
      let full = fullMessage(for: error)
      let first = full.split(separator: "\n").first.map(String.init) ?? full
      let names = configuration.subcommands.map { $0._commandName }
      let sub = CommandLine.arguments.dropFirst().first { names.contains($0) }
      message = first.replacingOccurrences(of: "Error: ", with: "")
        + " (see 'vae-dist \(sub.map { "\($0) " } ?? "")--help')"
    }
    Console.error("vae-dist: error: " + Console.rankPrefix + message.replacingOccurrences(of: "\n", with: " "))
    Foundation.exit(code.rawValue == 0 ? 1 : code.rawValue)
  }
}

/// Options shared by commands that read data.
struct DataOptions: ParsableArguments {
  @Option(name: .long, help: ArgumentHelp(
    "Data directory holding mnist/ (and fashion-mnist/). Default: $VAE_DIST_DATA, else ./data.",
    valueName: "dir"))
  var data: String?
}

func loadData(_ config: RunConfig, dataFlag: String?) throws -> DataSplits {
  let dir = DatasetRegistry.resolveDataDirectory(flag: dataFlag)
  return try DatasetRegistry.load(name: config.dataset, dataDirectory: dir, trainLimit: config.trainLimit)
}

func applyThreads(_ threads: Int?) throws {
  if let threads {
    guard threads >= 1 else { throw ConfigError("--threads: expected a positive integer, got \(threads)") }
    BLASInfo.setThreads(threads)
  }
}

// MARK: - train

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a VAE from a config file; flags override the file.",
    discussion: """
      Writes the run directory (default runs/<config name>): config.yaml, metrics.jsonl, \
      checkpoints/step-NNNNNNNN.safetensors and final.safetensors, and prints the held-out ELBO.
      Example: vae-dist train --config configs/mnist.yaml --epochs 2 --out runs/try
      """)

  @Option(name: .long, help: ArgumentHelp("YAML config (see configs/ and the README).", valueName: "file"))
  var config: String
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, help: ArgumentHelp("Run directory. Default: runs/<config name>.", valueName: "dir"))
  var out: String?
  @Option(name: .long, help: "Latent dimensions (1…10000); overrides model.zdim.")
  var zdim: Int?
  @Option(name: .long, help: "Passes over the training set; overrides train.epochs (and clears train.steps).")
  var epochs: Int?
  @Option(name: .long, help: "Optimizer steps in total; overrides train.steps / train.epochs.")
  var steps: Int?
  @Option(name: .long, help: "Global batch size (split across MPI ranks); overrides train.batch.")
  var batch: Int?
  @Option(name: .long, help: "Adam learning rate; overrides train.lr.")
  var lr: Double?
  @Option(name: .long, help: "Random seed (init, shuffle, binarisation, noise); overrides train.seed.")
  var seed: Int?
  @Option(name: .long, help: "Use only the first N training images; overrides data.train_limit.")
  var trainLimit: Int?
  @Option(name: .long, help: "Held-out ELBO every N steps (0: only at the end); overrides train.eval_every.")
  var evalEvery: Int?
  @Option(name: .long, help: "Checkpoint every N steps (0: only final); overrides train.checkpoint_every.")
  var checkpointEvery: Int?
  @Option(name: .long, help: "Metrics line every N steps; overrides train.log_every.")
  var logEvery: Int?
  @Option(name: .long, help: ArgumentHelp(
    "'auto' continues from the newest valid checkpoint in --out; or a checkpoint file.",
    valueName: "auto|path"))
  var resume: String?
  @Option(name: .long, help: "OpenBLAS threads (default: OpenBLAS's own choice, usually all cores).")
  var threads: Int?
  @Flag(name: .long, help: "Print only the final result.")
  var quiet = false
  @Option(name: .long, help: ArgumentHelp(
    "auto: MPI when started by mpirun/srun, else one process without MPI; or force local/mpi.",
    valueName: "auto|local|mpi"))
  var comm: String = "auto"
  @Flag(inversion: .prefixedNo, help: ArgumentHelp(
    "Under MPI: each rank runs Adam on 1/P of the parameters (ZeRO stage 1); bit-identical results, less work and memory. On by default; --no-shard-optimizer runs the whole Adam on every rank."))
  var shardOptimizer = true
  @Option(name: .long, help: ArgumentHelp(
    "Gradient accumulation: each rank splits its share of every global batch into K micro-batches, run one after another and summed; activations need 1/K of the memory and the step is the same up to summation order (K on one process reproduces K ranks on one node bit for bit).",
    valueName: "K"))
  var microBatches: Int = 1
  @Option(name: .long, help: "Under MPI: compare replicas' parameter checksums every N steps (0: only at start and end); overrides train.check_every.")
  var checkEvery: Int?
  @Option(name: .long, help: ArgumentHelp("Testing: RANK:STEP perturbs one replica.", visibility: .hidden))
  var debugPerturb: String?

  func resolvedConfig() throws -> RunConfig {
    var c = try ConfigLoader.load(path: config)
    func check(_ v: Int?, _ flag: String, _ r: ClosedRange<Int>) throws {
      if let v, !r.contains(v) {
        throw ConfigError("--\(flag): expected an integer from \(r.lowerBound) to \(r.upperBound), got \(v)")
      }
    }
    try check(zdim, "zdim", 1...10_000)
    try check(epochs, "epochs", 1...1_000_000)
    try check(steps, "steps", 1...1_000_000_000)
    try check(batch, "batch", 1...1_000_000)
    try check(seed, "seed", 0...Int.max)
    try check(trainLimit, "train-limit", 1...100_000_000)
    try check(evalEvery, "eval-every", 0...Int.max)
    try check(checkpointEvery, "checkpoint-every", 0...Int.max)
    try check(logEvery, "log-every", 1...Int.max)
    try check(checkEvery, "check-every", 0...Int.max)
    if epochs != nil && steps != nil { throw ConfigError("--epochs and --steps: give one of them, not both") }
    if let zdim { c.model.zdim = zdim }
    if let epochs { c.epochs = epochs; c.steps = nil }
    if let steps { c.steps = steps; c.epochs = nil }
    if let batch { c.batch = batch }
    if let lr {
      guard lr > 0, lr.isFinite else { throw ConfigError("--lr: expected a number > 0, got \(lr)") }
      c.adam.lr = Float(lr)
    }
    if let seed { c.seed = UInt64(seed) }
    if let trainLimit { c.trainLimit = trainLimit }
    if let evalEvery { c.evalEvery = evalEvery }
    if let checkpointEvery { c.checkpointEvery = checkpointEvery }
    if let logEvery { c.logEvery = logEvery }
    if let checkEvery { c.checkEvery = checkEvery }
    return c
  }

  func run() throws {
    guard let mode = CommMode(rawValue: comm) else {
      throw ConfigError("--comm: expected auto, local or mpi, got '\(comm)'")
    }
    var perturb: (rank: Int, step: Int)?
    if let d = debugPerturb {
      let parts = d.split(separator: ":").compactMap { Int($0) }
      guard parts.count == 2 else { throw ConfigError("--debug-perturb: expected RANK:STEP, got '\(d)'") }
      perturb = (parts[0], parts[1])
    }
    let comm = try mode.makeCommunicator()
    let c = try resolvedConfig()
    if threads == nil, comm.size > 1, ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil {
      // Ranks ≥ cores: one BLAS thread per rank (two per rank measured ~20% slower here).
      let local = Int(ProcessInfo.processInfo.environment["OMPI_COMM_WORLD_LOCAL_SIZE"] ?? "") ?? comm.size
      BLASInfo.setThreads(max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
    }
    try applyThreads(threads)
    let resumeMode: ResumeMode =
      switch resume {
      case nil: .none
      case "auto": .auto
      case let p?: .path(p)
      }
    if case .path(let p) = resumeMode, !FileManager.default.fileExists(atPath: p) {
      throw ConfigError("--resume: \(p) does not exist (give 'auto' or a checkpoint file)")
    }
    let data = try loadData(c, dataFlag: dataOptions.data)
    let outDir = out ?? "runs/\(c.name)"
    let trainer = try Trainer(
      config: c, data: data, comm: comm, runDirectory: outDir,
      output: OutputOptions(quiet: quiet || !comm.isRoot),
      parallel: ParallelOptions(shardOptimizer: shardOptimizer, perturb: perturb, microBatches: microBatches))
    let s = try trainer.run(resume: resumeMode)
    defer { comm.finalize() }
    if comm.isRoot {
      Console.out(
        String(format: "held-out ELBO %.2f nats/image after %d steps (%.0f s, %.0f samples/s); checkpoint %@/final.safetensors",
               s.testELBO, s.steps, s.seconds, s.samplesPerSecond, outDir))
    }
  }
}

// MARK: - checkpoint-based commands

func loadCheckpoint(_ path: String) throws -> (LoadedCheckpoint, RunConfig?) {
  let c = try Checkpoint.load(path: path)
  let run = c.configYAML.isEmpty ? nil : try? ConfigLoader.parse(c.configYAML, file: path, defaultName: "checkpoint")
  return (c, run)
}

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Held-out ELBO of a checkpoint (and, with --iw K, the importance-weighted bound).",
    discussion: """
      The test set is binarised once with a fixed seed, so numbers are comparable across runs.
      Example: vae-dist eval --checkpoint runs/mnist/final.safetensors --iw 5000 --limit 1000
      """)
  @Option(name: .long, help: ArgumentHelp("A .safetensors checkpoint written by vae-dist train.", valueName: "path"))
  var checkpoint: String
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, help: "Samples of z per image for the ELBO (averaged).")
  var samples: Int = 1
  @Option(name: .long, help: "Also compute the importance-weighted bound with K samples per image (Burda et al. 2016).")
  var iw: Int?
  @Option(name: .long, help: "Evaluate only the first N test images.")
  var limit: Int?
  @Flag(name: .long, help: "Use z = μ (ε = 0) instead of sampling: a deterministic check, not a bound.")
  var meanZ = false
  @Option(name: .long, help: "OpenBLAS threads.")
  var threads: Int?
  @Flag(name: .long, help: "Print one JSON object instead of text.")
  var json = false

  func run() throws {
    guard samples >= 1 else { throw ConfigError("--samples: expected a positive integer, got \(samples)") }
    if let iw, iw < 1 { throw ConfigError("--iw: expected a positive integer, got \(iw)") }
    if let limit, limit < 1 { throw ConfigError("--limit: expected a positive integer, got \(limit)") }
    try applyThreads(threads)
    FloatingPointEnvironment.enableFlushToZero()
    let (ck, runConfig) = try loadCheckpoint(checkpoint)
    guard let rc = runConfig else { throw ConfigError("\(checkpoint): metadata has no usable 'config'") }
    let data = try loadData(rc, dataFlag: dataOptions.data)
    guard data.test.pixelsPerImage == ck.model.inputSize else {
      throw ConfigError("\(checkpoint): the model expects \(ck.model.inputSize) pixels but \(rc.dataset) has \(data.test.pixelsPerImage)")
    }
    let count = min(limit ?? data.test.count, data.test.count)
    let testX = Batcher.heldOut(data.test, binarization: rc.binarize, limit: count)
    let est = Estimator(config: ck.model, params: ck.params)
    let noise: EvalNoise = meanZ ? .zero : .sampled(CounterRNG(seed: heldOutBinarizationSeed))
    let start = Date()
    let t = testX.withUnsafeBufferPointer {
      est.elbo(x: $0.baseAddress!, count: count, firstIndex: 0, samples: meanZ ? 1 : samples, noise: noise)
    }
    let recon = -t.recon / Double(count), kl = t.kl / Double(count)
    var fields: [(String, String)] = [
      ("checkpoint", "\"\(checkpoint)\""), ("step", "\(ck.state.step)"), ("images", "\(count)"),
      ("elbo", "\(-(recon + kl))"), ("recon", "\(recon)"), ("kl", "\(kl)"),
      ("samples", "\(meanZ ? 0 : samples)"),
    ]
    var iwBound: Double?
    if let iw {
      var out = [Double](repeating: 0, count: count)
      testX.withUnsafeBufferPointer { x in
        out.withUnsafeMutableBufferPointer { o in
          est.importanceWeighted(x: x.baseAddress!, count: count, firstIndex: 0, samples: iw,
                                 rng: CounterRNG(seed: heldOutBinarizationSeed), out: o.baseAddress!)
        }
      }
      let b = out.reduce(0, +) / Double(count)
      iwBound = b
      fields += [("iw_k", "\(iw)"), ("iw_bound", "\(b)")]
    }
    fields.append(("seconds", String(format: "%.3f", Date().timeIntervalSince(start))))
    if json {
      Console.out("{" + fields.map { "\"\($0.0)\": \($0.1)" }.joined(separator: ", ") + "}")
    } else {
      Console.out(String(format: "%@ (step %d), %d test images: ELBO %.4f nats/image (reconstruction %.4f, KL %.4f)%@",
                         checkpoint, ck.state.step, count, -(recon + kl), recon, kl, meanZ ? " with z = μ" : ""))
      if let b = iwBound, let k = iw {
        Console.out(String(format: "importance-weighted bound, K = %d: %.4f nats/image", k, b))
      }
    }
  }
}

/// Decoder outputs as [0,1] images: Bernoulli means σ(logit), Gaussian means clamped.
func images(from model: VAEModel, rows: Int) -> [[Float]] {
  let n = model.config.inputSize
  return (0..<rows).map { r in
    (0..<n).map { j in
      let v = model.logits.ptr[r * n + j]
      switch model.config.likelihood {
      case .bernoulli: return 1 / (1 + Foundation.exp(-v))
      case .gaussian: return min(max(v, 0), 1)
      }
    }
  }
}

func squareSide(_ inputSize: Int) -> (Int, Int) {
  let s = Int(Double(inputSize).squareRoot().rounded())
  return s * s == inputSize ? (s, s) : (1, inputSize)
}

func writeGrid(_ imgs: [[Float]], inputSize: Int, columns: Int, to path: String) throws {
  let (h, w) = squareSide(inputSize)
  let g = PNG.grid(images: imgs, rows: h, cols: w, gridColumns: columns)
  try PNG.writeGray(path: path, width: g.width, height: g.height, pixels: g.pixels)
}

/// Φ⁻¹(p) by bisection on erfc (plenty fast for a few hundred grid points).
func inverseNormalCDF(_ p: Double) -> Double {
  var lo = -10.0, hi = 10.0
  for _ in 0..<100 {
    let mid = (lo + hi) / 2
    if 0.5 * erfc(-mid / 2.0.squareRoot()) < p { lo = mid } else { hi = mid }
  }
  return (lo + hi) / 2
}

struct Sample: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Decode z ~ N(0, I) into a PNG grid of generated images.",
    discussion: """
      Pixels are the decoder's means (Bernoulli probabilities). With --manifold and a 2-D latent \
      space, draws the tutorial-style grid of decoded points at evenly spaced quantiles of N(0, I).
      Example: vae-dist sample --checkpoint runs/mnist/final.safetensors --n 64 --out samples.png
      """)
  @Option(name: .long, help: ArgumentHelp("A .safetensors checkpoint.", valueName: "path"))
  var checkpoint: String
  @Option(name: .long, help: "Number of samples.")
  var n: Int = 64
  @Option(name: .long, help: ArgumentHelp("Output PNG file.", valueName: "file.png"))
  var out: String
  @Option(name: .long, help: "Seed for z.")
  var seed: Int = 0
  @Flag(name: .long, help: "For zdim = 2: decode a --grid × --grid lattice of the latent space.")
  var manifold = false
  @Option(name: .long, help: "Lattice side for --manifold.")
  var grid: Int = 20

  func run() throws {
    guard (1...10_000).contains(n) else { throw ConfigError("--n: expected 1…10000, got \(n)") }
    guard (2...100).contains(grid) else { throw ConfigError("--grid: expected 2…100, got \(grid)") }
    guard seed >= 0 else { throw ConfigError("--seed: expected a non-negative integer, got \(seed)") }
    let (ck, _) = try loadCheckpoint(checkpoint)
    let d = ck.model.zdim
    if manifold && d != 2 {
      throw ConfigError("--manifold: needs a model with zdim = 2, but \(checkpoint) has zdim = \(d)")
    }
    let count = manifold ? grid * grid : n
    let model = VAEModel(config: ck.model, maxBatch: count, params: ck.params)
    let z = Buffer(count * d)
    if manifold {
      for i in 0..<grid {
        for j in 0..<grid {
          let r = i * grid + j
          z.ptr[r * 2] = Float(inverseNormalCDF((Double(j) + 0.5) / Double(grid)))
          z.ptr[r * 2 + 1] = Float(inverseNormalCDF(1 - (Double(i) + 0.5) / Double(grid)))
        }
      }
    } else {
      let rng = CounterRNG(seed: UInt64(seed))
      for r in 0..<count {
        var s = rng.stream(.sample, index: UInt64(r))
        for j in 0..<d { z.ptr[r * d + j] = s.nextNormal() }
      }
    }
    model.decode(UnsafePointer(z.ptr), batch: count)
    let columns = manifold ? grid : Int(Double(count).squareRoot().rounded(.up))
    try writeGrid(images(from: model, rows: count), inputSize: ck.model.inputSize, columns: columns, to: out)
    Console.out("wrote \(count) \(manifold ? "latent-grid images" : "samples") to \(out)")
  }
}

struct Reconstruct: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Encode test images and decode them again: a PNG with originals and reconstructions.",
    discussion: """
      Rows alternate: test images as the model sees them (binarised with the fixed held-out seed \
      when the run binarised), then their reconstructions from z = μ(x).
      Example: vae-dist reconstruct --checkpoint runs/mnist/final.safetensors --out recon.png
      """)
  @Option(name: .long, help: ArgumentHelp("A .safetensors checkpoint.", valueName: "path"))
  var checkpoint: String
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, help: "Number of test images (from the start of the test set).")
  var n: Int = 32
  @Option(name: .long, help: ArgumentHelp("Output PNG file.", valueName: "file.png"))
  var out: String

  func run() throws {
    guard (1...10_000).contains(n) else { throw ConfigError("--n: expected 1…10000, got \(n)") }
    let (ck, runConfig) = try loadCheckpoint(checkpoint)
    guard let rc = runConfig else { throw ConfigError("\(checkpoint): metadata has no usable 'config'") }
    let data = try loadData(rc, dataFlag: dataOptions.data)
    let count = min(n, data.test.count)
    let x = Batcher.heldOut(data.test, binarization: rc.binarize, limit: count)
    let model = VAEModel(config: ck.model, maxBatch: count, params: ck.params)
    x.withUnsafeBufferPointer { model.encode($0.baseAddress!, batch: count) }
    model.decode(UnsafePointer(model.mu.ptr), batch: count)
    let recon = images(from: model, rows: count)
    let dim = ck.model.inputSize
    let columns = min(count, 8)
    var tiles: [[Float]] = []
    var start = 0
    while start < count {
      let end = min(start + columns, count)
      for i in start..<end { tiles.append(Array(x[(i * dim)..<((i + 1) * dim)])) }
      tiles += [[Float]](repeating: [Float](repeating: 0, count: dim), count: columns - (end - start))
      tiles += recon[start..<end]
      tiles += [[Float]](repeating: [Float](repeating: 0, count: dim), count: columns - (end - start))
      start = end
    }
    try writeGrid(tiles, inputSize: dim, columns: columns, to: out)
    Console.out("wrote \(count) originals and reconstructions to \(out)")
  }
}

struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a checkpoint's config, training state and tensors.",
    discussion: "Example: vae-dist info runs/mnist/final.safetensors")
  @Argument(help: ArgumentHelp("A .safetensors checkpoint.", valueName: "checkpoint"))
  var path: String

  func run() throws {
    let (ck, _) = try loadCheckpoint(path)
    let s = ck.state
    Console.out("\(path)")
    Console.out("format \(Checkpoint.format), step \(s.step), epoch \(s.epoch), seed \(s.seed), world size \(s.worldSize), global batch \(s.globalBatch), Adam step \(s.adamStep)")
    Console.out("model \(RunConfig.modelJSON(ck.model))")
    Console.out("parameters \(ck.params.count)")
    Console.out("tensors:")
    for t in ck.file.tensors {
      Console.out("  \(t.name) \(t.dtype) [\(t.shape.map(String.init).joined(separator: ", "))] \(t.bytes.count) bytes")
    }
    if !ck.configYAML.isEmpty {
      Console.out("config:")
      for line in ck.configYAML.split(separator: "\n") { Console.out("  " + line) }
    }
  }
}

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure training throughput (steps/s, samples/s) of a config, warm-up excluded.",
    discussion: """
      Runs the real step (batch, forward, backward, allreduce, Adam) on the config's data and \
      prints the median over --repeats timed blocks, and the share of a step spent in the \
      gradient collectives. Under mpirun it measures the data-parallel step (global samples/s). \
      scripts/bench wraps this (and scripts/bench --scaling runs it for np 1, 2, 4, 8).
      """)
  @Option(name: .long, help: ArgumentHelp("YAML config.", valueName: "file"))
  var config: String
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, help: "Warm-up steps (not timed).")
  var warmup: Int = 20
  @Option(name: .long, help: "Steps per timed block.")
  var steps: Int = 50
  @Option(name: .long, help: "Timed blocks; the median is reported.")
  var repeats: Int = 5
  @Option(name: .long, help: "OpenBLAS threads.")
  var threads: Int?
  @Flag(inversion: .prefixedNo, help: "Under MPI: the sharded optimizer (ZeRO stage 1), as in training (on by default).")
  var shardOptimizer = true
  @Option(name: .long, help: ArgumentHelp("Micro-batches per rank and step, as in training.", valueName: "K"))
  var microBatches: Int = 1
  @Flag(name: .long, help: "Print one JSON object.")
  var json = false
  @Flag(name: .long, help: "Also time each phase of the step (batch, forward, backward, wait, allreduce, Adam), per rank.")
  var profile = false

  func run() throws {
    guard warmup >= 0, steps >= 1, repeats >= 1 else {
      throw ConfigError("--warmup ≥ 0, --steps ≥ 1 and --repeats ≥ 1 expected")
    }
    let comm = try CommMode.auto.makeCommunicator()
    defer { comm.finalize() }
    var c = try ConfigLoader.load(path: config)
    c.steps = warmup + steps * repeats
    c.epochs = nil
    c.checkEvery = 0
    try applyThreads(threads)
    let data = try loadData(c, dataFlag: dataOptions.data)
    let tmp = NSTemporaryDirectory() + "vae-dist-bench-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: tmp) }
    let trainer = try Trainer(config: c, data: data, comm: comm, runDirectory: tmp,
                              output: OutputOptions(quiet: true),
                              parallel: ParallelOptions(
                                shardOptimizer: shardOptimizer, separateWait: true, microBatches: microBatches))
    for _ in 0..<warmup { try trainer.trainStep() }
    var rates: [Double] = []
    var shares: [Double] = []
    var waits: [Double] = []
    for _ in 0..<repeats {
      try comm.barrier()
      trainer.commSeconds = 0
      trainer.waitSeconds = 0
      let t0 = comm.wallTime()
      for _ in 0..<steps { try trainer.trainStep() }
      let dt = comm.wallTime() - t0
      // Ranks synchronise every step (allreduce), so rank 0's time is the job's; the share
      // of time in collectives is averaged over ranks.
      let sums = try comm.allreduceSum([trainer.commSeconds / dt, trainer.waitSeconds / dt])
      rates.append(Double(steps) / dt)
      shares.append(sums[0] / Double(comm.size))
      waits.append(sums[1] / Double(comm.size))
    }
    if profile {
      var phases: [String: Double] = [:]
      for _ in 0..<steps { try trainer.profiledStep(&phases) }
      // Every rank's phases, printed by rank 0 in rank order (imbalance shows as "wait").
      let keys = ["batch+noise", "forward", "backward", "wait", "allreduce", "adam"]
      var table = [Double](repeating: 0, count: keys.count * comm.size)
      for (i, k) in keys.enumerated() { table[comm.rank * keys.count + i] = phases[k] ?? 0 }
      table = try comm.allreduceSum(table)
      if comm.isRoot {
        for (i, k) in keys.enumerated() {
          let perRank = (0..<comm.size).map { String(format: "%7.3f", 1000 * table[$0 * keys.count + i] / Double(steps)) }
          Console.out(String(format: "  %-12@", k as NSString) + perRank.joined(separator: " ") + " ms/step")
        }
      }
    }
    guard comm.isRoot else { return }
    let order = rates.indices.sorted { rates[$0] < rates[$1] }
    let mid = order[order.count / 2]
    let median = rates[mid]
    let share = shares[mid]
    let wait = waits[mid]
    let sps = median * Double(c.batch)
    let gflops = 6.0 * Double(c.model.forwardMACs) * Double(c.batch) * median / 1e9
    if json {
      Console.out("{\"config\": \"\(config)\", \"kernel\": \"\(BLASInfo.coreName)\", \"threads\": \(BLASInfo.threads), \"world_size\": \(comm.size), \"shard_optimizer\": \(shardOptimizer), \"batch\": \(c.batch), \"steps_per_sec\": \(median), \"samples_per_sec\": \(sps), \"allreduce_share\": \(share), \"wait_share\": \(wait), \"gemm_gflops\": \(gflops), \"all_steps_per_sec\": \(rates)}")
    } else {
      Console.out(String(format: "%@: kernel %@, %d thread(s), %d rank(s), batch %d: %.1f steps/s, %.0f samples/s, %.1f%% of a step in the gradient exchange, %.1f%% waiting for the slowest rank (median of %d × %d steps; GEMM rate %.1f GFLOP/s)",
                         config, BLASInfo.coreName, BLASInfo.threads, comm.size, c.batch, median, sps, 100 * share, 100 * wait, repeats, steps, gflops))
    }
  }
}

struct BLAS: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show the OpenBLAS kernel and thread count in use, and whether it is a slow fallback.",
    discussion: """
      Debian's OpenBLAS 0.3.21 does not recognise recent CPUs and silently uses its SSE3 \
      'Prescott' kernel. --kernel prints only the kernel name; --best prints the fastest kernel \
      this CPU supports (what the launcher scripts put in OPENBLAS_CORETYPE when it is unset).
      """)
  @Flag(name: .long, help: "Print only the kernel OpenBLAS chose.")
  var kernel = false
  @Flag(name: .long, help: "Print only the fastest kernel this CPU can run (empty if none applies).")
  var best = false
  @Flag(name: .long, help: "Exit with status 3 when the kernel is a fallback on a CPU with AVX2/FMA.")
  var checkFallback = false

  func run() throws {
    if kernel {
      Console.out(BLASInfo.coreName)
    } else if best {
      Console.out(BLASInfo.bestKernelForCPU ?? "")
    } else {
      Console.out("OpenBLAS kernel: \(BLASInfo.coreName)")
      Console.out("OpenBLAS threads: \(BLASInfo.threads)")
      Console.out("OpenBLAS config: \(BLASInfo.config)")
      Console.out("CPU has AVX2+FMA: \(BLASInfo.cpuHasAVX2FMA ? "yes" : "no"); fastest usable kernel: \(BLASInfo.bestKernelForCPU ?? "none")")
      if let w = BLASInfo.fallbackWarning() { Console.out(w) }
    }
    if checkFallback && BLASInfo.isFallback { throw ExitCode(3) }
  }
}
