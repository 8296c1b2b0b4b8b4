import Foundation
import MPIShim
import VAE

public struct MPIError: Error, CustomStringConvertible {
  public let operation: String
  public let code: Int32
  public var description: String {
    var buf = [CChar](repeating: 0, count: 512)
    vae_mpi_error_string(code, &buf, Int32(buf.count))
    let text = String(decoding: buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    return "MPI \(operation) failed: \(text)"
  }
}

/// Which communicator a process uses.
public enum CommMode: String, Sendable, CaseIterable {
  /// MPI when started by mpirun/srun (Open MPI's OMPI_COMM_WORLD_SIZE, PMI/PMIx variables),
  /// otherwise a single process that never calls MPI_Init.
  case auto
  case local
  case mpi

  /// True when the environment says this process is one rank of an MPI job.
  public static func launchedByMPI(_ env: [String: String] = ProcessInfo.processInfo.environment) -> Bool {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD"]
      .contains { env[$0] != nil }
  }

  public func makeCommunicator() throws -> Communicator {
    switch self {
    case .local: return LocalCommunicator()
    case .mpi: return try MPICommunicator()
    case .auto: return CommMode.launchedByMPI() ? try MPICommunicator() : LocalCommunicator()
    }
  }
}

/// MPI_COMM_WORLD through the C shim. MPI holds all state; this class holds only rank and size.
/// The float allreduce is a reduce-scatter followed by an allgather over the same shards, so
/// every rank ends with bit-identical sums and the sharded optimizer (which runs Adam between
/// the two halves) reduces in exactly the same order as the unsharded one.
public final class MPICommunicator: Communicator {
  public let rank: Int
  public let size: Int
  private var cachedCounts: (key: [Range<Int>], counts: [Int32], displs: [Int32])?
  /// Shards of the arena length and their counts/offsets, computed once (no allocation per step).
  private var cachedShards: (count: Int, shards: [Range<Int>], counts: [Int], displs: [Int])?
  /// The shared-memory window, when in use: this rank's gradient segment and the node's shared
  /// parameter copy (if the parameters are shared).
  private var shared: (grads: UnsafeMutablePointer<Float>, params: UnsafeMutablePointer<Float>?, count: Int)?
  /// Set VAE_DIST_SHM=0 to exchange through MPI collectives even on one node.
  public static var sharedMemoryAllowed: Bool {
    ProcessInfo.processInfo.environment["VAE_DIST_SHM"] != "0"
  }
  /// How gradients travel: "shared memory" (one node) or "MPI collectives".
  public var transport: String { shared == nil ? "MPI reduce-scatter + allgather" : "shared memory (MPI-3 window)" }

  public init() throws {
    var r: Int32 = 0, s: Int32 = 0
    let rc = vae_mpi_init(&r, &s)
    if rc != 0 { throw MPIError(operation: "init", code: rc) }
    rank = Int(r)
    size = Int(s)
  }

  func check(_ rc: Int32, _ op: String) throws {
    if rc != 0 { throw MPIError(operation: op, code: rc) }
  }

  /// The window segment `buffer` is, if any: 0 gradients, 1 the shared parameters.
  private func segment(_ buffer: UnsafeMutableBufferPointer<Float>) -> Int32? {
    guard let s = shared, buffer.count == s.count else { return nil }
    if buffer.baseAddress == s.grads { return 0 }
    if buffer.baseAddress == s.params { return 1 }
    return nil
  }

  private func arenaShards(_ count: Int) -> (shards: [Range<Int>], counts: [Int], displs: [Int]) {
    if let c = cachedShards, c.count == count { return (c.shards, c.counts, c.displs) }
    let shards = shards(of: count)
    let c = (count: count, shards: shards, counts: shards.map(\.count), displs: shards.map(\.lowerBound))
    cachedShards = c
    return (c.shards, c.counts, c.displs)
  }

