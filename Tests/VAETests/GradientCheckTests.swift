import Foundation
import XCTest

@testable import VAE

/// The engine's loss and gradients against the independent `Double` reference
/// (`Reference.swift`) and central finite differences of it.
final class GradientCheckTests: XCTestCase {
  struct Case {
    var inputSize = 12
    var hidden: [Int]
    var decoderHidden: [Int]
    var zdim: Int
    var batch = 4
    var likelihood: Likelihood
    /// The KL weight of the training loss (β, or part of it during warm-up).
    var klWeight: Float = 1
    /// Free bits λ (nats per latent dimension); 0: off.
    var freeBits: Double = 0

    var config: ModelConfig {
      ModelConfig(
        inputSize: inputSize, hidden: hidden, decoderHidden: decoderHidden, zdim: zdim,
        likelihood: likelihood)
    }
    var reference: ReferenceVAE {
      let lik: ReferenceVAE.Likelihood
      switch likelihood {
      case .bernoulli: lik = .bernoulli
      case .gaussian(let s): lik = .gaussian(sigma: Double(s))
      case .gaussianLearned: lik = .gaussianLearned
      }
      var r = ReferenceVAE(
        inputSize: inputSize, hidden: hidden, decoderHidden: decoderHidden, zdim: zdim,
        likelihood: lik)
      r.klWeight = Double(klWeight)
      r.freeBits = freeBits
      return r
    }
  }

  static let sigma: Float = 0.7

  // MARK: the six cases

