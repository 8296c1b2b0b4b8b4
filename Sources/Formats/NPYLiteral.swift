/// A Python literal as `.npy` headers hold them: the part of `ast.literal_eval`'s language a
/// header needs (strings, decimal integers, `True`/`False`/`None`, tuples, lists).
indirect enum PyLiteral: Equatable {
  case string(String)
  /// A decimal integer as written (sign and digits, no `L` suffix).
  case int(String)
  case bool(Bool)
  case none
  case tuple([PyLiteral])
  case list([PyLiteral])

  /// The literal as Python's `repr` writes it, cut to about `limit` characters.
  func python(limit: Int = 80) -> String {
    let full: String
    switch self {
    case .string(let s): full = "'" + s + "'"
    case .int(let digits): full = digits
    case .bool(let b): full = b ? "True" : "False"
    case .none: full = "None"
    case .tuple(let items):
      full = "(" + items.map { $0.python(limit: limit) }.joined(separator: ", ") + (items.count == 1 ? ",)" : ")")
    case .list(let items): full = "[" + items.map { $0.python(limit: limit) }.joined(separator: ", ") + "]"
    }
    return full.count <= limit ? full : String(full.prefix(limit)) + "…"
  }
}

/// One `key: value` of a header dictionary, with the byte offsets of both in the file.
struct PyDictEntry {
  let key: String
  let keyOffset: Int
  let value: PyLiteral
  let valueOffset: Int
}

/// A syntax error in a header: the byte offset in the file and what was expected there.
struct PySyntaxError: Error {
  let offset: Int
  let detail: String
}

/// A strict recursive-descent parser of one Python dictionary literal over `bytes[start..<end]`
/// (offsets in errors are indices into `bytes`, i.e. file offsets). It accepts what NumPy
/// writes and what `ast.literal_eval` reads the same way, and refuses everything else:
/// expressions, comments, escapes in strings, floats, nesting deeper than `maxDepth`.
struct PyDictParser {
  private let bytes: [UInt8]
  private var pos: Int
  private let end: Int
  /// Python 2 wrote `3L`; NumPy still reads that in format versions 1.0 and 2.0.
  private let allowLongSuffix: Bool
  /// Format 3.0 headers are UTF-8; 1.0 and 2.0 are Latin-1.
  private let utf8: Bool
  static let maxDepth = 16

  init(bytes: [UInt8], start: Int, end: Int, allowLongSuffix: Bool, utf8: Bool) {
    self.bytes = bytes
    self.pos = start
    self.end = end
    self.allowLongSuffix = allowLongSuffix
    self.utf8 = utf8
  }

  /// The dictionary's entries in order; only whitespace may surround it.
  mutating func parseDictionary() throws(PySyntaxError) -> [PyDictEntry] {
    skipSpace()
    try expect(UInt8(ascii: "{"), "the header dictionary's '{'")
    var entries: [PyDictEntry] = []
    while true {
      skipSpace()
      if peek == UInt8(ascii: "}") { pos += 1; break }
      let keyOffset = pos
      guard peek == UInt8(ascii: "'") || peek == UInt8(ascii: "\"") else {
        throw fail(entries.isEmpty ? "a string key or '}'" : "a string key")
      }
      let key = try parseString()
      skipSpace()
      try expect(UInt8(ascii: ":"), "':' after the key '\(key)'")
      skipSpace()
      let valueOffset = pos
      let value = try parseValue(depth: 1)
      entries.append(PyDictEntry(key: key, keyOffset: keyOffset, value: value, valueOffset: valueOffset))
      skipSpace()
      if peek == UInt8(ascii: ",") { pos += 1; continue }
      try expect(UInt8(ascii: "}"), "',' or '}' after the value of '\(key)'")
      break
    }
    skipSpace()
    guard pos == end else { throw fail("only spaces and a newline after the dictionary's '}'") }
    return entries
  }

  private var peek: UInt8? { pos < end ? bytes[pos] : nil }

  private mutating func skipSpace() {
    while let c = peek, c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D || c == 0x0C { pos += 1 }
  }

  private mutating func expect(_ c: UInt8, _ what: String) throws(PySyntaxError) {
    guard peek == c else { throw fail(what) }
    pos += 1
  }

  /// "found X, expected `what`" at the current position.
  private func fail(_ what: String) -> PySyntaxError {
    PySyntaxError(offset: pos, detail: "found \(found(at: pos)), expected \(what)")
  }

  private func found(at i: Int) -> String {
    guard i < end else { return "the end of the header" }
    let c = bytes[i]
    if c >= 0x21 && c < 0x7F { return "'\(Character(Unicode.Scalar(c)))'" }
    return "byte 0x" + (c < 16 ? "0" : "") + String(c, radix: 16)
  }

