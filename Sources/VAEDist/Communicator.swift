import Foundation
import VAE

/// How replicas talk: sums over all ranks, gathers, a broadcast and an abort. Single-process
/// runs use `LocalCommunicator` (a sum over one rank, never touching MPI); runs started by
/// `mpirun`/`srun` use `MPICommunicator`.
public protocol Communicator: AnyObject {
  var rank: Int { get }
  var size: Int { get }
  /// In-place sum over all ranks; every rank ends with the same bits.
  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
  /// In-place sum over ranks of which rank r keeps only `shards[r]` (contiguous, in rank order).
  func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws
  /// In place: rank r's `shards[r]` of `buffer` is copied to every rank.
  func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws
  /// Rank r's `mine` (its `shards[r]`, in rank order) into `full` on `root`, which alone
  /// passes `full` (the others nil).
  func gather(
    _ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?, shards: [Range<Int>],
    root: Int) throws
  /// One value from every rank, in rank order.
  func allgather(_ value: UInt64) throws -> [UInt64]
  /// `words` from every rank, in rank order; every rank passes the same number of words.
  func allgather(words: [UInt64]) throws -> [[UInt64]]
  /// Root's bytes to every rank (any length; receivers' arrays are resized).
  func broadcast(_ bytes: inout [UInt8], root: Int) throws
  func barrier() throws
  /// Seconds on a monotonic clock.
  func wallTime() -> Double
  /// Ends every rank of the job with `code` after printing `message` (one line) on stderr.
  func abort(code: Int32, message: String) -> Never
  /// Clean shutdown at the end of a successful run.
  func finalize()
  /// Sums `buffer` over all ranks and hands the sum to `body` in parts — (range, pointer to the
  /// summed values of that range) — possibly pointing into memory another rank owns and valid
  /// only inside `body`; every rank sees the same bits. Returns the seconds spent exchanging
  /// (excluding `body`). A shared-memory communicator saves the allgather's copy this way.
  func withAllreducedSum(
    _ buffer: UnsafeMutableBufferPointer<Float>, _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double
  /// Sums `buffer` over all ranks but hands `body` only this rank's shard of the sum, in one or
  /// more parts (range, pointer valid only inside `body`), e.g. to run Adam on it straight
  /// from cache. Returns the seconds spent exchanging (excluding `body`).
  func withReducedShard(
    _ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>],
    _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double
  /// A gradient arena in memory the ranks of one node share, when the communicator can
  /// exchange through it (nil: ordinary arenas); with `shareParameters`, also the node's one
  /// parameter copy, which the sharded optimizer updates in disjoint slices.
  func makeSharedArenas(layout: ParameterLayout, shareParameters: Bool) throws -> SharedArenas?
}

/// Arenas in a node's shared memory (see `Communicator.makeSharedArenas`).
public struct SharedArenas {
  /// This rank's gradients, readable by the other ranks of the node.
  public let grads: Arena
  /// The parameters every rank of the node reads and (each its slice) writes; nil when every
  /// rank keeps its own replica.
  public let params: Arena?
}

extension Communicator {
  public var isRoot: Bool { rank == 0 }

  public func withReducedShard(
    _ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>],
    _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    try reduceScatterThenCall(buffer, shards: shards, body)
  }

  /// `withReducedShard` through the collectives: reduce-scatter in place, then `body` on this
  /// rank's shard of the buffer.
  func reduceScatterThenCall(
    _ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>],
    _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    let t0 = wallTime()
    try reduceScatterSum(buffer, shards: shards)
    let t1 = wallTime()
    let mine = shards[rank]
    if let base = buffer.baseAddress, !mine.isEmpty { try body(mine, UnsafePointer(base + mine.lowerBound)) }
    return t1 - t0
  }

  public func withAllreducedSum(
    _ buffer: UnsafeMutableBufferPointer<Float>, _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    try allreduceThenCall(buffer, body)
  }

  /// `withAllreducedSum` through the collectives: allreduce in place, then `body` on the whole.
  func allreduceThenCall(
    _ buffer: UnsafeMutableBufferPointer<Float>, _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    let t0 = wallTime()
    try allreduceSum(buffer)
    let t1 = wallTime()
    if let base = buffer.baseAddress { try body(0..<buffer.count, UnsafePointer(base)) }
    return t1 - t0
  }

  /// The step's one exchange: sums `gradients` over all ranks and hands the sum to `update` in
  /// parts (range, pointer valid only inside `update`), e.g. Adam on that range. Without
  /// `shards` every rank receives the whole sum; with them (the sharded optimizer) rank r
  /// receives only `shards[r]`, updates its slice of `parameters`, and the slices are then
  /// gathered to every rank (on a node sharing one parameter copy, only a barrier). Returns
  /// the seconds spent exchanging, excluding `update`.
  public func exchange(
    gradients: UnsafeMutableBufferPointer<Float>, parameters: UnsafeMutableBufferPointer<Float>,
    shards: [Range<Int>]?, update: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    guard let shards else { return try withAllreducedSum(gradients, update) }
    let reduce = try withReducedShard(gradients, shards: shards, update)
    let t0 = wallTime()
    try allgather(parameters, shards: shards)
    return reduce + (wallTime() - t0)
  }

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

/// One process, one rank: every collective is the identity.
public final class LocalCommunicator: Communicator {
  let start = Date()
  public init() {}
  public var rank: Int { 0 }
  public var size: Int { 1 }
  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
  public func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws {}
  public func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws {}
  public func allgather(_ value: UInt64) throws -> [UInt64] { [value] }
  public func allgather(words: [UInt64]) throws -> [[UInt64]] { [words] }
  public func gather(
    _ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?, shards: [Range<Int>],
    root: Int
  ) throws {
    guard let full, let m = mine.baseAddress, let f = full.baseAddress, let r = shards.first else { return }
    (f + r.lowerBound).update(from: m, count: min(mine.count, r.count))
  }
  public func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
  public func barrier() throws {}
  public func wallTime() -> Double { Date().timeIntervalSince(start) }
  public func abort(code: Int32, message: String) -> Never {
    Console.error(message)
    exit(code)
  }
  public func finalize() {}
  public func makeSharedArenas(layout: ParameterLayout, shareParameters: Bool) throws -> SharedArenas? { nil }
}
