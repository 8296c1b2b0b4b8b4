import Foundation
import TestSupport
import XCTest

@testable import Formats

/// The JSON writer of every JSON line (`JSONObject`) and the strict reader of safetensors
/// headers (`JSONReader`).
final class JSONTests: XCTestCase {
  private let awkward = ["a\"b", "back\\slash", "new\nline", "tab\t", "ctrl \u{01}\u{1F}", "ü 🎲 数", "", "\u{7F}\u{2028}"]

  private func parse(_ text: String) throws -> JSONReaderValue {
    let bytes = Array(text.utf8)
    return try bytes.withUnsafeBufferPointer { b throws in try JSONReader.parse(b) }
  }

  // MARK: Writing

  func testFieldsKeepTheirOrderAndSpacing() {
    let o: JSONObject = ["step": 3, "name": "x", "loss": 1.5, "ok": true, "none": nil, "xs": .numbers([1, 2.5])]
    XCTAssertEqual(o.line, #"{"step": 3, "name": "x", "loss": 1.5, "ok": true, "none": null, "xs": [1.0, 2.5]}"#)
    var p = JSONObject()
    p.append("z", .int(-1))
    p.append("a", .object(["inner": "v"]))
    XCTAssertEqual(p.line, #"{"z": -1, "a": {"inner": "v"}}"#)
  }

  func testStringsAreEscapedAsRFC8259Requires() throws {
    XCTAssertEqual(JSONObject([("k", .string("a\"b\\c\nd\u{01}"))]).line, #"{"k": "a\"b\\c\nd\u0001"}"#)
    // Every awkward string comes back from Python's json.loads unchanged, as key and as value.
    let o = JSONObject(awkward.enumerated().map { ("\($0.offset)" + $0.element, .string($0.element)) })
    let r = try Subprocess.python(
      "import json, sys; d = json.loads(sys.argv[1]); print(json.dumps([[k, v] for k, v in d.items()]))", [o.line])
    XCTAssertEqual(r.status, 0, r.stderr)
    let pairs = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String]], r.stdout)
    XCTAssertEqual(pairs.map { $0[0] }, awkward.enumerated().map { "\($0.offset)" + $0.element })
    XCTAssertEqual(pairs.map { $0[1] }, awkward)
  }

  func testNonFiniteNumbersAreNullWithTheReasonBeside() throws {
    let o: JSONObject = ["a": .number(.nan), "b": .number(.infinity), "c": .number(-.infinity), "d": 0.25,
                         "xs": .numbers([1, .nan, .infinity])]
    XCTAssertEqual(
      o.line,
      #"{"a": null, "a_nonfinite": "nan", "b": null, "b_nonfinite": "inf", "c": null, "c_nonfinite": "-inf", "#
        + #""d": 0.25, "xs": [1.0, null, null], "xs_nonfinite": {"1": "nan", "2": "inf"}}"#)
    let r = try Subprocess.python(
      "import json, sys; d = json.loads(sys.argv[1]); print(d['a'] is None, d['a_nonfinite'], d['xs'][1] is None)", [o.line])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines), "True nan True")
  }

  func testNumbersReadBackExactly() throws {
    let xs: [Double] = [0, -0.0, 1e-5, 0.1, 1 / 3, 5e-324, .greatestFiniteMagnitude, -123456789.125, 1e21]
    let back = try XCTUnwrap(
      try JSONSerialization.jsonObject(with: Data(JSONObject([("xs", .numbers(xs))]).line.utf8)) as? [String: [Double]])
    XCTAssertEqual(back["xs"]?.map(\.bitPattern), xs.map(\.bitPattern))
  }

  func testValuesFromJSONTextAreWrittenByTheSameWriter() {
    let texts = ["3", "-4", "0.5", "1e-05", "null", "true", #""a\"b""#, "[1, 2.5]", #"{"x": 1}"#, "not json", "1e400"]
    let o = JSONObject(texts.enumerated().map { ("k\($0.offset)", JSONValue(jsonText: $0.element)) })
    XCTAssertEqual(
      o.line,
      #"{"k0": 3, "k1": -4, "k2": 0.5, "k3": 1e-05, "k4": null, "k5": true, "k6": "a\"b", "k7": [1, 2.5], "#
        + #""k8": {"x": 1}, "k9": "not json", "k10": null, "k10_nonfinite": "inf"}"#)
  }

  // MARK: Reading

  func testReaderReadsWhatTheWriterWrites() throws {
    let o = JSONObject(awkward.map { ($0, .string($0)) } + [("n", 42), ("big", 1.5e300), ("neg", -7)])
    guard case .object(let members) = try parse(o.line) else { return XCTFail("not an object") }
    XCTAssertEqual(members.map(\.key), awkward + ["n", "big", "neg"])
    for m in members.prefix(awkward.count) {
      guard case .string(let s) = m.value else { return XCTFail("\(m.key): \(m.value.kind)") }
      XCTAssertEqual(s, m.key)
    }
    guard case .number("42", 42) = members[awkward.count].value,
      case .number("1.5e+300", nil) = members[awkward.count + 1].value,
      case .number("-7", nil) = members[awkward.count + 2].value
    else { return XCTFail("numbers: \(members.suffix(3).map(\.value.kind))") }
  }

  func testReaderEscapesAndIntegers() throws {
    guard case .string(let s) = try parse(#""\ud83c\udfb2 \u00fc \/ \b\f\n\r\t \"\\""#) else { return XCTFail() }
    XCTAssertEqual(s, "🎲 ü / \u{08}\u{0C}\n\r\t \"\\")
    let ints: [(String, Int?)] = [
      ("0", 0), ("-0", 0), ("17", 17), ("-1", nil), ("1.0", nil), ("1e2", nil), ("9223372036854775807", Int.max),
      ("9223372036854775808", nil), ("99999999999999999999999", nil),
    ]
    for (text, want) in ints {
      guard case .number(let t, let n) = try parse(text) else { return XCTFail(text) }
      XCTAssertEqual(t, text)
      XCTAssertEqual(n, want, text)
    }
  }

  func testReaderRefusesWhatRFC8259Refuses() {
    let bad = [
      "", "{", "{\"a\"}", "{\"a\":1,}", "[1,]", "01", "1.", ".5", "-", "1e", "+1", "tru", "nul", "\"\\x\"",
      "\"\\u12\"", "\"\\ud800\"", "\"\\udc00\"", "\"\\ud800\\u0041\"", "\"raw\nnewline\"", "\"open", "{} {}",
      "{'a':1}", "[1 2]", "NaN", "Infinity",
    ]
    for text in bad {
      XCTAssertThrowsError(try parse(text), text) { error in
        guard let e = error as? JSONReaderError else { return XCTFail("\(text): \(error)") }
        XCTAssertTrue((0...text.utf8.count).contains(e.offset), "\(text): offset \(e.offset)")
        XCTAssertFalse(e.description.contains("\n"), e.description)
      }
    }
  }

  func testDeepNestingIsAnErrorNotAStackOverflow() {
    let deep = String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
    XCTAssertThrowsError(try parse(deep)) { error in
      XCTAssertTrue((error as? JSONReaderError)?.detail.contains("nesting deeper than") ?? false, "\(error)")
    }
    XCTAssertNoThrow(try parse(String(repeating: "[", count: JSONReader.maxDepth) + String(repeating: "]", count: JSONReader.maxDepth)))
  }
}
