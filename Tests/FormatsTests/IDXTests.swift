import Foundation
import TestSupport
import XCTest

@testable import Formats

final class IDXTests: XCTestCase {

  /// Runs `body`, expects an `IDXError` matching `match`, and checks its description is one
  /// line that names `file`.
  private func assertIDXError<T>(
    _ body: @autoclosure () throws -> T, file path: String, _ what: String,
    line: UInt = #line, match: (IDXError) -> Bool
  ) {
    do {
      _ = try body()
      XCTFail("\(what): expected an IDXError, got success", line: line)
    } catch let error as IDXError {
      XCTAssertTrue(match(error), "\(what): wrong case \(error)", line: line)
      checkDescription(error.description, names: path, what, line: line)
    } catch {
      XCTFail("\(what): expected an IDXError, got \(type(of: error)): \(error)", line: line)
    }
  }

  private func checkDescription(_ text: String, names path: String, _ what: String, line: UInt) {
    let base = (path as NSString).lastPathComponent
    XCTAssertTrue(text.contains(base), "\(what): description does not name \(base): \(text)", line: line)
    XCTAssertFalse(text.contains("\n") || text.contains("\r"), "\(what): multi-line description: \(text)", line: line)
  }

  // MARK: Valid files

  func testValidRawRoundTrip() throws {
    let dir = try TempDir()
    let imgPath = try dir.write("imgs-idx3-ubyte", imagesFile(count: 3, rows: 4, cols: 5))
    let lblPath = try dir.write("lbls-idx1-ubyte", labelsFile([7, 0, 9]))
    let images = try IDX.readImages(path: imgPath)
    XCTAssertEqual(images.count, 3)
    XCTAssertEqual(images.rows, 4)
    XCTAssertEqual(images.cols, 5)
    XCTAssertEqual(images.pixels.count, 60)
    XCTAssertEqual(images.pixels[20], UInt8(31))  // image 1, pixel 0
    XCTAssertEqual(Array(images.pixels), Array(imagesFile(count: 3, rows: 4, cols: 5)[16...]))
    let labels = try IDX.readLabels(path: lblPath)
    XCTAssertEqual(labels.count, 3)
    XCTAssertEqual(labels.labels, [7, 0, 9])
  }

  func testValidGzipRoundTrip() throws {
    let dir = try TempDir()
    let raw = imagesFile(count: 50, rows: 28, cols: 28)
    // Gzip is detected by content, not name: no .gz suffix here.
    let path = try dir.write("images-no-suffix", gzip(raw))
    let images = try IDX.readImages(path: path)
    XCTAssertEqual(images.count, 50)
    XCTAssertEqual(images.pixels, Array(raw[16...]))
    let lpath = try dir.write("labels.gz", gzip(labelsFile([1, 2, 3, 4])))
    XCTAssertEqual(try IDX.readLabels(path: lpath).labels, [1, 2, 3, 4])
    // Stored (level 0) and best compression both decode.
    XCTAssertEqual(try IDX.parseImages(gzip(raw, level: 0), file: "x").pixels, Array(raw[16...]))
    XCTAssertEqual(try IDX.parseImages(gzip(raw, level: 9), file: "x").pixels, Array(raw[16...]))
  }

  func testMultiMemberGzip() throws {
    let raw = imagesFile(count: 20, rows: 10, cols: 10)
    let cut = 777
    let concatenated = gzip(Array(raw[..<cut])) + gzip(Array(raw[cut...]))
    XCTAssertEqual(try Gzip.decompress(concatenated), raw)
    XCTAssertEqual(try IDX.parseImages(concatenated, file: "multi.gz").pixels, Array(raw[16...]))
    // An empty member in the middle is fine too.
    XCTAssertEqual(try Gzip.decompress(gzip([1, 2]) + gzip([]) + gzip([3])), [1, 2, 3])
  }

