import Foundation
import Formats
import TestSupport
import XCTest

@testable import VAEDist

/// metrics.jsonl lines go through the one JSON writer: valid JSON whatever the values.
final class RunDirectoryMetricsTests: XCTestCase {
  func testNonFiniteMetricsAreNullWithTheReasonAndEveryLineParses() throws {
    let dir = try TempDir()
    let files = RunDirectory(path: dir.path)
    try files.openMetrics()
    try files.appendMetrics(["step": 10, "loss": .number(.nan), "kl": .number(.infinity), "lr": 0.001])
    try files.appendMetrics(["step": 20, "event": "stopped", "signal": "SIGTERM", "loss": nil, "time_s": 1.5])
    try files.closeMetrics()
    let text = try String(contentsOfFile: files.metricsPath, encoding: .utf8)
    XCTAssertEqual(
      text,
      #"{"step": 10, "loss": null, "loss_nonfinite": "nan", "kl": null, "kl_nonfinite": "inf", "lr": 0.001}"# + "\n"
        + #"{"step": 20, "event": "stopped", "signal": "SIGTERM", "loss": null, "time_s": 1.5}"# + "\n")
    let r = try Subprocess.python(
      "import json, sys; rows = [json.loads(l) for l in open(sys.argv[1])]; print(rows[0]['loss'], rows[0]['kl_nonfinite'], rows[1]['event'])",
      [files.metricsPath])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "None inf stopped")
  }
}
