import Formats
import Foundation
import VAE

/// One split of a data set: `count` rows of `rowWidth` values (bytes read as value / 255, or
/// floats), in memory or mapped from a file (`DataValues`), with labels when the data set has
/// them. `shape` is the shape of one row ([H, W] or [H, W, C] for images, [D] for vectors).
/// A split may be a view of another's rows (`rowMap`, e.g. a seeded test fraction).
public struct Dataset: Sendable {
  /// Registry name of the data set ("mnist", …), or the file it was read from.
  public let name: String
  /// Number of examples.
  public let count: Int
  /// The shape of one example; its product is `rowWidth`.
  public let shape: [Int]
  public let values: DataValues
  /// `count` class labels, or none.
  public let labels: [UInt8]
  /// Row i of this split is row `rowMap[i]` of `values` (nil: row i).
  public let rowMap: [Int32]?

  /// Values per example.
  public var rowWidth: Int { shape.reduce(1, *) }
  /// Values per example (the name the image data sets use).
  public var pixelsPerImage: Int { rowWidth }
  /// Image height and width, when the rows are images ([H, W] or [H, W, C]); else 1 × width.
  public var rows: Int { shape.count >= 2 ? shape[0] : 1 }
  public var cols: Int { shape.count >= 2 ? shape[1] : rowWidth }
  /// Channels of an image row (3 for [H, W, 3]), else 1.
  public var channels: Int { shape.count == 3 ? shape[2] : 1 }

  /// A data set of bytes in memory. The sizes must agree (`images.count == count * rows * cols`,
  /// `labels.count == count`); this is a programming error, not an input check.
  public init(name: String, count: Int, rows: Int, cols: Int, images: [UInt8], labels: [UInt8]) {
    precondition(count >= 0 && rows > 0 && cols > 0, "Dataset: bad shape \(count)x\(rows)x\(cols)")
    precondition(images.count == count * rows * cols, "Dataset: \(images.count) pixels for \(count)x\(rows)x\(cols)")
    precondition(labels.count == count, "Dataset: \(labels.count) labels for \(count) images")
    self.init(name: name, count: count, shape: [rows, cols], values: DataValues(bytes: images), labels: labels)
  }

  /// A data set over `values` (at least `count` rows of `shape`, or the rows `rowMap` names).
  public init(name: String, count: Int, shape: [Int], values: DataValues, labels: [UInt8] = [], rowMap: [Int32]? = nil) {
    precondition(count >= 0 && !shape.isEmpty && shape.allSatisfy { $0 > 0 }, "Dataset: bad shape \(count) x \(shape)")
    precondition(rowMap.map { $0.count == count } ?? (count * shape.reduce(1, *) <= values.count), "Dataset: too few values")
    precondition(labels.isEmpty || labels.count == count, "Dataset: \(labels.count) labels for \(count) rows")
    (self.name, self.count, self.shape, self.values, self.labels, self.rowMap) = (name, count, shape, values, labels, rowMap)
  }

  /// Where example `i` starts in `values`.
  @inline(__always)
  public func offset(ofRow i: Int) -> Int { (rowMap.map { Int($0[i]) } ?? i) * rowWidth }

  /// Example `i` as model inputs into `dst` (`rowWidth` values): bytes / 255, floats as they are.
  @inline(__always)
  public func scaledRow(_ i: Int, into dst: UnsafeMutablePointer<Float>) {
    let n = rowWidth, at = offset(ofRow: i)
    if let b = values.uint8 {
      let src = b + at
      for j in 0..<n { dst[j] = Float(src[j]) * (1 / 255) }
    } else if let f = values.float32 {
      dst.update(from: f + at, count: n)
    }
  }

  /// The bytes of every example in order (a copy; byte data only).
  public var images: [UInt8] {
    guard let b = values.uint8 else { preconditionFailure("Dataset.images: \(name) holds floats") }
    var out = [UInt8]()
    out.reserveCapacity(count * rowWidth)
    for i in 0..<count { out.append(contentsOf: UnsafeBufferPointer(start: b + offset(ofRow: i), count: rowWidth)) }
    return out
  }