  func testGzipOutputLargerThanInitialGuess() throws {
    // 3 MB of zeros compresses ~1000:1, and a two-member file defeats the ISIZE hint.
    let zeros = [UInt8](repeating: 0, count: 3 << 20)
    let data = gzip([9]) + gzip(zeros)
    let out = try Gzip.decompress(data)
    XCTAssertEqual(out.count, zeros.count + 1)
    XCTAssertEqual(out.first, 9)
    XCTAssertEqual(out.dropFirst().allSatisfy { $0 == 0 }, true)
    XCTAssertThrowsError(try Gzip.decompress(gzip(zeros), maxOutput: 1 << 20)) { error in
      XCTAssertTrue("\(error)".contains("limit"), "\(error)")
    }
  }

  /// The limit is inclusive: exactly `maxOutput` bytes decompress, one more do not, also with an
  /// empty gzip member after the data (a full buffer is not over the limit until zlib has read
  /// that member; Fuzz/corpus/fuzz-idx/regress-gzip-empty-last-member is such an input).
  func testGzipOutputOfExactlyTheLimit() throws {
    let data = [UInt8](repeating: 7, count: 64)
    for input in [gzip(data), gzip(data) + gzip([]), gzip(Array(data[..<10])) + gzip(Array(data[10...])) + gzip([])] {
      XCTAssertEqual(try Gzip.decompress(input, maxOutput: 64), data)
      XCTAssertThrowsError(try Gzip.decompress(input, maxOutput: 63)) { error in
        XCTAssertTrue("\(error)".contains("exceeds the limit of 63 bytes"), "\(error)")
      }
    }
  }

  /// The shape from the header alone, raw or gzipped (a gzipped body that is corrupt after the
  /// header is not read, so it is not an error here; `readImages` finds it), and the header's
  /// errors name the file in one line.
  func testImagesShapeFromTheHeaderAlone() throws {
    let dir = try TempDir()
    let raw = imagesFile(count: 50, rows: 28, cols: 20)
    for (name, bytes) in [("raw", raw), ("gz", gzip(raw)), ("stored", gzip(raw, level: 0))] {
      let shape = try IDX.readImagesShape(path: try dir.write("shape-\(name)", bytes))
      XCTAssertEqual([shape.count, shape.rows, shape.cols], [50, 28, 20], name)
    }
    let gz = gzip(raw, level: 0)
    var cut = Array(gz.prefix(gz.count / 2))
    cut[cut.count - 1] ^= 0xFF
    let broken = try dir.write("shape-cut.gz", cut)
    XCTAssertEqual(try IDX.readImagesShape(path: broken).rows, 28, "the header is read, not the body")
    XCTAssertThrowsError(try IDX.readImages(path: broken))
    let labels = try dir.write("shape-labels", labelsFile([1, 2]))
    assertIDXError(try IDX.readImagesShape(path: labels), file: labels, "labels given as images") {
      if case .badMagic = $0 { return true } else { return false }
    }
    let short = try dir.write("shape-short.gz", gzip(Array(raw.prefix(10))))
    assertIDXError(try IDX.readImagesShape(path: short), file: short, "header cut short") {
      if case .truncated = $0 { return true } else { return false }
    }
    let notGzip = try dir.write("shape-bad.gz", [0x1F, 0x8B, 0x08, 0, 0, 0, 0, 0, 0, 3, 0xFF, 0xFF, 0xFF, 0xFF])
    assertIDXError(try IDX.readImagesShape(path: notGzip), file: notGzip, "corrupt gzip header") {
      if case .corruptGzip = $0 { return true } else { return false }
    }
  }

