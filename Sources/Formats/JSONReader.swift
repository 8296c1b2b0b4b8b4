// A strict JSON reader (RFC 8259) for the safetensors header: one pass over the bytes, objects
// kept as key–value lists in file order (duplicates kept, for the caller to judge), numbers kept
// as their text plus their value when they are a non-negative integer that fits in `Int`.
// Errors name the byte offset; nesting is bounded, so no input can exhaust the stack.

/// A parsed JSON value.
enum JSONReaderValue {
  case null
  case bool(Bool)
  /// A number: its text as written, and its value when it is an integer ≥ 0 (no fraction, no
  /// exponent) that fits in `Int` (`-0` is 0).
  case number(text: String, nonNegativeInt: Int?)
  case string(String)
  case array([JSONReaderValue])
  /// An object's members in file order, duplicates kept.
  case object([JSONReaderMember])

  /// What kind of value this is, for messages: `null`, `a string`, `the number 1.5`, …
  var kind: String {
    switch self {
    case .null: "null"
    case .bool: "a boolean"
    case .number(let text, _): "the number \(text)"
    case .string: "a string"
    case .array: "an array"
    case .object: "an object"
    }
  }
}

/// One key and value of an object.
struct JSONReaderMember {
  let key: String
  let value: JSONReaderValue
}

/// Why the text is not JSON: the byte offset (from the start of the text) and what was expected.
struct JSONReaderError: Error {
  let offset: Int
  let detail: String
  /// `<detail> at byte <offset>`.
  var description: String { "\(detail) at byte \(offset)" }
}

/// The parser: a cursor over UTF-8 bytes (validated by the caller).
struct JSONReader {
  /// The deepest nesting of arrays and objects accepted (a safetensors header needs 3).
  static let maxDepth = 64

  private let text: UnsafeBufferPointer<UInt8>
  private var i = 0

  private init(_ text: UnsafeBufferPointer<UInt8>) { self.text = text }

  /// The one JSON value that `text` holds, with only whitespace around it.
  static func parse(_ text: UnsafeBufferPointer<UInt8>) throws(JSONReaderError) -> JSONReaderValue {
    var r = JSONReader(text)
    r.skipSpace()
    let v = try r.value(depth: 0)
    r.skipSpace()
    guard r.i == text.count else { throw r.unexpected("the end of the text after the value") }
    return v
  }

  // MARK: Values

  private mutating func value(depth: Int) throws(JSONReaderError) -> JSONReaderValue {
    guard i < text.count else { throw unexpected("a value") }
    switch text[i] {
    case UInt8(ascii: "{"): return try object(depth: depth + 1)
    case UInt8(ascii: "["): return try array(depth: depth + 1)
    case UInt8(ascii: "\""): return .string(try string())
    case UInt8(ascii: "t"): try literal("true"); return .bool(true)
    case UInt8(ascii: "f"): try literal("false"); return .bool(false)
    case UInt8(ascii: "n"): try literal("null"); return .null
    case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try number()
    default: throw unexpected("a value")
    }
  }

  private mutating func object(depth: Int) throws(JSONReaderError) -> JSONReaderValue {
    var members: [JSONReaderMember] = []
    try items(depth: depth, close: "}", in: "object") { (r: inout JSONReader) throws(JSONReaderError) in
      guard r.i < r.text.count, r.text[r.i] == UInt8(ascii: "\"") else { throw r.unexpected("a string key") }
      let key = try r.string()
      r.skipSpace()
      guard r.take(":") else { throw r.unexpected("':' after the key") }
      r.skipSpace()
      members.append(JSONReaderMember(key: key, value: try r.value(depth: depth)))
    }
    return .object(members)
  }

  private mutating func array(depth: Int) throws(JSONReaderError) -> JSONReaderValue {
    var elements: [JSONReaderValue] = []
    try items(depth: depth, close: "]", in: "array") { (r: inout JSONReader) throws(JSONReaderError) in
      elements.append(try r.value(depth: depth))
    }
    return .array(elements)
  }

