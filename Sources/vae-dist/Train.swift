import ArgumentParser
import Formats
import Foundation
import VAE
import VAEData
import VAEDist

/// How training progress is shown (`--progress`).
enum ProgressStyle: String, ExpressibleByArgument, CaseIterable {
  case auto, bar, lines, none
}

struct Train: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Train a VAE from a config file; flags override the file.",
    discussion: """
      Writes the run directory (default runs/<config name>): config.yaml, metrics.jsonl, \
      checkpoints/step-NNNNNNNN.safetensors and final.safetensors, and prints the held-out ELBO.
      Example: vae-dist train --config configs/mnist.yaml --epochs 2 --out runs/try
      """)

  @Option(name: .long, help: ArgumentHelp("YAML config (see configs/ and docs/reference.md).", valueName: "file"))
  var config: String
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, help: ArgumentHelp("Run directory. Default: runs/<config name>.", valueName: "dir"))
  var out: String?
  // Flags that override one config key each: checked and applied by the key's schema rule and
  // writer (`overrides`); the flag is the key's name with '-' for '_'. A new one is one line.
  @Option(overriding: "model.zdim") var zdim: ConfigOverride?
  @Option(overriding: "train.epochs") var epochs: ConfigOverride?
  @Option(overriding: "train.steps") var steps: ConfigOverride?
  @Option(overriding: "train.batch") var batch: ConfigOverride?
  @Option(overriding: "train.lr") var lr: ConfigOverride?
  @Option(overriding: "train.lr_schedule") var lrSchedule: ConfigOverride?
  @Option(overriding: "train.lr_warmup") var lrWarmup: ConfigOverride?
  @Option(overriding: "train.objective") var objective: ConfigOverride?
  @Option(overriding: "train.samples") var samples: ConfigOverride?
  @Option(overriding: "train.iwae_gradient") var iwaeGradient: ConfigOverride?
  @Option(overriding: "train.beta") var beta: ConfigOverride?
  @Option(overriding: "train.kl_warmup") var klWarmup: ConfigOverride?
  @Option(overriding: "train.free_bits") var freeBits: ConfigOverride?
  @Option(overriding: "train.seed") var seed: ConfigOverride?
  @Option(overriding: "data.train_limit") var trainLimit: ConfigOverride?
  @Option(overriding: "train.eval_every") var evalEvery: ConfigOverride?
  @Option(overriding: "train.checkpoint_every") var checkpointEvery: ConfigOverride?
  @Option(overriding: "train.checkpoint_minutes") var checkpointMinutes: ConfigOverride?
  @Option(overriding: "train.log_every") var logEvery: ConfigOverride?
  @Option(overriding: "train.check_every") var checkEvery: ConfigOverride?
  @Option(name: .long, help: ArgumentHelp(
    "'auto' continues from the newest valid checkpoint in --out; or a checkpoint file.",
    valueName: "auto|path"))
  var resume: ResumeMode?
  @Option(name: .customLong("init"), help: ArgumentHelp(
    "Start a new run from these weights instead of the seeded initialisation: a safetensors file with the model's tensor names and shapes (a vae-dist checkpoint, or PyTorch's safetensors.torch.save_file(model.state_dict())); Adam starts fresh.",
    valueName: "file.safetensors"))
  var initFrom: String?
  @OptionGroup var parallelism: ParallelismOptions
  @Flag(name: .long, help: "Print only the final result.")
  var quiet = false
  @Option(name: .long, help: ArgumentHelp(
    "auto: one updating line for a single process on a terminal, plain lines otherwise (mpirun gives ranks a pty, so a redirected log stays clean); bar or lines to choose; none: only evaluations and the result.",
    valueName: "auto|bar|lines|none"))
  var progress: ProgressStyle = .auto
  @Flag(inversion: .prefixedNo, help: "TensorBoard event files in the run directory (rank 0): the metrics as scalars, samples or completions as images at every evaluation.")
  var tensorboard = true
  @Option(name: .long, help: ArgumentHelp(
    "auto: MPI when started by mpirun/srun, else one process without MPI; or force local/mpi.",
    valueName: "auto|local|mpi"))
  var comm: CommMode = .auto
  @Option(name: .long, parsing: .unconditional, help: ArgumentHelp(
    "Under MPI: if start-up (MPI_Init, the ranks' agreement on options, a resume's checkpoint broadcast) has not finished after this many seconds, print what this rank waits for and end the job instead of hanging until the scheduler's limit. 0 turns it off.",
    valueName: "seconds"))
  var startupTimeout: Double = 120

  static func format(_ seconds: Double) -> String {
    seconds == seconds.rounded() ? String(Int(seconds)) + " s" : String(seconds) + " s"
  }

  func validate() throws {
    for o in overrides { try o.check() }
    if !(startupTimeout >= 0 && startupTimeout.isFinite) {
      throw ValidationError("--startup-timeout: expected seconds ≥ 0 (0 turns the watchdog off), got \(startupTimeout)")
    }
    if epochs != nil && steps != nil { throw ValidationError("--epochs and --steps: give one of them, not both") }
    if initFrom != nil && resume != nil {
      throw ValidationError("--init and --resume: --init starts a new run, --resume continues one; give one of them")
    }
    // --resume FILE and --init FILE are read by rank 0 alone (and broadcast), so other hosts
    // need no copy: their existence is not checked here, on every rank.
  }

  /// The config file with the flags applied (already checked by `validate`).
  func resolvedConfig() throws -> RunConfig {
    var c = try ConfigLoader.load(path: config)
    for o in overrides { try o.apply(to: &c) }
    try ConfigSchema.checkObjective(c)
    return c
  }

  /// The config-key flags given, in declaration order: every `@Option(overriding:)` property,
  /// found by reflection (as ArgumentParser finds options), so there is no second list to keep.
  var overrides: [ConfigOverride] {
    Mirror(reflecting: self).children.compactMap { ($0.value as? Option<ConfigOverride?>)?.wrappedValue }
  }

  func run() throws {
    var startup = StartupTimes()
    let mpi = self.comm.usesMPI
    if startupTimeout > 0, mpi {
      StartupWatchdog.setRank(LaunchEnvironment.current.rank ?? -1)
      StartupWatchdog.arm(
        seconds: startupTimeout, setting: "--startup-timeout \(Self.format(startupTimeout)); 0 turns the watchdog off")
      StartupWatchdog.waiting(for: "MPI_Init (every rank of the job must start MPI)")
    }
    let comm = try self.comm.makeCommunicator()
    if mpi { StartupWatchdog.setRank(comm.rank) }  // until here, the launcher's word for it
    if comm.isRoot { try checkFilesOfRankZero() }
    StartupWatchdog.waiting(for: "this rank to read its config and data")
    VAEDistCLI.rankPrefix = comm.size > 1 ? "rank \(comm.rank): " : ""
    let c = try resolvedConfig()
    parallelism.applyThreads(ranks: comm.size)
    let data = try loadData(c, startup: &startup)
    let outDir = out ?? "runs/\(c.name)"
    FloatingPointEnvironment.enableFlushToZero()
    let console = RunConsole(style: outputStyle(isRoot: comm.isRoot, ranks: comm.size))
    if comm.isRoot, let w = BLASInfo.fallbackWarning() { console.warningsAtStart.append(w + "; scripts/train does this for you") }
    var options = RunOptions(
      parallel: parallelism.parallel, start: StartOptions(resume: resume ?? .none, initialWeights: initFrom),
      tensorboard: tensorboard, stopRequest: { StopSignals.pending }, events: console.handle, startup: startup)
    options.launch = Self.schedulerFields()
    let run = try TrainingRun(config: c, data: data, comm: comm, runDirectory: outDir, options: options)
    StopSignals.install()
    let s = try run.run()
    report(s, comm: comm, outDir: outDir)
  }

  /// The batch scheduler's job, for segments.jsonl: Slurm's job id, restart count and nodes.
  static func schedulerFields(_ env: [String: String] = ProcessInfo.processInfo.environment) -> JSONObject {
    var fields = JSONObject()
    if let job = env["SLURM_JOB_ID"] { fields.append("slurm_job_id", .string(job)) }
    if let n = env["SLURM_RESTART_COUNT"].flatMap({ Int($0) }) { fields.append("slurm_restart_count", .int(n)) }
    if let nodes = env["SLURM_JOB_NODELIST"] { fields.append("slurm_nodes", .string(nodes)) }
    return fields
  }

  /// The config's data, timing its phases: `data_load_s` (opening and mapping, or reading a
  /// data set into memory) and, for mapped files, `data_check_s` (every value checked).
  func loadData(_ c: RunConfig, startup: inout StartupTimes) throws -> DataSplits {
    let start = MonotonicClock.now()
    var mapped: Double?
    let data = try dataOptions.load(c, reader: "training") { mapped = MonotonicClock.now() }
    let end = MonotonicClock.now()
    startup.phases.append(("data_load_s", (mapped ?? end) - start))
    if let mapped { startup.phases.append(("data_check_s", end - mapped)) }
    return data
  }

  /// `--resume FILE` and `--init FILE` are read by rank 0 alone (and broadcast), so only rank 0
  /// checks them; its error ends the job.
  func checkFilesOfRankZero() throws {
    if let p = initFrom, !FileManager.default.fileExists(atPath: p) {
      throw ValidationError("--init: \(p) does not exist")
    }
    if case .path(let p)? = resume, !FileManager.default.fileExists(atPath: p) {
      throw ValidationError("--resume: \(p) does not exist (give 'auto' or a checkpoint file)")
    }
  }

  func outputStyle(isRoot: Bool, ranks: Int) -> OutputStyle {
    OutputStyle(
      quiet: quiet || !isRoot, terminal: progress == .bar || (progress == .auto && ranks == 1 && Console.isTerminal),
      periodicLines: progress != .none)
  }

  /// The result line, and the exit: 128 + signal after an agreed stop (every rank the same),
  /// as a shell reports a process the signal ended, so schedulers see a preemption.
  func report(_ s: TrainSummary, comm: Communicator, outDir: String) {
    if let signal = s.stopSignal {
      if comm.isRoot {
        Console.out("stopped by signal \(signal) after step \(s.steps); checkpoint \(outDir)/checkpoints; continue with --resume auto")
      }
      comm.finalize()
      Foundation.exit(128 + signal)
    }
    if comm.isRoot {
      let speed =
        s.stepsTrained > 0
        ? String(format: "%.0f s, %.0f samples/s", s.seconds, s.samplesPerSecond)
        : "the run had already finished: nothing left to train"
      Console.out(
        String(format: "held-out ELBO %.2f nats/image after %d steps (%@); checkpoint %@/final.safetensors",
               s.testELBO, s.steps, speed, outDir))
    }
    comm.finalize()
  }
}
