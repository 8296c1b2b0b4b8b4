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

func checkMPI(_ rc: Int32, _ op: String) throws {
  if rc != 0 { throw MPIError(operation: op, code: rc) }
}

/// What the launcher (mpirun, srun, MPICH's Hydra) says about this process, before MPI_Init:
/// the one place that reads its environment variables.
public struct LaunchEnvironment: Sendable {
  /// This process is one rank of an MPI job.
  public let launchedByMPI: Bool
  /// Its rank and the job's size, when the launcher says (nil otherwise).
  public let rank: Int?
  public let size: Int?
  /// Ranks on this node (Open MPI), when known.
  public let localSize: Int?

  public init(_ env: [String: String] = ProcessInfo.processInfo.environment) {
    launchedByMPI = ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "PMIX_RANK", "MPI_LOCALNRANKS", "HYDRA_CONTROL_FD"]
      .contains { env[$0] != nil }
    func first(_ names: [String]) -> Int? { names.lazy.compactMap { env[$0].flatMap { Int($0) } }.first }
    rank = first(["OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID"])
    size = first(["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS"])
    localSize = first(["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS_PER_NODE"])
  }

  public static var current: LaunchEnvironment { LaunchEnvironment() }
}

/// Which communicator a process uses.
public enum CommMode: String, Sendable, CaseIterable {
  /// MPI when started by mpirun/srun (`LaunchEnvironment.launchedByMPI`), otherwise a single
  /// process that never calls MPI_Init.
  case auto
  case local
  case mpi

  /// Whether this mode uses MPI in this environment.
  public var usesMPI: Bool { self == .mpi || (self == .auto && LaunchEnvironment.current.launchedByMPI) }

  public func makeCommunicator() throws -> Communicator {
    usesMPI ? try MPICommunicator() : LocalCommunicator()
  }
}

/// MPI_COMM_WORLD through the C shim. MPI holds all state; this class holds only rank and size.
public final class MPICommunicator: Communicator {
  public let rank: Int
  public let size: Int
  /// Set VAE_DIST_SHM=0 to exchange through MPI collectives even on one node.
  public static var sharedMemoryAllowed: Bool {
    ProcessInfo.processInfo.environment["VAE_DIST_SHM"] != "0"
  }
  /// Set VAE_DIST_OVERLAP=0 to start the collective exchange only after backward, in one piece.
  public static var overlapAllowed: Bool {
    ProcessInfo.processInfo.environment["VAE_DIST_OVERLAP"] != "0"
  }
  /// The largest arena (elements) the exchange can carry: MPI's per-rank counts are `int`.
  public static let maxArenaElements = Int(Int32.max) - voteSlots

  public init() throws {
    var r: Int32 = 0, s: Int32 = 0
    try checkMPI(vae_mpi_init(&r, &s), "init")
    rank = Int(r)
    size = Int(s)
  }

  public func makeGradientExchange(layout: ParameterLayout, shardOptimizer: Bool) throws -> GradientExchange {
    guard layout.total <= Self.maxArenaElements else {
      throw MPIError(operation: "exchange setup (\(layout.total) parameters; at most \(Self.maxArenaElements))", code: -1)
    }
    let sharded = shardOptimizer && size > 1
    if size > 1, Self.sharedMemoryAllowed,
      let window = try SharedWindowExchange(layout: layout, ranks: self, sharded: sharded)
    {
      return window
    }
    return CollectiveExchange(layout: layout, ranks: self, sharded: sharded, overlaps: Self.overlapAllowed)
  }

  public func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {
    guard size > 1, let base = buffer.baseAddress else { return }
    try checkMPI(vae_mpi_allreduce_sum_f64(base, buffer.count), "allreduce")
  }

  public func allgather(words: [UInt64]) throws -> [[UInt64]] {
    let n = words.count
    guard n > 0 else { return Array(repeating: [], count: size) }
    var out = [UInt64](repeating: 0, count: size * n)
    let send = words.map { CUnsignedLongLong($0) }
    try out.withUnsafeMutableBufferPointer { p in
      try p.withMemoryRebound(to: CUnsignedLongLong.self) {
        try checkMPI(vae_mpi_allgather_u64n(send, Int32(n), $0.baseAddress), "allgather")
      }
    }
    return (0..<size).map { Array(out[($0 * n)..<(($0 + 1) * n)]) }
  }

  public func broadcast(_ bytes: inout [UInt8], root: Int) throws {
    guard size > 1 else { return }
    var n = UInt64(bytes.count)
    try checkMPI(vae_mpi_bcast_bytes(&n, 8, Int32(root)), "broadcast")
    if rank != root { bytes = [UInt8](repeating: 0, count: Int(n)) }
    if n > 0 {
      try bytes.withUnsafeMutableBytes {
        try checkMPI(vae_mpi_bcast_bytes($0.baseAddress, Int(n), Int32(root)), "broadcast")
      }
    }
  }

  public func barrier() throws { try checkMPI(vae_mpi_barrier(), "barrier") }

  public func finalize() { _ = vae_mpi_finalize() }
}
