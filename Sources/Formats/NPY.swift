/// NumPy's `.npy` format (numpy/lib/format.py): the magic `\x93NUMPY`, a major and minor
/// version byte, the header length (2 bytes little-endian in version 1.0, 4 in 2.0 and 3.0),
/// the header (a Python dictionary literal with the keys 'descr', 'fortran_order' and 'shape',
/// padded with spaces and a newline so that the data starts at a multiple of 64), then the raw
/// array data.
///
/// Only C-order arrays of `[N, ...]` rows of `uint8` or little-endian `float32` are accepted;
/// every other dtype and Fortran order are refused with an error that says how to save the
/// array instead. A row is the product of the trailing dimensions (1 for a 1-D array).
public enum NPY {
  /// The first six bytes of every `.npy` file.
  public static let magic: [UInt8] = [0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59]
  /// The longest header read, as NumPy's own reader refuses longer ones by default
  /// (`_MAX_HEADER_SIZE`): plain arrays need about 128 bytes.
  public static let maxHeaderLength = 10_000
  /// Bytes of the file that always hold the whole header of an acceptable file.
  public static let maxPrefixLength = 12 + maxHeaderLength
  /// The most dimensions a shape may have (NumPy's `NPY_MAXDIMS` before 2.0).
  public static let maxDimensions = 32

  /// The element types accepted.
  public enum DType: String, Sendable, CaseIterable {
    case uint8, float32

    /// Bytes per element.
    public var itemSize: Int { self == .uint8 ? 1 : 4 }
    /// The `descr` NumPy writes for it.
    public var descr: String { self == .uint8 ? "|u1" : "<f4" }
  }

  /// A parsed and checked header: the data is `rows × rowWidth` elements of `dtype` in C
  /// order, `byteCount` bytes starting at `dataOffset`, and nothing follows them.
  public struct Header: Equatable, Sendable {
    /// The format's major version (1, 2 or 3).
    public let version: Int
    public let dtype: DType
    /// The array's shape: at least one dimension, the first (`rows`) ≥ 1, the others ≥ 1.
    public let shape: [Int]
    /// Where the data starts: the length of magic, version, header length and header.
    public let dataOffset: Int
    /// The number of rows (`shape[0]`).
    public var rows: Int { shape[0] }
    /// Elements per row: the product of the trailing dimensions (1 for a 1-D array).
    public let rowWidth: Int
    /// Elements in the array.
    public var elementCount: Int { rows * rowWidth }
    /// Bytes of data (`elementCount × dtype.itemSize`).
    public var byteCount: Int { elementCount * dtype.itemSize }

    /// A header for writing `shape` as `dtype` in version 1.0, as `NPY.encodeHeader` lays it out.
    /// - Throws: `NPYError.badShape` naming `file` when `shape` is not `[N, ...]` rows (as
    ///   for reading).
    public init(dtype: DType, shape: [Int], file: String) throws(NPYError) {
      let width = try NPY.checkShape(shape, itemSize: dtype.itemSize, file: file)
      self.init(version: 1, dtype: dtype, shape: shape, dataOffset: NPY.encodeHeader(dtype: dtype, shape: shape).count,
                rowWidth: width)
    }

    init(version: Int, dtype: DType, shape: [Int], dataOffset: Int, rowWidth: Int) {
      self.version = version
      self.dtype = dtype
      self.shape = shape
      self.dataOffset = dataOffset
      self.rowWidth = rowWidth
    }
  }

  /// Parses and checks the header of a `.npy` file of `fileSize` bytes whose first bytes are
  /// `prefix`: at least `min(fileSize, NPY.maxPrefixLength)` of them (more are ignored). The
  /// header must describe exactly the bytes after it: `dataOffset + byteCount == fileSize`.
  /// `file` names the file in errors.
  /// - Throws: `NPYError`, one line naming `file`.
  public static func parseHeader(_ prefix: [UInt8], fileSize: Int, file: String) throws(NPYError) -> Header {
    precondition(prefix.count >= min(fileSize, maxPrefixLength), "NPY.parseHeader: prefix shorter than the header")
    let (version, start, length) = try readPreamble(prefix, fileSize: fileSize, file: file)
    let fields = try HeaderFields(prefix, start: start, end: start + length, version: version, file: file)
    let dtype = try self.dtype(descr: fields.descr, offset: fields.descrOffset, file: file)
    if fields.fortranOrder {
      throw .unsupported(
        file: file,
        detail: "the array is in Fortran order (fortran_order: True): save a C-order array "
          + "(np.save(path, np.ascontiguousarray(x)))")
    }
    let width = try checkShape(fields.shape, itemSize: dtype.itemSize, file: file)
    let header = Header(version: version, dtype: dtype, shape: fields.shape, dataOffset: start + length, rowWidth: width)
    try checkSize(header, fileSize: fileSize, file: file)
    return header
  }

