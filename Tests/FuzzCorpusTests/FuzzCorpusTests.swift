import Foundation
import TestSupport
import XCTest

/// Replays each fuzz target's committed corpus (`Fuzz/corpus/<target>`, see scripts/fuzz)
/// through the target's replayer, the program a plain `swift build` makes of it: every input,
/// including the inputs kept as regression cases (`regress-*`), must pass the target's checks.
final class FuzzCorpusTests: XCTestCase {
  func testSafeTensorsCorpus() throws { try replay("fuzz-safetensors") }
  func testIDXCorpus() throws { try replay("fuzz-idx") }
  func testConfigCorpus() throws { try replay("fuzz-config") }
  func testNPYCorpus() throws { try replay("fuzz-npy") }

  private func replay(_ target: String) throws {
    let binary = try XCTUnwrap(
      VAEDistBinary.sibling(target), "\(target) is not built beside vae-dist; build everything first (swift build)")
    let corpus = TestPaths.packageRoot + "/Fuzz/corpus/" + target
    let inputs = try FileManager.default.contentsOfDirectory(atPath: corpus).filter { !$0.hasPrefix(".") }
    XCTAssertGreaterThan(inputs.count, 0, "\(corpus) is empty")
    let r = try Subprocess.run([binary, "--verbose", corpus])
    XCTAssertEqual(
      r.status, 0,
      "\(target) failed on its corpus; the last input it started is the last path here:\n"
        + r.stderrLines.suffix(8).joined(separator: "\n"))
    XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "\(target): ran \(inputs.count) inputs")
  }
}
