import Foundation
/// How replicas talk: a sum over all ranks, a broadcast and an abort. Single-process runs use
/// `LocalCommunicator` (a sum over one rank, never touching MPI); `mpirun` runs use
/// `MPICommunicator`.
public protocol Communicator: AnyObject {
  var rank: Int { get }
  var size: Int { get }
  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws
  func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws
  func broadcast(_ bytes: inout [UInt8], root: Int) throws
  func barrier() throws
  /// Ends every rank of the job with `code` after printing `message` (one line) on stderr.
  func abort(code: Int32, message: String) -> Never
}

extension Communicator {
  public var isRoot: Bool { rank == 0 }

  /// Rows [⌊rB/P⌋, ⌊(r+1)B/P⌋) of a global batch of `globalBatch` rows: any P ≤ B works.
  public func shard(of globalBatch: Int) -> Range<Int> {
    shardRange(rank: rank, size: size, count: globalBatch)
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

/// One process, one rank: the sum over ranks is the identity.
public final class LocalCommunicator: Communicator {
  public init() {}
  public var rank: Int { 0 }
  public var size: Int { 1 }
  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {}
  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
  public func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
  public func barrier() throws {}
  public func abort(code: Int32, message: String) -> Never {
    Console.error(message)
    exit(code)
  }
}