  /// The bytes of example `index` (0 ..< count; byte data only).
  public func image(_ index: Int) -> [UInt8] {
    precondition(index >= 0 && index < count, "Dataset.image: index \(index) out of 0..<\(count)")
    guard let b = values.uint8 else { preconditionFailure("Dataset.image: \(name) holds floats") }
    return Array(UnsafeBufferPointer(start: b + offset(ofRow: index), count: rowWidth))
  }

  /// The first `n` examples (all of them if `n >= count`), sharing the values.
  public func prefix(_ n: Int) -> Dataset {
    let k = min(max(n, 0), count)
    if k == count { return self }
    return Dataset(
      name: name, count: k, shape: shape, values: values, labels: Array(labels.prefix(k)),
      rowMap: rowMap.map { Array($0[..<k]) })
  }

  /// CRC-32 (zlib) over the examples' raw values in order, then the labels.
  public func dataChecksum(continuing crc: UInt32 = 0) -> UInt32 {
    dataChecksum(continuing: crc, visiting: { _ in })
  }

  /// `dataChecksum`, visiting the examples on the way: `visit(rows)` sees each run of examples
  /// right after their bytes were summed, while they are in cache (e.g. to check their values),
  /// so the data is read once. A throw stops the pass.
  public func dataChecksum(continuing crc: UInt32, visiting visit: (Range<Int>) throws -> Void) rethrows -> UInt32 {
    var c = crc
    let bytes = rowWidth * values.element.size
    if rowMap == nil {
      let rows = max(1, (1 << 20) / max(bytes, 1))  // about 1 MiB at a time
      for lo in stride(from: 0, to: count, by: rows) {
        let hi = min(lo + rows, count)
        c = CRC32.checksum(UnsafeRawBufferPointer(start: values.raw + lo * bytes, count: (hi - lo) * bytes), continuing: c)
        try visit(lo..<hi)
      }
    } else {
      for i in 0..<count {
        let start = values.raw + offset(ofRow: i) * values.element.size
        c = CRC32.checksum(UnsafeRawBufferPointer(start: start, count: bytes), continuing: c)
        try visit(i..<(i + 1))
      }
    }
    return CRC32.checksum(labels, continuing: c)
  }
}

/// A training split and a held-out test split with the same image shape.
public struct DataSplits: Sendable {
  public let train: Dataset
  public let test: Dataset
  /// `dataChecksum()` when it was already computed while the values were checked
  /// (`DataFiles.checkValues(_:unitInterval:)`), so the start-up reads the data once.
  public private(set) var knownChecksum: UInt32?

  public init(train: Dataset, test: Dataset, knownChecksum: UInt32? = nil) {
    self.train = train
    self.test = test
    self.knownChecksum = knownChecksum
  }

  /// The mapped files the values are borrowed from, each once (none for data in memory): what
  /// a process's fault handler compares an address with (`NPYFile.mappedBytes`).
  public var mappedFiles: [NPYFile] {
    var files: [NPYFile] = []
    for f in [train.values.mappedFile, test.values.mappedFile].compactMap({ $0 })
    where !files.contains(where: { $0 === f }) {
      files.append(f)
    }
    return files
  }

  /// Throws when a mapped file's size, modification time or identity changed since it was
  /// opened (`NPYFile.checkUnchanged`): a file rewritten in place changes the values read.
  /// Two system calls per file.
  /// - Throws: `NPYError.changed` naming the file and what changed.
  public func checkFilesUnchanged() throws {
    for f in mappedFiles { try f.checkUnchanged() }
  }

  /// CRC-32 (zlib) over train values, train labels, test values, test labels, in that order.
  /// Recorded in checkpoints to detect a resume on different data.
  public func dataChecksum() -> UInt32 {
    knownChecksum ?? test.dataChecksum(continuing: train.dataChecksum())
  }
}

