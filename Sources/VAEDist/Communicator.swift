import Foundation
import VAE

/// The collectives a run needs besides the gradient exchange: small sums, the start-up
/// agreement's gathers, a broadcast of bytes (config, checkpoint) and a barrier. Every rank calls
/// each one at the same point. Single-process runs use `LocalCommunicator` (never touches MPI);
/// runs started by `mpirun`/`srun` use `MPICommunicator`. The step's gradient exchange is a
/// separate object, built once by `makeGradientExchange` (see `GradientExchange`).
public protocol Communicator: AnyObject {
  var rank: Int { get }
  var size: Int { get }
  /// In-place sum over all ranks; every rank ends with the same bits.
  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
  /// `words` from every rank, in rank order; every rank passes the same number of words.
  func allgather(words: [UInt64]) throws -> [[UInt64]]
  /// Root's bytes to every rank (any length; receivers' arrays are resized).
  func broadcast(_ bytes: inout [UInt8], root: Int) throws
  func barrier() throws
  /// The step's exchange over an arena of `layout`, with its buffers and transport chosen once.
  /// `shardOptimizer`: each rank receives only its shard of the summed gradient (ZeRO-1).
  func makeGradientExchange(layout: ParameterLayout, shardOptimizer: Bool) throws -> GradientExchange
  /// Clean shutdown at the end of a successful run.
  func finalize()
}

extension Communicator {
  public var isRoot: Bool { rank == 0 }

  /// Rows [⌊rB/P⌋, ⌊(r+1)B/P⌋) of a global batch of `globalBatch` rows: any P ≤ B works.
  public func shard(of globalBatch: Int) -> Range<Int> {
    shardRange(rank: rank, size: size, count: globalBatch)
  }

  /// Every rank's shard of `count` elements.
  public func shards(of count: Int) -> [Range<Int>] {
    (0..<size).map { shardRange(rank: $0, size: size, count: count) }
  }

  /// Allreduce of a few Doubles held in an array.
  public func allreduceSum(_ values: [Double]) throws -> [Double] {
    var v = values
    try v.withUnsafeMutableBufferPointer { try allreduceSum($0) }
    return v
  }
}

public func shardRange(rank: Int, size: Int, count: Int) -> Range<Int> {
  (rank * count / size)..<((rank + 1) * count / size)
}

/// Seconds on the system's monotonic clock (never steps back or jumps with the wall clock).
public enum MonotonicClock {
  public static func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
  }
}

/// One process, one rank: every collective is the identity.
public final class LocalCommunicator: Communicator {
  public init() {}
  public var rank: Int { 0 }
  public var size: Int { 1 }
  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
  public func allgather(words: [UInt64]) throws -> [[UInt64]] { [words] }
  public func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
  public func barrier() throws {}
  public func makeGradientExchange(layout: ParameterLayout, shardOptimizer: Bool) throws -> GradientExchange {
    LocalExchange(layout: layout)
  }
  public func finalize() {}
}
