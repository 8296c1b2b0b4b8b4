import Foundation
import XCTest

@testable import VAE

/// The vectorised C kernels (own exp and log1p) against Double references, densely.
final class KernelTests: XCTestCase {
  /// Bernoulli log-likelihood and gradient for logits across [−120, 120] (every 0.01) and x in
  /// {0, 0.3, 1}: per-pixel log p within 4e-7 relative (or 1e-12 absolute near 0), gradient
  /// within 3e-7 absolute.
  func testBernoulliKernelMatchesDouble() {
    let logits = stride(from: -120.0, through: 120.0, by: 0.01).map { Float($0) }
    let n = logits.count
    for xv: Float in [0, 0.3, 1] {
      let model = VAEModel(config: ModelConfig(inputSize: 1, hidden: [], zdim: 1), maxBatch: n)
      let per = Buffer(n), grad = Buffer(n)
      let xs = [Float](repeating: xv, count: n)
      _ = xs.withUnsafeBufferPointer { xp in
        logits.withUnsafeBufferPointer { lp in
          model.reconstruction(x: xp.baseAddress!, logits: lp.baseAddress!, batch: n, perExample: per.ptr, gradient: grad.ptr)
        }
      }
      var worstRel = 0.0, worstGrad = 0.0
      for i in 0..<n {
        let l = Double(logits[i]), x = Double(xv)
        let expected = x * l - max(l, 0) - log1p(exp(-abs(l)))
        let got = Double(per.ptr[i])
        let err = abs(got - expected)
        if abs(expected) > 1e-5 { worstRel = max(worstRel, err / abs(expected)) } else {
          XCTAssertLessThan(err, 1e-12 + 1e-6 * abs(expected), "x \(x) l \(l)")
        }
        let sig = 1 / (1 + exp(-l))
        worstGrad = max(worstGrad, abs(Double(grad.ptr[i]) - (sig - x)))
      }
      XCTAssertLessThan(worstRel, 4e-7, "x \(xv): log p relative error")  // ~6 float ulp
      XCTAssertLessThan(worstGrad, 3e-7, "x \(xv): gradient error")
      print("Bernoulli kernel, x = \(xv): max relative error \(worstRel), max gradient error \(worstGrad)")
    }
  }

  /// The row sums in Double (importance weights): the same per-pixel gradient bit for bit as the
  /// Float kernel, and rows of 784 pixels near −540 nats within 2e-5 of a Double sum of Double
  /// terms (the terms' own rounding), where a Float accumulator is allowed 2e-3.
  func testBernoulliRowsInDoubleKeepTheGradientAndSumExactly() {
    let rows = 8, n = 784
    var s = CounterRNG(seed: 5).stream(.noise, index: 0)
    let logits = (0..<(rows * n)).map { _ in s.nextFloat(in: -3, 3) }
    let xs = (0..<(rows * n)).map { _ in s.nextFloat(in: 0, 1) < 0.3 ? Float(1) : 0 }
    let model = VAEModel(config: ModelConfig(inputSize: n, hidden: [], zdim: 1), maxBatch: rows)
    let g32 = Buffer(rows * n), g64 = Buffer(rows * n), r32 = Buffer(rows)
    let r64 = UnsafeMutablePointer<Double>.allocate(capacity: rows)
    defer { r64.deallocate() }
    xs.withUnsafeBufferPointer { xp in
      logits.withUnsafeBufferPointer { lp in
        _ = model.reconstruction(x: xp.baseAddress!, logits: lp.baseAddress!, batch: rows, perExample: r32.ptr, gradient: g32.ptr)
        model.rowLogLikelihoods(x: xp.baseAddress!, logits: lp.baseAddress!, batch: rows, into: r64, exact: true, gradient: g64.ptr)
      }
    }
    XCTAssertEqual(g32.toArray(), g64.toArray(), "the gradient does not depend on the row sums' type")
    for r in 0..<rows {
      var want = 0.0
      for j in (r * n)..<(r * n + n) {
        let l = Double(logits[j]), x = Double(xs[j])
        want += x * l - max(l, 0) - log1p(exp(-abs(l)))
      }
      XCTAssertLessThan(abs(want), 1000, "row \(r): a realistic magnitude")
      XCTAssertEqual(r64[r], want, accuracy: 2e-5, "row \(r) summed in Double")
      XCTAssertEqual(Double(r32.ptr[r]), want, accuracy: 2e-3, "row \(r) summed in Float")
    }
  }
}
