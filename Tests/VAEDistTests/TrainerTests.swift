import Formats
import Foundation
import XCTest

@testable import VAE
@testable import VAEData
@testable import VAEDist

// MARK: - Shared helpers for the VAEDist tests (Trainer, Checkpoint, Python interop)

/// Small fixtures and file helpers shared by `TrainerTests`, `CheckpointTests` and
/// `PythonInteropTests` (one namespace, so nothing collides with the other test files).
enum TT {
  /// The package root, from this file's path (Tests/VAEDistTests/TrainerTests.swift).
  static let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
  }()

  /// The `synthetic` data set with 400 training images (loaded once; it is deterministic).
  /// The held-out split is cut to 300 images to keep debug-build evaluations quick.
  static let synthetic: DataSplits = {
    let full = try! DatasetRegistry.load(name: "synthetic", dataDirectory: "", trainLimit: 400)
    return DataSplits(train: full.train, test: full.test.prefix(300))
  }()

  /// A tiny run: 784-32-3 encoder, 20 steps per epoch (so 30 steps cross an epoch boundary),
  /// checkpoints every 10 steps, metrics every 4 (so the step-10 checkpoint holds a partly
  /// filled metrics window), held-out ELBO at step 15.
  static func tinyConfig(
    seed: UInt64 = 7, zdim: Int = 3, steps: Int = 30, checkpointEvery: Int = 10,
    keep: Int = 10, batch: Int = 20
  ) -> RunConfig {
    RunConfig(
      name: "tiny", model: ModelConfig(inputSize: 784, hidden: [32], zdim: zdim),
      dataset: "synthetic", binarize: .dynamic, trainLimit: 400, batch: batch, epochs: nil,
      steps: steps, adam: AdamConfig(lr: 3e-3), seed: seed, checkpointEvery: checkpointEvery,
      evalEvery: 15, keepCheckpoints: keep, logEvery: 4, evalSamples: 1)
  }

  /// A run as `vae-dist train` makes it: flush-to-zero on (the executable's job, not the
  /// library's), no output.
  static func trainer(
    _ config: RunConfig, dir: String, data: DataSplits = synthetic, resume: ResumeMode = .none
  ) throws -> TrainingRun {
    FloatingPointEnvironment.enableFlushToZero()
    return try TrainingRun(
      config: config, data: data, comm: LocalCommunicator(), runDirectory: dir, options: RunOptions(start: StartOptions(resume: resume)))
  }

  @discardableResult
  static func train(_ config: RunConfig, dir: String, resume: ResumeMode = .none) throws -> TrainSummary {
    try trainer(config, dir: dir, resume: resume).run()
  }

  /// A fresh directory under the system temporary directory.
  static func makeTempDir(_ tag: String) throws -> String {
    let path = NSTemporaryDirectory() + "vae-dist-\(tag)-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
  }

  static func bytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
  }

  static func write(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }

  static func copy(_ from: String, _ to: String) throws {
    let fm = FileManager.default
    try fm.createDirectory(atPath: (to as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    if fm.fileExists(atPath: to) { try fm.removeItem(atPath: to) }
    try fm.copyItem(atPath: from, toPath: to)
  }

  /// Fields of metrics.jsonl that measure wall-clock time (they differ between identical runs).
  static let timingFields = [
    "samples_per_sec", "time_s", "allreduce_ms", "wall_time", "startup_s", "data_load_s", "data_check_s",
    "data_checksum_s", "handshake_s",
  ]

  /// metrics.jsonl as parsed objects with the wall-clock fields removed, in file order.
  /// The lines of a run's metrics.jsonl as dictionaries.
  static func metricsLines(_ dir: String) throws -> [[String: Any]] {
    let text = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8)
    return text.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }
  }

  static func metricsWithoutTiming(_ dir: String) throws -> [NSDictionary] {
    let text = try String(contentsOfFile: dir + "/metrics.jsonl", encoding: .utf8)
    return try text.split(separator: "\n").map { line in
      guard var obj = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] else {
        throw NSError(domain: "metrics", code: 1, userInfo: [NSLocalizedDescriptionKey: "not an object: \(line)"])
      }
      for k in timingFields { obj[k] = nil }
      return obj as NSDictionary
    }
  }

  /// Every regular file under `dir` (relative path → bytes).
  static func snapshot(_ dir: String) throws -> [String: [UInt8]] {
    var out: [String: [UInt8]] = [:]
    let fm = FileManager.default
    guard let e = fm.enumerator(atPath: dir) else { return out }
    for case let rel as String in e {
      var isDir: ObjCBool = false
      let full = dir + "/" + rel
      if fm.fileExists(atPath: full, isDirectory: &isDir), !isDir.boolValue { out[rel] = try bytes(full) }
    }
    return out
  }

  static func checkpointNames(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir + "/checkpoints")) ?? []).sorted()
  }

  /// Asserts a one-line description that names `file` (by its last path component).
  static func assertOneLine(
    _ text: String, names file: String, _ what: String, line: UInt = #line
  ) {
    let base = (file as NSString).lastPathComponent
    XCTAssertTrue(text.contains(base), "\(what): description does not name \(base): \(text)", line: line)
    XCTAssertFalse(text.contains("\n") || text.contains("\r"), "\(what): not one line: \(text)", line: line)
  }
}

