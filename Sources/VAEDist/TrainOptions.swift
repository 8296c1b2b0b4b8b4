import Foundation

/// Where a run starts: from scratch, from the newest valid checkpoint of the run directory, or
/// from a given file.
public enum ResumeMode: Sendable, Equatable {
  case none
  case auto
  case path(String)
}

public enum TrainError: Error, CustomStringConvertible {
  case runExists(String)
  case badSetting(String)
  case io(String)
  /// A collective check failed on this rank: the message names the rank and the field.
  case handshake(String)
  /// The loss went NaN or infinite: the message names the step and the term.
  case nonFinite(String)
  /// Another rank found the problem and prints it; this rank waits for the job to end.
  case peerFailed

  public var description: String {
    switch self {
    case .runExists(let dir):
      "\(dir) already holds a run (checkpoints or final.safetensors); pass --resume auto to continue it, or choose another --out"
    case .badSetting(let s), .io(let s), .handshake(let s), .nonFinite(let s): s
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
  /// The signal that stopped the run early (SIGTERM 15, SIGINT 2, SIGUSR1 10), or nil when it
  /// ran to its last step.
  public var stopSignal: Int32? = nil
}

/// Output options of a run (none of them changes the numbers).
public struct OutputOptions: Sendable {
  public var quiet: Bool
  /// Print progress on a terminal as one updating line; otherwise plain periodic lines.
  public var terminal: Bool
  /// Whether periodic progress lines are printed at all (evaluations always are).
  public var periodicLines = true
  /// TensorBoard event files in the run directory (rank 0).
  public var tensorboard = true
  /// Lines rank 0 prints on stderr once the run has started (e.g. a slow BLAS kernel), even
  /// when quiet.
  public var warnings: [String]
  public init(quiet: Bool = false, terminal: Bool = Console.isTerminal, warnings: [String] = []) {
    self.quiet = quiet
    self.terminal = terminal
    self.warnings = warnings
  }
}

/// How the step runs across ranks (none of it changes the numbers beyond summation order).
public struct ParallelOptions: Sendable {
  /// ZeRO stage 1: reduce-scatter the gradients, Adam on this rank's 1/P of the arena, then
  /// allgather the parameters. Same bytes on the wire as one allreduce; Adam work ÷ P.
  public var shardOptimizer: Bool
  /// Gradient accumulation: each rank splits its shard into this many micro-batches (floor
  /// split, like the ranks' shards), runs forward and backward on each in turn and sums their
  /// gradients in order, so activation memory shrinks by this factor. The sum is the same
  /// one-step gradient up to summation order; with K micro-batches on one process it is
  /// bit-identical to K ranks on one node, whose shared-memory reduction adds in rank order.
  public var microBatches: Int
  public init(shardOptimizer: Bool = true, microBatches: Int = 1) {
    self.shardOptimizer = shardOptimizer
    self.microBatches = microBatches
  }
}

/// Time spent in the gradient exchange (and, when asked, waiting for the slowest rank before
/// it), accumulated over steps. The trainer keeps one for its metrics; a benchmark passes its
/// own with `separateWait` so that imbalance between ranks is not counted as exchange.
public final class StepMeter {
  /// A barrier before each exchange, timed on its own into `waitSeconds`.
  public let separateWait: Bool
  /// Seconds in gradient/parameter collectives since the last `reset`.
  public private(set) var exchangeSeconds = 0.0
  /// Seconds waiting at the barrier before exchanges (only with `separateWait`).
  public private(set) var waitSeconds = 0.0
  public init(separateWait: Bool = false) { self.separateWait = separateWait }
  public func reset() {
    exchangeSeconds = 0
    waitSeconds = 0
  }
  func add(exchange: Double) { exchangeSeconds += exchange }
  func add(wait: Double) { waitSeconds += wait }
}
