/// Decoding and validation of safetensors bytes (the encoder is in SafeTensors.swift).
extension SafeTensors {

  fileprivate struct Entry {
    var name: String
    var index: Int
    var dtype: DType
    var shape: [Int]
    var begin: Int
    var end: Int
  }

  /// Decodes and validates the bytes of a safetensors file; `file` names it in errors.
  ///
  /// Checks, in order: the 8-byte header length fits in the file (and is at most 100 MB); the
  /// header is UTF-8, starts with `{` and is a JSON object without duplicate keys;
  /// `__metadata__`, if present, is an object of strings (or null); every other entry is an
  /// object with exactly `dtype` (a supported tag), `shape` (non-negative integers) and
  /// `data_offsets` (two non-negative integers `begin ≤ end ≤` data block size) whose span
  /// equals shape product × dtype size; and the tensors tile the data block exactly, without
  /// overlaps, gaps or trailing bytes. Time and memory are linear in the file's size.
  /// - Throws: `SafeTensorsError`, never traps.
  public static func decode(_ bytes: [UInt8], file: String) throws -> SafeTensorsFile {
    let (members, headerEnd) = try header(bytes, file: file)
    var metadata: [String: String] = [:]
    let dataSize = bytes.count - headerEnd
    var entries: [Entry] = []
    entries.reserveCapacity(members.count)
    if let meta = members.first(where: { $0.key == "__metadata__" }) {
      metadata = try Self.metadata(meta.value, file: file)
    }
    for (index, member) in members.enumerated() where member.key != "__metadata__" {
      entries.append(try entry(member.key, member.value, index: index, dataSize: dataSize, file: file))
    }
    try checkTiling(&entries, dataSize: dataSize, file: file)
    let tensors = entries.map { e in
      SafeTensor(
        name: e.name, dtype: e.dtype, shape: e.shape,
        bytes: Array(bytes[(headerEnd + e.begin)..<(headerEnd + e.end)]))
    }
    return SafeTensorsFile(tensors: tensors, metadata: metadata, file: file)
  }

  /// The header's top-level members in file order (no duplicate keys), and where the data
  /// block starts.
  fileprivate static func header(
    _ bytes: [UInt8], file: String
  ) throws -> ([JSONReaderMember], Int) {
    guard bytes.count >= 8 else { throw SafeTensorsError.tooShort(file: file, size: bytes.count) }
    var length: UInt64 = 0
    for i in 0..<8 { length |= UInt64(bytes[i]) << (8 * UInt64(i)) }
    guard length <= UInt64(bytes.count - 8), length <= maxHeaderLength else {
      throw SafeTensorsError.headerLength(file: file, length: length, fileSize: bytes.count)
    }
    let headerEnd = 8 + Int(length)
    let header = bytes[8..<headerEnd]
    guard header.first == UInt8(ascii: "{") else {
      throw SafeTensorsError.badHeaderJSON(
        file: file, detail: header.isEmpty ? "header is empty, expected a JSON object" : "expected '{' at header start")
    }
    guard String(validating: header, as: UTF8.self) != nil else {
      throw SafeTensorsError.badHeaderJSON(file: file, detail: "header is not valid UTF-8")
    }
    let parsed: Result<JSONReaderValue, JSONReaderError> = header.withUnsafeBufferPointer { h in
      Result { () throws(JSONReaderError) in try JSONReader.parse(h) }
    }
    guard case .object(let members) = try parsed.mapError({ e in
      SafeTensorsError.badHeaderJSON(file: file, detail: "\(e.detail) at header byte \(e.offset)")
    }).get() else {
      throw SafeTensorsError.badHeaderJSON(file: file, detail: "expected a JSON object at top level")
    }
    var keys = Set<String>(minimumCapacity: members.count)
    for m in members where !keys.insert(m.key).inserted {
      throw SafeTensorsError.badHeaderJSON(file: file, detail: "duplicate key \(quoted(m.key))")
    }
    return (members, headerEnd)
  }

  /// `__metadata__`: null, or an object of strings (of a key given twice, the last value).
  fileprivate static func metadata(_ meta: JSONReaderValue, file: String) throws -> [String: String] {
    var metadata: [String: String] = [:]
    if case .null = meta { return metadata }
    guard case .object(let members) = meta else {
      throw SafeTensorsError.badMetadata(
        file: file, key: "__metadata__", detail: "expected an object of string values, found \(meta.kind)")
    }
    if let bad = members.filter({ if case .string = $0.value { false } else { true } }).min(by: { $0.key < $1.key }) {
      throw SafeTensorsError.badMetadata(file: file, key: bad.key, detail: "expected a string value, found \(bad.value.kind)")
    }
    for m in members {
      if case .string(let s) = m.value { metadata[m.key] = s }
    }
    return metadata
  }