  func testSystemGzipInterop() throws {
    let gzipTool = "/bin/gzip"
    guard FileManager.default.isExecutableFile(atPath: gzipTool) else {
      throw XCTSkip("\(gzipTool) not available")
    }
    let dir = try TempDir()
    let raw = imagesFile(count: 7, rows: 9, cols: 11)
    let path = try dir.write("sys-images-idx3-ubyte", raw)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: gzipTool)
    process.arguments = ["-9", "-n", path]
    try process.run()
    process.waitUntilExit()
    XCTAssertEqual(process.terminationStatus, 0)
    let images = try IDX.readImages(path: path + ".gz")
    XCTAssertEqual(images.pixels, Array(raw[16...]))
  }

  // MARK: Malformed corpus (each file is written to disk and read back)

  func testWrongMagic() throws {
    let dir = try TempDir()
    var bytes = imagesFile(count: 2, rows: 3, cols: 3)
    bytes[3] = 0x04
    let path = try dir.write("wrong-magic-idx3-ubyte", bytes)
    assertIDXError(try IDX.readImages(path: path), file: path, "4-D magic") {
      $0 == .badMagic(file: path, found: 0x0804, expected: 0x0803)
    }
    bytes[3] = 0x03
    bytes[2] = 0x0D  // float data
    let fpath = try dir.write("float-idx3", bytes)
    assertIDXError(try IDX.readImages(path: fpath), file: fpath, "float data type") {
      $0 == .badMagic(file: fpath, found: 0x0D03, expected: 0x0803)
    }
    let text = try dir.write("not-idx.txt", Array("hello, world\n".utf8))
    assertIDXError(try IDX.readImages(path: text), file: text, "text file") {
      if case .badMagic(_, 0x6865_6C6C, 0x0803) = $0 { return true }
      return false
    }
  }

  func testLabelMagicGivenToImageReaderAndViceVersa() throws {
    let dir = try TempDir()
    let lpath = try dir.write("train-labels-idx1-ubyte", labelsFile([1, 2, 3]))
    assertIDXError(try IDX.readImages(path: lpath), file: lpath, "labels as images") {
      $0 == .badMagic(file: lpath, found: 0x0801, expected: 0x0803)
    }
    do {
      _ = try IDX.readImages(path: lpath)
    } catch {
      XCTAssertTrue("\(error)".contains("labels file"), "\(error)")
    }
    let ipath = try dir.write("train-images-idx3-ubyte", imagesFile(count: 1, rows: 2, cols: 2))
    assertIDXError(try IDX.readLabels(path: ipath), file: ipath, "images as labels") {
      $0 == .badMagic(file: ipath, found: 0x0803, expected: 0x0801)
    }
  }

  func testTruncatedHeader() throws {
    let dir = try TempDir()
    let full = imagesFile(count: 2, rows: 3, cols: 3)
    let p10 = try dir.write("hdr10-idx3-ubyte", Array(full[..<10]))
    assertIDXError(try IDX.readImages(path: p10), file: p10, "10-byte header") {
      $0 == .truncated(file: p10, offset: 0, expected: 16, actual: 10)
    }
    let p3 = try dir.write("hdr3-idx3-ubyte", Array(full[..<3]))
    assertIDXError(try IDX.readImages(path: p3), file: p3, "3-byte file") {
      $0 == .truncated(file: p3, offset: 0, expected: 4, actual: 3)
    }
    let l6 = try dir.write("hdr6-idx1-ubyte", Array(labelsFile([1, 2])[..<6]))
    assertIDXError(try IDX.readLabels(path: l6), file: l6, "6-byte labels header") {
      $0 == .truncated(file: l6, offset: 0, expected: 8, actual: 6)
    }
  }

  func testTruncatedData() throws {
    let dir = try TempDir()
    let full = imagesFile(count: 2, rows: 4, cols: 4)
    let path = try dir.write("short-idx3-ubyte", Array(full[..<(16 + 20)]))
    assertIDXError(try IDX.readImages(path: path), file: path, "short pixel data") {
      $0 == .truncated(file: path, offset: 16, expected: 32, actual: 20)
    }
    let lpath = try dir.write("short-idx1-ubyte", idxHeader(magic: 0x0801, dims: [5]) + [1, 2])
    assertIDXError(try IDX.readLabels(path: lpath), file: lpath, "short labels") {
      $0 == .truncated(file: lpath, offset: 8, expected: 5, actual: 2)
    }
    // Header only, no data at all.
    let hpath = try dir.write("header-only-idx3-ubyte", Array(full[..<16]))
    assertIDXError(try IDX.readImages(path: hpath), file: hpath, "header only") {
      $0 == .truncated(file: hpath, offset: 16, expected: 32, actual: 0)
    }
  }

  func testTrailingBytes() throws {
    let dir = try TempDir()
    let path = try dir.write("long-idx3-ubyte", imagesFile(count: 2, rows: 4, cols: 4) + [0xAA])
    assertIDXError(try IDX.readImages(path: path), file: path, "one extra byte") {
      $0 == .trailingBytes(file: path, offset: 48, extra: 1)
    }
    let lpath = try dir.write("long-idx1-ubyte", labelsFile([1, 2, 3]) + [0, 0, 0, 0])
    assertIDXError(try IDX.readLabels(path: lpath), file: lpath, "4 extra label bytes") {
      $0 == .trailingBytes(file: lpath, offset: 11, extra: 4)
    }
  }

  func testZeroDimensions() throws {
    let dir = try TempDir()
    let zeroRows = try dir.write("zero-rows-idx3", idxHeader(magic: 0x0803, dims: [2, 0, 4]))
    assertIDXError(try IDX.readImages(path: zeroRows), file: zeroRows, "rows = 0") {
      $0 == .badDimensions(file: zeroRows, field: "rows", offset: 8, value: 0, allowed: 1...1024)
    }
    let zeroCount = try dir.write("zero-count-idx3", idxHeader(magic: 0x0803, dims: [0, 28, 28]))
    assertIDXError(try IDX.readImages(path: zeroCount), file: zeroCount, "count = 0") {
      $0 == .badDimensions(file: zeroCount, field: "count", offset: 4, value: 0, allowed: 1...100_000_000)
    }
    let zeroLabels = try dir.write("zero-idx1", idxHeader(magic: 0x0801, dims: [0]))
    assertIDXError(try IDX.readLabels(path: zeroLabels), file: zeroLabels, "0 labels") {
      $0 == .badDimensions(file: zeroLabels, field: "count", offset: 4, value: 0, allowed: 1...100_000_000)
    }
  }

  func testAbsurdDimensions() throws {
    let dir = try TempDir()
    let wide = try dir.write("wide-idx3", idxHeader(magic: 0x0803, dims: [1, 28, 5000]) + [1, 2, 3])
    assertIDXError(try IDX.readImages(path: wide), file: wide, "cols = 5000") {
      $0 == .badDimensions(file: wide, field: "cols", offset: 12, value: 5000, allowed: 1...1024)
    }
    let many = try dir.write("many-idx1", idxHeader(magic: 0x0801, dims: [100_000_001]))
    assertIDXError(try IDX.readLabels(path: many), file: many, "1e8+1 labels") {
      $0 == .badDimensions(file: many, field: "count", offset: 4, value: 100_000_001, allowed: 1...100_000_000)
    }
  }

  func testDimensionProductOverflowDoesNotTrap() throws {
    let dir = try TempDir()
    // Every field at its maximum: count*rows*cols would overflow 32 bits (and, unchecked, lie
    // about the size); the count field is rejected first.
    let huge = try dir.write("overflow-idx3", idxHeader(magic: 0x0803, dims: [.max, .max, .max]))
    assertIDXError(try IDX.readImages(path: huge), file: huge, "all dims 0xFFFFFFFF") {
      $0 == .badDimensions(file: huge, field: "count", offset: 4, value: 0xFFFF_FFFF, allowed: 1...100_000_000)
    }
    // Largest legal dimensions: 1e8 * 1024 * 1024 bytes (~1e14) expected, no allocation, a clean
    // truncation error.
    let big = try dir.write("biggest-idx3", idxHeader(magic: 0x0803, dims: [100_000_000, 1024, 1024]) + [7])
    assertIDXError(try IDX.readImages(path: big), file: big, "legal but huge") {
      $0 == .truncated(file: big, offset: 16, expected: 100_000_000 * 1024 * 1024, actual: 1)
    }
  }

  func testCorruptGzip() throws {
    let dir = try TempDir()
    var bytes = gzip(imagesFile(count: 20, rows: 10, cols: 10))
    // Damage the deflate data in the middle (the 10-byte header and 8-byte trailer stay).
    for i in stride(from: 20, to: bytes.count - 20, by: 7) { bytes[i] ^= 0x5A }
    let path = try dir.write("corrupt-idx3-ubyte.gz", bytes)
    assertIDXError(try IDX.readImages(path: path), file: path, "flipped deflate bytes") {
      if case .corruptGzip(let f, _) = $0 { return f == path }
      return false
    }
    // A wrong CRC-32 in the trailer.
    var crcBad = gzip(labelsFile([1, 2, 3]))
    crcBad[crcBad.count - 8] ^= 0xFF
    let crcPath = try dir.write("badcrc-idx1-ubyte.gz", crcBad)
    assertIDXError(try IDX.readLabels(path: crcPath), file: crcPath, "bad CRC") {
      if case .corruptGzip(_, let detail) = $0 { return detail.contains("check") || detail.contains("corrupt") }
      return false
    }
    // Garbage after the last member.
    let trailing = try dir.write("trailing.gz", gzip(labelsFile([1])) + [0x00, 0x01, 0x02])
    assertIDXError(try IDX.readLabels(path: trailing), file: trailing, "garbage after gzip") {
      if case .corruptGzip(_, let detail) = $0 { return detail.contains("trailing") }
      return false
    }
    // Only the magic.
    let magicOnly = try dir.write("magic-only.gz", [0x1F, 0x8B])
    assertIDXError(try IDX.readLabels(path: magicOnly), file: magicOnly, "gzip magic only") {
      if case .corruptGzip = $0 { return true }
      return false
    }
  }

  func testTruncatedGzip() throws {
    let dir = try TempDir()
    let full = gzip(imagesFile(count: 20, rows: 10, cols: 10))
    let path = try dir.write("half-idx3-ubyte.gz", Array(full[..<(full.count / 2)]))
    assertIDXError(try IDX.readImages(path: path), file: path, "half a gzip file") {
      if case .corruptGzip(let f, let detail) = $0 { return f == path && detail.contains("truncated") }
      return false
    }
    // Missing only the 8-byte trailer.
    let noTrailer = try dir.write("no-trailer.gz", Array(full[..<(full.count - 8)]))
    assertIDXError(try IDX.readImages(path: noTrailer), file: noTrailer, "no trailer") {
      if case .corruptGzip(_, let detail) = $0 { return detail.contains("truncated") }
      return false
    }
  }

  func testEmptyFileAndEmptyGzip() throws {
    let dir = try TempDir()
    let empty = try dir.write("empty-idx3-ubyte", [])
    assertIDXError(try IDX.readImages(path: empty), file: empty, "empty file") {
      $0 == .empty(file: empty)
    }
    let emptyGz = try dir.write("empty-idx1-ubyte.gz", [])
    assertIDXError(try IDX.readLabels(path: emptyGz), file: emptyGz, "empty .gz file") {
      $0 == .empty(file: emptyGz)
    }
    // A valid gzip stream of zero bytes.
    let gzOfNothing = try dir.write("nothing-idx1-ubyte.gz", gzip([]))
    assertIDXError(try IDX.readLabels(path: gzOfNothing), file: gzOfNothing, "gzip of nothing") {
      $0 == .empty(file: gzOfNothing)
    }
  }

  func testIOErrors() throws {
    let dir = try TempDir()
    let missing = dir.path + "/does-not-exist-idx3-ubyte"
    assertIDXError(try IDX.readImages(path: missing), file: missing, "missing file") {
      if case .io(let f, let detail) = $0 { return f == missing && detail.contains("No such file") }
      return false
    }
    assertIDXError(try IDX.readLabels(path: dir.path), file: dir.path, "a directory") {
      if case .io = $0 { return true }
      return false
    }
  }

  /// Parses `bytes` as a labels or an images file.
  private func parse(_ bytes: [UInt8], labels: Bool, file: String) throws(IDXError) {
    if labels {
      _ = try IDX.parseLabels(bytes, file: file)
    } else {
      _ = try IDX.parseImages(bytes, file: file)
    }
  }

  /// The case name of `error` (`badMagic`, …).
  private func kind(_ error: IDXError) -> String {
    Mirror(reflecting: error).children.first?.label ?? "\(error)"
  }

  /// Every strict prefix of small valid files (raw and gzip) throws the IDXError case that fits
  /// the cut: empty, a truncated gzip stream, or a truncated or wrong-kind IDX file.
  func testEveryPrefixThrowsTheFittingError() throws {
    let images = imagesFile(count: 3, rows: 5, cols: 4)
    let labels = labelsFile([0, 1, 2, 3, 4])
    for (file, gzipped) in [(images, false), (labels, false), (gzip(images), true), (gzip(labels), true)] {
      for n in 0..<file.count {
        for asLabels in [false, true] {
          let what = "\(gzipped ? "gzip " : "")prefix of \(n) bytes read as \(asLabels ? "labels" : "images")"
          do {
            try parse(Array(file[..<n]), labels: asLabels, file: "prefix")
            XCTFail("\(what): parsed, expected an error")
          } catch {
            let fits: Bool
            switch error {
            case .empty: fits = n == 0
            case .corruptGzip: fits = gzipped && n >= 2  // a lone 0x1f is not gzip
            case .truncated, .badMagic: fits = n > 0 && (!gzipped || n == 1)
            default: fits = false
            }
            XCTAssertTrue(fits, "\(what): unexpected \(kind(error)): \(error)")
            checkDescription(error.description, names: "prefix", what, line: #line)
          }
        }
      }
    }
  }

  /// Thousands of random corruptions of small valid files (raw and gzip) either parse or throw
  /// an IDXError of a case the damage can cause, with a gzip failure exactly the `GzipError`
  /// that `Gzip.decompress` throws; nothing traps. The corruptions come from a fixed seed,
  /// printed with the trial number on any failure.
  func testRandomCorruptionThrowsTypedErrors() throws {
    let images = imagesFile(count: 3, rows: 5, cols: 4)
    let labels = labelsFile([0, 1, 2, 3, 4])
    let corpus = [images, labels, gzip(images), gzip(labels)]
    var rng = SeededRNG(seed: 42)
    var seen: [String: Int] = [:]
    for trial in 0..<3000 {
      let at = "seed \(rng.seed), trial \(trial)"
      var file = corpus[trial % corpus.count]
      for _ in 0..<Int.random(in: 1...4, using: &rng) {
        file[Int.random(in: 0..<file.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
      }
      var gzipFailure: GzipError?
      if Gzip.isGzip(file) {
        do {
          _ = try Gzip.decompress(file)
        } catch {
          gzipFailure = error
          XCTAssertTrue((0...file.count).contains(error.offset), "\(at): offset outside the input: \(error)")
        }
      }
      for asLabels in [false, true] {
        do {
          try parse(file, labels: asLabels, file: "fuzz")
        } catch {
          seen[kind(error), default: 0] += 1
          switch error {
          case .corruptGzip(let f, let detail):
            XCTAssertEqual(f, "fuzz", at)
            XCTAssertEqual(detail, gzipFailure?.description, "\(at): \(error)")
          case .empty, .badMagic, .truncated, .trailingBytes, .badDimensions:
            XCTAssertNil(gzipFailure, "\(at): gzip failed (\(gzipFailure.map { "\($0)" } ?? "")) but got \(error)")
          case .io, .countMismatch:
            XCTFail("\(at): parsing bytes cannot give \(error)")
          }
          checkDescription(error.description, names: "fuzz", at, line: #line)
        }
      }
    }
    // Both layers were reached: damaged deflate data and damaged IDX headers.
    for k in ["corruptGzip", "badMagic", "badDimensions"] {
      XCTAssertGreaterThan(seen[k, default: 0], 0, "seed \(rng.seed): no \(k) among \(seen)")
    }
  }
}
