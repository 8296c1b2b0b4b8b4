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

  func testDataInMemoryMapsNothing() {
    let d = Dataset(name: "m", count: 2, rows: 1, cols: 2, images: [1, 2, 3, 4], labels: [0, 1])
    let splits = DataSplits(train: d, test: d)
    XCTAssertTrue(splits.mappedFiles.isEmpty)
    XCTAssertNoThrow(try splits.checkFilesUnchanged())
  }
}
