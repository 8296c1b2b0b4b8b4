import Formats
import Foundation
import VAE
import VAEDist
import TestSupport
import XCTest

/// End-to-end tests of `mpirun … vae-dist train`: they run the built binary under Open MPI
/// (as root with --allow-run-as-root, --oversubscribe on this 2-core machine), each under
/// `mpirun --timeout` so a hang fails instead of blocking CI.
final class MPITests: XCTestCase {
  static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()
  var tmp: URL!

  override func setUpWithError() throws {
    guard Self.which("mpirun") != nil else { throw XCTSkip("mpirun not found: apt-get install openmpi-bin") }
    tmp = FileManager.default.temporaryDirectory.appendingPathComponent("vae-mpi-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    if let tmp { try? FileManager.default.removeItem(at: tmp) }
  }

  static func which(_ name: String) -> String? {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin").split(separator: ":") {
      let p = "\(dir)/\(name)"
      if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    return nil
  }

  static var binary: String {
    get throws { try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage) }
  }

  typealias Result = Subprocess.Result

  /// mpirun's environment: runs as root, one BLAS thread per rank, session files in `tmp`.
  var mpiEnvironment: [String: String] {
    ["OMPI_MCA_orte_tmpdir_base": tmp.path, "OMPI_ALLOW_RUN_AS_ROOT": "1",
     "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1", "OPENBLAS_NUM_THREADS": "1"]
  }

  /// Runs `mpirun -np NP vae-dist train ARGS` (or, with np == 0, the binary alone).
  func run(np: Int, _ args: [String], mpiExtra: [String] = [], env: [String: String] = [:]) throws -> Result {
    let bin = try Self.binary
    let environment = mpiEnvironment.merging(env) { $1 }
    if np == 0 { return try Subprocess.run([bin, "train"] + args, environment: environment, cwd: Self.root.path) }
    let mpirun = try XCTUnwrap(Self.which("mpirun"))
    let argv =
      [mpirun, "--timeout", "240", "--oversubscribe", "--bind-to", "none", "--mca", "btl_vader_single_copy_mechanism", "none",
       "-np", "\(np)"] + mpiExtra + [bin, "train"] + args
    return try Subprocess.run(argv, environment: environment, cwd: Self.root.path)
  }

  func smoke(_ out: String, steps: Int = 200, batch: Int = 100, extra: [String] = []) -> [String] {
    ["--config", Self.root.appendingPathComponent("configs/smoke.yaml").path, "--out", tmp.appendingPathComponent(out).path,
     "--steps", "\(steps)", "--batch", "\(batch)", "--log-every", "10", "--eval-every", "100",
     "--checkpoint-every", "100", "--check-every", "50", "--quiet"] + extra
  }

