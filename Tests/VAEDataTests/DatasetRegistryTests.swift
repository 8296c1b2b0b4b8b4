import Foundation
import Formats
import TestSupport
import XCTest

@testable import VAE
@testable import VAEData

/// A data directory holding MNIST, if this machine has one.
private func sharedMNISTDataDirectory() -> String? { TestPaths.mnistDataDirectory }

final class DatasetRegistryTests: XCTestCase {
  // MARK: Registry

  func testImagesLabelsCountMismatch() throws {
    let dir = try TempDir()
    try dir.write("mnist/train-images-idx3-ubyte", imagesFile(count: 3, rows: 28, cols: 28))
    let labelsPath = try dir.write("mnist/train-labels-idx1-ubyte.gz", gzip(labelsFile([1, 2])))
    try dir.write("mnist/t10k-images-idx3-ubyte", imagesFile(count: 2, rows: 28, cols: 28))
    try dir.write("mnist/t10k-labels-idx1-ubyte", labelsFile([3, 4]))
    let imagesPath = dir.path + "/mnist/train-images-idx3-ubyte"
    XCTAssertThrowsError(try DatasetRegistry.load(name: "mnist", dataDirectory: dir.path)) { error in
      XCTAssertEqual(
        error as? IDXError, .countMismatch(imagesFile: imagesPath, images: 3, labelsFile: labelsPath, labels: 2))
      let text = "\(error)"
      XCTAssertTrue(text.contains("train-images-idx3-ubyte") && text.contains("train-labels-idx1-ubyte.gz"), text)
      XCTAssertFalse(text.contains("\n"), text)
    }
  }

  func testDataDirectoryResolutionOrder() {
    XCTAssertEqual(
      DatasetRegistry.resolveDataDirectory(explicit: "/flag", environment: ["VAE_DIST_DATA": "/env"]), "/flag")
    XCTAssertEqual(DatasetRegistry.resolveDataDirectory(explicit: nil, environment: ["VAE_DIST_DATA": "/env"]), "/env")
    XCTAssertEqual(DatasetRegistry.resolveDataDirectory(explicit: nil, environment: [:]), "./data")
    XCTAssertEqual(DatasetRegistry.resolveDataDirectory(explicit: nil, environment: ["VAE_DIST_DATA": ""]), "./data")
    XCTAssertEqual(DatasetRegistry.resolveDataDirectory(explicit: "", environment: ["VAE_DIST_DATA": "/env"]), "/env")
  }

  func testUnknownDatasetAndBadLimit() {
    XCTAssertThrowsError(try DatasetRegistry.load(name: "cifar", dataDirectory: "/nonexistent")) { error in
      XCTAssertEqual(error as? DataError, .unknownDataset("cifar", known: DatasetRegistry.names))
      XCTAssertTrue("\(error)".contains("mnist, fashion-mnist, synthetic"), "\(error)")
    }
    XCTAssertThrowsError(try DatasetRegistry.load(name: "synthetic", dataDirectory: ".", trainLimit: 0)) { error in
      XCTAssertEqual(error as? DataError, .badTrainLimit(0))
    }
  }

  func testMissingFilesNameDirectoryAndFix() throws {
    let dir = try TempDir()
    try dir.write("mnist/train-images-idx3-ubyte.gz", gzip(imagesFile(count: 1, rows: 28, cols: 28)))
    XCTAssertThrowsError(try DatasetRegistry.load(name: "mnist", dataDirectory: dir.path)) { error in
      guard case .missingFiles(let ds, let where_, let missing)? = error as? DataError else {
        return XCTFail("wrong error \(error)")
      }
      XCTAssertEqual(ds, "mnist")
      XCTAssertEqual(where_, dir.path + "/mnist")
      XCTAssertEqual(missing.count, 3)
      // The data layer states facts; the CLI adds how to fix it (CLITests checks the hint).
      let text = "\(error)"
      XCTAssertTrue(text.contains(dir.path + "/mnist") && text.contains("train-labels-idx1-ubyte"), text)
      XCTAssertFalse(text.contains("scripts/get-data"), text)
      XCTAssertFalse(text.contains("\n"))
    }
    XCTAssertThrowsError(
      try DatasetRegistry.load(name: "fashion-mnist", dataDirectory: dir.path, trainLimit: nil, fashionFallback: nil)
    ) { error in
      let text = "\(error)"
      XCTAssertTrue(text.contains(dir.path + "/fashion-mnist"), text)
      XCTAssertFalse(text.contains("apt-get"), text)
      XCTAssertFalse(text.contains("\n"))
    }
    // The fallback directory is used when the data directory lacks the files.
    try dir.write("sys/train-images-idx3-ubyte.gz", gzip(imagesFile(count: 4, rows: 6, cols: 6)))
    try dir.write("sys/train-labels-idx1-ubyte.gz", gzip(labelsFile([0, 1, 2, 3])))
    try dir.write("sys/t10k-images-idx3-ubyte.gz", gzip(imagesFile(count: 2, rows: 6, cols: 6)))
    try dir.write("sys/t10k-labels-idx1-ubyte.gz", gzip(labelsFile([9, 8])))
    let splits = try DatasetRegistry.load(
      name: "fashion-mnist", dataDirectory: dir.path, trainLimit: 3, fashionFallback: dir.path + "/sys")
    XCTAssertEqual(splits.train.name, "fashion-mnist")
    XCTAssertEqual(splits.train.count, 3)
    XCTAssertEqual(splits.train.labels, [0, 1, 2])
    XCTAssertEqual(splits.train.images, Array(imagesFile(count: 4, rows: 6, cols: 6)[16..<(16 + 3 * 36)]))
    XCTAssertEqual(splits.test.count, 2)
    XCTAssertEqual(splits.test.labels, [9, 8])
  }

