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
    version: vaeDistVersion,
    subcommands: [
      Train.self, Eval.self, Sample.self, Reconstruct.self, Complete.self, Encode.self, Decode.self, Info.self, Export.self,
      ConfigCommand.self, Bench.self, BLAS.self,
    ])

  /// "rank N: " before every error line of a multi-rank job, so a message names its rank. From
  /// the launcher's environment at first (errors in the arguments come before MPI_Init), then
  /// from the communicator.
  nonisolated(unsafe) static var rankPrefix: String = {
    let launch = LaunchEnvironment.current
    guard let size = launch.size, size > 1, let rank = launch.rank else { return "" }
    return "rank \(rank): "
  }()

  /// One-line errors: argument errors keep only their first line plus a pointer to --help;
  /// our own errors are printed as they are, with a hint where the CLI knows one. Help and
  /// version exit 0 with full text.
  static func main() {
    Console.reportFileSizeLimitAsError()
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
    if code == .success || error is ExitCode { exit(withError: error) }
    let message: String
    if !(error is ValidationError), String(describing: type(of: error)) != "CommandError" {
      message = String(describing: error) + hint(for: error)
    } else {
      let full = fullMessage(for: error)
      let first = full.split(separator: "\n").first.map(String.init) ?? full
      let names = configuration.subcommands.map { $0._commandName }
      let sub = CommandLine.arguments.dropFirst().first { names.contains($0) }
      message = first.replacingOccurrences(of: "Error: ", with: "")
        + " (see 'vae-dist \(sub.map { "\($0) " } ?? "")--help')"
    }
    Console.error("vae-dist: error: " + rankPrefix + message.replacingOccurrences(of: "\n", with: " "))
    Foundation.exit(code.rawValue == 0 ? 1 : code.rawValue)
  }

  /// What to do about an error the libraries report as a fact.
  static func hint(for error: Error) -> String {
    if case DataError.missingFiles(let dataset, let directory, _)? = error as? DataError,
      ((directory as NSString).deletingLastPathComponent as NSString).lastPathComponent == dataset
    {
      let parent = ((directory as NSString).deletingLastPathComponent as NSString).deletingLastPathComponent
      return ": --data names the folder that holds \(dataset)/ (did you mean --data \(parent.isEmpty ? "." : parent)?)"
    }
    switch error as? TrainError {
    case .runExists?: return "; pass --resume auto to continue it, or choose another --out"
    case .optionMismatch(let setting, _)?, .invalidOption(let setting, _)?:
      return startupFlagHint[setting].map { " (\($0))" } ?? ""
    case .io(let text)? where text.contains("intact"): return " (vae-dist train --resume auto)"
    default: break
    }
    if case CheckpointError.notACheckpoint? = error as? CheckpointError {
      return "; to start training from its weights, use vae-dist train --init"
    }
    guard case DataError.missingFiles(let dataset, _, _)? = error as? DataError else { return "" }
    switch dataset {
    case "fashion-mnist":
      return ": run apt-get install dataset-fashion-mnist (installs \(DatasetRegistry.systemFashionMNISTDirectory)), or copy the four files there"
    default:
      return ": run scripts/get-data (it fills ${VAE_DIST_DATA:-./data}/mnist), or pass --data DIR"
    }
  }
}

/// The flag or variable behind each start-up setting the ranks must agree on.
let startupFlagHint: [StartupSetting: String] = [
  .sharding: "--[no-]shard-optimizer", .microBatches: "--micro-batches", .resume: "--resume",
  .resumeFile: "--resume", .initialWeights: "--init", .sharedMemory: "VAE_DIST_SHM", .overlap: "VAE_DIST_OVERLAP",
]

/// Options shared by commands that read data.
struct DataOptions: ParsableArguments {
  @Option(name: .long, help: ArgumentHelp(
    "Data directory holding mnist/ (and fashion-mnist/). Default: $VAE_DIST_DATA, else ./data.",
    valueName: "dir"))
  var data: String?

  @Option(name: .customLong("test-file"), help: ArgumentHelp(
    "Held-out data from this file (.npy or IDX) instead of the one the config (or the checkpoint's config) names; for data from files (data.train).",
    valueName: "file"))
  var testFile: String?

  /// The config's data (with `--test-file`'s held-out file); mapped files are registered with
  /// `MappedFileGuard` before their values are read (`reader` names who reads them in its message).
  func load(_ config: RunConfig, reader: String = "vae-dist", whenMapped: () -> Void = {}) throws -> DataSplits {
    var c = config
    if let testFile {
      guard c.trainFile != nil else {
        throw ValidationError("--test-file: the config names the data set '\(c.dataset)', not files; it applies to data.train configs")
      }
      c.testFile = (testFile as NSString).standardizingPath
      c.testFraction = nil
    }
    return try c.loadData(dataDirectory: DatasetRegistry.resolveDataDirectory(explicit: data)) {
      MappedFileGuard.register($0, reader: reader, rankPrefix: VAEDistCLI.rankPrefix)
      whenMapped()
    }
  }
}

