import Foundation
import TestSupport
import XCTest

/// `scripts/lint-functions`: which functions it counts, how long it says they are, its exit status.
final class LintFunctionsTests: XCTestCase {
  private var script: String { TestPaths.packageRoot + "/scripts/lint-functions" }

  /// A function of exactly `lines` lines (declaration and closing brace included).
  private func function(_ signature: String, lines: Int, indent: String = "  ") -> String {
    ([indent + signature + " {"] + (0..<(lines - 2)).map { indent + "  _ = \($0)" } + [indent + "}"]).joined(separator: "\n")
  }

  func testListsFunctionsOverTheLimitLongestFirstAndFailsOnlyThen() throws {
    let source = [
      "protocol P {", "  func required()", "}",
      "struct S {",
      function("func sixty()", lines: 60),
      function("public static func sixtyOne(", lines: 61).replacingOccurrences(
        of: "sixtyOne( {", with: "sixtyOne(\n    a: Int\n  ) -> Int {"),
      function("init(x: Int)", lines: 70),
      "  func text() -> String {", "    \"\"\"", "    } } } not code {", "    \"\"\"", "  }",
      "  func oneLine() { let s = \"}\"; _ = s }",
      "}",
    ].joined(separator: "\n")
    let dir = try TempDir()
    let tmp = dir.path
    try source.write(toFile: tmp + "/S.swift", atomically: true, encoding: .utf8)
    try "struct G { \(function("func huge()", lines: 100)) }".write(toFile: tmp + "/G.pb.swift", atomically: true, encoding: .utf8)
    let r = try Subprocess.run([script, tmp])
    XCTAssertEqual(r.status, 1, r.stderr)
    XCTAssertEqual(
      r.stdout.split(separator: "\n").map(String.init),
      ["\(tmp)/S.swift:\(5 + 60 + 61 + 2): S.init is 70 lines (limit 60)",
       "\(tmp)/S.swift:\(5 + 60): S.sixtyOne is 63 lines (limit 60)"])
    let relaxed = try Subprocess.run([script, "--max", "70", tmp])
    XCTAssertEqual(relaxed.status, 0, relaxed.stdout + relaxed.stderr)
    XCTAssertEqual(relaxed.stdout, "")
  }

  func testHelpAndUsageErrors() throws {
    let help = try Subprocess.run([script, "--help"])
    XCTAssertEqual(help.status, 0)
    XCTAssertTrue(help.stdout.contains("Usage: scripts/lint-functions"), help.stdout)
    for args in [["--max"], ["--max", "0"], ["--bogus"], ["/nonexistent/Sources"]] {
      let r = try Subprocess.run([script] + args)
      XCTAssertEqual(r.status, 2, "\(args): \(r.stdout)")
      XCTAssertEqual(r.stderrLines.count, 1, "\(args): \(r.stderr)")
    }
  }
}