  public func makeSharedArenas(layout: ParameterLayout, shareParameters: Bool) throws -> SharedArenas? {
    guard size > 1, Self.sharedMemoryAllowed, shared == nil, layout.total > 0 else { return nil }
    var g: UnsafeMutablePointer<Float>?, p: UnsafeMutablePointer<Float>?
    let rc = vae_mpi_shm_init(layout.total, shareParameters ? 1 : 0, &g, &p)
    if rc == -1 { return nil }  // ranks on several nodes: MPI collectives
    try check(rc, "shared-memory window")
    guard let g else { return nil }
    shared = (g, p, layout.total)
    return SharedArenas(
      grads: Arena(layout: layout, external: g), params: p.map { Arena(layout: layout, external: $0) })
  }

  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Float>) throws {
    guard size > 1, let base = buffer.baseAddress else { return }
    precondition(segment(buffer) != 1, "the shared parameters are one copy: there is nothing to sum")
    if segment(buffer) == 0 {
      let shards = arenaShards(buffer.count).shards
      try reduceScatterSum(buffer, shards: shards)
      try allgather(buffer, shards: shards)
    } else if buffer.count >= size && buffer.count <= Int(Int32.max) {
      let shards = shards(of: buffer.count)
      try reduceScatterSum(buffer, shards: shards)
      try allgather(buffer, shards: shards)
    } else {
      try check(vae_mpi_allreduce_sum_f32(base, buffer.count), "allreduce")
    }
  }

  /// On the shared-memory window: reduce-scatter, then `body` reads every shard where its owner
  /// summed it (no allgather copy), then a barrier so owners may overwrite their segments.
  public func withAllreducedSum(
    _ buffer: UnsafeMutableBufferPointer<Float>, _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    guard size > 1, segment(buffer) == 0 else { return try allreduceThenCall(buffer, body) }
    let t0 = wallTime()
    let shards = arenaShards(buffer.count).shards
    try reduceScatterSum(buffer, shards: shards)
    try check(vae_mpi_shm_sync(), "barrier")  // every owner has summed its shard
    let t1 = wallTime()
    for (q, r) in shards.enumerated() where !r.isEmpty {
      guard let seg = vae_mpi_shm_segment(Int32(q)) else { throw MPIError(operation: "shared segment", code: -1) }
      try body(r, seg + r.lowerBound)
    }
    let t2 = wallTime()
    try check(vae_mpi_shm_sync(), "barrier")
    return (t1 - t0) + (wallTime() - t2)
  }

