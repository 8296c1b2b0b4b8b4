import Foundation
import XCTest

@testable import VAE

/// The held-out estimators: the ELBO and the importance-weighted bound (Burda et al. 2016).
final class EstimatorTests: XCTestCase {
  /// A tiny model with a 1-D latent, so log p(x) = log ∫ p(x|z) p(z) dz can be computed by
  /// quadrature and the bounds checked against the truth.
  func makeModel(likelihood: Likelihood = .bernoulli) -> (ModelConfig, VAEModel, [Float]) {
    let config = ModelConfig(inputSize: 6, hidden: [5], decoderHidden: [4], zdim: 1, likelihood: likelihood)
    let model = VAEModel(config: config, maxBatch: 64)
    model.initialise(rng: CounterRNG(seed: 11))
    // Larger decoder weights make p(x|z) depend strongly on z (a sharper posterior).
    for name in ["decoder.0.weight", "decoder.out.weight"] {
      let r = model.params.layout.range(named: name)!
      for i in r { model.params.base[i] *= 4 }
    }
    var x: [Float] = []
    var s = CounterRNG(seed: 5).stream(.synthetic)
    for _ in 0..<(3 * 6) { x.append(s.nextFloat() < 0.5 ? 1 : 0) }
    return (config, model, x)
  }

  /// log p(x) by the trapezoid rule over z ∈ [−12, 12] in Double, decoding with the engine.
  func exactLogLikelihood(model: VAEModel, x: [Float], example i: Int) -> Double {
    let n = model.config.inputSize
    let grid = 4001
    var zs = [Float](repeating: 0, count: grid)
    for k in 0..<grid { zs[k] = Float(-12 + 24 * Double(k) / Double(grid - 1)) }
    let decoder = VAEModel(config: model.config, maxBatch: grid, params: model.params)
    zs.withUnsafeBufferPointer { decoder.decode($0.baseAddress!, batch: grid) }
    var xs = [Float]()
    for _ in 0..<grid { xs += x[(i * n)..<((i + 1) * n)] }
    let recon = Buffer(grid)
    _ = xs.withUnsafeBufferPointer {
      decoder.reconstruction(x: $0.baseAddress!, logits: UnsafePointer(decoder.logits), batch: grid,
                             perExample: recon.ptr, gradient: nil)
    }
    var logs: [Double] = []
    for k in 0..<grid {
      let z = Double(zs[k])
      logs.append(Double(recon.ptr[k]) - 0.5 * z * z - 0.5 * log(2 * Double.pi))
    }
    let m = logs.max()!
    var sum = 0.0
    let h = 24 / Double(grid - 1)
    for (k, l) in logs.enumerated() { sum += (k == 0 || k == grid - 1 ? 0.5 : 1) * exp(l - m) }
    return m + log(sum * h)
  }

  /// Mean over `reps` independent draws of the K-sample bound for each example.
  func meanIW(_ est: Estimator, _ x: [Float], samples k: Int, reps: Int, rng: CounterRNG) -> [Double] {
    var mean = [Double](repeating: 0, count: 3)
    var buf = [Double](repeating: 0, count: 3)
    x.withUnsafeBufferPointer { xp in
      for r in 0..<reps {
        buf.withUnsafeMutableBufferPointer {
          est.importanceWeighted(x: xp.baseAddress!, count: 3, firstIndex: 1000 * r, samples: k, rng: rng, out: $0.baseAddress!)
        }
        for i in 0..<3 { mean[i] += buf[i] / Double(reps) }
      }
    }
    return mean
  }

  /// ELBO ≤ E[IW_1] = ELBO, ≤ E[IW_50] ≤ IW_5000 ≈ log p(x) (quadrature) on a 1-D latent model.
  func testImportanceWeightedBoundApproachesTheTrueLogLikelihood() {
    let (config, model, x) = makeModel()
    let est = Estimator(config: config, params: model.params, maxRows: 300)
    let rng = CounterRNG(seed: 99)
    let iw1 = meanIW(est, x, samples: 1, reps: 4000, rng: rng)
    let iw50 = meanIW(est, x, samples: 50, reps: 100, rng: rng)
    let iw5000 = meanIW(est, x, samples: 5000, reps: 1, rng: rng)
    var elbo = [Double](repeating: 0, count: 3)
    x.withUnsafeBufferPointer { xp in
      for i in 0..<3 {
        let t = est.elbo(x: xp.baseAddress! + i * 6, count: 1, firstIndex: i, samples: 4000, noise: .sampled(rng))
        elbo[i] = t.recon - t.kl
      }
    }
    for i in 0..<3 {
      let truth = exactLogLikelihood(model: model, x: x, example: i)
      print("example \(i): ELBO \(elbo[i]) E[IW1] \(iw1[i]) E[IW50] \(iw50[i]) IW5000 \(iw5000[i]) exact \(truth)")
      XCTAssertGreaterThan(truth - elbo[i], 1, "example \(i): the test needs a real ELBO gap")
      // E[IW_1] is the ELBO with a Monte-Carlo KL instead of the closed form.
      XCTAssertEqual(iw1[i], elbo[i], accuracy: 0.1 * (truth - elbo[i]), "example \(i)")
      XCTAssertGreaterThan(iw50[i], elbo[i] + 0.5 * (truth - elbo[i]), "example \(i)")
      XCTAssertLessThan(iw50[i], truth + 0.02, "example \(i)")
      XCTAssertEqual(iw5000[i], truth, accuracy: 0.05, "example \(i): IW(5000) vs quadrature")
    }
  }

