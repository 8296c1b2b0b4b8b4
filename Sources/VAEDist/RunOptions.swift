import Formats
import Foundation

/// Where a run starts: from scratch, from the newest valid checkpoint of the run directory, or
/// from a given file.
public enum ResumeMode: Sendable, Equatable {
  case none
  case auto
  case path(String)
}

/// How a run begins: from scratch, resumed, or from given weights. Every rank must agree on it
/// (a resume broadcasts rank 0's checkpoint; a rank that expects no broadcast would hang).
public struct StartOptions: Sendable, Equatable {
  public var resume: ResumeMode
  /// A fresh run starts from this safetensors file's model tensors (read on rank 0 only).
  public var initialWeights: String?
  public init(resume: ResumeMode = .none, initialWeights: String? = nil) {
    self.resume = resume
    self.initialWeights = initialWeights
  }
}

/// How the step runs across ranks (none of it changes the numbers beyond summation order).
public struct ParallelOptions: Sendable {
  /// ZeRO stage 1: reduce-scatter the gradients, Adam on this rank's 1/P of the arena, then
  /// allgather the parameters. Same bytes on the wire as one allreduce; Adam work ÷ P.
  public var shardOptimizer: Bool
  /// Gradient accumulation: each rank splits its shard into this many micro-batches (floor
  /// split, like the ranks' shards), runs forward and backward on each in turn and sums their
  /// gradients in order, so activation memory shrinks by this factor. With K micro-batches on
  /// one process the step is bit-identical to K ranks on one node.
  /// nil (auto): 1 for a fresh run; a resumed run keeps its checkpoint's shards (ranks ×
  /// micro-batches) when this run's rank count divides them (`BatchSplit.resuming`), so a
  /// 2-rank run resumed on 1 rank runs 2 micro-batches and continues bit for bit.
  public var microBatches: Int?
  public init(shardOptimizer: Bool = true, microBatches: Int? = nil) {
    self.shardOptimizer = shardOptimizer
    self.microBatches = microBatches
  }
}

/// Where start-up time goes, for the `"event": "startup"` metrics line: when the command
/// started (`MonotonicClock`) and the phases the caller timed before making the run (e.g.
/// `data_load_s`, `data_check_s`); the run adds its own phases and the total to the first step.
public struct StartupTimes: Sendable {
  public var since: Double
  /// (field name ending in `_s`, seconds), in order.
  public var phases: [(name: String, seconds: Double)]
  public init(since: Double = MonotonicClock.now(), phases: [(name: String, seconds: Double)] = []) {
    self.since = since
    self.phases = phases
  }
}

/// Everything about a run that is not in its config.
public struct RunOptions {
  public var parallel: ParallelOptions
  public var start: StartOptions
  /// TensorBoard event files in the run directory (rank 0).
  public var tensorboard: Bool
  /// Polled after every step: a signal number (SIGINT, SIGUSR1, SIGTERM) asks the run to stop
  /// with a checkpoint; 0 to go on. The ranks agree on one stop step and one signal.
  public var stopRequest: () -> Int32
  /// What the run reports (see `RunEvent`); nothing by default. Called on the training thread.
  public var events: (RunEvent) -> Void
  /// The command's start and its phases before the run (the run's `startup` line).
  public var startup: StartupTimes
  /// What launched this process (e.g. a batch scheduler's job id and restart count), added to
  /// the run's segments.jsonl line for this start.
  public var launch: JSONObject = JSONObject()
  public init(
    parallel: ParallelOptions = ParallelOptions(), start: StartOptions = StartOptions(), tensorboard: Bool = true,
    stopRequest: @escaping () -> Int32 = { 0 }, events: @escaping (RunEvent) -> Void = { _ in },
    startup: StartupTimes = StartupTimes()
  ) {
    self.startup = startup
    self.parallel = parallel
    self.start = start
    self.tensorboard = tensorboard
    self.stopRequest = stopRequest
    self.events = events
  }
}

/// What a run tells its caller, which decides what to show. Rank 0 reports everything except
/// `waiting` and `started`, which every rank reports.
public enum RunEvent {
  /// A start-up phase that waits for other ranks or files begins (e.g. for a watchdog).
  case waiting(String)
  /// Start-up is over: every rank checked the initial parameters.
  case started
  /// A line for people: what is being trained, resumed from, loaded.
  case info(String)
  /// Something the user should know that does not stop the run (e.g. a changed setting on resume).
  case warning(String)
  /// The periodic training numbers (at every metrics line).
  case progress(TrainingProgress)
  /// A held-out evaluation: the mean ELBO and its terms, nats per example.
  case evaluation(step: Int, elbo: Double, recon: Double, kl: Double)
  /// The run has written its last file.
  case finished
}

/// One metrics line's numbers, for a progress display.
public struct TrainingProgress: Sendable {
  public var step: Int
  public var totalSteps: Int
  public var epoch: Int
  public var epochs: Int
  public var loss: Double
  public var samplesPerSecond: Double
  public var elapsed: Double
  /// Samples left to the last step.
  public var remainingSamples: Int
}

public enum TrainError: Error, CustomStringConvertible {
  case runExists(String)
  case badSetting(String)
  case io(String)
  /// A collective check failed on this rank: the message names the rank and the field.
  case handshake(String)
  /// A start-up option differs between ranks (the setting, and the message naming it).
  case optionMismatch(StartupSetting, String)
  /// A run option does not fit the config or the job (the setting, and the message).
  case invalidOption(StartupSetting, String)
  /// The loss went NaN or infinite: the message names the step and the term.
  case nonFinite(String)
  /// A mapped data file changed during the run: the message names the file, what changed, the
  /// step and the newest checkpoint.
  case dataChanged(String)
  /// Another rank found the problem and prints it; this rank waits for the job to end.
  case peerFailed

  public var description: String {
    switch self {
    case .runExists(let dir): "\(dir) already holds a run (checkpoints or final.safetensors)"
    case .badSetting(let s), .io(let s), .handshake(let s), .nonFinite(let s), .dataChanged(let s), .optionMismatch(_, let s), .invalidOption(_, let s): s
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
  /// Steps this process trained (0 when a resumed run had already reached its last step).
  public var stepsTrained = 0
  /// The signal that stopped the run early (SIGTERM 15, SIGINT 2, SIGUSR1 10), or nil when it
  /// ran to its last step.
  public var stopSignal: Int32? = nil
}
