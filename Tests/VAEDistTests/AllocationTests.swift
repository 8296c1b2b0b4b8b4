import Foundation
import TestSupport
import XCTest

/// "No allocation in the step loop", checked on the release binary (what users run; a debug
/// build boxes values the optimiser keeps on the stack): `vae-dist bench` runs under an
/// LD_PRELOAD allocator counter (Tests/alloc/count_malloc.c) with 4 timed blocks of 50 and then
/// of 150 steps. The 400 extra training steps (batch, forward, backward, exchange, Adam, ten
/// epoch boundaries) must add no allocations: one per step would add 400 (800 at np 2); the
/// allowance covers the benchmark printing its timings, whose digits vary.
final class AllocationTests: XCTestCase {
  var dir = ""
  var lib = ""
  var binary = ""

  override func setUpWithError() throws {
    guard let release = VAEDistBinary.releasePath else {
      throw XCTSkip("no release build of vae-dist (swift build -c release; scripts/test builds it)")
    }
    binary = release
    dir = NSTemporaryDirectory() + "vae-alloc-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    lib = dir + "/libcount.so"
    let cc = try Subprocess.run(
      ["/usr/bin/env", "cc", "-shared", "-fPIC", "-O2", "-o", lib, TestPaths.packageRoot + "/Tests/alloc/count_malloc.c"])
    guard cc.status == 0 else { throw XCTSkip("no C compiler to build the allocation counter: \(cc.stderr.prefix(200))") }
  }

  override func tearDownWithError() throws {
    if !dir.isEmpty { try? FileManager.default.removeItem(atPath: dir) }
  }

  /// Total allocations reported by every process of one benchmark run.
  func allocations(_ prefix: [String], steps: Int, extra: [String] = [], env: [String: String] = [:]) throws -> Int {
    let r = try Subprocess.run(
      prefix + [binary, "bench", "--config", TestPaths.packageRoot + "/configs/smoke.yaml", "--warmup", "10",
                "--steps", "\(steps)", "--repeats", "4", "--json"] + extra,
      environment: [
        "LD_PRELOAD": lib, "OPENBLAS_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_orte_tmpdir_base": dir,
      ].merging(env) { $1 }, cwd: dir)
    XCTAssertEqual(r.status, 0, r.stderr)
    let counts = r.stderr.split(separator: "\n").compactMap { line -> Int? in
      guard line.hasPrefix("allocations ") else { return nil }
      return Int(line.dropFirst("allocations ".count))
    }
    XCTAssertFalse(counts.isEmpty, r.stderr)
    return counts.reduce(0, +)
  }

  func testSingleProcessStepsDoNotAllocate() throws {
    let short = try allocations([], steps: 50), long = try allocations([], steps: 150)
    print("single process: \(short) allocations with 200 timed steps, \(long) with 600")
    XCTAssertGreaterThan(short, 100, "the counter must see the program's own allocations")
    XCTAssertLessThan(abs(long - short), 40, "400 extra training steps allocated")
  }

  func testMPIStepsDoNotAllocate() throws {
    guard let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first(where: FileManager.default.isExecutableFile)
    else { throw XCTSkip("mpirun not found") }
    let prefix = [mpirun, "--timeout", "120", "-np", "2", "--oversubscribe", "--bind-to", "none", "-x", "LD_PRELOAD"]
    for extra in [["--no-shard-optimizer"], []] {
      let short = try allocations(prefix, steps: 50, extra: extra)
      let long = try allocations(prefix, steps: 150, extra: extra)
      print("np 2 \(extra): \(short) allocations with 200 timed steps, \(long) with 600 (all processes)")
      XCTAssertLessThan(abs(long - short), 80, "np 2 \(extra): 400 extra training steps allocated")
    }
  }

  /// The collective exchange (`VAE_DIST_SHM=0`): Open MPI itself allocates inside its
  /// collectives (its blocking reduce-scatter + allgather made 3 allocations a step per rank),
  /// and a fresh `MPI_Ialltoallv` per bucket made 19, so the buckets are persistent all-to-alls
  /// started again each step: at most 5 a step per rank, the allgather's and MPI_Start's.
  func testCollectiveExchangeStepsReusePersistentRequests() throws {
    guard let mpirun = ["/usr/bin/mpirun", "/usr/local/bin/mpirun"].first(where: FileManager.default.isExecutableFile)
    else { throw XCTSkip("mpirun not found") }
    let prefix = [mpirun, "--timeout", "120", "-np", "2", "--oversubscribe", "--bind-to", "none", "-x", "LD_PRELOAD",
                  "-x", "VAE_DIST_SHM"]
    let short = try allocations(prefix, steps: 50, env: ["VAE_DIST_SHM": "0"])
    let long = try allocations(prefix, steps: 150, env: ["VAE_DIST_SHM": "0"])
    print("np 2, collective exchange: \(short) allocations with 200 timed steps, \(long) with 600 (all processes)")
    XCTAssertLessThan(abs(long - short), 5 * 800, "np 2, collective exchange: more than 5 allocations a step per rank")
  }
}
