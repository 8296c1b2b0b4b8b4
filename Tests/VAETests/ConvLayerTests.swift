import Foundation
import XCTest

@testable import VAE

/// Conv2d and ConvTranspose2d (im2col + one GEMM per micro-batch, col2im for the adjoint)
/// against direct convolution loops in Double, written from PyTorch's definitions, not from the
/// engine's code; and the activations against their formulas and finite differences.
final class ConvLayerTests: XCTestCase {
  struct Shape { var batch, cin, h, w, cout, k, s, p, op: Int }

  /// Deterministic values in [-1, 1).
  func values(_ n: Int, seed: UInt64) -> [Float] {
    var s = CounterRNG(seed: seed).stream(.initialisation, index: 99)
    return (0..<n).map { _ in s.nextFloat(in: -1, 1) }
  }

  // MARK: Double references (PyTorch's definitions)

  /// y[b, o, i, j] = bias[o] + Σ_c,u,v x[b, c, i·s − p + u, j·s − p + v] · W[o, c, u, v].
  func convRef(_ x: [Double], _ wt: [Double], _ bias: [Double], _ d: Shape) -> [Double] {
    let ho = (d.h + 2 * d.p - d.k) / d.s + 1, wo = (d.w + 2 * d.p - d.k) / d.s + 1
    var y = [Double](repeating: 0, count: d.batch * d.cout * ho * wo)
    for b in 0..<d.batch { for o in 0..<d.cout { for i in 0..<ho { for j in 0..<wo {
      var acc = bias[o]
      for c in 0..<d.cin { for u in 0..<d.k { for v in 0..<d.k {
        let r = i * d.s - d.p + u, q = j * d.s - d.p + v
        guard r >= 0, r < d.h, q >= 0, q < d.w else { continue }
        acc += x[((b * d.cin + c) * d.h + r) * d.w + q] * wt[((o * d.cin + c) * d.k + u) * d.k + v]
      } } }
      y[((b * d.cout + o) * ho + i) * wo + j] = acc
    } } } }
    return y
  }

  /// ConvTranspose2d: y[b, o, i·s − p + u, j·s − p + v] += x[b, c, i, j] · W[c, o, u, v], + bias[o].
  func deconvRef(_ x: [Double], _ wt: [Double], _ bias: [Double], _ d: Shape) -> [Double] {
    let ho = (d.h - 1) * d.s - 2 * d.p + d.k + d.op, wo = (d.w - 1) * d.s - 2 * d.p + d.k + d.op
    var y = [Double](repeating: 0, count: d.batch * d.cout * ho * wo)
    for b in 0..<d.batch { for o in 0..<d.cout { for i in 0..<(ho * wo) { y[(b * d.cout + o) * ho * wo + i] = bias[o] } } }
    for b in 0..<d.batch { for c in 0..<d.cin { for i in 0..<d.h { for j in 0..<d.w {
      let xv = x[((b * d.cin + c) * d.h + i) * d.w + j]
      for o in 0..<d.cout { for u in 0..<d.k { for v in 0..<d.k {
        let r = i * d.s - d.p + u, q = j * d.s - d.p + v
        guard r >= 0, r < ho, q >= 0, q < wo else { continue }
        y[((b * d.cout + o) * ho + r) * wo + q] += xv * wt[((c * d.cout + o) * d.k + u) * d.k + v]
      } } }
    } } } }
    return y
  }

