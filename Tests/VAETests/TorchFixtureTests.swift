import Foundation
import XCTest

@testable import VAE

/// A minimal safetensors reader for the tests (this target depends on `VAE` only): 8-byte
/// little-endian header length, JSON header, raw little-endian F32/F64 data. Values come back
/// as `Double`.
struct TestSafetensors {
  struct Entry {
    let dtype: String
    let shape: [Int]
    let values: [Double]
  }
  enum ReadError: Error, CustomStringConvertible {
    case malformed(String)
    var description: String {
      switch self { case .malformed(let s): "safetensors: \(s)" }
    }
  }

  let tensors: [String: Entry]
  let metadata: [String: String]

  init(url: URL) throws {
    let data = try Data(contentsOf: url)
    guard data.count >= 8 else { throw ReadError.malformed("file shorter than 8 bytes") }
    var n: UInt64 = 0
    for i in 0..<8 { n |= UInt64(data[data.startIndex + i]) << (8 * UInt64(i)) }
    guard n <= UInt64(data.count - 8) else { throw ReadError.malformed("header length \(n) past end") }
    let headerEnd = 8 + Int(n)
    let header = data.subdata(in: 8..<headerEnd)
    guard let json = try JSONSerialization.jsonObject(with: header) as? [String: Any] else {
      throw ReadError.malformed("header is not a JSON object")
    }
    let body = data.subdata(in: headerEnd..<data.count)
    var tensors: [String: Entry] = [:]
    var metadata: [String: String] = [:]
    for (name, value) in json {
      if name == "__metadata__" {
        metadata = (value as? [String: String]) ?? [:]
        continue
      }
      guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
        let shape = (info["shape"] as? [NSNumber])?.map(\.intValue),
        let offs = (info["data_offsets"] as? [NSNumber])?.map(\.intValue), offs.count == 2
      else { throw ReadError.malformed("tensor \(name): bad header entry") }
      let count = shape.reduce(1, *)
      let width: Int
      switch dtype {
      case "F32": width = 4
      case "F64": width = 8
      default: throw ReadError.malformed("tensor \(name): unsupported dtype \(dtype)")
      }
      guard offs[0] >= 0, offs[1] <= body.count, offs[1] - offs[0] == count * width else {
        throw ReadError.malformed("tensor \(name): offsets \(offs) do not hold \(count) × \(dtype)")
      }
      var values = [Double](repeating: 0, count: count)
      body.withUnsafeBytes { raw in
        for i in 0..<count {
          let at = offs[0] + i * width
          if width == 4 {
            let bits = raw.loadUnaligned(fromByteOffset: at, as: UInt32.self)
            values[i] = Double(Float(bitPattern: UInt32(littleEndian: bits)))
          } else {
            let bits = raw.loadUnaligned(fromByteOffset: at, as: UInt64.self)
            values[i] = Double(bitPattern: UInt64(littleEndian: bits))
          }
        }
      }
      tensors[name] = Entry(dtype: dtype, shape: shape, values: values)
    }
    self.tensors = tensors
    self.metadata = metadata
  }

  func require(_ name: String) throws -> Entry {
    guard let e = tensors[name] else { throw ReadError.malformed("missing tensor \(name)") }
    return e
  }
}

/// The engine against one step of the same VAE computed by PyTorch
/// (`../shared/fixtures/torch-vae-step.safetensors`, see that directory's README).
final class TorchFixtureTests: XCTestCase {
  static let fileName = "torch-vae-step.safetensors"
  static let batch = 16
  let config = ModelConfig(
    inputSize: 784, hidden: [64, 32], decoderHidden: [32, 64], zdim: 8, likelihood: .bernoulli)