/// How the step runs: BLAS threads, the sharded optimizer and micro-batches (train and bench).
struct ParallelismOptions: ParsableArguments {
  @Option(name: .long, parsing: .unconditional,
          help: "OpenBLAS threads (default: OpenBLAS's own choice, usually all cores; under mpirun, cores ÷ ranks per node).")
  var threads: Int?
  @Flag(inversion: .prefixedNo, help: ArgumentHelp(
    "Under MPI: each rank runs Adam on 1/P of the parameters (ZeRO stage 1); bit-identical results, less work and memory. On by default; --no-shard-optimizer runs the whole Adam on every rank."))
  var shardOptimizer = true
  @Option(name: .long, parsing: .unconditional, help: ArgumentHelp(
    "Gradient accumulation: each rank splits its share of every global batch into K micro-batches, run one after another and summed; activations need 1/K of the memory and the step is the same up to summation order (K on one process reproduces K ranks on one node bit for bit). auto (the default): 1, but a resumed run keeps its checkpoint's ranks × micro-batches when this run's ranks divide them, so a 2-rank run resumed on 1 rank runs 2 micro-batches and continues bit for bit.",
    valueName: "K|auto"))
  var microBatches: String = "auto"

  func validate() throws {
    if let threads, threads < 1 { throw ValidationError("--threads: expected a positive integer, got \(threads)") }
    _ = try microBatchCount()
  }

  /// nil for auto.
  func microBatchCount() throws -> Int? {
    if microBatches == "auto" { return nil }
    guard let k = Int(microBatches), k >= 1 else {
      throw ValidationError("--micro-batches: expected a positive integer or auto, got '\(microBatches)'")
    }
    return k
  }

  var parallel: ParallelOptions { ParallelOptions(shardOptimizer: shardOptimizer, microBatches: try? microBatchCount()) }

  /// Sets OpenBLAS's threads: the flag, else under MPI one share of the node's cores per rank
  /// (ranks ≥ cores: two threads per rank measured ~20% slower), else OpenBLAS's choice.
  func applyThreads(ranks: Int) {
    if let threads { return BLASInfo.setThreads(threads) }
    guard ranks > 1, ProcessInfo.processInfo.environment["OPENBLAS_NUM_THREADS"] == nil else { return }
    let local = LaunchEnvironment.current.localSize ?? ranks
    BLASInfo.setThreads(max(1, ProcessInfo.processInfo.activeProcessorCount / max(local, 1)))
  }
}

/// `--threads` of the commands that only evaluate.
func applyThreads(_ threads: Int?) {
  if let threads { BLASInfo.setThreads(threads) }
}

/// The value of a flag that overrides one config key (`@Option(overriding: "train.lr")`): the
/// key's path and the text given, checked and applied by the key's schema rule and writer.
struct ConfigOverride: Sendable {
  let path: String
  let text: String

  /// `--name` of the flag that overrides the key at `path`: its name with '-' for '_'.
  static func flag(_ path: String) -> String {
    "--" + ConfigSchema.key(path).name.replacingOccurrences(of: "_", with: "-")
  }

  /// The value's name in `--help`: n for integers, x for other numbers, the choices.
  static func valueName(_ path: String) -> String {
    switch ConfigSchema.key(path).rule {
    case .int: "n"
    case .positive, .nonNegative, .unitInterval: "x"
    case .choice(let a): a.joined(separator: "|")
    case .layers: "sizes"
    case .layerList: "layers"
    case .bool: "true|false"
    case .path: "file"
    case .positiveOrLearned: "x|learned"
    }
  }

  func check() throws {
    let rule = ConfigSchema.key(path).rule
    if rule.check(text: text) == nil { throw ValidationError("\(Self.flag(path)): expected \(rule.expected), got \(text)") }
  }

  func apply(to config: inout RunConfig) throws { try ConfigSchema.apply(path, text: text, to: &config) }
}

extension Option where Value == ConfigOverride? {
  /// The flag that overrides the config key at `path`, with the key's help and default.
  init(overriding path: String) {
    self.init(
      name: .customLong(String(ConfigOverride.flag(path).dropFirst(2))), parsing: .unconditional,
      help: ArgumentHelp(ConfigSchema.flagHelp(path), valueName: ConfigOverride.valueName(path)),
      transform: { ConfigOverride(path: path, text: $0) })
  }
}

func checkPositive(_ value: Int?, _ flag: String) throws {
  if let value, value < 1 { throw ValidationError("--\(flag): expected a positive integer, got \(value)") }
}

extension CommMode: ExpressibleByArgument {}

extension ResumeMode: ExpressibleByArgument {
  public init?(argument: String) {
    switch argument {
    case "": return nil
    case "auto": self = .auto
    default: self = .path(argument)
    }
  }
}