  /// Checks magic and version and returns the major version, the offset of the header
  /// dictionary and its declared length, which lies within the file and within
  /// `maxHeaderLength`.
  private static func readPreamble(
    _ bytes: [UInt8], fileSize: Int, file: String
  ) throws(NPYError) -> (version: Int, start: Int, length: Int) {
    guard fileSize > 0 else { throw .empty(file: file) }
    let n = min(fileSize, magic.count)
    guard bytes[..<n].elementsEqual(magic[..<n]) else { throw .badMagic(file: file, found: Array(bytes.prefix(8))) }
    guard fileSize >= 8 else { throw .truncated(file: file, section: "header", offset: 0, expected: 10, actual: fileSize) }
    let (major, minor) = (bytes[6], bytes[7])
    guard minor == 0, (1...3).contains(major) else {
      throw .unsupportedVersion(file: file, major: major, minor: minor)
    }
    let lengthSize = major == 1 ? 2 : 4
    guard fileSize >= 8 + lengthSize else {
      throw .truncated(file: file, section: "header", offset: 0, expected: 8 + lengthSize, actual: fileSize)
    }
    var length = 0
    for i in (0..<lengthSize).reversed() { length = length << 8 | Int(bytes[8 + i]) }
    let start = 8 + lengthSize
    guard length <= maxHeaderLength else {
      throw .badHeader(
        file: file, offset: 8,
        detail: "header length \(length) exceeds \(maxHeaderLength) bytes (NumPy's own limit; a plain array's "
          + "header is about 128 bytes)")
    }
    guard fileSize - start >= length else {
      throw .truncated(file: file, section: "header", offset: start, expected: length, actual: fileSize - start)
    }
    return (Int(major), start, length)
  }

  /// The dtype `descr` names, or the refusal that says how to save the array instead.
  private static func dtype(descr: PyLiteral, offset: Int, file: String) throws(NPYError) -> DType {
    func refuse(_ detail: String) throws(NPYError) -> DType { throw .unsupported(file: file, detail: detail) }
    let asFloat32 = "save float32 (np.save(path, x.astype(np.float32))) or uint8"
    switch descr {
    case .string(let s):
      if ["|u1", "<u1", ">u1", "=u1", "u1"].contains(s) { return .uint8 }
      if s == "<f4" { return .float32 }
      let name = describe(descr: s)
      if name.hasSuffix("float32") {
        return try refuse("dtype '\(s)' (\(name)) is not supported: save little-endian float32 "
                          + "(np.save(path, x.astype('<f4')))")
      }
      return try refuse("dtype '\(s)' (\(name)) is not supported: \(asFloat32)")
    case .list:
      return try refuse(
        "structured dtype \(descr.python(limit: 60)) is not supported: save one plain array, e.g. np.save(path, "
          + "numpy.lib.recfunctions.structured_to_unstructured(x).astype(np.float32)), or uint8")
    case .tuple:
      return try refuse("subarray dtype \(descr.python(limit: 60)) is not supported: \(asFloat32)")
    default:
      throw .badHeader(file: file, offset: offset, detail: "'descr' must be a dtype string such as '<f4', found "
                       + descr.python())
    }
  }

  /// What a dtype string such as `'>f8'` means (`big-endian float64`), for refusals.
  static func describe(descr: String) -> String {
    var s = Substring(descr)
    var order = ""
    if let f = s.first, "<>|=".contains(f) {
      if f == ">" { order = "big-endian " }
      s = s.dropFirst()
    }
    guard let kind = s.first else { return "not a dtype" }
    // Bits per item, when the item size is a number whose bits fit an Int (a header may say '|O9223372036854775807').
    let itemBits = Int(s.dropFirst()).flatMap { n -> Int? in
      let (b, overflow) = n.multipliedReportingOverflow(by: 8)
      return overflow ? nil : b
    }
    let bits = itemBits.map(String.init) ?? ""
    switch kind {
    case "f": return order + (itemBits == nil ? "floating point" : "float" + bits)
    case "i": return order + "int" + bits
    case "u": return order + "uint" + bits
    case "c": return order + "complex" + bits
    case "b": return "bool"
    case "O": return "Python objects"
    case "S", "a": return "bytes strings"
    case "U": return "unicode strings"
    case "V": return "raw void records"
    case "M": return "datetime64"
    case "m": return "timedelta64"
    default: return "not a plain numeric dtype"
    }
  }