  func metrics(_ out: String) throws -> [[String: Any]] {
    let text = try String(contentsOf: tmp.appendingPathComponent(out).appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    return try text.split(separator: "\n").map {
      try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
    }
  }

  func checkpoint(_ out: String, _ name: String = "final.safetensors") throws -> SafeTensorsFile {
    try SafeTensors.read(path: tmp.appendingPathComponent(out).appendingPathComponent(name).path)
  }

  func assertSucceeded(_ r: Result, _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(r.status, 0, "\(what) failed:\n\(r.stderr.suffix(2000))", file: file, line: line)
  }

  /// Loss curves of np 1 (no MPI), 2, 3 (B = 100 not divisible by 3) and 4 agree to 1e-4
  /// relative over 200 steps; each MPI run checked replica checksums every 50 steps and at the end.
  func testLossCurvesAgreeAcrossWorldSizes() throws {
    let single = try run(np: 0, smoke("np1"))
    assertSucceeded(single, "single process")
    let reference = try metrics("np1").filter { $0["loss"] != nil }
    XCTAssertEqual(reference.count, 20)
    for np in [2, 3, 4] {
      let r = try run(np: np, smoke("np\(np)"))
      assertSucceeded(r, "np \(np)")
      let lines = try metrics("np\(np)").filter { $0["loss"] != nil }
      XCTAssertEqual(lines.count, reference.count)
      var worst = 0.0
      for (a, b) in zip(reference, lines) {
        XCTAssertEqual(a["step"] as? Int, b["step"] as? Int)
        XCTAssertEqual(b["world_size"] as? Int, np)
        XCTAssertNotNil(b["allreduce_ms"] as? Double)
        // grad_norm: sharded ranks each measure their slice, the sum must be the whole norm.
        for key in ["loss", "recon", "kl", "grad_norm"] {
          let x = try XCTUnwrap(a[key] as? Double), y = try XCTUnwrap(b[key] as? Double)
          worst = max(worst, abs(x - y) / abs(x))
        }
      }
      XCTAssertLessThan(worst, 1e-4, "np \(np) vs np 1")
      print("np \(np): max relative difference of loss terms over 200 steps vs np 1: \(worst)")
      let eval = try XCTUnwrap(try metrics("np\(np)").last?["test_elbo"] as? Double)
      let eval1 = try XCTUnwrap(try metrics("np1").last?["test_elbo"] as? Double)
      XCTAssertEqual(eval, eval1, accuracy: 1e-4 * abs(eval1))
    }
  }

  /// A checkpoint written under np 4 has the same layout (tensor names, order, shapes, dtypes,
  /// metadata) as under np 1, metadata equal except world_size, shards (ranks × micro-batches),
  /// timing and CRC, and the same values up to summation order.
  func testCheckpointUnderNp4MatchesNp1() throws {
    assertSucceeded(try run(np: 0, smoke("c1", steps: 60)), "np 1")
    assertSucceeded(try run(np: 4, smoke("c4", steps: 60)), "np 4")
    let a = try checkpoint("c1"), b = try checkpoint("c4")
    XCTAssertEqual(a.tensors.map(\.name), b.tensors.map(\.name))
    XCTAssertEqual(a.tensors.map(\.shape), b.tensors.map(\.shape))
    XCTAssertEqual(a.tensors.map(\.dtype), b.tensors.map(\.dtype))
    XCTAssertEqual(Set(a.metadata.keys), Set(b.metadata.keys))
    for (k, v) in a.metadata where !["world_size", "shards", "tensor_crc32"].contains(k) {
      XCTAssertEqual(b.metadata[k], v, "metadata \(k)")
    }
    XCTAssertEqual(a.metadata["world_size"], "1")
    XCTAssertEqual(b.metadata["world_size"], "4")
    XCTAssertEqual([a.metadata["shards"], b.metadata["shards"]], ["1", "4"])
    for (x, y) in zip(a.tensors, b.tensors) where !x.name.hasPrefix("adam.") {
      let u = floatsFromBytes(x.bytes), v = floatsFromBytes(y.bytes)
      var diff = 0.0, norm = 0.0
      for (p, q) in zip(u, v) {
        diff += Double(p - q) * Double(p - q)
        norm += Double(p) * Double(p)
      }
      XCTAssertLessThan((diff / max(norm, 1e-30)).squareRoot(), 1e-4, x.name)
    }
  }

  /// The whole file, with the header's world_size value swapped for `worldSize` (same length).
  func bytes(_ out: String, worldSize: Int) throws -> Data {
    let path = tmp.appendingPathComponent(out).appendingPathComponent("final.safetensors")
    var text = try Data(contentsOf: path)
    let from = try XCTUnwrap(text.range(of: Data("\"world_size\":\"".utf8)))
    let digit = from.upperBound
    text[digit] = UInt8(ascii: "0") + UInt8(worldSize)
    return text
  }

  /// A checkpoint written under np P is byte for byte the one a single process writes with
  /// --micro-batches P (the same shards, summed in the same rank order), except world_size:
  /// the data-parallel step is exactly gradient accumulation. P = 4 and 3 (B = 100: uneven
  /// shards), with the sharded optimizer (the default) and without it. Every process runs
  /// OpenBLAS on one thread (mpiEnvironment): its threaded GEMM adds in another order.
  func testCheckpointUnderNpIsByteIdenticalToMicroBatches() throws {
    for (np, extra) in [(4, [String]()), (3, []), (2, ["--no-shard-optimizer"])] {
      assertSucceeded(try run(np: 0, smoke("m\(np)", steps: 60, extra: ["--micro-batches", "\(np)"])), "np 1 × \(np) micro-batches")
      assertSucceeded(try run(np: np, smoke("p\(np)", steps: 60, extra: extra)), "np \(np) \(extra)")
      XCTAssertEqual(try checkpoint("m\(np)").metadata["world_size"], "1")
      XCTAssertEqual(try checkpoint("p\(np)").metadata["world_size"], "\(np)")
      let a = try bytes("m\(np)", worldSize: np), b = try bytes("p\(np)", worldSize: np)
      XCTAssertEqual(a.count, b.count)
      XCTAssertTrue(a == b, "np \(np) \(extra): final.safetensors differs from np 1 --micro-batches \(np) beyond world_size")
    }
    // And accumulation is a real change of summation order: without it np 1 differs in bits.
    assertSucceeded(try run(np: 0, smoke("m1", steps: 60)), "np 1")
    XCTAssertFalse(try bytes("m1", worldSize: 4) == bytes("p4", worldSize: 4))
  }

  /// The same for a convolutional VAE (configs/smoke-conv.yaml: conv, deconv, reshape, flatten,
  /// five activations): np 2 on either transport, sharded, writes the checkpoint of
  /// --micro-batches 2, byte for byte apart from world_size.
  func testConvCheckpointUnderNpIsByteIdenticalToMicroBatches() throws {
    let config = Self.root.appendingPathComponent("configs/smoke-conv.yaml").path
    func args(_ out: String, _ extra: [String]) -> [String] {
      ["--config", config, "--out", tmp.appendingPathComponent(out).path, "--steps", "40", "--quiet"] + extra
    }
    assertSucceeded(try run(np: 0, args("cm2", ["--micro-batches", "2"])), "conv, np 1 × 2 micro-batches")
    assertSucceeded(try run(np: 2, args("cp2", [])), "conv, np 2 (shared window)")
    assertSucceeded(try run(np: 2, args("cc2", []), env: ["VAE_DIST_SHM": "0"]), "conv, np 2 (collective exchange)")
    let m = try bytes("cm2", worldSize: 2)
    XCTAssertTrue(m == (try bytes("cp2", worldSize: 2)), "conv np 2 (window) differs from --micro-batches 2")
    XCTAssertTrue(m == (try bytes("cc2", worldSize: 2)), "conv np 2 (collectives) differs from --micro-batches 2")
    XCTAssertEqual(try checkpoint("cp2").tensors.first { $0.name == "encoder.0.weight" }?.shape, [4, 1, 4, 4])
  }

  /// The objective's and the learning rate's schedules are functions of the step alone: with
  /// β = 0.5 warmed up over 30 steps and a cosine rate after 5 warm-up steps, np 2 (sharded,
  /// both transports) writes the checkpoint of --micro-batches 2, byte for byte but world_size.
  func testObjectiveSchedulesUnderNpAreByteIdenticalToMicroBatches() throws {
    let extra = ["--beta", "0.5", "--kl-warmup", "30", "--lr-schedule", "cosine", "--lr-warmup", "5"]
    assertSucceeded(try run(np: 0, smoke("om2", steps: 40, extra: extra + ["--micro-batches", "2"])), "np 1 × 2 micro-batches")
    assertSucceeded(try run(np: 2, smoke("op2", steps: 40, extra: extra)), "np 2, shared window")
    assertSucceeded(try run(np: 2, smoke("oc2", steps: 40, extra: extra), env: ["VAE_DIST_SHM": "0"]), "np 2, collectives")
    let m = try bytes("om2", worldSize: 2)
    XCTAssertTrue(m == (try bytes("op2", worldSize: 2)), "np 2 (window) differs from --micro-batches 2")
    XCTAssertTrue(m == (try bytes("oc2", worldSize: 2)), "np 2 (collectives) differs from --micro-batches 2")
    let lines = try metrics("op2").filter { $0["kl_weight"] != nil }
    XCTAssertEqual(lines.first?["kl_weight"] as? Double ?? -1, 0.5 * 9 / 30, accuracy: 1e-6, "the logged step's weight")
    // IWAE, k = 5: each row's samples and weights are its own, so the split changes no bit.
    let iwae = ["--objective", "iwae", "--samples", "5"]
    assertSucceeded(try run(np: 0, smoke("im2", steps: 30, extra: iwae + ["--micro-batches", "2"])), "iwae, 2 micro-batches")
    assertSucceeded(try run(np: 2, smoke("ip2", steps: 30, extra: iwae)), "iwae, np 2")
    XCTAssertTrue(try bytes("im2", worldSize: 2) == bytes("ip2", worldSize: 2), "iwae np 2 differs from --micro-batches 2")
    let dreg = iwae + ["--iwae-gradient", "dreg"]
    assertSucceeded(try run(np: 0, smoke("dm2", steps: 30, extra: dreg + ["--micro-batches", "2"])), "dreg, 2 micro-batches")
    assertSucceeded(try run(np: 2, smoke("dp2", steps: 30, extra: dreg)), "dreg, np 2")
    XCTAssertTrue(try bytes("dm2", worldSize: 2) == bytes("dp2", worldSize: 2), "dreg np 2 differs from --micro-batches 2")
    XCTAssertFalse(try bytes("dm2", worldSize: 2) == bytes("im2", worldSize: 2), "--iwae-gradient dreg changed nothing")
    // Free bits: each dimension's KL over the global batch, summed in the rows' order.
    let free = ["--free-bits", "0.5"]
    assertSucceeded(try run(np: 0, smoke("fm2", steps: 30, extra: free + ["--micro-batches", "2"])), "free bits, 2 micro-batches")
    assertSucceeded(try run(np: 2, smoke("fp2", steps: 30, extra: free)), "free bits, np 2")
    assertSucceeded(try run(np: 2, smoke("fc2", steps: 30, extra: free), env: ["VAE_DIST_SHM": "0"]), "free bits, np 2 collectives")
    let f = try bytes("fm2", worldSize: 2)
    XCTAssertTrue(f == (try bytes("fp2", worldSize: 2)), "free bits np 2 differs from --micro-batches 2")
    XCTAssertTrue(f == (try bytes("fc2", worldSize: 2)), "free bits np 2 (collectives) differs from --micro-batches 2")
    assertSucceeded(try run(np: 0, smoke("nf", steps: 30, extra: ["--micro-batches", "2"])), "no free bits")
    XCTAssertFalse(f == (try bytes("nf", worldSize: 2)), "free bits 0.5 changed nothing")
  }

  /// ZeRO-1 sharding changes where Adam runs, not the numbers: bit-identical parameters and
  /// moments at np 2 and 3; and a sharded run's checkpoint resumes unsharded to the same bytes.
  func testShardedOptimizerIsBitIdentical() throws {
    for np in [2, 3] {
      assertSucceeded(try run(np: np, smoke("u\(np)", steps: 120, extra: ["--no-shard-optimizer"])), "unsharded np \(np)")
      assertSucceeded(try run(np: np, smoke("s\(np)", steps: 120)), "sharded (the default) np \(np)")
      try assertSameTensors("u\(np)", "s\(np)", "np \(np), sharded vs unsharded")
    }
    // Resume each np 3 run's step-100 checkpoint the other way (the unsharded one into the
    // node's one shared parameter copy, which rank 0 alone writes): the same final bytes.
    try resumeAndCompare(from: "s3", as: "r3", extra: ["--no-shard-optimizer"], "resumed unsharded")
    try resumeAndCompare(from: "u3", as: "q3", extra: [], "resumed sharded")
  }

  /// Copies run `source`'s step-100 checkpoint into a fresh run directory `name`, resumes it
  /// at np 3 for the rest of the 120 steps with `extra`, and compares every final tensor.
  func resumeAndCompare(from source: String, as name: String, extra: [String], _ what: String) throws {
    let dir = tmp.appendingPathComponent(name)
    try FileManager.default.createDirectory(at: dir.appendingPathComponent("checkpoints"), withIntermediateDirectories: true)
    try FileManager.default.copyItem(
      at: tmp.appendingPathComponent("\(source)/checkpoints/step-00000100.safetensors"),
      to: dir.appendingPathComponent("checkpoints/step-00000100.safetensors"))
    assertSucceeded(try run(np: 3, smoke(name, steps: 120, extra: ["--resume", "auto"] + extra)), what)
    try assertSameTensors(source, name, what)
  }

  /// The final checkpoints of runs `a` and `b` hold the same tensors, name for name, bit for bit.
  func assertSameTensors(_ a: String, _ b: String, _ what: String, line: UInt = #line) throws {
    let x = try checkpoint(a), y = try checkpoint(b)
    XCTAssertEqual(x.tensors.count, y.tensors.count, what, line: line)
    for (s, t) in zip(x.tensors, y.tensors) {
      XCTAssertEqual(s.name, t.name, what, line: line)
      XCTAssertTrue(s.bytes == t.bytes, "\(what): \(s.name) differs", line: line)
    }
  }

  /// With the shared-memory window off (VAE_DIST_SHM=0, the path ranks on several hosts use),
  /// the bucketed all-to-all sums every shard in the window's rank order: np 3 ends with the
  /// same bits as the shared window, sharded or not, with its buckets overlapped with backward
  /// or started after it (VAE_DIST_OVERLAP=0), and as 3 micro-batches in one process.
  func testMPICollectivesPathMatchesSharedMemoryPath() throws {
    let off = ["VAE_DIST_SHM": "0"]
    assertSucceeded(try run(np: 3, smoke("shm", steps: 100)), "np 3 shared memory")
    assertSucceeded(try run(np: 3, smoke("coll", steps: 100, extra: ["--no-shard-optimizer"]), env: off), "np 3 collectives")
    assertSucceeded(try run(np: 3, smoke("collz", steps: 100), env: off), "np 3 collectives, sharded")
    assertSucceeded(
      try run(np: 3, smoke("colls", steps: 100), env: off.merging(["VAE_DIST_OVERLAP": "0"]) { $1 }),
      "np 3 collectives, sharded, not overlapped")
    assertSucceeded(try run(np: 0, smoke("m3", steps: 100, extra: ["--micro-batches", "3"])), "np 1 × 3 micro-batches")
    try assertSameTensors("shm", "collz", "collectives vs shared window")
    try assertSameTensors("coll", "collz", "collectives path, sharded vs unsharded")
    try assertSameTensors("colls", "collz", "collectives path, not overlapped vs overlapped")
    try assertSameTensors("m3", "collz", "collectives path vs 3 micro-batches")
  }

  /// np 8 on 2 cores (oversubscribed) completes a short run; B = 50 over 8 ranks is uneven.
  func testEightRanksOversubscribed() throws {
    let r = try run(np: 8, smoke("np8", steps: 40, batch: 50))
    assertSucceeded(r, "np 8")
    let last = try metrics("np8").last { $0["loss"] != nil }
    XCTAssertEqual(last?["world_size"] as? Int, 8)
    XCTAssertEqual(last?["step"] as? Int, 40)
  }

  /// An error on one rank only ends every rank within seconds, with the message, non-zero.
  func testErrorOnOneRankEndsTheJob() throws {
    let bin = try Self.binary
    let good = smoke("e1", steps: 50)
    let bad = ["--config", tmp.appendingPathComponent("missing.yaml").path, "--out", tmp.appendingPathComponent("e1").path]
    // MPMD: ranks 0 and 2 are fine (and would train for a long time); rank 1 is given a
    // config file that does not exist.
    let p = try runMPMD([good + ["--steps", "100000"], bad, good + ["--steps", "100000"]], bin: bin)
    XCTAssertNotEqual(p.status, 0)
    XCTAssertLessThan(p.seconds, 60, "the job should end within seconds, not hang")
    XCTAssertTrue(p.stderr.contains("rank 1: ") && p.stderr.contains("missing.yaml"), p.stderr)
  }

  /// The conditional VAE under mpirun: np 2 and one process give the same loss curve (to
  /// summation order), and np 2 equals one process with 2 micro-batches byte for byte.
  func testConditionalVAEAgreesAcrossWorldSizes() throws {
    let config = Self.root.appendingPathComponent("configs/smoke-cvae.yaml").path
    func args(_ out: String, _ extra: [String] = []) -> [String] {
      ["--config", config, "--out", tmp.appendingPathComponent(out).path, "--steps", "60", "--log-every", "10",
       "--quiet"] + extra
    }
    assertSucceeded(try run(np: 0, args("c1")), "cvae single process")
    assertSucceeded(try run(np: 2, args("c2")), "cvae np 2")
    assertSucceeded(try run(np: 0, args("c1k2", ["--micro-batches", "2"]), env: ["OPENBLAS_NUM_THREADS": "1"]), "k 2")
    let a = try metrics("c1").filter { $0["loss"] != nil }, b = try metrics("c2").filter { $0["loss"] != nil }
    XCTAssertEqual(a.count, 6)
    XCTAssertEqual(a.count, b.count)
    var worst = 0.0
    for (x, y) in zip(a, b) {
      for key in ["loss", "recon", "kl"] {
        let u = try XCTUnwrap(x[key] as? Double), v = try XCTUnwrap(y[key] as? Double)
        worst = max(worst, abs(u - v) / max(abs(u), 1e-9))
      }
    }
    print("cvae np 2 vs np 1: max relative difference \(worst)")
    XCTAssertLessThan(worst, 1e-4)
    let t2 = try checkpoint("c2"), tk = try checkpoint("c1k2")
    for t in t2.tensors { XCTAssertEqual(t.bytes, tk.tensor(t.name)?.bytes, t.name) }
    XCTAssertEqual(t2.metadata["model"], tk.metadata["model"])
  }

  /// Open MPI gives ranks a pty, so "is stdout a terminal" says yes even when mpirun's output
  /// goes to a file: under MPI the log must still be plain lines, without \r or escape codes.
  func testLogUnderMPIHasNoTerminalControlCodes() throws {
    var args = smoke("log", steps: 60)
    args.removeAll { $0 == "--quiet" }
    let r = try run(np: 2, args + ["--log-every", "5"])
    assertSucceeded(r, "np 2")
    XCTAssertTrue(r.stdout.contains("held-out ELBO"), r.stdout)
    XCTAssertFalse(r.stdout.contains("\r") || r.stdout.contains("\u{1B}"), r.stdout.debugDescription)
  }

  /// SIGTERM to mpirun (it forwards it to the ranks): every rank stops after the same step, rank
  /// 0 writes a checkpoint there and a metrics line saying why, within seconds; resuming at np 2
  /// ends on the bytes of an uninterrupted np 2 run.
  func testSIGTERMToMpirunStopsEveryRankAtOneStep() throws {
    let bin = try Self.binary
    let mpirun = try XCTUnwrap(Self.which("mpirun"))
    let out = tmp.appendingPathComponent("term").path
    func args(_ dir: String, steps: Int) -> [String] {
      ["--config", Self.root.appendingPathComponent("configs/smoke.yaml").path, "--out", dir, "--steps", "\(steps)",
       "--log-every", "1", "--checkpoint-every", "0", "--eval-every", "0", "--quiet", "--no-tensorboard"]
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: mpirun)
    p.arguments = ["--oversubscribe", "--bind-to", "none", "-np", "2", bin, "train"] + args(out, steps: 1_000_000)
    p.environment = ProcessInfo.processInfo.environment.merging(mpiEnvironment) { $1 }
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
      let text = (try? String(contentsOfFile: out + "/metrics.jsonl", encoding: .utf8)) ?? ""
      if text.split(separator: "\n").count >= 20 { break }
      usleep(50_000)
    }
    let sent = Date()
    kill(p.processIdentifier, SIGTERM)
    p.waitUntilExit()
    let seconds = Date().timeIntervalSince(sent)
    XCTAssertNotEqual(p.terminationStatus, 0)
    XCTAssertLessThan(seconds, 15)
    let lines = try metrics("term")
    let last = try XCTUnwrap(lines.last)
    XCTAssertEqual(last["event"] as? String, "stopped")
    let stopStep = try XCTUnwrap(last["step"] as? Int)
    XCTAssertEqual(lines[lines.count - 2]["step"] as? Int, stopStep, "no step after the agreed stop")
    print("np 2: SIGTERM to mpirun: stopped after step \(stopStep), \(String(format: "%.2f", seconds)) s to exit")
    assertSucceeded(try run(np: 2, args(out, steps: stopStep + 20) + ["--resume", "auto"]), "resume")
    let straight = tmp.appendingPathComponent("straight").path
    assertSucceeded(try run(np: 2, args(straight, steps: stopStep + 20)), "uninterrupted")
    XCTAssertEqual(
      try Data(contentsOf: URL(fileURLWithPath: out + "/final.safetensors")),
      try Data(contentsOf: URL(fileURLWithPath: straight + "/final.safetensors")))
  }

