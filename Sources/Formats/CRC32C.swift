/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord files (and so
/// of TensorBoard event files). Not the CRC-32 of zlib (`CRC32`): a different polynomial. A plain
/// byte-at-a-time table: event files are small, speed does not matter.
public enum CRC32C {
  /// The table of the reflected polynomial: entry i is the CRC of the byte i.
  static let table: [UInt32] = (0..<256).map { i -> UInt32 in
    var c = UInt32(i)
    for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0x82F6_3B78 : c >> 1 }
    return c
  }

  /// The CRC-32C of `bytes`, continuing from `crc` (start with 0, the CRC of nothing).
  /// `checksum(Array("123456789".utf8)) == 0xE3069283`, the standard check value.
  public static func checksum<C: Collection>(_ bytes: C, continuing crc: UInt32 = 0) -> UInt32
  where C.Element == UInt8 {
    var c = ~crc
    table.withUnsafeBufferPointer { t in
      for b in bytes { c = t[Int((c ^ UInt32(b)) & 0xFF)] ^ (c >> 8) }
    }
    return ~c
  }

  /// The masked form TFRecord stores: `((crc >> 15) | (crc << 17)) &+ 0xa282ead8`, so that a CRC
  /// of data that itself contains CRCs does not degenerate.
  public static func mask(_ crc: UInt32) -> UInt32 {
    ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
  }

  /// The inverse of `mask`.
  public static func unmask(_ masked: UInt32) -> UInt32 {
    let rot = masked &- 0xA282_EAD8
    return (rot >> 17) | (rot << 15)
  }

  /// `mask(checksum(bytes))`: the value a TFRecord stores after the length and after the data.
  public static func masked<C: Collection>(_ bytes: C) -> UInt32 where C.Element == UInt8 {
    mask(checksum(bytes))
  }
}