// MARK: - Trainer tests

final class TrainerTests: XCTestCase {
  // Training expects flush-to-zero, which the executable turns on for its thread.
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  private var root = ""

  override func setUpWithError() throws {
    root = try TT.makeTempDir("trainer-tests")
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: root)
  }

  private func dir(_ name: String) -> String { root + "/" + name }

  /// The reference run (A) of the resume tests: 30 steps, checkpoints at 10 and 20.
  private func referenceRun() throws -> String {
    let a = dir("A")
    try TT.train(TT.tinyConfig(), dir: a)
    XCTAssertEqual(TT.checkpointNames(a), ["step-00000010.safetensors", "step-00000020.safetensors"])
    return a
  }

  // MARK: (a) determinism

  func testSameSeedGivesIdenticalRunsAndDifferentSeedDoesNot() throws {
    let a = dir("a"), b = dir("b"), c = dir("c")
    let sa = try TT.train(TT.tinyConfig(seed: 7), dir: a)
    let sb = try TT.train(TT.tinyConfig(seed: 7), dir: b)
    try TT.train(TT.tinyConfig(seed: 8), dir: c)
    XCTAssertEqual(sa.steps, 30)
    XCTAssertEqual(sa.testELBO, sb.testELBO, "same seed: held-out ELBO differs")

    // The checkpoints are byte-identical files.
    let fa = try TT.bytes(a + "/final.safetensors")
    let fb = try TT.bytes(b + "/final.safetensors")
    XCTAssertEqual(fa, fb, "same seed: final.safetensors differs")
    for name in TT.checkpointNames(a) {
      XCTAssertEqual(
        try TT.bytes(a + "/checkpoints/" + name),
        try TT.bytes(b + "/checkpoints/" + name), "same seed: \(name) differs")
    }
    // The tensors themselves (the data block) are byte-identical.
    let ta = try SafeTensors.read(path: a + "/final.safetensors").tensors
    let tb = try SafeTensors.read(path: b + "/final.safetensors").tensors
    XCTAssertEqual(ta, tb)

    // metrics.jsonl: identical apart from samples_per_sec and time_s; and it has the expected lines.
    let ma = try TT.metricsWithoutTiming(a), mb = try TT.metricsWithoutTiming(b)
    XCTAssertEqual(ma, mb, "same seed: metrics differ")
    let trainSteps = ma.filter { $0["loss"] != nil }.compactMap { ($0["step"] as? NSNumber)?.intValue }
    XCTAssertEqual(trainSteps, [4, 8, 12, 16, 20, 24, 28, 30])
    let evalSteps = ma.filter { $0["test_elbo"] != nil }.compactMap { ($0["step"] as? NSNumber)?.intValue }
    XCTAssertEqual(evalSteps, [15, 30])
    for m in ma where m["loss"] != nil {
      let loss = (m["loss"] as? NSNumber)?.doubleValue ?? .nan
      let recon = (m["recon"] as? NSNumber)?.doubleValue ?? .nan
      let kl = (m["kl"] as? NSNumber)?.doubleValue ?? .nan
      XCTAssertTrue(loss.isFinite && loss > 0, "loss \(loss)")
      XCTAssertEqual(loss, recon + kl, accuracy: 1e-9 * abs(loss))
    }
    let lastEval = try XCTUnwrap(ma.last)
    XCTAssertEqual((lastEval["test_elbo"] as? NSNumber)?.doubleValue ?? .nan, sa.testELBO, accuracy: 1e-9)

    // A different seed gives different parameters (and so different bytes).
    let fc = try TT.bytes(c + "/final.safetensors")
    XCTAssertNotEqual(fa, fc, "different seeds gave the same checkpoint")
    let tc = try SafeTensors.read(path: c + "/final.safetensors").tensors
    XCTAssertNotEqual(ta.first { $0.name == "encoder.0.weight" }, tc.first { $0.name == "encoder.0.weight" })
  }

  /// Checkpoints hold nothing time-dependent: two identical runs write identical files, and
  /// the metadata has no wall-clock field.
  func testIdenticalRunsWriteIdenticalFiles() throws {
    let a = dir("a"), b = dir("b")
    try TT.train(TT.tinyConfig(steps: 4, checkpointEvery: 0), dir: a)
    try TT.train(TT.tinyConfig(steps: 4, checkpointEvery: 0), dir: b)
    XCTAssertEqual(try TT.bytes(a + "/final.safetensors"), try TT.bytes(b + "/final.safetensors"))
    let meta = try SafeTensors.read(path: a + "/final.safetensors").metadata
    XCTAssertNil(meta["elapsed_s"])
    XCTAssertEqual(
      Set(meta.keys),
      ["format", "model", "config", "step", "epoch", "seed", "world_size", "shards", "global_batch", "adam_step",
       "data_checksum", "tensor_crc32", "window_recon", "window_kl", "window_count"])
  }

  // MARK: (b) resume

  /// Copies A's checkpoint at `step` and A's whole metrics.jsonl (which holds lines written
  /// after that checkpoint, as an interrupted run's would) into a new run directory.
  private func interruptedCopy(of a: String, at step: Int, named name: String) throws -> String {
    let b = dir(name)
    let ck = Checkpoint.stepPath(runDirectory: a, step: step)
    try TT.copy(ck, Checkpoint.stepPath(runDirectory: b, step: step))
    try TT.copy(a + "/metrics.jsonl", b + "/metrics.jsonl")
    return b
  }

  private func assertResumedRunMatches(_ a: String, _ b: String, from step: Int, line: UInt = #line) throws {
    // It really resumed (and did not silently start over, which would also be deterministic).
    let probe = try TT.trainer(TT.tinyConfig(), dir: b, resume: .auto)
    try probe.restoreResumed()
    XCTAssertEqual(probe.completedSteps, step, "resume auto picked the wrong checkpoint", line: line)
    XCTAssertEqual(probe.trainer.adam.step, step, line: line)

    try TT.train(TT.tinyConfig(), dir: b, resume: .auto)
    XCTAssertEqual(
      try TT.bytes(a + "/final.safetensors"),
      try TT.bytes(b + "/final.safetensors"),
      "resumed from step \(step): final.safetensors differs", line: line)
    for s in [10, 20] where s > step {
      XCTAssertEqual(
        try TT.bytes(Checkpoint.stepPath(runDirectory: a, step: s)),
        try TT.bytes(Checkpoint.stepPath(runDirectory: b, step: s)),
        "resumed from step \(step): checkpoint \(s) differs", line: line)
    }
    XCTAssertEqual(
      try TT.metricsWithoutTiming(a), try TT.metricsWithoutTiming(b),
      "resumed from step \(step): metrics.jsonl differs (timing fields removed)", line: line)
  }

  /// Step 10 is not a multiple of log_every (4): the checkpoint carries a half-filled window.
  func testResumeFromPartialMetricsWindowIsBitIdentical() throws {
    let a = try referenceRun()
    let ck = try Checkpoint.load(path: Checkpoint.stepPath(runDirectory: a, step: 10))
    XCTAssertEqual(ck.state.windowCount, 2 * 20, "two steps of 20 since the log line at step 8")
    let b = try interruptedCopy(of: a, at: 10, named: "B10")
    try assertResumedRunMatches(a, b, from: 10)
  }

  /// Step 20 is a multiple of log_every and an epoch boundary, after the evaluation at 15.
  func testResumeAtEpochBoundaryIsBitIdentical() throws {
    let a = try referenceRun()
    let ck = try Checkpoint.load(path: Checkpoint.stepPath(runDirectory: a, step: 20))
    XCTAssertEqual(ck.state.windowCount, 0)
    XCTAssertEqual(ck.state.epoch, 1)
    let b = try interruptedCopy(of: a, at: 20, named: "B20")
    try assertResumedRunMatches(a, b, from: 20)
  }

  /// `--resume PATH` into an empty directory continues from that file.
  func testResumeFromExplicitPath() throws {
    let a = try referenceRun()
    let b = dir("Bpath")
    try TT.train(TT.tinyConfig(), dir: b, resume: .path(Checkpoint.stepPath(runDirectory: a, step: 20)))
    XCTAssertEqual(
      try TT.bytes(a + "/final.safetensors"),
      try TT.bytes(b + "/final.safetensors"))
    // Only the lines after step 20 are in B's (new) metrics file.
    let steps = try TT.metricsWithoutTiming(b).compactMap { ($0["step"] as? NSNumber)?.intValue }
    XCTAssertEqual(steps, [24, 28, 30, 30])
  }

  /// `--resume auto` on a run that already finished: nothing to train; the parameters stay
  /// and metrics.jsonl must not gain a second copy of the final evaluation line.
  func testResumeAutoOfFinishedRunIsIdempotent() throws {
    let a = dir("A")
    try TT.train(TT.tinyConfig(steps: 12, checkpointEvery: 5), dir: a)
    let metricsBefore = try TT.metricsWithoutTiming(a)
    let finalBefore = try TT.bytes(a + "/final.safetensors")
    let s = try TT.train(TT.tinyConfig(steps: 12, checkpointEvery: 5), dir: a, resume: .auto)
    XCTAssertEqual(s.steps, 12)
    XCTAssertEqual(try TT.bytes(a + "/final.safetensors"), finalBefore)
    XCTAssertEqual(
      try TT.metricsWithoutTiming(a), metricsBefore,
      "resuming a finished run changed metrics.jsonl (a duplicated final test_elbo line?)")
  }

  // MARK: (c) fresh run into an existing run

  func testFreshRunIntoExistingRunFailsAndTouchesNothing() throws {
    let a = dir("A")
    try TT.train(TT.tinyConfig(steps: 12, checkpointEvery: 5), dir: a)
    let before = try TT.snapshot(a)
    XCTAssertNotNil(before["final.safetensors"])
    XCTAssertNotNil(before["metrics.jsonl"])
    XCTAssertNotNil(before["config.yaml"])
    do {
      try TT.train(TT.tinyConfig(steps: 12, checkpointEvery: 5), dir: a)
      XCTFail("a fresh run into an existing run directory succeeded")
    } catch TrainError.runExists(let d) {
      XCTAssertEqual(d, a)
      TT.assertOneLine(String(describing: TrainError.runExists(d)), names: a, "runExists")
    }
    XCTAssertEqual(try TT.snapshot(a), before, "the existing run was modified")

    // Only checkpoints (no final) count as a run too.
    let b = dir("B")
    try TT.copy(a + "/checkpoints/step-00000010.safetensors", b + "/checkpoints/step-00000010.safetensors")
    let beforeB = try TT.snapshot(b)
    XCTAssertThrowsError(try TT.train(TT.tinyConfig(steps: 12, checkpointEvery: 5), dir: b)) { e in
      guard case TrainError.runExists = e else { return XCTFail("expected runExists, got \(e)") }
    }
    XCTAssertEqual(try TT.snapshot(b), beforeB)
  }

  // MARK: (d) resume with a different run

  func testResumeWithDifferentSeedModelOrBatchNamesTheField() throws {
    let a = dir("A")
    try TT.train(TT.tinyConfig(steps: 10, checkpointEvery: 5), dir: a)
    let before = try TT.snapshot(a)
    let cases: [(RunConfig, String)] = [
      (TT.tinyConfig(seed: 99, steps: 10, checkpointEvery: 5), "seed"),
      (TT.tinyConfig(zdim: 4, steps: 10, checkpointEvery: 5), "model.zdim"),
      (TT.tinyConfig(steps: 10, checkpointEvery: 5, batch: 40), "global batch"),
    ]
    for (config, field) in cases {
      for mode in [ResumeMode.auto, .path(a + "/checkpoints/step-00000005.safetensors")] {
        XCTAssertThrowsError(try TT.train(config, dir: a, resume: mode), "\(field) \(mode)") { e in
          guard case CheckpointError.mismatch(let file, let f, let ck, let run) = e else {
            return XCTFail("\(field): expected CheckpointError.mismatch, got \(e)")
          }
          XCTAssertEqual(f, field)
          XCTAssertNotEqual(ck, run)
          let text = String(describing: e)
          TT.assertOneLine(text, names: file, field)
          XCTAssertTrue(text.contains(field), text)
        }
      }
    }
    // Different training data (another train_limit) changes the data checksum.
    let other = try DatasetRegistry.load(name: "synthetic", dataDirectory: "", trainLimit: 300)
    let otherData = DataSplits(train: other.train, test: TT.synthetic.test)
    var c = TT.tinyConfig(steps: 10, checkpointEvery: 5)
    c.trainLimit = 300
    XCTAssertThrowsError(try TT.trainer(c, dir: a, data: otherData, resume: .auto).run()) { e in
      guard case CheckpointError.mismatch(_, let f, let saved, let now) = e else { return XCTFail("got \(e)") }
      XCTAssertEqual(f, "data checksum")
      // Shown as the start-up handshake shows a checksum: eight hex digits.
      XCTAssertTrue([saved, now].allSatisfy { $0.count == 8 && $0.allSatisfy(\.isHexDigit) } && saved != now, "\(e)")
    }
    XCTAssertEqual(try TT.snapshot(a), before, "a refused resume modified the run")
  }

  // MARK: (e) corrupt newest checkpoint

  func testResumeAutoSkipsCorruptNewestCheckpoint() throws {
    let a = try referenceRun()
    let b = dir("B")
    try TT.copy(Checkpoint.stepPath(runDirectory: a, step: 10), Checkpoint.stepPath(runDirectory: b, step: 10))
    let newest = Checkpoint.stepPath(runDirectory: b, step: 20)
    let good20 = try TT.bytes(Checkpoint.stepPath(runDirectory: a, step: 20))
    try TT.write(Array(good20.prefix(good20.count / 2)), newest)  // truncated mid-data
    try TT.copy(a + "/metrics.jsonl", b + "/metrics.jsonl")
    XCTAssertThrowsError(try Checkpoint.load(path: newest))

    let probe = try TT.trainer(TT.tinyConfig(), dir: b, resume: .auto)
    try probe.restoreResumed()
    XCTAssertEqual(probe.completedSteps, 10, "resume auto should fall back to step 10")

    try TT.train(TT.tinyConfig(), dir: b, resume: .auto)
    XCTAssertEqual(
      try TT.bytes(a + "/final.safetensors"), try TT.bytes(b + "/final.safetensors"))
    // The corrupt file was replaced by the resumed run's (valid, identical) step-20 checkpoint.
    XCTAssertEqual(try TT.bytes(newest), try TT.bytes(Checkpoint.stepPath(runDirectory: a, step: 20)))
    XCTAssertEqual(try TT.metricsWithoutTiming(a), try TT.metricsWithoutTiming(b))
  }

  /// A run directory whose only checkpoint is corrupt: auto starts from step 0 (and says so).
  func testResumeAutoWithOnlyCorruptCheckpointStartsOver() throws {
    let a = try referenceRun()
    let b = dir("B")
    let only = Checkpoint.stepPath(runDirectory: b, step: 10)
    let good = try TT.bytes(Checkpoint.stepPath(runDirectory: a, step: 10))
    var bad = good
    bad[bad.count - 1] ^= 0x40  // a flipped data bit
    try FileManager.default.createDirectory(atPath: b + "/checkpoints", withIntermediateDirectories: true)
    try TT.write(bad, only)
    let probe = try TT.trainer(TT.tinyConfig(), dir: b, resume: .auto)
    try probe.restoreResumed()
    XCTAssertEqual(probe.completedSteps, 0)
  }

  // MARK: (f) keep_checkpoints

  func testKeepCheckpointsPrunesToTheLastK() throws {
    let a = dir("A")
    try TT.train(TT.tinyConfig(steps: 32, checkpointEvery: 5, keep: 2), dir: a)
    XCTAssertEqual(TT.checkpointNames(a), ["step-00000025.safetensors", "step-00000030.safetensors"])
    let b = dir("B")
    try TT.train(TT.tinyConfig(steps: 32, checkpointEvery: 5, keep: 1), dir: b)
    XCTAssertEqual(TT.checkpointNames(b), ["step-00000030.safetensors"])
    XCTAssertTrue(FileManager.default.fileExists(atPath: b + "/final.safetensors"))
    for name in TT.checkpointNames(a) {
      XCTAssertNoThrow(try Checkpoint.load(path: a + "/checkpoints/" + name))
    }
    // No temporary files are left behind by the atomic writes.
    let leftovers = (try TT.snapshot(a)).keys.filter { $0.contains(".tmp-") }
    XCTAssertEqual(leftovers, [])
  }

  // MARK: (f2) gradient accumulation

  /// --micro-batches K: activations sized for the largest micro-batch, the same training up to
  /// summation order (B = 20 in 6/7/7 rows), and K outside 1…B/P named as a flag error.
  func testMicroBatchesAccumulateTheSameStep() throws {
    let c = TT.tinyConfig(steps: 12, batch: 20)
    func make(_ k: Int, _ name: String) throws -> TrainingRun {
      try TrainingRun(
        config: c, data: TT.synthetic, comm: LocalCommunicator(), runDirectory: dir(name), options: RunOptions(parallel: ParallelOptions(microBatches: k)))
    }
    let one = try make(1, "k1"), three = try make(3, "k3")
    XCTAssertEqual(one.trainer.model.maxBatch, 20)
    XCTAssertEqual(three.trainer.model.maxBatch, 7)
    var lossOne = 0.0, lossThree = 0.0
    for _ in 0..<12 {
      lossOne += try one.trainer.step().negativeELBO
      lossThree += try three.trainer.step().negativeELBO
    }
    XCTAssertEqual(lossThree, lossOne, accuracy: 1e-5 * abs(lossOne))
    let a = one.trainer.model.params.toArray(), b = three.trainer.model.params.toArray()
    var diff = 0.0, norm = 0.0
    for (x, y) in zip(a, b) {
      diff += Double(x - y) * Double(x - y)
      norm += Double(x) * Double(x)
    }
    XCTAssertLessThan((diff / norm).squareRoot(), 1e-5, "12 steps with 3 micro-batches drifted from one batch")
    for bad in [0, 21] {
      XCTAssertThrowsError(try make(bad, "bad")) { e in
        XCTAssertTrue("\(e)".contains("micro-batches: \(bad) micro-batches") && "\(e)".contains("expected 1…20"), "\(e)")
      }
    }
  }

  // MARK: (g) sharding arithmetic

  func testShardRangesTileTheBatch() {
    for b in [1, 2, 3, 7, 50, 100, 128] {
      for p in 1...b {
        var next = 0
        var sizes: [Int] = []
        for r in 0..<p {
          let s = shardRange(rank: r, size: p, count: b)
          XCTAssertEqual(s.lowerBound, next, "B=\(b) P=\(p) r=\(r): gap or overlap")
          next = s.upperBound
          sizes.append(s.count)
        }
        XCTAssertEqual(next, b, "B=\(b) P=\(p): shards end at \(next)")
        XCTAssertLessThanOrEqual((sizes.max() ?? 0) - (sizes.min() ?? 0), 1, "B=\(b) P=\(p): \(sizes)")
        XCTAssertGreaterThanOrEqual(sizes.min() ?? 0, 1, "B=\(b) P=\(p): an empty shard")
      }
    }
    XCTAssertEqual(LocalCommunicator().shard(of: 37), 0..<37)
    // The held-out set (evaluation) is split the same way, also when P does not divide it.
    XCTAssertEqual(shardRange(rank: 2, size: 3, count: 10_000), 6666..<10_000)
  }

  /// The rows of a global batch do not depend on the number of ranks: the union of the ranks'
  /// rows (in rank order) is the single-rank batch, pixel for pixel.
  func testShardedBatchesConcatenateToTheGlobalBatch() {
    let data = TT.synthetic.train
    let batch = 20
    let whole = Batcher(dataset: data, binarization: .dynamic, rng: CounterRNG(seed: 3), globalBatch: batch)
    var xAll = [Float](repeating: 0, count: batch * 784)
    var iAll = [Int](repeating: 0, count: batch)
    xAll.withUnsafeMutableBufferPointer { x in
      iAll.withUnsafeMutableBufferPointer { i in
        whole.fill(epoch: 1, batchInEpoch: 3, rows: 0..<batch, x: x.baseAddress!, indices: i.baseAddress!)
      }
    }
    for p in [2, 3, 7] {
      var xs: [Float] = []
      var is_: [Int] = []
      for r in 0..<p {
        let rows = shardRange(rank: r, size: p, count: batch)
        let bt = Batcher(dataset: data, binarization: .dynamic, rng: CounterRNG(seed: 3), globalBatch: batch)
        var x = [Float](repeating: 0, count: rows.count * 784)
        var i = [Int](repeating: 0, count: rows.count)
        x.withUnsafeMutableBufferPointer { xp in
          i.withUnsafeMutableBufferPointer { ip in
            bt.fill(epoch: 1, batchInEpoch: 3, rows: rows, x: xp.baseAddress!, indices: ip.baseAddress!)
          }
        }
        xs += x
        is_ += i
      }
      XCTAssertEqual(is_, iAll, "P=\(p)")
      XCTAssertEqual(xs, xAll, "P=\(p)")
    }
  }

  // MARK: (h) training helps

  func testTrainingImprovesHeldOutELBO() throws {
    var config = TT.tinyConfig(steps: 80, checkpointEvery: 0)
    config.model = ModelConfig(inputSize: 784, hidden: [64], zdim: 4)
    let t = try TT.trainer(config, dir: dir("learn"))
    let before = try t.evaluate()
    XCTAssertTrue(before.elbo.isFinite)
    XCTAssertEqual(before.elbo, -(before.recon + before.kl), accuracy: 1e-9 * abs(before.elbo))
    let s = try t.run()
    XCTAssertEqual(s.steps, 80)
    // An untrained decoder is near 784·log 2 ≈ 543 nats per image; 80 steps must win a lot.
    XCTAssertGreaterThan(s.testELBO, before.elbo + 150, "ELBO \(before.elbo) → \(s.testELBO)")
    XCTAssertGreaterThan(s.testKL, 0)
    // The reported number is the one evaluate() computes from the final parameters.
    let again = try t.evaluate()
    XCTAssertEqual(again.elbo, s.testELBO, accuracy: 1e-9 * abs(s.testELBO))
  }

  func testBadSettingsAreRejected() throws {
    var c = TT.tinyConfig()
    c.batch = 401
    XCTAssertThrowsError(try TT.trainer(c, dir: dir("x"))) { e in
      guard case TrainError.badSetting(let s) = e else { return XCTFail("got \(e)") }
      XCTAssertTrue(s.contains("train.batch"), s)
    }
    c = TT.tinyConfig()
    c.model.inputSize = 100
    XCTAssertThrowsError(try TT.trainer(c, dir: dir("x"))) { e in
      guard case TrainError.badSetting(let s) = e else { return XCTFail("got \(e)") }
      XCTAssertTrue(s.contains("input_size"), s)
    }
    // Resuming from a checkpoint past this run's end is refused.
    let a = dir("A")
    try TT.train(TT.tinyConfig(steps: 10, checkpointEvery: 5), dir: a)
    XCTAssertThrowsError(try TT.train(TT.tinyConfig(steps: 8, checkpointEvery: 5), dir: a, resume: .auto)) { e in
      guard case TrainError.badSetting(let s) = e else { return XCTFail("got \(e)") }
      XCTAssertTrue(s.contains("past"), s)
    }
  }

  /// Free bits' encoder pass loads each micro-batch once and leaves the step's first loaded: a
  /// step loads K micro-batches (plain) or 2K − 1 (free bits), not 2K. (The tensors did not
  /// change with it; MPITests hold free bits' np K ≡ K micro-batches.)
  func testFreeBitsLoadsEachMicroBatchOnce() throws {
    final class CountLoads: StepObserver {
      var loads = 0
      override func measure<T>(_ phase: StepPhase, _ body: () throws -> T) throws -> T {
        if phase == .batch { loads += 1 }
        return try body()
      }
    }
    for (freeBits, k, perStep) in [(Float(0), 1, 1), (0, 2, 2), (0.5, 1, 1), (0.5, 2, 3)] {
      var c = TT.tinyConfig(steps: 5)
      c.objective.freeBits = freeBits
      let t = try Trainer(config: c, train: TT.synthetic.train, comm: LocalCommunicator(), parallel: ParallelOptions(microBatches: k))
      let count = CountLoads()
      for _ in 0..<3 { try t.step(observer: count) }
      XCTAssertEqual(count.loads, 3 * perStep, "free bits \(freeBits), \(k) micro-batch(es)")
    }
  }
}
