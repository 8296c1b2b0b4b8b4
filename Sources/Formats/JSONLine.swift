// The one JSON writer for every JSON line the package prints or appends (`--json` output,
// metrics.jsonl): objects keep the order their fields were added in, strings are escaped as
// RFC 8259 requires, and a number that is not finite is written as null with a note beside it.

/// A value to write as JSON.
public enum JSONValue: Sendable, Equatable {
  case null
  case bool(Bool)
  case int(Int)
  /// A number; NaN and ±infinity are written as `null` (see `JSONObject.line`).
  case number(Double)
  case string(String)
  case array([JSONValue])
  case object(JSONObject)

  /// An array of numbers.
  public static func numbers(_ xs: [Double]) -> JSONValue { .array(xs.map(JSONValue.number)) }

  /// The value that the JSON text `text` holds (`3`, `-0.5`, `null`, `"stopped"`, `[1, 2]`, …);
  /// text that is not JSON becomes that string. Integers that fit in `Int` stay integers.
  public init(jsonText text: String) {
    let bytes = Array(text.utf8)
    let parsed = bytes.withUnsafeBufferPointer { b in try? JSONReader.parse(b) }
    self = parsed.map(JSONValue.init(parsed:)) ?? .string(text)
  }

  private init(parsed v: JSONReaderValue) {
    switch v {
    case .null: self = .null
    case .bool(let b): self = .bool(b)
    case .number(let text, _): self = Int(text).map(JSONValue.int) ?? .number(Double(text) ?? .nan)
    case .string(let s): self = .string(s)
    case .array(let a): self = .array(a.map(JSONValue.init(parsed:)))
    case .object(let members): self = .object(JSONObject(members.map { ($0.key, JSONValue(parsed: $0.value)) }))
    }
  }
}

extension JSONValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
  ExpressibleByBooleanLiteral, ExpressibleByNilLiteral
{
  public init(stringLiteral value: String) { self = .string(value) }
  public init(integerLiteral value: Int) { self = .int(value) }
  public init(floatLiteral value: Double) { self = .number(value) }
  public init(booleanLiteral value: Bool) { self = .bool(value) }
  public init(nilLiteral: ()) { self = .null }
}

/// A JSON object whose fields keep the order they were added in; `line` is its text.
///
/// Non-finite numbers: JSON has no NaN or infinity, so a field `k` whose number is not finite is
/// written `"k": null` followed by `"k_nonfinite": "nan"` (or `"inf"`, `"-inf"`); an array field
/// `k` with such elements gets `null` in their places and `"k_nonfinite": {"<index>": "nan", …}`.
/// A reader that ignores the `_nonfinite` fields sees plain nulls. (Keys ending in `_nonfinite`
/// are left to this convention.)
public struct JSONObject: Sendable, Equatable, ExpressibleByDictionaryLiteral {
  /// One field: its key and value.
  public struct Field: Sendable, Equatable {
    public var key: String
    public var value: JSONValue
  }

  /// The fields in the order they were added (a key added twice is written twice).
  public private(set) var fields: [Field] = []

  /// An empty object.
  public init() {}

  /// An object of these fields, in this order.
  public init(_ fields: [(String, JSONValue)]) {
    self.fields = fields.map { Field(key: $0.0, value: $0.1) }
  }

  /// An object of the literal's fields, in the literal's order.
  public init(dictionaryLiteral elements: (String, JSONValue)...) { self.init(elements) }

  /// Adds a field at the end.
  public mutating func append(_ key: String, _ value: JSONValue) { fields.append(Field(key: key, value: value)) }

  /// Adds fields at the end, in order.
  public mutating func append(contentsOf other: JSONObject) { fields += other.fields }

  /// The object as one line of JSON text without a newline: `{"key": value, "key2": value2}`.
  public var line: String {
    var out: [UInt8] = []
    JSONText.append(self, to: &out)
    return String(decoding: out, as: UTF8.self)
  }
}

/// Writing JSON text as UTF-8 bytes (also the safetensors header's strings).
enum JSONText {
  static func append(_ object: JSONObject, to out: inout [UInt8]) {
    out.append(UInt8(ascii: "{"))
    var first = true
    func field(_ key: String, _ write: (inout [UInt8]) -> Void) {
      if !first { out += Array(", ".utf8) }
      first = false
      appendString(key, to: &out)
      out += Array(": ".utf8)
      write(&out)
    }
    for f in object.fields {
      field(f.key) { append(f.value, to: &$0) }
      if let note = nonFiniteNote(f.value) { field(f.key + "_nonfinite") { append(note, to: &$0) } }
    }
    out.append(UInt8(ascii: "}"))
  }

  /// What `_nonfinite` says about a value: the kind of a non-finite number, the kinds of an
  /// array's non-finite numbers by index, or nil when there is nothing to say.
  static func nonFiniteNote(_ v: JSONValue) -> JSONValue? {
    switch v {
    case .number(let x) where !x.isFinite:
      return .string(kind(x))
    case .array(let elements):
      var note = JSONObject()
      for (i, e) in elements.enumerated() {
        if case .number(let x) = e, !x.isFinite { note.append(String(i), .string(kind(x))) }
      }
      return note.fields.isEmpty ? nil : .object(note)
    default:
      return nil
    }
  }

  private static func kind(_ x: Double) -> String { x.isNaN ? "nan" : x > 0 ? "inf" : "-inf" }

  static func append(_ v: JSONValue, to out: inout [UInt8]) {
    switch v {
    case .null: out += Array("null".utf8)
    case .bool(let b): out += Array((b ? "true" : "false").utf8)
    case .int(let i): out += Array(String(i).utf8)
    case .number(let x): out += Array((x.isFinite ? "\(x)" : "null").utf8)
    case .string(let s): appendString(s, to: &out)
    case .object(let o): append(o, to: &out)
    case .array(let elements):
      out.append(UInt8(ascii: "["))
      for (i, e) in elements.enumerated() {
        if i > 0 { out += Array(", ".utf8) }
        append(e, to: &out)
      }
      out.append(UInt8(ascii: "]"))
    }
  }

  /// Appends `s` as a JSON string literal: `"` and `\` escaped, control characters as `\n`,
  /// `\t`, … or `\u00XX`; everything else as raw UTF-8 (as serde_json writes it).
  static func appendString(_ s: String, to out: inout [UInt8]) {
    let hex = Array("0123456789abcdef".utf8)
    out.append(UInt8(ascii: "\""))
    for b in s.utf8 {
      switch b {
      case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
      case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
      case 0x08: out += [UInt8(ascii: "\\"), UInt8(ascii: "b")]
      case 0x0C: out += [UInt8(ascii: "\\"), UInt8(ascii: "f")]
      case 0x0A: out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
      case 0x0D: out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
      case 0x09: out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
      case 0..<0x20: out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"), hex[Int(b >> 4)], hex[Int(b & 0xF)]]
      default: out.append(b)
      }
    }
    out.append(UInt8(ascii: "\""))
  }
}