  /// The layer's output, and its gradients of L = Σ g ⊙ y for a fixed g, next to the
  /// reference's output and its central finite differences of L (in Double).
  func check(_ d: Shape, transposed: Bool, channelsLast: Bool = false, file: StaticString = #filePath, line: UInt = #line) {
    let spec: LayerSpec
    let inShape = [d.cin, d.h, d.w]
    let op: LayerOp = transposed
      ? .deconv(out: d.cout, kernel: d.k, stride: d.s, padding: d.p, outputPadding: d.op)
      : .conv(out: d.cout, kernel: d.k, stride: d.s, padding: d.p)
    guard case .success(let outShape) = outputShape(of: op, input: inShape) else { return XCTFail("shape", file: file, line: line) }
    spec = LayerSpec(name: "l", op: op, activation: .none, inShape: inShape, outShape: outShape, channelsLast: channelsLast)
    let layout = ParameterLayout(specs: spec.tensors)
    let params = Arena(layout: layout), grads = Arena(layout: layout)
    let layer = spec.makeLayer(layout: layout, maxBatch: d.batch)
    let wCount = layout.specs[0].count, bCount = layout.specs[1].count
    params.setValues(named: "l.weight", values(wCount, seed: 1))
    params.setValues(named: "l.bias", values(bCount, seed: 2))
    let x = values(d.batch * layer.inputCount, seed: 3), g = values(d.batch * layer.outputCount, seed: 4)
    let y = Buffer(d.batch * layer.outputCount), dy = Buffer(d.batch * layer.outputCount), dx = Buffer(x.count)
    x.withUnsafeBufferPointer { xp in
      layer.forward(xp.baseAddress!, y.ptr, batch: d.batch, params: params, addend: nil)
      dy.set(g)
      layer.backward(xp.baseAddress!, dy.ptr, dx.ptr, batch: d.batch, params: params, grads: grads, accumulateDx: false)
    }
    let xd = x.map(Double.init), wd = params.values(named: "l.weight")!.map(Double.init)
    let bd = params.values(named: "l.bias")!.map(Double.init), gd = g.map(Double.init)
    // Channels-last: a conv reads its input, a deconv writes its output, as [H, W, C] per example.
    func reference(_ x: [Double], _ w: [Double], _ b: [Double]) -> [Double] {
      if !channelsLast { return transposed ? deconvRef(x, w, b, d) : convRef(x, w, b, d) }
      let side = { (n: Int) in (n - 1) * d.s - 2 * d.p + d.k + d.op }
      if transposed { return toChannelsLast(deconvRef(x, w, b, d), channels: d.cout, hw: side(d.h) * side(d.w)) }
      return convRef(toChannelsFirst(x, channels: d.cin, h: d.h, w: d.w), w, b, d)
    }
    func loss(_ x: [Double], _ w: [Double], _ b: [Double]) -> Double { zip(reference(x, w, b), gd).reduce(0) { $0 + $1.0 * $1.1 } }
    let yRef = reference(xd, wd, bd)
    XCTAssertEqual(yRef.count, layer.outputCount * d.batch, file: file, line: line)
    assertClose(y.toArray(yRef.count), yRef, 2e-5, "forward", file: file, line: line)
    func fd(_ v: [Double], _ f: ([Double]) -> Double) -> [Double] {
      (0..<v.count).map { i in
        var a = v, b = v
        a[i] += 1e-4
        b[i] -= 1e-4
        return (f(a) - f(b)) / 2e-4
      }
    }
    assertClose(grads.values(named: "l.weight")!, fd(wd) { loss(xd, $0, bd) }, 1e-4, "weight gradient", file: file, line: line)
    assertClose(grads.values(named: "l.bias")!, fd(bd) { loss(xd, wd, $0) }, 1e-4, "bias gradient", file: file, line: line)
    assertClose(dx.toArray(), fd(xd) { loss($0, wd, bd) }, 1e-4, "input gradient", file: file, line: line)
  }

  /// [b][h][w][c] → [b][c][h][w].
  func toChannelsFirst(_ v: [Double], channels c: Int, h: Int, w: Int) -> [Double] {
    var out = v
    for b in 0..<(v.count / (c * h * w)) { for ch in 0..<c { for p in 0..<(h * w) {
      out[(b * c + ch) * h * w + p] = v[(b * h * w + p) * c + ch]
    } } }
    return out
  }

