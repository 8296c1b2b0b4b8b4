import VAE
import VAEDist

/// A `Communicator` that forwards everything to another one, except that its gradient exchange
/// corrupts, on one rank, one value of the summed gradients it hands to the optimizer at one
/// exchange, as a silent network or memory fault would. Only the tests use it: it shows that
/// the replica check catches a diverged replica and names it.
final class FaultInjectingCommunicator: Communicator {
  let inner: Communicator
  /// The rank whose view of the sum is corrupted, and at which exchange (1-based: the step).
  let faultyRank: Int
  let faultyExchange: Int
  /// What the corrupted value becomes: its value + 1, or NaN.
  let makesNaN: Bool

  init(wrapping inner: Communicator, rank: Int, exchange: Int, nan: Bool = false) {
    self.inner = inner
    faultyRank = rank
    faultyExchange = exchange
    makesNaN = nan
  }

  var rank: Int { inner.rank }
  var size: Int { inner.size }
  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws { try inner.allreduceSum(buffer) }
  func allgather(words: [UInt64]) throws -> [[UInt64]] { try inner.allgather(words: words) }
  func broadcast(_ bytes: inout [UInt8], root: Int) throws { try inner.broadcast(&bytes, root: root) }
  func barrier() throws { try inner.barrier() }
  func finalize() { inner.finalize() }
  func makeGradientExchange(layout: ParameterLayout, shardOptimizer: Bool) throws -> GradientExchange {
    let exchange = try inner.makeGradientExchange(layout: layout, shardOptimizer: shardOptimizer)
    guard rank == faultyRank else { return exchange }
    return FaultInjectingExchange(wrapping: exchange, at: faultyExchange, nan: makesNaN)
  }
}

/// The exchange of the faulty rank: at exchange `faultyExchange` the update sees the first
/// value of the first part changed by +1 (or made NaN).
final class FaultInjectingExchange: GradientExchange {
  let inner: GradientExchange
  let faultyExchange: Int
  let makesNaN: Bool
  private var exchanges = 0
  private let scratch = Buffer(8192)

  init(wrapping inner: GradientExchange, at exchange: Int, nan: Bool) {
    self.inner = inner
    faultyExchange = exchange
    makesNaN = nan
  }

  var gradients: Arena { inner.gradients }
  var parameters: Arena { inner.parameters }
  var shards: [Range<Int>] { inner.shards }
  var updatedSlice: Range<Int>? { inner.updatedSlice }
  var sharesParameters: Bool { inner.sharesParameters }
  var transport: String { inner.transport }
  var seconds: Double { inner.seconds }
  var votes: UnsafeMutableBufferPointer<Float> { inner.votes }
  func gatherToRoot(_ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?) throws {
    try inner.gatherToRoot(mine, into: full)
  }
  func parametersWritten() throws { try inner.parametersWritten() }
  /// Passed on, so the faulty rank starts the same buckets as the others.
  func gradientsReady(_ range: Range<Int>, update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    try inner.gradientsReady(range, update: update)
  }

  func sumAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    exchanges += 1
    guard exchanges == faultyExchange else { return try inner.sumAndUpdate(update) }
    var done = false
    // The update is elementwise, so the first part may be handed over in two pieces.
    try inner.sumAndUpdate { [scratch, makesNaN] range, values in
      guard !done, !range.isEmpty else { return try update(range, values) }
      done = true
      let n = min(range.count, scratch.capacity)
      scratch.ptr.update(from: values, count: n)
      scratch.ptr[0] = makesNaN ? .nan : scratch.ptr[0] + 1
      try update(range.lowerBound..<(range.lowerBound + n), UnsafePointer(scratch.ptr))
      if n < range.count { try update((range.lowerBound + n)..<range.upperBound, values + n) }
    }
  }
}
