import Foundation
import XCTest

@testable import VAE
@testable import VAEData
@testable import VAEDist

/// The conditional kinds train with the VAE's guarantees: they learn, a resumed run is
/// bit-identical, and K micro-batches reproduce K ranks.
final class ConditionalTrainingTests: XCTestCase {
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
      let s = try t.run(resume: .none)
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
    let one = try Trainer(
      config: Self.config(.cvae), data: TT.synthetic, comm: LocalCommunicator(), runDirectory: root + "/m1",
      output: OutputOptions(quiet: true, terminal: false))
    let two = try Trainer(
      config: Self.config(.cvae), data: TT.synthetic, comm: LocalCommunicator(), runDirectory: root + "/m2",
      output: OutputOptions(quiet: true, terminal: false), parallel: ParallelOptions(microBatches: 2))
    for _ in 0..<5 {
      try one.trainStep()
      try two.trainStep()
    }
    let a = one.model.params.toArray(), b = two.model.params.toArray()
    let worst = zip(a, b).map { abs($0 - $1) / max(abs($0), 1e-3) }.max() ?? 0
    XCTAssertLessThan(worst, 1e-3)
    let cond = try XCTUnwrap(one.model.params.layout.range(named: "cond.0.weight"))
    let init0 = VAEModel(config: Self.config(.cvae).model, maxBatch: 1)
    init0.initialise(rng: CounterRNG(seed: 11))
    XCTAssertNotEqual(Array(a[cond]), Array(init0.params.toArray()[cond]), "the condition tower must train")
  }
}