  /// Fewer ranks after a failure: a 2-rank run resumed on 1 rank with the micro-batch count left
  /// to auto runs 2 micro-batches (the checkpoint's 2 shards) and ends on the uninterrupted np 2
  /// run's bytes (but world_size); metrics.jsonl records each segment's split. 3 ranks cannot
  /// keep 2 shards: one line says so and on how many ranks the bits would be kept, and the run
  /// goes on. An explicit --micro-batches 1 on 1 rank changes the parts and says so too.
  func testResumeOnFewerRanksKeepsTheShardsAndTheBits() throws {
    assertSucceeded(try run(np: 2, smoke("straight", steps: 200)), "uninterrupted np 2")
    assertSucceeded(try run(np: 2, smoke("fewer", steps: 100)), "np 2 to step 100")
    try FileManager.default.copyItem(at: tmp.appendingPathComponent("fewer"), to: tmp.appendingPathComponent("explicit"))
    let resumed = try run(np: 0, smoke("fewer", steps: 200, extra: ["--resume", "auto"]))
    assertSucceeded(resumed, "np 1, micro-batches auto")
    XCTAssertEqual(try checkpoint("fewer").metadata["shards"], "2")
    XCTAssertTrue(try bytes("fewer", worldSize: 2) == bytes("straight", worldSize: 2), "np 1 after np 2 differs from np 2 throughout")
    let segments = try metrics("fewer").filter { ["startup", "resume"].contains($0["event"] as? String) }
    XCTAssertEqual(segments.map { [$0["step"] as? Int, $0["world_size"] as? Int, $0["micro_batches"] as? Int] },
                   [[0, 2, 1], [100, 1, 2]])
    XCTAssertEqual(segments.last?["same_bits"] as? Bool, true)
    XCTAssertEqual(segments.last?["from_world_size"] as? Int, 2)
    // segments.jsonl: one line per start, with the transport (the shared window at np 2).
    let text = try String(contentsOf: tmp.appendingPathComponent("fewer/segments.jsonl"), encoding: .utf8)
    let starts = try text.split(separator: "\n").map { try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]) }
    XCTAssertEqual(starts.map { [$0["segment"] as? Int, $0["step"] as? Int, $0["world_size"] as? Int, $0["micro_batches"] as? Int] },
                   [[1, 0, 2, 1], [2, 100, 1, 2]])
    XCTAssertEqual(starts.last?["same_bits"] as? Bool, true)
    XCTAssertNotNil(starts.first?["started"] as? String)
    // Explicit: 1 rank × 1 micro-batch is one part instead of two.
    let explicit = try run(np: 0, smoke("explicit", steps: 200, extra: ["--resume", "auto", "--micro-batches", "1"]))
    assertSucceeded(explicit, "np 1 --micro-batches 1")
    XCTAssertTrue(explicit.stderr.contains("each global batch is split into 1 part(s) instead of 2"), explicit.stderr)
    XCTAssertFalse(try bytes("explicit", worldSize: 2) == bytes("straight", worldSize: 2))
    XCTAssertEqual(try metrics("explicit").last { $0["event"] as? String == "resume" }?["same_bits"] as? Bool, false)
    // 3 ranks cannot keep 2 shards: said in one line, and training goes on.
    let three = try run(np: 3, smoke("fewer", steps: 220, extra: ["--resume", "auto"]))
    assertSucceeded(three, "np 3 after 2 shards")
    let line = three.stderr.split(separator: "\n").filter { $0.contains("resuming a run of 1 rank × 2 micro-batches on 3 ranks") }
    XCTAssertEqual(line.count, 1, three.stderr)
    XCTAssertTrue(line.first?.hasSuffix("to keep its bits, resume on 1 or 2 rank(s) with the micro-batch count left to auto") ?? false, three.stderr)
  }

  /// Time-based checkpoints under MPI: rank 0's clock decides and every rank takes part (no
  /// hang, valid checkpoints).
  func testTimeBasedCheckpointsUnderMPI() throws {
    var args = smoke("timed", steps: 100)
    args += ["--checkpoint-every", "0", "--checkpoint-minutes", "0.0002"]
    assertSucceeded(try run(np: 2, args), "np 2 --checkpoint-minutes")
    let names = try FileManager.default.contentsOfDirectory(atPath: tmp.appendingPathComponent("timed/checkpoints").path)
    XCTAssertFalse(names.isEmpty)
  }

  /// A rank whose config differs is named with the field at start-up.
  func testHandshakeNamesRankAndField() throws {
    let bin = try Self.binary
    let a = smoke("h", steps: 50)
    let p = try runMPMD([a, a + ["--zdim", "5"]], bin: bin)
    XCTAssertNotEqual(p.status, 0)
    XCTAssertTrue(p.stderr.contains("rank 1: config differs from rank 0's: 'zdim: 5' here, 'zdim: 4' on rank 0"), p.stderr)
    XCTAssertLessThan(p.seconds, 60)
  }

  /// Options that change which collectives run, given to one rank only, would hang the job at
  /// start-up; the ranks' one start-up allgather names the rank and the option, and the job
  /// ends within 10 s.
  func testStartupOptionMismatchesEndTheJobNamingRankAndOption() throws {
    let bin = try Self.binary
    let cases: [(extra: [String], env: String?, says: String)] = [
      (["--no-shard-optimizer"], nil, "optimizer sharding differs from rank 0's: disabled here, enabled on rank 0 (--[no-]shard-optimizer)"),
      (["--resume", "auto"], nil, "resume mode differs from rank 0's: auto here, not given on rank 0 (--resume)"),
      ([], "VAE_DIST_SHM=0", "the shared-memory transport (VAE_DIST_SHM) differs from rank 0's: disabled (VAE_DIST_SHM=0) here, enabled on rank 0"),
      (["--micro-batches", "2"], nil, "micro-batches per rank differs from rank 0's: 2 here, auto on rank 0 (--micro-batches)"),
      (["--init", Self.root.appendingPathComponent("configs/smoke.yaml").path], nil, "the initial weights file differs from rank 0's: '"),
    ]
    for (i, c) in cases.enumerated() {
      let a = smoke("m\(i)", steps: 100_000)
      let p = try runMPMD([a, a + c.extra], bin: bin, env: [nil, c.env])
      let what = c.extra.isEmpty ? c.env ?? "" : c.extra.joined(separator: " ")
      XCTAssertNotEqual(p.status, 0, what)
      XCTAssertLessThan(p.seconds, 10, "\(what): the job should end within seconds, not hang")
      XCTAssertTrue(p.stderr.contains("rank 1: " + c.says), "\(what):\n\(p.stderr)")
      print("start-up mismatch \(what): exit \(p.status) after \(String(format: "%.2f", p.seconds)) s")
    }
  }

  /// The watchdog behind the agreement: when a start-up never finishes (here rank 0's --init
  /// file is a FIFO nobody writes, as a hung file system would be; or one rank never starts MPI,
  /// --comm local) the job ends after --startup-timeout with a line naming what a rank waits for.
  func testStartupWatchdogEndsAStuckStart() throws {
    let bin = try Self.binary
    let fifo = tmp.appendingPathComponent("stuck.safetensors").path
    XCTAssertEqual(mkfifo(fifo, 0o600), 0)
    let a = smoke("w", steps: 100_000) + ["--startup-timeout", "3"]
    let p = try runMPMD([a + ["--init", fifo], a + ["--init", fifo]], bin: bin)
    XCTAssertNotEqual(p.status, 0)
    XCTAssertLessThan(p.seconds, 30, "the watchdog should end the job soon after 3 s")
    XCTAssertGreaterThanOrEqual(p.seconds, 3, "not before the timeout")
    XCTAssertTrue(
      p.stderr.contains("rank 1: start-up did not finish within 3 s: still waiting for rank 0's initial weights (broadcast)")
        || p.stderr.contains("rank 0: start-up did not finish within 3 s: still waiting for this rank to read \(fifo)"),
      p.stderr)
    print("watchdog, stuck --init read: exit \(p.status) after \(String(format: "%.2f", p.seconds)) s")
    // One rank never calls MPI_Init: the other waits there.
    let local = try runMPMD([a, smoke("w2", steps: 100_000) + ["--comm", "local"]], bin: bin)
    XCTAssertNotEqual(local.status, 0)
    XCTAssertLessThan(local.seconds, 30)
    XCTAssertTrue(local.stderr.contains("rank 0: start-up did not finish within 3 s: still waiting for MPI_Init"), local.stderr)
    print("watchdog, one rank without MPI: exit \(local.status) after \(String(format: "%.2f", local.seconds)) s")
  }

  /// A full disk under mpirun: rank 0's failed checkpoint write ends the whole job (no rank
  /// trains on without checkpoints), with one line from rank 0; the earlier checkpoints stay.
  func testDiskFullOnRankZeroEndsTheJob() throws {
    let (disk, reason) = SmallDisk.mount(megabytes: 3, at: tmp.appendingPathComponent("small").path)
    guard let disk else { throw XCTSkip(reason) }
    var args = smoke("unused", steps: 400, batch: 50)
    args[3] = disk.path + "/r"
    let p = try run(np: 2, args + ["--checkpoint-every", "50", "--check-every", "0"])
    XCTAssertNotEqual(p.status, 0)
    XCTAssertLessThan(p.seconds, 60)
    XCTAssertTrue(p.stderr.contains("rank 0: ") && p.stderr.contains("No space left on device"), p.stderr)
    XCTAssertTrue(p.stderr.contains("training stopped at step 150"), p.stderr)
    let names = try FileManager.default.contentsOfDirectory(atPath: disk.path + "/r/checkpoints").sorted()
    XCTAssertEqual(names, ["step-00000050.safetensors", "step-00000100.safetensors"])
    XCTAssertNoThrow(try Checkpoint.load(path: disk.path + "/r/checkpoints/step-00000100.safetensors"))
  }

  /// A replica that silently diverges is caught by the periodic checksum and named. (With the
  /// sharded optimizer on one node the ranks share one parameter copy, which cannot diverge;
  /// replicas exist with --no-shard-optimizer or across nodes.)
  func testDivergedReplicaStopsTheJob() throws {
    // Rank 2 sees one corrupted gradient value at step 30; the check every 20 steps names it at 40.
    let bin = try XCTUnwrap(VAEDistBinary.sibling("vae-dist-fault-injection"), "vae-dist-fault-injection not built")
    let mpirun = try XCTUnwrap(Self.which("mpirun"))
    let out = tmp.appendingPathComponent("d").path
    let r = try Subprocess.run(
      [mpirun, "--timeout", "120", "--oversubscribe", "--bind-to", "none", "-np", "3", bin, out, "2", "30", "100", "20",
       "replicas"], environment: mpiEnvironment, cwd: Self.root.path)
    XCTAssertNotEqual(r.status, 0)
    XCTAssertTrue(r.stderr.contains("rank 2: checksum of parameters at step 40 differs from rank 0's"), r.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/final.safetensors"))
    // The same program without a fault in range finishes: the failure above is the fault's.
    let clean = try Subprocess.run(
      [mpirun, "--timeout", "120", "--oversubscribe", "--bind-to", "none", "-np", "3", bin, out + "-clean", "2", "1000",
       "60", "20", "replicas"], environment: mpiEnvironment, cwd: Self.root.path)
    XCTAssertEqual(clean.status, 0, clean.stderr)
    XCTAssertTrue(FileManager.default.fileExists(atPath: out + "-clean/final.safetensors"))
  }

  /// A NaN in the summed gradient at step 25 (one process, and rank 1 of 2) stops the run at
  /// the first non-finite loss with one line naming the step and the term; the newest
  /// checkpoint is step 20's, the last good one, and there is no final checkpoint.
  func testNonFiniteLossStopsTheRunAndKeepsTheLastGoodCheckpoint() throws {
    let bin = try XCTUnwrap(VAEDistBinary.sibling("vae-dist-fault-injection"), "vae-dist-fault-injection not built")
    let mpirun = try XCTUnwrap(Self.which("mpirun"))
    for (np, rank) in [(1, 0), (2, 1)] {
      let out = tmp.appendingPathComponent("nan\(np)").path
      let r = try Subprocess.run(
        [mpirun, "--timeout", "120", "--oversubscribe", "--bind-to", "none", "-np", "\(np)", bin, out, "\(rank)", "25",
         "100", "0", "replicas", "nan"], environment: mpiEnvironment, cwd: Self.root.path)
      XCTAssertNotEqual(r.status, 0, "np \(np)")
      XCTAssertTrue(r.stderr.contains("rank \(rank): step 26:") || r.stderr.contains("error: step 26:"), r.stderr)
      XCTAssertTrue(r.stderr.contains("not finite"), r.stderr)
      let names = try FileManager.default.contentsOfDirectory(atPath: out + "/checkpoints").sorted()
      XCTAssertEqual(names.last, "step-00000020.safetensors", "np \(np)")
      XCTAssertFalse(FileManager.default.fileExists(atPath: out + "/final.safetensors"))
      XCTAssertNoThrow(try Checkpoint.load(path: out + "/checkpoints/step-00000020.safetensors"))
    }
  }

  /// 2 fake hosts × 2 ranks over TCP (network namespaces, scripts/mpi-two-hosts) give the same
  /// run as 4 local ranks, to 1e-4 relative. Skipped, with the reason, where namespaces can't be made.
  func testTwoHostsOverTCPMatchFourLocalRanks() throws {
    let bin = try Self.binary
    assertSucceeded(try run(np: 4, smoke("local4", steps: 60)), "np 4 local")
    // The script sets --out itself: drop smoke()'s.
    var args = smoke("ignored", steps: 60)
    if let i = args.firstIndex(of: "--out") { args.removeSubrange(i...(i + 1)) }
    let r = try Subprocess.run(
      [Self.root.appendingPathComponent("scripts/mpi-two-hosts").path, bin, tmp.appendingPathComponent("hosts2").path] + args,
      environment: ["OMPI_MCA_orte_tmpdir_base": tmp.path, "OPENBLAS_NUM_THREADS": "1"])
    let text = r.stdout + r.stderr
    if r.status == 77 { throw XCTSkip(text.trimmingCharacters(in: .whitespacesAndNewlines)) }
    XCTAssertEqual(r.status, 0, text)
    XCTAssertTrue(text.contains("4 ranks saw 2 distinct host names"), text)
    let a = try metrics("local4"), b = try metrics("hosts2")
    XCTAssertEqual(a.count, b.count)
    var worst = 0.0
    for (x, y) in zip(a, b) {
      for key in ["loss", "recon", "kl", "test_elbo"] {
        guard let u = x[key] as? Double else { continue }
        let v = try XCTUnwrap(y[key] as? Double, key)
        worst = max(worst, abs(u - v) / abs(u))
      }
    }
    print("two hosts × 2 ranks vs 4 local ranks: max relative difference \(worst)")
    XCTAssertLessThan(worst, 1e-4)
  }

  /// Hosts that share no files: rank 1 runs in its own mount namespace with an empty tmpfs over
  /// the directory holding every run directory, so it sees no checkpoint and no weights file.
  /// `--resume FILE`, `--resume auto` and `--init FILE` are read by rank 0 alone and broadcast;
  /// each run ends with the tensors of the same run on a shared directory.
  func testRanksThatShareNoRunDirectoryResumeAndInit() throws {
    guard Self.which("unshare") != nil, getuid() == 0 else { throw XCTSkip("needs root and unshare for a private mount namespace") }
    let bin = try Self.binary
    let runs = tmp.appendingPathComponent("runs").path
    try FileManager.default.createDirectory(atPath: runs, withIntermediateDirectories: true)
    let isolated = ["unshare", "-m", "sh", "-c", "mount -t tmpfs none \"$0\" && exec \"$@\"", runs]
    func args(_ out: String, _ extra: [String] = []) -> [String] {
      ["--config", Self.root.appendingPathComponent("configs/smoke.yaml").path, "--out", runs + "/" + out, "--steps", "60",
       "--log-every", "10", "--eval-every", "0", "--checkpoint-every", "30", "--check-every", "30", "--quiet",
       "--no-tensorboard"] + extra
    }
    assertSucceeded(try runMPMD([args("whole"), args("whole")], bin: bin), "uninterrupted np 2")
    let step30 = runs + "/whole/checkpoints/step-00000030.safetensors"
    // --resume FILE: the file exists on rank 0's side only.
    let file = try runMPMD([args("file", ["--resume", step30]), args("file", ["--resume", step30])], bin: bin, wrap: [[], isolated])
    assertSucceeded(file, "--resume FILE with rank 1 isolated")
    XCTAssertEqual(try checkpoint("runs/file").tensors, try checkpoint("runs/whole").tensors)
    // --resume auto: rank 0 finds the newest checkpoint in its run directory.
    let auto = runs + "/auto/checkpoints"
    try FileManager.default.createDirectory(atPath: auto, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: step30, toPath: auto + "/step-00000030.safetensors")
    let resumed = try runMPMD([args("auto", ["--resume", "auto"]), args("auto", ["--resume", "auto"])], bin: bin, wrap: [[], isolated])
    assertSucceeded(resumed, "--resume auto with rank 1 isolated")
    XCTAssertEqual(try checkpoint("runs/auto").tensors, try checkpoint("runs/whole").tensors)
    // --init FILE: the same weights reach rank 1 by broadcast.
    let weights = runs + "/whole/final.safetensors"
    let shared = try runMPMD([args("init-shared", ["--init", weights]), args("init-shared", ["--init", weights])], bin: bin)
    assertSucceeded(shared, "--init with a shared directory")
    let alone = try runMPMD([args("init", ["--init", weights]), args("init", ["--init", weights])], bin: bin, wrap: [[], isolated])
    assertSucceeded(alone, "--init with rank 1 isolated")
    XCTAssertEqual(try checkpoint("runs/init").tensors, try checkpoint("runs/init-shared").tensors)
  }

  /// Two builds whose start-up records have different lengths compare their fixed headers
  /// first: the job ends with one line naming the rank and the build, not inside MPI_Allgather.
  func testStartupRecordsOfDifferentLengthAreNamed() throws {
    let bin = try XCTUnwrap(VAEDistBinary.sibling("vae-dist-fault-injection"), "vae-dist-fault-injection not built")
    let mpirun = try XCTUnwrap(Self.which("mpirun"))
    let r = try Subprocess.run(
      [mpirun, "--timeout", "60", "--oversubscribe", "--bind-to", "none", "-np", "2", bin, "startup-record", "1"],
      environment: mpiEnvironment, cwd: Self.root.path)
    XCTAssertNotEqual(r.status, 0)
    XCTAssertTrue(
      r.stderr.contains("rank 1: the start-up record differs from rank 0's (format 2 with 9 fields here, format 2 with 8 fields on rank 0)"),
      r.stderr)
    XCTAssertFalse(r.stderr.contains("MPI_ERR"), r.stderr)
    XCTAssertLessThan(r.seconds, 45)
  }

  /// Ranks asked to stop by different signals at the same step agree on one: the lowest
  /// number (SIGUSR1 10 before SIGTERM 15), so every rank exits 138, whichever rank got which.
  func testAgreedStopHasOneSignalOnEveryRank() throws {
    let bin = try XCTUnwrap(VAEDistBinary.sibling("vae-dist-fault-injection"), "vae-dist-fault-injection not built")
    let mpirun = try XCTUnwrap(Self.which("mpirun"))
    for signals in [["15", "10"], ["10", "15"], ["0", "2"]] {
      let out = tmp.appendingPathComponent("stop-\(signals.joined())").path
      let r = try Subprocess.run(
        [mpirun, "--timeout", "60", "--oversubscribe", "--bind-to", "none", "-np", "2", bin, "stop", out, "5"] + signals,
        environment: mpiEnvironment, cwd: Self.root.path)
      let agreed = signals.contains("2") ? 2 : 10
      for rank in 0..<2 {
        XCTAssertTrue(r.stdout.contains("rank \(rank): stopped by signal \(agreed) after step 5"), "\(signals): \(r.stdout)\n\(r.stderr)")
      }
      let stop = try metrics("stop-\(signals.joined())").last
      XCTAssertEqual(stop?["signal"] as? String, agreed == 2 ? "SIGINT" : "SIGUSR1")
    }
  }

  /// The stop votes ride in the gradient exchange on every transport (shared window and
  /// collectives, sharded and plain): with 3 ranks, a signal on the last rank only (whose
  /// collective shard carries the votes) or on the first stops every rank after the same step.
  func testStopVotesRideInEveryExchange() throws {
    let bin = try XCTUnwrap(VAEDistBinary.sibling("vae-dist-fault-injection"), "vae-dist-fault-injection not built")
    let mpirun = try XCTUnwrap(Self.which("mpirun"))
    for (shm, plain, signals) in [("1", "0", ["0", "0", "15"]), ("1", "1", ["10", "0", "0"]),
                                  ("0", "0", ["0", "0", "10"]), ("0", "1", ["0", "15", "0"])] {
      let name = "votes-\(shm)\(plain)", out = tmp.appendingPathComponent(name).path
      let env = mpiEnvironment.merging(["VAE_DIST_SHM": shm, "VAE_DIST_TEST_PLAIN": plain]) { $1 }
      let r = try Subprocess.run(
        [mpirun, "--timeout", "60", "--oversubscribe", "--bind-to", "none", "-x", "VAE_DIST_SHM", "-x", "VAE_DIST_TEST_PLAIN",
         "-np", "3", bin, "stop", out, "4"] + signals, environment: env, cwd: Self.root.path)
      let agreed = signals.contains("10") ? 10 : 15
      for rank in 0..<3 {
        XCTAssertTrue(r.stdout.contains("rank \(rank): stopped by signal \(agreed) after step 4"), "\(name): \(r.stdout)\n\(r.stderr)")
      }
    }
  }

  /// A step runs no MPI collective besides its exchange: 20 more steps add no MPI_Allreduce (the
  /// stop votes used to be one per step), on the shared window and on the collectives path,
  /// where each step starts the same all-to-all buckets (persistent: built once) and exactly one
  /// allgather. Counted by an
  /// interposed libmpi (`Tests/mpi/countcalls.c`).
  func testAStepRunsNoCollectiveBesidesTheExchange() throws {
    guard let mpicc = Self.which("mpicc") else { throw XCTSkip("mpicc not found (libopenmpi-dev)") }
    let lib = tmp.appendingPathComponent("countcalls.so").path
    let src = Self.root.appendingPathComponent("Tests/mpi/countcalls.c").path
    let cc = try Subprocess.run([mpicc, "-shared", "-fPIC", "-o", lib, src], environment: [:], cwd: tmp.path)
    XCTAssertEqual(cc.status, 0, cc.stderr)
    func calls(_ steps: Int, shm: String) throws -> [String: Int] {
      let args = smoke("calls-\(steps)-\(shm)", steps: steps) + ["--log-every", "1000", "--eval-every", "0",
        "--checkpoint-every", "0", "--check-every", "0"]
      let r = try run(np: 2, args, mpiExtra: ["-x", "LD_PRELOAD", "-x", "VAE_DIST_SHM"], env: ["LD_PRELOAD": lib, "VAE_DIST_SHM": shm])
      assertSucceeded(r, "\(steps) steps, VAE_DIST_SHM=\(shm)")
      let line = try XCTUnwrap(r.stderr.split(separator: "\n").first { $0.hasPrefix("mpi calls:") }, r.stderr)
      return Dictionary(uniqueKeysWithValues: line.dropFirst("mpi calls: ".count).split(separator: " ").map {
        let kv = $0.split(separator: "=")
        return (String(kv[0]), Int(kv[1]) ?? -1)
      })
    }
    for shm in ["1", "0"] {
      let a = try calls(20, shm: shm), b = try calls(40, shm: shm)
      XCTAssertEqual(a["allreduce"], b["allreduce"], "VAE_DIST_SHM=\(shm): \(a) vs \(b)")
      if shm == "0" {
        let starts = { (c: [String: Int]) in (c["ialltoallv"] ?? 0) + (c["start"] ?? 0) }
        let buckets = starts(b) - starts(a)
        XCTAssertTrue(buckets > 0 && buckets % 20 == 0, "the same all-to-all buckets every step: \(a) vs \(b)")
        XCTAssertEqual(a["alltoallv_init"], b["alltoallv_init"], "persistent buckets are built once, not per step")
        XCTAssertEqual((b["allgatherv"] ?? 0) - (a["allgatherv"] ?? 0), 20, "\(a) vs \(b)")
      }
    }
  }

  /// The watchdog thread calls no MPI function (MPI is FUNNELED): an interposed libmpi wrapper
  /// records every MPI call made off the thread that initialised MPI, while the watchdog ends
  /// a stuck start-up.
  func testWatchdogMakesNoMPICallOffTheMainThread() throws {
    guard let mpicc = Self.which("mpicc") else { throw XCTSkip("mpicc not found (libopenmpi-dev)") }
    let lib = tmp.appendingPathComponent("offthread.so").path
    let src = Self.root.appendingPathComponent("Tests/mpi/offthread.c").path
    let cc = try Subprocess.run([mpicc, "-shared", "-fPIC", "-o", lib, src, "-lpthread"], environment: [:], cwd: tmp.path)
    XCTAssertEqual(cc.status, 0, cc.stderr)
    let fifo = tmp.appendingPathComponent("stuck.safetensors").path
    XCTAssertEqual(mkfifo(fifo, 0o600), 0)
    let a = smoke("w", steps: 100_000) + ["--startup-timeout", "3", "--init", fifo]
    let p = try runMPMD([a, a], bin: try Self.binary, env: ["LD_PRELOAD=\(lib)", "LD_PRELOAD=\(lib)"])
    XCTAssertNotEqual(p.status, 0)
    XCTAssertTrue(p.stderr.contains("start-up did not finish within 3 s"), p.stderr)
    XCTAssertFalse(p.stderr.contains("off-thread MPI call"), p.stderr)
    XCTAssertLessThan(p.seconds, 30)
  }

  /// One rank per argument list (mpirun's MPMD form); `env[i]` ("NAME=value") is set for rank i only, and
  /// `wrap[i]` (e.g. a private mount namespace) runs before rank i's binary.
  func runMPMD(_ argLists: [[String]], bin: String, env: [String?] = [], wrap: [[String]] = []) throws -> Result {
    var argv = [try XCTUnwrap(Self.which("mpirun")), "--timeout", "120", "--oversubscribe", "--bind-to", "none"]
    for (i, a) in argLists.enumerated() {
      if i > 0 { argv.append(":") }
      argv += ["-np", "1"]
      if i < env.count, let e = env[i] { argv += ["-x", e] }
      argv += (i < wrap.count ? wrap[i] : []) + [bin, "train"] + a
    }
    return try Subprocess.run(argv, environment: mpiEnvironment, cwd: Self.root.path)
  }
}
