import VAE
import VAEDist

/// A `Communicator` that forwards everything to another one, except that on one rank it
/// corrupts one value of the summed gradients it hands to the optimizer at one exchange, as a
/// silent network or memory fault would. Only the tests use it: it shows that the replica check
/// catches a diverged replica and names it.
final class FaultInjectingCommunicator: Communicator {
  let inner: Communicator
  /// The rank whose view of the sum is corrupted, and at which exchange (1-based: the step).
  let faultyRank: Int
  let faultyExchange: Int
  /// What the corrupted value becomes: its value + 1, or NaN.
  let makesNaN: Bool
  private var exchanges = 0
  private let scratch = Buffer(8192)

  init(wrapping inner: Communicator, rank: Int, exchange: Int, nan: Bool = false) {
    self.inner = inner
    faultyRank = rank
    faultyExchange = exchange
    makesNaN = nan
  }

  var rank: Int { inner.rank }
  var size: Int { inner.size }

  /// `body`, but on the faulty rank at the faulty exchange it sees the first value of the first
  /// part changed by +1 (or made NaN).
  private func corrupting(
    _ body: @escaping (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) -> (Range<Int>, UnsafePointer<Float>) throws -> Void {
    exchanges += 1
    guard rank == faultyRank, exchanges == faultyExchange else { return body }
    var done = false
    // The update is elementwise, so the first part may be handed over in two pieces.
    return { [scratch, makesNaN] range, values in
      guard !done, !range.isEmpty else { return try body(range, values) }
      done = true
      let n = min(range.count, scratch.capacity)
      scratch.ptr.update(from: values, count: n)
      scratch.ptr[0] = makesNaN ? .nan : scratch.ptr[0] + 1
      try body(range.lowerBound..<(range.lowerBound + n), UnsafePointer(scratch.ptr))
      if n < range.count { try body((range.lowerBound + n)..<range.upperBound, values + n) }
    }
  }

  func withAllreducedSum(
    _ buffer: UnsafeMutableBufferPointer<Float>, _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    try withoutActuallyEscaping(body) { try inner.withAllreducedSum(buffer, corrupting($0)) }
  }

  func withReducedShard(
    _ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>],
    _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    try withoutActuallyEscaping(body) { try inner.withReducedShard(buffer, shards: shards, corrupting($0)) }
  }

  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws { try inner.allreduceSum(buffer) }
  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws { try inner.allreduceSum(buffer) }
  func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws {
    try inner.reduceScatterSum(buffer, shards: shards)
  }
  func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws {
    try inner.allgather(buffer, shards: shards)
  }
  func gather(
    _ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?, shards: [Range<Int>], root: Int
  ) throws {
    try inner.gather(mine, into: full, shards: shards, root: root)
  }
  func allgather(_ value: UInt64) throws -> [UInt64] { try inner.allgather(value) }
  func allgather(words: [UInt64]) throws -> [[UInt64]] { try inner.allgather(words: words) }
  func broadcast(_ bytes: inout [UInt8], root: Int) throws { try inner.broadcast(&bytes, root: root) }
  func barrier() throws { try inner.barrier() }
  func wallTime() -> Double { inner.wallTime() }
  func abort(code: Int32, message: String) -> Never { inner.abort(code: code, message: message) }
  func finalize() { inner.finalize() }
  func makeSharedArenas(layout: ParameterLayout, shareParameters: Bool) throws -> SharedArenas? {
    try inner.makeSharedArenas(layout: layout, shareParameters: shareParameters)
  }
}
