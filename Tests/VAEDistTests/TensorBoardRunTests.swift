import Foundation
import TestSupport
import VAE
import XCTest

@testable import VAEDist

/// A training run's TensorBoard events, read back by TensorBoard's own EventAccumulator, hold
/// the same numbers as metrics.jsonl (to float32), and a picture at every evaluation. Skipped,
/// with the reason, where no Python can import tensorboard (scripts/test installs it in .venv).
final class TensorBoardRunTests: XCTestCase {
  // Training expects flush-to-zero, which the executable turns on for its thread.
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  func testEventFilesMatchMetrics() throws {
    let probe = try Subprocess.run(Subprocess.pythonCommand + ["-c", "import tensorboard"])
    guard probe.status == 0 else { throw XCTSkip("python cannot import tensorboard: \(probe.stderr.suffix(200))") }
    let dir = try TT.makeTempDir("tb")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var c = TT.tinyConfig(steps: 200, checkpointEvery: 100)
    c.logEvery = 10
    c.evalEvery = 100
    try TT.train(c, dir: dir)
    let script = """
      import json, sys
      from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
      acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
      acc.Reload()
      tags = acc.Tags()
      out = {"scalars": {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags["scalars"]},
             "images": {t: [[e.step, e.width, e.height] for e in acc.Images(t)] for t in tags["images"]}}
      print(json.dumps(out))
      """
    let r = try Subprocess.python(script, [dir])
    XCTAssertEqual(r.status, 0, r.stderr)
    let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], r.stdout)
    let scalars = try XCTUnwrap(obj["scalars"] as? [String: [[Double]]])
    let images = try XCTUnwrap(obj["images"] as? [String: [[Double]]])
    let lines = try TT.metricsLines(dir)
    var compared = 0
    for (key, tag) in [("loss", "train/loss"), ("recon", "train/recon"), ("kl", "train/kl"), ("lr", "train/lr"),
                       ("grad_norm", "train/grad_norm"), ("samples_per_sec", "train/samples_per_sec"),
                       ("allreduce_ms", "train/allreduce_ms"), ("test_elbo", "test/elbo"), ("test_kl", "test/kl")] {
      let expected = lines.compactMap { l -> [Double]? in
        guard let v = l[key] as? Double, let s = l["step"] as? Int else { return nil }
        return [Double(s), Double(Float(v))]
      }
      XCTAssertFalse(expected.isEmpty, key)
      // Event files hold float32: equal as float32 (the JSON round trip may move the last bits
      // of the Double it is printed as).
      let got = (scalars[tag] ?? []).map { [$0[0], Double(Float($0[1]))] }
      XCTAssertEqual(got, expected, tag)
      compared += expected.count
    }
    XCTAssertEqual(lines.filter { $0["loss"] != nil }.count, 20)
    XCTAssertGreaterThan(compared, 100)
    // Evaluations at 100 and at the end (200): 64 samples in an 8 × 8 grid of 28 × 28 tiles.
    XCTAssertEqual(images["samples"]?.map { $0[0] }, [100, 200])
    XCTAssertEqual(images["samples"]?.first?[1], Double(8 * 28 + 9 * 2))
    XCTAssertEqual(images["reconstructions"]?.count, 2)
  }
}
