import Foundation

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
  /// overlaps, gaps or trailing bytes.
  /// - Throws: `SafeTensorsError`, never traps.
  public static func decode(_ bytes: [UInt8], file: String) throws -> SafeTensorsFile {
    let (dict, keys, headerEnd) = try header(bytes, file: file)
    let metadata = try metadata(dict["__metadata__"], file: file)
    let dataSize = bytes.count - headerEnd
    var entries: [Entry] = []
    entries.reserveCapacity(keys.count)
    for (index, name) in keys.enumerated() where name != "__metadata__" {
      entries.append(try entry(name, dict[name] as Any, index: index, dataSize: dataSize, file: file))
    }
    try checkTiling(&entries, dataSize: dataSize, file: file)
    let tensors = entries.map { e in
      SafeTensor(
        name: e.name, dtype: e.dtype, shape: e.shape,
        bytes: Array(bytes[(headerEnd + e.begin)..<(headerEnd + e.end)]))
    }
    return SafeTensorsFile(tensors: tensors, metadata: metadata, file: file)
  }

  /// The header: its JSON object, its top-level keys in file order (no duplicates), and where
  /// the data block starts.
  fileprivate static func header(_ bytes: [UInt8], file: String) throws -> ([String: Any], [String], Int) {
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
    let object: Any
    do {
      object = try JSONSerialization.jsonObject(with: Data(header), options: [])
    } catch {
      let ns = error as NSError
      let detail = ns.userInfo[NSDebugDescriptionErrorKey] as? String ?? ns.localizedDescription
      throw SafeTensorsError.badHeaderJSON(file: file, detail: detail)
    }
    guard let dict = object as? [String: Any] else {
      throw SafeTensorsError.badHeaderJSON(file: file, detail: "expected a JSON object at top level")
    }
    // Header order of the keys (JSONSerialization forgets it) and duplicate detection.
    guard let keys = topLevelKeys(header) else {
      throw SafeTensorsError.badHeaderJSON(file: file, detail: "could not read the top-level keys")
    }
    var keySet = Set<String>()
    for k in keys where !keySet.insert(k).inserted {
      throw SafeTensorsError.badHeaderJSON(file: file, detail: "duplicate key \(quoted(k))")
    }
    guard keySet.count == dict.count, dict.keys.allSatisfy({ keySet.contains($0) }) else {
      throw SafeTensorsError.badHeaderJSON(file: file, detail: "inconsistent top-level keys")
    }
    return (dict, keys, headerEnd)
  }

  /// `__metadata__`: absent, null, or an object of strings.
  fileprivate static func metadata(_ meta: Any?, file: String) throws -> [String: String] {
    var metadata: [String: String] = [:]
    guard let meta, !(meta is NSNull) else { return metadata }
    guard let m = meta as? [String: Any] else {
      throw SafeTensorsError.badMetadata(
        file: file, key: "__metadata__", detail: "expected an object of string values, found \(jsonKind(meta))")
    }
    for key in m.keys.sorted() {
      guard let v = m[key], let s = v as? String else {
        throw SafeTensorsError.badMetadata(
          file: file, key: key, detail: "expected a string value, found \(jsonKind(m[key] as Any))")
      }
      metadata[key] = s
    }
    return metadata
  }

  /// One tensor entry: exactly dtype, shape and data_offsets, consistent with each other.
  fileprivate static func entry(_ name: String, _ value: Any, index: Int, dataSize: Int, file: String) throws -> Entry {
    guard let obj = value as? [String: Any] else {
      throw SafeTensorsError.badEntry(
        file: file, tensor: name, detail: "expected an object with dtype, shape, data_offsets, found \(jsonKind(value))")
    }
    for field in obj.keys.sorted() where !["dtype", "shape", "data_offsets"].contains(field) {
      throw SafeTensorsError.badEntry(
        file: file, tensor: name, detail: "unexpected field \(quoted(field)), expected only dtype, shape, data_offsets")
    }
    guard let tag = obj["dtype"] as? String else {
      throw SafeTensorsError.badEntry(file: file, tensor: name, detail: "dtype missing or not a string")
    }
    guard let dtype = DType(rawValue: tag) else {
      throw SafeTensorsError.unsupportedDtype(file: file, tensor: name, dtype: tag)
    }
    guard let shapeArray = obj["shape"] as? [Any] else {
      throw SafeTensorsError.badEntry(
        file: file, tensor: name, detail: "shape missing or not an array, expected a list of non-negative integers")
    }
    var shape: [Int] = []
    for d in shapeArray {
      guard let dim = nonNegativeInt(d) else {
        throw SafeTensorsError.badEntry(
          file: file, tensor: name, detail: "shape has \(jsonKind(d)), expected non-negative integers")
      }
      shape.append(dim)
    }
    guard let offsets = obj["data_offsets"] as? [Any], offsets.count == 2,
      let begin = nonNegativeInt(offsets[0]), let end = nonNegativeInt(offsets[1])
    else {
      throw SafeTensorsError.badEntry(
        file: file, tensor: name, detail: "data_offsets missing or malformed, expected [begin, end] non-negative integers")
    }
    guard begin <= end, end <= dataSize else {
      throw SafeTensorsError.offsetsOutOfRange(file: file, tensor: name, begin: begin, end: end, dataSize: dataSize)
    }
    guard let count = elementCount(shape) else {
      throw SafeTensorsError.badEntry(file: file, tensor: name, detail: "shape \(shape) has too many elements")
    }
    let (expected, overflow) = count.multipliedReportingOverflow(by: dtype.size)
    guard !overflow else {
      throw SafeTensorsError.badEntry(file: file, tensor: name, detail: "shape \(shape) has too many elements")
    }
    guard expected == end - begin else {
      throw SafeTensorsError.sizeMismatch(file: file, tensor: name, expectedBytes: expected, actualBytes: end - begin)
    }
    return Entry(name: name, index: index, dtype: dtype, shape: shape, begin: begin, end: end)
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

  /// A JSON integer ≥ 0 that fits in `Int`, or nil (for floats such as `2.0`, booleans, strings,
  /// negative or too large numbers).
  fileprivate static func nonNegativeInt(_ v: Any) -> Int? {
    guard let n = v as? NSNumber else { return nil }
    // Integers parse as i/q (signed) or Q (beyond Int64); booleans as "c", floats as "d".
    let kind = String(cString: n.objCType)
    guard ["i", "s", "l", "q", "I", "S", "L", "Q"].contains(kind) else { return nil }
    guard let i = n as? Int, i >= 0 else { return nil }
    return i
  }

  /// The JSON kind of a parsed value, for messages.
  fileprivate static func jsonKind(_ v: Any) -> String {
    if v is NSNull { return "null" }
    if v is String { return "a string" }
    if v is [Any] { return "an array" }
    if v is [String: Any] { return "an object" }
    if let n = v as? NSNumber {
      let kind = String(cString: n.objCType)
      if kind == "c" || kind == "B" { return "a boolean" }
      return "the number \(n)"
    }
    return "an unexpected value"
  }

  /// The keys of the top-level JSON object in `h`, in order (duplicates kept), or nil if `h` is
  /// not an object. `h` has already been validated by JSONSerialization; this only scans.
  fileprivate static func topLevelKeys(_ h: ArraySlice<UInt8>) -> [String]? {
    var scan = KeyScanner(h: h, i: h.startIndex)
    scan.skipSpace()
    guard scan.take("{") else { return nil }
    var keys: [String] = []
    scan.skipSpace()
    if scan.peek("}") { return keys }
    while true {
      scan.skipSpace()
      guard let key = scan.key() else { return nil }
      keys.append(key)
      scan.skipSpace()
      guard scan.take(":"), scan.skipValue() else { return nil }
      if scan.take("}") { return keys }
      guard scan.take(",") else { return nil }
    }
  }
}

