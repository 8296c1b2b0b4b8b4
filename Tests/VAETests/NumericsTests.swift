import Foundation
import XCTest

@testable import VAE

final class NumericsTests: XCTestCase {
  // MARK: KL

  /// The engine's closed-form KL equals a Monte-Carlo estimate of E_q[log q(z) − log p(z)].
  func testKLClosedFormAgainstMonteCarlo() {
    let mu: [Float] = [0.5, -1.2, 0.0, 2.0]
    let logvar: [Float] = [0.3, -0.8, 1.1, -2.5]
    let d = mu.count
    // A model whose heads output exactly mu and logvar: zero weights, biases = the values.
    let model = VAEModel(config: ModelConfig(inputSize: 3, hidden: [], zdim: d), maxBatch: 1)
    model.params.data.update(repeating: 0)
    XCTAssertTrue(model.params.setValues(named: "encoder.mu.bias", mu))
    XCTAssertTrue(model.params.setValues(named: "encoder.logvar.bias", logvar))
    let x: [Float] = [1, 0, 1]
    let eps: [Float] = [0.1, -0.2, 0.3, 0.4]
    let terms = x.withUnsafeBufferPointer { xp in
      eps.withUnsafeBufferPointer { ep in model.loss(x: xp.baseAddress!, eps: ep.baseAddress!, batch: 1) }
    }
    XCTAssertEqual(model.mu.toArray(d), mu)
    XCTAssertEqual(model.logvar.toArray(d), logvar)
    let closed = (0..<d).reduce(0.0) { acc, j in
      let m = Double(mu[j]), lv = Double(logvar[j])
      return acc - 0.5 * (1 + lv - m * m - exp(lv))
    }
    XCTAssertEqual(terms.kl, closed, accuracy: 1e-5 * closed)
    XCTAssertEqual(Double(model.klPerExample.ptr[0]), closed, accuracy: 1e-5 * closed)
    // z = mu + exp(logvar/2)·eps
    for j in 0..<d {
      XCTAssertEqual(Double(model.z.ptr[j]), Double(mu[j]) + exp(0.5 * Double(logvar[j])) * Double(eps[j]), accuracy: 1e-6)
    }

    // Monte Carlo: log q(z) − log p(z) = Σ_j −½ logvar_j − ½ ε_j² + ½ z_j², z = μ + σε.
    let n = 200_000
    var s = CounterRNG(seed: 2024).stream(.noise)
    var sum = 0.0
    var sumSq = 0.0
    for _ in 0..<n {
      var f = 0.0
      for j in 0..<d {
        let e = Double(s.nextNormal())
        let lv = Double(logvar[j])
        let z = Double(mu[j]) + exp(0.5 * lv) * e
        f += -0.5 * lv - 0.5 * e * e + 0.5 * z * z
      }
      sum += f
      sumSq += f * f
    }
    let mean = sum / Double(n)
    let variance = (sumSq - Double(n) * mean * mean) / Double(n - 1)
    let se = (variance / Double(n)).squareRoot()
    print("[numerics] KL closed \(closed), Monte Carlo \(mean) ± \(se) (|diff| = \(fmt(abs(mean - Double(terms.kl)) / se)) SE)")
    XCTAssertLessThan(abs(mean - terms.kl), 3 * se)
    XCTAssertLessThan(se, 0.01 * closed, "Monte-Carlo estimate too noisy to be a check")
  }

  // MARK: Bernoulli at extreme logits

