import Foundation
import Formats
import TestSupport
import XCTest

@testable import VAEData

/// `DataSplits.mappedFiles` and `checkFilesUnchanged`: what the executable's fault handler and
/// the run's checks before a checkpoint see.
final class MappedFilesTests: XCTestCase {
  func testSplitOfOneFileMapsItOnceAndNoticesAnInPlaceRewrite() throws {
    let dir = try TempDir()
    let path = dir.path + "/rows.npy"
    try NPY.write(path: path, shape: [10, 4], values: [Float](repeating: 0.25, count: 40))
    let splits = try DataFiles.load(train: path, test: nil, testFraction: 0.2, seed: 1, trainLimit: nil)
    let files = splits.mappedFiles
    XCTAssertEqual(files.count, 1, "train and test are views of one mapping")
    XCTAssertEqual(files.first?.path, path)
    XCTAssertEqual(files.first?.mappedBytes.count, try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
    XCTAssertNoThrow(try splits.checkFilesUnchanged())
    let fd = open(path, O_WRONLY), at = off_t(try XCTUnwrap(files.first).header.dataOffset)
    XCTAssertEqual([Float(0.75)].withUnsafeBytes { pwrite(fd, $0.baseAddress, 4, at) }, 4)
    close(fd)
    XCTAssertEqual(splits.train.values.value(0), 0.75, "the values are the file's pages, not a copy")
    XCTAssertThrowsError(try splits.checkFilesUnchanged()) { error in
      XCTAssertEqual(error as? NPYError, .changed(file: path, detail: "it was modified"))
    }
  }

  /// The value check and the data checksum are one pass: the checksum it returns is zlib's
  /// CRC-32 of the rows' bytes in split order (train, then test; no labels), the same as the
  /// separate pass computes, for a contiguous file (several 1 MiB runs), a seeded split (row by
  /// row) and bytes; a bad value past the first run is still named by its row in the file.
  func testValueCheckComputesTheChecksumInTheSamePass() throws {
    let dir = try TempDir()
    let rows = 700, width = 1000  // 4 KB a row: 700 rows are three 1 MiB runs
    var values = (0..<(rows * width)).map { Float($0 % 997) / 997 }
    let floats = dir.path + "/floats.npy", test = dir.path + "/test.npy", bytes = dir.path + "/bytes.npy"
    try NPY.write(path: floats, shape: [rows, width], values: values)
    try NPY.write(path: test, shape: [3, width], values: Array(values[..<(3 * width)]))
    try NPY.write(path: bytes, shape: [50, 30], values: (0..<1500).map { UInt8($0 % 256) })
    for (train, test, fraction) in [(floats, test, nil), (floats, nil, 0.1), (bytes, nil, 0.2)] as [(String, String?, Float?)] {
      let splits = try DataFiles.load(train: train, test: test, testFraction: fraction, seed: 4, trainLimit: nil)
      let checked = try DataFiles.checkValues(splits, unitInterval: true)
      var expected: [UInt8] = []
      for d in [splits.train, splits.test] {
        let size = d.values.element.size, n = d.rowWidth * size
        for i in 0..<d.count {
          expected += Array(UnsafeRawBufferPointer(start: d.values.raw + d.offset(ofRow: i) * size, count: n))
        }
      }
      XCTAssertEqual(checked.knownChecksum, CRC32.checksum(expected), "\(train) \(fraction ?? 0)")
      XCTAssertEqual(checked.knownChecksum, splits.dataChecksum(), "\(train) \(fraction ?? 0)")
    }
    values[650 * width + 7] = 1.5
    try NPY.write(path: floats, shape: [rows, width], values: values)
    let splits = try DataFiles.load(train: floats, test: test, testFraction: nil, seed: 4, trainLimit: nil)
    XCTAssertThrowsError(try DataFiles.checkValues(splits, unitInterval: true)) { error in
      XCTAssertTrue("\(error)".contains("row 650, column 7 is 1.5, outside [0, 1]"), "\(error)")
    }
  }

  func testDataInMemoryMapsNothing() {
    let d = Dataset(name: "m", count: 2, rows: 1, cols: 2, images: [1, 2, 3, 4], labels: [0, 1])
    let splits = DataSplits(train: d, test: d)
    XCTAssertTrue(splits.mappedFiles.isEmpty)
    XCTAssertNoThrow(try splits.checkFilesUnchanged())
  }
}
