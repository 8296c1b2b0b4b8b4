import Formats
import Foundation
import XCTest

@testable import VAE
@testable import VAEData
@testable import VAEDist

/// The conditional kinds train with the VAE's guarantees: they learn, a resumed run is
/// bit-identical, and K micro-batches reproduce K ranks.
final class ConditionalTrainingTests: XCTestCase {
  // Training expects flush-to-zero, which the executable turns on for its thread.
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  var root = ""
  override func setUpWithError() throws { root = try TT.makeTempDir("cond") }
  override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

  static func config(_ kind: ModelKind, steps: Int = 30) -> RunConfig {
    let model = ModelConfig(
      kind: kind, inputSize: 784, hidden: [24, 16], decoderHidden: kind == .cvae ? [12, 24] : [20],
      zdim: 3, conditionHidden: [20, 16, 12], conditionIntoEncoder: 1)
    var c = RunConfig(
      name: kind.rawValue, model: model, dataset: "synthetic", binarize: .none, trainLimit: 400, batch: 20,
      epochs: nil, steps: steps, adam: AdamConfig(lr: 3e-3, weightDecay: 5e-4, decayBiases: false), seed: 11,
      checkpointEvery: 10, evalEvery: 15, keepCheckpoints: 10, logEvery: 4)
    c.model.conditionSize = c.conditioning!.conditionSize
    return c
  }

  func testBothKindsLearnAndResumeBitIdentically() throws {
    for kind in [ModelKind.cvae, .regressor] {
      let a = root + "/\(kind)-a", b = root + "/\(kind)-b"
      let t = try TT.trainer(Self.config(kind), dir: a)
      let before = try t.evaluate()
      let s = try t.run()
      XCTAssertGreaterThan(s.testELBO, before.elbo + 5, "\(kind): held-out log p(Y|X) should improve")
      if kind == .regressor { XCTAssertEqual(s.testKL, 0) }
      // Interrupted after step 10: resume from that checkpoint into a new directory.
      try TT.copy(Checkpoint.stepPath(runDirectory: a, step: 10), Checkpoint.stepPath(runDirectory: b, step: 10))
      try TT.copy(a + "/metrics.jsonl", b + "/metrics.jsonl")
      try TT.train(Self.config(kind), dir: b, resume: .auto)
      XCTAssertEqual(try TT.bytes(a + "/final.safetensors"), try TT.bytes(b + "/final.safetensors"), "\(kind)")
      let ck = try Checkpoint.load(path: a + "/final.safetensors")
      XCTAssertEqual(ck.model.kind, kind)
      XCTAssertEqual(ck.model.conditionSize, 28)
      XCTAssertEqual(ck.file.tensor("cond.0.weight")?.shape, [20, 28])
    }
  }

  /// A checkpoint of one kind cannot resume a run of another.
  func testResumeRefusesAnotherKind() throws {
    let a = root + "/cvae"
    try TT.train(Self.config(.cvae, steps: 10), dir: a)
    var other = Self.config(.cvae, steps: 20)
    other.model.kind = .regressor
    other.model.decoderHidden = [20]
    XCTAssertThrowsError(try TT.train(other, dir: root + "/r", resume: .path(a + "/final.safetensors"))) {
      let text = "\($0)"
      XCTAssertTrue(text.contains("cannot resume") && text.contains("cvae") && text.contains("regressor"), text)
    }
  }

  /// Two micro-batches on one process take the same step as the whole batch, up to summation
  /// order; the CVAE's condition tower gets its gradient in both.
  func testMicroBatchesMatchTheWholeBatch() throws {
    let one = try TrainingRun(
      config: Self.config(.cvae), data: TT.synthetic, comm: LocalCommunicator(), runDirectory: root + "/m1")
    let two = try TrainingRun(
      config: Self.config(.cvae), data: TT.synthetic, comm: LocalCommunicator(), runDirectory: root + "/m2", options: RunOptions(parallel: ParallelOptions(microBatches: 2)))
    for _ in 0..<5 {
      try one.trainer.step()
      try two.trainer.step()
    }
    let a = one.trainer.model.params.toArray(), b = two.trainer.model.params.toArray()
    let worst = zip(a, b).map { abs($0 - $1) / max(abs($0), 1e-3) }.max() ?? 0
    XCTAssertLessThan(worst, 1e-3)
    let cond = try XCTUnwrap(one.trainer.model.params.layout.range(named: "cond.0.weight"))
    let init0 = VAEModel(config: Self.config(.cvae).model, maxBatch: 1)
    init0.initialise(rng: CounterRNG(seed: 11))
    XCTAssertNotEqual(Array(a[cond]), Array(init0.params.toArray()[cond]), "the condition tower must train")
  }

