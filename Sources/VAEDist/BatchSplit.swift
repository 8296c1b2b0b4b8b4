/// How a run splits each global batch: `ranks` ranks, each splitting its rows again into
/// `microBatches` micro-batches, so `shards` parts in all. A rank sums its micro-batches'
/// gradients in order and the exchange adds the ranks' sums in rank order, so the step's bits
/// depend on the parts' rows and on that order of additions, not on where the parts ran.
public struct BatchSplit: Sendable, Equatable, CustomStringConvertible {
  public let ranks: Int
  public let microBatches: Int

  public init(ranks: Int, microBatches: Int) {
    self.ranks = ranks
    self.microBatches = microBatches
  }

  public var shards: Int { ranks * microBatches }

  /// The rows of each part of a global batch of `batch` rows, in the order they are added
  /// (the Trainer's split: ranks first, then each rank's micro-batches).
  public func parts(batch: Int) -> [Range<Int>] {
    (0..<ranks).flatMap { r -> [Range<Int>] in
      let shard = shardRange(rank: r, size: ranks, count: batch)
      return (0..<microBatches).map { j in
        let m = shardRange(rank: j, size: microBatches, count: shard.count)
        return (shard.lowerBound + m.lowerBound)..<(shard.lowerBound + m.upperBound)
      }
    }
  }

  /// Whether a step under `other` adds the same parts in the same order, so both give the same
  /// bits (the same kernel and threads assumed). One rank's K micro-batches and K ranks of one
  /// micro-batch are both a left-to-right sum of the K parts; P ranks × K micro-batches
  /// (P, K > 1) adds the ranks' sums, another bracketing, unless `other` is the same split.
  public func addsLike(_ other: BatchSplit, batch: Int) -> Bool {
    guard parts(batch: batch) == other.parts(batch: batch) else { return false }
    return self == other || (min(ranks, microBatches) == 1 && min(other.ranks, other.microBatches) == 1)
  }

  /// The split a resumed run takes on `ranks` ranks when its micro-batch count is not given:
  /// the checkpoint's shards kept as shards ÷ ranks micro-batches per rank when `ranks`
  /// divides them, else one micro-batch per rank.
  public static func resuming(_ saved: BatchSplit, on ranks: Int) -> BatchSplit {
    BatchSplit(ranks: ranks, microBatches: saved.shards % ranks == 0 ? saved.shards / ranks : 1)
  }

  /// The rank counts that keep `shards` parts: its divisors.
  public static func rankCounts(keeping shards: Int) -> [Int] { (1...max(shards, 1)).filter { shards % $0 == 0 } }

  public var description: String {
    "\(ranks) rank\(ranks == 1 ? "" : "s") × \(microBatches) micro-batch\(microBatches == 1 ? "" : "es")"
  }
}
