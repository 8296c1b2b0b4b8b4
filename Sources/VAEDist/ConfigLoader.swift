import Formats
import Foundation
import VAE
import VAEData
import Yams

/// A config or flag problem, printed as one line.
public struct ConfigError: Error, CustomStringConvertible {
  public let description: String
  public init(_ d: String) { description = d }
}

/// Reads `configs/*.yaml` into a `RunConfig`, strictly: unknown keys, wrong types and
/// out-of-range values are one-line errors naming the file and the key. What the keys are,
/// their rules and defaults is `ConfigSchema`'s; this file only turns YAML into its input.
public enum ConfigLoader {
  /// The keys a config may have at the top level.
  public static let topLevel = ["name"] + ConfigSchema.sections

  /// Reads and parses the config file at `path`; its name (without `.yaml`) is the run name
  /// unless it sets `name`.
  public static func load(path: String) throws -> RunConfig {
    guard let data = FileManager.default.contents(atPath: path) else {
      throw ConfigError("\(path): cannot read the config file (does it exist?)")
    }
    guard let text = String(data: data, encoding: .utf8) else {
      throw ConfigError("\(path): not UTF-8 text")
    }
    let defaultName = ((path as NSString).lastPathComponent as NSString).deletingPathExtension
    var c = try parse(text, file: path, defaultName: defaultName)
    if c.trainFile != nil {
      // The text passed parse's checks, so Yams may build it: was model.input_size given?
      let model = ((try? Yams.load(yaml: text)) as? [String: Any])?["model"] as? [String: Any]
      try resolveDataFiles(&c, config: path, inputSizeGiven: model?["input_size"].map(ConfigSchema.isPresent) == true)
    }
    return c
  }

  /// Data files relative to the config file's directory become absolute (so config.yaml and
  /// checkpoints name them whatever the working directory), and `model.input_size` follows
  /// from the training file's examples (or, when the config gives it, must agree).
  static func resolveDataFiles(_ c: inout RunConfig, config path: String, inputSizeGiven: Bool) throws {
    let base = ((path as NSString).deletingLastPathComponent as NSString)
    func absolute(_ p: String) -> String {
      let full = p.hasPrefix("/") ? p : (base.length == 0 ? FileManager.default.currentDirectoryPath : base.expandingTildeInPath)
        .appending("/" + p)
      return ((full as NSString).standardizingPath as String)
    }
    c.trainFile = c.trainFile.map(absolute)
    c.testFile = c.testFile.map(absolute)
    guard let train = c.trainFile else { return }
    let shape = try DataFiles.rowShape(path: train)
    let width = shape.reduce(1, *)
    if inputSizeGiven && c.model.inputSize != width {
      throw ConfigError("\(path): model.input_size is \(c.model.inputSize), but \(train) has examples of \(width) values (shape \(shape))")
    }
    c.model.inputSize = width
    if c.model.usesLayerLists { c.model.inputShape = imageShape(shape) }
    if let problem = c.model.problem { throw ConfigError("\(path): \(problem)") }
  }

  /// libyaml's reason for rejecting a text, on one line: where, what, and while doing what
  /// ("line 3, column 1: found character that cannot start any token (while scanning for the
  /// next token at line 3, column 1)").
  static func yamlProblem(_ error: Error) -> String {
    func say(_ problem: String, _ mark: Mark, _ context: YamlError.Context?) -> String {
      "line \(mark.line), column \(mark.column): \(problem)"
        + (context.map { " (\($0.text) at line \($0.mark.line), column \($0.mark.column))" } ?? "")
    }
    switch error as? YamlError {
    case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
      .composer(let context, let problem, let mark, _):
      return say(problem, mark, context)
    case .reader(let problem, let offset, _, _):
      return problem + (offset.map { " at byte \($0)" } ?? "")
    default:
      return "\(error)".split(separator: "\n").first.map(String.init) ?? "invalid YAML"
    }
  }