  private mutating func parseValue(depth: Int) throws(PySyntaxError) -> PyLiteral {
    guard depth <= Self.maxDepth else {
      throw PySyntaxError(offset: pos, detail: "values nested more than \(Self.maxDepth) deep")
    }
    guard let c = peek else { throw fail("a value") }
    switch c {
    case UInt8(ascii: "'"), UInt8(ascii: "\""): return .string(try parseString())
    case UInt8(ascii: "("): return try parseSequence(close: UInt8(ascii: ")"), depth: depth)
    case UInt8(ascii: "["): return try parseSequence(close: UInt8(ascii: "]"), depth: depth)
    case UInt8(ascii: "-"), UInt8(ascii: "+"), UInt8(ascii: "0")...UInt8(ascii: "9"): return try parseInteger()
    default:
      if isIdentifierStart(c) { return try parseName() }
      throw fail("a value (a string, an integer, True, False, None, a tuple or a list)")
    }
  }

  /// A single- or double-quoted string without escapes, on one line.
  private mutating func parseString() throws(PySyntaxError) -> String {
    let quote = bytes[pos]
    let start = pos
    pos += 1
    let contentStart = pos
    while let c = peek, c != quote {
      if c == UInt8(ascii: "\\") {
        throw PySyntaxError(offset: pos, detail: "escape sequences in header strings are not supported")
      }
      if c == 0x0A || c == 0x0D { break }
      pos += 1
    }
    guard peek == quote else {
      throw PySyntaxError(offset: start, detail: "unterminated string starting here")
    }
    let content = bytes[contentStart..<pos]
    pos += 1
    if utf8 {
      guard let s = String(validating: content, as: UTF8.self) else {
        throw PySyntaxError(offset: start, detail: "string is not UTF-8 (format 3.0 headers are UTF-8)")
      }
      return s
    }
    return String(String.UnicodeScalarView(content.map { Unicode.Scalar($0) }))  // Latin-1
  }

  /// `(…)` or `[…]`: items separated by commas, an optional trailing comma. `(x)` without a
  /// comma is `x` itself, as in Python.
  private mutating func parseSequence(close: UInt8, depth: Int) throws(PySyntaxError) -> PyLiteral {
    pos += 1
    var items: [PyLiteral] = []
    var sawComma = false
    while true {
      skipSpace()
      if peek == close { pos += 1; break }
      items.append(try parseValue(depth: depth + 1))
      skipSpace()
      if peek == UInt8(ascii: ",") { pos += 1; sawComma = true; continue }
      guard peek == close else { throw fail("',' or '\(Character(Unicode.Scalar(close)))'") }
      pos += 1
      break
    }
    if close == UInt8(ascii: "]") { return .list(items) }
    return items.count == 1 && !sawComma ? items[0] : .tuple(items)
  }

  /// A decimal integer: an optional sign, `0` or digits not starting with 0, and (formats 1.0
  /// and 2.0) an optional `L`.
  private mutating func parseInteger() throws(PySyntaxError) -> PyLiteral {
    let start = pos
    var text = ""
    if let c = peek, c == UInt8(ascii: "-") || c == UInt8(ascii: "+") {
      if c == UInt8(ascii: "-") { text = "-" }
      pos += 1
    }
    let digitsStart = pos
    while let c = peek, c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") {
      text.append(Character(Unicode.Scalar(c)))
      pos += 1
    }
    guard pos > digitsStart else { throw fail("digits") }
    if pos - digitsStart > 1 && bytes[digitsStart] == UInt8(ascii: "0") {
      throw PySyntaxError(offset: start, detail: "integer with a leading zero")
    }
    if allowLongSuffix && peek == UInt8(ascii: "L") { pos += 1 }
    if let c = peek, isIdentifierStart(c) || c == UInt8(ascii: ".") || (c >= 0x30 && c <= 0x39) {
      throw fail("a decimal integer (no floats, no other bases)")
    }
    return .int(text)
  }

  private mutating func parseName() throws(PySyntaxError) -> PyLiteral {
    let start = pos
    while let c = peek, isIdentifierStart(c) || (c >= 0x30 && c <= 0x39) { pos += 1 }
    let name = String(decoding: bytes[start..<pos], as: UTF8.self)
    switch name {
    case "True": return .bool(true)
    case "False": return .bool(false)
    case "None": return .none
    default:
      throw PySyntaxError(
        offset: start, detail: "found the name '\(name.prefix(40))', expected True, False, None, a number or a string")
    }
  }

  private func isIdentifierStart(_ c: UInt8) -> Bool {
    (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
      || c == UInt8(ascii: "_")
  }
}