  /// [b][c][p] → [b][p][c], p the positions of one plane (`hw`).
  func toChannelsLast(_ v: [Double], channels c: Int, hw: Int) -> [Double] {
    var out = v
    for b in 0..<(v.count / (c * hw)) { for ch in 0..<c { for p in 0..<hw {
      out[(b * hw + p) * c + ch] = v[(b * c + ch) * hw + p]
    } } }
    return out
  }

  func assertClose(
    _ got: [Float], _ want: [Double], _ tol: Double, _ what: String, file: StaticString, line: UInt
  ) {
    XCTAssertEqual(got.count, want.count, what, file: file, line: line)
    let scale = max(want.map(abs).max() ?? 1, 1)
    let worst = zip(got, want).map { abs(Double($0) - $1) }.max() ?? 0
    XCTAssertLessThan(worst / scale, tol, "\(what): worst error \(worst) (scale \(scale))", file: file, line: line)
  }

  func testConvStrideTwoPaddingOne() { check(Shape(batch: 3, cin: 2, h: 8, w: 8, cout: 3, k: 4, s: 2, p: 1, op: 0), transposed: false) }
  func testConvStrideOneNoPaddingOddSizes() { check(Shape(batch: 2, cin: 3, h: 7, w: 5, cout: 4, k: 3, s: 1, p: 0, op: 0), transposed: false) }
  func testConvStrideThreeLargePadding() { check(Shape(batch: 2, cin: 1, h: 6, w: 6, cout: 2, k: 3, s: 3, p: 2, op: 0), transposed: false) }
  func testDeconvStrideTwoPaddingOne() { check(Shape(batch: 3, cin: 3, h: 4, w: 4, cout: 2, k: 4, s: 2, p: 1, op: 0), transposed: true) }
  /// 7 → 14 with k3 s2 p1 op1, as PyTorch's ConvTranspose2d with output_padding 1.
  func testDeconvOutputPaddingSevenToFourteen() {
    XCTAssertEqual(try outputShape(of: .deconv(out: 2, kernel: 3, stride: 2, padding: 1, outputPadding: 1), input: [3, 7, 7]).get(), [2, 14, 14])
    check(Shape(batch: 2, cin: 3, h: 7, w: 7, cout: 2, k: 3, s: 2, p: 1, op: 1), transposed: true)
  }
  /// The model's own image rows are channels-last ([H, W, C]): the first conv reads them so, the
  /// last deconv writes them so; the arithmetic is the NCHW layer's.
  func testChannelsLastConvReadsAndDeconvWritesHWCRows() {
    check(Shape(batch: 2, cin: 3, h: 6, w: 5, cout: 4, k: 3, s: 2, p: 1, op: 0), transposed: false, channelsLast: true)
    check(Shape(batch: 2, cin: 4, h: 3, w: 4, cout: 3, k: 4, s: 2, p: 1, op: 0), transposed: true, channelsLast: true)
  }

  func testDeconvStrideOneOddSizes() { check(Shape(batch: 2, cin: 2, h: 5, w: 3, cout: 3, k: 2, s: 1, p: 0, op: 0), transposed: true) }

