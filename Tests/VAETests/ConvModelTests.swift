import Foundation
import XCTest

@testable import VAE

/// A VAE built from layer lists (conv, deconv, reshape, flatten, every activation): its tensors
/// have PyTorch's names and layouts, its gradients equal central finite differences of its
/// loss, and every shape error is caught before a model is built, naming the layer.
final class ConvModelTests: XCTestCase {
  func decls(_ list: [String]) -> [LayerDecl] { list.map { try! LayerDecl(parsing: $0) } }

  /// 1×8×8 images; smooth activations so that finite differences hold everywhere.
  func smallConfig(_ likelihood: Likelihood = .bernoulli) -> ModelConfig {
    var c = ModelConfig(inputSize: 64, hidden: [], zdim: 3, likelihood: likelihood)
    c.inputShape = [1, 8, 8]
    c.encoderLayers = decls(["conv 3 k3 s2 p1 tanh", "conv 4 k2 s2 elu", "flatten", "dense 6 softplus"])
    let last = likelihood.outputsPerValue == 2 ? "deconv 2 k4 s2 p1" : "deconv 1 k4 s2 p1"
    c.decoderLayers = decls(["dense 12 tanh", "reshape 3x2x2", "deconv 2 k3 s2 p1 op1 elu", last])
    return c
  }

  func testTensorsHavePyTorchNamesAndLayouts() {
    let c = smallConfig()
    XCTAssertNil(c.problem)
    let shapes = Dictionary(uniqueKeysWithValues: c.layout.specs.map { ($0.name, $0.shape) })
    XCTAssertEqual(c.layout.specs.map(\.name), [
      "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias", "encoder.3.weight", "encoder.3.bias",
      "encoder.mu.weight", "encoder.mu.bias", "encoder.logvar.weight", "encoder.logvar.bias",
      "decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias", "decoder.out.weight", "decoder.out.bias",
    ])
    XCTAssertEqual(shapes["encoder.0.weight"], [3, 1, 3, 3])  // Conv2d [out, in, k, k]
    XCTAssertEqual(shapes["encoder.1.weight"], [4, 3, 2, 2])
    XCTAssertEqual(shapes["encoder.3.weight"], [6, 16])  // 4 × 2 × 2 flattened
    XCTAssertEqual(shapes["decoder.2.weight"], [3, 2, 3, 3])  // ConvTranspose2d [in, out, k, k]
    XCTAssertEqual(shapes["decoder.out.weight"], [2, 1, 4, 4])
    XCTAssertEqual(c.layers.table.map(\.outShape).last, [1, 8, 8])
    XCTAssertEqual(c.layers.decoder.map(\.activation), [.tanh, .elu, .none])
  }

  /// PyTorch's default initialisation bound 1/√fan_in: in·k² for Conv2d, out·k² for ConvTranspose2d.
  func testInitialisationBoundsFollowPyTorchsFanIn() {
    let m = VAEModel(config: smallConfig(), maxBatch: 2)
    m.initialise(rng: CounterRNG(seed: 5))
    for (name, fanIn) in [("encoder.0.weight", 9), ("encoder.1.weight", 12), ("decoder.2.weight", 2 * 9), ("decoder.out.weight", 16)] {
      let v = m.params.values(named: name)!, bound = 1 / Float(fanIn).squareRoot()
      XCTAssertLessThanOrEqual(v.map(abs).max()!, bound, name)
      XCTAssertGreaterThan(v.map(abs).max()!, 0.5 * bound, "\(name): draws fill the range")
    }
  }

  func checkGradients(_ likelihood: Likelihood, file: StaticString = #filePath, line: UInt = #line) {
    let c = smallConfig(likelihood), batch = 3
    let m = VAEModel(config: c, maxBatch: batch)
    m.initialise(rng: CounterRNG(seed: 11))
    var s = CounterRNG(seed: 12).stream(.initialisation, index: 1)
    let x = (0..<(batch * 64)).map { _ in s.nextFloat(in: 0, 1) }
    let eps = (0..<(batch * 3)).map { _ in s.nextFloat(in: -1.5, 1.5) }
    func loss() -> Double {
      x.withUnsafeBufferPointer { xp in eps.withUnsafeBufferPointer { m.loss(x: xp.baseAddress!, eps: $0.baseAddress!, batch: batch).negativeELBO } }
    }
    _ = loss()
    var reported: [Range<Int>] = []
    m.backward { reported.append($0) }
    XCTAssertEqual(reported.map(\.count).reduce(0, +), m.params.count, "every parameter reported ready once", file: file, line: line)
    let grads = m.grads.toArray()
    var worst = 0.0
    for i in stride(from: 0, to: m.params.count, by: 5) {
      let keep = m.params.base[i], h: Float = 1e-2
      m.params.base[i] = keep + h
      let up = loss()
      m.params.base[i] = keep - h
      let down = loss()
      m.params.base[i] = keep
      let fd = (up - down) / Double(2 * h)
      worst = max(worst, abs(Double(grads[i]) - fd) / (2e-3 + 2e-2 * abs(fd)))
    }
    XCTAssertLessThan(worst, 1, "gradient against finite differences (1 = the tolerance)", file: file, line: line)
  }

  func testGradientsMatchFiniteDifferencesBernoulli() { checkGradients(.bernoulli) }
  func testGradientsMatchFiniteDifferencesLearnedGaussian() { checkGradients(.gaussianLearned) }