  /// One tensor entry: exactly dtype, shape and data_offsets, consistent with each other.
  fileprivate static func entry(
    _ name: String, _ value: JSONReaderValue, index: Int, dataSize: Int, file: String
  ) throws -> Entry {
    func bad(_ detail: String) -> SafeTensorsError { .badEntry(file: file, tensor: name, detail: detail) }
    let fields = try entryFields(name, value, file: file)
    guard case .string(let tag)? = fields.dtype else { throw bad("dtype missing or not a string") }
    guard let dtype = DType(rawValue: tag) else {
      throw SafeTensorsError.unsupportedDtype(file: file, tensor: name, dtype: tag)
    }
    guard case .array(let shapeArray)? = fields.shape else {
      throw bad("shape missing or not an array, expected a list of non-negative integers")
    }
    var shape: [Int] = []
    shape.reserveCapacity(shapeArray.count)
    for d in shapeArray {
      guard case .number(_, let dim?) = d else { throw bad("shape has \(d.kind), expected non-negative integers") }
      shape.append(dim)
    }
    guard case .array(let offsets)? = fields.offsets, offsets.count == 2,
      case .number(_, let begin?) = offsets[0], case .number(_, let end?) = offsets[1]
    else {
      throw bad("data_offsets missing or malformed, expected [begin, end] non-negative integers")
    }
    guard begin <= end, end <= dataSize else {
      throw SafeTensorsError.offsetsOutOfRange(file: file, tensor: name, begin: begin, end: end, dataSize: dataSize)
    }
    guard let count = elementCount(shape), case let (expected, false) = count.multipliedReportingOverflow(by: dtype.size)
    else {
      throw bad("shape \(shape) has too many elements")
    }
    guard expected == end - begin else {
      throw SafeTensorsError.sizeMismatch(file: file, tensor: name, expectedBytes: expected, actualBytes: end - begin)
    }
    return Entry(name: name, index: index, dtype: dtype, shape: shape, begin: begin, end: end)
  }

  /// An entry's three fields: it must be an object with no other field and none twice.
  fileprivate static func entryFields(
    _ name: String, _ value: JSONReaderValue, file: String
  ) throws -> (dtype: JSONReaderValue?, shape: JSONReaderValue?, offsets: JSONReaderValue?) {
    guard case .object(let members) = value else {
      throw SafeTensorsError.badEntry(
        file: file, tensor: name, detail: "expected an object with dtype, shape, data_offsets, found \(value.kind)")
    }
    var fields: (dtype: JSONReaderValue?, shape: JSONReaderValue?, offsets: JSONReaderValue?) = (nil, nil, nil)
    var unexpected: [String] = []
    var twice: String?
    for m in members {
      switch m.key {
      case "dtype": if fields.dtype == nil { fields.dtype = m.value } else { twice = twice ?? m.key }
      case "shape": if fields.shape == nil { fields.shape = m.value } else { twice = twice ?? m.key }
      case "data_offsets": if fields.offsets == nil { fields.offsets = m.value } else { twice = twice ?? m.key }
      default: unexpected.append(m.key)
      }
    }
    if let field = unexpected.min() {
      throw SafeTensorsError.badEntry(
        file: file, tensor: name, detail: "unexpected field \(quoted(field)), expected only dtype, shape, data_offsets")
    }
    if let field = twice {
      throw SafeTensorsError.badEntry(file: file, tensor: name, detail: "field \(quoted(field)) given twice, expected it once")
    }
    return fields
  }

  /// The tensors must tile the data block: sorted by position, each starts where the last ended.
  fileprivate static func checkTiling(_ entries: inout [Entry], dataSize: Int, file: String) throws {
    entries.sort { ($0.begin, $0.end, $0.index) < ($1.begin, $1.end, $1.index) }
    var cursor = 0
    var last: Entry? = nil
    for e in entries {
      if e.begin < cursor {
        throw SafeTensorsError.overlapping(
          file: file, tensor: e.name, other: last?.name ?? "", begin: e.begin, otherEnd: cursor)
      }
      if e.begin > cursor {
        throw SafeTensorsError.uncoveredData(file: file, begin: cursor, end: e.begin)
      }
      cursor = e.end
      last = e
    }
    if cursor != dataSize {
      throw SafeTensorsError.uncoveredData(file: file, begin: cursor, end: dataSize)
    }
  }
}
