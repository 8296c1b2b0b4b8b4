import Foundation
import VAE
import VAEData

/// A value of one config key, as read from YAML or JSON or from a `RunConfig`.
public enum ConfigValue: Sendable, Equatable {
  case int(Int)
  case float(Float)
  case string(String)
  case ints([Int])
  /// A layer list, parsed once (written out in `LayerDecl`'s canonical text).
  case layers([LayerDecl])

  /// YAML text (`config.yaml`): lists as `[500, 500]`.
  var yaml: String {
    switch self {
    case .int(let i): "\(i)"
    case .float(let f): "\(f)"
    case .string(let s): s
    case .ints(let a): "[" + a.map(String.init).joined(separator: ", ") + "]"
    case .layers(let a): "[" + a.map(\.description).joined(separator: ", ") + "]"
    }
  }

  /// JSON text (checkpoint metadata): lists as `[500,500]`, strings quoted.
  var json: String {
    switch self {
    case .int(let i): "\(i)"
    case .float(let f): "\(f)"
    case .string(let s): "\"\(s)\""
    case .ints(let a): "[" + a.map(String.init).joined(separator: ",") + "]"
    case .layers(let a): "[" + a.map { "\"\($0.description)\"" }.joined(separator: ",") + "]"
    }
  }
}

/// What a key accepts. `check` turns a parsed YAML/JSON value into a `ConfigValue`, or returns
/// nil; `expected` says what was expected in an error message.
public enum ConfigRule: Sendable {
  case int(ClosedRange<Int>)
  case positive
  case nonNegative
  /// [0, 1)
  case unitInterval
  case choice([String])
  /// Layer sizes, each 1…100000.
  case layers
  /// true or false.
  case bool
  /// A file path: one line of text.
  case path
  /// A number > 0 or the word `learned`.
  case positiveOrLearned
  /// A list of layers, each a `LayerDecl` text such as `conv 32 k4 s2 p1`.
  case layerList

  public var expected: String {
    switch self {
    case .int(let r):
      "an integer from \(r.lowerBound) to \(r.upperBound == Int.max ? "∞" : String(r.upperBound))"
    case .positive: "a number > 0 that a 32-bit float holds (1.2e-38 to 3.4e38)"
    case .nonNegative: "0 or a number that a 32-bit float holds (1.2e-38 to 3.4e38)"
    case .unitInterval: "a number in [0, 1) as a 32-bit float (at most 0.99999994)"
    case .choice(let a): "one of \(a.joined(separator: ", "))"
    case .layers: "a list of layer sizes from 1 to 100000, e.g. [500, 500]"
    case .bool: "true or false"
    case .path: "a file path on one line"
    case .positiveOrLearned: "learned, or a number > 0 that a 32-bit float holds"
    case .layerList: ConfigRule.layerListExpected
    }
  }

  /// What the key accepts in a few words, for the key reference (`expected` is the full form).
  public var summary: String {
    switch self {
    case .int(let r) where r.upperBound == Int.max: "integer ≥ \(r.lowerBound)"
    case .int(let r): "integer \(r.lowerBound)…\(r.upperBound)"
    case .positive: "number > 0"
    case .nonNegative: "number ≥ 0"
    case .unitInterval: "number in [0, 1)"
    case .choice(let a): a.joined(separator: ", ")
    case .layers: "list of sizes 1…100000"
    case .bool: "true, false"
    case .path: "file path"
    case .positiveOrLearned: "number > 0, learned"
    case .layerList: "list of layers: dense N, conv C kK sS pP, deconv C kK sS pP opO, flatten, reshape CxHxW (+ activation)"
    }
  }