  /// On the shared-memory window: after a barrier, this rank's shard is summed chunk by chunk
  /// into a small scratch buffer and handed to `body` while it is in cache; nothing is written
  /// back to the gradient segments.
  public func withReducedShard(
    _ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>],
    _ body: (Range<Int>, UnsafePointer<Float>) throws -> Void
  ) throws -> Double {
    guard size > 1, segment(buffer) == 0 else { return try reduceScatterThenCall(buffer, shards: shards, body) }
    var t = wallTime()
    try check(vae_mpi_shm_sync(), "barrier")  // every rank's backward is done
    var exchange = wallTime() - t
    let mine = shards[rank]
    var at = mine.lowerBound
    while at < mine.upperBound {
      let n = min(Self.chunk, mine.upperBound - at)
      t = wallTime()
      vae_mpi_shm_reduce_chunk(at, n, scratch.ptr)
      exchange += wallTime() - t
      try body(at..<(at + n), UnsafePointer(scratch.ptr))
      at += n
    }
    return exchange
  }

  /// Elements summed per chunk of `withReducedShard` (32 KB: stays in L1/L2 for Adam).
  static let chunk = 8192
  private let scratch = Buffer(MPICommunicator.chunk)

  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
    guard size > 1, let base = buffer.baseAddress else { return }
    try check(vae_mpi_allreduce_sum_f64(base, buffer.count), "allreduce")
  }

  private func countsAndDispls(_ shards: [Range<Int>]) -> ([Int32], [Int32]) {
    if let c = cachedCounts, c.key == shards { return (c.counts, c.displs) }
    let counts = shards.map { Int32($0.count) }
    let displs = shards.map { Int32($0.lowerBound) }
    cachedCounts = (shards, counts, displs)
    return (counts, displs)
  }

  public func reduceScatterSum(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws {
    guard size > 1, let base = buffer.baseAddress else { return }
    precondition(shards.count == size)
    if segment(buffer) == 0 {
      let mine = shards[rank]
      try check(vae_mpi_shm_reduce_scatter(mine.lowerBound, mine.upperBound), "shared-memory reduce")
      return
    }
    let (counts, displs) = countsAndDispls(shards)
    try check(vae_mpi_reduce_scatter_sum_f32(base, counts, displs), "reduce-scatter")
  }

  public func allgather(_ buffer: UnsafeMutableBufferPointer<Float>, shards: [Range<Int>]) throws {
    guard size > 1, let base = buffer.baseAddress else { return }
    precondition(shards.count == size)
    if let which = segment(buffer) {
      let cached = arenaShards(buffer.count)
      precondition(cached.shards == shards, "the shared window is exchanged in its arena shards")
      try check(vae_mpi_shm_allgather(which, cached.counts, cached.displs), "shared-memory allgather")
      return
    }
    let (counts, displs) = countsAndDispls(shards)
    try check(vae_mpi_allgather_f32(base, counts, displs), "allgather")
  }

  public func gather(
    _ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?, shards: [Range<Int>],
    root: Int
  ) throws {
    precondition(shards.count == size && mine.count == shards[rank].count)
    let (counts, displs) = countsAndDispls(shards)
    let send = mine.baseAddress ?? UnsafePointer(scratch.ptr)
    try check(vae_mpi_gather_f32(send, Int32(mine.count), full?.baseAddress, counts, displs, Int32(root)), "gather")
  }

  public func allgather(_ value: UInt64) throws -> [UInt64] {
    var out = [UInt64](repeating: 0, count: size)
    try out.withUnsafeMutableBufferPointer { p in
      try p.withMemoryRebound(to: CUnsignedLongLong.self) {
        try check(vae_mpi_allgather_u64(CUnsignedLongLong(value), $0.baseAddress), "allgather")
      }
    }
    return out
  }

  public func allgather(words: [UInt64]) throws -> [[UInt64]] {
    let n = words.count
    guard n > 0 else { return Array(repeating: [], count: size) }
    var out = [UInt64](repeating: 0, count: size * n)
    let send = words.map { CUnsignedLongLong($0) }
    try out.withUnsafeMutableBufferPointer { p in
      try p.withMemoryRebound(to: CUnsignedLongLong.self) {
        try check(vae_mpi_allgather_u64n(send, Int32(n), $0.baseAddress), "allgather")
      }
    }
    return (0..<size).map { Array(out[($0 * n)..<(($0 + 1) * n)]) }
  }

  public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
    guard size > 1 else { return }
    var n = UInt64(bytes.count)
    try check(vae_mpi_bcast_bytes(&n, 8, Int32(root)), "broadcast")
    if rank != root { bytes = [UInt8](repeating: 0, count: Int(n)) }
    if n > 0 {
      try bytes.withUnsafeMutableBytes {
        try check(vae_mpi_bcast_bytes($0.baseAddress, Int(n), Int32(root)), "broadcast")
      }
    }
  }

  public func barrier() throws { try check(vae_mpi_barrier(), "barrier") }

  public func wallTime() -> Double { vae_mpi_wtime() }

  public func abort(code: Int32, message: String) -> Never {
    Console.error(message)
    vae_mpi_abort(code)
    exit(code)
  }

  public func finalize() { _ = vae_mpi_finalize() }
}
