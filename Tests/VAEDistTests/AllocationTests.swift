import Foundation
import TestSupport
import VAE
import XCTest

/// "No allocation in the step loop", checked on the release binary (what users run; a debug
/// build boxes values the optimiser keeps on the stack): `vae-dist bench` runs under an
/// LD_PRELOAD allocator counter (Tests/alloc/count_malloc.c) with 4 timed blocks of 50 and then
/// of 150 steps. The 400 extra training steps (batch, forward, backward, exchange, Adam, ten
/// epoch boundaries) must add no allocations: one per step would add 400 (800 at np 2); the
/// allowance covers the benchmark printing its timings, whose digits vary.
///
/// The counter attributes each allocation to the code that called `malloc`: OpenBLAS's AVX-512
/// small-matrix kernels (SkylakeX, Cooperlake) allocate a packing buffer inside `cblas_sgemm`
/// on some shapes (one a step here, the decoder's input gradient), which is OpenBLAS's, not a
/// step of ours; everything else (vae-dist, the Swift runtime and Foundation it calls, Open MPI)
/// is counted as before. `testCounterAttributesEachAllocationToItsCaller` checks the counter.
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

  /// Allocations reported by every process of one benchmark run, not counting OpenBLAS's own.
  func allocations(_ prefix: [String], steps: Int, extra: [String] = [], env: [String: String] = [:]) throws -> Int {
    try counts(prefix, steps: steps, extra: extra, env: env).ours
  }

  /// Both counts of one benchmark run, summed over its processes.
  func counts(
    _ prefix: [String], steps: Int, extra: [String] = [], env: [String: String] = [:], config: String = "smoke"
  ) throws -> (ours: Int, openblas: Int) {
    let r = try Subprocess.run(
      prefix + [binary, "bench", "--config", TestPaths.packageRoot + "/configs/\(config).yaml", "--warmup", "10",
                "--steps", "\(steps)", "--repeats", "4", "--json"] + extra,
      environment: [
        "LD_PRELOAD": lib, "OPENBLAS_NUM_THREADS": "1", "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OMPI_MCA_orte_tmpdir_base": dir,
      ].merging(env) { $1 }, cwd: dir)
    XCTAssertEqual(r.status, 0, r.stderr)
    return (Self.sum(of: "allocations", in: r.stderr), Self.sum(of: "allocations-openblas", in: r.stderr))
  }

  /// The sum of the numbers on the lines "`label` N" of the counter's output.
  static func sum(of label: String, in stderr: String) -> Int {
    let counts = stderr.split(separator: "\n").compactMap { line -> Int? in
      guard line.hasPrefix(label + " ") else { return nil }
      return Int(line.dropFirst(label.count + 1))
    }
    XCTAssertFalse(counts.isEmpty, "no '\(label)' line in: \(stderr.suffix(500))")
    return counts.reduce(0, +)
  }

  /// The counter itself: a program's own allocations are counted as ours whatever the kernel,
  /// and an OpenBLAS kernel's count as OpenBLAS's (all of them under Cooperlake, where this
  /// call shape allocates once a call, none under Haswell, where it does not).
  func testCounterAttributesEachAllocationToItsCaller() throws {
    let probe = dir + "/attribution_probe"
    let cc = try Subprocess.run(
      ["/usr/bin/env", "cc", "-O2", "-o", probe, TestPaths.packageRoot + "/Tests/alloc/attribution_probe.c", "-lopenblas"])
    guard cc.status == 0 else { throw XCTSkip("cannot build the probe against OpenBLAS: \(cc.stderr.prefix(200))") }
    func run(ours: Int, gemms: Int, kernel: String?) throws -> (ours: Int, openblas: Int) {
      var env = ["LD_PRELOAD": lib, "OPENBLAS_NUM_THREADS": "1"]
      if let kernel { env["OPENBLAS_CORETYPE"] = kernel }
      let r = try Subprocess.run([probe, "\(ours)", "\(gemms)"], environment: env)
      XCTAssertEqual(r.status, 0, r.stderr)
      return (Self.sum(of: "allocations", in: r.stderr), Self.sum(of: "allocations-openblas", in: r.stderr))
    }
    let runnable = BLASInfo.x86Kernels.filter(\.missing.isEmpty).map(\.name)
    for kernel in [nil] + ["Haswell", "Cooperlake"].filter(runnable.contains) {
      let base = try run(ours: 0, gemms: 0, kernel: kernel), both = try run(ours: 1000, gemms: 500, kernel: kernel)
      XCTAssertEqual(both.ours - base.ours, 1000, "kernel \(kernel ?? "default"): the program's own allocations")
      XCTAssertTrue([0, 500].contains(both.openblas - base.openblas), "kernel \(kernel ?? "default"): \(both)")
      if kernel == "Cooperlake" { XCTAssertEqual(both.openblas - base.openblas, 500, "Cooperlake's small-matrix kernel") }
      if kernel == "Haswell" { XCTAssertEqual(both.openblas, 0, "Haswell's kernel allocates nothing") }
    }
  }

  func testSingleProcessStepsDoNotAllocate() throws {
    let shortRun = try counts([], steps: 50), longRun = try counts([], steps: 150)
    print("single process (OpenBLAS \(BLASInfo.coreName)): \(shortRun.ours) allocations with 200 timed steps, "
      + "\(longRun.ours) with 600; OpenBLAS's own: \(shortRun.openblas), \(longRun.openblas)")
    let (short, long) = (shortRun.ours, longRun.ours)
    XCTAssertGreaterThan(short, 100, "the counter must see the program's own allocations")
    XCTAssertLessThan(abs(long - short), 40, "400 extra training steps allocated")
  }

  /// The convolutional layers (configs/smoke-conv.yaml: im2col, col2im, transposes, five
  /// activations) allocate nothing per step either: their scratch is sized once.
  func testConvStepsDoNotAllocate() throws {
    let shortRun = try counts([], steps: 50, config: "smoke-conv"), longRun = try counts([], steps: 150, config: "smoke-conv")
    print("conv, single process: \(shortRun.ours) allocations with 200 timed steps, \(longRun.ours) with 600")
    XCTAssertGreaterThan(shortRun.ours, 100, "the counter must see the program's own allocations")
    XCTAssertLessThan(abs(longRun.ours - shortRun.ours), 40, "400 extra conv training steps allocated")
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