  /// Checks that `shape` is `[N, ...]` rows (1 to `maxDimensions` dimensions, N ≥ 1, every
  /// other dimension ≥ 1) whose bytes this platform can address; returns the row width.
  static func checkShape(_ shape: [Int], itemSize: Int, file: String) throws(NPYError) -> Int {
    func bad(_ detail: String) -> NPYError { .badShape(file: file, shape: python(shape: shape), detail: detail) }
    guard !shape.isEmpty else {
      throw bad("is a single value (a 0-d array): expected rows [N, ...], e.g. np.save(path, x.reshape(1, -1))")
    }
    guard shape.count <= maxDimensions else { throw bad("has \(shape.count) dimensions: at most \(maxDimensions)") }
    guard shape.allSatisfy({ $0 >= 0 }) else { throw bad("has a negative dimension") }
    guard shape[0] >= 1 else { throw bad("has no rows: expected at least one row") }
    guard shape.dropFirst().allSatisfy({ $0 >= 1 }) else { throw bad("has rows of width 0: every dimension must be ≥ 1") }
    var total = itemSize
    var width = 1
    for (i, d) in shape.enumerated() {
      let (t, overflow) = total.multipliedReportingOverflow(by: d)
      guard !overflow, t <= Int.max - maxPrefixLength else { throw bad("holds more bytes than this platform can address") }
      total = t
      if i > 0 { width *= d }
    }
    return width
  }

  /// `shape` as Python writes a tuple: `(3,)`, `(3, 4)`.
  static func python(shape: [Int]) -> String {
    "(" + shape.map(String.init).joined(separator: ", ") + (shape.count == 1 ? ",)" : ")")
  }

  /// The data must start aligned for its items and fill the rest of the file exactly.
  private static func checkSize(_ header: Header, fileSize: Int, file: String) throws(NPYError) {
    let size = header.dtype.itemSize
    guard header.dataOffset % size == 0 else {
      throw .unsupported(
        file: file, detail: "the data starts at byte offset \(header.dataOffset), not a multiple of \(size) "
          + "(\(header.dtype) items must be aligned): save the array again with np.save")
    }
    let available = fileSize - header.dataOffset
    if available < header.byteCount {
      throw .truncated(file: file, section: "data", offset: header.dataOffset, expected: header.byteCount,
                       actual: available)
    }
    if available > header.byteCount {
      throw .trailingBytes(file: file, offset: header.dataOffset + header.byteCount, extra: available - header.byteCount)
    }
  }

  /// `bytes` as a Python bytes literal body (`\x93NUMPY`), for messages.
  static func escaped(_ bytes: [UInt8]) -> String {
    var out = ""
    for b in bytes {
      if b >= 0x20 && b < 0x7F && b != UInt8(ascii: "\\") {
        out.append(Character(Unicode.Scalar(b)))
      } else {
        out += "\\x" + (b < 16 ? "0" : "") + String(b, radix: 16)
      }
    }
    return out.isEmpty ? "nothing" : out
  }
}

/// The three entries of a header dictionary, checked for presence and type.
private struct HeaderFields {
  let descr: PyLiteral
  let descrOffset: Int
  let fortranOrder: Bool
  let shape: [Int]

  init(_ bytes: [UInt8], start: Int, end: Int, version: Int, file: String) throws(NPYError) {
    var parser = PyDictParser(bytes: bytes, start: start, end: end, allowLongSuffix: version < 3, utf8: version == 3)
    let entries: [PyDictEntry]
    do {
      entries = try parser.parseDictionary()
    } catch {
      throw .badHeader(file: file, offset: error.offset, detail: error.detail)
    }
    var byKey: [String: PyDictEntry] = [:]
    for e in entries {
      guard ["descr", "fortran_order", "shape"].contains(e.key) else {
        throw .badHeader(file: file, offset: e.keyOffset, detail: "unexpected key '\(e.key.prefix(40))': expected "
                         + "exactly 'descr', 'fortran_order' and 'shape'")
      }
      guard byKey[e.key] == nil else { throw .badHeader(file: file, offset: e.keyOffset, detail: "key '\(e.key)' twice") }
      byKey[e.key] = e
    }
    guard let descr = byKey["descr"], let fortran = byKey["fortran_order"], let shape = byKey["shape"] else {
      let missing = ["descr", "fortran_order", "shape"].filter { byKey[$0] == nil }.map { "'\($0)'" }
      throw .badHeader(file: file, offset: start, detail: "the dictionary lacks " + missing.joined(separator: " and "))
    }
    guard case .bool(let f) = fortran.value else {
      throw .badHeader(file: file, offset: fortran.valueOffset,
                       detail: "'fortran_order' must be True or False, found \(fortran.value.python())")
    }
    self.descr = descr.value
    self.descrOffset = descr.valueOffset
    self.fortranOrder = f
    self.shape = try Self.dimensions(shape, file: file)
  }

  /// The shape tuple's integers; one that does not fit an `Int` is refused here.
  private static func dimensions(_ entry: PyDictEntry, file: String) throws(NPYError) -> [Int] {
    let wrong = NPYError.badHeader(
      file: file, offset: entry.valueOffset, detail: "'shape' must be a tuple of integers, found \(entry.value.python())")
    guard case .tuple(let items) = entry.value else { throw wrong }
    var dims: [Int] = []
    for item in items {
      guard case .int(let digits) = item else { throw wrong }
      guard let d = Int(digits) else {
        throw .badShape(file: file, shape: entry.value.python(), detail: "has a dimension too large for this platform")
      }
      dims.append(d)
    }
    return dims
  }
}