  /// metrics.jsonl's grad_norm is the L2 norm of the batch-averaged gradient of the logged
  /// step (before weight decay), lr the learning rate, wall_time a Unix time, and epochs count
  /// from 1 the same way in metrics and checkpoints.
  func testMetricsCarryGradientNormLearningRateAndTime() throws {
    var c = TT.tinyConfig(steps: 1, checkpointEvery: 0)
    c.logEvery = 1
    let dir = root + "/norm"
    let before = Date().timeIntervalSince1970
    try TT.train(c, dir: dir)
    let line = try XCTUnwrap(try TT.metricsLines(dir).first { $0["loss"] != nil })
    // The same first step by hand: batch 0's rows and noise, forward, backward, then the norm.
    let probe = try TT.trainer(c, dir: root + "/probe")
    probe.trainer.loadBatch(0..<c.batch)
    probe.trainer.model.loss(x: UnsafePointer(probe.trainer.x.ptr), eps: UnsafePointer(probe.trainer.eps.ptr), batch: c.batch)
    probe.trainer.model.backward()
    let norm = probe.trainer.model.grads.toArray().reduce(0.0) { $0 + Double($1) * Double($1) }.squareRoot() / Double(c.batch)
    let logged = try XCTUnwrap(line["grad_norm"] as? Double)
    XCTAssertEqual(logged, norm, accuracy: 1e-6 * norm)
    XCTAssertGreaterThan(norm, 0)
    XCTAssertEqual(try XCTUnwrap(line["lr"] as? Double), Double(c.adam.lr), accuracy: 1e-12)
    let wall = try XCTUnwrap(line["wall_time"] as? Double)
    XCTAssertTrue(wall >= before - 1 && wall <= Date().timeIntervalSince1970 + 1, "\(wall)")
    XCTAssertEqual(line["epoch"] as? Int, 1)
    XCTAssertEqual(try Checkpoint.load(path: dir + "/final.safetensors").state.epoch, 1)
  }

  /// --init: a weights-only safetensors file (as PyTorch's save_file writes) replaces the
  /// initialisation; a missing or mis-shaped tensor is a one-line error naming it.
  func testInitialWeightsFromAWeightsOnlyFile() throws {
    let a = root + "/a"
    try TT.train(TT.tinyConfig(steps: 10, checkpointEvery: 0), dir: a)
    let trained = try Checkpoint.load(path: a + "/final.safetensors")
    let layout = trained.params.layout
    func write(_ tensors: [SafeTensor], _ name: String) throws -> String {
      let path = root + "/" + name
      try FileIO.writeAtomically(SafeTensors.encode(tensors: tensors, metadata: [:]), to: path)
      return path
    }
    let all = layout.specs.map { SafeTensor(name: $0.name, shape: $0.shape, floats: trained.params.values(named: $0.name)!) }
    let weights = try write(all.reversed(), "weights.safetensors")  // any order
    let t = try TT.trainer(TT.tinyConfig(steps: 10, checkpointEvery: 0), dir: root + "/b")
    XCTAssertNotEqual(t.trainer.model.params.toArray(), trained.params.toArray())
    try t.loadInitialWeights(weights)
    XCTAssertEqual(t.trainer.model.params.toArray(), trained.params.toArray())
    XCTAssertEqual(t.trainer.adam.step, 0)
    let missing = try write(Array(all.dropLast()), "missing.safetensors")
    XCTAssertThrowsError(try TT.trainer(TT.tinyConfig(), dir: root + "/c").loadInitialWeights(missing)) {
      XCTAssertTrue("\($0)".contains("missing.safetensors") && "\($0)".contains(layout.specs.last!.name), "\($0)")
    }
    var bad = all
    bad[0] = SafeTensor(name: all[0].name, shape: [1, all[0].shape.reduce(1, *)], floats: trained.params.values(named: all[0].name)!)
    let shaped = try write(bad, "shaped.safetensors")
    XCTAssertThrowsError(try TT.trainer(TT.tinyConfig(), dir: root + "/d").loadInitialWeights(shaped)) {
      XCTAssertTrue("\($0)".contains(all[0].name) && "\($0)".contains("shape"), "\($0)")
    }
  }

