import Foundation
import TestSupport
import XCTest

/// Convolutional configs through the binary: the layer table (`config --model`, `info`), every
/// shape error as one line with exit 1 and nothing written, and a trained conv checkpoint
/// through eval, sample, reconstruct, encode, decode and export.
final class ConvCLITests: BinaryTestCase {
  func write(_ name: String, _ model: String) throws -> String {
    let path = dir + "/" + name
    let text = "name: \(name)\nmodel:\n\(model)\ndata:\n  dataset: synthetic\n  train_limit: 200\ntrain:\n  batch: 20\n  steps: 5\n"
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
  }

  func testLayerTableShowsShapesAndParameters() throws {
    let r = try run(["config", "--model", TestPaths.packageRoot + "/configs/mnist-conv.yaml"])
    XCTAssertEqual(r.status, 0, r.stderr)
    let lines = r.stdout.split(separator: "\n").map(String.init)
    XCTAssertTrue(lines.contains { $0.hasPrefix("encoder.0") && $0.contains("conv 32 k4 s2 p1 relu") && $0.contains("[32, 14, 14]") && $0.hasSuffix("544") }, r.stdout)
    XCTAssertTrue(lines.contains { $0.hasPrefix("decoder.out") && $0.contains("[1, 28, 28]") && $0.hasSuffix("513") }, r.stdout)
    XCTAssertEqual(lines.last, "total: 1691369 parameters, 5032960 multiply-adds per example forward")
  }

  /// Each mistake: exit 1, one line naming the key, the entry and the shapes; no run directory.
  func testShapeErrorsAreOneLineAndWriteNothing() throws {
    let cases: [(String, [String])] = [
      ("  encoder: [conv 8 k40, flatten]\n  decoder: [dense 784]", ["model.encoder[0] (conv 8 k40 s1 p0)", "kernel 40", "[1, 28, 28]"]),
      ("  encoder: [conv 8 k3 s0, flatten]\n  decoder: [dense 784]", ["model.encoder[0]", "stride 0"]),
      ("  encoder: [conv 8 k3 p-1, flatten]\n  decoder: [dense 784]", ["model.encoder[0]", "padding -1"]),
      ("  encoder: [conv 8 k3, dense 10]\n  decoder: [dense 784]", ["model.encoder[1] (dense 10)", "[8, 26, 26]", "flatten"]),
      ("  encoder: [conv 8 k4 s2 p1, flatten]\n  decoder: [dense 392, reshape 8x7x7, deconv 1 k4 s2 p1 op2]",
       ["model.decoder[2]", "output padding 2"]),
      ("  encoder: [conv 8 k4 s2 p1, flatten]\n  decoder: [dense 392, reshape 8x7x7, deconv 1 k3 s2 p1]",
       ["model.decoder: ends with shape [1, 13, 13]", "[1, 28, 28]"]),
    ]
    for (i, (model, mentions)) in cases.enumerated() {
      let config = try write("bad\(i).yaml", model)
      let r = try run(["train", "--config", config, "--out", dir + "/run\(i)", "--quiet"])
      XCTAssertEqual(r.status, 1, "case \(i): \(r.stderr)")
      let lines = r.stderr.split(separator: "\n")
      XCTAssertEqual(lines.count, 1, "case \(i): \(r.stderr)")
      for m in mentions { XCTAssertTrue(r.stderr.contains(m), "case \(i): '\(m)' not in: \(r.stderr)") }
      XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/run\(i)"), "case \(i) wrote a run directory")
    }
  }

  func testConvCheckpointWorksWithEveryCommand() throws {
    let ck = dir + "/run/final.safetensors"
    let t = try run(["train", "--config", TestPaths.packageRoot + "/configs/smoke-conv.yaml", "--steps", "20", "--out", dir + "/run", "--quiet"])
    XCTAssertEqual(t.status, 0, t.stderr)
    let info = try run(["info", ck])
    XCTAssertTrue(info.stdout.contains("encoder.0.weight F32 [4, 1, 4, 4]"), info.stdout)
    XCTAssertTrue(info.stdout.contains("decoder.3.weight F32 [8, 4, 4, 4]"), info.stdout)
    XCTAssertTrue(info.stdout.contains("deconv 1 k3 s2 p1 op1 none"), info.stdout)
    let eval = try run(["eval", "--checkpoint", ck, "--iw", "5", "--limit", "50", "--json"])
    XCTAssertEqual(eval.status, 0, eval.stderr)
    XCTAssertTrue(eval.stdout.contains("\"iw_bound\""), eval.stdout)
    for cmd in [["sample", "--checkpoint", ck, "--out", dir + "/s.png"], ["reconstruct", "--checkpoint", ck, "--out", dir + "/r.png"],
                ["export", "--checkpoint", ck, "--torch", dir + "/w.safetensors"]] {
      let r = try run(cmd)
      XCTAssertEqual(r.status, 0, "\(cmd[0]): \(r.stderr)")
    }
    XCTAssertGreaterThan(try Data(contentsOf: URL(fileURLWithPath: dir + "/s.png")).count, 100)
    let resumed = try run(["train", "--config", TestPaths.packageRoot + "/configs/smoke-conv.yaml", "--steps", "30", "--out", dir + "/run",
                           "--resume", "auto", "--quiet"])
    XCTAssertEqual(resumed.status, 0, resumed.stderr)
    let initialised = try run(["train", "--config", TestPaths.packageRoot + "/configs/smoke-conv.yaml", "--steps", "5",
                               "--out", dir + "/init", "--init", dir + "/w.safetensors", "--quiet"])
    XCTAssertEqual(initialised.status, 0, initialised.stderr)
  }
}
