/// What is wrong with an IDX file. Every `description` is one line naming the file, the byte
/// offset or field, and what was expected. Byte offsets refer to the decompressed content when
/// the file is gzip-compressed.
public enum IDXError: Error, CustomStringConvertible, Equatable, Sendable {
  /// The file (or its decompressed content) has no bytes at all.
  case empty(file: String)
  /// The file could not be opened or read (`detail` is the system's reason, `FileIOError.reason`).
  case io(file: String, detail: String)
  /// The file starts with the gzip magic but does not decompress.
  case corruptGzip(file: String, detail: String)
  /// The 4-byte magic at offset 0 is not the expected one (data type 0x08 = unsigned byte,
  /// 3 dimensions for images, 1 for labels).
  case badMagic(file: String, found: UInt32, expected: UInt32)
  /// The section starting at byte `offset` (0: header, else data) needs `expected` bytes but
  /// only `actual` are present.
  case truncated(file: String, offset: Int, expected: Int, actual: Int)
  /// The data ends at byte `offset` but `extra` more bytes follow.
  case trailingBytes(file: String, offset: Int, extra: Int)
  /// A dimension field (`field`, stored at byte `offset`) holds `value`, outside `allowed`;
  /// or the dimensions multiply to more bytes than this platform can address.
  case badDimensions(file: String, field: String, offset: Int, value: UInt64, allowed: ClosedRange<Int>)
  /// An images file and its labels file disagree on the number of examples.
  case countMismatch(imagesFile: String, images: Int, labelsFile: String, labels: Int)

  public var description: String {
    switch self {
    case .empty(let file):
      return "\(file): file is empty (expected an IDX header)"
    case .io(let file, let detail):
      return "\(file): cannot read: \(oneLine(detail))"
    case .corruptGzip(let file, let detail):
      return "\(file): corrupt gzip: \(oneLine(detail))"
    case .badMagic(let file, let found, let expected):
      return "\(file): bad IDX magic at byte offset 0: expected \(hex(expected)) (\(IDX.describeMagic(expected))), "
        + "found \(hex(found)) (\(IDX.describeMagic(found)))"
    case .truncated(let file, let offset, let expected, let actual):
      let section = offset == 0 ? "header" : "data"
      return "\(file): truncated \(section) at byte offset \(offset): expected \(expected) bytes, found \(actual)"
    case .trailingBytes(let file, let offset, let extra):
      return "\(file): \(extra) unexpected trailing byte(s) after the data, which ends at byte offset \(offset)"
    case .badDimensions(let file, let field, let offset, let value, let allowed):
      return "\(file): bad dimension \(field) at byte offset \(offset): found \(value), "
        + "expected \(allowed.lowerBound)...\(allowed.upperBound)"
    case .countMismatch(let imagesFile, let images, let labelsFile, let labels):
      return "\(imagesFile) holds \(images) images but \(labelsFile) holds \(labels) labels: expected equal counts"
    }
  }
}

private func hex(_ v: UInt32) -> String {
  let digits = String(v, radix: 16)
  return "0x" + String(repeating: "0", count: max(0, 8 - digits.count)) + digits
}

/// MNIST-style images: `count` images of `rows` x `cols` unsigned bytes, row-major, image after
/// image.
public struct IDXImages: Sendable {
  public let count: Int
  public let rows: Int
  public let cols: Int
  /// `count * rows * cols` bytes.
  public let pixels: [UInt8]
}

/// MNIST-style labels: one unsigned byte per example.
public struct IDXLabels: Sendable {
  public let count: Int
  public let labels: [UInt8]
}

/// Reader for the IDX format used by MNIST and Fashion-MNIST: a big-endian magic
/// `00 00 <type> <ndims>` followed by `ndims` big-endian UInt32 dimensions and the data. Only
/// unsigned-byte data (type 0x08) is accepted: images are 3-D (magic 0x00000803), labels 1-D
/// (0x00000801). Files may be raw or gzip-compressed (detected by content, not by name).
public enum IDX {
  /// Magic of an unsigned-byte 3-D file (images).
  public static let imagesMagic: UInt32 = 0x0000_0803
  /// Magic of an unsigned-byte 1-D file (labels).
  public static let labelsMagic: UInt32 = 0x0000_0801
  /// Largest accepted number of examples.
  public static let maxCount = 100_000_000
  /// Largest accepted image height or width.
  public static let maxSide = 1024

  /// Reads and validates an images file (raw or `.gz`).
  public static func readImages(path: String) throws(IDXError) -> IDXImages {
    try parseImages(readContent(path: path), file: path)
  }

  /// The shape (count, rows, cols) an images file (raw or `.gz`) declares, from its header
  /// alone: a compressed file is decompressed only as far as its first 16 bytes. The body is
  /// checked when the file is read (`readImages`).
  public static func readImagesShape(path: String) throws(IDXError) -> (count: Int, rows: Int, cols: Int) {
    try imagesShape(decompressIfNeeded(readContent(path: path), file: path, prefix: 16), file: path)
  }

  /// Reads and validates a labels file (raw or `.gz`).
  public static func readLabels(path: String) throws(IDXError) -> IDXLabels {
    try parseLabels(readContent(path: path), file: path)
  }

