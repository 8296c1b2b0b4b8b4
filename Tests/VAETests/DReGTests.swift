import Foundation
import XCTest

@testable import VAE

/// DReG (Tucker et al. 2019) estimates the same gradient as Burda et al.'s estimator, and where
/// q(z|x) is the true posterior its estimate is exactly zero (every log w the same), while the
/// standard one keeps the score term's noise. Properties of the two estimators, whatever the code
/// that computes them.
extension GradientCheckTests {
  /// On one random network and batch, over 4,000 draws of the noise (k = 20), the paired
  /// difference of the two encoder gradients (same noise) averages to zero: within 4.5 standard
  /// errors on every encoder parameter (the z-scores share the noise, so their spread is printed,
  /// not judged; so is the variance: on a random network, far from the posterior, DReG's need
  /// not be the smaller).
  func testDReGHasTheStandardEstimatorsExpectation() {
    let c = Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, batch: 3, likelihood: .bernoulli)
    let k = 20, draws = 4000
    let (flat, xs, _) = draw(c)
    func model(_ gradient: TrainingObjective.Gradient) -> VAEModel {
      var objective = TrainingObjective(kind: .iwae, samples: k)
      objective.gradient = gradient
      let m = VAEModel(config: c.config, maxBatch: c.batch, objective: objective)
      flat.withUnsafeBufferPointer { m.params.base.update(from: $0.baseAddress!, count: flat.count) }
      return m
    }
    let standard = model(.standard), dreg = model(.dreg)
    let layout = c.config.layout
    let encoder = layout.specs.indices.filter { layout.specs[$0].name.hasPrefix("encoder.") }.flatMap { layout.range(of: $0) }
    // Per encoder parameter: Σ and Σ² of the paired difference, and of each estimator.
    var diff = [(Double, Double)](repeating: (0, 0), count: encoder.count)
    var spread = [[(Double, Double)]](repeating: diff, count: 2)
    var rng = CounterRNG(seed: 5).stream(.noise, index: 9)
    let x = Buffer(xs.count), eps = Buffer(c.batch * k * c.zdim)
    x.set(xs)
    for _ in 0..<draws {
      for i in 0..<(c.batch * k * c.zdim) { eps.ptr[i] = rng.nextNormal() }
      for m in [standard, dreg] {
        m.loss(x: x.ptr, eps: eps.ptr, batch: c.batch)
        m.backward()
      }
      for (t, p) in encoder.enumerated() {
        let a = Double(standard.grads.data[p]), b = Double(dreg.grads.data[p])
        diff[t].0 += b - a
        diff[t].1 += (b - a) * (b - a)
        for (s, g) in [a, b].enumerated() {
          spread[s][t].0 += g
          spread[s][t].1 += g * g
        }
      }
    }
    let n = Double(draws)
    func variance(_ s: (Double, Double)) -> Double { (s.1 - s.0 * s.0 / n) / (n - 1) }
    let zs = diff.filter { variance($0) > 1e-20 }.map { ($0.0 / n) / (variance($0) / n).squareRoot() }
    XCTAssertGreaterThan(zs.count, encoder.count / 2, "most encoder parameters should differ between the estimators")
    XCTAssertLessThan(zs.map(abs).max()!, 4.5, "a mean difference beyond 4.5 standard errors: DReG is biased")
    // The draws resolve a bias of the gradient's own size: the standard gradient's mean is many
    // standard errors from zero.
    let resolution = spread[0].filter { variance($0) > 1e-20 }.map { abs($0.0 / n) / (variance($0) / n).squareRoot() }
    XCTAssertGreaterThan(resolution.max()!, 20, "too few draws to see a bias")
    let meanSquare = zs.map { $0 * $0 }.reduce(0, +) / Double(zs.count)
    let total = spread.map { $0.map(variance).reduce(0, +) }
    print("DReG k = \(k): encoder gradient variance \(String(format: "%.3f", total[1] / total[0])) of the standard's; "
          + "mean z² of the paired differences \(String(format: "%.2f", meanSquare)) over \(zs.count) parameters")
  }

  /// "Sticking the landing": a decoder that ignores z (its first weights 0) has the prior as the
  /// posterior, and an encoder that outputs μ = 0, log σ² = 0 (its heads 0) is that posterior.
  /// Then log w is the same for every z, and DReG's encoder gradient is exactly 0 for any noise;
  /// the standard estimator's is its score term, Σ_i w̃_i·z_i for μ and ½(Σ_i w̃_i·z_i·ε_i − 1) for
  /// log σ² (w̃_i = 1/k), which is not.
  func testDReGIsZeroWhereQIsThePosteriorAndTheStandardEstimatorIsNot() {
    let c = Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, batch: 3, likelihood: .bernoulli)
    let k = 5
    var (flat, xs, _) = draw(c)
    let layout = c.config.layout
    for name in ["encoder.mu.weight", "encoder.mu.bias", "encoder.logvar.weight", "encoder.logvar.bias", "decoder.0.weight"] {
      let i = layout.specs.firstIndex { $0.name == name }!
      for p in layout.range(of: i) { flat[p] = 0 }
    }
    let x = Buffer(xs.count), eps = Buffer(c.batch * k * c.zdim)
    x.set(xs)
    var rng = CounterRNG(seed: 11).stream(.noise, index: 1)
    for gradient in TrainingObjective.Gradient.allCases {
      var objective = TrainingObjective(kind: .iwae, samples: k)
      objective.gradient = gradient
      let m = VAEModel(config: c.config, maxBatch: c.batch, objective: objective)
      flat.withUnsafeBufferPointer { m.params.base.update(from: $0.baseAddress!, count: flat.count) }
      for draw in 0..<3 {
        for i in 0..<(c.batch * k * c.zdim) { eps.ptr[i] = rng.nextNormal() }
        m.loss(x: x.ptr, eps: eps.ptr, batch: c.batch)
        m.backward()
        for (i, spec) in layout.specs.enumerated() where spec.name.hasPrefix("encoder.") {
          let norm = layout.range(of: i).map { Double(m.grads.data[$0]) * Double(m.grads.data[$0]) }.reduce(0, +)
          if gradient == .dreg {
            XCTAssertEqual(norm, 0, "DReG at the posterior, draw \(draw): \(spec.name)")
          } else if spec.name.hasSuffix(".bias") && (spec.name.contains("mu") || spec.name.contains("logvar")) {
            XCTAssertGreaterThan(norm, 1e-6, "the standard estimator's score term, draw \(draw): \(spec.name)")
          }
        }
      }
    }
  }
}
