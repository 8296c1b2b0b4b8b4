import XCTest

@testable import VAE

/// The KL weight and learning-rate schedules: pure functions of the step, with the values the
/// papers define.
final class ScheduleTests: XCTestCase {
  func testKLWarmupRisesLinearlyToBeta() {
    let o = TrainingObjective(beta: 4, klWarmup: 8)
    XCTAssertEqual((0...9).map { o.klWeight(step: $0) }, [0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4])
    XCTAssertEqual(TrainingObjective().klWeight(step: 0), 1)
    XCTAssertTrue(TrainingObjective().isPlainELBO)
    XCTAssertFalse(TrainingObjective(beta: 1, klWarmup: 5).isPlainELBO)
  }

  func testConstantScheduleIsTheBaseRateBitForBit() {
    let s = LearningRateSchedule()
    for step in [0, 1, 599, 6000] { XCTAssertEqual(s.lr(base: 0.001, step: step, stepsPerEpoch: 600, totalSteps: 6000), 0.001) }
  }

  func testCosineFallsFromTheBaseRateToZero() {
    let s = LearningRateSchedule(shape: .cosine)
    XCTAssertEqual(s.lr(base: 0.002, step: 0, stepsPerEpoch: 10, totalSteps: 100), 0.002)
    XCTAssertEqual(s.lr(base: 0.002, step: 50, stepsPerEpoch: 10, totalSteps: 100), 0.001, accuracy: 1e-9)
    XCTAssertEqual(s.lr(base: 0.002, step: 100, stepsPerEpoch: 10, totalSteps: 100), 0, accuracy: 1e-12)
    let quarter = Float(0.002 * 0.5 * (1 + cos(Double.pi / 4)))
    XCTAssertEqual(s.lr(base: 0.002, step: 25, stepsPerEpoch: 10, totalSteps: 100), quarter, accuracy: 1e-9)
  }

  /// Burda et al.: stage i (lr · 10^(−i/7)) lasts 3^i epochs: epoch 0; 1–3; 4–12; 13–39; …
  func testIWAEStagesLastThreeToTheIEpochs() {
    let stages = (0..<41).map(LearningRateSchedule.iwaeStage(epoch:))
    XCTAssertEqual(stages[0], 0)
    XCTAssertEqual(Array(stages[1...3]), [1, 1, 1])
    XCTAssertEqual(Array(stages[4...12]), Array(repeating: 2, count: 9))
    XCTAssertEqual(stages[13], 3)
    XCTAssertEqual(stages[39], 3)
    XCTAssertEqual(stages[40], 4)
    // 3,280 epochs in all (Σ 3^i, i < 8): the last epoch is still stage 7.
    XCTAssertEqual(LearningRateSchedule.iwaeStage(epoch: 3279), 7)
    let s = LearningRateSchedule(shape: .iwae)
    XCTAssertEqual(s.lr(base: 1e-3, step: 5 * 100, stepsPerEpoch: 100, totalSteps: 100_000), Float(1e-3 * pow(10, -2.0 / 7)), accuracy: 1e-10)
  }

  func testLinearWarmupRampsFirstSteps() {
    let s = LearningRateSchedule(shape: .constant, warmup: 4)
    XCTAssertEqual((0..<6).map { s.lr(base: 1, step: $0, stepsPerEpoch: 10, totalSteps: 100) }, [0.25, 0.5, 0.75, 1, 1, 1])
  }
}
