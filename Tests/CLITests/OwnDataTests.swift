import Formats
import Foundation
import TestSupport
import XCTest

/// Data from files (`data.train`, `data.test`, `data.test_fraction`): the same pipeline as the
/// named data sets, and one-line errors for files that cannot be used.
final class OwnDataTests: XCTestCase {
  /// A fresh directory per test, removed with it.
  var dir: TempDir!
  var tmp: String { dir.path }

  override func setUpWithError() throws { dir = try TempDir() }
  override func tearDownWithError() throws { dir = nil }

  func train(_ yaml: String, _ name: String, extra: [String] = []) throws -> Subprocess.Result {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let config = tmp + "/\(name).yaml"
    try yaml.write(toFile: config, atomically: true, encoding: .utf8)
    var env = ["OPENBLAS_NUM_THREADS": "1"]
    if let data = TestPaths.mnistDataDirectory { env["VAE_DIST_DATA"] = data }
    return try Subprocess.run(
      [binary, "train", "--config", config, "--out", tmp + "/runs/\(name)", "--progress", "none", "--no-tensorboard"] + extra,
      environment: env, cwd: tmp)
  }

  static let body = """
    model:
      hidden: [32]
      zdim: 4
    train:
      batch: 50
      steps: 30
      seed: 5
      log_every: 10
      eval_every: 0

    """

  /// The model and Adam tensors of a run's final checkpoint, by name.
  func tensors(_ name: String) throws -> [String: [UInt8]] {
    let file = try SafeTensors.read(path: tmp + "/runs/\(name)/final.safetensors")
    return Dictionary(uniqueKeysWithValues: file.tensors.map { ($0.name, $0.bytes) })
  }

  /// MNIST named by its IDX paths, and converted to .npy arrays ([N, 28, 28] uint8), trains to
  /// exactly the tensors of `dataset: mnist` with the same seed: one pipeline, not two.
  func testMNISTFromFilesTrainsToTheNamedDataSetsTensors() throws {
    let mnist = try XCTUnwrap(TestPaths.mnistDataDirectory, "MNIST not found: run scripts/get-data") + "/mnist"
    let trainIDX = mnist + "/train-images-idx3-ubyte.gz", testIDX = mnist + "/t10k-images-idx3-ubyte.gz"
    for (idx, npy) in [(trainIDX, tmp + "/train.npy"), (testIDX, tmp + "/test.npy")] {
      let images = try IDX.readImages(path: idx)
      try NPY.write(path: npy, shape: [images.count, images.rows, images.cols], values: images.pixels)
    }
    let named = try train("data:\n  dataset: mnist\n" + Self.body, "named")
    XCTAssertEqual(named.status, 0, named.stderr)
    let byIDX = try train("data:\n  train: \(trainIDX)\n  test: \(testIDX)\n" + Self.body, "idx")
    XCTAssertEqual(byIDX.status, 0, byIDX.stderr)
    let byNPY = try train("data:\n  train: train.npy\n  test: test.npy\n" + Self.body, "npy")
    XCTAssertEqual(byNPY.status, 0, byNPY.stderr)
    let reference = try tensors("named")
    XCTAssertEqual(reference.count, 30, "10 model tensors and their two Adam moments")
    XCTAssertEqual(try tensors("idx"), reference)
    XCTAssertEqual(try tensors("npy"), reference)
    let config = try String(contentsOfFile: tmp + "/runs/npy/config.yaml", encoding: .utf8)
    XCTAssertTrue(config.contains("train: \"\(tmp)/train.npy\""), "relative paths resolve against the config: \(config)")
    XCTAssertTrue(config.contains("input_size: 784"), config)
  }

