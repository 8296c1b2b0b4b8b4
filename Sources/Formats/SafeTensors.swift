// A generic reader and writer for the safetensors format
// (https://github.com/huggingface/safetensors):
//
//   [8 bytes: header length N, little-endian UInt64]
//   [N bytes: UTF-8 JSON object, padded with spaces]
//   [data block: the raw little-endian tensor bytes]
//
// The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets
// relative to the start of the data block) and may hold "__metadata__", an object of strings.
// Decoding validates like the reference implementation: the tensors must tile the data block
// exactly (no overlaps, no gaps, no trailing bytes). Nothing here traps on any input bytes.

import Foundation

// MARK: - Values

/// A safetensors element type. `rawValue` is the tag stored in the header (`"F32"`, …).
/// Sub-byte types (`F4`, …) are not supported.
public enum DType: String, CaseIterable, Sendable, Hashable, CustomStringConvertible {
  case BOOL, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0
  case I16, U16, F16, BF16
  case I32, U32, F32
  case I64, U64, F64, C64

  /// Byte size of one element.
  public var size: Int {
    switch self {
    case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .F8_E8M0: 1
    case .I16, .U16, .F16, .BF16: 2
    case .I32, .U32, .F32: 4
    case .I64, .U64, .F64, .C64: 8
    }
  }

  /// The header tag, such as `F32`.
  public var description: String { rawValue }
}

/// One tensor of a safetensors file: its name, dtype, shape and raw little-endian bytes.
public struct SafeTensor: Sendable, Equatable {
  /// The tensor's name, such as `encoder.0.weight`.
  public var name: String
  /// The element type, such as `.F32`, `.F64` or `.I64`.
  public var dtype: DType
  /// The tensor's shape; `[]` is a scalar (one element).
  public var shape: [Int]
  /// The raw little-endian element bytes; `shape` product × dtype size of them.
  public var bytes: [UInt8]

  /// Creates a tensor from raw bytes.
  public init(name: String, dtype: DType, shape: [Int], bytes: [UInt8]) {
    self.name = name
    self.dtype = dtype
    self.shape = shape
    self.bytes = bytes
  }

  /// Creates an `F32` tensor from floats (stored little-endian).
  public init(name: String, shape: [Int], floats: [Float]) {
    self.init(name: name, dtype: .F32, shape: shape, bytes: floatBytes(floats))
  }

  /// Creates an `F32` tensor from a buffer of floats, such as a slice of a parameter arena.
  public init(name: String, shape: [Int], floats: UnsafeBufferPointer<Float>) {
    self.init(name: name, dtype: .F32, shape: shape, bytes: floatBytes(floats))
  }

  /// The number of elements: the product of `shape` (1 for a scalar), or nil on overflow or
  /// when a dimension is negative.
  public var elementCount: Int? { SafeTensors.elementCount(shape) }
}

/// The decoded contents of a safetensors file.
public struct SafeTensorsFile: Sendable {
  /// The tensors in file order: by position in the data block (ties between empty tensors
  /// broken by their order in the header). For files written by `SafeTensors.encode` this is
  /// the order the tensors were given in.
  public var tensors: [SafeTensor] { didSet { positions = Self.positions(tensors) } }
  /// The header's `__metadata__` (empty when absent).
  public var metadata: [String: String]
  /// The file name used in error messages.
  public var file: String
  /// Each name's position in `tensors` (the first, should a name occur twice).
  private var positions: [String: Int]

  /// Creates a file value; `file` is only used to name the file in errors.
  public init(tensors: [SafeTensor], metadata: [String: String], file: String) {
    self.tensors = tensors
    self.metadata = metadata
    self.file = file
    positions = Self.positions(tensors)
  }

  private static func positions(_ tensors: [SafeTensor]) -> [String: Int] {
    Dictionary(tensors.indices.lazy.map { (tensors[$0].name, $0) }, uniquingKeysWith: { first, _ in first })
  }

