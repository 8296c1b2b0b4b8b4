import Foundation
import TestSupport
import XCTest

@testable import VAE

/// The objectives' gradients against PyTorch's autograd on the same weights, images and noise
/// (python/vae_dist/torch_objectives.py on the shared fixture's VAE, autograd in float64): β = 0.5
/// (also what KL warm-up mid-way is), free bits with half the dimensions below λ, and IWAE with
/// k = 5 (standard and DReG), each to 1e-4 (norm of the difference over the norm of PyTorch's, per tensor).
///
/// The IWAE's log w are near −542 nats per sample, and w̃ = softmax(log w) scales every sample's
/// share of the gradient, so an error δ in a log w is a relative error δ in its share. Summing a
/// row's 784 log-likelihood terms in one float32 accumulator (as the ELBO still does) put up to
/// 5e-4 nats into log w and 2.0e-4 into encoder.0.weight's gradient; PyTorch's own float32
/// autograd (pairwise sums, log w rounded to float32) is 3.6e-5 from its float64 result on the
/// same inputs, and emulating a sequential float32 sum in PyTorch gave 2.1e-4. With the row sums
/// and log w in Double (`ImportanceWeightedBound`) the worst tensor is 9e-7 (2026-12-06).
final class TorchObjectiveTests: XCTestCase {
  let config = ModelConfig(inputSize: 784, hidden: [64, 32], decoderHidden: [32, 64], zdim: 8, likelihood: .bernoulli)
  let batch = 16, k = 5

  func torchGradients() throws -> (fixture: TestSafetensors, torch: TestSafetensors) {
    guard let fixture = TorchFixtureTests.fixtureURL() else { throw XCTSkip("no PyTorch fixture (../shared/fixtures)") }
    let out = NSTemporaryDirectory() + "torch-objectives-\(UUID().uuidString).safetensors"
    defer { try? FileManager.default.removeItem(atPath: out) }
    let r = try Subprocess.run(
      Subprocess.pythonCommand + ["-m", "vae_dist.torch_objectives", fixture.path, out, "--beta", "0.5", "--samples", "\(k)"],
      environment: ["PYTHONPATH": TestPaths.packageRoot + "/python"])
    if r.status == 3 { throw XCTSkip("PyTorch is not installed: \(r.stderr)") }
    XCTAssertEqual(r.status, 0, r.stderr)
    return (try TestSafetensors(url: fixture), try TestSafetensors(url: URL(fileURLWithPath: out)))
  }

  func model(_ f: TestSafetensors, objective: TrainingObjective = TrainingObjective()) throws -> VAEModel {
    let m = VAEModel(config: config, maxBatch: batch, objective: objective)
    for spec in config.layout.specs { m.params.setValues(named: spec.name, try f.require(spec.name).values.map(Float.init)) }
    return m
  }

  func assertGradients(
    _ m: VAEModel, _ t: TestSafetensors, _ objective: String, tolerance: Double = 1e-4, file: StaticString = #filePath,
    line: UInt = #line
  ) throws {
    for (i, spec) in config.layout.specs.enumerated() {
      let g = m.grads.toArray()[config.layout.range(of: i)].map(Double.init)
      let want = try t.require("grad.\(objective).\(spec.name)").values
      XCTAssertLessThan(ErrorMeasure.normRelative(g, want), tolerance, "\(objective): \(spec.name)", file: file, line: line)
    }
  }

  func testBetaFreeBitsIWAEAndDReGGradientsEqualPyTorchs() throws {
    let (f, t) = try torchGradients()
    let x = try f.require("input.x").values.map(Float.init), eps = try f.require("input.eps").values.map(Float.init)
    let xb = Buffer(x.count), eb = Buffer(eps.count)
    xb.set(x)
    eb.set(eps)
    // β = 0.5.
    let m = try model(f)
    m.klWeight = 0.5
    m.loss(x: xb.ptr, eps: eb.ptr, batch: batch)
    m.backward()
    try assertGradients(m, t, "beta")
    // Free bits: the engine's own per-dimension means give PyTorch's mask.
    m.klWeight = 1
    let sums = UnsafeMutablePointer<Double>.allocate(capacity: 8)
    defer { sums.deallocate() }
    sums.initialize(repeating: 0, count: 8)
    m.encode(xb.ptr, batch: batch)
    m.addKLPerDimension(batch: batch, into: sums)
    let lambda = try t.require("free_bits.lambda").values[0], torchMeans = try t.require("free_bits.mean_kl").values
    let mask = Buffer(8)
    mask.set((0..<8).map { Float(sums[$0] / Double(batch) > lambda ? 1 : 0) })
    XCTAssertEqual(mask.toArray(), torchMeans.map { $0 > lambda ? 1 : 0 }, "the engine's and PyTorch's dimensions below λ")
    XCTAssertEqual(mask.toArray().reduce(0, +), 4, "half the dimensions below λ")
    m.klMask = UnsafePointer(mask.ptr)
    m.loss(x: xb.ptr, eps: eb.ptr, batch: batch)
    m.backward()
    try assertGradients(m, t, "free_bits")
    // IWAE, k = 5, on the noise PyTorch drew.
    let iw = try model(f, objective: TrainingObjective(kind: .iwae, samples: k))
    let ek = Buffer(batch * k * 8)
    ek.set(try t.require("input.eps_iwae").values.map(Float.init))
    let terms = iw.loss(x: xb.ptr, eps: ek.ptr, batch: batch)
    let bound = try t.require("iwae.bound_sum").values[0]
    XCTAssertEqual(-terms.negativeELBO, bound, accuracy: 1e-5 * abs(bound), "Σ of the bound")
    iw.backward()
    try assertGradients(iw, t, "iwae")
    // DReG on the same noise.
    var dregObjective = TrainingObjective(kind: .iwae, samples: k)
    dregObjective.gradient = .dreg
    let dreg = try model(f, objective: dregObjective)
    dreg.loss(x: xb.ptr, eps: ek.ptr, batch: batch)
    dreg.backward()
    try assertGradients(dreg, t, "iwae_dreg")
  }
}