  /// Float data, a seeded held-out fraction, and the width from the file: a 2-D float32 array
  /// of 64-wide rows trains a 64-input model; the split is recorded and repeatable.
  func testFloatVectorsWithAHeldOutFraction() throws {
    var values = [Float](repeating: 0, count: 600 * 64)
    for i in values.indices { values[i] = Float((i * 7919) % 1000) / 1000 }
    try NPY.write(path: tmp + "/vectors.npy", shape: [600, 64], values: values)
    let yaml = "data:\n  train: vectors.npy\n  test_fraction: 0.1\n" + Self.body
    let a = try train(yaml, "a"), b = try train(yaml, "b")
    XCTAssertEqual(a.status, 0, a.stderr)
    XCTAssertEqual(try tensors("a"), try tensors("b"))
    let config = try String(contentsOfFile: tmp + "/runs/a/config.yaml", encoding: .utf8)
    XCTAssertTrue(config.contains("input_size: 64") && config.contains("test_fraction: 0.1"), config)
    // eval reads the held-out split the checkpoint's config names, or the file --test-file names.
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let ck = tmp + "/runs/a/final.safetensors"
    let own = try Subprocess.run([binary, "eval", "--checkpoint", ck], cwd: tmp)
    XCTAssertTrue(own.stdout.contains("60 test images"), own.stdout + own.stderr)
    try NPY.write(path: tmp + "/other.npy", shape: [37, 64], values: Array(values[..<(37 * 64)]))
    let other = try Subprocess.run([binary, "eval", "--checkpoint", ck, "--test-file", tmp + "/other.npy"], cwd: tmp)
    XCTAssertTrue(other.stdout.contains("37 test images"), other.stdout + other.stderr)
  }

  /// Continuous data under a Gaussian with a learned variance: the model trains, and `eval`'s
  /// text says its ELBO is a density (a Bernoulli model's does not); `--json` keeps its fields.
  func testLearnedSigmaTrainsAndEvalSaysTheELBOIsADensity() throws {
    var values = [Float](repeating: 0, count: 600 * 64)
    for i in values.indices { values[i] = (Float((i * 7919) % 1000) + 0.5) / 1000 }
    try NPY.write(path: tmp + "/vectors.npy", shape: [600, 64], values: values)
    let data = "data:\n  train: vectors.npy\n  test_fraction: 0.1\n"
    let gaussian = data + Self.body.replacingOccurrences(
      of: "model:\n", with: "model:\n  likelihood: gaussian\n  sigma: learned\n")
    for (name, yaml) in [("gaussian", gaussian), ("bernoulli", data + Self.body)] {
      XCTAssertEqual(try train(yaml, name).status, 0, name)
    }
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    func eval(_ name: String, _ extra: [String] = []) throws -> String {
      let r = try Subprocess.run([binary, "eval", "--checkpoint", tmp + "/runs/\(name)/final.safetensors"] + extra)
      XCTAssertEqual(r.status, 0, r.stderr)
      return r.stdout
    }
    let note = "(a density: continuous data, may be positive)"
    XCTAssertTrue(try eval("gaussian").contains("nats/image (reconstruction"), "the ELBO line")
    XCTAssertTrue(try eval("gaussian").contains(note))
    XCTAssertFalse(try eval("bernoulli").contains(note))
    let json = try eval("gaussian", ["--json"])
    XCTAssertFalse(json.contains("density"), json)
    XCTAssertTrue(json.hasPrefix("{\"checkpoint\": "), json)
  }