/// A cursor over a JSON object's text that reads its keys and skips its values without
/// decoding them (JSONSerialization forgets key order and merges duplicates).
private struct KeyScanner {
  let h: ArraySlice<UInt8>
  var i: Int

  func peek(_ c: Unicode.Scalar) -> Bool { i < h.endIndex && h[i] == UInt8(ascii: c) }

  mutating func take(_ c: Unicode.Scalar) -> Bool {
    guard peek(c) else { return false }
    i += 1
    return true
  }

  mutating func skipSpace() {
    while i < h.endIndex, h[i] == 0x20 || h[i] == 0x09 || h[i] == 0x0A || h[i] == 0x0D { i += 1 }
  }

  /// From an opening quote at `at`, the index just past the closing quote.
  func stringEnd(_ at: Int) -> Int? {
    var j = at + 1
    while j < h.endIndex {
      if h[j] == UInt8(ascii: "\\") {
        j += 2
      } else if h[j] == UInt8(ascii: "\"") {
        return j + 1
      } else {
        j += 1
      }
    }
    return nil
  }

  /// A quoted key (escapes decoded by JSONSerialization when present).
  mutating func key() -> String? {
    guard peek("\""), let keyEnd = stringEnd(i) else { return nil }
    let token = h[i..<keyEnd]
    defer { i = keyEnd }
    guard token.contains(UInt8(ascii: "\\")) else { return String(decoding: h[(i + 1)..<(keyEnd - 1)], as: UTF8.self) }
    let wrapped = Data([UInt8(ascii: "[")] + token + [UInt8(ascii: "]")])
    return (try? JSONSerialization.jsonObject(with: wrapped, options: []) as? [String])?.first
  }

  /// Skips a value up to the ',' or '}' that ends it at depth 0 (left for the caller).
  mutating func skipValue() -> Bool {
    var depth = 0
    while i < h.endIndex {
      let c = h[i]
      if c == UInt8(ascii: "\"") {
        guard let next = stringEnd(i) else { return false }
        i = next
        continue
      }
      if c == UInt8(ascii: "{") || c == UInt8(ascii: "[") {
        depth += 1
      } else if c == UInt8(ascii: "}") || c == UInt8(ascii: "]") {
        if depth == 0 { return true }
        depth -= 1
      } else if c == UInt8(ascii: ","), depth == 0 {
        return true
      }
      i += 1
    }
    return false
  }
}
