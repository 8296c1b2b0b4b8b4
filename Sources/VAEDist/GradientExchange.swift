import VAE

/// The step's one exchange, built once (`Communicator.makeGradientExchange`) with its arenas and
/// its transport: backward writes this rank's gradients into `gradients`; `sumAndUpdate` sums
/// them over the ranks and hands the sum, or (sharded optimizer) this rank's shard of it, to
/// the update, then makes `parameters` the same on every rank.
///
/// Every transport adds the ranks' gradients in rank order over the same arena shards, so the
/// sum has the same bits on every rank and with or without sharding; K micro-batches on one
/// process add in the same order as K ranks.
public protocol GradientExchange: AnyObject {
  /// Where backward writes this rank's gradients (node-shared memory on the shared window).
  var gradients: Arena { get }
  /// The parameters: this rank's replica, or the node's one copy (`sharesParameters`).
  var parameters: Arena { get }
  /// Every rank's shard of the arena, in rank order.
  var shards: [Range<Int>] { get }
  /// The slice whose update this rank runs: its shard when sharded, nil for the whole arena.
  var updatedSlice: Range<Int>? { get }
  /// The ranks of a node share one parameter copy: only rank 0 writes it outside the update.
  var sharesParameters: Bool { get }
  /// How gradients travel, for the log.
  var transport: String { get }
  /// Seconds spent exchanging since this exchange was built (excluding the update).
  var seconds: Double { get }
  /// `voteSlots` small counts that ride in the gradient exchange instead of a collective of
  /// their own (the run's stop and checkpoint votes): each rank writes its values before
  /// `sumAndUpdate`, which replaces them with their sum over the ranks. Integers up to 2²⁴
  /// are summed exactly.
  var votes: UnsafeMutableBufferPointer<Float> { get }
  /// Sums the gradients (and `votes`) over ranks and calls `update(range, summed values)` on
  /// this rank's part in one or more pieces (the pointer is valid only inside the call), then
  /// makes the parameters consistent on every rank.
  func sumAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws
  /// Backward hands over each layer's range of `gradients` as soon as it is final (the step's
  /// last micro-batch; last layer first; every element once per step). An exchange may start
  /// sending it, or, with nothing to exchange, update it at once through `update` while it is
  /// in cache; `sumAndUpdate` then does whatever is left. The default does nothing.
  func gradientsReady(_ range: Range<Int>, update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws
  /// Rank 0 receives every rank's `mine` (its shard of a sharded arena, e.g. Adam's moments)
  /// into `full` (nil on the other ranks).
  func gatherToRoot(_ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?) throws
  /// After the parameters were written outside the update (initialisation, restore): a
  /// barrier when they are shared, so no rank reads them before rank 0 has written them.
  func parametersWritten() throws
}

/// How many `GradientExchange.votes` every exchange carries (after the arena, which is why a
/// model's size leaves room for them: `ModelConfig.maxParameters`).
public let voteSlots = ModelConfig.exchangeTail

extension GradientExchange {
  public func gradientsReady(_ range: Range<Int>, update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {}

  /// Writes the parameters outside the update: every rank its own replica, or, when the node
  /// shares one copy, rank 0 alone (`isRoot`) followed by a barrier.
  public func writeParameters(isRoot: Bool, _ body: () -> Void) throws {
    if !sharesParameters || isRoot { body() }
    try parametersWritten()
  }
}

/// One rank: the sum is this rank's gradients, handed over in place: each layer's as backward
/// finishes it (`gradientsReady`), or all at once in `sumAndUpdate` when backward handed
/// over nothing.
public final class LocalExchange: GradientExchange {
  public let gradients: Arena
  public let parameters: Arena
  public let shards: [Range<Int>]
  public var updatedSlice: Range<Int>? { nil }
  public var sharesParameters: Bool { false }
  public var transport: String { "none (one rank)" }
  public var seconds: Double { 0 }
  /// One rank's votes are their own sum.
  public let votes = UnsafeMutableBufferPointer<Float>.allocate(capacity: voteSlots)

  public init(layout: ParameterLayout) {
    gradients = Arena(layout: layout)
    parameters = Arena(layout: layout)
    shards = [0..<layout.total]
    votes.initialize(repeating: 0)
  }

  deinit { votes.deallocate() }

  /// Elements updated by `gradientsReady` in this step.
  private var updated = 0

  public func gradientsReady(_ range: Range<Int>, update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    updated += range.count
    try update(range, UnsafePointer(gradients.base + range.lowerBound))
  }

  public func sumAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    defer { updated = 0 }
    if updated == gradients.count { return }
    precondition(updated == 0, "backward handed over \(updated) of \(gradients.count) gradients")
    try update(0..<gradients.count, UnsafePointer(gradients.base))
  }

  public func gatherToRoot(_ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?) throws {
    guard let full, let m = mine.baseAddress, let f = full.baseAddress else { return }
    f.update(from: m, count: min(mine.count, full.count))
  }

  public func parametersWritten() throws {}
}