  /// The tensor called `name`, or nil (a hash lookup).
  public func tensor(_ name: String) -> SafeTensor? {
    positions[name].map { tensors[$0] }
  }

  /// The elements of the `F32` tensor `name`.
  /// - Throws: `SafeTensorsError.missingTensor` or `.wrongDtype` (for any dtype but `F32`).
  public func floats(_ name: String) throws -> [Float] {
    guard let t = tensor(name) else {
      throw SafeTensorsError.missingTensor(file: file, tensor: name)
    }
    guard t.dtype == .F32 else {
      throw SafeTensorsError.wrongDtype(file: file, tensor: name, expected: .F32, found: t.dtype)
    }
    return floatsFromBytes(t.bytes)
  }

  /// The elements of the `F32` tensor `name`, which must have shape `shape`.
  /// - Throws: `SafeTensorsError.missingTensor`, `.wrongDtype` or `.shapeMismatch`.
  public func floats(_ name: String, shape: [Int]) throws -> [Float] {
    guard let t = tensor(name) else {
      throw SafeTensorsError.missingTensor(file: file, tensor: name)
    }
    guard t.dtype == .F32 else {
      throw SafeTensorsError.wrongDtype(file: file, tensor: name, expected: .F32, found: t.dtype)
    }
    guard t.shape == shape else {
      throw SafeTensorsError.shapeMismatch(file: file, tensor: name, expected: shape, found: t.shape)
    }
    return floatsFromBytes(t.bytes)
  }
}

// MARK: - Float helpers

/// The little-endian bytes of `a` (4 per float).
public func floatBytes(_ a: UnsafeBufferPointer<Float>) -> [UInt8] {
  [UInt8](unsafeUninitializedCapacity: a.count * 4) { out, initialized in
    #if _endian(little)
    UnsafeMutableRawBufferPointer(out).copyMemory(from: UnsafeRawBufferPointer(a))
    #else
    let raw = UnsafeMutableRawBufferPointer(out)
    for (i, v) in a.enumerated() {
      raw.storeBytes(of: v.bitPattern.littleEndian, toByteOffset: 4 * i, as: UInt32.self)
    }
    #endif
    initialized = a.count * 4
  }
}

/// The little-endian bytes of `a` (4 per float).
public func floatBytes(_ a: [Float]) -> [UInt8] {
  a.withUnsafeBufferPointer { floatBytes($0) }
}

/// The floats stored little-endian in `bytes`. Trailing bytes beyond a multiple of 4 are ignored
/// (a validated `F32` tensor has none).
public func floatsFromBytes(_ bytes: [UInt8]) -> [Float] {
  let n = bytes.count / 4
  return [Float](unsafeUninitializedCapacity: n) { out, initialized in
    _ = floatsFromBytes(bytes, into: out)
    initialized = n
  }
}

/// Copies the floats stored little-endian in `bytes` into `out`, as many as both hold
/// (`min(bytes.count / 4, out.count)`), and returns that count. Use it to load a tensor
/// straight into a parameter arena.
@discardableResult
public func floatsFromBytes(_ bytes: [UInt8], into out: UnsafeMutableBufferPointer<Float>) -> Int {
  let n = min(bytes.count / 4, out.count)
  bytes.withUnsafeBytes { raw in
    for i in 0..<n {
      let bits = raw.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self)
      out[i] = Float(bitPattern: UInt32(littleEndian: bits))
    }
  }
  return n
}

// MARK: - Encoding, decoding, files

/// Encoding, decoding and reading of safetensors files (write the encoded bytes with
/// `FileIO.writeAtomically`).
public enum SafeTensors {
  /// The largest header the reference implementation accepts (100 MB).
  public static let maxHeaderLength: UInt64 = 100_000_000

