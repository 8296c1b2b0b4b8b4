import Foundation
import TestSupport
import XCTest

@testable import VAE
@testable import VAEData
@testable import VAEDist

/// End to end on real MNIST: 2,000 training images, 2 epochs of the default network, and the
/// held-out ELBO over all 10,000 test images must improve on the untrained model's by a margin.
final class EndToEndMNISTTests: XCTestCase {
  // Training expects flush-to-zero, which the executable turns on for its thread.
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  func testTwoEpochsOnMNISTImproveTheHeldOutELBO() throws {
    guard let dir = TestPaths.mnistDataDirectory else {
      throw XCTSkip("no MNIST in any of \(TestPaths.dataDirectoryCandidates) (run scripts/get-data)")
    }
    let data = try DatasetRegistry.load(name: "mnist", dataDirectory: dir, trainLimit: 2000)
    XCTAssertEqual(data.train.count, 2000)
    XCTAssertEqual(data.test.count, 10_000)
    let config = RunConfig(
      name: "e2e", model: ModelConfig(hidden: [500, 500], zdim: 20), dataset: "mnist", binarize: .dynamic,
      trainLimit: 2000, batch: 100, epochs: 2, seed: 1, checkpointEvery: 0, evalEvery: 0, logEvery: 10)
    let out = NSTemporaryDirectory() + "vae-e2e-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: out) }
    let trainer = try TrainingRun(
      config: config, data: data, comm: LocalCommunicator(), runDirectory: out)
    let untrained = try trainer.evaluate()
    let summary = try trainer.run()
    XCTAssertEqual(summary.steps, 40)
    print("MNIST end to end: held-out ELBO untrained \(untrained.elbo), after 2 epochs on 2,000 images \(summary.testELBO)")
    // The untrained decoder puts p ≈ 0.5 on every pixel (≈ −543 nats); two epochs learn at
    // least the digit-shaped mean image and strokes: a 250-nat gain is far above noise (the
    // estimate's standard error over 10,000 images is < 0.5 nats) and far below what a
    // working model reaches here (measured: −544.5 → −207.5, a 337-nat gain).
    XCTAssertLessThan(untrained.elbo, -500)
    XCTAssertGreaterThan(summary.testELBO - untrained.elbo, 250)
    XCTAssertGreaterThan(summary.testELBO, -250)
    // The final checkpoint holds the trained parameters and evaluates to the same number.
    let ck = try Checkpoint.load(path: out + "/final.safetensors")
    let est = Estimator(config: ck.model, params: ck.params)
    let testX = Batcher.heldOut(data.test, binarization: .dynamic)
    let t = testX.withUnsafeBufferPointer {
      est.elbo(x: $0.baseAddress!, count: data.test.count, firstIndex: 0,
               noise: .sampled(CounterRNG(seed: heldOutBinarizationSeed)))
    }
    XCTAssertEqual(-(t.kl - t.recon) / 10_000, summary.testELBO, accuracy: 1e-9 * abs(summary.testELBO))
  }
}