/// Errors of the data set registry. Each `description` is one line of facts.
public enum DataError: Error, CustomStringConvertible, Equatable, Sendable {
  /// The name is not one of `DatasetRegistry.names`.
  case unknownDataset(String, known: [String])
  /// Some of the data set's files are absent (the CLI adds how to get them).
  case missingFiles(dataset: String, directory: String, missing: [String])
  /// `trainLimit` must be at least 1.
  case badTrainLimit(Int)
  /// The train and test images have different shapes.
  case shapeMismatch(dataset: String, trainRows: Int, trainCols: Int, testRows: Int, testCols: Int)
  /// A label byte (at `offset` in the decompressed labels file) is outside 0...`max`.
  case labelOutOfRange(file: String, offset: Int, value: UInt8, max: UInt8)

  public var description: String {
    switch self {
    case .unknownDataset(let name, let known):
      return "unknown dataset '\(name)': expected one of \(known.joined(separator: ", "))"
    case .missingFiles(let dataset, let directory, let missing):
      return "\(dataset): missing \(missing.joined(separator: ", ")) in \(directory)"
    case .badTrainLimit(let n):
      return "train limit \(n) is invalid: expected a positive number of training examples"
    case .shapeMismatch(let dataset, let tr, let tc, let sr, let sc):
      return "\(dataset): training images are \(tr)x\(tc) but test images are \(sr)x\(sc): expected the same shape"
    case .labelOutOfRange(let file, let offset, let value, let max):
      return "\(file): label \(value) at byte offset \(offset) is out of range: expected 0...\(max)"
    }
  }
}

/// The data sets vae-dist knows by name, and where their files live.
public enum DatasetRegistry {
  /// Names accepted by `load(name:dataDirectory:trainLimit:)`.
  public static let names = ["mnist", "fashion-mnist", "synthetic"]

  /// Environment variable naming the data directory.
  public static let environmentVariable = "VAE_DIST_DATA"
  /// Data directory used when neither the flag nor the environment names one.
  public static let defaultDataDirectory = "./data"
  /// Where Debian's `dataset-fashion-mnist` package installs Fashion-MNIST.
  public static let systemFashionMNISTDirectory = "/usr/share/datasets/fashion-mnist"

  /// File base names of the MNIST layout; each may also exist with a `.gz` suffix.
  public static let trainImagesFile = "train-images-idx3-ubyte"
  public static let trainLabelsFile = "train-labels-idx1-ubyte"
  public static let testImagesFile = "t10k-images-idx3-ubyte"
  public static let testLabelsFile = "t10k-labels-idx1-ubyte"

  /// Size of the synthetic data set when loaded by name (seed 0).
  public static let syntheticTrainCount = 10_000
  public static let syntheticTestCount = 2_000

  /// The data directory: `explicit` if the caller names one; else `$VAE_DIST_DATA` if set and
  /// non-empty; else `./data`.
  public static func resolveDataDirectory(
    explicit: String?, environment: [String: String] = ProcessInfo.processInfo.environment
  ) -> String {
    if let explicit, !explicit.isEmpty { return explicit }
    if let env = environment[environmentVariable], !env.isEmpty { return env }
    return defaultDataDirectory
  }

  /// Loads a data set by name. `mnist` reads `<dataDirectory>/mnist/`; `fashion-mnist` reads
  /// `<dataDirectory>/fashion-mnist/` and falls back to `/usr/share/datasets/fashion-mnist/`;
  /// each file may be raw or `.gz`. `synthetic` is generated with seed 0 and ignores the
  /// directory. `trainLimit` keeps the first N training examples; the test split is always whole.
  /// Throws `DataError` or `IDXError`.
  public static func load(name: String, dataDirectory: String, trainLimit: Int? = nil) throws -> DataSplits {
    try load(
      name: name, dataDirectory: dataDirectory, trainLimit: trainLimit,
      fashionFallback: systemFashionMNISTDirectory)
  }

