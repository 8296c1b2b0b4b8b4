import Foundation
import XCTest

@testable import VAE

/// The conditional model kinds (`cvae`, `regressor`) against the independent `Double` reference
/// in `ReferenceConditional.swift`: arena layouts (hand-written tables), forward loss terms,
/// gradients (central finite differences of the reference), shape validation
/// (`ModelConfig.problem`) and batch independence (the per-row X/Y split).
///
/// Tolerances are those of `GradientCheckTests`: forward 1e-5 relative; gradients 1e-3 in
/// norm-relative and element-relative error (elements below 1 % of the tensor's largest
/// finite-difference entry are left out of the element measure); parameter draws whose ReLU
/// pre-activations come within 1e-3 of the kink are skipped, so the 1e-6 finite-difference step
/// cannot cross it.
final class ConditionalModelTests: XCTestCase {
  static let forwardTolerance = 1e-5
  static let gradientTolerance = 1e-3
  static let sigma: Float = 0.7

  /// One network shape, batch and likelihood; builds both the engine's config and the reference.
  struct Case {
    var kind: ModelKind
    var inputSize = 10
    var conditionSize = 3
    var conditionHidden: [Int]
    var conditionIntoEncoder = 1
    /// Encoder widths (cvae only).
    var hidden: [Int] = []
    var decoderHidden: [Int]
    var zdim = 2
    var batch = 4
    var likelihood: Likelihood
    /// X (the condition) drawn in {0, 1} instead of [0, 1) (MNIST-like binarised pixels).
    var binaryCondition = false

    var config: ModelConfig {
      ModelConfig(
        kind: kind, inputSize: inputSize, hidden: hidden, decoderHidden: decoderHidden, zdim: zdim,
        likelihood: likelihood, conditionSize: conditionSize, conditionHidden: conditionHidden,
        conditionIntoEncoder: conditionIntoEncoder)
    }
    var reference: ReferenceConditional {
      let lik: ReferenceVAE.Likelihood
      switch likelihood {
      case .bernoulli: lik = .bernoulli
      case .gaussian(let s): lik = .gaussian(sigma: Double(s))
      case .gaussianLearned: preconditionFailure("conditional kinds have a fixed sigma")
      }
      return ReferenceConditional(
        kind: kind == .cvae ? .cvae : .regressor, inputSize: inputSize, conditionSize: conditionSize,
        conditionHidden: conditionHidden, conditionIntoEncoder: conditionIntoEncoder, hidden: hidden,
        decoderHidden: decoderHidden, zdim: zdim, likelihood: lik)
    }
    var latentSize: Int { kind == .cvae ? zdim : 0 }
    var label: String {
      "\(kind.rawValue) cond \(conditionHidden)"
        + (kind == .cvae ? " into \(conditionIntoEncoder) enc \(hidden) z \(zdim)" : "")
        + " dec \(decoderHidden) \(likelihood.name)"
    }
  }

  // MARK: the shapes

  /// The brief's tiny CVAE: X = 3 values, Y = 7; cond.1 (width 5) is added into encoder.1
  /// (width 5); cond.2 (width 4) into decoder.0 (width 4).
  static func tinyCVAE(_ likelihood: Likelihood, batch: Int = 4) -> Case {
    Case(
      kind: .cvae, inputSize: 10, conditionSize: 3, conditionHidden: [7, 5, 4], conditionIntoEncoder: 1,
      hidden: [6, 5], decoderHidden: [4, 6], zdim: 2, batch: batch, likelihood: likelihood)
  }
  /// Injection at the first layer: cond.0 (width 6) into encoder.0 (width 6).
  static func intoFirstLayerCVAE(_ likelihood: Likelihood) -> Case {
    Case(
      kind: .cvae, inputSize: 11, conditionSize: 4, conditionHidden: [6, 3], conditionIntoEncoder: 0,
      hidden: [6, 4], decoderHidden: [3], zdim: 3, batch: 3, likelihood: likelihood, binaryCondition: true)
  }
  /// A five-layer tower injected at layer 2 of a three-layer encoder.
  static func deepCVAE(_ likelihood: Likelihood) -> Case {
    Case(
      kind: .cvae, inputSize: 12, conditionSize: 5, conditionHidden: [6, 7, 3, 5, 4], conditionIntoEncoder: 2,
      hidden: [6, 4, 3], decoderHidden: [4, 5], zdim: 2, batch: 3, likelihood: likelihood)
  }
  /// The tower's injection layer is also its last layer (both additions read the same layer).
  static func intoLastLayerCVAE(_ likelihood: Likelihood) -> Case {
    Case(
      kind: .cvae, inputSize: 10, conditionSize: 3, conditionHidden: [6, 5], conditionIntoEncoder: 1,
      hidden: [4, 5], decoderHidden: [5, 3], zdim: 2, batch: 3, likelihood: likelihood)
  }
  /// The brief's tiny regressor: X = 4 values, Y = 6.
  static func tinyRegressor(_ likelihood: Likelihood, batch: Int = 4) -> Case {
    Case(kind: .regressor, inputSize: 10, conditionSize: 4, conditionHidden: [5, 3], decoderHidden: [4],
         batch: batch, likelihood: likelihood)
  }
  static func deepRegressor(_ likelihood: Likelihood) -> Case {
    Case(kind: .regressor, inputSize: 12, conditionSize: 5, conditionHidden: [6, 5, 4, 3], decoderHidden: [5, 4],
         batch: 3, likelihood: likelihood, binaryCondition: true)
  }
  /// No decoder hidden layer: decoder.out reads ReLU(last cond layer) directly.
  static func shallowRegressor(_ likelihood: Likelihood) -> Case {
    Case(kind: .regressor, inputSize: 9, conditionSize: 2, conditionHidden: [5], decoderHidden: [],
         batch: 3, likelihood: likelihood)
  }

