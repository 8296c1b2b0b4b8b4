import CZlib
import Foundation

// Fixtures for the tests of IDX files (FormatsTests) and of the data set registry that reads
// them (VAEDataTests).

/// Big-endian IDX header: magic then dimensions.
public func idxHeader(magic: UInt32, dims: [UInt32]) -> [UInt8] {
  var out: [UInt8] = []
  for v in [magic] + dims {
    out += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
  }
  return out
}

/// A valid images file: `count` images of rows x cols with pixel (i, p) = (i * 31 + p) % 256.
public func imagesFile(count: Int, rows: Int, cols: Int) -> [UInt8] {
  var bytes = idxHeader(magic: 0x0803, dims: [UInt32(count), UInt32(rows), UInt32(cols)])
  for i in 0..<count {
    for p in 0..<(rows * cols) { bytes.append(UInt8((i * 31 + p) % 256)) }
  }
  return bytes
}

public func labelsFile(_ labels: [UInt8]) -> [UInt8] {
  idxHeader(magic: 0x0801, dims: [UInt32(labels.count)]) + labels
}

/// gzip-compresses `bytes` with zlib (windowBits 16+15 writes a gzip wrapper).
public func gzip(_ bytes: [UInt8], level: Int32 = 6) -> [UInt8] {
  var stream = z_stream()
  let rc = deflateInit2_(
    &stream, level, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION,
    Int32(MemoryLayout<z_stream>.size))
  precondition(rc == Z_OK, "deflateInit2_ failed: \(rc)")
  defer { deflateEnd(&stream) }
  var input = bytes
  var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, UInt(bytes.count))) + 64)
  let written: Int = input.withUnsafeMutableBufferPointer { inBuf in
    output.withUnsafeMutableBufferPointer { outBuf in
      stream.next_in = inBuf.baseAddress
      stream.avail_in = UInt32(inBuf.count)
      stream.next_out = outBuf.baseAddress
      stream.avail_out = UInt32(outBuf.count)
      let end = deflate(&stream, Z_FINISH)
      precondition(end == Z_STREAM_END, "deflate did not finish: \(end)")
      return outBuf.count - Int(stream.avail_out)
    }
  }
  return Array(output[..<written])
}

/// A fresh temporary directory, removed at the end of the test.
public final class TempDir {
  public let path: String
  public init() throws {
    path = NSTemporaryDirectory() + "vae-data-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
  }
  deinit { try? FileManager.default.removeItem(atPath: path) }

  @discardableResult
  public func write(_ name: String, _ bytes: [UInt8]) throws -> String {
    let full = path + "/" + name
    try FileManager.default.createDirectory(
      atPath: (full as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
    try Data(bytes).write(to: URL(fileURLWithPath: full))
    return full
  }
}
