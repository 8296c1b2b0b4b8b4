/// Why bytes are not a valid TFRecord stream: the file, the byte offset of the bad record and
/// what was wrong. The description is one line: `<path>: TFRecord at byte <offset>: <reason>`.
public struct TFRecordError: Error, CustomStringConvertible, Equatable, Sendable {
  public let path: String
  public let offset: Int
  public let reason: String

  public init(path: String, offset: Int, reason: String) {
    self.path = path
    self.offset = offset
    self.reason = reason
  }

  public var description: String { "\(oneLine(path)): TFRecord at byte \(offset): \(oneLine(reason))" }
}

/// TFRecord framing, as TensorFlow and TensorBoard write event files: each record is
///
///     uint64 length (little-endian) | uint32 masked CRC-32C of those 8 bytes
///     data (length bytes)           | uint32 masked CRC-32C of the data
///
/// with the CRCs little-endian and masked by `CRC32C.mask`.
public enum TFRecord {
  /// Bytes of framing around each record's data: 8 + 4 before it, 4 after it.
  public static let overhead = 16

  /// Appends the framed record of `data` to `out`.
  public static func append(_ data: [UInt8], to out: inout [UInt8]) {
    var header = [UInt8]()
    header.reserveCapacity(12)
    appendLE(UInt64(data.count), bytes: 8, to: &header)
    let lengthCRC = CRC32C.masked(header)
    out += header
    appendLE(UInt64(lengthCRC), bytes: 4, to: &out)
    out += data
    appendLE(UInt64(CRC32C.masked(data)), bytes: 4, to: &out)
  }

  /// The framed record of `data`.
  public static func frame(_ data: [UInt8]) -> [UInt8] {
    var out = [UInt8]()
    out.reserveCapacity(data.count + overhead)
    append(data, to: &out)
    return out
  }

  /// The data of every record in `bytes`, each CRC checked. `path` only names the file in errors.
  /// - Throws: `TFRecordError` at the first truncated record or CRC mismatch.
  public static func records(in bytes: [UInt8], path: String) throws(TFRecordError) -> [[UInt8]] {
    var out: [[UInt8]] = []
    var at = 0
    while at < bytes.count {
      guard bytes.count - at >= 12 else {
        throw TFRecordError(path: path, offset: at, reason: "truncated header: \(bytes.count - at) of 12 bytes")
      }
      let length = readLE(bytes, at, 8)
      let lengthCRC = UInt32(readLE(bytes, at + 8, 4))
      let expected = CRC32C.masked(bytes[at..<at + 8])
      guard lengthCRC == expected else {
        throw TFRecordError(
          path: path, offset: at,
          reason: "length CRC mismatch: stored 0x\(hex(lengthCRC)), computed 0x\(hex(expected))")
      }
      let available = UInt64(bytes.count - at - 12)
      guard length <= available, available - length >= 4 else {
        throw TFRecordError(
          path: path, offset: at, reason: "truncated record: length \(length), \(available) bytes follow the header")
      }
      let start = at + 12, end = start + Int(length)
      let dataCRC = UInt32(readLE(bytes, end, 4))
      let computed = CRC32C.masked(bytes[start..<end])
      guard dataCRC == computed else {
        throw TFRecordError(
          path: path, offset: at,
          reason: "data CRC mismatch: stored 0x\(hex(dataCRC)), computed 0x\(hex(computed))")
      }
      out.append(Array(bytes[start..<end]))
      at = end + 4
    }
    return out
  }

  private static func appendLE(_ v: UInt64, bytes n: Int, to out: inout [UInt8]) {
    for i in 0..<n { out.append(UInt8(truncatingIfNeeded: v >> (8 * UInt64(i)))) }
  }

  private static func readLE(_ b: [UInt8], _ at: Int, _ n: Int) -> UInt64 {
    var v: UInt64 = 0
    for i in 0..<n { v |= UInt64(b[at + i]) << (8 * UInt64(i)) }
    return v
  }

  private static func hex(_ v: UInt32) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: 8 - s.count) + s
  }
}