  // MARK: layouts (hand-written tables: they are the checkpoint format)

  /// The tiny CVAE's tensors, in arena order: encoder (on Y, 7 values), heads, decoder, output
  /// (Y, 7 values), then the condition tower (on X, 3 values).
  func testCVAELayoutTable() {
    let config = Self.tinyCVAE(.bernoulli).config
    XCTAssertNil(config.problem)
    XCTAssertEqual(config.targetSize, 7)
    XCTAssertEqual(config.latentSize, 2)
    let expected: [(String, [Int])] = [
      ("encoder.0.weight", [6, 7]), ("encoder.0.bias", [6]),
      ("encoder.1.weight", [5, 6]), ("encoder.1.bias", [5]),
      ("encoder.mu.weight", [2, 5]), ("encoder.mu.bias", [2]),
      ("encoder.logvar.weight", [2, 5]), ("encoder.logvar.bias", [2]),
      ("decoder.0.weight", [4, 2]), ("decoder.0.bias", [4]),
      ("decoder.1.weight", [6, 4]), ("decoder.1.bias", [6]),
      ("decoder.out.weight", [7, 6]), ("decoder.out.bias", [7]),
      ("cond.0.weight", [7, 3]), ("cond.0.bias", [7]),
      ("cond.1.weight", [5, 7]), ("cond.1.bias", [5]),
      ("cond.2.weight", [4, 5]), ("cond.2.bias", [4]),
    ]
    let layout = config.layout
    XCTAssertEqual(layout.specs.map(\.name), expected.map(\.0))
    XCTAssertEqual(layout.specs.map(\.shape), expected.map(\.1))
    let offsets = [0, 42, 48, 78, 83, 93, 95, 105, 107, 115, 119, 143, 149, 191, 198, 219, 226, 261, 266, 286]
    XCTAssertEqual(layout.offsets, offsets)
    XCTAssertEqual(layout.total, 290)
    XCTAssertEqual(layout.range(named: "cond.1.bias"), 261..<266)
    // 7·6 + 6·5 + 2·(5·2) + 2·4 + 4·6 + 6·7 + 3·7 + 7·5 + 5·4 multiply-adds per example.
    XCTAssertEqual(config.forwardMACs, 42 + 30 + 20 + 8 + 24 + 42 + 21 + 35 + 20)
    // The reference reads exactly these tensors.
    XCTAssertEqual(Self.tinyCVAE(.bernoulli).reference.specs.map(\.name), expected.map(\.0))
    XCTAssertEqual(Self.tinyCVAE(.bernoulli).reference.specs.map(\.shape), expected.map(\.1))
  }

