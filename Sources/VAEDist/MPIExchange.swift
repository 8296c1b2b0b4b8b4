import MPIShim
import VAE

/// Shards of an arena as MPI's per-rank counts and offsets (computed once: no allocation per step).
struct ArenaShards {
  let ranges: [Range<Int>]
  let counts: [Int32]
  let displs: [Int32]
  init(total: Int, ranks: Int) {
    ranges = (0..<ranks).map { shardRange(rank: $0, size: ranks, count: total) }
    counts = ranges.map { Int32($0.count) }
    displs = ranges.map { Int32($0.lowerBound) }
  }
}

/// The exchange through MPI (ranks on several nodes, or `VAE_DIST_SHM=0`), in buckets that
/// start while backward still runs. As backward hands over each layer's range
/// (`gradientsReady`), contiguous ranges gather into a bucket; a bucket of `bucketFloats` or
/// more, or one the next range does not touch, starts at once as a non-blocking all-to-all
/// (persistent where MPI has them, so no step builds a schedule; else `MPI_Ialltoallv`) that
/// sends each rank the bucket's part of its shard; later calls drive
/// MPI's progress between layers. `sumAndUpdate` starts the rest (and the votes), waits, and
/// sums the p received copies of this rank's shard in rank order, ((g0 + g1) + g2) + …, the
/// shared window's order, so the bits do not depend on the transport, the buckets or whether
/// they overlapped. Then an allgather, of the gradients (every rank updates everything) or,
/// sharded, of the parameters after each rank updated its shard. The votes ride after the
/// arena as part of the last rank's shard. `VAE_DIST_OVERLAP=0` starts every bucket in
/// `sumAndUpdate` instead (one all-to-all, after backward).
final class CollectiveExchange: GradientExchange {
  let gradients: Arena
  let parameters: Arena
  let votes: UnsafeMutableBufferPointer<Float>
  let sharded: Bool
  let overlaps: Bool
  let rank: Int
  let size: Int
  private let split: ArenaShards
  /// The shards of the arena and its vote slots (the last shard extended over them).
  private let wire: [Range<Int>]
  private let wireCounts: [Int32]
  /// Gradients then their vote slots, parameters then theirs, and the votes themselves.
  private let storage: UnsafeMutableBufferPointer<Float>
  /// p slabs of this rank's wire shard: slab q receives rank q's values of it.
  private let slabs: UnsafeMutableBufferPointer<Float>
  /// Per request slot, the all-to-all's four count/offset arrays (p each), valid until it completes.
  private let plans: UnsafeMutableBufferPointer<Int32>
  /// Requests outstanding, floats started this step, and the bucket being gathered.
  private var outstanding = 0
  private var startedFloats = 0
  private var pending: Range<Int>?
  /// A bucket of this many floats (1 MiB) or more starts at once.
  static let bucketFloats = 1 << 18
  private(set) var seconds = 0.0

  init(layout: ParameterLayout, ranks: Communicator, sharded: Bool, overlaps: Bool) {
    let n = layout.total + voteSlots
    storage = .allocate(capacity: 2 * n + voteSlots)
    storage.initialize(repeating: 0)
    gradients = Arena(layout: layout, view: storage.baseAddress!)
    parameters = Arena(layout: layout, view: storage.baseAddress! + n)
    votes = UnsafeMutableBufferPointer(rebasing: storage[(2 * n)...])
    self.sharded = sharded
    self.overlaps = overlaps
    rank = ranks.rank
    size = ranks.size
    let split = ArenaShards(total: layout.total, ranks: ranks.size), last = ranks.size - 1
    self.split = split
    wire = split.ranges.indices.map { $0 == last ? split.ranges[$0].lowerBound..<n : split.ranges[$0] }
    wireCounts = wire.map { Int32($0.count) }
    slabs = .allocate(capacity: max(wire[rank].count * ranks.size, 1))
    slabs.initialize(repeating: 0)
    plans = .allocate(capacity: Int(VAE_MPI_MAX_REQUESTS) * 4 * ranks.size)
    plans.initialize(repeating: 0)
  }

  deinit {
    vae_mpi_free_requests()
    storage.deallocate()
    slabs.deallocate()
    plans.deallocate()
  }

  var shards: [Range<Int>] { split.ranges }
  var updatedSlice: Range<Int>? { sharded ? split.ranges[rank] : nil }
  var sharesParameters: Bool { false }
  var transport: String {
    "MPI all-to-all in buckets\(overlaps ? ", overlapped with backward" : "") + allgather"
  }