  /// Files that cannot be used: one line naming the file and what was expected, exit 1, and
  /// no run directory written.
  func testBadDataFilesAreOneLineErrors() throws {
    try NPY.write(path: tmp + "/wide.npy", shape: [100, 10], values: [Float](repeating: 0.5, count: 1000))
    try NPY.write(path: tmp + "/narrow.npy", shape: [100, 9], values: [Float](repeating: 0.5, count: 900))
    var bad = [Float](repeating: 0.5, count: 1000)
    bad[3 * 10 + 4] = 1.5
    try NPY.write(path: tmp + "/outside.npy", shape: [100, 10], values: bad)
    bad[3 * 10 + 4] = .nan
    try NPY.write(path: tmp + "/nan.npy", shape: [100, 10], values: bad)
    try Data([0x93, 0x4E, 0x55, 0x4D, 0x50, 0x59, 1, 0]).write(to: URL(fileURLWithPath: tmp + "/cut.npy"))
    try FileManager.default.createDirectory(atPath: tmp + "/dir.npy", withIntermediateDirectories: true)
    let cases: [(String, String)] = [
      ("  train: wide.npy\n  test: narrow.npy\n", "narrow.npy: examples of shape [9], but"),
      ("  train: outside.npy\n  test_fraction: 0.2\n", "outside.npy: row 3, column 4 is 1.5, outside [0, 1]"),
      ("  train: nan.npy\n  test_fraction: 0.2\n", "nan.npy: row 3, column 4 is nan: expected finite values"),
      ("  train: cut.npy\n  test_fraction: 0.2\n", "cut.npy"),
      ("  train: dir.npy\n  test_fraction: 0.2\n", "dir.npy"),
      ("  train: missing.npy\n  test_fraction: 0.2\n", "missing.npy"),
      ("  train: wide.npy\n", "data.train needs held-out data"),
      ("  train: wide.npy\n  test_fraction: 0.2\n  dataset: mnist\n", "data.dataset and data.train both given"),
    ]
    for (i, (data, says)) in cases.enumerated() {
      let r = try train("data:\n" + data + Self.body, "bad\(i)")
      XCTAssertEqual(r.status, 1, "\(data): \(r.stderr)")
      let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("vae-dist: error:") }
      XCTAssertEqual(errors.count, 1, "\(data): \(r.stderr)")
      XCTAssertTrue(errors.first?.contains(says) ?? false, "\(data): \(r.stderr)")
      XCTAssertFalse(FileManager.default.fileExists(atPath: tmp + "/runs/bad\(i)"), data)
    }
    let given = try train("data:\n  train: wide.npy\n  test_fraction: 0.2\n" + Self.body.replacingOccurrences(of: "model:\n", with: "model:\n  input_size: 11\n"), "given")
    XCTAssertTrue(given.stderr.contains("model.input_size is 11, but \(tmp)/wide.npy has examples of 10 values"), given.stderr)
  }

  /// Rows of shape [H, W, 3] are colour images: `sample` draws H × W tiles in RGB (PNG colour
  /// type 2), taking the shape from the training file the checkpoint's config names.
  func testColourRowsAreSampledAsColourTiles() throws {
    var values = [Float](repeating: 0, count: 200 * 6 * 5 * 3)
    for i in values.indices { values[i] = Float((i * 37) % 101) / 100 }
    try NPY.write(path: tmp + "/rgb.npy", shape: [200, 6, 5, 3], values: values)
    let yaml = "model:\n  hidden: [16]\n  zdim: 2\n  likelihood: gaussian\n  sigma: learned\n"
      + "data:\n  train: rgb.npy\n  test_fraction: 0.1\ntrain:\n  batch: 20\n  steps: 10\n"
    let r = try train(yaml, "rgb")
    XCTAssertEqual(r.status, 0, r.stderr)
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let png = tmp + "/rgb.png"
    let s = try Subprocess.run(
      [binary, "sample", "--checkpoint", tmp + "/runs/rgb/final.safetensors", "--out", png, "--n", "4"], cwd: tmp)
    XCTAssertEqual(s.status, 0, s.stderr)
    let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: png)))
    func be32(_ at: Int) -> Int { bytes[at..<(at + 4)].reduce(0) { $0 << 8 | Int($1) } }
    // 2 × 2 tiles of 5 wide × 6 high with 2-pixel borders; colour type 2 (RGB).
    XCTAssertEqual(be32(16), 2 * (5 + 2) + 2)
    XCTAssertEqual(be32(20), 2 * (6 + 2) + 2)
    XCTAssertEqual(bytes[25], 2)
  }

  /// data.standardize: the checkpoint stores the training file's per-dimension mean and standard
  /// deviation (as NumPy computes them, to float precision), training and `eval` report the same
  /// ELBO in the data's own units, and a Bernoulli model refuses standardised data.
  func testStandardizationIsStoredAndTheELBOStaysInTheDataUnits() throws {
    var values = [Float](repeating: 0, count: 300 * 12)
    for i in values.indices { values[i] = Float((i * 7919) % 997) / 99.7 + Float(i % 12) }
    try NPY.write(path: tmp + "/train.npy", shape: [250, 12], values: Array(values[..<(250 * 12)]))
    try NPY.write(path: tmp + "/test.npy", shape: [50, 12], values: Array(values[(250 * 12)...]))
    let yaml = "model:\n  hidden: [16]\n  zdim: 2\n  likelihood: gaussian\n  sigma: learned\n"
      + "data:\n  train: train.npy\n  test: test.npy\n  standardize: true\ntrain:\n  batch: 25\n  steps: 30\n"
    let r = try train(yaml, "std")
    XCTAssertEqual(r.status, 0, r.stderr)
    let ck = try SafeTensors.read(path: tmp + "/runs/std/final.safetensors")
    let mean = floatsFromBytes(try XCTUnwrap(ck.tensor("data.mean")).bytes)
    let std = floatsFromBytes(try XCTUnwrap(ck.tensor("data.std")).bytes)
    let numpy = try Subprocess.python(
      "import numpy as np, sys; x = np.load(sys.argv[1]).astype(np.float64); "
        + "print(' '.join(repr(float(v)) for v in x.mean(0)), '|', ' '.join(repr(float(v)) for v in x.std(0)))", [tmp + "/train.npy"])
    guard numpy.status == 0 else { throw XCTSkip("no NumPy: \(numpy.stderr)") }
    let parts = numpy.stdout.split(separator: "|").map { $0.split(whereSeparator: \.isWhitespace).compactMap { Double($0) } }
    XCTAssertEqual(parts.map(\.count), [12, 12], numpy.stdout)
    guard parts.map(\.count) == [12, 12] else { return }
    for j in 0..<12 {
      XCTAssertEqual(Double(mean[j]), parts[0][j], accuracy: 1e-5 * max(1, abs(parts[0][j])))
      XCTAssertEqual(Double(std[j]), parts[1][j], accuracy: 1e-5 * max(1, abs(parts[1][j])))
    }
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let e = try Subprocess.run([binary, "eval", "--checkpoint", tmp + "/runs/std/final.safetensors", "--json"], cwd: tmp)
    XCTAssertEqual(e.status, 0, e.stderr)
    let evalELBO = try XCTUnwrap(
      (try JSONSerialization.jsonObject(with: Data(e.stdout.utf8)) as? [String: Any])?["elbo"] as? Double)
    let line = try XCTUnwrap(r.stdout.split(separator: "\n").last { $0.hasPrefix("held-out ELBO") })
    let trained = try XCTUnwrap(Double(line.split(separator: " ")[2]))
    XCTAssertEqual(evalELBO, trained, accuracy: 0.006, "train's and eval's ELBO in the same units")
    // encode reads rows as training standardised them; decode puts the means back in data units.
    let ckPath = tmp + "/runs/std/final.safetensors"
    let enc = try Subprocess.run([binary, "encode", "--checkpoint", ckPath, "--input", tmp + "/test.npy", "--out", tmp + "/z.npy"], cwd: tmp)
    XCTAssertEqual(enc.status, 0, enc.stderr)
    let dec = try Subprocess.run([binary, "decode", "--checkpoint", ckPath, "--input", tmp + "/z.npy", "--out", tmp + "/x.npy"], cwd: tmp)
    XCTAssertEqual(dec.status, 0, dec.stderr)
    let decoded = try NPYFile(path: tmp + "/x.npy")
    let xs = try XCTUnwrap(decoded.float32Values)
    XCTAssertEqual(decoded.header.shape, [50, 12])
    for j in 0..<12 {
      let columnMean = (0..<50).reduce(0.0) { $0 + Double(xs[$1 * 12 + j]) } / 50
      XCTAssertEqual(columnMean, Double(mean[j]), accuracy: Double(std[j]), "column \(j): decoded means in the data's units")
    }
    let bernoulli = try train(yaml.replacingOccurrences(of: "  likelihood: gaussian\n  sigma: learned\n", with: ""), "stdb")
    XCTAssertEqual(bernoulli.status, 1)
    XCTAssertTrue(bernoulli.stderr.contains("data.standardize: standardised values are not in [0, 1]"), bernoulli.stderr)
  }
}