  func testRawPreferredAndShapeAndLabelChecks() throws {
    let dir = try TempDir()
    try dir.write("mnist/train-images-idx3-ubyte", imagesFile(count: 2, rows: 8, cols: 8))
    try dir.write("mnist/train-images-idx3-ubyte.gz", [0xDE, 0xAD])  // ignored: raw preferred
    try dir.write("mnist/train-labels-idx1-ubyte", labelsFile([1, 2]))
    try dir.write("mnist/t10k-images-idx3-ubyte", imagesFile(count: 1, rows: 8, cols: 8))
    try dir.write("mnist/t10k-labels-idx1-ubyte", labelsFile([5]))
    let ok = try DatasetRegistry.load(name: "mnist", dataDirectory: dir.path + "/")
    XCTAssertEqual(ok.train.count, 2)
    XCTAssertEqual(ok.test.count, 1)
    // Different image shapes for train and test.
    try dir.write("mnist/t10k-images-idx3-ubyte", imagesFile(count: 1, rows: 8, cols: 9))
    XCTAssertThrowsError(try DatasetRegistry.load(name: "mnist", dataDirectory: dir.path)) { error in
      XCTAssertEqual(
        error as? DataError, .shapeMismatch(dataset: "mnist", trainRows: 8, trainCols: 8, testRows: 8, testCols: 9))
    }
    // A label outside 0...9.
    try dir.write("mnist/t10k-images-idx3-ubyte", imagesFile(count: 1, rows: 8, cols: 8))
    let lp = try dir.write("mnist/t10k-labels-idx1-ubyte", labelsFile([10]))
    XCTAssertThrowsError(try DatasetRegistry.load(name: "mnist", dataDirectory: dir.path)) { error in
      XCTAssertEqual(error as? DataError, .labelOutOfRange(file: lp, offset: 8, value: 10, max: 9))
      XCTAssertTrue("\(error)".contains("t10k-labels-idx1-ubyte"))
    }
  }

  func testRealMNIST() throws {
    guard let dataDir = sharedMNISTDataDirectory() else {
      throw XCTSkip("no MNIST in any of \(TestPaths.dataDirectoryCandidates) (run scripts/get-data)")
    }
    let splits = try DatasetRegistry.load(name: "mnist", dataDirectory: dataDir)
    XCTAssertEqual(splits.train.count, 60_000)
    XCTAssertEqual(splits.test.count, 10_000)
    for set in [splits.train, splits.test] {
      XCTAssertEqual(set.rows, 28)
      XCTAssertEqual(set.cols, 28)
      XCTAssertEqual(set.images.count, set.count * 784)
      XCTAssertEqual(set.labels.count, set.count)
      XCTAssertTrue(set.labels.allSatisfy { $0 <= 9 })
      XCTAssertEqual(Set(set.labels).count, 10)
    }
    // The first training labels of MNIST are 5 0 4 1 9 2 1 3 1 4.
    XCTAssertEqual(Array(splits.train.labels.prefix(10)), [5, 0, 4, 1, 9, 2, 1, 3, 1, 4])
    let limited = try DatasetRegistry.load(name: "mnist", dataDirectory: dataDir, trainLimit: 1000)
    XCTAssertEqual(limited.train.count, 1000)
    XCTAssertEqual(limited.test.count, 10_000)
    XCTAssertEqual(limited.train.images, Array(splits.train.images.prefix(784_000)))
  }

  func testSystemFashionMNISTIfInstalled() throws {
    let sys = DatasetRegistry.systemFashionMNISTDirectory
    guard FileManager.default.fileExists(atPath: sys + "/train-images-idx3-ubyte.gz") else {
      throw XCTSkip("\(sys) not installed (apt-get install dataset-fashion-mnist)")
    }
    let empty = try TempDir()
    let splits = try DatasetRegistry.load(name: "fashion-mnist", dataDirectory: empty.path, trainLimit: 500)
    XCTAssertEqual(splits.train.count, 500)
    XCTAssertEqual(splits.test.count, 10_000)
    XCTAssertEqual(splits.test.rows, 28)
    XCTAssertEqual(splits.test.cols, 28)
    XCTAssertTrue(splits.test.labels.allSatisfy { $0 <= 9 })
  }

  // MARK: Synthetic data and checksums

