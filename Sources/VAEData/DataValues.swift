import Formats
import Foundation

/// The values of a data set, row after row: bytes (read as value / 255) or 32-bit floats, either
/// in memory this process owns or in a read-only map of a file, which every process on a node
/// shares through the page cache (one copy per node, whatever the number of ranks).
public final class DataValues: @unchecked Sendable {
  public enum Element: String, Sendable {
    case uint8
    case float32

    public var size: Int { self == .uint8 ? 1 : 4 }
  }

  public let element: Element
  /// Number of values (rows × row width).
  public let count: Int
  public let raw: UnsafeRawPointer
  /// What keeps `raw` valid: the mapping, or nothing when this object owns the memory.
  private let owner: AnyObject?
  private let allocated: UnsafeMutableRawPointer?

  /// Bytes in memory (a copy).
  public init(bytes: [UInt8]) {
    let p = UnsafeMutableRawPointer.allocate(byteCount: max(bytes.count, 1), alignment: 64)
    bytes.withUnsafeBytes { if let b = $0.baseAddress { p.copyMemory(from: b, byteCount: $0.count) } }
    (element, count, raw, owner, allocated) = (.uint8, bytes.count, UnsafeRawPointer(p), nil, p)
  }

  /// Floats in memory (a copy).
  public init(floats: [Float]) {
    let p = UnsafeMutableRawPointer.allocate(byteCount: max(floats.count * 4, 1), alignment: 64)
    floats.withUnsafeBytes { if let b = $0.baseAddress { p.copyMemory(from: b, byteCount: $0.count) } }
    (element, count, raw, owner, allocated) = (.float32, floats.count, UnsafeRawPointer(p), nil, p)
  }

  /// Values someone else keeps valid (`owner`, e.g. a file mapping) as long as this object lives.
  public init(borrowing raw: UnsafeRawPointer, element: Element, count: Int, owner: AnyObject) {
    (self.element, self.count, self.raw, self.owner, allocated) = (element, count, raw, owner, nil)
  }

  deinit { allocated?.deallocate() }

  public var byteCount: Int { count * element.size }
  /// The mapped file these values are borrowed from, or nil when they are in memory.
  public var mappedFile: NPYFile? { owner as? NPYFile }
  /// The values as bytes, when they are bytes.
  public var uint8: UnsafePointer<UInt8>? { element == .uint8 ? raw.assumingMemoryBound(to: UInt8.self) : nil }
  /// The values as floats, when they are floats.
  public var float32: UnsafePointer<Float>? { element == .float32 ? raw.assumingMemoryBound(to: Float.self) : nil }

  /// CRC-32 (zlib) of the raw bytes, read in place.
  public func checksum(continuing crc: UInt32 = 0) -> UInt32 {
    CRC32.checksum(UnsafeRawBufferPointer(start: raw, count: byteCount), continuing: crc)
  }

  /// Value `i` as a model input in [0, 1] for bytes (value / 255), as it is for floats.
  @inline(__always)
  public func value(_ i: Int) -> Float {
    element == .uint8 ? Float(raw.load(fromByteOffset: i, as: UInt8.self)) * (1 / 255)
      : raw.load(fromByteOffset: i * 4, as: Float.self)
  }
}
