import Foundation
import TestSupport
import XCTest

/// `scripts/plot`: a figure of two fake runs, and its one-line errors. Needs python3 (and
/// matplotlib for the figure); the script never pip-installs here (VAE_DIST_NO_PIP=1).
final class PlotScriptTests: XCTestCase {
  private var tmp = ""
  private var script: String { TestPaths.packageRoot + "/scripts/plot" }

  override func setUpWithError() throws {
    tmp = NSTemporaryDirectory() + "vae-dist-plot-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: tmp)
  }

  /// The first of VAE_DIST_PYTHON, /work/venv-tb/bin/python and python3 that can run `check`.
  private static func python(thatCan check: String) -> String? {
    var candidates: [String] = []
    if let p = ProcessInfo.processInfo.environment["VAE_DIST_PYTHON"], !p.isEmpty { candidates.append(p) }
    if FileManager.default.isExecutableFile(atPath: "/work/venv-tb/bin/python") {
      candidates.append("/work/venv-tb/bin/python")
    }
    candidates.append("python3")
    return candidates.first { c in
      let argv = c.contains("/") ? [c] : ["/usr/bin/env", c]
      return (try? Subprocess.run(argv + ["-c", check]))?.status == 0
    }
  }

  private func plot(_ args: [String], python: String) throws -> Subprocess.Result {
    try Subprocess.run([script] + args, environment: ["VAE_DIST_PYTHON": python, "VAE_DIST_NO_PIP": "1"], cwd: tmp)
  }

  /// A run directory whose metrics.jsonl has training lines every 10 steps and an evaluation
  /// line every 50, as `vae-dist train` writes them.
  private func fakeRun(_ name: String, scale: Double) throws -> String {
    let dir = tmp + "/" + name
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var lines: [String] = []
    for step in stride(from: 10, through: 200, by: 10) {
      let loss = scale * (100 + 400 / Double(step)), t = Double(step) * 0.05
      lines.append(
        #"{"step": \#(step), "epoch": 0, "loss": \#(loss), "recon": \#(loss - 5), "kl": 5.0, "world_size": 1, "samples_per_sec": 2000.0, "allreduce_ms": 0.0, "time_s": \#(t)}"#)
      if step % 50 == 0 {
        lines.append(
          #"{"step": \#(step), "epoch": 0, "test_elbo": \#(-loss - 2), "test_recon": \#(loss - 3), "test_kl": 5.0, "time_s": \#(t + 0.01)}"#)
      }
    }
    try (lines.joined(separator: "\n") + "\n").write(toFile: dir + "/metrics.jsonl", atomically: true, encoding: .utf8)
    return dir
  }

  func testTwoRunsMakeOnePNG() throws {
    guard let python = Self.python(thatCan: "import matplotlib") else {
      throw XCTSkip("no python3 with matplotlib (set VAE_DIST_PYTHON or pip install matplotlib)")
    }
    let a = try fakeRun("lr-1e-3", scale: 1), b = try fakeRun("lr-3e-4", scale: 1.1)
    let out = tmp + "/compare.png"
    let r = try plot([a, b, "--out", out], python: python)
    XCTAssertEqual(r.status, 0, "scripts/plot failed:\nstdout:\n\(r.stdout)\nstderr:\n\(r.stderr)")
    let png = try XCTUnwrap(FileManager.default.contents(atPath: out), "\(out) was not written")
    XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "no PNG signature")
    // Four panels with axes, curves and labels: tens of kilobytes; a blank figure is a few.
    XCTAssertGreaterThan(png.count, 20_000)
    XCTAssertLessThan(png.count, 5_000_000)
    // The width and height of the IHDR chunk: a 12 x 8.5 inch figure at 100 dpi.
    let be32 = { (at: Int) in png[at..<at + 4].reduce(0) { $0 << 8 | Int($1) } }
    XCTAssertEqual(be32(16), 1200)
    XCTAssertEqual(be32(20), 850)

    // One run, no --out: RUN/metrics.png.
    let one = try plot([a], python: python)
    XCTAssertEqual(one.status, 0, one.stderr)
    XCTAssertTrue(FileManager.default.fileExists(atPath: a + "/metrics.png"))
  }

  func testMissingRunAndEmptyMetricsAreOneLineErrors() throws {
    guard let python = Self.python(thatCan: "import json") else { throw XCTSkip("no python3") }
    let a = try fakeRun("good", scale: 1)
    let empty = tmp + "/empty"
    try FileManager.default.createDirectory(atPath: empty, withIntermediateDirectories: true)
    _ = FileManager.default.createFile(atPath: empty + "/metrics.jsonl", contents: Data())
    let cases: [([String], String)] = [
      ([a, "runs/missing"], "runs/missing"),
      ([empty], "empty/metrics.jsonl is empty"),
      ([tmp], "has no metrics.jsonl"),
      ([], "no run given"),
      ([a, "--colour"], "--colour"),
    ]
    for (args, mention) in cases {
      let r = try plot(args + ["--out", tmp + "/x.png"], python: python)
      let cmd = "scripts/plot " + args.joined(separator: " ")
      XCTAssertNotEqual(r.status, 0, "\(cmd): exit 0")
      XCTAssertEqual(r.stderrLines.count, 1, "\(cmd): expected one stderr line:\n\(r.stderr)")
      let line = String(r.stderrLines.first ?? "")
      XCTAssertTrue(line.hasPrefix("plot: error: "), "\(cmd): \(line)")
      XCTAssertTrue(line.contains(mention), "\(cmd): error does not mention '\(mention)': \(line)")
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/x.png"))
  }

  func testHelpNeedsNoPython() throws {
    let r = try Subprocess.run([script, "--help"], environment: ["VAE_DIST_PYTHON": "/nonexistent/python"])
    XCTAssertEqual(r.status, 0)
    XCTAssertTrue(r.stdout.contains("Usage: scripts/plot RUN"))
    XCTAssertTrue(r.stdout.contains("--out FILE.png"))
  }
}