  /// Each shape error names the list, the entry and the shapes.
  func testShapeErrorsNameTheLayerAndTheShapes() {
    func problem(_ enc: [String], _ dec: [String], inputSize: Int = 64) -> String {
      var c = ModelConfig(inputSize: inputSize, hidden: [], zdim: 3)
      c.encoderLayers = decls(enc)
      c.decoderLayers = decls(dec)
      return c.problem ?? "no problem"
    }
    let dec = ["dense 64"]
    XCTAssertEqual(
      problem(["conv 2 k11", "flatten"], dec),
      "model.encoder[0] (conv 2 k11 s1 p0): kernel 11 is larger than the padded input 8×8 (input [1, 8, 8], padding 0)")
    XCTAssertEqual(
      problem(["conv 2 k3", "dense 5"], dec),
      "model.encoder[1] (dense 5): a dense layer is fed [2, 6, 6]; put flatten before it")
    XCTAssertEqual(
      problem(["conv 2 k3"], dec),
      "model.encoder: ends with shape [2, 6, 6]; end it with flatten (the μ and log σ² heads are dense)")
    XCTAssertEqual(problem(["dense 8"], ["dense 32", "reshape 2x4x4", "deconv 1 k4 s2 p1"]), "no problem")
    XCTAssertEqual(
      problem(["dense 8"], ["dense 32", "reshape 2x4x4", "deconv 1 k3 s2 p1"]),
      "model.decoder: ends with shape [1, 7, 7], but the data's examples need [1, 8, 8]")
    XCTAssertEqual(
      problem(["dense 8"], ["dense 30", "reshape 2x4x4"]),
      "model.decoder[1] (reshape 2x4x4): reshape to [2, 4, 4] (32 values) is fed [30] (30 values)")
    XCTAssertEqual(problem(["flatten"], ["dense 64"]), "model.encoder: has no dense, conv or deconv layer")
  }

  /// Colour rows are [H, W, C]: a conv reads them, a deconv writes them; what cannot is refused.
  func testColourImagesAreReadByConvAndWrittenByDeconvOnly() {
    func problem(_ enc: [String], _ dec: [String], _ likelihood: Likelihood = .bernoulli) -> String? {
      var c = ModelConfig(inputSize: 192, hidden: [], zdim: 3, likelihood: likelihood)
      c.inputShape = [3, 8, 8]
      c.encoderLayers = decls(enc)
      c.decoderLayers = decls(dec)
      return c.problem
    }
    let dec = ["dense 48", "reshape 3x4x4", "deconv 3 k4 s2 p1"]
    XCTAssertNil(problem(["conv 4 k4 s2 p1", "flatten"], dec))
    var c = ModelConfig(inputSize: 192, hidden: [], zdim: 3)
    c.inputShape = [3, 8, 8]
    c.encoderLayers = decls(["conv 4 k4 s2 p1", "flatten"])
    c.decoderLayers = decls(dec)
    XCTAssertEqual(c.layers.encoder.first?.channelsLast, true)
    XCTAssertEqual(c.layers.decoder.last?.channelsLast, true)
    XCTAssertEqual(c.layers.decoder.first?.channelsLast, false)
    XCTAssertTrue(problem(["deconv 4 k2 s2", "flatten"], dec)?.contains("model.encoder[0]") == true)
    XCTAssertTrue(problem(["conv 4 k4 s2 p1", "flatten"], ["dense 300", "reshape 3x10x10", "conv 3 k3"])?.contains("end with deconv") == true)
    XCTAssertTrue(problem(["conv 4 k4 s2 p1", "flatten"], ["dense 96", "reshape 6x4x4", "deconv 6 k4 s2 p1"], .gaussianLearned)?
      .contains("model.sigma: learned") == true)
  }

  func testLayerEntriesParseOrSayWhatWasExpected() throws {
    XCTAssertEqual(try LayerDecl(parsing: "deconv 16 k3 s2 p1 op1 tanh").description, "deconv 16 k3 s2 p1 op1 tanh")
    XCTAssertEqual(try LayerDecl(parsing: "conv 8  k5").description, "conv 8 k5 s1 p0")
    XCTAssertEqual(try LayerDecl(parsing: "reshape 64x7x7").op, .reshape([64, 7, 7]))
    let bad: [(String, String)] = [
      ("conv 8 k3 s0", "stride 0; expected 1 to 64"),
      ("conv 8 k3 p-1", "padding -1; expected 0 to 64"),
      ("conv 8 s2", "no kernel size"),
      ("deconv 8 k3 s2 op2", "output padding 2; expected 0 to stride − 1 (1)"),
      ("conv 8 k3 op1", "'op1' is not a setting"),
      ("pool 2", "unknown layer 'pool'"),
      ("dense 0", "expected 'dense N' with N from 1 to 100000"),
      ("flatten relu", "flatten takes no size and no activation"),
      ("reshape 64x7", "expected 'reshape CxHxW'"),
      ("", "an empty layer"),
    ]
    for (text, want) in bad {
      do {
        _ = try LayerDecl(parsing: text)
        XCTFail("'\(text)' parsed")
      } catch {
        XCTAssertTrue(error.description.contains(want), "'\(text)': \(error.description)")
        XCTAssertFalse(error.description.contains("\n"))
      }
    }
  }
}