  func testBernoulliExtremeLogits() {
    let logits: [Float] = [100, -100, 1e4, -1e4, 100, -100, 1e4, -1e4, 0]
    let xs: [Float] = [0, 0, 0, 0, 1, 1, 1, 1, 1]
    // log p = x·l − max(l, 0) − log(1 + e^{−|l|}), exactly (to Float) at these logits.
    let expectedLogP: [Float] = [-100, 0, -1e4, 0, 0, -100, 0, -1e4, -Float(log(2.0))]
    // sigmoid(l) − x; sigmoid(−100) = 3.7e-44 is a subnormal Float (or 0 with flush-to-zero).
    let expectedGrad: [Double] = [1, exp(-100), 1, 0, 0, -1, 0, -1, -0.5]
    let n = logits.count
    let model = VAEModel(config: ModelConfig(inputSize: 1, hidden: [], zdim: 1), maxBatch: n)
    let per = Buffer(n)
    let grad = Buffer(n)
    let total = xs.withUnsafeBufferPointer { xp in
      logits.withUnsafeBufferPointer { lp in
        model.reconstruction(
          x: xp.baseAddress!, logits: lp.baseAddress!, batch: n, perExample: per.ptr, gradient: grad.ptr)
      }
    }
    for i in 0..<n {
      let v = per.ptr[i]
      let g = grad.ptr[i]
      XCTAssertTrue(v.isFinite && g.isFinite, "x \(xs[i]) l \(logits[i]): \(v), \(g)")
      XCTAssertEqual(v, expectedLogP[i], accuracy: 1e-6, "log p at x \(xs[i]) l \(logits[i])")
      XCTAssertLessThanOrEqual(v, 0, "a probability's log is ≤ 0")
      XCTAssertEqual(Double(g), expectedGrad[i], accuracy: 1e-40, "gradient at x \(xs[i]) l \(logits[i])")
      if abs(logits[i]) >= 100 {
        XCTAssertTrue([0, 1, -1].contains(g) || abs(g) < 1e-40, "gradient at x \(xs[i]) l \(logits[i]) is \(g)")
      }
    }
    XCTAssertEqual(total, expectedLogP.reduce(0.0) { $0 + Double($1) }, accuracy: 1e-3)
  }

  /// Moderate logits and soft targets against the Double formula; gradient = sigmoid(l) − x.
  func testBernoulliAndGaussianAgainstDoubleFormulas() {
    var s = RandomStream(state: 31)
    let n = 50
    let logits = (0..<n).map { i in Float(i - 25) * 1.3 + s.nextFloat(in: -0.5, 0.5) }
    let xs = (0..<n).map { i in [Float(0), 0.3, 1][i % 3] }
    for likelihood in [Likelihood.bernoulli, .gaussian(sigma: 0.7)] {
      let model = VAEModel(config: ModelConfig(inputSize: n, hidden: [], zdim: 1, likelihood: likelihood), maxBatch: 1)
      let per = Buffer(1)
      let grad = Buffer(n)
      let total = xs.withUnsafeBufferPointer { xp in
        logits.withUnsafeBufferPointer { lp in
          model.reconstruction(
            x: xp.baseAddress!, logits: lp.baseAddress!, batch: 1, perExample: per.ptr, gradient: grad.ptr)
        }
      }
      let ref: ReferenceVAE.Likelihood
      switch likelihood {
      case .bernoulli: ref = .bernoulli
      case .gaussian(let sg): ref = .gaussian(sigma: Double(sg))
      case .gaussianLearned: continue  // two outputs per value: GradientCheckTests cover it
      }
      var expected = 0.0
      for j in 0..<n {
        let l = Double(logits[j]), x = Double(xs[j])
        expected += ReferenceVAE.logLikelihood(x: x, l: l, likelihood: ref)
        let g: Double
        switch likelihood {
        case .bernoulli: g = 1 / (1 + exp(-l)) - x
        case .gaussian(let sg): g = (l - x) / Double(sg * sg)
        case .gaussianLearned: g = .nan
        }
        XCTAssertEqual(Double(grad.ptr[j]), g, accuracy: 1e-6 * max(1, abs(g)), "\(likelihood.name) grad at \(j)")
      }
      XCTAssertEqual(total, expected, accuracy: 1e-5 * abs(expected), likelihood.name)
      XCTAssertEqual(Double(per.ptr[0]), expected, accuracy: 1e-5 * abs(expected), likelihood.name)
    }
  }

  // MARK: RandomStream