  /// The product of `shape` (1 for `[]`), or nil when a dimension is negative or it overflows.
  static func elementCount(_ shape: [Int]) -> Int? {
    if shape.contains(where: { $0 < 0 }) { return nil }
    if shape.contains(0) { return 0 }
    var n = 1
    for d in shape {
      let (p, overflow) = n.multipliedReportingOverflow(by: d)
      if overflow { return nil }
      n = p
    }
    return n
  }

  // MARK: Encoding

  /// The bytes of a safetensors file holding `tensors` (in the given order) and `metadata`.
  ///
  /// The output is deterministic: the header is compact JSON with `__metadata__` first (omitted
  /// when empty) with its keys sorted, then the tensors in the given order with data offsets
  /// laid out contiguously in that order; strings are JSON-escaped; the header is padded with
  /// spaces to a multiple of 8 bytes so the data block is 8-byte aligned.
  ///
  /// - Precondition: names are unique and not `__metadata__`; each tensor's dimensions are
  ///   non-negative and `bytes.count` equals shape product × dtype size.
  ///   (These are programming errors, never properties of input files.)
  public static func encode(tensors: [SafeTensor], metadata: [String: String]) -> [UInt8] {
    var seen = Set<String>()
    var header: [UInt8] = []
    header.reserveCapacity(64 + 96 * tensors.count)
    header.append(UInt8(ascii: "{"))
    var first = true
    if !metadata.isEmpty {
      JSONText.appendString("__metadata__", to: &header)
      header.append(contentsOf: Array(":{".utf8))
      for (i, key) in metadata.keys.sorted().enumerated() {
        if i > 0 { header.append(UInt8(ascii: ",")) }
        JSONText.appendString(key, to: &header)
        header.append(UInt8(ascii: ":"))
        JSONText.appendString(metadata[key] ?? "", to: &header)
      }
      header.append(UInt8(ascii: "}"))
      first = false
    }
    var offset = 0
    for t in tensors {
      precondition(t.name != "__metadata__", "safetensors: a tensor may not be called __metadata__")
      precondition(seen.insert(t.name).inserted, "safetensors: duplicate tensor name \(t.name)")
      let size = t.dtype.size
      let expected = elementCount(t.shape).map { $0.multipliedReportingOverflow(by: size) }
      precondition(
        expected?.overflow == false && expected?.partialValue == t.bytes.count,
        "safetensors: tensor \(t.name): \(t.bytes.count) bytes do not match shape \(t.shape) × \(t.dtype)")
      if !first { header.append(UInt8(ascii: ",")) }
      first = false
      JSONText.appendString(t.name, to: &header)
      header.append(contentsOf: Array(":{\"dtype\":".utf8))
      JSONText.appendString(t.dtype.rawValue, to: &header)
      header.append(contentsOf: Array(",\"shape\":[".utf8))
      header.append(contentsOf: Array(t.shape.map(String.init).joined(separator: ",").utf8))
      let end = offset + t.bytes.count
      header.append(contentsOf: Array("],\"data_offsets\":[\(offset),\(end)]}".utf8))
      offset = end
    }
    header.append(UInt8(ascii: "}"))
    while header.count % 8 != 0 { header.append(UInt8(ascii: " ")) }

    var out: [UInt8] = []
    out.reserveCapacity(8 + header.count + offset)
    let n = UInt64(header.count)
    for i in 0..<8 { out.append(UInt8(truncatingIfNeeded: n >> (8 * UInt64(i)))) }
    out.append(contentsOf: header)
    for t in tensors { out.append(contentsOf: t.bytes) }
    return out
  }

  // MARK: Files

  /// Reads and decodes the safetensors file at `path`.
  /// - Throws: `SafeTensorsError.io` when the file cannot be read, else as `decode`.
  public static func read(path: String) throws -> SafeTensorsFile {
    let bytes: [UInt8]
    do {
      bytes = try FileIO.readAll(path: path)
    } catch {
      throw SafeTensorsError.io(file: error.path, detail: error.detail)
    }
    return try decode(bytes, file: path)
  }
}
