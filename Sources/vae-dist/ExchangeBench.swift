import Formats
import Foundation
import VAE
import VAEDist

/// `vae-dist bench --exchange`: the run's gradient exchange alone (`makeGradientExchange`, as
/// training builds it) timed around `sumAndUpdate` with an update that does nothing, for arenas
/// of several sizes. One JSON line per arena on rank 0: transport, ranks, floats, bytes and the
/// median seconds of the timed repeats (each the mean over ranks, after a barrier; warm-up
/// excluded). The shared-memory window exists once per process, so under it only one arena
/// can be measured per run.
struct ExchangeBench {
  let comm: Communicator
  let shardOptimizer: Bool
  let warmup: Int
  let repeats: Int

  /// The arenas: the config's model layout (named "model") and one tensor of each size.
  static func layouts(config: RunConfig?, floats: [Int]) -> [(name: String, layout: ParameterLayout)] {
    var out: [(String, ParameterLayout)] = []
    if let config { out.append(("model", config.model.layout)) }
    for n in floats { out.append(("floats", ParameterLayout(specs: [TensorSpec(name: "x", shape: [n])]))) }
    return out
  }

  func run(_ arenas: [(name: String, layout: ParameterLayout)]) throws {
    var window: String?
    for (name, layout) in arenas {
      if let window {
        throw ConfigError("--exchange: the exchange is the \(window), which exists once per process: measure one arena per run (one --floats value and no --config), or set VAE_DIST_SHM=0 for MPI's collectives")
      }
      let exchange = try comm.makeGradientExchange(layout: layout, shardOptimizer: shardOptimizer)
      if comm.size > 1, exchange.transport.contains("shared memory") { window = exchange.transport }
      let seconds = try time(exchange)
      guard comm.isRoot else { continue }
      let fields: JSONObject = [
        "transport": .string(exchange.transport), "ranks": .int(comm.size), "arena": .string(name),
        "floats": .int(layout.total), "bytes": .int(4 * layout.total), "sharded": .bool(exchange.updatedSlice != nil),
        "seconds": .number(seconds), "repeats": .int(repeats),
      ]
      Console.out(fields.line)
    }
  }

  /// The median over repeats of the ranks' mean time of one `sumAndUpdate`.
  func time(_ exchange: GradientExchange) throws -> Double {
    let g = exchange.gradients
    for i in 0..<g.count { g.base[i] = 1e-3 }
    var times = [Double](repeating: 0, count: repeats)
    for r in 0..<(warmup + repeats) {
      try comm.barrier()
      let t0 = MonotonicClock.now()
      try exchange.sumAndUpdate { _, _ in }
      if r >= warmup { times[r - warmup] = MonotonicClock.now() - t0 }
    }
    let means = try comm.allreduceSum(times).map { $0 / Double(comm.size) }.sorted()
    return means[means.count / 2]
  }
}