  /// A resume at another world size, or with changed settings, says so in one line each, and a
  /// changed setting is recorded in metrics.jsonl; an unchanged resume says nothing. (Here the
  /// run's split is fixed at 1 × 1 before the notes are asked for, so a 2-rank checkpoint cannot
  /// keep its bits: BatchSplitTests and MPITests cover the kept split.)
  func testResumeNotesChangedWorldSizeAndSettings() throws {
    let a = root + "/a"
    try TT.train(TT.tinyConfig(steps: 20), dir: a)
    let ck = try Checkpoint.load(path: Checkpoint.stepPath(runDirectory: a, step: 10))
    XCTAssertEqual(try TT.trainer(TT.tinyConfig(steps: 20), dir: root + "/same").resumeNotes(ck).count, 0)
    var state = ck.state
    (state.worldSize, state.shards) = (2, 2)
    let moved = LoadedCheckpoint(
      path: ck.path, model: ck.model, params: ck.params, adamM: ck.adamM, adamV: ck.adamV, state: state,
      configYAML: ck.configYAML, file: ck.file)
    var c = TT.tinyConfig(steps: 30)
    c.adam.lr = 1e-3
    let notes = try TT.trainer(c, dir: root + "/n").resumeNotes(moved).compactMap { e -> String? in
      if case .warning(let text) = e { return text }
      return nil
    }
    XCTAssertEqual(notes.count, 2, "\(notes)")
    XCTAssertTrue(
      notes[0].hasPrefix("resuming a run of 2 ranks × 1 micro-batch on 1 rank × 1 micro-batch: each global batch is split into 1 part(s) instead of 2")
        && notes[0].hasSuffix("resume on 1 or 2 rank(s) with the micro-batch count left to auto"), notes[0])
    XCTAssertTrue(notes[1].contains("train.lr 0.003 → 0.001") && !notes[1].contains("steps"), notes[1])
    // End to end: the resumed run logs the change.
    let b = root + "/b"
    try TT.copy(Checkpoint.stepPath(runDirectory: a, step: 10), Checkpoint.stepPath(runDirectory: b, step: 10))
    try TT.train(c, dir: b, resume: .auto)
    let event = try TT.metricsLines(b).first { $0["event"] as? String == "resume" }
    XCTAssertEqual(event?["step"] as? Int, 10)
    XCTAssertTrue((event?["changed"] as? String ?? "").contains("train.lr"), "\(String(describing: event))")
  }

  /// train.checkpoint_minutes: checkpoints by time as well as by steps (here every ~6 ms).
  func testTimeBasedCheckpoints() throws {
    var timed = TT.tinyConfig(steps: 60, checkpointEvery: 0, keep: 1000)
    timed.checkpointMinutes = 0.0001
    try TT.train(timed, dir: root + "/timed")
    let names = TT.checkpointNames(root + "/timed")
    XCTAssertGreaterThan(names.count, 2, "\(names)")
    for n in names { XCTAssertNoThrow(try Checkpoint.load(path: root + "/timed/checkpoints/" + n)) }
    XCTAssertTrue(timed.yaml.contains("checkpoint_minutes: 0.0001"), timed.yaml)
    try TT.train(TT.tinyConfig(steps: 60, checkpointEvery: 0), dir: root + "/untimed")
    XCTAssertEqual(TT.checkpointNames(root + "/untimed"), [])
  }

  /// A checkpoint write killed mid-way leaves `.name.tmp-PID-…`; the next run in the directory
  /// removes it (and keeps a valid checkpoint).
  func testStaleTemporaryFilesAreRemovedAtStart() throws {
    let a = root + "/stale"
    try TT.train(TT.tinyConfig(steps: 10, checkpointEvery: 5), dir: a)
    let stale = a + "/checkpoints/.step-00000015.safetensors.tmp-999999-abc"
    try TT.write([1, 2, 3], stale)
    try TT.train(TT.tinyConfig(steps: 20, checkpointEvery: 5), dir: a, resume: .auto)
    XCTAssertFalse(FileManager.default.fileExists(atPath: stale))
    XCTAssertNoThrow(try Checkpoint.load(path: a + "/final.safetensors"))
  }

  /// The completion figure's layout (TensorBoard's and `vae-dist complete`'s): per example the
  /// true image, then each completion with that example's X in place and the column's Y.
  func testCompletionTilesKeepXAndTakeYFromEachColumn() {
    let cond = Conditioning(mask: .middleColumn, binarization: .dynamic, rows: 4, cols: 4)
    let p = cond.pixels, c = cond.conditionSize, t = p - c
    let rows: [Float] = (0..<2 * p).map { Float($0) }  // 2 examples: X then Y
    let completions: [[Float]] = [(0..<2 * t).map { Float(100 + $0) }, (0..<2 * t).map { Float(200 + $0) }]
    let tiles = cond.completionTiles(rows: rows, count: 2, completions: completions)
    XCTAssertEqual(tiles.count, 6)
    for i in 0..<2 {
      let x = Array(rows[(i * p)..<(i * p + c)])
      XCTAssertEqual(tiles[3 * i], cond.assemble(x: x, y: Array(rows[(i * p + c)..<((i + 1) * p)])))
      for (k, col) in completions.enumerated() {
        XCTAssertEqual(tiles[3 * i + 1 + k], cond.assemble(x: x, y: Array(col[(i * t)..<((i + 1) * t)])))
      }
    }
    let mask = cond.conditionMask
    XCTAssertEqual(mask.filter { $0 }.count, c)
    let columns = Set(mask.indices.filter { mask[$0] }.map { $0 % 4 })
    XCTAssertEqual(columns.count, 1, "X is one column")
    XCTAssertTrue(columns.isSubset(of: [1, 2]), "the middle column of 4: \(columns)")
  }
}
