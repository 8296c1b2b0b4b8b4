import Formats
import Foundation
import VAE

/// Data a user names by file instead of by registry name: a NumPy `.npy` array `[N, …]` of
/// uint8 (read as value / 255) or float32, memory-mapped read-only so every rank on a node
/// shares one copy in the page cache; or an IDX image file (raw or `.gz`), read into memory.
/// The batcher reads both through the same `Dataset` as the named data sets.
public enum DataFiles {
  /// Why a data file cannot be used (one line naming the file).
  public struct Problem: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
  }

  /// The shape of one example of `path` (its trailing dimensions), reading as little as the
  /// format allows (a `.npy` header; an IDX file whole when gzipped).
  public static func rowShape(path: String) throws -> [Int] {
    if isNPY(path) {
      let shape = try NPYFile(path: path).header.shape
      return shape.count == 1 ? [1] : Array(shape.dropFirst())
    }
    try checkRegularFile(path)
    let shape = try IDX.readImagesShape(path: path)
    return [shape.rows, shape.cols]
  }

  /// IDX files are read whole: refuse what is not a regular file (a FIFO would never end).
  static func checkRegularFile(_ path: String) throws {
    var st = stat()
    guard stat(path, &st) == 0 else {
      throw Problem("\(path): cannot read the data file: \(String(cString: strerror(errno)))")
    }
    guard (st.st_mode & S_IFMT) == S_IFREG else {
      throw Problem("\(path): not a regular file: expected a .npy or IDX data file")
    }
  }

  /// One file as a data set named by its path.
  public static func load(path: String) throws -> Dataset {
    if isNPY(path) { return dataset(of: try NPYFile(path: path)) }
    try checkRegularFile(path)
    let images = try IDX.readImages(path: path)
    return Dataset(
      name: path, count: images.count, shape: [images.rows, images.cols], values: DataValues(bytes: images.pixels))
  }

  /// A mapped `.npy` file as a data set named by its path, its values read in place.
  public static func dataset(of file: NPYFile) -> Dataset {
    let h = file.header
    let element: DataValues.Element = h.dtype == .uint8 ? .uint8 : .float32
    let values = DataValues(borrowing: file.data.baseAddress!, element: element, count: h.elementCount, owner: file)
    let shape = h.shape.count == 1 ? [1] : Array(h.shape.dropFirst())
    return Dataset(name: file.path, count: h.rows, shape: shape, values: values)
  }

  /// The training file and the held-out file, or (`testFraction`) a seeded split of the
  /// training file: a permutation by `seed` puts round(fraction · N) examples in the test split.
  /// `trainLimit` keeps the first N training examples.
  public static func load(
    train: String, test: String?, testFraction: Float?, seed: UInt64, trainLimit: Int?
  ) throws -> DataSplits {
    var trainSet = try load(path: train)
    let testSet: Dataset
    if let test {
      testSet = try load(path: test)
      guard testSet.shape == trainSet.shape else {
        throw Problem(
          "\(test): examples of shape \(testSet.shape), but \(train) has \(trainSet.shape): the held-out file must have the training file's width")
      }
    } else {
      let fraction = testFraction ?? 0
      // The fraction as written (0.1, not the Float nearest it), rounded to the nearest count.
      let k = Int(((Double("\(fraction)") ?? Double(fraction)) * Double(trainSet.count)).rounded())
      guard fraction > 0, k >= 1, k < trainSet.count else {
        throw Problem(
          "\(train): data.test_fraction \(fraction) of \(trainSet.count) examples leaves no test or no training example: give data.test or a fraction in (0, 1)")
      }
      (trainSet, testSet) = split(trainSet, testCount: k, seed: seed)
    }
    if let trainLimit { trainSet = trainSet.prefix(trainLimit) }
    return DataSplits(train: trainSet, test: testSet)
  }

  /// A seeded split: the first `testCount` rows of a permutation are the test set, the rest
  /// (in file order) the training set; both are views of the same values.
  static func split(_ d: Dataset, testCount: Int, seed: UInt64) -> (train: Dataset, test: Dataset) {
    var order = [Int32](repeating: 0, count: d.count)
    order.withUnsafeMutableBufferPointer { p in
      for i in 0..<p.count { p[i] = Int32(i) }
      var s = CounterRNG(seed: seed).stream(.testSplit)
      var i = p.count - 1
      while i > 0 {
        p.swapAt(i, s.nextInt(below: i + 1))
        i -= 1
      }
    }
    let test = Array(order[..<testCount]).sorted()
    var isTest = [Bool](repeating: false, count: d.count)
    for i in test { isTest[Int(i)] = true }
    let train = (0..<Int32(d.count)).filter { !isTest[Int($0)] }
    return (
      Dataset(name: d.name, count: train.count, shape: d.shape, values: d.values, rowMap: train),
      Dataset(name: d.name, count: test.count, shape: d.shape, values: d.values, rowMap: test)
    )
  }

  /// Float data must be finite, and in [0, 1] for a Bernoulli likelihood (bytes always are):
  /// the first bad value is named by its row and column in the file. Both splits are checked in
  /// the same pass that computes their `DataSplits.dataChecksum()`, which the returned splits
  /// then carry: the start-up reads the data once for both.
  public static func checkValues(_ s: DataSplits, unitInterval: Bool) throws -> DataSplits {
    func check(_ d: Dataset, from crc: UInt32) throws -> UInt32 {
      try d.dataChecksum(continuing: crc) { rows in
        guard d.values.element == .float32 else { return }
        for i in rows { try checkRow(d, i, unitInterval: unitInterval) }
      }
    }
    let crc = try check(s.test, from: try check(s.train, from: 0))
    return DataSplits(train: s.train, test: s.test, knownChecksum: crc)
  }

  /// `checkValues` for example `i` alone.
  public static func checkRow(_ d: Dataset, _ i: Int, unitInterval: Bool) throws {
    guard let f = d.values.float32 else { return }
    let n = d.rowWidth
    let at = d.offset(ofRow: i), row = f + at, fileRow = at / max(n, 1)
    for j in 0..<n {
      let v = row[j]
      if !v.isFinite {
        throw Problem("\(d.name): row \(fileRow), column \(j) is \(v): expected finite values")
      }
      if unitInterval && !(v >= 0 && v <= 1) {
        throw Problem(
          "\(d.name): row \(fileRow), column \(j) is \(v), outside [0, 1]: model.likelihood bernoulli needs values in [0, 1] (scale the data, or use likelihood: gaussian)")
      }
    }
  }

  static func isNPY(_ path: String) -> Bool { path.lowercased().hasSuffix(".npy") }
}
