import Foundation
import TestSupport
import XCTest

@testable import Formats

final class FileIOTests: XCTestCase {
  func testReadMissingFileNamesPathAndSystemReason() throws {
    let dir = try TempDir()
    let path = dir.path + "/missing.bin"
    XCTAssertThrowsError(try FileIO.readAll(path: path)) { error in
      guard let e = error as? FileIOError else { return XCTFail("\(error)") }
      XCTAssertEqual(e.path, path)
      XCTAssertEqual(e.reason, String(cString: strerror(ENOENT)))
      XCTAssertEqual(e.detail, "cannot open for reading: \(e.reason) (errno \(ENOENT))")
      XCTAssertEqual(e.description, "\(path): I/O error: \(e.detail)")
    }
  }

  func testWriteAllReportsHowMuchWentOutBeforeAFailure() throws {
    let dir = try TempDir()
    let path = dir.path + "/out.bin"
    let fd = open(path, O_WRONLY | O_CREAT, 0o644)
    defer { close(fd) }
    var written = 2
    try FileIO.writeAll([1, 2, 3, 4, 5], fd: fd, path: path, written: &written)
    XCTAssertEqual(written, 5)
    XCTAssertEqual(try FileIO.readAll(path: path), [3, 4, 5])
    let full = open("/dev/full", O_WRONLY)
    guard full >= 0 else { throw XCTSkip("no /dev/full") }
    defer { close(full) }
    written = 0
    XCTAssertThrowsError(try FileIO.writeAll([1, 2, 3], fd: full, path: "/dev/full", what: "appending", written: &written)) {
      XCTAssertEqual("\($0)", "/dev/full: I/O error: appending failed: \(String(cString: strerror(ENOSPC))) (errno \(ENOSPC))")
    }
    XCTAssertEqual(written, 0)
  }

  func testReadDirectoryIsAnError() throws {
    let dir = try TempDir()
    XCTAssertThrowsError(try FileIO.readAll(path: dir.path)) { error in
      XCTAssertEqual(
        error as? FileIOError,
        FileIOError(path: dir.path, detail: "is a directory, expected a file", reason: "is a directory, expected a file"))
    }
  }

  func testReadWholeFilesOfEverySize() throws {
    let dir = try TempDir()
    for n in [0, 1, 65_535, 65_536, 200_001] {
      let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 31) }
      let path = try dir.write("f\(n)", bytes)
      XCTAssertEqual(try FileIO.readAll(path: path), bytes, "\(n) bytes")
    }
    #if os(Linux)
    // stat reports size 0 for /proc files: the buffer must grow while reading.
    XCTAssertTrue(String(decoding: try FileIO.readAll(path: "/proc/self/status"), as: UTF8.self).contains("Pid:"))
    #endif
  }

  func testWriteAtomicallyRejectsDirectoryPaths() throws {
    let dir = try TempDir()
    for path in [dir.path + "/", dir.path + "/.", dir.path + "/.."] {
      XCTAssertThrowsError(try FileIO.writeAtomically([1], to: path)) { error in
        XCTAssertEqual((error as? FileIOError)?.detail, "expected a file path, not a directory", path)
      }
    }
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [])
  }

  func testNewlinesInPathsStayOnOneLine() {
    let e = FileIOError(path: "a\nb", detail: "x\ry", reason: "y")
    XCTAssertEqual(e.description, #"a\nb: I/O error: x\ry"#)
  }
}