  /// The tiny regressor's tensors: the tower on X (4 values), then the decoder and its output
  /// over Y (6 values). No encoder, no heads, no latent.
  func testRegressorLayoutTable() {
    let config = Self.tinyRegressor(.bernoulli).config
    XCTAssertNil(config.problem)
    XCTAssertEqual(config.targetSize, 6)
    XCTAssertEqual(config.latentSize, 0)
    let expected: [(String, [Int])] = [
      ("cond.0.weight", [5, 4]), ("cond.0.bias", [5]),
      ("cond.1.weight", [3, 5]), ("cond.1.bias", [3]),
      ("decoder.0.weight", [4, 3]), ("decoder.0.bias", [4]),
      ("decoder.out.weight", [6, 4]), ("decoder.out.bias", [6]),
    ]
    let layout = config.layout
    XCTAssertEqual(layout.specs.map(\.name), expected.map(\.0))
    XCTAssertEqual(layout.specs.map(\.shape), expected.map(\.1))
    XCTAssertEqual(layout.offsets, [0, 20, 25, 40, 43, 55, 59, 83])
    XCTAssertEqual(layout.total, 89)
    XCTAssertEqual(config.forwardMACs, 20 + 15 + 12 + 24)
    XCTAssertEqual(Self.tinyRegressor(.bernoulli).reference.specs.map(\.name), expected.map(\.0))
    XCTAssertEqual(Self.tinyRegressor(.bernoulli).reference.specs.map(\.shape), expected.map(\.1))
  }

  // MARK: forward

  /// Loss terms and per-example values equal the reference's, for several draws of each
  /// shape, Bernoulli (soft targets in [0, 1]) and Gaussian.
  func testForwardMatchesReference() {
    var worst = 0.0
    for lik in [Likelihood.bernoulli, .gaussian(sigma: Self.sigma), .gaussian(sigma: 1.3)] {
      for c in [
        Self.tinyCVAE(lik), Self.intoFirstLayerCVAE(lik), Self.deepCVAE(lik), Self.intoLastLayerCVAE(lik),
        Self.tinyRegressor(lik), Self.deepRegressor(lik), Self.shallowRegressor(lik),
      ] {
        for seed in UInt64(1)...4 {
          let d = draw(c, seed: seed, awayFromKink: false)
          let model = loaded(c, d)
          worst = max(worst, forwardError(c, d, model))
        }
      }
    }
    print("[conditional] forward: worst relative error \(sci(worst))")
  }

  // MARK: gradients

  func testGradientTinyCVAEBernoulli() { gradientCheck(Self.tinyCVAE(.bernoulli)) }
  func testGradientTinyCVAEGaussian() { gradientCheck(Self.tinyCVAE(.gaussian(sigma: Self.sigma))) }
  func testGradientCVAEIntoFirstLayerBernoulli() { gradientCheck(Self.intoFirstLayerCVAE(.bernoulli)) }
  func testGradientCVAEIntoFirstLayerGaussian() { gradientCheck(Self.intoFirstLayerCVAE(.gaussian(sigma: 1.3))) }
  func testGradientDeepCVAEBernoulli() { gradientCheck(Self.deepCVAE(.bernoulli)) }
  func testGradientDeepCVAEGaussian() { gradientCheck(Self.deepCVAE(.gaussian(sigma: Self.sigma))) }
  /// `conditionIntoEncoder` = the tower's last layer: that layer's output feeds both the
  /// encoder and the decoder, so its gradient is the sum of both.
  func testGradientCVAEIntoLastTowerLayerBernoulli() { gradientCheck(Self.intoLastLayerCVAE(.bernoulli)) }
  func testGradientCVAEIntoLastTowerLayerGaussian() {
    gradientCheck(Self.intoLastLayerCVAE(.gaussian(sigma: Self.sigma)))
  }
  func testGradientTinyRegressorBernoulli() { gradientCheck(Self.tinyRegressor(.bernoulli)) }
  func testGradientTinyRegressorGaussian() { gradientCheck(Self.tinyRegressor(.gaussian(sigma: Self.sigma))) }
  func testGradientDeepRegressorBernoulli() { gradientCheck(Self.deepRegressor(.bernoulli)) }
  func testGradientDeepRegressorGaussian() { gradientCheck(Self.deepRegressor(.gaussian(sigma: 1.3))) }
  func testGradientShallowRegressor() {
    gradientCheck(Self.shallowRegressor(.bernoulli))
    gradientCheck(Self.shallowRegressor(.gaussian(sigma: Self.sigma)))
  }

