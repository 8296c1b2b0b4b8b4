import Foundation
import VAE
import XCTest

@testable import VAEDist

/// What `train` reports at the end describes this session's work.
final class TrainSummaryTests: XCTestCase {
  // Training expects flush-to-zero, which the executable turns on for its thread.
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  /// Resuming a finished run trains no steps: its throughput is 0, not all steps over an
  /// evaluation's time; a fresh run reports a positive rate.
  func testResumedRunReportsOnlyItsOwnSteps() throws {
    let dir = try TT.makeTempDir("summary")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let first = try TT.train(TT.tinyConfig(), dir: dir)
    XCTAssertEqual(first.steps, 30)
    XCTAssertGreaterThan(first.samplesPerSecond, 0)
    let again = try TT.train(TT.tinyConfig(), dir: dir, resume: .auto)
    XCTAssertEqual(again.steps, 30)
    XCTAssertEqual(again.samplesPerSecond, 0)
    XCTAssertEqual(again.testELBO, first.testELBO)
  }
}