  /// Parses config text; `file` names it in errors, `defaultName` is the run name unless it
  /// sets `name`.
  public static func parse(_ text: String, file: String, defaultName: String) throws -> RunConfig {
    // Yams builds nodes recursively: a few thousand `[` overflow the stack. Refuse deep text first.
    let nesting = nestingBound(text)
    guard nesting <= maxNesting else {
      throw ConfigError(
        "\(file): nested too deeply for a config: up to \(nesting) levels (counting every [ and { and the "
          + "indentation and - ? : of the deepest line), expected at most \(maxNesting)")
    }
    let node: Node?
    do {
      node = try Yams.compose(yaml: text, .default, constructor)
    } catch {
      throw ConfigError("\(file): not valid YAML: \(yamlProblem(error))")
    }
    // Before Yams builds values: it traps on a mapping key that is a list or a mapping
    // (`{[1]: 2}`), and it expands every alias (`*a`), so a few lines can stand for billions.
    var budget = maxNodes
    if let node, let problem = checkNodes(node, &budget) { throw ConfigError("\(file): \(problem)") }
    let root = node?.any
    guard let top = root as? [String: Any] else {
      throw ConfigError("\(file): expected a mapping with keys \(topLevel.joined(separator: ", "))")
    }
    // `environment` is what a run directory's config.yaml adds for people; it is ignored.
    for key in top.keys where !topLevel.contains(key) && key != "environment" {
      throw ConfigError("\(file): unknown key '\(oneLine(key))'; valid top-level keys: \(topLevel.joined(separator: ", "))")
    }
    var sections: [String: [String: Any]] = [:]
    for name in ConfigSchema.sections {
      let keys = ConfigSchema.keys(in: name).map(\.name)
      guard let raw = top[name] else { continue }
      guard let m = raw as? [String: Any] else {
        throw ConfigError("\(file): '\(name)' must be a mapping with keys \(keys.joined(separator: ", "))")
      }
      for key in m.keys where !keys.contains(key) {
        throw ConfigError("\(file): unknown key '\(name).\(oneLine(key))'; valid keys: \(keys.joined(separator: ", "))")
      }
      sections[name] = m
    }
    var name = defaultName
    if let n = top["name"] {
      // The run directory's name: a file name (at most 255 bytes), on one line, without a byte
      // order mark (YAML drops one that starts a quoted scalar, so it would not read back).
      guard let s = n as? String, !s.isEmpty, !s.contains("/"), s.utf8.count <= 255,
        !s.unicodeScalars.contains(where: { lineBreaks.contains($0) || $0 == "\u{0}" || $0 == "\u{FEFF}" })
      else {
        throw ConfigError(
          "\(file): name: expected \(ConfigSchema.nameExpected), got '\(oneLine(String(describing: n)).prefix(60))'")
      }
      name = s
    }
    do {
      return try ConfigSchema.decode(sections, name: name)
    } catch let e as ConfigSchema.Invalid {
      throw ConfigError("\(file): \(e.path): expected \(e.expected), got '\(oneLine(e.got))'")
    } catch {
      throw ConfigError("\(file): \(error)")
    }
  }

  /// Yams' constructor except for integers: YAML 1.1 reads `1:30` as the base-60 integer 90, and
  /// Yams multiplies the parts unchecked, so `1111111111111111111:8` (or twelve `1:`s) would trap
  /// on overflow. Here a base-60 integer that does not fit in an Int,
  /// or has a part that is not decimal digits, stays text, which the schema refuses by key.
  static var constructor: Constructor {
    var scalars = Constructor.defaultScalarMap
    scalars[.int] = { scalar in
      guard scalar.string.contains(":") else { return Int.construct(from: scalar) }
      guard scalar.style == .any || scalar.style == .plain else { return nil }
      return sexagesimal(scalar.string.replacingOccurrences(of: "_", with: ""))
    }
    return Constructor(scalars)
  }