  /// A value given as text (a command-line flag): integers and numbers as written, a list as
  /// `500,500` or `[500, 500]`, names as they are.
  public func check(text: String) -> ConfigValue? {
    switch self {
    case .int: return Int(text).flatMap { check($0) }
    case .layers:
      var t = Substring(text.trimmingCharacters(in: .whitespaces))
      if t.hasPrefix("["), t.hasSuffix("]") { t = t.dropFirst().dropLast() }
      let parts = t.split(separator: ",", omittingEmptySubsequences: false)
      let sizes = parts.compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
      return sizes.count == parts.count ? check(sizes) : nil
    case .positive, .nonNegative, .unitInterval, .choice, .bool, .path, .positiveOrLearned: return check(text)
    case .layerList:
      var t = Substring(text.trimmingCharacters(in: .whitespaces))
      if t.hasPrefix("["), t.hasSuffix("]") { t = t.dropFirst().dropLast() }
      return check(t.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) as Any })
    }
  }

  public func check(_ v: Any) -> ConfigValue? {
    switch self {
    case .int(let r):
      guard let i = Self.integer(v), r.contains(i) else { return nil }
      return .int(i)
    case .positive, .nonNegative, .unitInterval:
      // Checked as the Float it is stored as: 1e300 would be inf, 1e-50 zero, 0.9999999999 one.
      // Subnormal Floats (below 1.2e-38) are refused too: training flushes them to zero, and
      // whether Float(x) and a comparison see them depends on the thread's flush-to-zero mode
      // (so a check would depend on whether training had run on the thread before).
      guard let x = Self.number(v), x == 0 || abs(x) >= Double(Float.leastNormalMagnitude),
        case let f = Float(x), f.isFinite
      else { return nil }
      switch self {
      case .positive: guard f > 0 else { return nil }
      case .nonNegative: guard f >= 0 else { return nil }
      default: guard f >= 0 && f < 1 else { return nil }
      }
      return .float(f)
    case .choice(let allowed):
      guard let s = v as? String, allowed.contains(s) else { return nil }
      return .string(s)
    case .positiveOrLearned:
      if let s = v as? String, s == "learned" { return .string(s) }
      return ConfigRule.positive.check(v)
    case .path:
      guard let s = v as? String, !s.isEmpty, s.utf8.count <= 4096,
        !s.unicodeScalars.contains(where: { $0.value < 0x20 || $0 == "\u{FEFF}" || $0 == "\u{85}" || $0 == "\u{2028}" || $0 == "\u{2029}" })
      else { return nil }
      return .string(s)
    case .bool:
      if let b = v as? Bool { return .string(b ? "true" : "false") }
      guard let s = v as? String, ["true", "false"].contains(s) else { return nil }
      return .string(s)
    case .layers:
      guard let a = v as? [Any] else { return nil }
      var out: [Int] = []
      for e in a {
        guard let i = Self.integer(e), (1...100_000).contains(i) else { return nil }
        out.append(i)
      }
      return .ints(out)
    case .layerList:
      guard let a = v as? [Any], !a.isEmpty, a.count <= 1000 else { return nil }
      var out: [LayerDecl] = []
      for e in a {
        guard let s = e as? String, let d = try? LayerDecl(parsing: s) else { return nil }
        out.append(d)
      }
      return .layers(out)
    }
  }

  static let layerListExpected =
    "a list of layers such as [conv 32 k4 s2 p1, flatten, dense 256]: dense N, conv C kK sS pP, "
    + "deconv C kK sS pP opO, flatten or reshape CxHxW, each with an optional activation last "
    + "(relu, leaky_relu, elu, tanh, softplus, none)"

  /// Whole numbers from YAML (Int) or JSON (NSNumber holding an integer); never Bool.
  static func integer(_ v: Any) -> Int? {
    if type(of: v) == Bool.self { return nil }  // YAML's true/false (an NSNumber 1 would also cast to Bool)
    if let i = v as? Int { return i }
    if let n = v as? NSNumber { return Int(exactly: n.doubleValue) }
    return nil
  }

  /// Numbers; YAML 1.1 reads `1e-3` (no dot) as a string, so numeric strings count too.
  static func number(_ v: Any) -> Double? {
    if type(of: v) == Bool.self { return nil }
    if let i = v as? Int { return Double(i) }
    if let d = v as? Double { return d }
    if let n = v as? NSNumber { return n.doubleValue }
    if let s = v as? String { return Double(s.trimmingCharacters(in: .whitespaces)) }
    return nil
  }
}