  /// The checks above are not vacuous about the two additions (this test is about the test's
  /// power, so it compares the reference with mutants of itself; the engine is not involved).
  /// For each CVAE shape:
  /// - forward: a model *missing* the cond→encoder (resp. cond→decoder) addition differs from
  ///   the true loss, per example, by more than 100× the forward tolerance;
  /// - backward: the condition tower's finite-difference gradient splits exactly into an
  ///   encoder-path part and a decoder-path part (each computed with a frozen copy of the tower
  ///   on the other path). A backward pass that dropped one path's gradient would return the
  ///   other part alone, which is more than 10× the gradient tolerance away from the full
  ///   gradient for every tower layer that feeds the dropped path.
  func testChecksWouldCatchAMissingOrDroppedConditionPath() {
    for c in [
      Self.tinyCVAE(.bernoulli), Self.intoFirstLayerCVAE(.gaussian(sigma: Self.sigma)),
      Self.deepCVAE(.bernoulli), Self.intoLastLayerCVAE(.bernoulli),
    ] {
      let d = draw(c, seed: 1, awayFromKink: true)
      let truth = c.reference.evaluate(params: d.params, x: d.x, eps: d.eps, batch: c.batch)

      // Forward mutants, measured as the forward check measures (worst per-example relative
      // error over recon and KL, and the batch loss).
      var noEncoder = c.reference
      noEncoder.encoderConditionSource = nil
      var noDecoder = c.reference
      noDecoder.decoderConditionSource = nil
      for (what, mutant) in [("cond→encoder", noEncoder), ("cond→decoder", noDecoder)] {
        let m = mutant.evaluate(params: d.params, x: d.x, eps: d.eps, batch: c.batch)
        var gap = ErrorMeasure.relative(m.loss, truth.loss)
        for r in 0..<c.batch {
          gap = max(gap, ErrorMeasure.relative(m.recon[r], truth.recon[r]), ErrorMeasure.relative(m.kl[r], truth.kl[r]))
        }
        XCTAssertGreaterThan(
          gap, 100 * Self.forwardTolerance, "\(c.label): a model without \(what) could pass the forward check")
      }

      // Backward: the tower's gradient along each path alone.
      let (full, viaEncoder, viaDecoder) = towerGradientByPath(c, d)
      for name in full.keys.sorted() {
        let f = full[name]!, ge = viaEncoder[name]!, gd = viaDecoder[name]!
        // Chain rule sanity: the two parts add up to the whole.
        XCTAssertLessThan(ErrorMeasure.normRelative(zip(gd, ge).map(+), f), 1e-6, "\(c.label) \(name): split")
        let layer = Int(name.split(separator: ".")[1])!
        if layer <= c.conditionIntoEncoder {
          // Feeds the encoder (and, through the rest of the tower, the decoder): both matter.
          XCTAssertGreaterThan(
            ErrorMeasure.normRelative(gd, f), 10 * Self.gradientTolerance,
            "\(c.label) \(name): dropping the cond→encoder gradient could go unnoticed")
        } else {
          // Past the injection layer the tower only feeds the decoder.
          XCTAssertLessThan(ge.map(abs).max()!, 1e-9, "\(c.label) \(name): no encoder path expected")
        }
        XCTAssertGreaterThan(
          ErrorMeasure.normRelative(ge, f), 10 * Self.gradientTolerance,
          "\(c.label) \(name): dropping the cond→decoder gradient could go unnoticed")
      }
    }
  }

  /// The engine's condition-tower gradient is the sum of both paths, with a diagnosis when it
  /// is not: which path's gradient the engine's backward pass lost. (The gradient checks above
  /// fail too in that case; this names the cause.)
  func testCVAETowerGradientIncludesBothPaths() {
    for c in [
      Self.tinyCVAE(.bernoulli), Self.intoFirstLayerCVAE(.gaussian(sigma: Self.sigma)),
      Self.deepCVAE(.bernoulli), Self.intoLastLayerCVAE(.bernoulli),
      Self.intoLastLayerCVAE(.gaussian(sigma: Self.sigma)),
    ] {
      let d = draw(c, seed: 2, awayFromKink: true)
      let model = loaded(c, d)
      model.loss(x: d.xBuf.ptr, eps: d.epsBuf.ptr, batch: c.batch)
      model.backward()
      let (full, viaEncoder, viaDecoder) = towerGradientByPath(c, d)
      for name in full.keys.sorted() {
        let engine = grad(model, name)
        let err = ErrorMeasure.normRelative(engine, full[name]!)
        guard err >= Self.gradientTolerance else { continue }
        var diagnosis = "matches neither path alone"
        if ErrorMeasure.normRelative(engine, viaDecoder[name]!) < Self.gradientTolerance {
          diagnosis = "equals the cond→decoder path alone: the cond→encoder gradient was dropped"
        } else if ErrorMeasure.normRelative(engine, viaEncoder[name]!) < Self.gradientTolerance {
          diagnosis = "equals the cond→encoder path alone: the cond→decoder gradient was dropped"
        }
        XCTFail("\(c.label) \(name): norm-relative error \(sci(err)); the engine's gradient \(diagnosis)")
      }
    }
  }