  /// Chunking (rows per decoder call) does not change the result.
  func testChunkingDoesNotChangeTheBound() {
    let (config, model, x) = makeModel()
    var a = [Double](repeating: 0, count: 3), b = a
    let rng = CounterRNG(seed: 8)
    x.withUnsafeBufferPointer { xp in
      a.withUnsafeMutableBufferPointer {
        Estimator(config: config, params: model.params, maxRows: 7)
          .importanceWeighted(x: xp.baseAddress!, count: 3, firstIndex: 0, samples: 33, rng: rng, out: $0.baseAddress!)
      }
      b.withUnsafeMutableBufferPointer {
        Estimator(config: config, params: model.params, maxRows: 500)
          .importanceWeighted(x: xp.baseAddress!, count: 3, firstIndex: 0, samples: 33, rng: rng, out: $0.baseAddress!)
      }
    }
    for i in 0..<3 { XCTAssertEqual(a[i], b[i], accuracy: 1e-9 * abs(a[i])) }
  }

  /// ε = 0 evaluates at z = μ deterministically.
  func testZeroNoiseUsesThePosteriorMean() {
    let (config, model, x) = makeModel()
    let est = Estimator(config: config, params: model.params)
    let t1 = x.withUnsafeBufferPointer { est.elbo(x: $0.baseAddress!, count: 3, firstIndex: 0, noise: .zero) }
    let t2 = x.withUnsafeBufferPointer { est.elbo(x: $0.baseAddress!, count: 3, firstIndex: 50, noise: .zero) }
    XCTAssertEqual(t1, t2)
    for j in 0..<3 { XCTAssertEqual(est.model.z.ptr[j], est.model.mu.ptr[j]) }
  }

  /// Active units: the variance over examples of μ_j(x), computed here by hand for a linear
  /// encoder (no hidden layer) where μ₀ = x₀ and μ₁ = 0.01·x₁.
  func testPosteriorMeanVarianceCountsActiveUnits() {
    let config = ModelConfig(inputSize: 3, hidden: [], decoderHidden: [], zdim: 2)
    let params = Arena(layout: config.layout)
    params.setValues(named: "encoder.mu.weight", [1, 0, 0, 0, 0.01, 0])
    let x: [Float] = [0, 1, 5, 1, -1, 5, 2, 3, 5, 5, 1, 5, 4, 0, 5]  // 5 rows of 3
    let est = Estimator(config: config, params: params, maxRows: 2)  // chunks of 2 rows
    let v = x.withUnsafeBufferPointer { est.posteriorMeanVariance(x: $0.baseAddress!, count: 5) }
    func variance(_ a: [Double]) -> Double {
      let m = a.reduce(0, +) / Double(a.count)
      return a.map { ($0 - m) * ($0 - m) }.reduce(0, +) / Double(a.count)
    }
    XCTAssertEqual(v[0], variance([0, 1, 2, 5, 4]), accuracy: 1e-9)
    XCTAssertEqual(v[1], variance([1, -1, 3, 1, 0].map { 0.01 * Double(Float($0)) }), accuracy: 1e-9)
    XCTAssertEqual(v.filter { $0 > 0.01 }.count, 1)
  }

  /// The KL per latent dimension: by hand for a linear encoder (μ₀ = x₀, μ₁ = 0.01·x₁, fixed
  /// log σ² of 0.5 and −1 from the biases), and, for a random MLP, summing over dimensions to
  /// the ELBO's KL term (which TorchFixtureTests checks against PyTorch).
  func testLatentStatisticsSplitTheKLByDimension() {
    let config = ModelConfig(inputSize: 3, hidden: [], decoderHidden: [], zdim: 2)
    let params = Arena(layout: config.layout)
    XCTAssertTrue(params.setValues(named: "encoder.mu.weight", [1, 0, 0, 0, 0.01, 0]))
    XCTAssertTrue(params.setValues(named: "encoder.logvar.bias", [0.5, -1]))
    let x: [Float] = [0, 1, 5, 1, -1, 5, 2, 3, 5, 5, 1, 5, 4, 0, 5]  // 5 rows of 3
    let est = Estimator(config: config, params: params, maxRows: 2)
    let s = x.withUnsafeBufferPointer { est.latentStatistics(x: $0.baseAddress!, count: 5) }
    func kl(_ mu: [Double], _ lv: Double) -> Double {
      mu.map { 0.5 * ($0 * $0 + exp(lv) - 1 - lv) }.reduce(0, +) / Double(mu.count)
    }
    XCTAssertEqual(s.kl[0], kl([0, 1, 2, 5, 4], 0.5), accuracy: 1e-6)
    XCTAssertEqual(s.kl[1], kl([1, -1, 3, 1, 0].map { 0.01 * Double(Float($0)) }, -1), accuracy: 1e-6)
    XCTAssertEqual(s.meanVariance, x.withUnsafeBufferPointer { est.posteriorMeanVariance(x: $0.baseAddress!, count: 5) })

    let mlp = ModelConfig(inputSize: 6, hidden: [5], zdim: 3)
    let p = Arena(layout: mlp.layout)
    for i in 0..<p.count { p.data[i] = Float(0.5 * sin(1.7 * Double(i) + 0.3)) }  // fixed, varied weights
    let xs = (0..<7 * 6).map { Float(0.5 + 0.5 * cos(2.3 * Double($0))) }
    let e = Estimator(config: mlp, params: p, maxRows: 3)
    let perDim = xs.withUnsafeBufferPointer { e.latentStatistics(x: $0.baseAddress!, count: 7) }.kl
    let total = xs.withUnsafeBufferPointer { e.elbo(x: $0.baseAddress!, count: 7, firstIndex: 0, noise: .zero) }.kl / 7
    XCTAssertEqual(perDim.reduce(0, +), total, accuracy: 1e-5 * abs(total))
  }
}