  /// `$VAE_DIST_FIXTURES` (a directory or the file itself), else `<package root>/../shared/fixtures`.
  static func fixtureURL() -> URL? {
    let fm = FileManager.default
    var candidates: [URL] = []
    if let env = ProcessInfo.processInfo.environment["VAE_DIST_FIXTURES"], !env.isEmpty {
      let u = URL(fileURLWithPath: env)
      candidates.append(u.appendingPathComponent(fileName))
      candidates.append(u)
    }
    // Tests/VAETests/TorchFixtureTests.swift → package root is two directories up.
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent()
    candidates.append(root.deletingLastPathComponent().appendingPathComponent("shared/fixtures/\(fileName)"))
    var isDir: ObjCBool = false
    return candidates.first { fm.fileExists(atPath: $0.path, isDirectory: &isDir) && !isDir.boolValue }
  }

  func loadFixture() throws -> TestSafetensors {
    guard let url = Self.fixtureURL() else {
      throw XCTSkip(
        "PyTorch fixture \(Self.fileName) not found (looked in $VAE_DIST_FIXTURES and "
          + "<package root>/../shared/fixtures); it is produced outside this package")
    }
    return try TestSafetensors(url: url)
  }

  static let parameterPrefixesToSkip = ["input.", "expected.", "grad.", "adam3."]

  func testFixtureMatchesLayout() throws {
    let f = try loadFixture()
    let layout = config.layout
    let paramNames = Set(f.tensors.keys.filter { n in !Self.parameterPrefixesToSkip.contains { n.hasPrefix($0) } })
    XCTAssertEqual(paramNames, Set(layout.specs.map(\.name)))
    for spec in layout.specs {
      XCTAssertEqual(f.tensors[spec.name]?.shape, spec.shape, spec.name)
      XCTAssertEqual(f.tensors[spec.name]?.dtype, "F32", spec.name)
      XCTAssertEqual(f.tensors["grad.\(spec.name)"]?.shape, spec.shape, "grad.\(spec.name)")
      XCTAssertEqual(f.tensors["adam3.\(spec.name)"]?.shape, spec.shape, "adam3.\(spec.name)")
    }
    XCTAssertEqual(f.tensors["input.x"]?.shape, [Self.batch, 784])
    XCTAssertEqual(f.tensors["input.eps"]?.shape, [Self.batch, 8])
    XCTAssertEqual(f.tensors["expected.recon"]?.shape, [Self.batch])
    XCTAssertEqual(f.tensors["expected.kl"]?.shape, [Self.batch])
  }

  /// Model with the fixture's parameters, plus x and ε buffers.
  func setUpModel(_ f: TestSafetensors) throws -> (VAEModel, Buffer, Buffer) {
    let model = VAEModel(config: config, maxBatch: Self.batch)
    for spec in config.layout.specs {
      let e = try f.require(spec.name)
      XCTAssertTrue(model.params.setValues(named: spec.name, e.values.map { Float($0) }), spec.name)
    }
    let x = try f.require("input.x").values.map { Float($0) }
    let eps = try f.require("input.eps").values.map { Float($0) }
    let xb = Buffer(x.count)
    xb.set(x)
    let eb = Buffer(eps.count)
    eb.set(eps)
    return (model, xb, eb)
  }

