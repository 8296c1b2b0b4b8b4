import CZlib

/// The CRC-32 of zlib, gzip and PNG (polynomial 0xEDB88320), computed by zlib: data checksums,
/// checkpoint tensor checksums, safetensors data checksums and PNG chunks all use it. (TFRecord
/// files need the other polynomial, `CRC32C`.)
public enum CRC32 {
  /// The most bytes handed to zlib's `crc32` at once: its length parameter is a 32-bit `uInt`.
  static let maxChunk = Int(UInt32.max)

  /// The CRC-32 of `bytes`, continuing from `crc` (start with 0, the CRC of nothing). Buffers of
  /// any size are fine: zlib is fed chunks of at most `UInt32.max` bytes.
  public static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32 = 0) -> UInt32 {
    checksum(bytes, continuing: crc, chunk: maxChunk)
  }

  /// The CRC-32 of `bytes`, continuing from `crc` (start with 0).
  public static func checksum(_ bytes: [UInt8], continuing crc: UInt32 = 0) -> UInt32 {
    bytes.withUnsafeBytes { checksum($0, continuing: crc) }
  }

  /// As `checksum(_:continuing:)` with chunks of at most `chunk` bytes (tests use small ones).
  static func checksum(_ bytes: UnsafeRawBufferPointer, continuing crc: UInt32, chunk: Int) -> UInt32 {
    precondition(chunk > 0 && chunk <= maxChunk, "CRC32: chunk must be 1...UInt32.max")
    guard let base = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return crc }
    var value = uLong(crc)
    var offset = 0
    while offset < bytes.count {
      let n = min(bytes.count - offset, chunk)
      value = crc32(value, base + offset, uInt(n))
      offset += n
    }
    return UInt32(truncatingIfNeeded: value)
  }
}
