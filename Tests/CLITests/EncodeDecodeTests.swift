import Formats
import Foundation
import TestSupport
import XCTest

/// `vae-dist encode` and `decode`: latent codes in and out as .npy files, compared with an
/// independent NumPy forward pass of the checkpoint (Tests/python/numpy_forward.py), across
/// chunk boundaries, and one-line errors that leave no output behind.
final class EncodeDecodeTests: XCTestCase {
  /// A fresh directory per test, removed with it.
  var dir: TempDir!
  var tmp: String { dir.path }

  override func setUpWithError() throws { dir = try TempDir() }
  override func tearDownWithError() throws { dir = nil }

  /// Runs vae-dist in the test's directory with OpenBLAS on one thread.
  func vaeDist(_ args: [String]) throws -> Subprocess.Result {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    return try Subprocess.run([binary] + args, environment: ["OPENBLAS_NUM_THREADS": "1"], cwd: tmp)
  }

  /// Trains `yaml` (a few dozen steps) into runs/<name>; returns its final checkpoint.
  func train(_ yaml: String, _ name: String, extra: [String] = []) throws -> String {
    let config = tmp + "/\(name).yaml"
    try yaml.write(toFile: config, atomically: true, encoding: .utf8)
    let r = try vaeDist(
      ["train", "--config", config, "--out", tmp + "/runs/\(name)", "--progress", "none", "--no-tensorboard"] + extra)
    XCTAssertEqual(r.status, 0, r.stderr)
    return tmp + "/runs/\(name)/final.safetensors"
  }

  /// A 784-input model (hidden [32], zdim 3, Bernoulli) on the synthetic 28 × 28 images.
  func imageModel() throws -> String {
    try train(
      """
      name: codes
      model:
        hidden: [32]
        zdim: 3
      data:
        dataset: synthetic
        train_limit: 500
      train:
        batch: 50
        steps: 30
        seed: 4
        eval_every: 0
        log_every: 10
      """, "codes")
  }