  /// An object's or array's items, from its opening bracket past `close`: each read by `item`,
  /// with commas between them.
  private mutating func items(
    depth: Int, close: Unicode.Scalar, in what: String, _ item: (inout JSONReader) throws(JSONReaderError) -> Void
  ) throws(JSONReaderError) {
    guard depth <= Self.maxDepth else { throw JSONReaderError(offset: i, detail: "nesting deeper than \(Self.maxDepth) levels") }
    i += 1
    skipSpace()
    if take(close) { return }
    while true {
      skipSpace()
      try item(&self)
      skipSpace()
      if take(close) { return }
      guard take(",") else { throw unexpected("',' or '\(close)' in the \(what)") }
    }
  }

  private mutating func literal(_ word: StaticString) throws(JSONReaderError) {
    let n = word.utf8CodeUnitCount
    guard i + n <= text.count, (0..<n).allSatisfy({ text[i + $0] == word.utf8Start[$0] }) else {
      throw unexpected("a value")
    }
    i += n
  }

  /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
  private mutating func number() throws(JSONReaderError) -> JSONReaderValue {
    let start = i
    let negative = take("-")
    guard i < text.count, isDigit(text[i]) else { throw unexpected("a digit") }
    var value = 0
    var fits = true
    if text[i] == UInt8(ascii: "0") {
      i += 1
    } else {
      while i < text.count, isDigit(text[i]) {
        let (times10, o1) = value.multipliedReportingOverflow(by: 10)
        let (next, o2) = times10.addingReportingOverflow(Int(text[i] - UInt8(ascii: "0")))
        if o1 || o2 { fits = false }
        value = next
        i += 1
      }
    }
    var integer = true
    if take(".") {
      integer = false
      try digits()
    }
    if i < text.count, text[i] == UInt8(ascii: "e") || text[i] == UInt8(ascii: "E") {
      integer = false
      i += 1
      if !take("+") { _ = take("-") }
      try digits()
    }
    let literal = String(decoding: UnsafeBufferPointer(rebasing: text[start..<i]), as: UTF8.self)
    let ok = integer && fits && (!negative || value == 0)
    return .number(text: literal, nonNegativeInt: ok ? value : nil)
  }

  private mutating func digits() throws(JSONReaderError) {
    guard i < text.count, isDigit(text[i]) else { throw unexpected("a digit") }
    while i < text.count, isDigit(text[i]) { i += 1 }
  }

  // MARK: Strings

  /// A string from its opening quote; escapes decoded, raw control characters refused.
  private mutating func string() throws(JSONReaderError) -> String {
    i += 1
    let start = i
    while i < text.count {
      let c = text[i]
      if c == UInt8(ascii: "\"") {
        defer { i += 1 }
        return String(decoding: UnsafeBufferPointer(rebasing: text[start..<i]), as: UTF8.self)
      }
      if c == UInt8(ascii: "\\") { return try escapedString(from: start) }
      if c < 0x20 { throw JSONReaderError(offset: i, detail: "control character 0x\(hex(c)) in a string, expected it escaped") }
      i += 1
    }
    throw unexpected("'\"' to end the string")
  }

  /// The rest of a string that holds an escape; `start` is just past its opening quote.
  private mutating func escapedString(from start: Int) throws(JSONReaderError) -> String {
    var bytes = Array(UnsafeBufferPointer(rebasing: text[start..<i]))
    while i < text.count {
      let c = text[i]
      if c == UInt8(ascii: "\"") {
        i += 1
        return String(decoding: bytes, as: UTF8.self)
      }
      if c < 0x20 { throw JSONReaderError(offset: i, detail: "control character 0x\(hex(c)) in a string, expected it escaped") }
      if c != UInt8(ascii: "\\") {
        bytes.append(c)
        i += 1
        continue
      }
      try escape(into: &bytes)
    }
    throw unexpected("'\"' to end the string")
  }