  /// Central finite differences of the reference loss over the `cond.*` tensors: the full
  /// gradient, and its parts through the cond→encoder and the cond→decoder additions alone
  /// (the other addition reads a frozen copy of the tower's parameters).
  func towerGradientByPath(_ c: Case, _ d: Draw)
    -> (full: [String: [Double]], viaEncoder: [String: [Double]], viaDecoder: [String: [Double]])
  {
    let condNames = Set(c.config.layout.specs.map(\.name).filter { $0.hasPrefix("cond.") })
    var frozen = d.params
    for name in condNames { frozen["frozen." + String(name.dropFirst("cond.".count))] = d.params[name] }
    var encoderPathOnly = c.reference
    encoderPathOnly.decoderConditionSource = "frozen"
    var decoderPathOnly = c.reference
    decoderPathOnly.encoderConditionSource = "frozen"
    return (
      c.reference.finiteDifferenceGradients(params: d.params, x: d.x, eps: d.eps, batch: c.batch, only: condNames),
      encoderPathOnly.finiteDifferenceGradients(params: frozen, x: d.x, eps: d.eps, batch: c.batch, only: condNames),
      decoderPathOnly.finiteDifferenceGradients(params: frozen, x: d.x, eps: d.eps, batch: c.batch, only: condNames)
    )
  }

  // MARK: shape validation

  func testProblemAcceptsValidShapes() {
    let valid: [ModelConfig] = [
      Self.tinyCVAE(.bernoulli).config, Self.intoFirstLayerCVAE(.bernoulli).config,
      Self.deepCVAE(.bernoulli).config, Self.intoLastLayerCVAE(.bernoulli).config,
      Self.tinyRegressor(.bernoulli).config, Self.deepRegressor(.bernoulli).config,
      Self.shallowRegressor(.bernoulli).config,
      // A regressor has no encoder: its `hidden` and `conditionIntoEncoder` are not read.
      ModelConfig(kind: .regressor, inputSize: 10, hidden: [9], decoderHidden: [2], zdim: 2,
                  conditionSize: 9, conditionHidden: [1], conditionIntoEncoder: 7),
      // The plain VAE ignores the condition fields.
      ModelConfig(inputSize: 10, hidden: [4], zdim: 2),
    ]
    for config in valid {
      XCTAssertNil(config.problem, "\(config.kind) \(config.conditionHidden) \(config.hidden)")
    }
  }

  func testProblemRejectsInconsistentShapes() {
    let tiny = Self.tinyCVAE(.bernoulli)
    let reg = Self.tinyRegressor(.bernoulli)
    var cases: [(String, ModelConfig)] = []
    func cvae(_ what: String, _ edit: (inout Case) -> Void) {
      var c = tiny
      edit(&c)
      cases.append((what, c.config))
    }
    func regressor(_ what: String, _ edit: (inout Case) -> Void) {
      var c = reg
      edit(&c)
      cases.append((what, c.config))
    }
    cvae("cond width at the injection layer ≠ encoder width") { $0.conditionHidden = [7, 6, 4] }
    cvae("encoder width at the injection layer ≠ cond width") { $0.hidden = [6, 4] }
    cvae("injection layer 0 with different widths") { $0.conditionIntoEncoder = 0 }
    cvae("injection layer past the tower") {
      $0.conditionHidden = [5]
      $0.hidden = [6, 5]
      $0.decoderHidden = [5]
    }
    cvae("injection layer past the encoder") { $0.conditionIntoEncoder = 2 }
    cvae("negative injection layer") { $0.conditionIntoEncoder = -1 }
    cvae("last cond width ≠ first decoder width") { $0.decoderHidden = [5, 6] }
    cvae("no decoder hidden layer to add the tower into") { $0.decoderHidden = [] }
    cvae("no encoder layer") { $0.hidden = [] }
    cvae("empty condition tower") { $0.conditionHidden = [] }
    cvae("conditionSize 0") { $0.conditionSize = 0 }
    cvae("negative conditionSize") { $0.conditionSize = -2 }
    cvae("condition is the whole input (no target)") { $0.conditionSize = 10 }
    cvae("condition larger than the input") { $0.conditionSize = 11 }
    regressor("conditionSize 0") { $0.conditionSize = 0 }
    regressor("condition is the whole input") { $0.conditionSize = 10 }
    regressor("empty condition tower") { $0.conditionHidden = [] }
    for (what, config) in cases {
      guard let message = config.problem else {
        XCTFail("\(config.kind) \(what): accepted")
        continue
      }
      XCTAssertFalse(message.isEmpty, "\(what)")
      XCTAssertFalse(message.contains("\n"), "\(what): not one line: \(message)")
    }
  }

