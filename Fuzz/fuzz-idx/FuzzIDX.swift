// Fuzz target: gzip decompression (`Gzip.decompress`) and the IDX readers (`IDX.parseImages`,
// `IDX.parseLabels`) on the same bytes. Built for libFuzzer by scripts/fuzz (-DFUZZING); a
// plain build makes the corpus replayer at the bottom instead.

import Formats
import FuzzSupport

private let fileName = "fuzz-idx.gz"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzCheck.run(data, size, fuzzOne) }

func fuzzOne(_ bytes: [UInt8]) {
  checkGzip(bytes)
  checkImages(bytes)
  checkLabels(bytes)
}

/// Output limit of the gzip check: above what a fuzz input (≤ 4 KB by default) can inflate to.
private let largeLimit = 1 << 23

/// The output limit is exact: a stream that inflates to n bytes decompresses under a limit of
/// n and fails under n − 1 with the limit's error, and the output never exceeds the limit.
private func checkGzip(_ bytes: [UInt8]) {
  guard Gzip.isGzip(bytes) else { return }
  let out: [UInt8]
  do {
    out = try Gzip.decompress(bytes, maxOutput: largeLimit)
  } catch {
    checkOneLine(error)
    return
  }
  precondition(out.count <= largeLimit, "gzip: \(out.count) bytes out under a limit of \(largeLimit)")
  do {
    let exact = try Gzip.decompress(bytes, maxOutput: max(out.count, 1))
    precondition(exact == out, "gzip: another output under a limit of its own size")
  } catch {
    preconditionFailure("gzip: \(out.count) bytes, but a limit of \(out.count) fails: \(error)")
  }
  guard out.count >= 2 else { return }
  do {
    let short = try Gzip.decompress(bytes, maxOutput: out.count - 1)
    preconditionFailure("gzip: \(out.count) bytes, but a limit of \(out.count - 1) gave \(short.count)")
  } catch {
    precondition(error.detail.contains("exceeds the limit"), "gzip: over the limit, but another error: \(error)")
  }
}

private func checkOneLine(_ error: GzipError) {
  let text = error.description
  precondition(!text.isEmpty && !text.contains("\n") && !text.contains("\r"), "gzip error is not one line: \(text)")
}

/// The IDX content: `bytes` gunzipped when they are gzip, else as they are.
private func content(_ bytes: [UInt8]) -> [UInt8] {
  guard Gzip.isGzip(bytes) else { return bytes }
  do {
    return try Gzip.decompress(bytes)
  } catch {
    preconditionFailure("IDX parsed a gzip file that does not decompress: \(error)")
  }
}

private func bigEndian(_ d: [UInt8], _ at: Int) -> Int {
  Int(d[at]) << 24 | Int(d[at + 1]) << 16 | Int(d[at + 2]) << 8 | Int(d[at + 3])
}

/// Parsed images: header and dimensions as stored, in range, and count × rows × cols pixels
/// that are exactly the payload after the 16-byte header.
private func checkImages(_ bytes: [UInt8]) {
  guard let images = FuzzCheck.parsed(naming: fileName, { try IDX.parseImages(bytes, file: fileName) }) else { return }
  let d = content(bytes)
  precondition(d.count >= 16 && bigEndian(d, 0) == Int(IDX.imagesMagic), "images parsed without an images header")
  precondition(
    (bigEndian(d, 4), bigEndian(d, 8), bigEndian(d, 12)) == (images.count, images.rows, images.cols),
    "images: dimensions \(images.count)×\(images.rows)×\(images.cols) are not the header's")
  precondition((1...IDX.maxCount).contains(images.count), "images: count \(images.count) out of range")
  precondition((1...IDX.maxSide).contains(images.rows) && (1...IDX.maxSide).contains(images.cols),
               "images: side \(images.rows)×\(images.cols) out of range")
  precondition(images.count * images.rows * images.cols == images.pixels.count,
               "images: \(images.count)×\(images.rows)×\(images.cols) but \(images.pixels.count) pixels")
  precondition(images.pixels.count == d.count - 16 && images.pixels[...] == d[16...], "images: pixels are not the payload")
}

/// Parsed labels: the header's count, in range, and exactly the payload after the 8-byte header.
private func checkLabels(_ bytes: [UInt8]) {
  guard let labels = FuzzCheck.parsed(naming: fileName, { try IDX.parseLabels(bytes, file: fileName) }) else { return }
  let d = content(bytes)
  precondition(d.count >= 8 && bigEndian(d, 0) == Int(IDX.labelsMagic), "labels parsed without a labels header")
  precondition(bigEndian(d, 4) == labels.count, "labels: count \(labels.count) is not the header's")
  precondition((1...IDX.maxCount).contains(labels.count), "labels: count \(labels.count) out of range")
  precondition(labels.labels.count == labels.count, "labels: count \(labels.count) but \(labels.labels.count) labels")
  precondition(labels.labels[...] == d[8...], "labels: labels are not the payload")
}

#if !FUZZING
@main
struct Replay {
  static func main() { CorpusReplay.main("fuzz-idx", fuzzOne) }
}
#endif