  /// β-VAE: the gradient of β·KL − log p(x|z), for a β above and below 1 (and 0: no KL at all).
  func testKLWeightBetaAboveAndBelowOne() throws {
    for beta: Float in [4, 0.25] {
      try check(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, likelihood: .bernoulli, klWeight: beta))
    }
    try check(Case(hidden: [7], decoderHidden: [6], zdim: 2, likelihood: .gaussian(sigma: Self.sigma), klWeight: 0))
  }
  /// IWAE training (k = 5): the bound's value and its gradient against the Double reference's
  /// finite differences; the 5·B samples go through the decoder as one batch.
  func testImportanceWeightedBoundAndGradientKFive() throws {
    for lik in [Likelihood.bernoulli, .gaussianLearned] {
      let run = importanceWeighted(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, batch: 3, likelihood: lik), .standard)
      let want = run.reference.importanceWeightedLoss(params: run.params, x: run.x, eps: run.eps, batch: run.batch, k: run.k)
      XCTAssertEqual(run.loss, want, accuracy: 1e-5 * abs(want), "\(lik.name): −Σ bound")
      let fd = centralDifferences(params: run.params, names: Array(run.gradients.keys), h: 1e-6) {
        run.reference.importanceWeightedLoss(params: $0, x: run.x, eps: run.eps, batch: run.batch, k: run.k)
      }
      for (name, g) in run.gradients { XCTAssertLessThan(ErrorMeasure.normRelative(g, fd[name]!), 1e-3, "\(lik.name) \(name)") }
    }
  }

  /// DReG (k = 5): the gradient of Tucker et al.'s surrogate by the Double reference's finite
  /// differences, w̃ and log q's μ, σ² held at the current parameters: weighted by w̃² for the
  /// encoder's parameters, by w̃ (IWAE's own gradient) for the decoder's. The loss is IWAE's.
  func testDReGGradientKFiveIsItsSurrogates() throws {
    for lik in [Likelihood.bernoulli, .gaussianLearned] {
      let run = importanceWeighted(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, batch: 3, likelihood: lik), .dreg)
      let want = run.reference.importanceWeightedLoss(params: run.params, x: run.x, eps: run.eps, batch: run.batch, k: run.k)
      XCTAssertEqual(run.loss, want, accuracy: 1e-5 * abs(want), "\(lik.name): −Σ bound")
      for power in [1.0, 2.0] {
        let names = run.gradients.keys.filter { $0.hasPrefix("encoder.") == (power == 2) }
        let fd = centralDifferences(params: run.params, names: names, h: 1e-6) {
          run.reference.dregSurrogate(params: $0, base: run.params, x: run.x, eps: run.eps, batch: run.batch, k: run.k, power: power)
        }
        for name in names {
          XCTAssertLessThan(ErrorMeasure.normRelative(run.gradients[name]!, fd[name]!), 1e-3, "\(lik.name) \(name)")
        }
      }
      let plain = importanceWeighted(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, batch: 3, likelihood: lik), .standard)
      XCTAssertGreaterThan(ErrorMeasure.normRelative(run.gradients["encoder.mu.weight"]!, plain.gradients["encoder.mu.weight"]!), 0.01,
                           "DReG's encoder gradient is not the standard one")
    }
  }

  /// One IWAE step (k = 5) of the engine on case c's parameters and images, noise in [−2, 2]:
  /// −Σ bound, each parameter's gradient, and what the reference needs.
  func importanceWeighted(_ c: Case, _ gradient: TrainingObjective.Gradient) -> (
    loss: Double, gradients: [String: [Double]], params: [String: [Double]], x: [Double], eps: [Double], batch: Int,
    k: Int, reference: ReferenceVAE
  ) {
    let k = 5
    let (flat, xs, _) = draw(c)
    var s = CounterRNG(seed: 77).stream(.noise, index: 3)
    let eps = (0..<(c.batch * k * c.zdim)).map { _ in s.nextFloat(in: -2, 2) }
    var objective = TrainingObjective(kind: .iwae, samples: k)
    objective.gradient = gradient
    let model = VAEModel(config: c.config, maxBatch: c.batch, objective: objective)
    flat.withUnsafeBufferPointer { model.params.base.update(from: $0.baseAddress!, count: flat.count) }
    let terms = xs.withUnsafeBufferPointer { xp in
      eps.withUnsafeBufferPointer { model.loss(x: xp.baseAddress!, eps: $0.baseAddress!, batch: c.batch) }
    }
    model.grads.data.update(repeating: .nan)
    var ready = 0
    model.backward { ready += $0.count }
    XCTAssertEqual(ready, model.params.count, "every parameter reported once")
    var gradients: [String: [Double]] = [:]
    for (i, spec) in c.config.layout.specs.enumerated() {
      gradients[spec.name] = model.grads.toArray()[c.config.layout.range(of: i)].map(Double.init)
    }
    return (terms.negativeELBO, gradients, dictionary(flat, c.config.layout), xs.map(Double.init), eps.map(Double.init),
            c.batch, k, c.reference)
  }

  /// Free bits with λ between the dimensions' mean KLs: some dimensions train their KL, the
  /// others (below λ) get none; the gradient of Σ recon + B·Σ_j max(λ, K̄_j) by finite differences.
  func testFreeBitsWithSomeDimensionsBelowLambda() throws {
    let base = Case(hidden: [7, 5], decoderHidden: [6], zdim: 4, likelihood: .bernoulli)
    let (flat, xs, epss) = draw(base)
    let means = base.reference.evaluate(
      params: dictionary(flat, base.config.layout), x: xs.map(Double.init), eps: epss.map(Double.init), batch: base.batch
    ).meanKLPerDimension.sorted()
    let lambda = (means[1] + means[2]) / 2  // two dimensions below, two above
    XCTAssertGreaterThan(means[2] - means[1], 1e-3, "λ must not sit on a dimension's KL")
    var c = base
    c.freeBits = lambda
    try check(c)
    c.klWeight = 0.5  // with a KL weight too
    try check(c)
  }

  /// Mid-way through KL warm-up: the weight of step 30 of 100 towards β = 2.
  func testKLWarmupMidway() throws {
    let w = TrainingObjective(beta: 2, klWarmup: 100).klWeight(step: 30)
    XCTAssertEqual(w, 0.6, accuracy: 1e-7)
    try check(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, likelihood: .gaussianLearned, klWeight: w))
  }

  func testDeepBernoulli() throws {
    try check(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, likelihood: .bernoulli))
  }
  func testDeepGaussian() throws {
    try check(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, likelihood: .gaussian(sigma: Self.sigma)))
  }
  func testNoHiddenLayersBernoulli() throws {
    try check(Case(hidden: [], decoderHidden: [], zdim: 3, likelihood: .bernoulli))
  }
  func testNoHiddenLayersGaussian() throws {
    try check(Case(hidden: [], decoderHidden: [], zdim: 3, likelihood: .gaussian(sigma: Self.sigma)))
  }
  func testZdimOneBernoulli() throws {
    try check(Case(hidden: [7, 5], decoderHidden: [6], zdim: 1, likelihood: .bernoulli))
  }
  /// The learned-variance Gaussian (decoder outputs μ and log σ² per dimension).
  func testDeepGaussianLearnedVariance() throws {
    try check(Case(hidden: [7, 5], decoderHidden: [6], zdim: 3, likelihood: .gaussianLearned))
  }
  func testNoHiddenLayersGaussianLearnedVariance() throws {
    try check(Case(hidden: [], decoderHidden: [], zdim: 2, likelihood: .gaussianLearned))
  }

  func testZdimOneGaussian() throws {
    try check(Case(hidden: [7, 5], decoderHidden: [6], zdim: 1, likelihood: .gaussian(sigma: Self.sigma)))
  }
  /// Encoder hidden layers but none in the decoder (and vice versa): the two asymmetric paths.
  func testAsymmetricDepths() throws {
    try check(Case(hidden: [6], decoderHidden: [], zdim: 2, batch: 3, likelihood: .bernoulli))
    try check(Case(hidden: [], decoderHidden: [5, 4], zdim: 2, batch: 3, likelihood: .gaussian(sigma: 1.3)))
  }

  /// `decoderHidden: nil` mirrors the encoder, and the layout is the reference's naming.
  /// The arena layout is the checkpoint format (PyTorch names and shapes, in this order): the
  /// expected table is written out here, not derived by code that could share a bug.
  func testLayoutMatchesPyTorchNamingTable() {
    let config = ModelConfig(inputSize: 10, hidden: [8, 6, 4], zdim: 2)
    XCTAssertEqual(config.decoderHidden, [4, 6, 8])
    let expected: [(String, [Int])] = [
      ("encoder.0.weight", [8, 10]), ("encoder.0.bias", [8]),
      ("encoder.1.weight", [6, 8]), ("encoder.1.bias", [6]),
      ("encoder.2.weight", [4, 6]), ("encoder.2.bias", [4]),
      ("encoder.mu.weight", [2, 4]), ("encoder.mu.bias", [2]),
      ("encoder.logvar.weight", [2, 4]), ("encoder.logvar.bias", [2]),
      ("decoder.0.weight", [4, 2]), ("decoder.0.bias", [4]),
      ("decoder.1.weight", [6, 4]), ("decoder.1.bias", [6]),
      ("decoder.2.weight", [8, 6]), ("decoder.2.bias", [8]),
      ("decoder.out.weight", [10, 8]), ("decoder.out.bias", [10]),
    ]
    XCTAssertEqual(config.layout.specs.map(\.name), expected.map(\.0))
    XCTAssertEqual(config.layout.specs.map(\.shape), expected.map(\.1))
    let offsets = [0, 80, 88, 136, 142, 166, 170, 178, 180, 188, 190, 198, 202, 226, 232, 280, 288, 368]
    XCTAssertEqual(config.layout.offsets, offsets)
    XCTAssertEqual(config.layout.total, 378)
    XCTAssertEqual(config.layout.range(of: 6), 170..<178)
    XCTAssertEqual(config.layout.range(named: "decoder.out.bias"), 368..<378)
    // 10·8 + 8·6 + 6·4 + 2·(4·2) + 2·4 + 4·6 + 6·8 + 8·10 multiply-adds per example.
    XCTAssertEqual(config.forwardMACs, 80 + 48 + 24 + 16 + 8 + 24 + 48 + 80)
  }

  // MARK: the check

  /// Draws parameters, x and ε; returns them with a seed for which no ReLU pre-activation lies
  /// within 1e-3 of the kink (so a 1e-6 finite-difference step cannot cross it).
  func draw(_ c: Case) -> (params: [Float], x: [Float], eps: [Float]) {
    let layout = c.config.layout
    for seed in UInt64(1)...200 {
      var s = RandomStream(state: seed &* 0x1234_5678_9ABC_DEF1)
      let params = (0..<layout.total).map { _ in s.nextFloat(in: -0.6, 0.6) }
      let x: [Float] = (0..<(c.batch * c.inputSize)).map { _ in
        switch c.likelihood {
        case .bernoulli: s.nextFloat() < 0.5 ? 0 : 1
        case .gaussian, .gaussianLearned: s.nextFloat()
        }
      }
      let eps = (0..<(c.batch * c.zdim)).map { _ in s.nextNormal() }
      let out = c.reference.evaluate(
        params: dictionary(params, layout), x: x.map(Double.init), eps: eps.map(Double.init),
        batch: c.batch)
      if out.minAbsPreActivation > 1e-3 { return (params, x, eps) }
    }
    preconditionFailure("no seed keeps every ReLU pre-activation away from 0")
  }

  func dictionary(_ flat: [Float], _ layout: ParameterLayout) -> [String: [Double]] {
    var d: [String: [Double]] = [:]
    for (i, spec) in layout.specs.enumerated() {
      d[spec.name] = flat[layout.range(of: i)].map(Double.init)
    }
    return d
  }

  func check(_ c: Case, file: StaticString = #filePath, line: UInt = #line) throws {
    let config = c.config
    let layout = config.layout
    let ref = c.reference
    XCTAssertEqual(layout.specs.map(\.name), ref.specs.map(\.name), file: file, line: line)
    XCTAssertEqual(layout.specs.map(\.shape), ref.specs.map(\.shape), file: file, line: line)
    guard layout.specs.map(\.name) == ref.specs.map(\.name) else { return }

    let (flat, xs, epss) = draw(c)
    // A larger maxBatch than the batch: the engine must use the batch's rows only.
    let model = VAEModel(config: config, maxBatch: c.batch + 3)
    model.klWeight = c.klWeight
    // Free bits: the mask the trainer would compute, dimension j trained while K̄_j > λ.
    let mask = Buffer(c.zdim)
    if c.freeBits > 0 {
      model.klMask = UnsafePointer(mask.ptr)
    }
    flat.withUnsafeBufferPointer { model.params.base.update(from: $0.baseAddress!, count: layout.total) }
    let xBuf = Buffer(xs.count)
    xBuf.set(xs)
    let epsBuf = Buffer(epss.count)
    epsBuf.set(epss)
    let params = dictionary(flat, layout)
    let xD = xs.map(Double.init)
    let epsD = epss.map(Double.init)

    // Forward: loss terms and per-example values.
    let terms = model.loss(x: xBuf.ptr, eps: epsBuf.ptr, batch: c.batch)
    let expect = ref.evaluate(params: params, x: xD, eps: epsD, batch: c.batch)
    mask.set(expect.meanKLPerDimension.map { $0 > c.freeBits ? 1 : 0 })
    let recon = model.reconPerExample.toArray(c.batch).map(Double.init)
    let kl = model.klPerExample.toArray(c.batch).map(Double.init)
    var worstForward = 0.0
    for r in 0..<c.batch {
      worstForward = max(worstForward, ErrorMeasure.relative(recon[r], expect.recon[r]))
      worstForward = max(worstForward, ErrorMeasure.relative(kl[r], expect.kl[r]))
    }
    worstForward = max(worstForward, ErrorMeasure.relative(terms.recon, expect.recon.reduce(0, +)))
    worstForward = max(worstForward, ErrorMeasure.relative(terms.kl, expect.kl.reduce(0, +)))
    // The loss terms stay unweighted (the weight and free bits act on the gradient only).
    let elbo = zip(expect.kl, expect.recon).reduce(0) { $0 + $1.0 - $1.1 }
    worstForward = max(worstForward, ErrorMeasure.relative(terms.negativeELBO, elbo))
    XCTAssertLessThanOrEqual(worstForward, 1e-5, "forward vs reference", file: file, line: line)
    // Sanity: the case is not degenerate (KL and recon both matter).
    XCTAssertGreaterThan(expect.kl.min()!, 1e-2, file: file, line: line)

    // Backward vs central finite differences of the Double reference.
    model.grads.data.update(repeating: .nan)  // backward must overwrite every entry
    model.backward()
    let fd = ref.finiteDifferenceGradients(params: params, x: xD, eps: epsD, batch: c.batch)
    var worstNorm = 0.0
    var worstElement = 0.0
    for (i, spec) in layout.specs.enumerated() {
      let g = model.grads.toArray()[layout.range(of: i)].map(Double.init)
      guard let f = fd[spec.name] else {
        XCTFail("no finite differences for \(spec.name)", file: file, line: line)
        continue
      }
      XCTAssertFalse(g.contains { !$0.isFinite }, "\(spec.name) has non-finite gradients", file: file, line: line)
      let fdMax = f.map(abs).max() ?? 0
      XCTAssertGreaterThan(fdMax, 1e-6, "\(spec.name): vacuous check, gradient is zero", file: file, line: line)
      let nr = ErrorMeasure.normRelative(g, f)
      let er = ErrorMeasure.maxElementRelative(g, f, floor: max(1e-2 * fdMax, 1e-6))
      worstNorm = max(worstNorm, nr)
      worstElement = max(worstElement, er)
      XCTAssertLessThan(nr, 1e-3, "\(spec.name): norm-relative error", file: file, line: line)
      XCTAssertLessThan(er, 1e-3, "\(spec.name): element-relative error", file: file, line: line)
    }
    print(
      "[gradcheck] hidden \(c.hidden) dec \(c.decoderHidden) z \(c.zdim) \(c.likelihood.name): "
        + "forward rel \(fmt(worstForward)), grad norm-rel \(fmt(worstNorm)), grad elem-rel \(fmt(worstElement))")

    // backward() overwrites (no accumulation across calls) and depends only on the last loss().
    let first = model.grads.toArray()
    let other = Buffer(xs.count)
    other.set(xs.map { 1 - $0 })
    model.loss(x: other.ptr, eps: epsBuf.ptr, batch: c.batch)
    model.backward()
    XCTAssertNotEqual(model.grads.toArray(), first, file: file, line: line)
    let again = model.loss(x: xBuf.ptr, eps: epsBuf.ptr, batch: c.batch)
    model.backward()
    XCTAssertEqual(again, terms, file: file, line: line)
    XCTAssertEqual(model.grads.toArray(), first, "backward must overwrite, not accumulate", file: file, line: line)
  }
}