  // MARK: batch independence

  /// A batch of 3 rows gives the sum of the three single-row losses, row for row, and the sum
  /// of their gradients: catches cross-row mix-ups in the X/Y split (row stride, offsets) and
  /// in the condition tower's buffers. The model's maxBatch is larger than 3, and each row is
  /// run alone through the same model, at its own offset in the batch buffers.
  func testBatchIsTheSumOfItsRows() {
    for c0 in [
      Self.tinyCVAE(.bernoulli, batch: 3), Self.tinyCVAE(.gaussian(sigma: Self.sigma), batch: 3),
      Self.deepCVAE(.bernoulli), Self.tinyRegressor(.bernoulli, batch: 3),
      Self.tinyRegressor(.gaussian(sigma: 1.3), batch: 3),
    ] {
      var c = c0
      c.batch = 3
      let d = draw(c, seed: 7, awayFromKink: false)
      let model = VAEModel(config: c.config, maxBatch: 5)
      d.flat.withUnsafeBufferPointer { model.params.base.update(from: $0.baseAddress!, count: $0.count) }
      let n = c.inputSize, l = c.latentSize
      let all = model.loss(x: d.xBuf.ptr, eps: d.epsBuf.ptr, batch: 3)
      let recon = model.reconPerExample.toArray(3), kl = model.klPerExample.toArray(3)
      model.backward()
      let batchGrads = model.grads.toArray().map(Double.init)

      var sum = LossTerms()
      var gradSum = [Double](repeating: 0, count: batchGrads.count)
      for r in 0..<3 {
        let one = model.loss(x: d.xBuf.ptr + r * n, eps: d.epsBuf.ptr + r * l, batch: 1)
        XCTAssertEqual(
          Double(model.reconPerExample.ptr[0]), Double(recon[r]), accuracy: 1e-5 * max(1, abs(Double(recon[r]))),
          "\(c.label) row \(r): recon")
        XCTAssertEqual(Double(model.klPerExample.ptr[0]), Double(kl[r]), accuracy: 1e-5 * max(1, abs(Double(kl[r]))),
                       "\(c.label) row \(r): kl")
        sum = sum + one
        model.backward()
        for (i, g) in model.grads.toArray().enumerated() { gradSum[i] += Double(g) }
      }
      XCTAssertLessThan(ErrorMeasure.relative(sum.recon, all.recon), Self.forwardTolerance, "\(c.label): recon")
      XCTAssertLessThan(ErrorMeasure.relative(sum.negativeELBO, all.negativeELBO), Self.forwardTolerance, c.label)
      if c.kind == .regressor {
        XCTAssertEqual(all.kl, 0, "\(c.label): a regressor has no KL")
      } else {
        XCTAssertLessThan(ErrorMeasure.relative(sum.kl, all.kl), Self.forwardTolerance, "\(c.label): kl")
      }
      XCTAssertLessThan(ErrorMeasure.normRelative(gradSum, batchGrads), 1e-5, "\(c.label): gradients")
      // The rows differ, so a mix-up could not hide behind identical rows.
      XCTAssertNotEqual(recon[0], recon[1], c.label)
      XCTAssertNotEqual(recon[1], recon[2], c.label)
      // And the per-row values are the reference's.
      let ref = c.reference.evaluate(params: d.params, x: d.x, eps: d.eps, batch: 3)
      for r in 0..<3 {
        XCTAssertLessThan(ErrorMeasure.relative(Double(recon[r]), ref.recon[r]), Self.forwardTolerance, c.label)
      }
    }
  }

  // MARK: the machinery

