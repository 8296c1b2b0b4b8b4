import Foundation
import XCTest

/// docs/ARCHITECTURE.md §2: the libraries print nothing, install nothing process-wide and name no
/// CLI flag (the executable renders their events and adds hints). Checked on the sources, so a
/// new `print` or a message naming `--resume` fails here, not in review.
final class LibraryRulesTests: XCTestCase {
  static let libraries = ["VAE", "VAEData", "VAEDist", "Formats"]

  /// Every Swift line of the libraries that is not a comment, with its file and number.
  func codeLines() throws -> [(file: String, line: Int, text: String)] {
    var out: [(String, Int, String)] = []
    for lib in Self.libraries {
      let dir = TT.packageRoot + "/Sources/" + lib
      let files = try XCTUnwrap(FileManager.default.enumerator(atPath: dir)).compactMap { $0 as? String }
      for f in files where f.hasSuffix(".swift") {
        let text = try String(contentsOfFile: dir + "/" + f, encoding: .utf8)
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
          let t = line.trimmingCharacters(in: .whitespaces)
          if !t.hasPrefix("//") { out.append(("\(lib)/\(f)", i + 1, t)) }
        }
      }
    }
    XCTAssertGreaterThan(out.count, 1000, "the sources were not found")
    return out
  }

  func testLibrariesPrintNothing() throws {
    let writers = ["print(", "FileHandle.standardError", "FileHandle.standardOutput", "Console.", "vae_write_std", "fputs("]
    let found = try codeLines().filter { l in writers.contains { l.text.contains($0) } }
    XCTAssertEqual(found.map { "\($0.file):\($0.line): \($0.text)" }, [])
  }

  func testLibrariesInstallNothingProcessWide() throws {
    let calls = ["enableFlushToZero()", "vae_install_stop_handlers", "vae_watchdog_", "signal(", "sigaction("]
    let found = try codeLines().filter { l in calls.contains { l.text.contains($0) } && !l.text.contains("func ") }
    XCTAssertEqual(found.map { "\($0.file):\($0.line): \($0.text)" }, [])
  }

  func testLibrariesNameNoCLIFlag() throws {
    let flag = try NSRegularExpression(pattern: "--[a-z][a-z-]+")
    let found = try codeLines().filter { l in
      flag.firstMatch(in: l.text, range: NSRange(l.text.startIndex..., in: l.text)) != nil
    }
    XCTAssertEqual(found.map { "\($0.file):\($0.line): \($0.text)" }, [])
  }
}
