import ArgumentParser
import Formats
import Foundation
import VAE
import VAEData
import VAEDist

struct Bench: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Measure training throughput (steps/s, samples/s) of a config, warm-up excluded.",
    discussion: """
      Runs the real step (batch, forward, backward, allreduce, Adam) on the config's data and \
      prints the median over --repeats timed blocks, and the share of a step spent in the \
      gradient collectives. Under mpirun it measures the data-parallel step (global samples/s). \
      scripts/bench wraps this (and scripts/bench --scaling runs it for np 1, 2, 4, 8).

      --exchange times the gradient exchange alone instead, as training builds it (shared \
      window on one node, else MPI reduce-scatter + allgather; VAE_DIST_SHM=0 forces the \
      latter), with an update that does nothing: for the config's model arena (with --config) \
      and for one tensor of each --floats size; one JSON line per arena {transport, ranks, \
      arena, floats, bytes, sharded, seconds, repeats}, seconds the median of --repeats (each \
      the mean over ranks) after --warmup. The shared window exists once per process: then \
      give one arena per run. scripts/bench --model runs it.
      """)
  @Option(name: .long, help: ArgumentHelp("YAML config (optional with --exchange: adds its model's arena).", valueName: "file"))
  var config: String?
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, parsing: .unconditional, help: "Warm-up steps (not timed).")
  var warmup: Int = 20
  @Option(name: .long, parsing: .unconditional, help: "Steps per timed block.")
  var steps: Int = 50
  @Option(name: .long, parsing: .unconditional, help: "Timed blocks; the median is reported.")
  var repeats: Int = 5
  @OptionGroup var parallelism: ParallelismOptions
  @Flag(name: .long, help: "Print one JSON object.")
  var json = false
  @Flag(name: .long, help: "Also time each phase of the step (batch, forward, backward, wait, allreduce, Adam), per rank, and each layer of the encoder and decoder alone (forward, backward, GFLOP/s).")
  var profile = false
  @Flag(name: .long, help: "Time the gradient exchange alone for several arena sizes (see above).")
  var exchange = false
  @Option(name: .long, parsing: .upToNextOption, help: ArgumentHelp(
    "With --exchange: arena sizes in floats (default 1024 16384 262144 1048576 4194304; none when --config is given).", valueName: "n"))
  var floats: [Int] = []

  func validate() throws {
    guard warmup >= 0, steps >= 1, repeats >= 1 else {
      throw ValidationError("--warmup ≥ 0, --steps ≥ 1 and --repeats ≥ 1 expected")
    }
    if !exchange && config == nil { throw ValidationError("--config: expected a YAML config file (optional only with --exchange)") }
    if !exchange && !floats.isEmpty { throw ValidationError("--floats: only with --exchange") }
    if let bad = floats.first(where: { $0 < 1 }) { throw ValidationError("--floats: expected positive integers, got \(bad)") }
  }

  func run() throws {
    let comm = try CommMode.auto.makeCommunicator()
    defer { comm.finalize() }
    if exchange {
      parallelism.applyThreads(ranks: comm.size)
      let c = try config.map { try ConfigLoader.load(path: $0) }
      let sizes = floats.isEmpty && c == nil ? [1024, 16384, 262_144, 1_048_576, 4_194_304] : floats
      let bench = ExchangeBench(comm: comm, shardOptimizer: parallelism.shardOptimizer, warmup: max(warmup, 1), repeats: repeats)
      return try bench.run(ExchangeBench.layouts(config: c, floats: sizes))
    }
    guard let config else { return }
    var c = try ConfigLoader.load(path: config)
    c.steps = warmup + steps * repeats
    c.epochs = nil
    c.checkEvery = 0
    parallelism.applyThreads(ranks: comm.size)
    let data = try dataOptions.load(c)
    FloatingPointEnvironment.enableFlushToZero()
    let tmp = NSTemporaryDirectory() + "vae-dist-bench-\(getpid())"
    let run = try TrainingRun(
      config: c, data: data, comm: comm, runDirectory: tmp, options: RunOptions(parallel: parallelism.parallel, tensorboard: false))
    let trainer = run.trainer
    for _ in 0..<warmup { try trainer.step() }
    let observer = BenchObserver(comm: comm, exchange: trainer.exchange)
    let blocks = try timedBlocks(trainer, comm: comm, observer: observer)
    let phases = profile ? try profileTable(trainer, comm: comm, observer: observer) : nil
    let layers = profile ? LayerProfile.measure(trainer.model, calls: max(steps / 5, 2)) : []
    guard comm.isRoot else { return }
    let order = blocks.indices.sorted { blocks[$0].rate < blocks[$1].rate }
    report(blocks[order[order.count / 2]], all: blocks.map(\.rate), config: c, ranks: comm.size, phases: phases, layers: layers)
  }

  /// One timed block: steps/s, and the shares of a step spent exchanging and waiting.
  typealias Block = (rate: Double, share: Double, wait: Double)

  func timedBlocks(_ trainer: Trainer, comm: Communicator, observer: BenchObserver) throws -> [Block] {
    var blocks: [Block] = []
    for _ in 0..<repeats {
      try comm.barrier()
      observer.reset()
      let t0 = MonotonicClock.now()
      for _ in 0..<steps { try trainer.step(observer: observer) }
      let dt = MonotonicClock.now() - t0
      // Ranks synchronise every step (the exchange), so rank 0's time is the job's; the share
      // of time in collectives is averaged over ranks.
      let sums = try comm.allreduceSum([observer.seconds["allreduce", default: 0] / dt, observer.seconds["wait", default: 0] / dt])
      blocks.append((Double(steps) / dt, sums[0] / Double(comm.size), sums[1] / Double(comm.size)))
    }
    return blocks
  }

  static let phaseNames = ["batch+noise", "forward", "backward", "wait", "allreduce", "adam"]

  /// Every rank's phases in ms per step, rank 0 gets them in rank order (imbalance shows as "wait").
  func profileTable(_ trainer: Trainer, comm: Communicator, observer: BenchObserver) throws -> [[Double]] {
    observer.reset()
    observer.timesEveryPhase = true
    for _ in 0..<steps { try trainer.step(observer: observer) }
    let keys = Self.phaseNames
    var table = [Double](repeating: 0, count: keys.count * comm.size)
    for (i, k) in keys.enumerated() { table[comm.rank * keys.count + i] = observer.seconds[k] ?? 0 }
    table = try comm.allreduceSum(table)
    return keys.indices.map { i in (0..<comm.size).map { 1000 * table[$0 * keys.count + i] / Double(steps) } }
  }

  func report(_ b: Block, all rates: [Double], config c: RunConfig, ranks: Int, phases: [[Double]]?, layers: [LayerProfile.Row]) {
    let (median, share, wait) = b
    let sps = median * Double(c.batch)
    let gflops = 6.0 * Double(c.model.forwardMACs) * Double(c.batch) * median / 1e9
    let names = Self.phaseNames
    if json {
      var fields: JSONObject = [
        "config": .string(config ?? ""), "kernel": .string(BLASInfo.coreName), "threads": .int(BLASInfo.threads),
        "world_size": .int(ranks), "shard_optimizer": .bool(parallelism.shardOptimizer), "batch": .int(c.batch),
        "steps_per_sec": .number(median), "samples_per_sec": .number(sps), "allreduce_share": .number(share),
        "wait_share": .number(wait), "gemm_gflops": .number(gflops), "all_steps_per_sec": .numbers(rates),
      ]
      if let phases {
        fields.append("profile_ms_per_step", .object(JSONObject(names.indices.map { (names[$0], .numbers(phases[$0])) })))
      }
      if !layers.isEmpty {
        fields.append("layer_ms_forward_backward", .object(JSONObject(layers.map { ($0.name, .numbers([$0.forwardMs, $0.backwardMs])) })))
      }
      Console.out(fields.line)
    } else {
      for r in layers {
        let label = "  " + r.name.padding(toLength: 16, withPad: " ", startingAt: 0) + r.op.padding(toLength: 32, withPad: " ", startingAt: 0)
        Console.out(label + String(format: "forward %7.3f ms  backward %7.3f ms  %6.1f GFLOP/s", r.forwardMs, r.backwardMs, r.gflops))
      }
      for (i, k) in names.enumerated() {
        guard let p = phases?[i] else { break }
        Console.out(String(format: "  %-12@", k as NSString) + p.map { String(format: "%7.3f", $0) }.joined(separator: " ") + " ms/step")
      }
      Console.out(String(format: "%@: kernel %@, %d thread(s), %d rank(s), batch %d: %.1f steps/s, %.0f samples/s, %.1f%% of a step in the gradient exchange, %.1f%% waiting for the slowest rank (median of %d × %d steps; GEMM rate %.1f GFLOP/s)",
                         config ?? "", BLASInfo.coreName, BLASInfo.threads, ranks, c.batch, median, sps, 100 * share, 100 * wait, repeats, steps, gflops))
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
  @Flag(name: .long, help: ArgumentHelp(
    "List the x86-64 kernels a CI machine may pick (Haswell, Zen, SkylakeX, Cooperlake), one a line: "
      + "'NAME runs', or 'NAME skipped: this CPU lacks …'.",
    discussion: "scripts/test runs its kernel-sensitive tests under each kernel that runs."))
  var kernels = false

  func run() throws {
    if kernels {
      for k in BLASInfo.x86Kernels {
        Console.out(k.missing.isEmpty ? "\(k.name) runs" : "\(k.name) skipped: this CPU lacks \(k.missing.joined(separator: ", "))")
      }
    } else if kernel {
      Console.out(BLASInfo.coreName)
    } else if best {
      Console.out(BLASInfo.bestKernelForCPU ?? "")
    } else {
      Console.out("OpenBLAS kernel: \(BLASInfo.coreName)")
      Console.out("OpenBLAS threads: \(BLASInfo.threads)")
      Console.out("OpenBLAS config: \(BLASInfo.config)")
      Console.out("CPU has AVX2+FMA: \(BLASInfo.cpuHasAVX2FMA ? "yes" : "no"); fastest usable kernel: \(BLASInfo.bestKernelForCPU ?? "none")")
      if let w = BLASInfo.fallbackWarning() { Console.out("warning: " + w) }
    }
    if checkFallback && BLASInfo.isFallback { throw ExitCode(3) }
  }
}

/// Times a step from outside: a barrier before the exchange, timed on its own ("wait", so that
/// imbalance between ranks is not counted as exchange), the exchange's own time ("allreduce")
/// and the rest of that phase ("adam"); with `timesEveryPhase` also batch, forward and backward.
final class BenchObserver: StepObserver {
  let comm: Communicator
  let exchange: GradientExchange
  var timesEveryPhase = false
  private(set) var seconds: [String: Double] = [:]

  init(comm: Communicator, exchange: GradientExchange) {
    self.comm = comm
    self.exchange = exchange
  }

  func reset() { seconds = [:] }

  override func measure<T>(_ phase: StepPhase, _ body: () throws -> T) throws -> T {
    guard phase == .exchange else {
      guard timesEveryPhase else { return try body() }
      let t0 = MonotonicClock.now()
      defer { seconds[phase.rawValue, default: 0] += MonotonicClock.now() - t0 }
      return try body()
    }
    let t0 = MonotonicClock.now()
    if comm.size > 1 { try comm.barrier() }
    let t1 = MonotonicClock.now(), e0 = exchange.seconds
    let result = try body()
    let t2 = MonotonicClock.now(), exchanged = exchange.seconds - e0
    seconds["wait", default: 0] += t1 - t0
    seconds["allreduce", default: 0] += exchanged
    seconds["adam", default: 0] += (t2 - t1) - exchanged
    return result
  }
}