func fmt(_ v: Double) -> String { String(format: "%.3e", v) }

/// One `Linear` layer (forward, backward, ReLU derivative) against loops and finite differences.
final class LinearLayerTests: XCTestCase {
  let inF = 5
  let outF = 4
  let batch = 3

  /// A layout with an unrelated tensor first, so the layer's ranges do not start at 0.
  func makeLayer() -> (Linear, Arena, Arena) {
    let layout = ParameterLayout(specs: [
      TensorSpec(name: "other", shape: [7]),
      TensorSpec(name: "l.weight", shape: [outF, inF]),
      TensorSpec(name: "l.bias", shape: [outF]),
    ])
    let layer = Linear(weight: layout.range(of: 1), bias: layout.range(of: 2), inFeatures: inF, outFeatures: outF)
    let params = Arena(layout: layout)
    let grads = Arena(layout: layout)
    var s = RandomStream(state: 99)
    for i in 0..<layout.total { params.base[i] = s.nextFloat(in: -1, 1) }
    return (layer, params, grads)
  }

  func testForwardAndBackwardAgainstLoops() {
    for relu in [false, true] {
      let (layer, params, grads) = makeLayer()
      var s = RandomStream(state: relu ? 5 : 6)
      let x = (0..<(batch * inF)).map { _ in s.nextFloat(in: -1, 1) }
      let c = (0..<(batch * outF)).map { _ in s.nextFloat(in: -1, 1) }  // L = Σ c·y
      let w = params.values(named: "l.weight")!.map(Double.init)
      let b = params.values(named: "l.bias")!.map(Double.init)
      let xD = x.map(Double.init)

      func forwardD(_ x: [Double], _ w: [Double], _ b: [Double]) -> [Double] {
        let y = ReferenceVAE.linear(x, rows: batch, inF: inF, outF: outF, weight: w, bias: b)
        return relu ? y.map { max($0, 0) } : y
      }
      func lossD(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double {
        zip(forwardD(x, w, b), c).reduce(0) { $0 + $1.0 * Double($1.1) }
      }

      // Forward.
      let yBuf = Buffer(batch * outF)
      yBuf.set([Float](repeating: .nan, count: batch * outF))
      x.withUnsafeBufferPointer {
        layer.forward($0.baseAddress!, yBuf.ptr, batch: batch, params: params, relu: relu)
      }
      let y = yBuf.toArray().map(Double.init)
      let yRef = forwardD(xD, w, b)
      for i in 0..<y.count { XCTAssertEqual(y[i], yRef[i], accuracy: 1e-6 * max(1, abs(yRef[i]))) }
      if relu {
        XCTAssertTrue(y.contains(0), "ReLU case should have some inactive units")
        XCTAssertTrue(y.contains { $0 > 0 })
      }

      // Backward: dy = c, masked by the ReLU derivative from the output.
      let dy = Buffer(batch * outF)
      dy.set(c)
      if relu { reluBackward(yBuf.ptr, dy.ptr, count: batch * outF) }
      for i in 0..<(batch * outF) {
        XCTAssertEqual(dy.ptr[i], relu && yRef[i] <= 0 ? 0 : c[i])
      }
      grads.data.update(repeating: .nan)  // overwritten, not accumulated
      let dx = Buffer(batch * inF)
      dx.set([Float](repeating: .nan, count: batch * inF))
      x.withUnsafeBufferPointer {
        layer.backward($0.baseAddress!, dy.ptr, dx.ptr, batch: batch, params: params, grads: grads)
      }
      XCTAssertTrue(grads.values(named: "other")!.allSatisfy { $0.isNaN }, "backward wrote outside its slices")
      let dW = grads.values(named: "l.weight")!.map(Double.init)
      let db = grads.values(named: "l.bias")!.map(Double.init)
      let dX = dx.toArray().map(Double.init)

      // Loops.
      let dyD = dy.toArray().map(Double.init)
      for o in 0..<outF {
        var sb = 0.0
        for r in 0..<batch { sb += dyD[r * outF + o] }
        XCTAssertEqual(db[o], sb, accuracy: 1e-6)
        for i in 0..<inF {
          var sw = 0.0
          for r in 0..<batch { sw += dyD[r * outF + o] * xD[r * inF + i] }
          XCTAssertEqual(dW[o * inF + i], sw, accuracy: 1e-6)
        }
      }
      for r in 0..<batch {
        for i in 0..<inF {
          var sx = 0.0
          for o in 0..<outF { sx += dyD[r * outF + o] * w[o * inF + i] }
          XCTAssertEqual(dX[r * inF + i], sx, accuracy: 1e-6)
        }
      }

      // Finite differences of L = Σ c·layer(x).
      let h = 1e-6
      func fd(_ v: [Double], _ f: ([Double]) -> Double) -> [Double] {
        (0..<v.count).map { i in
          var p = v, m = v
          p[i] += h
          m[i] -= h
          return (f(p) - f(m)) / (2 * h)
        }
      }
      let fdW = fd(w) { lossD(xD, $0, b) }
      let fdB = fd(b) { lossD(xD, w, $0) }
      let fdX = fd(xD) { lossD($0, w, b) }
      XCTAssertLessThan(ErrorMeasure.normRelative(dW, fdW), 1e-5)
      XCTAssertLessThan(ErrorMeasure.normRelative(db, fdB), 1e-5)
      XCTAssertLessThan(ErrorMeasure.normRelative(dX, fdX), 1e-5)

      // accumulateDx adds to what is there.
      let base = (0..<(batch * inF)).map { Float($0) * 0.25 }
      dx.set(base)
      x.withUnsafeBufferPointer {
        layer.backward(
          $0.baseAddress!, dy.ptr, dx.ptr, batch: batch, params: params, grads: grads, accumulateDx: true)
      }
      let acc = dx.toArray()
      for i in 0..<acc.count { XCTAssertEqual(Double(acc[i]), Double(base[i]) + dX[i], accuracy: 1e-5) }
    }
  }
}
