import Foundation
import VAE
import VAEDist
import TestSupport
import XCTest

/// End-to-end tests of the `vae-dist` executable: help texts, one-line errors, and a smoke run
/// through train → info → eval → sample → reconstruct.
final class CLITests: XCTestCase {
  private var tmp = ""

  /// The package root, from this file's path (Tests/CLITests/CLITests.swift).
  private static let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
  }()

  private var smokeConfig: String { Self.packageRoot + "/configs/smoke.yaml" }

  override func setUpWithError() throws {
    tmp = NSTemporaryDirectory() + "vae-dist-cli-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: tmp)
  }

  // MARK: Running the binary

  struct Output {
    var status: Int32
    var stdout: String
    var stderr: String
    var stderrLines: [Substring] { stderr.split(separator: "\n", omittingEmptySubsequences: true) }
  }

  /// Runs vae-dist in the test's temporary directory (so nothing lands in the package), with
  /// OpenBLAS on one thread. `environment` adds or overrides variables.
  private func vaeDist(_ args: [String], environment: [String: String] = [:]) throws -> Output {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    var env = environment
    if env["OPENBLAS_NUM_THREADS"] == nil { env["OPENBLAS_NUM_THREADS"] = "1" }
    let r = try Subprocess.run([binary] + args, environment: env, cwd: tmp)
    return Output(status: r.status, stdout: r.stdout, stderr: r.stderr)
  }

  /// Runs a command that must fail: non-zero exit, exactly one line on stderr, starting with
  /// `vae-dist: error:` and containing every string of `mentions`.
  ///
  /// Error cases run with `OPENBLAS_CORETYPE=Prescott`, which makes vae-dist's "fallback BLAS
  /// kernel" warning fire on any CPU with AVX2/FMA: a failing command must still print only its
  /// one error line.
  @discardableResult
  private func assertFails(
    _ args: [String], mentions: [String], environment: [String: String] = [:],
    line: UInt = #line
  ) throws -> Output {
    var env = ["OPENBLAS_CORETYPE": "Prescott"]
    for (k, v) in environment { env[k] = v }
    let r = try vaeDist(args, environment: env)
    let cmd = "vae-dist " + args.joined(separator: " ")
    XCTAssertNotEqual(r.status, 0, "\(cmd): exit status 0", line: line)
    XCTAssertEqual(r.stderrLines.count, 1, "\(cmd): expected exactly one stderr line, got:\n\(r.stderr)", line: line)
    // The content checks look at the error line wherever it is, so that an extra line is
    // reported once (above) and does not hide whether the error itself is right.
    guard let errorLine = r.stderrLines.first(where: { $0.hasPrefix("vae-dist: error: ") }).map(String.init) else {
      XCTFail("\(cmd): no line starting with 'vae-dist: error: ' on stderr: \(r.stderr)", line: line)
      return r
    }
    for m in mentions {
      XCTAssertTrue(errorLine.contains(m), "\(cmd): error does not mention '\(m)': \(errorLine)", line: line)
    }
    XCTAssertFalse(r.stdout.contains("Traceback") || r.stderr.contains("Fatal error"), line: line)
    return r
  }

  private func writeFile(_ name: String, _ text: String) throws -> String {
    let path = tmp + "/" + name
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  private func bytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
  }

  /// A tiny synthetic-data config that trains in a second.
  private func tinyConfig(_ extra: String = "", dataset: String = "synthetic") throws -> String {
    try writeFile(
      "tiny-\(UUID().uuidString.prefix(8)).yaml",
      """
      name: tiny
      model:
        hidden: [16]
        zdim: 2
      data:
        dataset: \(dataset)
        train_limit: 200
      train:
        batch: 20
        steps: 6
        checkpoint_every: 3
        log_every: 2
      \(extra)
      """)
  }

  private func assertPNG(_ path: String, minBytes: Int = 200, line: UInt = #line) throws {
    let b = try bytes(path)
    XCTAssertEqual(Array(b.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "\(path): no PNG signature", line: line)
    XCTAssertGreaterThan(b.count, minBytes, "\(path): suspiciously small PNG", line: line)
    XCTAssertEqual(Array(b.suffix(8).prefix(4)), Array("IEND".utf8), "\(path): no IEND chunk at the end", line: line)
  }

  // MARK: Help

  func testHelpOfEveryCommand() throws {
    let cases: [([String], [String])] = [
      ([], ["train", "eval", "sample", "reconstruct", "encode", "decode", "info", "bench"]),
      (["train"], ["--config", "--data", "--out", "--zdim", "--epochs", "--steps", "--batch", "--lr", "--seed", "--resume", "--quiet"]),
      (["eval"], ["--checkpoint", "--data", "--samples", "--iw", "--limit", "--mean-z", "--json"]),
      (["sample"], ["--checkpoint", "--n", "--out", "--manifold", "--seed"]),
      (["reconstruct"], ["--checkpoint", "--out", "--n", "--data"]),
      (["encode"], ["--checkpoint", "--input", "--out", "--logvar", "--threads", "[N, zdim]", "np.load"]),
      (["decode"], ["--checkpoint", "--input", "--out", "--threads", "[N, zdim]", "np.load"]),
      (["info"], ["<checkpoint>"]),
      (["bench"], ["--config", "--warmup", "--steps", "--repeats", "--json"]),
      (["config"], ["--keys", "--markdown"]),
    ]
    for (sub, flags) in cases {
      for helpFlag in ["--help", "-h"] {
        let r = try vaeDist(sub + [helpFlag])
        let cmd = (["vae-dist"] + sub + [helpFlag]).joined(separator: " ")
        XCTAssertEqual(r.status, 0, "\(cmd): exit status \(r.status); stderr \(r.stderr)")
        XCTAssertTrue(r.stdout.contains("USAGE:"), "\(cmd): no usage line")
        for f in flags { XCTAssertTrue(r.stdout.contains(f), "\(cmd): help does not mention \(f)") }
        XCTAssertEqual(r.stderr, "", "\(cmd): help wrote to stderr")
      }
    }
    // `vae-dist help train` is the same text as `vae-dist train --help`.
    let a = try vaeDist(["help", "train"]), b = try vaeDist(["train", "--help"])
    XCTAssertEqual(a.status, 0)
    XCTAssertEqual(a.stdout, b.stdout)
  }

  // MARK: The config keys and the docs generated from them

  /// `config --keys` names every schema key with its rule and default; `--markdown` is a table
  /// with a row per key; without `--keys` it is a one-line error.
  func testConfigKeysListsEverySchemaKey() throws {
    let text = try vaeDist(["config", "--keys"])
    XCTAssertEqual(text.status, 0, text.stderr)
    XCTAssertTrue(text.stdout.hasPrefix("name: "), text.stdout)
    for k in ConfigSchema.keys {
      XCTAssertTrue(text.stdout.contains("\n\(k.path): \(k.rule.summary) (default: \(k.documentedDefault))\n    \(k.help)"), k.path)
    }
    XCTAssertTrue(text.stdout.contains("model.zdim: integer 1…10000 (default: 20)"), text.stdout)
    let md = try vaeDist(["config", "--keys", "--markdown"])
    XCTAssertEqual(md.status, 0, md.stderr)
    let rows = md.stdout.split(separator: "\n").filter { $0.hasPrefix("| `") }
    XCTAssertEqual(rows.count, ConfigSchema.keys.count + 1, md.stdout)  // + name
    XCTAssertTrue(rows.contains { $0.hasPrefix("| `model.kind` | vae, cvae, regressor | vae | ") }, md.stdout)
    XCTAssertTrue(rows.contains { $0.contains("p(Y\\|X)") }, "a | inside a cell is not escaped")
    try assertFails(["config"], mentions: ["--keys"])
  }

  /// A flag's text is read by the key's rule as the YAML value would be: whole numbers for
  /// integer keys, numbers checked as the Float they become, lists as `500,500` or `[500, 500]`.
  func testConfigRulesReadCommandLineText() {
    XCTAssertEqual(ConfigRule.int(1...10).check(text: "3"), .int(3))
    for bad in ["0", "11", "1.5", "3x", "", " 3"] { XCTAssertNil(ConfigRule.int(1...10).check(text: bad), bad) }
    XCTAssertEqual(ConfigRule.positive.check(text: "1e-3"), .float(1e-3))
    for bad in ["0", "-1", "1e39", "1e-50", "nan", "inf", "fast"] { XCTAssertNil(ConfigRule.positive.check(text: bad), bad) }
    XCTAssertEqual(ConfigRule.unitInterval.check(text: "0.999"), .float(0.999))
    XCTAssertNil(ConfigRule.unitInterval.check(text: "1"))
    XCTAssertEqual(ConfigRule.layers.check(text: "500,250"), .ints([500, 250]))
    XCTAssertEqual(ConfigRule.layers.check(text: "[500, 250]"), .ints([500, 250]))
    for bad in ["", "500,", "500;250", "[0]", "1.5"] { XCTAssertNil(ConfigRule.layers.check(text: bad), bad) }
    XCTAssertEqual(ConfigRule.choice(["l2", "decoupled"]).check(text: "l2"), .string("l2"))
    XCTAssertNil(ConfigRule.choice(["l2", "decoupled"]).check(text: "L2"))
    XCTAssertEqual(ConfigRule.bool.check(text: "false"), .string("false"))
    XCTAssertNil(ConfigRule.bool.check(text: "no"))
    var c = RunConfig.defaults
    XCTAssertNoThrow(try ConfigSchema.apply("train.steps", text: "40", to: &c))
    XCTAssertEqual(c.steps, 40)
    XCTAssertNil(c.epochs, "steps given as a flag leaves epochs set")
  }

  /// The blocks between `<!-- BEGIN generated: vae-dist CMD -->` and its END marker in
  /// docs/reference.md and docs/ARCHITECTURE.md are exactly what `vae-dist CMD` prints (scripts/update-docs
  /// rewrites them), and each doc has the config key table.
  func testGeneratedDocsMatchTheCommands() throws {
    for doc in ["docs/reference.md", "docs/ARCHITECTURE.md"] {
      let text = try String(contentsOfFile: Self.packageRoot + "/" + doc, encoding: .utf8)
      let lines = text.components(separatedBy: "\n")
      var commands: [String] = []
      for (i, line) in lines.enumerated() where line.hasPrefix("<!-- BEGIN generated: vae-dist ") {
        let cmd = String(line.dropFirst("<!-- BEGIN generated: vae-dist ".count).dropLast(" -->".count))
        let end = "<!-- END generated: vae-dist \(cmd) -->"
        let j = try XCTUnwrap(lines[i...].firstIndex(of: end), "\(doc): '\(line)' has no '\(end)'")
        let r = try vaeDist(cmd.split(separator: " ").map(String.init))
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(
          lines[(i + 1)..<j].joined(separator: "\n") + "\n", r.stdout,
          "\(doc): the block of 'vae-dist \(cmd)' differs from its output; run scripts/update-docs")
        commands.append(cmd)
      }
      XCTAssertTrue(commands.contains("config --keys --markdown"), "\(doc) has no generated config key table")
    }
  }

  /// Every flag that overrides a config key lands in the resolved config.yaml as that key, and
  /// --steps after a config's epochs (or --epochs after its steps) replaces it.
  func testEveryOverrideFlagSetsItsKey() throws {
    let config = try tinyConfig()
    let run = tmp + "/flags"
    let r = try vaeDist([
      "train", "--config", config, "--out", run, "--quiet", "--zdim", "3", "--epochs", "1", "--batch", "10",
      "--lr", "0.002", "--seed", "7", "--train-limit", "100", "--eval-every", "4", "--checkpoint-every", "5",
      "--checkpoint-minutes", "30", "--log-every", "2", "--check-every", "6",
    ])
    XCTAssertEqual(r.status, 0, r.stderr)
    let yaml = try String(contentsOfFile: run + "/config.yaml", encoding: .utf8)
    for line in ["zdim: 3", "epochs: 1", "batch: 10", "lr: 0.002", "seed: 7", "train_limit: 100", "eval_every: 4",
                 "checkpoint_every: 5", "checkpoint_minutes: 30.0", "log_every: 2", "check_every: 6"] {
      XCTAssertTrue(yaml.contains("\n  \(line)\n"), "config.yaml lacks '\(line)':\n\(yaml)")
    }
    XCTAssertFalse(yaml.contains("steps:"), "--epochs kept the config's steps:\n\(yaml)")
    XCTAssertTrue(FileManager.default.fileExists(atPath: run + "/checkpoints/step-00000005.safetensors"))
  }

  // MARK: Argument and config errors

  func testUnknownFlagAndMissingArguments() throws {
    try assertFails(["train", "--config", smokeConfig, "--bogus"], mentions: ["--bogus"])
    try assertFails(["train"], mentions: ["--config"])
    try assertFails(["frobnicate"], mentions: ["frobnicate"])
    try assertFails(["eval"], mentions: ["--checkpoint"])
    try assertFails(["sample", "--checkpoint", "x.safetensors"], mentions: ["--out"])
  }

  func testConfigFileErrors() throws {
    let missing = tmp + "/no-such-config.yaml"
    try assertFails(["train", "--config", missing], mentions: ["no-such-config.yaml"])

    let invalid = try writeFile("invalid.yaml", "model:\n  hidden: [64\n  zdim: : 3\n")
    try assertFails(["train", "--config", invalid], mentions: ["invalid.yaml", "YAML"])

    let unknown = try writeFile("unknown.yaml", "model:\n  zdimm: 3\n")
    let r = try assertFails(["train", "--config", unknown], mentions: ["unknown.yaml", "zdimm"])
    // The message lists the valid keys of the section.
    for k in ["zdim", "hidden", "likelihood"] {
      XCTAssertTrue(r.stderr.contains(k), "valid key \(k) not listed: \(r.stderr)")
    }
    let unknownTop = try writeFile("unknown-top.yaml", "modle:\n  zdim: 3\n")
    try assertFails(["train", "--config", unknownTop], mentions: ["modle", "model", "train"])

    let stringZ = try writeFile("string.yaml", "model:\n  zdim: abc\n")
    try assertFails(["train", "--config", stringZ], mentions: ["string.yaml", "model.zdim", "abc"])

    let zeroZ = try writeFile("zero.yaml", "model:\n  zdim: 0\n")
    try assertFails(["train", "--config", zeroZ], mentions: ["model.zdim"])

    let dataset = try writeFile("dataset.yaml", "data:\n  dataset: cifar\n")
    try assertFails(["train", "--config", dataset], mentions: ["data.dataset", "cifar", "mnist"])

    let both = try writeFile("both.yaml", "train:\n  epochs: 2\n  steps: 3\n")
    try assertFails(["train", "--config", both], mentions: ["epochs", "steps"])
  }

  /// A mapping key that is a list or a mapping (`{{}}`), on which Yams would trap (a force
  /// unwrap), is a one-line error naming the file.
  func testConfigWithComplexMappingKeyIsAnErrorNotATrap() throws {
    for text in ["{{}}\n", "model: {[1]: 2}\n", "? [a]\n: 1\n", "train: !!set {? {a: 1}}\n", "a: [{b: {{}: 1}}]\n"] {
      XCTAssertThrowsError(try ConfigLoader.parse(text, file: "keys.yaml", defaultName: "keys"), text) { error in
        let message = "\(error)"
        XCTAssertTrue(message.hasPrefix("keys.yaml: ") && !message.contains("\n"), message)
        XCTAssertTrue(message.contains("mapping key is a list or mapping"), message)
      }
    }
    let file = try writeFile("complex-key.yaml", "{{}}\n")
    try assertFails(["train", "--config", file], mentions: ["complex-key.yaml", "mapping key"])
  }

  /// Text that is not YAML: libyaml's reason and where, on one line.
  func testInvalidYAMLSaysWhyAndWhere() throws {
    let cases = [
      ("name: x\nmodel:\n\tzdim: 3\n", "line 3, column 1: found character that cannot start any token"),
      ("name: x\nmodel: {zdim: 3\n", "did not find expected ',' or '}' (while parsing a flow mapping at line 2, column 8)"),
      ("a: 'open\n", "found unexpected end of stream (while scanning a quoted scalar at line 1, column 4)"),
    ]
    for (text, mention) in cases {
      XCTAssertThrowsError(try ConfigLoader.parse(text, file: "bad.yaml", defaultName: "b"), text) { error in
        XCTAssertEqual("\(error)".split(separator: "\n").count, 1, "\(error)")
        XCTAssertTrue("\(error)".hasPrefix("bad.yaml: not valid YAML: line ") && "\(error)".contains(mention), "\(error)")
      }
    }
    try assertFails(["train", "--config", try writeFile("tab.yaml", cases[0].0)], mentions: ["tab.yaml", "cannot start any token"])
  }

  /// Errors quote unknown keys and bad values, which may hold line breaks (a quoted `"a\nb"`,
  /// or a multi-line flow key as scripts/fuzz config found); they are escaped now, so that the
  /// error stays one line.
  func testConfigErrorsQuotingKeysAndValuesStayOneLine() throws {
    let cases = [
      ("{nam- (\n  train\r\r\rs - - lr}\n", "unknown key 'nam- ( train\\n\\ns - - lr'"),
      ("\"na\\nme\": x\n", "unknown key 'na\\nme'"),
      ("model:\n  \"z\\u2028dim\": 1\n", "unknown key 'model.z\\u{2028}dim'"),
      ("model:\n  zdim: \"2\\n3\"\n", "model.zdim: expected an integer from 1 to 10000, got '2\\n3'"),
    ]
    for (text, mention) in cases {
      XCTAssertThrowsError(try ConfigLoader.parse(text, file: "lines.yaml", defaultName: "l"), text) { error in
        let message = "\(error)"
        XCTAssertFalse(message.contains("\n") || message.contains("\r") || message.contains("\u{2028}"), message)
        XCTAssertTrue(message.hasPrefix("lines.yaml: ") && message.contains(mention), "\(message) lacks \(mention)")
      }
    }
  }

  /// Yams composes nodes recursively, so a config of a few thousand `[` (or `- - - …`, or
  /// `{a: {a: …`) would overflow the stack; it is refused in one line before Yams reads it.
  func testDeeplyNestedConfigIsAnErrorNotAStackOverflow() throws {
    let deep = [
      "a: " + String(repeating: "[", count: 100_000) + "\n",
      "a:\n" + String(repeating: "- ", count: 50_000) + "1\n",
      "a: " + String(repeating: "{a: ", count: 20_000) + "1" + String(repeating: "}", count: 20_000) + "\n",
    ]
    for text in deep {
      XCTAssertThrowsError(try ConfigLoader.parse(text, file: "deep.yaml", defaultName: "d")) { error in
        XCTAssertTrue("\(error)".hasPrefix("deep.yaml: nested too deeply for a config"), "\(error)")
      }
    }
    try assertFails(["train", "--config", try writeFile("deep.yaml", deep[0])], mentions: ["deep.yaml", "nested too deeply"])
    // The shipped configs are far from the limit (parsed as text: configs/digits.yaml names data
    // files that scripts/own-data-study writes, which a clean clone does not have).
    let configs = Self.packageRoot + "/configs/"
    for name in try FileManager.default.contentsOfDirectory(atPath: configs) where name.hasSuffix(".yaml") {
      let text = try String(contentsOfFile: configs + name, encoding: .utf8)
      XCTAssertNoThrow(try ConfigLoader.parse(text, file: name, defaultName: "c"), name)
    }
  }

  /// A run name is a directory name: at most 255 bytes, one line; a longer or multi-line name
  /// is refused by key. `- ` counts as nesting only where it could be an indicator, so the
  /// longest name of `- - -` written on one line to config.yaml reads back.
  func testRunNamesAreOneLineFileNamesAndRoundTrip() throws {
    for bad in ["'" + String(repeating: "x", count: 256) + "'", "\"a\\nb\"", "'a\n\n  b'", "\"a\\u2028\"", "'a\u{FEFF}b'"] {
      XCTAssertThrowsError(try ConfigLoader.parse("name: \(bad)\n", file: "n.yaml", defaultName: "n"), bad) { error in
        XCTAssertTrue("\(error)".hasPrefix("n.yaml: name: expected a non-empty string of at most 255 bytes"), "\(error)")
        XCTAssertFalse("\(error)".contains("\n"), "\(error)")
      }
    }
    // The longest name, all "- " pairs, is read back from the config.yaml it is written to.
    let dashes = String(repeating: "- ", count: 127) + "x"
    let c = try ConfigLoader.parse("name: '\(dashes)'\n", file: "n.yaml", defaultName: "n")
    XCTAssertEqual(c.name, dashes)
    XCTAssertEqual(try ConfigLoader.parse(c.yaml, file: "written.yaml", defaultName: "w"), c)
    // Indicators still count: 300 block sequences in one line are refused.
    XCTAssertThrowsError(try ConfigLoader.parse("a: " + String(repeating: "- ", count: 300) + "1\n", file: "d.yaml", defaultName: "d"))
    // Dashes that are not indicators do not: the value is refused for what it is.
    XCTAssertThrowsError(try ConfigLoader.parse("train:\n  lr: " + String(repeating: "-", count: 300) + "\n", file: "d.yaml", defaultName: "d")) { error in
      XCTAssertTrue("\(error)".hasPrefix("d.yaml: train.lr: expected"), "\(error)")
    }
  }

  /// Aliases of aliases stand for exponentially many values, and Yams builds them all (nine such
  /// lines are 9^9 values in 467 bytes, more than a minute's work; seven are used here). At most
  /// ten thousand values are allowed, counted before Yams builds anything.
  func testConfigAliasExpansionIsBounded() throws {
    var lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in 1...6 { lines.append("a\(i): &a\(i) [" + Array(repeating: "*a\(i - 1)", count: 9).joined(separator: ", ") + "]") }
    XCTAssertThrowsError(try ConfigLoader.parse(lines.joined(separator: "\n"), file: "laughs.yaml", defaultName: "l")) { error in
      XCTAssertTrue("\(error)".hasPrefix("laughs.yaml: more than 10000 values with aliases expanded"), "\(error)")
    }
    let c = try ConfigLoader.parse("model:\n  hidden: &h [3, 3]\n  decoder_hidden: *h\n  zdim: 2\n", file: "ok.yaml", defaultName: "ok")
    XCTAssertEqual(c.model.decoderHidden, [3, 3])
  }

  /// YAML 1.1 base-60 integers (`1:30` is 90): Yams multiplies their parts unchecked, so
  /// `seed: 1111111111111111111:8` would trap on overflow. One that does not fit is text,
  /// refused by key; one that fits is still the number YAML 1.1 says.
  func testBase60IntegersThatOverflowAreAnErrorNotATrap() throws {
    for text in ["1111111111111111111:8", "1:1:1:1:1:1:1:1:1:1:1:1", "-9223372036854775807:1"] {
      XCTAssertThrowsError(try ConfigLoader.parse("train:\n  seed: \(text)\n", file: "b60.yaml", defaultName: "b")) { error in
        XCTAssertTrue("\(error)".hasPrefix("b60.yaml: train.seed: expected"), "\(error)")
        XCTAssertTrue("\(error)".contains(text), "\(error)")
      }
    }
    XCTAssertEqual(try ConfigLoader.parse("train:\n  seed: 1:30\n", file: "b60.yaml", defaultName: "b").seed, 90)
    XCTAssertEqual(try ConfigLoader.parse("train:\n  steps: 1_0:00\n", file: "b60.yaml", defaultName: "b").steps, 600)
    // The largest that fits: 153722867280912930 × 60 + 7 = Int.max; one more overflows.
    XCTAssertEqual(try ConfigLoader.parse("train:\n  seed: 153722867280912930:7\n", file: "b60.yaml", defaultName: "b").seed, UInt64(Int.max))
    for text in ["153722867280912930:8", "-2:00:01", "1::2"] {
      XCTAssertThrowsError(try ConfigLoader.parse("train:\n  seed: \(text)\n", file: "b60.yaml", defaultName: "b"), text)
    }
  }

  /// Numbers are stored as Floats and range-checked as the Float they become: as a Double,
  /// `lr: 1e300` would pass and become inf, 1e-50 zero and `beta2: 0.9999999999` one (Adam's
  /// correction 1/√(1 − β2^t) is then inf), and config.yaml would not read back.
  func testConfigNumbersAreCheckedAsTheFloatsTheyBecome() throws {
    let rejected = [
      ("train:\n  lr: 1e300\n", "train.lr"), ("train:\n  lr: 1e-50\n", "train.lr"),
      ("train:\n  beta2: 0.9999999999\n", "train.beta2"), ("train:\n  weight_decay: 1e39\n", "train.weight_decay"),
      ("model:\n  likelihood: gaussian\n  sigma: 1e-46\n", "model.sigma"),
      // Subnormal: zero under the flush-to-zero mode training runs in.
      ("train:\n  adam_eps: 1e-45\n", "train.adam_eps"), ("train:\n  weight_decay: 1e-40\n", "train.weight_decay"),
    ]
    for (text, key) in rejected {
      XCTAssertThrowsError(try ConfigLoader.parse(text, file: "numbers.yaml", defaultName: "n"), text) { error in
        XCTAssertTrue("\(error)".hasPrefix("numbers.yaml: \(key): expected "), "\(error)")
      }
    }
    let c = try ConfigLoader.parse("train:\n  lr: 3e38\n  beta2: 0.99999994\n  adam_eps: 1.2e-38\n", file: "ok.yaml", defaultName: "ok")
    XCTAssertEqual(try ConfigLoader.parse(c.yaml, file: "written.yaml", defaultName: "ok").yaml, c.yaml)
    try assertFails(["train", "--config", try writeFile("huge-lr.yaml", "train:\n  lr: 1e300\n")], mentions: ["train.lr"])
  }

  /// A `name` that YAML would read as something else unquoted (`yes`, `1.5`, `a: b`, `#x`, a
  /// newline) is double-quoted in config.yaml and reads back; plain ones stay plain.
  func testConfigNameReadsBackFromConfigYAML() throws {
    let names = ["yes", "Off", "null", "1.5", "a: b", "#x", " lead", "trail ", "tab\there", "q\"uote\\",
                 "~", "- x", "[x]", "*x", "\u{7F}\u{1}", "é中😀"]  // line breaks, BOM: refused (testRunNames…)
    for name in names {
      var c = try ConfigLoader.parse("{}", file: "in.yaml", defaultName: "x")
      c.name = name
      let again = try ConfigLoader.parse(c.yaml, file: "out.yaml", defaultName: "other")
      XCTAssertEqual(again.name, name, c.yaml)
      XCTAssertEqual(again.yaml, c.yaml)
    }
    for plain in ["smoke", "smoke-cvae", "z-10000.run_2"] {
      var c = try ConfigLoader.parse("{}", file: "in.yaml", defaultName: "x")
      c.name = plain
      XCTAssertTrue(c.yaml.hasPrefix("name: \(plain)\n"), c.yaml)
    }
  }

  func testFlagValueErrors() throws {
    let c = smokeConfig
    let out = ["--out", tmp + "/never"]
    try assertFails(["train", "--config", c, "--zdim", "0"] + out, mentions: ["--zdim"])
    try assertFails(["train", "--config", c, "--zdim", "10001"] + out, mentions: ["--zdim", "10001"])
    try assertFails(["train", "--config", c, "--epochs=-3"] + out, mentions: ["--epochs", "-3"])
    try assertFails(["train", "--config", c, "--epochs", "-3"] + out, mentions: ["--epochs"])
    try assertFails(["train", "--config", c, "--batch", "0"] + out, mentions: ["--batch"])
    try assertFails(["train", "--config", c, "--micro-batches", "0"] + out, mentions: ["--micro-batches"])
    try assertFails(["train", "--config", c, "--micro-batches", "51"] + out, mentions: ["--micro-batches", "51", "1…50"])
    try assertFails(["train", "--config", c, "--zdim", "abc"] + out, mentions: ["--zdim", "abc"])
    try assertFails(["train", "--config", c, "--lr", "fast"] + out, mentions: ["--lr", "fast"])
    try assertFails(["train", "--config", c, "--lr", "0"] + out, mentions: ["--lr"])
    try assertFails(["train", "--config", c, "--epochs", "2", "--steps", "3"] + out, mentions: ["--epochs", "--steps"])
    try assertFails(["train", "--config", c, "--startup-timeout=-1"] + out, mentions: ["--startup-timeout", "-1"])
    try assertFails(["train", "--config", c, "--startup-timeout", "-1"] + out, mentions: ["--startup-timeout", "expected seconds ≥ 0", "-1"])
    try assertFails(["train", "--config", c, "--startup-timeout", "nan"] + out, mentions: ["--startup-timeout", "nan"])
    let nowhere = tmp + "/nowhere/step-00000001.safetensors"
    try assertFails(["train", "--config", c, "--resume", nowhere] + out, mentions: ["--resume", "nowhere"])
    XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/never"), "a failed command created its run directory")
  }

  func testBatchLargerThanTrainingSet() throws {
    let config = try tinyConfig()
    try assertFails(["train", "--config", config, "--batch", "500", "--out", tmp + "/big"], mentions: ["batch", "500"])
  }

  func testMissingDataDirectory() throws {
    let empty = tmp + "/empty-data"
    try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
    let config = try tinyConfig(dataset: "mnist")
    try assertFails(
      ["train", "--config", config, "--out", tmp + "/r"], mentions: [empty + "/mnist", "scripts/get-data"],
      environment: ["VAE_DIST_DATA": empty])
    // --data wins over the environment.
    let other = tmp + "/other-data"
    try assertFails(
      ["train", "--config", config, "--data", other, "--out", tmp + "/r"], mentions: [other + "/mnist", "scripts/get-data"],
      environment: ["VAE_DIST_DATA": empty])
  }

  func testCheckpointFileErrors() throws {
    // A file that is not a checkpoint at all.
    let notCk = try writeFile("notes.safetensors", "this is not a checkpoint\n")
    try assertFails(["eval", "--checkpoint", notCk], mentions: ["notes.safetensors"])
    try assertFails(["info", notCk], mentions: ["notes.safetensors"])
    try assertFails(["sample", "--checkpoint", notCk, "--out", tmp + "/s.png"], mentions: ["notes.safetensors"])
    try assertFails(["eval", "--checkpoint", tmp + "/absent.safetensors"], mentions: ["absent.safetensors"])
    try assertFails(["eval", "--checkpoint", tmp], mentions: [(tmp as NSString).lastPathComponent])

    // A truncated real checkpoint.
    let run = tmp + "/run"
    let t = try vaeDist(["train", "--config", try tinyConfig(), "--out", run, "--quiet"])
    XCTAssertEqual(t.status, 0, t.stderr)
    let full = try bytes(run + "/final.safetensors")
    let cut = tmp + "/cut.safetensors"
    try Data(full.prefix(full.count - 37)).write(to: URL(fileURLWithPath: cut))
    try assertFails(["eval", "--checkpoint", cut], mentions: ["cut.safetensors"])
    try assertFails(["reconstruct", "--checkpoint", cut, "--out", tmp + "/r.png"], mentions: ["cut.safetensors"])
    // A flipped bit in the data.
    var flipped = full
    flipped[flipped.count - 5] ^= 0x10
    let flip = tmp + "/flip.safetensors"
    try Data(flipped).write(to: URL(fileURLWithPath: flip))
    try assertFails(["eval", "--checkpoint", flip], mentions: ["flip.safetensors", "checksum"])
    try assertFails(["train", "--config", try tinyConfig(), "--out", tmp + "/r2", "--resume", flip], mentions: ["flip.safetensors"])

    // Bad option values of the checkpoint commands.
    let ck = run + "/final.safetensors"
    try assertFails(["eval", "--checkpoint", ck, "--samples", "0"], mentions: ["--samples"])
    try assertFails(["eval", "--checkpoint", ck, "--iw", "0"], mentions: ["--iw"])
    try assertFails(["sample", "--checkpoint", ck, "--n", "0", "--out", tmp + "/s.png"], mentions: ["--n"])
    try assertFails(["sample", "--checkpoint", ck, "--out", tmp + "/no/such/dir/s.png"], mentions: ["s.png"])
  }

  // MARK: End to end

  func testSmokeRunEndToEnd() throws {
    let run = tmp + "/smoke"
    let t = try vaeDist(["train", "--config", smokeConfig, "--out", run, "--quiet"])
    XCTAssertEqual(t.status, 0, "train failed: \(t.stderr)")
    XCTAssertTrue(t.stdout.contains("held-out ELBO"), t.stdout)
    XCTAssertEqual(t.stdout.split(separator: "\n").count, 1, "--quiet should print only the result: \(t.stdout)")
    let fm = FileManager.default
    for f in ["config.yaml", "metrics.jsonl", "final.safetensors"] {
      XCTAssertTrue(fm.fileExists(atPath: run + "/" + f), "missing \(f)")
    }
    // smoke.yaml: 120 steps, checkpoint every 40, keep 2.
    XCTAssertEqual(
      try fm.contentsOfDirectory(atPath: run + "/checkpoints").sorted(),
      ["step-00000040.safetensors", "step-00000080.safetensors"])
    let metrics = try String(contentsOfFile: run + "/metrics.jsonl", encoding: .utf8).split(separator: "\n")
    XCTAssertEqual(metrics.filter { $0.contains("\"loss\"") }.count, 12, "log_every 10 over 120 steps")
    XCTAssertEqual(metrics.filter { $0.contains("\"test_elbo\"") }.count, 2, "eval_every 60 and the end")
    for line in metrics {
      XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(line.utf8)), "bad metrics line \(line)")
    }
    let resolved = try String(contentsOfFile: run + "/config.yaml", encoding: .utf8)
    XCTAssertTrue(resolved.contains("zdim: 4") && resolved.contains("dataset: synthetic"), resolved)
    let ck = run + "/final.safetensors"

    // info
    let info = try vaeDist(["info", ck])
    XCTAssertEqual(info.status, 0, info.stderr)
    for s in ["step 120", "vae-dist/1", "encoder.0.weight", "encoder.mu.weight", "decoder.out.bias", "adam.m.encoder.0.weight", "global batch 50"] {
      XCTAssertTrue(info.stdout.contains(s), "info does not show '\(s)':\n\(info.stdout)")
    }

    // eval --json
    let ev = try vaeDist(["eval", "--checkpoint", ck, "--json"])
    XCTAssertEqual(ev.status, 0, ev.stderr)
    let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(ev.stdout.utf8)) as? [String: Any], ev.stdout)
    let elbo = try XCTUnwrap((obj["elbo"] as? NSNumber)?.doubleValue, "no elbo in \(ev.stdout)")
    XCTAssertTrue(elbo.isFinite && elbo < 0 && elbo > -543, "ELBO \(elbo)")
    XCTAssertEqual((obj["step"] as? NSNumber)?.intValue, 120)
    XCTAssertEqual((obj["images"] as? NSNumber)?.intValue, 2000)
    let recon = try XCTUnwrap((obj["recon"] as? NSNumber)?.doubleValue)
    let kl = try XCTUnwrap((obj["kl"] as? NSNumber)?.doubleValue)
    XCTAssertEqual(elbo, -(recon + kl), accuracy: 1e-9 * abs(elbo))
    // The same held-out number the training run logged last (same seed-fixed binarisation and noise).
    let last = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data((metrics.last ?? "").utf8)) as? [String: Any])
    let logged = try XCTUnwrap((last["test_elbo"] as? NSNumber)?.doubleValue)
    XCTAssertEqual(elbo, logged, accuracy: 1e-6 * abs(logged), "eval differs from the logged final test_elbo")
    // With --iw the importance-weighted bound is at least the ELBO (up to noise; K = 50 on 200 images).
    let iw = try vaeDist(["eval", "--checkpoint", ck, "--json", "--iw", "50", "--limit", "200"])
    XCTAssertEqual(iw.status, 0, iw.stderr)
    let iwObj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(iw.stdout.utf8)) as? [String: Any], iw.stdout)
    let bound = try XCTUnwrap((iwObj["iw_bound"] as? NSNumber)?.doubleValue)
    let elbo200 = try XCTUnwrap((iwObj["elbo"] as? NSNumber)?.doubleValue)
    XCTAssertGreaterThan(bound, elbo200, "IWAE bound \(bound) not above the ELBO \(elbo200)")
    // --active-units splits the KL term between the active and the inactive units: the two parts
    // add up to the KL of the ELBO (computed separately, per example in Float).
    let au = try vaeDist(["eval", "--checkpoint", ck, "--json", "--active-units"])
    XCTAssertEqual(au.status, 0, au.stderr)
    let auObj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(au.stdout.utf8)) as? [String: Any], au.stdout)
    let n = try XCTUnwrap((auObj["active_units"] as? NSNumber)?.intValue)
    let klActive = try XCTUnwrap((auObj["kl_active_units"] as? NSNumber)?.doubleValue)
    let klInactive = try XCTUnwrap((auObj["kl_inactive_units"] as? NSNumber)?.doubleValue)
    XCTAssertTrue((1...4).contains(n), "smoke has zdim 4: \(n) active")
    XCTAssertEqual(klActive + klInactive, kl, accuracy: 1e-5 * kl)
    XCTAssertGreaterThanOrEqual(klInactive, 0)
    XCTAssertEqual(try XCTUnwrap((auObj["kl_per_active_unit"] as? NSNumber)?.doubleValue), klActive / Double(n), accuracy: 1e-12)
    // Human-readable eval.
    let text = try vaeDist(["eval", "--checkpoint", ck, "--limit", "100"])
    XCTAssertEqual(text.status, 0, text.stderr)
    XCTAssertTrue(text.stdout.contains("ELBO"), text.stdout)

    // sample, reconstruct
    let png = tmp + "/x.png"
    let s = try vaeDist(["sample", "--checkpoint", ck, "--out", png])
    XCTAssertEqual(s.status, 0, s.stderr)
    try assertPNG(png, minBytes: 1000)
    let rpng = tmp + "/y.png"
    let r = try vaeDist(["reconstruct", "--checkpoint", ck, "--out", rpng])
    XCTAssertEqual(r.status, 0, r.stderr)
    try assertPNG(rpng, minBytes: 1000)

    // --manifold needs zdim = 2: this model has zdim 4.
    try assertFails(
      ["sample", "--checkpoint", ck, "--manifold", "--out", tmp + "/m.png"], mentions: ["--manifold", "zdim"])
    XCTAssertFalse(fm.fileExists(atPath: tmp + "/m.png"))

    // A fresh run into the existing directory fails with one line and changes nothing.
    let before = try bytes(ck)
    let metricsBefore = try bytes(run + "/metrics.jsonl")
    try assertFails(["train", "--config", smokeConfig, "--out", run, "--quiet"], mentions: [run, "--resume"])
    XCTAssertEqual(try bytes(ck), before, "final.safetensors changed")
    XCTAssertEqual(try bytes(run + "/metrics.jsonl"), metricsBefore, "metrics.jsonl changed")

    // --resume auto on the finished run is accepted, and says there was nothing left to train
    // (not "0 samples/s").
    let again = try vaeDist(["train", "--config", smokeConfig, "--out", run, "--quiet", "--resume", "auto"])
    XCTAssertEqual(again.status, 0, again.stderr)
    XCTAssertTrue(again.stdout.contains("the run had already finished: nothing left to train"), again.stdout)
    XCTAssertFalse(again.stdout.contains("samples/s"), again.stdout)
  }

  func testManifoldOnTwoDimensionalLatentSpace() throws {
    let run = tmp + "/smoke2"
    let t = try vaeDist(["train", "--config", smokeConfig, "--out", run, "--quiet", "--zdim", "2", "--steps", "40"])
    XCTAssertEqual(t.status, 0, "train failed: \(t.stderr)")
    let ck = run + "/final.safetensors"
    let m = tmp + "/manifold.png"
    let r = try vaeDist(["sample", "--checkpoint", ck, "--manifold", "--grid", "10", "--out", m])
    XCTAssertEqual(r.status, 0, r.stderr)
    try assertPNG(m, minBytes: 1000)
    // Out-of-range lattice sizes are one-line errors too.
    try assertFails(["sample", "--checkpoint", ck, "--manifold", "--grid", "1", "--out", m], mentions: ["--grid"])
  }

  /// Training flags override the file, and the resume path continues a CLI run bit-identically.
  func testFlagsOverrideConfigAndResumeContinues() throws {
    let config = try tinyConfig()
    let a = tmp + "/a", b = tmp + "/b"
    let ra = try vaeDist(["train", "--config", config, "--out", a, "--quiet", "--seed", "11", "--steps", "9"])
    XCTAssertEqual(ra.status, 0, ra.stderr)
    let yaml = try String(contentsOfFile: a + "/config.yaml", encoding: .utf8)
    XCTAssertTrue(yaml.contains("seed: 11") && yaml.contains("steps: 9"), yaml)
    // checkpoint_every 3 → step 3 and 6; resume from step 3 into b.
    try FileManager.default.createDirectory(atPath: b + "/checkpoints", withIntermediateDirectories: true)
    try FileManager.default.copyItem(
      atPath: a + "/checkpoints/step-00000003.safetensors", toPath: b + "/checkpoints/step-00000003.safetensors")
    let rb = try vaeDist(["train", "--config", config, "--out", b, "--quiet", "--seed", "11", "--steps", "9", "--resume", "auto"])
    XCTAssertEqual(rb.status, 0, rb.stderr)
    let ia = try vaeDist(["eval", "--checkpoint", a + "/final.safetensors", "--json", "--mean-z", "--limit", "50"])
    let ib = try vaeDist(["eval", "--checkpoint", b + "/final.safetensors", "--json", "--mean-z", "--limit", "50"])
    XCTAssertEqual(ia.status, 0, ia.stderr)
    func elbo(_ o: Output) -> Double? {
      ((try? JSONSerialization.jsonObject(with: Data(o.stdout.utf8))) as? [String: Any]).flatMap { ($0["elbo"] as? NSNumber)?.doubleValue }
    }
    XCTAssertNotNil(elbo(ia))
    XCTAssertEqual(elbo(ia), elbo(ib), "resumed CLI run differs")
    // Resuming with another seed is refused, naming the field.
    try assertFails(
      ["train", "--config", config, "--out", b, "--quiet", "--seed", "12", "--steps", "9", "--resume", "auto"],
      mentions: ["seed", "final.safetensors"])
  }

  // MARK: Conditional kinds

  /// A CVAE and a regressor train from the smoke config; `complete` writes the documented PNG
  /// size and its numbers; each command refuses a checkpoint of the wrong kind in one line.
  func testConditionalKindsEndToEnd() throws {
    let cvaeConfig = Self.packageRoot + "/configs/smoke-cvae.yaml"
    let regConfig = try writeFile(
      "smoke-reg.yaml",
      (try String(contentsOfFile: cvaeConfig, encoding: .utf8))
        .replacingOccurrences(of: "kind: cvae", with: "kind: regressor")
        .replacingOccurrences(of: "  condition_into_encoder: 1\n", with: "")
        .replacingOccurrences(of: "decoder_hidden: [16, 48]", with: "decoder_hidden: [48]"))
    for (config, out) in [(cvaeConfig, "cvae"), (regConfig, "reg")] {
      let t = try vaeDist(["train", "--config", config, "--out", tmp + "/" + out, "--steps", "40", "--quiet"])
      XCTAssertEqual(t.status, 0, "\(out): \(t.stderr)")
    }
    let cvae = tmp + "/cvae/final.safetensors", reg = tmp + "/reg/final.safetensors"
    let info = try vaeDist(["info", cvae])
    XCTAssertTrue(info.stdout.contains("kind cvae") && info.stdout.contains("cond.0.weight"), info.stdout)
    let ev = try vaeDist(["eval", "--checkpoint", reg])
    XCTAssertEqual(ev.status, 0, ev.stderr)
    XCTAssertTrue(ev.stdout.contains("log p(Y|X)"), ev.stdout)
    let evc = try vaeDist(["eval", "--checkpoint", cvae, "--iw", "5", "--limit", "50"])
    XCTAssertTrue(evc.stdout.contains("conditional ELBO") && evc.stdout.contains("importance-weighted"), evc.stdout)

    let png = tmp + "/fig.png"
    let c = try vaeDist([
      "complete", "--checkpoint", cvae, "--regressor", reg, "--n", "5", "--samples", "2", "--scale", "2",
      "--limit", "100", "--out", png, "--json",
    ])
    XCTAssertEqual(c.status, 0, c.stderr)
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: png)))
    func be32(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
    // Columns: truth, regressor, 2 samples; documented size scale·(30·columns + 2) × scale·(30·n + 2).
    XCTAssertEqual(be32(16), 2 * (30 * 4 + 2))
    XCTAssertEqual(be32(20), 2 * (30 * 5 + 2))
    XCTAssertEqual(bytes[25], 2, "RGB")
    let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(c.stdout.utf8)) as? [String: Any], c.stdout)
    let cv = try XCTUnwrap(obj["cvae"] as? [String: Any]), rg = try XCTUnwrap(obj["regressor"] as? [String: Any])
    for key in ["log_p_y_given_x", "entropy", "diversity", "diversity_over_x", "mean_sq_error", "best_of_5_sq_error"] {
      XCTAssertNotNil(cv[key] as? Double, key)
      XCTAssertNotNil(rg[key] as? Double, key)
    }
    XCTAssertLessThanOrEqual(try XCTUnwrap(cv["best_of_5_sq_error"] as? Double), try XCTUnwrap(cv["mean_sq_error"] as? Double))

    // export: model tensors only; such a file is weights, not a checkpoint (the error says to use
    // --init), and --init starts a run from it.
    let weights = tmp + "/cvae-weights.safetensors"
    XCTAssertEqual(try vaeDist(["export", "--checkpoint", cvae, "--torch", weights]).status, 0)
    try assertFails(["eval", "--checkpoint", weights], mentions: ["not a vae-dist checkpoint", "--init"])
    let fromInit = try vaeDist(
      ["train", "--config", cvaeConfig, "--out", tmp + "/init", "--steps", "5", "--init", weights])
    XCTAssertEqual(fromInit.status, 0, fromInit.stderr)
    XCTAssertTrue(fromInit.stdout.contains("initial weights from"), fromInit.stdout)

    // Wrong kinds: one line each, naming the file and the kind.
    let vae = tmp + "/vae"
    XCTAssertEqual(try vaeDist(["train", "--config", smokeConfig, "--out", vae, "--steps", "10", "--quiet"]).status, 0)
    try assertFails(["sample", "--checkpoint", cvae, "--out", tmp + "/s.png"], mentions: ["cvae", "sample", "complete"])
    try assertFails(["reconstruct", "--checkpoint", reg, "--out", tmp + "/r.png"], mentions: ["regressor", "reconstruct"])
    try assertFails(["complete", "--checkpoint", vae + "/final.safetensors", "--out", png], mentions: ["vae", "cvae"])
    try assertFails(["complete", "--checkpoint", cvae, "--regressor", cvae, "--out", png], mentions: ["--regressor", "regressor"])
    try assertFails(["eval", "--checkpoint", reg, "--iw", "3"], mentions: ["--iw", "regressor"])
    try assertFails(
      ["train", "--config", smokeConfig, "--out", vae, "--resume", cvae, "--steps", "20"], mentions: ["cannot resume", "cvae"])
  }

  /// What a user trying the README found: --version, --data pointing one level too deep, a
  /// resume with another --zdim, and bench --profile --json all answer usefully.
  func testUserFacingRoughEdges() throws {
    let v = try vaeDist(["--version"])
    XCTAssertEqual(v.status, 0)
    XCTAssertTrue(v.stdout.hasPrefix("vae-dist "), v.stdout)
    let deep = tmp + "/data/mnist"
    try FileManager.default.createDirectory(atPath: deep, withIntermediateDirectories: true)
    let mnistConfig = try writeFile("m.yaml", "model:\n  zdim: 2\ndata:\n  dataset: mnist\n")
    try assertFails(["train", "--config", mnistConfig, "--data", deep, "--out", tmp + "/x"], mentions: ["--data " + tmp + "/data"])
    let run = tmp + "/z"
    XCTAssertEqual(try vaeDist(["train", "--config", smokeConfig, "--out", run, "--steps", "10", "--quiet"]).status, 0)
    try assertFails(
      ["train", "--config", smokeConfig, "--out", run, "--steps", "20", "--zdim", "5", "--resume", "auto"],
      mentions: ["model.zdim is 4 in the checkpoint but 5 in this run"])
    let b = try vaeDist(["bench", "--config", smokeConfig, "--warmup", "1", "--steps", "3", "--repeats", "1", "--profile", "--json"])
    XCTAssertEqual(b.status, 0, b.stderr)
    let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(b.stdout.utf8)) as? [String: Any], b.stdout)
    XCTAssertNotNil(obj["profile_ms_per_step"] as? [String: Any], b.stdout)
  }

  /// `--json` output is JSON whatever the paths hold: a checkpoint or config named with a quote,
  /// a backslash, a newline and a non-ASCII letter comes back from Python's json.loads intact.
  func testJSONOutputEscapesAwkwardPaths() throws {
    let run = tmp + "/awkward-run"
    let t = try vaeDist(["train", "--config", try tinyConfig(), "--out", run, "--quiet"])
    XCTAssertEqual(t.status, 0, t.stderr)
    let ck = tmp + "/a\"b\\c\nü.safetensors"
    try FileManager.default.copyItem(atPath: run + "/final.safetensors", toPath: ck)
    let config = tmp + "/c\"o\\n\nfig ü.yaml"
    try FileManager.default.copyItem(atPath: try tinyConfig(), toPath: config)
    let outputs = [
      ("checkpoint", ck, try vaeDist(["eval", "--checkpoint", ck, "--json", "--limit", "20"])),
      ("config", config, try vaeDist(["bench", "--config", config, "--warmup", "1", "--steps", "2", "--repeats", "1", "--json"])),
    ]
    for (field, path, r) in outputs {
      XCTAssertEqual(r.status, 0, r.stderr)
      XCTAssertEqual(r.stdout.split(separator: "\n").count, 1, "one line expected: \(r.stdout)")
      let py = try Subprocess.python(
        "import json, sys; print(json.dumps(json.loads(sys.argv[1])[sys.argv[2]]))", [r.stdout, field])
      XCTAssertEqual(py.status, 0, "json.loads failed on \(r.stdout): \(py.stderr)")
      let back = try JSONSerialization.jsonObject(with: Data(py.stdout.utf8), options: .fragmentsAllowed) as? String
      XCTAssertEqual(back, path)
    }
  }

  /// Preemption: SIGTERM stops a run after the current step with a checkpoint at that step, a
  /// metrics line saying why and exit status 143; --resume auto then ends on the same bytes as
  /// a run that was never interrupted.
  func testSIGTERMStopsWithACheckpointAndResumesBitIdentically() throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let run = tmp + "/preempted"
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = ["train", "--config", smokeConfig, "--out", run, "--steps", "1000000", "--log-every", "1",
                   "--checkpoint-every", "0", "--eval-every", "0", "--quiet", "--no-tensorboard", "--threads", "1"]
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    let metrics = run + "/metrics.jsonl"
    let deadline = Date().addingTimeInterval(60)
    while Date() < deadline {
      let text = (try? String(contentsOfFile: metrics, encoding: .utf8)) ?? ""
      if text.split(separator: "\n").count >= 30 { break }
      usleep(50_000)
    }
    let sent = Date()
    kill(p.processIdentifier, SIGTERM)
    p.waitUntilExit()
    let seconds = Date().timeIntervalSince(sent)
    XCTAssertEqual(p.terminationStatus, 143, "SIGTERM should exit with 128 + 15")
    XCTAssertLessThan(seconds, 10)
    let lines = try String(contentsOfFile: metrics, encoding: .utf8).split(separator: "\n")
    let last = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines.last!.utf8)) as? [String: Any])
    XCTAssertEqual(last["event"] as? String, "stopped")
    XCTAssertEqual(last["signal"] as? String, "SIGTERM")
    let stopStep = try XCTUnwrap(last["step"] as? Int)
    // Lost work: none: the last logged step (log every step) is the stop step.
    let previous = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(lines[lines.count - 2].utf8)) as? [String: Any])
    XCTAssertEqual(previous["step"] as? Int, stopStep)
    let ck = run + "/checkpoints/" + "step-" + String(format: "%08d", stopStep) + ".safetensors"
    XCTAssertTrue(FileManager.default.fileExists(atPath: ck), ck)
    print("SIGTERM: stopped after step \(stopStep), exited \(String(format: "%.2f", seconds)) s after the signal")
    // Resume to stop + 30 steps, and compare with an uninterrupted run of that length.
    let total = String(stopStep + 30)
    let common = ["--config", smokeConfig, "--steps", total, "--log-every", "1", "--checkpoint-every", "0",
                  "--eval-every", "0", "--quiet", "--no-tensorboard", "--threads", "1"]
    let resumed = try vaeDist(["train", "--out", run, "--resume", "auto"] + common)
    XCTAssertEqual(resumed.status, 0, resumed.stderr)
    let straight = try vaeDist(["train", "--out", tmp + "/straight"] + common)
    XCTAssertEqual(straight.status, 0, straight.stderr)
    XCTAssertEqual(
      try Data(contentsOf: URL(fileURLWithPath: run + "/final.safetensors")),
      try Data(contentsOf: URL(fileURLWithPath: tmp + "/straight/final.safetensors")))
  }

  /// A full disk: the checkpoint write at step 150 fails (a 3 MB tmpfs holds two 1.2 MB
  /// checkpoints, not a third beside them). The run stops with one line naming the file, the
  /// reason and the newest intact checkpoint; that checkpoint loads, no temporary file is left,
  /// and the run continues from it with --resume auto once there is space.
  func testDiskFullStopsWithOneLineAndKeepsThePreviousCheckpoint() throws {
    let (disk, reason) = SmallDisk.mount(megabytes: 3, at: tmp + "/small")
    guard let disk else { throw XCTSkip(reason) }
    let run = disk.path + "/r"
    let r = try vaeDist(["train", "--config", smokeConfig, "--out", run, "--steps", "400", "--checkpoint-every", "50",
                         "--progress", "none"])
    XCTAssertEqual(r.status, 1, r.stderr)
    let errors = r.stderrLines.filter { $0.hasPrefix("vae-dist: error:") }
    XCTAssertEqual(errors.count, 1, r.stderr)
    let line = String(errors.first ?? "")
    for part in ["step-00000150.safetensors", "No space left on device", "training stopped at step 150",
                 "The newest checkpoint, \(run)/checkpoints/step-00000100.safetensors, is intact", "--resume auto"] {
      XCTAssertTrue(line.contains(part), "missing '\(part)' in: \(line)")
    }
    let names = try FileManager.default.contentsOfDirectory(atPath: run + "/checkpoints").sorted()
    XCTAssertEqual(names, ["step-00000050.safetensors", "step-00000100.safetensors"], "a temporary file or a partial checkpoint was left")
    let kept = try Checkpoint.load(path: run + "/checkpoints/step-00000100.safetensors")
    XCTAssertEqual(kept.state.step, 100)
    // Once there is space (the run copied to the big disk), it continues from step 100.
    let moved = tmp + "/moved"
    try FileManager.default.copyItem(atPath: run, toPath: moved)
    let resumed = try vaeDist(["train", "--config", smokeConfig, "--out", moved, "--steps", "200", "--checkpoint-every", "50",
                               "--progress", "lines", "--resume", "auto"])
    XCTAssertEqual(resumed.status, 0, resumed.stderr)
    XCTAssertTrue(resumed.stdout.contains("at step 100"), resumed.stdout)
    XCTAssertEqual(try Checkpoint.load(path: moved + "/final.safetensors").state.step, 200)
  }

  /// Under a file-size limit (`ulimit -f`), whose SIGXFSZ would kill the run with a core dump and
  /// no message, the write fails with EFBIG and the run stops with one line naming metrics.jsonl.
  func testFileSizeLimitIsAOneLineErrorNotASignal() throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let run = tmp + "/limited"
    let r = try Subprocess.run(
      ["/bin/sh", "-c", "ulimit -f 8 && exec \"$0\" \"$@\"", binary, "train", "--config", smokeConfig, "--out", run,
       "--steps", "400", "--checkpoint-every", "0", "--no-tensorboard", "--progress", "none"],
      environment: ["OPENBLAS_NUM_THREADS": "1"], cwd: tmp)
    XCTAssertEqual(r.status, 1, "expected exit 1, not death by SIGXFSZ (25): \(r.stderr)")
    let errors = r.stderrLines.filter { $0.hasPrefix("vae-dist: error:") }
    XCTAssertEqual(errors.count, 1, r.stderr)
    XCTAssertTrue(errors.first?.contains("\(run)/metrics.jsonl: I/O error: appending a line failed: File too large") ?? false, r.stderr)
    // And what is safe: the step it stopped at and the newest checkpoint (none: no checkpoint fits the limit).
    XCTAssertTrue(errors.first?.contains("; stopped at step ") ?? false, r.stderr)
    XCTAssertTrue(errors.first?.hasSuffix(", and no checkpoint of this run was written yet") ?? false, r.stderr)
  }

  /// Every warning reads "vae-dist: warning: …", on stderr, and the run goes on: a corrupt newest
  /// checkpoint is skipped (named once, with why) and the run resumes from the one before; a
  /// changed setting and a KL warm-up longer than the run are said at start.
  func testWarningsHaveOnePrefixAndTheRunGoesOn() throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let run = tmp + "/warned"
    let args = [binary, "train", "--config", smokeConfig, "--out", run, "--checkpoint-every", "10", "--eval-every", "0",
                "--no-tensorboard", "--progress", "none"]
    XCTAssertEqual(try Subprocess.run(args + ["--steps", "20"], environment: ["OPENBLAS_NUM_THREADS": "1"]).status, 0)
    let newest = run + "/checkpoints/step-00000020.safetensors"
    try Data("not a checkpoint".utf8).write(to: URL(fileURLWithPath: newest))
    try FileManager.default.removeItem(atPath: run + "/final.safetensors")
    let r = try Subprocess.run(args + ["--steps", "30", "--resume", "auto", "--kl-warmup", "100"],
                               environment: ["OPENBLAS_NUM_THREADS": "1"])
    XCTAssertEqual(r.status, 0, r.stderr)
    let warnings = r.stderrLines.filter { $0.contains("warning") || $0.hasPrefix("note") }
    XCTAssertEqual(warnings.count, 3, r.stderr)
    XCTAssertTrue(warnings.allSatisfy { $0.hasPrefix("vae-dist: warning: ") }, r.stderr)
    let skip = "vae-dist: warning: skipping an unreadable checkpoint: \(newest): not a safetensors file, or truncated"
    XCTAssertTrue(warnings.contains { $0.hasPrefix(skip) }, r.stderr)
    XCTAssertTrue(warnings.contains { $0.contains("resuming with changed settings (train.kl_warmup") }, r.stderr)
    XCTAssertTrue(warnings.contains { $0.contains("train.kl_warmup (100 steps) is longer than the run (30 steps)") }, r.stderr)
    XCTAssertTrue(r.stdout.contains("step-00000010.safetensors at step 10"), r.stdout)
    // OpenBLAS's slow fallback kernel on a CPU with AVX2 and FMA: the same prefix.
    guard BLASInfo.cpuHasAVX2FMA else { return }
    let slow = try Subprocess.run(
      [binary, "train", "--config", smokeConfig, "--out", tmp + "/prescott", "--steps", "1", "--progress", "none"],
      environment: ["OPENBLAS_NUM_THREADS": "1", "OPENBLAS_CORETYPE": "Prescott"])
    XCTAssertEqual(slow.status, 0, slow.stderr)
    XCTAssertEqual(slow.stderrLines.filter { $0.hasPrefix("vae-dist: warning: OpenBLAS chose its Prescott fallback kernel") }.count, 1,
                   slow.stderr)
  }

  /// A resume whose rewrite of metrics.jsonl fails (here the file-size limit) stops at once with
  /// one line naming metrics.jsonl, trains no step and leaves the file as it was; the rewrite
  /// used to fail silently and the run went on with the old lines.
  func testResumeStopsWhenMetricsCannotBeRewritten() throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let run = tmp + "/rewrite"
    let args = [binary, "train", "--config", smokeConfig, "--out", run, "--log-every", "1", "--checkpoint-every", "20",
                "--eval-every", "0", "--no-tensorboard", "--progress", "none"]
    let first = try Subprocess.run(args + ["--steps", "40"], environment: ["OPENBLAS_NUM_THREADS": "1"], cwd: tmp)
    XCTAssertEqual(first.status, 0, first.stderr)
    let before = try Data(contentsOf: URL(fileURLWithPath: run + "/metrics.jsonl"))
    XCTAssertGreaterThan(before.count, 8192, "the log must outgrow the limit below")
    let r = try Subprocess.run(
      ["/bin/sh", "-c", "ulimit -f 8 && exec \"$0\" \"$@\""] + args + ["--steps", "60", "--resume", "auto"],
      environment: ["OPENBLAS_NUM_THREADS": "1"], cwd: tmp)
    XCTAssertEqual(r.status, 1, r.stderr)
    let errors = r.stderrLines.filter { $0.hasPrefix("vae-dist: error:") }
    XCTAssertEqual(errors.count, 1, r.stderr)
    XCTAssertTrue(errors.first?.contains("metrics.jsonl") ?? false, r.stderr)
    XCTAssertTrue(errors.first?.contains("the run was not resumed") ?? false, r.stderr)
    XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: run + "/metrics.jsonl")), before)
  }
}
