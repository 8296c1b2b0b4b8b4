import Foundation
import XCTest

@testable import VAE

/// Adam against the formulas, written out in Double:
///   g ← scale·g (+ wd·p for L2);  m ← β1 m + (1−β1) g;  v ← β2 v + (1−β2) g²;
///   m̂ = m/(1−β1ᵗ);  v̂ = v/(1−β2ᵗ);  p ← p − lr·m̂/(√v̂ + ε)   (decoupled: p ← p·(1 − lr·wd) first).
final class AdamTests: XCTestCase {
  let p0: [Double] = [0.5, -1.0, 2.0]
  /// Fixed gradients of steps 1, 2, 3 (step 2 has an exact zero for the third parameter).
  let gs: [[Double]] = [[0.1, -0.2, 0.3], [-0.05, 0.4, 0.0], [0.2, 0.1, -0.3]]
  let lr = 0.1

  struct State { var p: [Double]; var m: [Double]; var v: [Double] }

  /// The formulas above, one step at a time, in Double.
  func handAdam(
    gradients: [[Double]], lr: Double, wd: Double = 0, decoupled: Bool = false, scale: Double = 1
  ) -> [State] {
    let b1 = 0.9, b2 = 0.999, eps = 1e-8
    var s = State(p: p0, m: [0, 0, 0], v: [0, 0, 0])
    var out: [State] = []
    for (k, g) in gradients.enumerated() {
      let t = Double(k + 1)
      for i in 0..<3 {
        var gi = g[i] * scale
        if decoupled { s.p[i] *= 1 - lr * wd } else { gi += wd * s.p[i] }
        s.m[i] = b1 * s.m[i] + (1 - b1) * gi
        s.v[i] = b2 * s.v[i] + (1 - b2) * gi * gi
        let mHat = s.m[i] / (1 - pow(b1, t))
        let vHat = s.v[i] / (1 - pow(b2, t))
        s.p[i] -= lr * mHat / (vHat.squareRoot() + eps)
      }
      out.append(s)
    }
    return out
  }

  /// Runs the engine's Adam for three steps; returns (params, m, v) after each.
  func engineAdam(
    config: AdamConfig, gradients: [[Double]], scale: Float = 1, range: Range<Int>? = nil,
    layout: ParameterLayout = ParameterLayout(specs: [TensorSpec(name: "p", shape: [3])]),
    initial: [Float]? = nil
  ) -> (adam: Adam, states: [([Float], [Float], [Float])]) {
    let params = Arena(layout: layout)
    let grads = Arena(layout: layout)
    let start = initial ?? p0.map(Float.init)
    start.withUnsafeBufferPointer { params.base.update(from: $0.baseAddress!, count: start.count) }
    let adam = Adam(config: config, layout: layout)
    var states: [([Float], [Float], [Float])] = []
    for g in gradients {
      let gf = g.map(Float.init)
      let at = range?.lowerBound ?? 0
      gf.withUnsafeBufferPointer { (grads.base + at).update(from: $0.baseAddress!, count: gf.count) }
      adam.update(params: params, grads: grads, scale: scale, range: range)
      states.append((params.toArray(), adam.m.toArray(), adam.v.toArray()))
    }
    return (adam, states)
  }

  func assertClose(_ a: [Float], _ b: [Double], _ tol: Double, _ what: String, line: UInt = #line) {
    XCTAssertEqual(a.count, b.count, what, line: line)
    for i in 0..<min(a.count, b.count) {
      XCTAssertEqual(Double(a[i]), b[i], accuracy: tol, "\(what)[\(i)]", line: line)
    }
  }

  func testThreeStepsByHand() {
    // The hand formulas themselves, against values worked out separately.
    let hand = handAdam(gradients: gs, lr: lr)
    let literal: [[Double]] = [
      [0.40000000999999896, -0.9000000049999998, 1.9000000033333333],
      [0.37336630940339083, -0.9366103565460369, 1.8329941810791546],
      [0.30755515435138137, -0.9781754749638348, 1.8415809521733688],
    ]
    for k in 0..<3 {
      for i in 0..<3 { XCTAssertEqual(hand[k].p[i], literal[k][i], accuracy: 1e-12) }
    }
    let (adam, states) = engineAdam(config: AdamConfig(lr: Float(lr)), gradients: gs)
    XCTAssertEqual(adam.step, 3)
    for k in 0..<3 {
      assertClose(states[k].0, hand[k].p, 1e-6, "p after step \(k + 1)")
      assertClose(states[k].1, hand[k].m, 1e-7, "m after step \(k + 1)")
      assertClose(states[k].2, hand[k].v, 1e-8, "v after step \(k + 1)")
    }
  }