  /// One escape sequence from its backslash, appended as UTF-8.
  private mutating func escape(into bytes: inout [UInt8]) throws(JSONReaderError) {
    let at = i
    i += 1
    guard i < text.count else { throw unexpected("an escape character") }
    let c = text[i]
    i += 1
    switch c {
    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): bytes.append(c)
    case UInt8(ascii: "b"): bytes.append(0x08)
    case UInt8(ascii: "f"): bytes.append(0x0C)
    case UInt8(ascii: "n"): bytes.append(0x0A)
    case UInt8(ascii: "r"): bytes.append(0x0D)
    case UInt8(ascii: "t"): bytes.append(0x09)
    case UInt8(ascii: "u"): try unicodeEscape(at: at, into: &bytes)
    default:
      throw JSONReaderError(offset: at, detail: "invalid escape, expected one of \\\" \\\\ \\/ \\b \\f \\n \\r \\t \\uXXXX")
    }
  }

  /// `\uXXXX` (a surrogate pair as two of them) after its `u`, appended as UTF-8.
  private mutating func unicodeEscape(at: Int, into bytes: inout [UInt8]) throws(JSONReaderError) {
    var scalar = try hex4()
    if (0xD800..<0xDC00).contains(scalar) {
      guard take("\\"), take("u") else {
        throw JSONReaderError(offset: at, detail: "\\u escape of a high surrogate without its low surrogate")
      }
      let low = try hex4()
      guard (0xDC00..<0xE000).contains(low) else {
        throw JSONReaderError(offset: at, detail: "\\u escape of a high surrogate without its low surrogate")
      }
      scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
    } else if (0xDC00..<0xE000).contains(scalar) {
      throw JSONReaderError(offset: at, detail: "\\u escape of a low surrogate without its high surrogate")
    }
    // Not a lone surrogate and at most 0x10FFFF here, so always a scalar.
    if let u = Unicode.Scalar(scalar) { UTF8.encode(u) { bytes.append($0) } }
  }

  private mutating func hex4() throws(JSONReaderError) -> UInt32 {
    guard i + 4 <= text.count else { throw unexpected("four hex digits") }
    var v: UInt32 = 0
    for _ in 0..<4 {
      let c = text[i]
      let d: UInt8
      switch c {
      case UInt8(ascii: "0")...UInt8(ascii: "9"): d = c - UInt8(ascii: "0")
      case UInt8(ascii: "a")...UInt8(ascii: "f"): d = c - UInt8(ascii: "a") + 10
      case UInt8(ascii: "A")...UInt8(ascii: "F"): d = c - UInt8(ascii: "A") + 10
      default: throw unexpected("four hex digits")
      }
      v = v << 4 | UInt32(d)
      i += 1
    }
    return v
  }

  // MARK: Bytes

  private mutating func skipSpace() {
    while i < text.count {
      let c = text[i]
      guard c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 else { return }
      i += 1
    }
  }

  private mutating func take(_ c: Unicode.Scalar) -> Bool {
    guard i < text.count, text[i] == UInt8(ascii: c) else { return false }
    i += 1
    return true
  }

  private func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }

  private func hex(_ c: UInt8) -> String {
    let s = String(c, radix: 16, uppercase: true)
    return c < 16 ? "0" + s : s
  }

  /// "unexpected <what is here>, expected <what>" at the cursor.
  private func unexpected(_ expected: String) -> JSONReaderError {
    guard i < text.count else { return JSONReaderError(offset: i, detail: "unexpected end of text, expected \(expected)") }
    let c = text[i]
    let found = (0x21..<0x7F).contains(c) ? "'\(Character(Unicode.Scalar(c)))'" : "byte 0x\(hex(c))"
    return JSONReaderError(offset: i, detail: "unexpected \(found), expected \(expected)")
  }
}