  /// One draw of parameters, input rows and noise, as the engine takes them (Float) and as the
  /// reference takes them (Double, by name).
  struct Draw {
    var flat: [Float]
    var params: [String: [Double]]
    var x: [Double]
    var eps: [Double]
    var xBuf: Buffer
    var epsBuf: Buffer
  }

  /// Parameters ~ U(−0.6, 0.6); X in [0, 1) (or {0, 1}); Y soft targets in [0, 1) (the
  /// Bernoulli likelihood must take them as well as binary ones); ε ~ N(0, 1). Tries draws
  /// from `seed` on until the draw is not degenerate (every CVAE example has KL ≥ 1e-2, every
  /// ReLU layer has an active unit) and, with `awayFromKink`, no ReLU pre-activation lies
  /// within 1e-3 of 0 (the finite-difference step is 1e-6).
  func draw(_ c: Case, seed: UInt64, awayFromKink: Bool) -> Draw {
    let layout = c.config.layout
    for attempt in UInt64(0)..<300 {
      var s = RandomStream(state: (seed &* 1000 &+ attempt) &* 0x2545_F491_4F6C_DD1D ^ 0xC0DE)
      let flat = (0..<layout.total).map { _ in s.nextFloat(in: -0.6, 0.6) }
      var x: [Float] = []
      for _ in 0..<c.batch {
        for j in 0..<c.inputSize {
          if j < c.conditionSize && c.binaryCondition {
            x.append(s.nextFloat() < 0.5 ? 0 : 1)
          } else {
            x.append(s.nextFloat())
          }
        }
      }
      let eps = (0..<(c.batch * c.latentSize)).map { _ in s.nextNormal() }
      let params = byName(flat, layout)
      let xD = x.map(Double.init), epsD = eps.map(Double.init)
      let out = c.reference.evaluate(params: params, x: xD, eps: epsD, batch: c.batch)
      // Not degenerate: every example's KL matters (a tiny KL would also make its Float
      // relative error meaningless), and no ReLU layer is dead over the whole batch.
      if c.kind == .cvae && out.kl.min()! < 1e-2 { continue }
      guard out.fewestActiveUnits >= 1 else { continue }
      if awayFromKink && out.minAbsPreActivation <= 1e-3 { continue }
      let xBuf = Buffer(x.count)
      xBuf.set(x)
      let epsBuf = Buffer(eps.count)
      epsBuf.set(eps)
      return Draw(flat: flat, params: params, x: xD, eps: epsD, xBuf: xBuf, epsBuf: epsBuf)
    }
    preconditionFailure("\(c.label): no seed keeps every ReLU pre-activation away from 0")
  }

  func byName(_ flat: [Float], _ layout: ParameterLayout) -> [String: [Double]] {
    var d: [String: [Double]] = [:]
    for (i, spec) in layout.specs.enumerated() { d[spec.name] = flat[layout.range(of: i)].map(Double.init) }
    return d
  }

  /// A model whose maxBatch exceeds the batch (the engine must use the batch's rows only),
  /// loaded with the draw's parameters.
  func loaded(_ c: Case, _ d: Draw) -> VAEModel {
    let model = VAEModel(config: c.config, maxBatch: c.batch + 2)
    XCTAssertEqual(model.params.count, d.flat.count)
    d.flat.withUnsafeBufferPointer { model.params.base.update(from: $0.baseAddress!, count: $0.count) }
    return model
  }

  func grad(_ model: VAEModel, _ name: String) -> [Double] {
    model.grads.values(named: name)!.map(Double.init)
  }

