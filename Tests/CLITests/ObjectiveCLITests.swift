import Formats
import Foundation
import TestSupport
import XCTest

/// Objectives and schedules from the command line: a run resumed mid-warm-up and mid-schedule
/// ends on the uninterrupted run's tensors; bad values are one line.
final class ObjectiveCLITests: BinaryTestCase {
  let schedules = ["--beta", "2", "--kl-warmup", "50", "--lr-schedule", "cosine", "--lr-warmup", "10"]

  func testResumeMidWarmupAndMidScheduleEqualsTheUninterruptedRun() throws {
    let config = TestPaths.packageRoot + "/configs/smoke.yaml"
    let common = ["train", "--config", config, "--steps", "60", "--threads", "1", "--quiet"] + schedules
    let full = try run(common + ["--out", dir + "/full", "--checkpoint-every", "30"])
    XCTAssertEqual(full.status, 0, full.stderr)
    let resumed = try run(common + ["--out", dir + "/resumed", "--resume", dir + "/full/checkpoints/step-00000030.safetensors"])
    XCTAssertEqual(resumed.status, 0, resumed.stderr)
    let a = try SafeTensors.read(path: dir + "/full/final.safetensors")
    let b = try SafeTensors.read(path: dir + "/resumed/final.safetensors")
    XCTAssertEqual(a.tensors.count, b.tensors.count)
    for (x, y) in zip(a.tensors.sorted { $0.name < $1.name }, b.tensors.sorted { $0.name < $1.name }) {
      XCTAssertEqual(x.name, y.name)
      XCTAssertTrue(x.bytes == y.bytes, "\(x.name) differs after resuming at step 30 (weight 1.2 of 2, cosine rate)")
    }
    // And the schedules did act: the plain run ends elsewhere.
    let plain = try run(["train", "--config", config, "--steps", "60", "--threads", "1", "--quiet", "--out", dir + "/plain"])
    XCTAssertEqual(plain.status, 0, plain.stderr)
    let c = try SafeTensors.read(path: dir + "/plain/final.safetensors")
    XCTAssertFalse(c.tensors.first { $0.name == "encoder.mu.weight" }?.bytes == a.tensors.first { $0.name == "encoder.mu.weight" }?.bytes)
  }

  func testBadValuesAreOneLine() throws {
    let config = TestPaths.packageRoot + "/configs/smoke.yaml"
    for (flag, value, mention) in [("--beta", "-1", "--beta"), ("--kl-warmup", "-5", "--kl-warmup"),
                                   ("--lr-schedule", "linear", "constant, cosine, iwae"), ("--lr-warmup", "x", "--lr-warmup"),
                                   ("--samples", "0", "--samples"), ("--objective", "vimco", "elbo, iwae"),
                                   ("--free-bits", "-0.5", "--free-bits"), ("--iwae-gradient", "vimco", "standard, dreg")] {
      let r = try run(["train", "--config", config, flag, value, "--out", dir + "/bad", "--quiet"])
      XCTAssertNotEqual(r.status, 0, "\(flag) \(value)")
      let lines = r.stderr.split(separator: "\n").filter { $0.hasPrefix("vae-dist: error:") }
      XCTAssertEqual(lines.count, 1, "\(flag) \(value): \(r.stderr)")
      XCTAssertTrue(r.stderr.contains(mention), "\(flag) \(value): \(r.stderr)")
      XCTAssertFalse(FileManager.default.fileExists(atPath: dir + "/bad"))
    }
    for (extra, mention) in [(["--objective", "iwae", "--beta", "2"], "train.objective iwae has none"),
                             (["--samples", "5"], "are for train.objective iwae"),
                             (["--objective", "iwae", "--free-bits", "1"], "train.free_bits applies to the ELBO"),
                             (["--iwae-gradient", "dreg"], "train.iwae_gradient dreg is an estimator of train.objective iwae's")] {
      let r = try run(["train", "--config", config, "--out", dir + "/bad", "--quiet"] + extra)
      XCTAssertEqual(r.status, 1, "\(extra)")
      XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
      XCTAssertTrue(r.stderr.contains(mention), r.stderr)
    }
  }
}