  func gradientsReady(_ range: Range<Int>, update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    guard overlaps, !range.isEmpty else { return }
    let t0 = MonotonicClock.now()
    defer { seconds += MonotonicClock.now() - t0 }
    if let p = pending, range.upperBound == p.lowerBound || range.lowerBound == p.upperBound {
      pending = min(p.lowerBound, range.lowerBound)..<max(p.upperBound, range.upperBound)
    } else {
      if let p = pending { try start(p) }
      pending = range
    }
    if let p = pending, p.count >= Self.bucketFloats {
      try start(p)
      pending = nil
    }
    var done: Int32 = 0
    try checkMPI(vae_mpi_test_requests(Int32(outstanding), &done), "exchange progress")
  }

  /// Starts the all-to-all of wire range `r`: rank q gets r ∩ its shard, into slab slot
  /// (this rank's slab for the sender) at the same offset within the shard.
  private func start(_ r: Range<Int>) throws {
    if outstanding == Int(VAE_MPI_MAX_REQUESTS) {
      try checkMPI(vae_mpi_wait_requests(Int32(outstanding)), "exchange")
      outstanding = 0
    }
    let plan = plans.baseAddress! + outstanding * 4 * size
    let sc = plan, sd = plan + size, rc = plan + 2 * size, rd = plan + 3 * size
    let mine = wire[rank], got = r.clamped(to: mine), stride = mine.count
    for q in 0..<size {
      let part = r.clamped(to: wire[q])
      sc[q] = Int32(part.count)
      sd[q] = Int32(part.isEmpty ? 0 : part.lowerBound - r.lowerBound)
      rc[q] = Int32(got.count)
      rd[q] = Int32(q * stride + (got.isEmpty ? 0 : got.lowerBound - mine.lowerBound))
    }
    try checkMPI(
      vae_mpi_ialltoallv_f32(
        gradients.base + r.lowerBound, sc, sd, slabs.baseAddress, rc, rd, Int32(outstanding), Int64(r.lowerBound),
        Int64(r.upperBound)),
      "all-to-all")
    outstanding += 1
    startedFloats += r.count
  }

  /// Starts what backward did not hand over (everything, without overlap) and the votes,
  /// waits for every bucket, and sums this rank's shard in rank order into `gradients`.
  private func finishSum() throws {
    let total = gradients.count
    (gradients.base + total).update(from: votes.baseAddress!, count: voteSlots)
    if let p = pending { try start(p) }
    if startedFloats == 0 { try start(0..<total) }
    precondition(startedFloats == total, "backward handed over \(startedFloats) of \(total) gradients")
    try start(total..<(total + voteSlots))
    try checkMPI(vae_mpi_wait_requests(Int32(outstanding)), "exchange")
    (outstanding, startedFloats, pending) = (0, 0, nil)
    let mine = wire[rank]
    vae_mpi_sum_slabs(gradients.base + mine.lowerBound, slabs.baseAddress, Int32(size), mine.count, mine.count)
  }

  func sumAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    let t0 = MonotonicClock.now(), total = gradients.count
    try finishSum()
    if !sharded {
      try checkMPI(vae_mpi_allgather_f32(gradients.base, wireCounts, split.displs), "allgather")
      votes.baseAddress!.update(from: gradients.base + total, count: voteSlots)
      seconds += MonotonicClock.now() - t0
      return try update(0..<total, UnsafePointer(gradients.base))
    }
    seconds += MonotonicClock.now() - t0
    let mine = split.ranges[rank]
    if !mine.isEmpty { try update(mine, UnsafePointer(gradients.base + mine.lowerBound)) }
    let t1 = MonotonicClock.now()
    if rank == size - 1 { (parameters.base + total).update(from: gradients.base + total, count: voteSlots) }
    try checkMPI(vae_mpi_allgather_f32(parameters.base, wireCounts, split.displs), "allgather")
    votes.baseAddress!.update(from: parameters.base + total, count: voteSlots)
    seconds += MonotonicClock.now() - t1
  }

  func gatherToRoot(_ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?) throws {
    try gatherShards(mine, into: full, split)
  }

  func parametersWritten() throws {}
}

/// Rank 0 receives every rank's shard (`split`) of an arena into `full`.
func gatherShards(_ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?, _ split: ArenaShards) throws {
  var empty: Float = 0
  try withUnsafeMutablePointer(to: &empty) { e in
    let send = mine.baseAddress ?? UnsafePointer(e)
    try checkMPI(
      vae_mpi_gather_f32(send, Int32(mine.count), full?.baseAddress, split.counts, split.displs, 0), "gather")
  }
}