  func testUniformFloats() {
    var s = CounterRNG(seed: 1).stream(.shuffle)
    let n = 1_000_000
    var lo: Float = 1
    var hi: Float = 0
    var sum = 0.0
    var sumSq = 0.0
    var bins = [Int](repeating: 0, count: 10)
    for _ in 0..<n {
      let u = s.nextFloat()
      lo = min(lo, u)
      hi = max(hi, u)
      sum += Double(u)
      sumSq += Double(u) * Double(u)
      bins[min(Int(u * 10), 9)] += 1
    }
    XCTAssertGreaterThanOrEqual(lo, 0)
    XCTAssertLessThan(hi, 1)
    let mean = sum / Double(n)
    let variance = sumSq / Double(n) - mean * mean
    XCTAssertEqual(mean, 0.5, accuracy: 5 * (1.0 / 12 / Double(n)).squareRoot())
    XCTAssertEqual(variance, 1.0 / 12, accuracy: 1e-3)
    // χ² with 9 degrees of freedom: 27.9 is the 0.999 quantile.
    let e = Double(n) / 10
    let chi2 = bins.reduce(0.0) { $0 + (Double($1) - e) * (Double($1) - e) / e }
    XCTAssertLessThan(chi2, 27.9)
    // nextDouble and the interval form.
    var d = CounterRNG(seed: 2).stream(.noise)
    for _ in 0..<10_000 {
      let v = d.nextDouble()
      XCTAssertTrue(v >= 0 && v < 1)
      let w = d.nextFloat(in: -0.25, 0.75)
      XCTAssertTrue(w >= -0.25 && w < 0.75)
      let k = d.nextInt(below: 7)
      XCTAssertTrue((0..<7).contains(k))
    }
  }

  func testNormals() {
    var s = CounterRNG(seed: 3).stream(.noise, epoch: 1, index: 2)
    let n = 1_000_000
    var sum = 0.0
    var sumSq = 0.0
    var sum4 = 0.0
    var within1 = 0
    var prev = 0.0
    var lagSum = 0.0
    for i in 0..<n {
      let z = Double(s.nextNormal())
      XCTAssertTrue(z.isFinite)
      sum += z
      sumSq += z * z
      sum4 += z * z * z * z
      if abs(z) < 1 { within1 += 1 }
      if i > 0 { lagSum += z * prev }
      prev = z
    }
    let mean = sum / Double(n)
    let variance = sumSq / Double(n) - mean * mean
    let kurtosis = sum4 / Double(n)
    let se = 1 / Double(n).squareRoot()
    print("[numerics] normal: mean \(mean), variance \(variance), E z⁴ \(kurtosis)")
    XCTAssertEqual(mean, 0, accuracy: 5 * se)
    XCTAssertEqual(variance, 1, accuracy: 5 * 2.0.squareRoot() * se)
    XCTAssertEqual(kurtosis, 3, accuracy: 5 * 96.0.squareRoot() * se)  // Var z⁴ = 105 − 9
    XCTAssertEqual(Double(within1) / Double(n), 0.682689, accuracy: 5 * (0.6827 * 0.3173).squareRoot() * se)
    // Box–Muller's two outputs (and consecutive draws in general) are uncorrelated.
    XCTAssertEqual(lagSum / Double(n - 1), 0, accuracy: 5 * se)
  }