  /// `[-+]d:dd:dd…` as an Int (each part decimal digits), or nil when malformed or too large.
  static func sexagesimal(_ text: String) -> Int? {
    var digits = Substring(text), negative = false
    if let sign = digits.first, sign == "-" || sign == "+" { negative = sign == "-"; digits = digits.dropFirst() }
    var value = 0
    for part in digits.split(separator: ":", omittingEmptySubsequences: false) {
      guard !part.isEmpty, part.allSatisfy({ $0.isASCII && $0.isNumber }), let d = Int(part) else { return nil }
      let (shifted, o1) = value.multipliedReportingOverflow(by: 60)
      let (sum, o2) = shifted.addingReportingOverflow(d)
      guard !o1, !o2 else { return nil }
      value = sum
    }
    return negative ? -value : value
  }

  /// YAML 1.1's line breaks.
  static let lineBreaks: Set<Unicode.Scalar> = ["\n", "\r", "\u{85}", "\u{2028}", "\u{2029}"]

  /// The most nesting `nestingBound` may find in a config (real ones have about 5).
  static let maxNesting = 256

  /// A cheap estimate of how deeply the YAML `text` nests that errs high: flow collections nest
  /// at most once per `[` or `{` in the whole text, block collections about once per column of
  /// indentation or compact indicator (`- - x`, `? `, `: `) of a line. An indicator is a `-`,
  /// `?` or `:` followed by a space, a tab or a line break, as YAML requires of block indicators
  /// (`-1`, `a:b` and `--` nest nothing; `- - -` inside a quoted scalar counts, which errs high).
  /// (Under AddressSanitizer Yams overflowed the stack on 2000 nested `- `, not on 1000 `{a: `.)
  static func nestingBound(_ text: String) -> Int {
    var flow = 0, deepestLine = 0, line = 0, indenting = true, indicator = false
    for u in text.unicodeScalars {
      let isBreak = lineBreaks.contains(u)
      if indicator && (isBreak || u == " " || u == "\t") { line += 1 }
      indicator = false
      switch u {
      case _ where isBreak:
        deepestLine = max(deepestLine, line)
        line = 0
        indenting = true
      case " " where indenting, "\t" where indenting: line += 1
      case "[", "{": flow += 1; indenting = false
      case "-", "?", ":": indicator = true; indenting = false
      default: indenting = false
      }
    }
    if indicator { line += 1 }  // at the end of the text
    return flow + max(deepestLine, line) + 1
  }

  /// The most values (scalars, lists, mappings, aliases counted as what they stand for) a
  /// config may have; real ones have about 50.
  static let maxNodes = 10_000

  /// Why Yams should not build values from `node`, or nil: a mapping key that is not a plain
  /// value, or more than `budget` nodes with aliases expanded (stops counting there).
  private static func checkNodes(_ node: Node, _ budget: inout Int) -> String? {
    budget -= 1
    guard budget >= 0 else { return "more than \(maxNodes) values with aliases expanded, expected a config's few dozen" }
    switch node {
    case .scalar: return nil
    case .sequence(let items):
      for item in items { if let problem = checkNodes(item, &budget) { return problem } }
    case .mapping(let pairs):
      for (key, value) in pairs {
        guard key.scalar != nil else {
          let at = key.mark.map { "line \($0.line), column \($0.column): " } ?? ""
          return "\(at)a mapping key is a list or mapping, expected plain keys such as model or zdim"
        }
        if let problem = checkNodes(key, &budget) { return problem }
        if let problem = checkNodes(value, &budget) { return problem }
      }
    }
    return nil
  }
}

/// A data file's row shape as conv layers see it: [H, W] and [H, W, C] rows (channels-last, as
/// image files hold them) are images of [1 or C, H, W]; other shapes are flat.
private func imageShape(_ shape: [Int]) -> [Int] {
  if shape.count == 2 { return [1, shape[0], shape[1]] }
  if shape.count == 3 { return [shape[2], shape[0], shape[1]] }
  return []
}