  func testL2WeightDecay() {
    let hand = handAdam(gradients: gs, lr: lr, wd: 0.5)
    let literal: [Double] = [0.21412982603592728, -0.7508584930529273, 1.7086631601667461]
    for i in 0..<3 { XCTAssertEqual(hand[2].p[i], literal[i], accuracy: 1e-12) }
    let (_, states) = engineAdam(config: AdamConfig(lr: Float(lr), weightDecay: 0.5), gradients: gs)
    for k in 0..<3 {
      assertClose(states[k].0, hand[k].p, 1e-6, "p after step \(k + 1)")
      assertClose(states[k].1, hand[k].m, 1e-6, "m after step \(k + 1)")
      assertClose(states[k].2, hand[k].v, 1e-7, "v after step \(k + 1)")
    }
    // It is not the decoupled variant.
    let decoupled = handAdam(gradients: gs, lr: lr, wd: 0.5, decoupled: true)
    XCTAssertGreaterThan(abs(Double(states[2].0[0]) - decoupled[2].p[0]), 1e-2)
  }

  func testDecoupledWeightDecay() {
    let hand = handAdam(gradients: gs, lr: lr, wd: 0.5, decoupled: true)
    let literal: [Double] = [0.2473243384062118, -0.8434699568990329, 1.5694312429610775]
    for i in 0..<3 { XCTAssertEqual(hand[2].p[i], literal[i], accuracy: 1e-12) }
    let (_, states) = engineAdam(
      config: AdamConfig(lr: Float(lr), weightDecay: 0.5, decoupled: true), gradients: gs)
    for k in 0..<3 {
      assertClose(states[k].0, hand[k].p, 1e-6, "p after step \(k + 1)")
      // Decoupled decay leaves the moments as plain Adam's.
      assertClose(states[k].1, handAdam(gradients: gs, lr: lr)[k].m, 1e-7, "m after step \(k + 1)")
      assertClose(states[k].2, hand[k].v, 1e-8, "v after step \(k + 1)")
    }
  }

  func testRangeUpdatesOnlyThatSlice() {
    let layout = ParameterLayout(specs: [
      TensorSpec(name: "a", shape: [2]), TensorSpec(name: "b", shape: [3]), TensorSpec(name: "c", shape: [2]),
    ])
    let initial: [Float] = [7, 8] + p0.map(Float.init) + [9, 10]
    // Gradients outside the range are non-zero too: they must be ignored.
    let params = Arena(layout: layout)
    let grads = Arena(layout: layout)
    initial.withUnsafeBufferPointer { params.base.update(from: $0.baseAddress!, count: 7) }
    let adam = Adam(config: AdamConfig(lr: Float(lr)), layout: layout)
    let hand = handAdam(gradients: gs, lr: lr)
    for (k, g) in gs.enumerated() {
      let full: [Float] = [1, -1] + g.map(Float.init) + [2, -2]
      full.withUnsafeBufferPointer { grads.base.update(from: $0.baseAddress!, count: 7) }
      adam.update(params: params, grads: grads, scale: 1, range: 2..<5)
      let p = params.toArray()
      XCTAssertEqual(Array(p[0..<2]), [7, 8])
      XCTAssertEqual(Array(p[5..<7]), [9, 10])
      assertClose(Array(p[2..<5]), hand[k].p, 1e-6, "slice after step \(k + 1)")
      XCTAssertEqual(Array(adam.m.toArray()[0..<2]) + Array(adam.m.toArray()[5..<7]), [0, 0, 0, 0])
      XCTAssertEqual(Array(adam.v.toArray()[0..<2]) + Array(adam.v.toArray()[5..<7]), [0, 0, 0, 0])
    }
    XCTAssertEqual(adam.step, 3)
    XCTAssertEqual(grads.toArray(), [1, -1] + gs[2].map(Float.init) + [2, -2], "grads are read-only")
  }

