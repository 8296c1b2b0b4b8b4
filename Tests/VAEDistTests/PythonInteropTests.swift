import Foundation
import TestSupport
import XCTest

@testable import VAE
@testable import VAEData
@testable import VAEDist

/// A checkpoint trained on real MNIST is read by an independent NumPy forward pass
/// (Tests/python/numpy_elbo.py, safetensors + numpy only), whose ELBO with z = μ must agree with
/// `vae-dist eval --mean-z --json`.
final class PythonInteropTests: XCTestCase {
  // Training expects flush-to-zero, which the executable turns on for its thread.
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  private var dir = ""

  override func setUpWithError() throws {
    dir = try TT.makeTempDir("python-interop")
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: dir)
  }

  // MARK: Environment

  /// The first data directory holding a complete `mnist/`: `<package>/data`, `$VAE_DIST_DATA`,
  /// then `<package>/../shared/data` (the machine's shared copy).
  private func mnistDataDirectory() -> (String, DataSplits)? {
    for c in TestPaths.dataDirectoryCandidates {
      if let d = try? DatasetRegistry.load(name: "mnist", dataDirectory: c, trainLimit: 2000) { return (c, d) }
    }
    return nil
  }

  private func requirePython() throws {
    let r = try Subprocess.run(Subprocess.pythonCommand + ["-c", "import numpy, safetensors.numpy"])
    if r.status != 0 {
      throw XCTSkip("python3 with numpy and safetensors is not available: \(r.stderr.prefix(300))")
    }
  }

  // MARK: The test

  func testNumPyForwardPassMatchesEvalMeanZ() throws {
    try requirePython()
    guard let (dataDir, data) = mnistDataDirectory() else {
      throw XCTSkip("MNIST not found in <package>/data, $VAE_DIST_DATA or ../shared/data (run scripts/get-data)")
    }
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)

    // Two hidden layers each way (encoder.0/1, decoder.0/1), pixels / 255 as inputs (binarize:
    // none), so Python can compute the held-out inputs itself.
    let model = ModelConfig(inputSize: 784, hidden: [64, 32], zdim: 5)
    let config = RunConfig(
      name: "interop", model: model, dataset: "mnist", binarize: .none, trainLimit: 2000, batch: 50,
      epochs: nil, steps: 40, adam: AdamConfig(lr: 2e-3), seed: 5, checkpointEvery: 0, evalEvery: 0,
      keepCheckpoints: 1, logEvery: 10)
    let run = dir + "/run"
    let trainer = try TrainingRun(
      config: config, data: data, comm: LocalCommunicator(), runDirectory: run)
    let summary = try trainer.run()
    XCTAssertEqual(summary.steps, 40)
    let checkpoint = run + "/final.safetensors"

    // vae-dist eval, z = μ, first 100 test images.
    let ev = try Subprocess.run(
      [binary, "eval", "--checkpoint", checkpoint, "--data", dataDir, "--limit", "100", "--mean-z", "--json"])
    XCTAssertEqual(ev.status, 0, "eval failed: \(ev.stderr)")
    let evalJSON = try XCTUnwrap(
      try JSONSerialization.jsonObject(with: Data(ev.stdout.utf8)) as? [String: Any], "eval --json: \(ev.stdout)")
    let swiftELBO = try XCTUnwrap((evalJSON["elbo"] as? NSNumber)?.doubleValue)
    let swiftRecon = try XCTUnwrap((evalJSON["recon"] as? NSNumber)?.doubleValue)
    let swiftKL = try XCTUnwrap((evalJSON["kl"] as? NSNumber)?.doubleValue)
    XCTAssertEqual((evalJSON["images"] as? NSNumber)?.intValue, 100)
    XCTAssertEqual((evalJSON["step"] as? NSNumber)?.intValue, 40)

    // The NumPy reference.
    let mnist = dataDir + "/mnist/" + DatasetRegistry.testImagesFile
    let images = FileManager.default.fileExists(atPath: mnist) ? mnist : mnist + ".gz"
    let script = TT.packageRoot + "/Tests/python/numpy_elbo.py"
    let py = try Subprocess.run(Subprocess.pythonCommand + [script, checkpoint, images, "100"])
    XCTAssertEqual(py.status, 0, "numpy_elbo.py failed: \(py.stderr)")
    let pyJSON = try XCTUnwrap(
      try JSONSerialization.jsonObject(with: Data(py.stdout.utf8)) as? [String: Any], "python: \(py.stdout)")
    let pyELBO = try XCTUnwrap((pyJSON["elbo"] as? NSNumber)?.doubleValue)
    let pyRecon = try XCTUnwrap((pyJSON["recon"] as? NSNumber)?.doubleValue)
    let pyKL = try XCTUnwrap((pyJSON["kl"] as? NSNumber)?.doubleValue)
    XCTAssertEqual((pyJSON["count"] as? NSNumber)?.intValue, 100)

    func rel(_ a: Double, _ b: Double) -> Double { abs(a - b) / max(abs(b), 1e-12) }
    XCTAssertLessThan(rel(swiftELBO, pyELBO), 1e-4, "ELBO: vae-dist \(swiftELBO), NumPy \(pyELBO)")
    XCTAssertLessThan(rel(swiftRecon, pyRecon), 1e-4, "recon: vae-dist \(swiftRecon), NumPy \(pyRecon)")
    XCTAssertLessThan(abs(swiftKL - pyKL), 1e-4 * max(abs(pyKL), 1), "KL: vae-dist \(swiftKL), NumPy \(pyKL)")
    // A trained model, not a degenerate one: well below 784·log 2 ≈ 543 nats, KL in use.
    XCTAssertGreaterThan(pyELBO, -400)
    XCTAssertGreaterThan(pyKL, 0.1)

    // Python sees every tensor of the layout, with its shape, as float32 (parameters and Adam moments).
    let tensors = try XCTUnwrap(pyJSON["tensors"] as? [String: [Int]])
    let dtypes = try XCTUnwrap(pyJSON["dtypes"] as? [String: String])
    var expected: [String: [Int]] = [:]
    for spec in model.layout.specs {
      for prefix in ["", "adam.m.", "adam.v."] { expected[prefix + spec.name] = spec.shape }
    }
    XCTAssertEqual(tensors, expected)
    XCTAssertEqual(Set(dtypes.values), ["float32"])
    XCTAssertEqual(tensors["encoder.0.weight"], [64, 784])
    XCTAssertEqual(tensors["encoder.1.weight"], [32, 64])
    XCTAssertEqual(tensors["encoder.mu.weight"], [5, 32])
    XCTAssertEqual(tensors["encoder.logvar.bias"], [5])
    XCTAssertEqual(tensors["decoder.0.weight"], [32, 5])
    XCTAssertEqual(tensors["decoder.1.weight"], [64, 32])
    XCTAssertEqual(tensors["decoder.out.weight"], [784, 64])

    // …and the documented metadata.
    let meta = try XCTUnwrap(pyJSON["metadata"] as? [String: String])
    for key in ["format", "model", "step", "seed", "world_size", "global_batch"] {
      XCTAssertNotNil(meta[key], "metadata key \(key) missing; have \(meta.keys.sorted())")
    }
    XCTAssertEqual(meta["format"], "vae-dist/1")
    XCTAssertEqual(meta["step"], "40")
    XCTAssertEqual(meta["seed"], "5")
    XCTAssertEqual(meta["world_size"], "1")
    XCTAssertEqual(meta["global_batch"], "50")
    let modelObj = try XCTUnwrap(
      try JSONSerialization.jsonObject(with: Data((meta["model"] ?? "").utf8)) as? [String: Any])
    XCTAssertEqual(modelObj["zdim"] as? Int, 5)
    XCTAssertEqual(modelObj["hidden"] as? [Int], [64, 32])
    XCTAssertEqual(modelObj["decoder_hidden"] as? [Int], [32, 64])
    XCTAssertEqual(modelObj["input_size"] as? Int, 784)
    XCTAssertEqual(modelObj["likelihood"] as? String, "bernoulli")

    // Re-saved by the official library (which writes the tensors in its own order, keeping the
    // metadata), the checkpoint still loads: its checksums are per tensor.
    let resaved = dir + "/resaved.safetensors"
    let r = try Subprocess.python(
      "import sys\nfrom safetensors import safe_open\nfrom safetensors.numpy import load_file, save_file\n"
        + "t = load_file(sys.argv[1])\nwith safe_open(sys.argv[1], framework='np') as f: m = f.metadata()\n"
        + "save_file(dict(reversed(list(t.items()))), sys.argv[2], metadata=m)\n", [checkpoint, resaved])
    XCTAssertEqual(r.status, 0, r.stderr)
    let original = try Checkpoint.load(path: checkpoint), again = try Checkpoint.load(path: resaved)
    XCTAssertNotEqual(try TT.bytes(checkpoint), try TT.bytes(resaved), "the re-save should change the layout")
    XCTAssertEqual(again.params.toArray(), original.params.toArray())
    XCTAssertEqual(again.adamM?.toArray(), original.adamM?.toArray())
  }
}

// MARK: - Subprocesses and the vae-dist binary