  func testCounterRNGKeys() {
    let rng = CounterRNG(seed: 42)
    func head(_ s: RandomStream, _ k: Int = 4) -> [UInt64] {
      var s = s
      return (0..<k).map { _ in s.next() }
    }
    // Identical keys: identical sequences (a pure function of the key), also from a fresh value.
    XCTAssertEqual(head(rng.stream(.noise, epoch: 3, index: 17), 64), head(rng.stream(.noise, epoch: 3, index: 17), 64))
    XCTAssertEqual(head(CounterRNG(seed: 42).stream(.shuffle, epoch: 9)), head(rng.stream(.shuffle, epoch: 9, index: 0)))
    var a = rng.stream(.noise, epoch: 3, index: 17)
    var b = rng.stream(.noise, epoch: 3, index: 17)
    for _ in 0..<1000 { XCTAssertEqual(a.nextNormal(), b.nextNormal()) }

    // Different keys: different sequences, and no first word repeats across the grid.
    let purposes: [CounterRNG.Purpose] = [
      .initialisation, .shuffle, .binarizeStatic, .binarizeDynamic, .noise, .evalNoise, .testBinarize,
      .synthetic, .sample,
    ]
    var seen: [[UInt64]: String] = [:]
    var firstWords = Set<UInt64>()
    var count = 0
    for p in purposes {
      for epoch in UInt64(0)..<6 {
        for index in UInt64(0)..<40 {
          let h = head(rng.stream(p, epoch: epoch, index: index))
          let key = "\(p) \(epoch) \(index)"
          XCTAssertNil(seen[h], "\(key) repeats \(seen[h] ?? "")")
          seen[h] = key
          firstWords.insert(h[0])
          count += 1
        }
      }
    }
    XCTAssertEqual(firstWords.count, count)
    // (epoch, index) is not symmetric, and the seed matters.
    XCTAssertNotEqual(head(rng.stream(.noise, epoch: 1, index: 2)), head(rng.stream(.noise, epoch: 2, index: 1)))
    XCTAssertNotEqual(head(rng.stream(.noise)), head(CounterRNG(seed: 43).stream(.noise)))
    // Purpose raw values are part of the reproducibility contract.
    XCTAssertEqual(purposes.map(\.rawValue), Array(1...9))
  }

  // MARK: Initialisation

  func testInitialisationFollowsPyTorchBounds() {
    let config = ModelConfig(inputSize: 784, hidden: [64, 32], decoderHidden: [32, 64], zdim: 8)
    let model = VAEModel(config: config, maxBatch: 1)
    model.initialise(rng: CounterRNG(seed: 7))
    let layout = config.layout
    let byName = Dictionary(uniqueKeysWithValues: layout.specs.map { ($0.name, $0) })
    for (i, spec) in layout.specs.enumerated() {
      let values = model.params.toArray()[layout.range(of: i)].map(Double.init)
      // nn.Linear: weight and bias ~ U(−1/√fan_in, 1/√fan_in), fan_in = the weight's in-features.
      let weightName = spec.name.replacingOccurrences(of: ".bias", with: ".weight")
      guard let fanIn = byName[weightName]?.shape[1] else {
        XCTFail("no weight for \(spec.name)")
        continue
      }
      let bound = 1 / Double(fanIn).squareRoot()
      let maxAbs = values.map(abs).max()!
      XCTAssertLessThanOrEqual(maxAbs, Double(Float(bound)), spec.name)
      // Close to the bound: the largest of n uniform |w| is within a few bound/n of it.
      let slack = spec.count >= 50 ? 10.0 / Double(spec.count) : 0.5
      XCTAssertGreaterThanOrEqual(maxAbs, bound * (1 - slack), spec.name)
      if spec.count >= 1000 {
        let mean = values.reduce(0, +) / Double(values.count)
        let variance = values.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(values.count)
        let sd = bound / 3.0.squareRoot()
        XCTAssertEqual(mean, 0, accuracy: 5 * sd / Double(values.count).squareRoot(), spec.name)
        XCTAssertEqual(variance, bound * bound / 3, accuracy: 0.05 * bound * bound / 3, spec.name)
      }
    }
    // Same-shaped tensors get different values (one stream per tensor).
    XCTAssertNotEqual(model.params.values(named: "encoder.mu.weight"), model.params.values(named: "encoder.logvar.weight"))
    XCTAssertNotEqual(model.params.values(named: "encoder.mu.bias"), model.params.values(named: "encoder.logvar.bias"))

    // Deterministic by seed.
    let again = VAEModel(config: config, maxBatch: 1)
    again.initialise(rng: CounterRNG(seed: 7))
    XCTAssertEqual(again.params.toArray(), model.params.toArray())
    let other = VAEModel(config: config, maxBatch: 1)
    other.initialise(rng: CounterRNG(seed: 8))
    XCTAssertNotEqual(other.params.toArray(), model.params.toArray())
  }
}