  func testLossAndGradientsMatchPyTorch() throws {
    let f = try loadFixture()
    let (model, x, eps) = try setUpModel(f)
    let b = Self.batch
    let terms = model.loss(x: x.ptr, eps: eps.ptr, batch: b)
    let recon = model.reconPerExample.toArray(b).map(Double.init)
    let kl = model.klPerExample.toArray(b).map(Double.init)
    let eRecon = try f.require("expected.recon").values
    let eKL = try f.require("expected.kl").values
    let eLoss = try f.require("expected.loss").values[0]

    var worstPerExample = 0.0
    for r in 0..<b {
      worstPerExample = max(worstPerExample, ErrorMeasure.relative(recon[r], eRecon[r]))
      worstPerExample = max(worstPerExample, ErrorMeasure.relative(kl[r], eKL[r]))
    }
    let lossRel = ErrorMeasure.relative(terms.negativeELBO / Double(b), eLoss)
    let reconRel = ErrorMeasure.relative(terms.recon, eRecon.reduce(0, +))
    let klRel = ErrorMeasure.relative(terms.kl, eKL.reduce(0, +))
    XCTAssertLessThanOrEqual(worstPerExample, 1e-5, "per-example recon/kl")
    XCTAssertLessThanOrEqual(lossRel, 1e-5, "mean loss")
    XCTAssertLessThanOrEqual(reconRel, 1e-5, "summed recon")
    XCTAssertLessThanOrEqual(klRel, 1e-5, "summed kl")

    model.backward()
    var worstGrad = 0.0
    var worstName = ""
    for spec in config.layout.specs {
      let g = model.grads.values(named: spec.name)!.map { Double($0) / Double(b) }
      let ref = try f.require("grad.\(spec.name)").values
      let e = ErrorMeasure.normRelative(g, ref)
      if e > worstGrad { (worstGrad, worstName) = (e, spec.name) }
      XCTAssertLessThan(e, 1e-4, "grad.\(spec.name) norm-relative")
    }
    print(
      "[torch-fixture] loss \(terms.negativeELBO / Double(b)) vs \(eLoss): per-example max rel "
        + "\(fmt(worstPerExample)), loss rel \(fmt(lossRel)), recon rel \(fmt(reconRel)), kl rel \(fmt(klRel)); "
        + "grad max norm-rel \(fmt(worstGrad)) (\(worstName))")
  }

  func testThreeAdamStepsMatchPyTorch() throws {
    let f = try loadFixture()
    let (model, x, eps) = try setUpModel(f)
    let b = Self.batch
    let p0 = model.params.toArray()
    let adam = Adam(config: AdamConfig(lr: 1e-3), layout: config.layout)
    var worstLoss = 0.0
    for k in 1...3 {
      let terms = model.loss(x: x.ptr, eps: eps.ptr, batch: b)
      let expected = try f.require("expected.loss_before_step\(k)").values[0]
      let rel = ErrorMeasure.relative(terms.negativeELBO / Double(b), expected)
      worstLoss = max(worstLoss, rel)
      XCTAssertLessThanOrEqual(rel, 1e-5, "loss before step \(k)")
      model.backward()
      adam.update(params: model.params, grads: model.grads, scale: 1 / Float(b))
    }
    XCTAssertEqual(adam.step, 3)
    let layout = config.layout
    var worstParam = 0.0
    var worstChange = 0.0
    var worstChangeName = ""
    for (i, spec) in layout.specs.enumerated() {
      let r = layout.range(of: i)
      let p3 = model.params.values(named: spec.name)!.map(Double.init)
      let start = p0[r].map(Double.init)
      let ref = try f.require("adam3.\(spec.name)").values
      let ep = ErrorMeasure.normRelative(p3, ref)
      let change = zip(p3, start).map { $0 - $1 }
      let refChange = zip(ref, start).map { $0 - $1 }
      let ec = ErrorMeasure.normRelative(change, refChange)
      worstParam = max(worstParam, ep)
      if ec > worstChange { (worstChange, worstChangeName) = (ec, spec.name) }
      XCTAssertLessThan(ep, 1e-4, "adam3.\(spec.name) norm-relative")
      XCTAssertLessThan(ec, 1e-3, "adam3.\(spec.name): parameter change norm-relative")
      // The change is not vacuous: three steps of lr 1e-3 move parameters by up to ~3e-3.
      XCTAssertGreaterThan(refChange.map(abs).max()!, 1e-4, spec.name)
    }
    print(
      "[torch-fixture] adam: loss-before-step max rel \(fmt(worstLoss)); params after 3 steps max "
        + "norm-rel \(fmt(worstParam)); parameter change max norm-rel \(fmt(worstChange)) (\(worstChangeName))")
  }
}