  /// Each activation against its formula, and its backward against finite differences of it.
  func testActivationsMatchTheirFormulasAndDerivatives() {
    let pre: [Float] = [-25, -3, -0.5, -1e-3, 0, 1e-3, 0.7, 2, 19.5, 21]
    let formulas: [Activation: (Double) -> Double] = [
      .relu: { max($0, 0) }, .leaky_relu: { $0 > 0 ? $0 : 0.01 * $0 }, .elu: { $0 > 0 ? $0 : Foundation.exp($0) - 1 },
      .tanh: { Foundation.tanh($0) }, .softplus: { $0 > 20 ? $0 : Foundation.log1p(Foundation.exp($0)) }, .none: { $0 },
    ]
    XCTAssertEqual(Set(formulas.keys), Set(Activation.allCases))
    for (act, f) in formulas {
      var out = [Float](repeating: 0, count: pre.count)
      pre.withUnsafeBufferPointer { p in out.withUnsafeMutableBufferPointer { act.apply(p.baseAddress!, $0.baseAddress!, count: pre.count) } }
      var d = [Float](repeating: 1, count: pre.count)
      pre.withUnsafeBufferPointer { p in
        out.withUnsafeBufferPointer { o in d.withUnsafeMutableBufferPointer { act.backward(pre: p.baseAddress!, out: o.baseAddress!, $0.baseAddress!, count: pre.count) } }
      }
      for (i, v) in pre.enumerated() {
        let x = Double(v)
        XCTAssertEqual(Double(out[i]), f(x), accuracy: 1e-6 * max(1, abs(f(x))), "\(act) at \(v)")
        guard abs(x) > 2e-3, abs(x - 20) > 1e-2 else { continue }  // kinks: 0 (and softplus's threshold)
        let h = 1e-5, slope = (f(x + h) - f(x - h)) / (2 * h)
        XCTAssertEqual(Double(d[i]), slope, accuracy: 1e-4 * max(1, abs(slope)), "\(act)′ at \(v)")
      }
    }
  }

  /// im2col and col2im against their definition, element by element, over every geometry of a
  /// grid that puts the kernel partly, wholly or never over the padding (k 1…5, stride 1…3,
  /// padding 0…3, images 1…6 wide and 1…3 high, 1 or 2 channels, NCHW and NHWC): im2col's
  /// values exactly, col2im's sums bit for bit (each input element adds its terms in the
  /// (oh, ow, c, ki, kj) order).
  func testIm2colAndCol2imEqualTheirDefinitionOnAGridOfGeometries() {
    var rng = RandomStream(state: 42)
    var checked = 0
    for k in 1...5 { for s in 1...3 { for p in 0...3 { for w in 1...6 { for h in 1...3 { for c in 1...2 { for last in [false, true] {
      guard w + 2 * p >= k, h + 2 * p >= k else { continue }
      let g = ConvGeometry(channels: c, height: h, width: w, kernel: k, stride: s, padding: p, channelsLast: last)
      let batch = 2, image = c * h * w, (ho, wo) = (g.outHeight, g.outWidth)
      let x = (0..<(batch * image)).map { _ in rng.nextFloat(in: -1, 1) }
      let cols = (0..<(batch * g.columnsPerImage)).map { _ in rng.nextFloat(in: -1, 1) }
      func at(_ b: Int, _ ch: Int, _ i: Int, _ j: Int) -> Int {
        b * image + (last ? (i * w + j) * c + ch : (ch * h + i) * w + j)
      }
      var wantCol = [Float](repeating: 0, count: cols.count), wantX = [Float](repeating: 0, count: x.count)
      for b in 0..<batch { for oh in 0..<ho { for ow in 0..<wo { for ch in 0..<c { for ki in 0..<k { for kj in 0..<k {
        let t = ((b * ho + oh) * wo + ow) * c * k * k + (ch * k + ki) * k + kj
        let i = oh * s + ki - p, j = ow * s + kj - p
        guard (0..<h).contains(i) && (0..<w).contains(j) else { continue }
        wantCol[t] = x[at(b, ch, i, j)]
        wantX[at(b, ch, i, j)] += cols[t]
      } } } } } }
      var gotCol = [Float](repeating: .nan, count: cols.count), gotX = [Float](repeating: .nan, count: x.count)
      x.withUnsafeBufferPointer { xp in gotCol.withUnsafeMutableBufferPointer { g.im2col(xp.baseAddress!, $0.baseAddress!, batch: batch) } }
      cols.withUnsafeBufferPointer { cp in gotX.withUnsafeMutableBufferPointer { g.col2im(cp.baseAddress!, $0.baseAddress!, batch: batch) } }
      XCTAssertEqual(gotCol, wantCol, "im2col \(g)")
      XCTAssertEqual(gotX.map(\.bitPattern), wantX.map(\.bitPattern), "col2im \(g)")
      checked += 1
    } } } } } } }
    XCTAssertGreaterThan(checked, 2000)
  }
}