/// The exchange on one node through an MPI-3 shared window: each rank's gradient arena is its
/// window segment (backward writes straight into it); with the sharded optimizer rank 0's
/// segment also holds the node's one parameter copy, which each rank's Adam updates in its
/// own slice.
///
/// Ordering protocol (every `sync` is a memory fence + barrier over the node):
/// - plain: sum my shard over every segment into my segment (after a sync: all backward passes
///   are done) → sync (every shard is summed) → update from each owner's segment → sync (no
///   rank overwrites its segment in the next backward while another still reads it);
/// - sharded: sync (all backward passes done) → sum my shard chunk by chunk into a small
///   scratch buffer and update from it while it is in cache (nothing is written back) → sync
///   (every slice of the shared parameters is updated before anyone reads them).
/// Parameters written outside the update (initialisation, restore) are written by rank 0 and
/// followed by a sync. The sums add segments in rank order, as the collective path does.
/// The votes ride in each segment's tail, after the arena: each rank writes its own before the
/// first sync and sums every tail after it; no rank writes its tail again before the last sync.
final class SharedWindowExchange: GradientExchange {
  let gradients: Arena
  let parameters: Arena
  let votes: UnsafeMutableBufferPointer<Float>
  let sharesParameters: Bool
  let rank: Int
  private let split: ArenaShards
  private let counts: [Int]
  private let displs: [Int]
  private(set) var seconds = 0.0
  /// Elements summed per chunk in the sharded path (32 KB: stays in L1/L2 for Adam).
  static let chunk = 8192
  private let scratch = Buffer(SharedWindowExchange.chunk)

  /// nil when the ranks span several nodes (then the collectives are used).
  init?(layout: ParameterLayout, ranks: Communicator, sharded: Bool) throws {
    var g: UnsafeMutablePointer<Float>?, p: UnsafeMutablePointer<Float>?
    let rc = vae_mpi_shm_init(layout.total + voteSlots, sharded ? 1 : 0, &g, &p)
    if rc == -1 { return nil }
    try checkMPI(rc, "shared-memory window")
    guard let g else { return nil }
    // Views, not zeroing arenas: the shim zeroed every segment before its closing barrier, and
    // zeroing the shared parameters here would race with rank 0 initialising them.
    gradients = Arena(layout: layout, view: g)
    parameters = p.map { Arena(layout: layout, view: $0) } ?? Arena(layout: layout)
    sharesParameters = p != nil
    rank = ranks.rank
    split = ArenaShards(total: layout.total, ranks: ranks.size)
    counts = split.ranges.map(\.count)
    displs = split.ranges.map(\.lowerBound)
    votes = .allocate(capacity: voteSlots)
    votes.initialize(repeating: 0)
  }

  deinit { votes.deallocate() }

  var shards: [Range<Int>] { split.ranges }
  var updatedSlice: Range<Int>? { sharesParameters ? split.ranges[rank] : nil }
  var transport: String { "shared memory (MPI-3 window)" }

  func sumAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    (gradients.base + gradients.count).update(from: votes.baseAddress!, count: voteSlots)
    if sharesParameters { try sumMyShardAndUpdate(update) } else { try sumAllAndUpdate(update) }
  }

  private func sumAllAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    let t0 = MonotonicClock.now()
    let mine = split.ranges[rank]
    try checkMPI(vae_mpi_shm_reduce_scatter(mine.lowerBound, mine.upperBound), "shared-memory reduce")
    sumVotes()
    try checkMPI(vae_mpi_shm_sync(), "barrier")
    seconds += MonotonicClock.now() - t0
    for (q, r) in split.ranges.enumerated() where !r.isEmpty {
      guard let segment = vae_mpi_shm_segment(Int32(q)) else { throw MPIError(operation: "shared segment", code: -1) }
      try update(r, segment + r.lowerBound)
    }
    let t1 = MonotonicClock.now()
    try checkMPI(vae_mpi_shm_sync(), "barrier")
    seconds += MonotonicClock.now() - t1
  }

  private func sumMyShardAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
    var t = MonotonicClock.now()
    try checkMPI(vae_mpi_shm_sync(), "barrier")
    sumVotes()
    seconds += MonotonicClock.now() - t
    let mine = split.ranges[rank]
    var at = mine.lowerBound
    while at < mine.upperBound {
      let n = min(Self.chunk, mine.upperBound - at)
      t = MonotonicClock.now()
      vae_mpi_shm_reduce_chunk(at, n, scratch.ptr)
      seconds += MonotonicClock.now() - t
      try update(at..<(at + n), UnsafePointer(scratch.ptr))
      at += n
    }
    t = MonotonicClock.now()
    try parametersWritten()
    seconds += MonotonicClock.now() - t
  }

  /// Every rank's votes summed in rank order from the segments' tails (call between the
  /// first and the last sync of an exchange).
  private func sumVotes() {
    vae_mpi_shm_reduce_chunk(gradients.count, voteSlots, votes.baseAddress!)
  }

  func gatherToRoot(_ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?) throws {
    try gatherShards(mine, into: full, split)
  }

  func parametersWritten() throws {
    guard sharesParameters else { return }
    try checkMPI(vae_mpi_shm_allgather(1, counts, displs), "shared-memory allgather")
  }
}