  /// Parses the bytes of an images file; gzip-compressed bytes are decompressed first.
  /// `file` is only used in error messages.
  public static func parseImages(_ bytes: [UInt8], file: String) throws(IDXError) -> IDXImages {
    let data = try decompressIfNeeded(bytes, file: file)
    let (count, rows, cols) = try imagesShape(data, file: file)
    let (perImage, o1) = rows.multipliedReportingOverflow(by: cols)
    let (total, o2) = count.multipliedReportingOverflow(by: perImage)
    guard !o1, !o2 else {
      throw .badDimensions(
        file: file, field: "count*rows*cols", offset: 4, value: UInt64(count),
        allowed: 1...(perImage > 0 ? Int.max / perImage : 0))
    }
    let pixels = try payload(data, headerSize: 16, expected: total, file: file)
    return IDXImages(count: count, rows: rows, cols: cols, pixels: pixels)
  }

  /// Parses the bytes of a labels file; gzip-compressed bytes are decompressed first.
  /// `file` is only used in error messages.
  public static func parseLabels(_ bytes: [UInt8], file: String) throws(IDXError) -> IDXLabels {
    let data = try decompressIfNeeded(bytes, file: file)
    let dims = try parseHeader(data, file: file, magic: labelsMagic, names: ["count"])
    let count = try checkDimension(dims[0], field: "count", index: 0, max: maxCount, file: file)
    let labels = try payload(data, headerSize: 8, expected: count, file: file)
    return IDXLabels(count: count, labels: labels)
  }

  /// Human-readable meaning of an IDX magic, for error messages.
  static func describeMagic(_ magic: UInt32) -> String {
    if magic == imagesMagic { return "unsigned byte, 3 dimensions: an images file" }
    if magic == labelsMagic { return "unsigned byte, 1 dimension: a labels file" }
    if magic >> 16 != 0 {
      if magic >> 16 == 0x1F8B { return "gzip data" }
      return "not an IDX file: the first two bytes must be zero"
    }
    let type = (magic >> 8) & 0xFF
    let ndims = magic & 0xFF
    let typeName: String
    switch type {
    case 0x08: typeName = "unsigned byte"
    case 0x09: typeName = "signed byte"
    case 0x0B: typeName = "short"
    case 0x0C: typeName = "int"
    case 0x0D: typeName = "float"
    case 0x0E: typeName = "double"
    default: typeName = "unknown data type 0x" + String(type, radix: 16)
    }
    return "\(typeName), \(ndims) dimension\(ndims == 1 ? "" : "s")"
  }

  // MARK: - Internals

  /// Reads a whole file and gunzips it when it starts with the gzip magic.
  static func readContent(path: String) throws(IDXError) -> [UInt8] {
    do {
      return try FileIO.readAll(path: path)
    } catch {
      throw .io(file: path, detail: error.reason)
    }
  }

  /// Gunzips `bytes` when they start with the gzip magic: wholly, or only their first
  /// `prefix` bytes (enough for a header).
  private static func decompressIfNeeded(_ bytes: [UInt8], file: String, prefix: Int? = nil) throws(IDXError) -> [UInt8] {
    guard !bytes.isEmpty else { throw .empty(file: file) }
    guard Gzip.isGzip(bytes) else { return bytes }
    let data: [UInt8]
    do {
      if let prefix { data = try Gzip.prefix(bytes, count: prefix) } else { data = try Gzip.decompress(bytes) }
    } catch {
      throw .corruptGzip(file: file, detail: error.description)
    }
    guard !data.isEmpty else { throw .empty(file: file) }
    return data
  }

  /// An images header's count, rows and cols, each checked.
  private static func imagesShape(_ data: [UInt8], file: String) throws(IDXError) -> (count: Int, rows: Int, cols: Int) {
    let dims = try parseHeader(data, file: file, magic: imagesMagic, names: ["count", "rows", "cols"])
    return (
      try checkDimension(dims[0], field: "count", index: 0, max: maxCount, file: file),
      try checkDimension(dims[1], field: "rows", index: 1, max: maxSide, file: file),
      try checkDimension(dims[2], field: "cols", index: 2, max: maxSide, file: file)
    )
  }

  /// Checks the magic and returns the `names.count` dimensions that follow it.
  private static func parseHeader(
    _ data: [UInt8], file: String, magic: UInt32, names: [String]
  ) throws(IDXError) -> [UInt32] {
    guard data.count >= 4 else {
      throw .truncated(file: file, offset: 0, expected: 4, actual: data.count)
    }
    let found = readBigEndian(data, at: 0)
    guard found == magic else { throw .badMagic(file: file, found: found, expected: magic) }
    let headerSize = 4 + 4 * names.count
    guard data.count >= headerSize else {
      throw .truncated(file: file, offset: 0, expected: headerSize, actual: data.count)
    }
    return names.indices.map { readBigEndian(data, at: 4 + 4 * $0) }
  }

  private static func checkDimension(
    _ value: UInt32, field: String, index: Int, max: Int, file: String
  ) throws(IDXError) -> Int {
    guard value >= 1, Int(value) <= max else {
      throw .badDimensions(
        file: file, field: field, offset: 4 + 4 * index, value: UInt64(value), allowed: 1...max)
    }
    return Int(value)
  }

  private static func payload(
    _ data: [UInt8], headerSize: Int, expected: Int, file: String
  ) throws(IDXError) -> [UInt8] {
    let actual = data.count - headerSize  // parseHeader guaranteed data.count >= headerSize
    if actual < expected {
      throw .truncated(file: file, offset: headerSize, expected: expected, actual: actual)
    }
    if actual > expected {
      throw .trailingBytes(file: file, offset: headerSize + expected, extra: actual - expected)
    }
    return Array(data[headerSize...])
  }

  private static func readBigEndian(_ data: [UInt8], at offset: Int) -> UInt32 {
    UInt32(data[offset]) << 24 | UInt32(data[offset + 1]) << 16 | UInt32(data[offset + 2]) << 8
      | UInt32(data[offset + 3])
  }
}
