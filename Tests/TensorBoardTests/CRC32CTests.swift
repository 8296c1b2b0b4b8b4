import Formats
import XCTest

/// CRC-32C and TFRecord framing against published values and TensorBoard's own writer.
final class CRC32CTests: XCTestCase {
  func testStandardCheckValue() {
    // The check value of CRC-32C (Castagnoli) in every CRC catalogue.
    XCTAssertEqual(CRC32C.checksum(Array("123456789".utf8)), 0xE306_9283)
    XCTAssertEqual(CRC32C.checksum([UInt8]()), 0)
    // RFC 3720 (iSCSI) appendix B.4: 32 bytes of zeros, of 0xFF, and 0, 1, …, 31.
    XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0, count: 32)), 0x8A91_36AA)
    XCTAssertEqual(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)), 0x62A8_AB43)
    XCTAssertEqual(CRC32C.checksum((0..<32).map { UInt8($0) }), 0x46DD_794E)
  }

  func testContinuingEqualsOneShot() {
    let bytes = Array("The quick brown fox jumps over the lazy dog".utf8)
    for cut in [0, 1, 7, bytes.count] {
      let partial = CRC32C.checksum(bytes[..<cut])
      XCTAssertEqual(CRC32C.checksum(bytes[cut...], continuing: partial), CRC32C.checksum(bytes), "cut \(cut)")
    }
  }

  func testMask() {
    // TFRecord's mask of the CRC of nothing is the constant alone.
    XCTAssertEqual(CRC32C.masked([UInt8]()), 0xA282_EAD8)
    for crc: UInt32 in [0, 1, 0xE306_9283, 0xFFFF_FFFF, 0x8000_0000] {
      XCTAssertEqual(CRC32C.unmask(CRC32C.mask(crc)), crc)
      XCTAssertEqual(CRC32C.mask(crc), ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8)
    }
  }

  /// The bytes TensorBoard's own `RecordWriter` (tensorboard 2.21) writes for an Event with
  /// `wall_time: 1700000000.5, file_version: "brain.Event:2"`: length 24, masked CRC 0x224b7fa3,
  /// the 24 bytes, masked CRC 0x1031352b.
  func testFramingMatchesTensorBoardsRecordWriter() throws {
    let event = hex("0900002040fc54d9411a0d627261696e2e4576656e743a32")
    let expected = hex(
      "1800000000000000" + "a37f4b22" + "0900002040fc54d9411a0d627261696e2e4576656e743a32" + "2b353110")
    XCTAssertEqual(TFRecord.frame(event), expected)
    XCTAssertEqual(CRC32C.masked(hex("1800000000000000")), 0x224B_7FA3)
    XCTAssertEqual(CRC32C.masked(event), 0x1031_352B)
    XCTAssertEqual(try TFRecord.records(in: expected + TFRecord.frame([]), path: "x"), [event, []])
  }

  func testReaderRejectsCorruptionWithOffsetAndPath() {
    let good = TFRecord.frame(Array("abc".utf8))
    let two = good + good
    var badData = two
    badData[good.count + 12] ^= 1  // a data byte of the second record
    var badLength = two
    badLength[good.count] ^= 1  // the second record's length
    let cases: [([UInt8], Int, String)] = [
      (badData, good.count, "data CRC mismatch"), (badLength, good.count, "length CRC mismatch"),
      (Array(two.dropLast()), good.count, "truncated record"), (two + [1, 2, 3], two.count, "truncated header"),
    ]
    for (bytes, offset, reason) in cases {
      XCTAssertThrowsError(try TFRecord.records(in: bytes, path: "run/events.out.tfevents.1")) { error in
        let text = "\(error)"
        XCTAssertTrue(text.hasPrefix("run/events.out.tfevents.1: TFRecord at byte \(offset): "), text)
        XCTAssertTrue(text.contains(reason), text)
        XCTAssertFalse(text.contains("\n"))
      }
    }
  }

  private func hex(_ s: String) -> [UInt8] {
    var out = [UInt8]()
    var i = s.startIndex
    while i < s.endIndex {
      let j = s.index(i, offsetBy: 2)
      out.append(UInt8(s[i..<j], radix: 16)!)
      i = j
    }
    return out
  }
}