  /// `load` with the Fashion-MNIST system directory injectable (for tests).
  static func load(
    name: String, dataDirectory: String, trainLimit: Int?, fashionFallback: String?
  ) throws -> DataSplits {
    if let trainLimit, trainLimit < 1 { throw DataError.badTrainLimit(trainLimit) }
    switch name {
    case "mnist":
      let dir = join(dataDirectory, "mnist")
      let files = try locateFiles(dataset: name, directories: [dir])
      return try loadIDX(name: name, files: files, trainLimit: trainLimit)
    case "fashion-mnist":
      var dirs = [join(dataDirectory, "fashion-mnist")]
      if let fashionFallback { dirs.append(fashionFallback) }
      let files = try locateFiles(dataset: name, directories: dirs)
      return try loadIDX(name: name, files: files, trainLimit: trainLimit)
    case "synthetic":
      return synthetic(seed: 0, trainCount: trainLimit ?? syntheticTrainCount, testCount: syntheticTestCount)
    default:
      throw DataError.unknownDataset(name, known: names)
    }
  }

  /// Paths of the four files, in the order train images, train labels, test images, test labels.
  struct Files {
    var trainImages, trainLabels, testImages, testLabels: String
  }

  /// The first directory holding all four files (each raw or `.gz`; raw preferred when both
  /// exist). When none does, reports what the first directory lacks.
  static func locateFiles(dataset: String, directories: [String]) throws -> Files {
    let bases = [trainImagesFile, trainLabelsFile, testImagesFile, testLabelsFile]
    var firstMissing: [String]? = nil
    for dir in directories {
      var found: [String] = []
      var missing: [String] = []
      for base in bases {
        let raw = join(dir, base)
        let gz = raw + ".gz"
        if isRegularFile(raw) {
          found.append(raw)
        } else if isRegularFile(gz) {
          found.append(gz)
        } else {
          missing.append(base + "[.gz]")
        }
      }
      if missing.isEmpty, found.count == 4 {
        return Files(trainImages: found[0], trainLabels: found[1], testImages: found[2], testLabels: found[3])
      }
      if firstMissing == nil { firstMissing = missing }
    }
    var where_ = directories.first ?? "."
    if directories.count > 1 { where_ += " (nor in " + directories.dropFirst().joined(separator: ", ") + ")" }
    throw DataError.missingFiles(dataset: dataset, directory: where_, missing: firstMissing ?? bases)
  }

  static func loadIDX(name: String, files: Files, trainLimit: Int?) throws -> DataSplits {
    let train = try loadSplit(name: name, imagesPath: files.trainImages, labelsPath: files.trainLabels)
    let test = try loadSplit(name: name, imagesPath: files.testImages, labelsPath: files.testLabels)
    guard train.rows == test.rows, train.cols == test.cols else {
      throw DataError.shapeMismatch(
        dataset: name, trainRows: train.rows, trainCols: train.cols, testRows: test.rows, testCols: test.cols)
    }
    return DataSplits(train: trainLimit.map { train.prefix($0) } ?? train, test: test)
  }

  /// Reads one images/labels pair and checks that they agree and labels are 0...9.
  static func loadSplit(name: String, imagesPath: String, labelsPath: String) throws -> Dataset {
    let images = try IDX.readImages(path: imagesPath)
    let labels = try IDX.readLabels(path: labelsPath)
    guard images.count == labels.count else {
      throw IDXError.countMismatch(
        imagesFile: imagesPath, images: images.count, labelsFile: labelsPath, labels: labels.count)
    }
    if let bad = labels.labels.firstIndex(where: { $0 > 9 }) {
      throw DataError.labelOutOfRange(file: labelsPath, offset: 8 + bad, value: labels.labels[bad], max: 9)
    }
    return Dataset(
      name: name, count: images.count, rows: images.rows, cols: images.cols,
      images: images.pixels, labels: labels.labels)
  }

  private static func join(_ dir: String, _ name: String) -> String {
    dir.hasSuffix("/") ? dir + name : dir + "/" + name
  }

  private static func isRegularFile(_ path: String) -> Bool {
    var isDir: ObjCBool = false
    return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && !isDir.boolValue
  }
}