  /// Runs `loss` and compares the terms and per-example values with the reference; returns the
  /// worst relative error.
  @discardableResult
  func forwardError(_ c: Case, _ d: Draw, _ model: VAEModel, file: StaticString = #filePath, line: UInt = #line)
    -> Double
  {
    let terms = model.loss(x: d.xBuf.ptr, eps: d.epsBuf.ptr, batch: c.batch)
    let expect = c.reference.evaluate(params: d.params, x: d.x, eps: d.eps, batch: c.batch)
    let recon = model.reconPerExample.toArray(c.batch).map(Double.init)
    let kl = model.klPerExample.toArray(c.batch).map(Double.init)
    var worst = 0.0
    for r in 0..<c.batch {
      worst = max(worst, ErrorMeasure.relative(recon[r], expect.recon[r]))
      if c.kind == .cvae {
        worst = max(worst, ErrorMeasure.relative(kl[r], expect.kl[r]))
      } else {
        XCTAssertEqual(kl[r], 0, "\(c.label): a regressor's per-example KL", file: file, line: line)
      }
    }
    worst = max(worst, ErrorMeasure.relative(terms.recon, expect.recon.reduce(0, +)))
    worst = max(worst, ErrorMeasure.relative(terms.negativeELBO, expect.loss))
    if c.kind == .cvae {
      worst = max(worst, ErrorMeasure.relative(terms.kl, expect.kl.reduce(0, +)))
      // Not degenerate: the KL matters.
      XCTAssertGreaterThan(expect.kl.min()!, 1e-2, "\(c.label): degenerate KL", file: file, line: line)
    } else {
      XCTAssertEqual(terms.kl, 0, "\(c.label): a regressor's KL", file: file, line: line)
    }
    XCTAssertLessThanOrEqual(worst, Self.forwardTolerance, "\(c.label): forward vs reference", file: file, line: line)
    return worst
  }

  /// For three seeds: forward vs the reference, then every gradient entry vs central finite
  /// differences of the reference loss; the gradient arena is poisoned with NaN first, so every
  /// entry must be written. Every tensor must have a non-zero finite-difference gradient (in a
  /// CVAE the condition tower is reached only through the two additions, so this also proves
  /// both are wired in), and `backward` must overwrite rather than accumulate.
  func gradientCheck(_ c: Case, seeds: [UInt64] = [1, 2, 3], file: StaticString = #filePath, line: UInt = #line) {
    let layout = c.config.layout
    XCTAssertEqual(layout.specs.map(\.name), c.reference.specs.map(\.name), file: file, line: line)
    XCTAssertEqual(layout.specs.map(\.shape), c.reference.specs.map(\.shape), file: file, line: line)
    guard layout.specs.map(\.name) == c.reference.specs.map(\.name) else { return }
    var worstForward = 0.0, worstNorm = 0.0, worstElement = 0.0
    for seed in seeds {
      let d = draw(c, seed: seed, awayFromKink: true)
      let model = loaded(c, d)
      worstForward = max(worstForward, forwardError(c, d, model, file: file, line: line))
      model.grads.data.update(repeating: .nan)
      model.backward()
      let fd = c.reference.finiteDifferenceGradients(params: d.params, x: d.x, eps: d.eps, batch: c.batch)
      for spec in layout.specs {
        let g = grad(model, spec.name)
        guard let f = fd[spec.name] else {
          XCTFail("\(c.label): no finite differences for \(spec.name)", file: file, line: line)
          continue
        }
        let where_ = "\(c.label) seed \(seed) \(spec.name)"
        XCTAssertFalse(g.contains { !$0.isFinite }, "\(where_): non-finite gradient", file: file, line: line)
        let fdMax = f.map(abs).max() ?? 0
        XCTAssertGreaterThan(fdMax, 1e-6, "\(where_): vacuous check, gradient is zero", file: file, line: line)
        let nr = ErrorMeasure.normRelative(g, f)
        let er = ErrorMeasure.maxElementRelative(g, f, floor: max(1e-2 * fdMax, 1e-6))
        worstNorm = max(worstNorm, nr)
        worstElement = max(worstElement, er)
        XCTAssertLessThan(nr, Self.gradientTolerance, "\(where_): norm-relative error", file: file, line: line)
        XCTAssertLessThan(er, Self.gradientTolerance, "\(where_): element-relative error", file: file, line: line)
      }
      // backward() overwrites: a different loss in between, then the same one again, gives
      // the same gradients.
      let first = model.grads.toArray()
      let other = Buffer(d.x.count)
      other.set(d.x.map { Float(1 - $0) })
      model.loss(x: other.ptr, eps: d.epsBuf.ptr, batch: c.batch)
      model.backward()
      XCTAssertNotEqual(model.grads.toArray(), first, "\(c.label)", file: file, line: line)
      model.loss(x: d.xBuf.ptr, eps: d.epsBuf.ptr, batch: c.batch)
      model.backward()
      XCTAssertEqual(model.grads.toArray(), first, "\(c.label): backward must overwrite", file: file, line: line)
    }
    print(
      "[conditional gradcheck] \(c.label): forward rel \(sci(worstForward)), "
        + "grad norm-rel \(sci(worstNorm)), grad elem-rel \(sci(worstElement))")
  }
}

private func sci(_ v: Double) -> String { String(format: "%.3e", v) }
