import XCTest

@testable import Formats

final class CRC32Tests: XCTestCase {
  func testCheckValueAndEmptyInput() {
    XCTAssertEqual(CRC32.checksum(Array("123456789".utf8)), 0xCBF4_3926)  // the CRC-32 check value
    XCTAssertEqual(CRC32.checksum([]), 0)
    XCTAssertEqual(CRC32.checksum([], continuing: 0x1234_5678), 0x1234_5678)
  }

  func testContinuingEqualsOneChecksumOverTheConcatenation() {
    var rng = SystemRandomNumberGenerator()
    let a = (0..<1000).map { _ in UInt8.random(in: 0...255, using: &rng) }
    let b = (0..<333).map { _ in UInt8.random(in: 0...255, using: &rng) }
    XCTAssertEqual(CRC32.checksum(b, continuing: CRC32.checksum(a)), CRC32.checksum(a + b))
    (a + b).withUnsafeBytes { XCTAssertEqual(CRC32.checksum($0), CRC32.checksum(a + b)) }
  }

  /// Buffers above 4 GiB are fed to zlib in chunks of at most UInt32.max bytes; small chunks
  /// exercise the same loop.
  func testChunkedEqualsWhole() {
    let bytes = (0..<10_000).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) }
    let whole = CRC32.checksum(bytes)
    bytes.withUnsafeBytes { raw in
      for chunk in [1, 2, 3, 7, 64, 4096, 9_999, 10_000, CRC32.maxChunk] {
        XCTAssertEqual(CRC32.checksum(raw, continuing: 0, chunk: chunk), whole, "chunk \(chunk)")
      }
      XCTAssertEqual(CRC32.checksum(raw, continuing: 7, chunk: 5), CRC32.checksum(bytes, continuing: 7))
    }
  }
}