  /// numpy_forward.py's comparison of `files` with its own forward pass, by output name.
  func numpy(_ mode: String, _ checkpoint: String, _ input: String, _ files: [String]) throws -> [String: [String: Any]] {
    let probe = try Subprocess.run(Subprocess.pythonCommand + ["-c", "import numpy, safetensors.numpy"])
    guard probe.status == 0 else { throw XCTSkip("python3 with numpy and safetensors is not available") }
    let script = TestPaths.packageRoot + "/Tests/python/numpy_forward.py"
    let r = try Subprocess.run(Subprocess.pythonCommand + [script, mode, checkpoint, input] + files)
    XCTAssertEqual(r.status, 0, "numpy_forward.py: \(r.stderr)")
    return try XCTUnwrap(
      try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: [String: Any]], r.stdout)
  }

  /// One output as NumPy read it: the shape and dtype np.load saw, agreement within 1e-5.
  func assertAgrees(_ o: [String: Any]?, shape: [Int], _ what: String, line: UInt = #line) {
    XCTAssertEqual(o?["shape"] as? [Int], shape, what, line: line)
    XCTAssertEqual(o?["dtype"] as? String, "float32", what, line: line)
    let rel = o?["rel"] as? Double ?? .infinity
    XCTAssertLessThanOrEqual(rel, 1e-5, "\(what): relative difference from NumPy", line: line)
  }

  func bytes(_ path: String) throws -> Data { try Data(contentsOf: URL(fileURLWithPath: path)) }

  /// Two float32 .npy files of one shape agree to float32 rounding: the largest difference is at
  /// most 1e-5 of the largest value. (Not bit for bit: OpenBLAS picks its kernels by the number of
  /// rows, so a row's sums may round differently in a chunk of another size.)
  func assertClose(_ a: String, _ b: String, _ what: String, line: UInt = #line) throws {
    let fa = try NPYFile(path: tmp + "/" + a), fb = try NPYFile(path: tmp + "/" + b)
    XCTAssertEqual(fa.header.shape, fb.header.shape, what, line: line)
    let va = try XCTUnwrap(fa.float32Values), vb = try XCTUnwrap(fb.float32Values)
    let scale = va.map(abs).max() ?? 0
    let diff = zip(va, vb).map { abs($0 - $1) }.max() ?? .infinity
    XCTAssertLessThanOrEqual(diff, 1e-5 * scale, "\(what): largest difference \(diff), largest value \(scale)", line: line)
  }

  /// 37 pseudo-random 28 × 28 images: as uint8, and as float32 values in [0, 1].
  func writeImages() throws -> (uint8: String, float32: String) {
    let pixels: [UInt8] = (0..<(37 * 784)).map { (i: Int) -> UInt8 in UInt8(truncatingIfNeeded: (i * 2_654_435_761) >> 7) }
    try NPY.write(path: tmp + "/x8.npy", shape: [37, 28, 28], values: pixels)
    try NPY.write(path: tmp + "/xf.npy", shape: [37, 784], values: pixels.map { (p: UInt8) -> Float in Float(p) / 300 + 0.1 })
    return (tmp + "/x8.npy", tmp + "/xf.npy")
  }

  /// Posterior means and log-variances of uint8 and float32 input agree with NumPy to 1e-5,
  /// encoded 16 rows at a time (37 rows: three chunks, the last partial), and agree with those
  /// of one chunk.
  func testEncodeAgreesWithNumPyAcrossChunks() throws {
    for command in ["encode", "decode"] {
      let help = try vaeDist([command, "--help"]).stdout
      XCTAssertFalse(help.contains("chunk-rows"), "the chunk size is a test hook, not in --help: \(help)")
    }
    let ck = try imageModel()
    let (x8, xf) = try writeImages()
    for (x, name) in [(x8, "uint8"), (xf, "float32")] {
      let r = try vaeDist(["encode", "--checkpoint", ck, "--input", x, "--out", "mu.npy", "--logvar", "lv.npy",
                           "--chunk-rows", "16", "--threads", "1"])
      XCTAssertEqual(r.status, 0, r.stderr)
      XCTAssertEqual(r.stdout, "wrote posterior means [37, 3] to mu.npy and log-variances to lv.npy\n")
      let cmp = try numpy("encode", ck, x, [tmp + "/mu.npy", tmp + "/lv.npy"])
      assertAgrees(cmp["mu"], shape: [37, 3], "\(name) means")
      assertAgrees(cmp["logvar"], shape: [37, 3], "\(name) log-variances")
      let whole = try vaeDist(["encode", "--checkpoint", ck, "--input", x, "--out", "whole.npy"])
      XCTAssertEqual(whole.status, 0, whole.stderr)
      try assertClose("whole.npy", "mu.npy", "\(name): one chunk vs three")
    }
  }

  /// Decoding the means gives [N, 28, 28] Bernoulli probabilities in [0, 1] equal to NumPy's
  /// σ(decoder(z)) to 1e-5, whatever the chunk size.
  func testDecodeOfEncodedMeansIsImagesInUnitInterval() throws {
    let ck = try imageModel()
    let x = try writeImages().uint8
    XCTAssertEqual(try vaeDist(["encode", "--checkpoint", ck, "--input", x, "--out", "mu.npy"]).status, 0)
    let r = try vaeDist(["decode", "--checkpoint", ck, "--input", "mu.npy", "--out", "x.npy", "--chunk-rows", "10"])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertEqual(r.stdout, "wrote decoder means [37, 28, 28] to x.npy\n")
    let mean = try numpy("decode", ck, tmp + "/mu.npy", [tmp + "/x.npy"])["mean"]
    assertAgrees(mean, shape: [37, 28, 28], "decoder means")
    let (lo, hi) = (mean?["min"] as? Double ?? -1, mean?["max"] as? Double ?? 2)
    XCTAssertTrue(lo >= 0 && hi <= 1 && hi > lo, "Bernoulli means span [\(lo), \(hi)]")
    XCTAssertEqual(try vaeDist(["decode", "--checkpoint", ck, "--input", "mu.npy", "--out", "y.npy"]).status, 0)
    try assertClose("y.npy", "x.npy", "one chunk vs four")
  }

  /// A Gaussian model trained from a float32 file of [4, 6] examples decodes to its means in
  /// that shape (not clamped to [0, 1]); without the training file, rows of input_size.
  func testGaussianModelFromAFileDecodesInTheFilesShape() throws {
    let values: [Float] = (0..<(200 * 24)).map { (i: Int) -> Float in Float((i * 7919) % 1000) / 250 - 2 }
    try NPY.write(path: tmp + "/train.npy", shape: [200, 4, 6], values: values)
    try NPY.write(path: tmp + "/x.npy", shape: [10, 4, 6], values: Array(values.prefix(240)))
    let ck = try train(
      """
      data:
        train: train.npy
        test_fraction: 0.1
      model:
        hidden: [16]
        zdim: 2
        likelihood: gaussian
      train:
        batch: 20
        steps: 20
        eval_every: 0
      """, "gauss")
    XCTAssertEqual(try vaeDist(["encode", "--checkpoint", ck, "--input", "x.npy", "--out", "z.npy"]).status, 0)
    assertAgrees(try numpy("encode", ck, tmp + "/x.npy", [tmp + "/z.npy"])["mu"], shape: [10, 2], "means")
    let r = try vaeDist(["decode", "--checkpoint", ck, "--input", "z.npy", "--out", "out.npy"])
    XCTAssertEqual(r.status, 0, r.stderr)
    let mean = try numpy("decode", ck, tmp + "/z.npy", [tmp + "/out.npy"])["mean"]
    assertAgrees(mean, shape: [10, 4, 6], "Gaussian means")
    XCTAssertLessThan(mean?["min"] as? Double ?? 0, 0, "a Gaussian mean below 0 is written as it is, not clamped")
    try FileManager.default.removeItem(atPath: tmp + "/train.npy")
    let flat = try vaeDist(["decode", "--checkpoint", ck, "--input", "z.npy", "--out", "flat.npy"])
    XCTAssertEqual(flat.stdout, "wrote decoder means [10, 24] to flat.npy\n", flat.stderr)
  }

  /// Bad inputs: one line naming the file or flag, a non-zero exit, and no output left behind:
  /// the directory holds what it held before (an existing --out kept as it was), also when the
  /// error comes after two chunks were written.
  func testBadInputsAreOneLineErrorsAndLeaveNoOutput() throws {
    let ck = try imageModel()
    let cvaeYAML = try String(contentsOfFile: TestPaths.packageRoot + "/configs/smoke-cvae.yaml", encoding: .utf8)
    let cvae = try train(cvaeYAML, "cvae", extra: ["--steps", "2"])
    try NPY.write(path: tmp + "/narrow.npy", shape: [5, 10], values: [Float](repeating: 0.5, count: 50))
    var f64 = NPY.encodeHeader(dtype: .float32, shape: [5, 784])  // then '<f4' → '<f8', 8-byte items
    let descr = try XCTUnwrap((0..<(f64.count - 3)).first { f64[$0..<($0 + 3)].elementsEqual("<f4".utf8) })
    f64[descr + 2] = UInt8(ascii: "8")
    f64 += [UInt8](repeating: 0, count: 5 * 784 * 8)
    try Data(f64).write(to: URL(fileURLWithPath: tmp + "/f64.npy"))
    var late = [Float](repeating: 0.5, count: 40 * 784)
    late[35 * 784 + 7] = .nan
    try NPY.write(path: tmp + "/late-nan.npy", shape: [40, 784], values: late)
    try NPY.write(path: tmp + "/z4.npy", shape: [5, 4], values: [Float](repeating: 0, count: 20))
    try NPY.write(path: tmp + "/z8.npy", shape: [5, 3], values: [UInt8](repeating: 0, count: 15))
    try Data("keep".utf8).write(to: URL(fileURLWithPath: tmp + "/out.npy"))
    let encode = ["encode", "--checkpoint", ck, "--out", "out.npy", "--logvar", "lv.npy", "--chunk-rows", "16", "--input"]
    let decode = ["decode", "--checkpoint", ck, "--out", "out.npy", "--chunk-rows", "16", "--input"]
    let cases: [([String], [String])] = [
      (encode + ["narrow.npy"], ["narrow.npy: rows of 10 values (shape (5, 10)), but ", "final.safetensors has model.input_size 784"]),
      (encode + ["f64.npy"], ["f64.npy: dtype '<f8' (float64) is not supported", "x.astype(np.float32)"]),
      (encode + ["missing.npy"], ["missing.npy: cannot open"]),
      (encode + ["late-nan.npy"], ["late-nan.npy: row 35, column 7 is nan: expected finite values"]),
      (decode + ["z4.npy"], ["z4.npy: rows of 4 values (shape (5, 4)), but ", "final.safetensors has model.zdim 3"]),
      (decode + ["z8.npy"], ["z8.npy: uint8 values, expected float32 latent codes"]),
      (decode + ["late-nan.npy"], ["late-nan.npy: rows of 784 values", "model.zdim 3"]),
      (["encode", "--checkpoint", cvae, "--input", "narrow.npy", "--out", "out.npy"],
       ["final.safetensors: a cvae checkpoint, but vae-dist encode needs a vae"]),
      (["decode", "--checkpoint", cvae, "--input", "z4.npy", "--out", "out.npy"],
       ["final.safetensors: a cvae checkpoint, but vae-dist decode needs a vae"]),
      (["encode", "--checkpoint", "nope.safetensors", "--input", "narrow.npy", "--out", "out.npy"], ["nope.safetensors"]),
      (["encode", "--checkpoint", ck, "--input", "narrow.npy", "--out", "a.npy", "--logvar", "a.npy"],
       ["--logvar: a.npy is also --out"]),
      (["decode", "--checkpoint", ck, "--input", "z4.npy", "--out", "out.npy", "--chunk-rows", "0"], ["--chunk-rows"]),
    ]
    let before = try FileManager.default.contentsOfDirectory(atPath: tmp).sorted()
    for (args, mentions) in cases {
      let r = try vaeDist(args)
      let cmd = "vae-dist " + args.joined(separator: " ")
      XCTAssertNotEqual(r.status, 0, cmd)
      XCTAssertEqual(r.stderrLines.count, 1, "\(cmd): \(r.stderr)")
      for m in mentions { XCTAssertTrue(r.stderr.contains("vae-dist: error: ") && r.stderr.contains(m), "\(cmd): \(r.stderr)") }
      XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp).sorted(), before, cmd)
      XCTAssertEqual(try bytes(tmp + "/out.npy"), Data("keep".utf8), cmd)
    }
  }
}
