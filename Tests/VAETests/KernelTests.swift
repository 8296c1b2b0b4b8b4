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
}