  func testSyntheticDeterminism() {
    let a = DatasetRegistry.synthetic(seed: 7, trainCount: 300, testCount: 50)
    let b = DatasetRegistry.synthetic(seed: 7, trainCount: 300, testCount: 50)
    let c = DatasetRegistry.synthetic(seed: 8, trainCount: 300, testCount: 50)
    XCTAssertEqual(a.train.images, b.train.images)
    XCTAssertEqual(a.train.labels, b.train.labels)
    XCTAssertEqual(a.test.images, b.test.images)
    XCTAssertEqual(a.dataChecksum(), b.dataChecksum())
    XCTAssertNotEqual(a.train.images, c.train.images)
    XCTAssertNotEqual(a.dataChecksum(), c.dataChecksum())
    XCTAssertNotEqual(a.train.images.prefix(50 * 784), a.test.images[...])  // splits differ
    // Example i depends only on (seed, split, i): a smaller set is a prefix of a larger one.
    let small = DatasetRegistry.synthetic(seed: 7, trainCount: 100, testCount: 50)
    XCTAssertEqual(small.train.images, Array(a.train.images.prefix(100 * 784)))
    XCTAssertEqual(small.test.images, a.test.images)
    // Sanity: all classes, labels 0...9, shapes drawn (no blank image), 28x28.
    XCTAssertEqual(a.train.rows, 28)
    XCTAssertEqual(a.train.cols, 28)
    XCTAssertEqual(a.train.name, "synthetic")
    XCTAssertEqual(Set(a.train.labels), Set(0...9))
    for i in 0..<a.train.count {
      let ink = a.train.image(i).filter { $0 > 0 }.count
      XCTAssertGreaterThan(ink, 5, "image \(i) (class \(a.train.labels[i])) is nearly blank")
      XCTAssertLessThan(ink, 784, "image \(i) is all ink")
    }
    // Other sizes work and stay deterministic.
    let odd = DatasetRegistry.synthetic(seed: 1, trainCount: 20, testCount: 3, rows: 8, cols: 13)
    XCTAssertEqual(odd.train.images.count, 20 * 8 * 13)
    XCTAssertEqual(odd.train.images, DatasetRegistry.synthetic(seed: 1, trainCount: 20, testCount: 3, rows: 8, cols: 13).train.images)
  }

  func testSyntheticByName() throws {
    let s = try DatasetRegistry.load(name: "synthetic", dataDirectory: "/nonexistent", trainLimit: 64)
    XCTAssertEqual(s.train.count, 64)
    XCTAssertEqual(s.test.count, DatasetRegistry.syntheticTestCount)
    XCTAssertEqual(
      s.train.images, DatasetRegistry.synthetic(seed: 0, trainCount: 64, testCount: 1).train.images)
  }

  func testSyntheticClassesAreDistinguishable() {
    // Mean image per class: the classes must differ from each other (something to learn).
    let s = DatasetRegistry.synthetic(seed: 3, trainCount: 2000, testCount: 1)
    var means = [[Double]](repeating: [Double](repeating: 0, count: 784), count: 10)
    var counts = [Int](repeating: 0, count: 10)
    for i in 0..<s.train.count {
      let c = Int(s.train.labels[i])
      counts[c] += 1
      for (p, v) in s.train.image(i).enumerated() { means[c][p] += Double(v) }
    }
    for c in 0..<10 { means[c] = means[c].map { $0 / Double(max(counts[c], 1)) } }
    for a in 0..<10 {
      for b in (a + 1)..<10 {
        let dist = zip(means[a], means[b]).map { ($0 - $1) * ($0 - $1) }.reduce(0, +).squareRoot()
        XCTAssertGreaterThan(dist, 50, "classes \(a) and \(b) look alike")
      }
    }
  }

  func testDataChecksum() {
    let base = DatasetRegistry.synthetic(seed: 5, trainCount: 10, testCount: 4, rows: 8, cols: 8)
    let reference = base.dataChecksum()
    // Same as one CRC over the concatenation, in the documented order.
    XCTAssertEqual(
      reference, CRC32.checksum(base.train.images + base.train.labels + base.test.images + base.test.labels))
    func changed(_ f: (inout [UInt8], inout [UInt8], inout [UInt8], inout [UInt8]) -> Void) -> UInt32 {
      var (ti, tl, si, sl) = (base.train.images, base.train.labels, base.test.images, base.test.labels)
      f(&ti, &tl, &si, &sl)
      return DataSplits(
        train: Dataset(name: "synthetic", count: 10, rows: 8, cols: 8, images: ti, labels: tl),
        test: Dataset(name: "synthetic", count: 4, rows: 8, cols: 8, images: si, labels: sl)
      ).dataChecksum()
    }
    XCTAssertEqual(changed { _, _, _, _ in }, reference)
    XCTAssertNotEqual(changed { ti, _, _, _ in ti[17] ^= 1 }, reference)
    XCTAssertNotEqual(changed { _, tl, _, _ in tl[3] = (tl[3] + 1) % 10 }, reference)
    XCTAssertNotEqual(changed { _, _, si, _ in si[si.count - 1] &+= 1 }, reference)
    XCTAssertNotEqual(changed { _, _, _, sl in sl[0] = (sl[0] + 1) % 10 }, reference)
    XCTAssertNotEqual(base.train.dataChecksum(), base.test.dataChecksum())
  }
}