  /// A sharded Adam keeps only its slice's moments (memory ÷ P) and updates that slice with
  /// the same bits as a whole-arena Adam; `load` takes its slice of whole moments.
  func testShardedMomentsMatchTheWholeArena() {
    let layout = ParameterLayout(specs: [TensorSpec(name: "a", shape: [4]), TensorSpec(name: "b", shape: [5])])
    let whole = Adam(config: AdamConfig(lr: 0.01), layout: layout)
    let halves = [Adam(config: AdamConfig(lr: 0.01), layout: layout, owning: 0..<4),
                  Adam(config: AdamConfig(lr: 0.01), layout: layout, owning: 4..<9)]
    XCTAssertEqual(halves.map(\.mSlice.count), [4, 5])
    XCTAssertFalse(halves[0].ownsAll)
    let p1 = Arena(layout: layout), p2 = Arena(layout: layout), g = Arena(layout: layout)
    for i in 0..<9 { p1.base[i] = Float(i) * 0.1; p2.base[i] = Float(i) * 0.1 }
    for step in 1...4 {
      for i in 0..<9 { g.base[i] = Float((i * 7 + step * 3) % 11) - 5 }
      whole.update(params: p1, grads: g, scale: 0.5)
      for h in halves { h.update(params: p2, grads: g, scale: 0.5) }
    }
    XCTAssertEqual(p1.toArray().map(\.bitPattern), p2.toArray().map(\.bitPattern))
    let m = whole.m.toArray(), v = whole.v.toArray()
    XCTAssertEqual(Array(halves[0].mSlice) + Array(halves[1].mSlice), m)
    XCTAssertEqual(Array(halves[0].vSlice) + Array(halves[1].vSlice), v)
    let fresh = Adam(config: AdamConfig(lr: 0.01), layout: layout, owning: 4..<9)
    fresh.load(m: whole.m, v: whole.v)
    XCTAssertEqual(Array(fresh.mSlice), Array(m[4..<9]))
    XCTAssertEqual(Array(fresh.vSlice), Array(v[4..<9]))
  }

  func testScaleMultipliesTheGradient() {
    // Stored gradients are 4·g; scale 1/4 must give exactly Adam on g: the moments show it
    // directly (Adam's step is nearly invariant to the gradient's scale, its moments are not).
    let stored = gs.map { $0.map { 4 * $0 } }
    let hand = handAdam(gradients: gs, lr: lr)
    let (_, states) = engineAdam(config: AdamConfig(lr: Float(lr)), gradients: stored, scale: 0.25)
    for k in 0..<3 {
      assertClose(states[k].0, hand[k].p, 1e-6, "p after step \(k + 1)")
      assertClose(states[k].1, hand[k].m, 1e-7, "m after step \(k + 1)")
      assertClose(states[k].2, hand[k].v, 1e-8, "v after step \(k + 1)")
    }
    // With L2 decay the parameters depend on the scale too (scale applies before the decay term).
    let handWD = handAdam(gradients: stored, lr: lr, wd: 0.5, scale: 0.25)
    let literal: [Double] = [0.21412982603592728, -0.7508584930529273, 1.7086631601667461]
    for i in 0..<3 { XCTAssertEqual(handWD[2].p[i], literal[i], accuracy: 1e-12) }
    let (_, wd) = engineAdam(
      config: AdamConfig(lr: Float(lr), weightDecay: 0.5), gradients: stored, scale: 0.25)
    for k in 0..<3 { assertClose(wd[k].0, handWD[k].p, 1e-6, "p (L2, scaled) after step \(k + 1)") }
    let (_, unscaled) = engineAdam(config: AdamConfig(lr: Float(lr), weightDecay: 0.5), gradients: stored)
    XCTAssertGreaterThan(abs(Double(unscaled[2].0[0]) - handWD[2].p[0]), 1e-2)
  }

  /// PyTorch's defaults and the step counter driving the bias correction.
  func testDefaultsAndStepCounter() {
    let c = AdamConfig()
    XCTAssertEqual(c.lr, 1e-3)
    XCTAssertEqual(c.beta1, 0.9)
    XCTAssertEqual(c.beta2, 0.999)
    XCTAssertEqual(c.eps, 1e-8)
    XCTAssertEqual(c.weightDecay, 0)
    XCTAssertFalse(c.decoupled)
    // First step of Adam moves every parameter with a non-zero gradient by ≈ lr·sign(g).
    let (adam, states) = engineAdam(config: AdamConfig(lr: 0.01), gradients: [[1e-3, -5, 0]])
    XCTAssertEqual(adam.step, 1)
    assertClose(states[0].0, [0.5 - 0.01, -1.0 + 0.01, 2.0], 1e-6, "first step")
  }
}
