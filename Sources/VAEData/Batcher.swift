import CSupport
import VAE

/// How pixel intensities in [0, 255] become model inputs.
public enum Binarization: String, Sendable, CaseIterable, Codable {
  /// x = intensity / 255 (for the Gaussian likelihood, or Bernoulli on grey levels).
  case none
  /// x ~ Bernoulli(intensity / 255), drawn once per example from the seed.
  case `static`
  /// x ~ Bernoulli(intensity / 255), drawn anew per epoch and example (a strong regulariser).
  case dynamic
}

/// The fixed seed that binarises every held-out set, so every evaluation of every run sees the
/// same bits and ELBOs are comparable across runs and seeds.
public let heldOutBinarizationSeed: UInt64 = 20_140_101

/// Turns a `Dataset` into Float batches. Every draw is a function of (seed, purpose, epoch,
/// example index), so a rank's rows of a global batch are the same whatever the world size.
public final class Batcher: @unchecked Sendable {
  public let dataset: Dataset
  public let binarization: Binarization
  public let rng: CounterRNG
  public let globalBatch: Int
  /// Conditional models: rows are [X | Y] (see `Conditioning`); nil: the image as it is.
  public let conditioning: Conditioning?
  /// Continuous data: each row standardised after it is read (with `binarization` none).
  public let standardization: Standardization?
  private var staticBits: [UInt8] = []
  /// One image-order row, rearranged into [X | Y] (conditional models only).
  private let imageRow: UnsafeMutablePointer<Float>
  private var permutationEpoch = -1
  private var permutation: [Int32] = []

  public init(
    dataset: Dataset, binarization: Binarization, rng: CounterRNG, globalBatch: Int,
    conditioning: Conditioning? = nil, standardization: Standardization? = nil
  ) {
    precondition(globalBatch > 0 && globalBatch <= dataset.count)
    precondition(standardization == nil || (binarization == .none && conditioning == nil))
    precondition(conditioning == nil || conditioning!.pixels == dataset.pixelsPerImage)
    self.dataset = dataset
    self.binarization = binarization
    self.rng = rng
    self.globalBatch = globalBatch
    self.conditioning = conditioning
    self.standardization = standardization
    imageRow = .allocate(capacity: max(dataset.pixelsPerImage, 1))
    if binarization == .static {
      staticBits = Batcher.binarize(dataset: dataset, rng: rng, purpose: .binarizeStatic)
    }
  }

  deinit { imageRow.deallocate() }

  /// Full global batches per epoch; the remainder of an epoch is dropped (each epoch reshuffles).
  public var stepsPerEpoch: Int { dataset.count / globalBatch }

  /// The shuffle of `epoch`: a Fisher–Yates permutation from stream (shuffle, epoch). Made in
  /// place in the batcher's own buffer (no allocation at epoch boundaries).
  public func order(epoch: Int) -> [Int32] {
    if epoch != permutationEpoch {
      if permutation.count != dataset.count { permutation = [Int32](repeating: 0, count: dataset.count) }
      permutation.withUnsafeMutableBufferPointer { Batcher.shuffle($0, rng: rng, epoch: epoch) }
      permutationEpoch = epoch
    }
    return permutation
  }

  /// Fills `p` with 0..<count, then shuffles it with the stream of (shuffle, epoch).
  static func shuffle(_ p: UnsafeMutableBufferPointer<Int32>, rng: CounterRNG, epoch: Int) {
    for i in 0..<p.count { p[i] = Int32(i) }
    var s = rng.stream(.shuffle, epoch: UInt64(epoch))
    var i = p.count - 1
    while i > 0 {
      let j = s.nextInt(below: i + 1)
      p.swapAt(i, j)
      i -= 1
    }
  }

  /// Fills `x` with rows `rows` (a slice of global batch `batchInEpoch` of `epoch`) and
  /// `indices` with their dataset indices.
  public func fill(
    epoch: Int, batchInEpoch: Int, rows: Range<Int>, x: UnsafeMutablePointer<Float>,
    indices: UnsafeMutablePointer<Int>
  ) {
    let perm = order(epoch: epoch)
    let n = dataset.rowWidth
    let base = batchInEpoch * globalBatch
    for (r, row) in rows.enumerated() {
      let idx = Int(perm[base + row])
      indices[r] = idx
      let dst = conditioning == nil ? x + r * n : imageRow
      switch binarization {
      case .none:
        dataset.scaledRow(idx, into: dst)
        standardization?.apply(dst)
      case .static:
        staticBits.withUnsafeBufferPointer { bits in
          let b = bits.baseAddress! + idx * n
          for j in 0..<n { dst[j] = Float(b[j]) }
        }
      case .dynamic:
        var s = rng.stream(.binarizeDynamic, epoch: UInt64(epoch), index: UInt64(idx))
        Batcher.bernoulliRow(dataset, idx, dst, &s)
      }
      if let cond = conditioning, let bytes = dataset.values.uint8 {
        let draw: RandomStream? =
          switch cond.binarization {
          case .none: nil
          case .static: rng.stream(.conditionBinarize, epoch: .max, index: UInt64(idx))
          case .dynamic: rng.stream(.conditionBinarize, epoch: UInt64(epoch), index: UInt64(idx))
          }
        cond.split(imageRow, raw: bytes + dataset.offset(ofRow: idx), binarize: draw, into: x + r * n)
      }
    }
  }

  /// Example `i` drawn as bits: each value is a Bernoulli probability (bytes / 255, floats in
  /// [0, 1] as they are), compared with 24 uniform bits of `s` per value.
  @inline(__always)
  static func bernoulliRow(_ d: Dataset, _ i: Int, _ dst: UnsafeMutablePointer<Float>, _ s: inout RandomStream) {
    let n = d.rowWidth, at = d.offset(ofRow: i)
    if let b = d.values.uint8 {
      s.state = vae_bernoulli_bytes(s.state, b + at, dst, n)
    } else if let f = d.values.float32 {
      let src = f + at
      for j in 0..<n { dst[j] = s.bernoulli(probability: src[j]) }
    }
  }

  static func binarize(dataset: Dataset, rng: CounterRNG, purpose: CounterRNG.Purpose) -> [UInt8] {
    let n = dataset.rowWidth
    var out = [UInt8](repeating: 0, count: dataset.count * n)
    var row = [Float](repeating: 0, count: n)
    row.withUnsafeMutableBufferPointer { r in
      for i in 0..<dataset.count {
        var s = rng.stream(purpose, index: UInt64(i))
        bernoulliRow(dataset, i, r.baseAddress!, &s)
        for j in 0..<n { out[i * n + j] = UInt8(r[j]) }
      }
    }
    return out
  }

  /// The whole held-out set as Float rows: binarised once with `heldOutBinarizationSeed`
  /// (for `static` and `dynamic`), or scaled to [0, 1] (for `none`). With `conditioning` the
  /// images are always binarised that way and each row is rearranged into [X | Y], so X and Y
  /// of the held-out set are fixed bits whatever the training binarisation.
  ///
  /// `xDraw` (conditional only): X drawn anew from the intensities with stream
  /// (conditionBinarize, epoch xDraw, image index) of the held-out seed, Y unchanged — the
  /// "resampled X" of `vae-dist complete`'s diversity numbers.
  public static func heldOut(
    _ dataset: Dataset, binarization: Binarization, conditioning: Conditioning? = nil, limit: Int? = nil,
    xDraw: Int? = nil, standardization: Standardization? = nil
  ) -> [Float] {
    if let conditioning, let raw = dataset.values.uint8 {
      let images = heldOut(dataset, binarization: .static, limit: limit)
      var out = images
      let n = dataset.rowWidth
      let rng = CounterRNG(seed: heldOutBinarizationSeed)
      images.withUnsafeBufferPointer { img in
        out.withUnsafeMutableBufferPointer { o in
          for i in 0..<(images.count / max(n, 1)) {
            let draw = xDraw.map { rng.stream(.conditionBinarize, epoch: UInt64($0), index: UInt64(i)) }
            conditioning.split(
              img.baseAddress! + i * n, raw: raw + dataset.offset(ofRow: i), binarize: draw, into: o.baseAddress! + i * n)
          }
        }
      }
      return out
    }
    let count = min(limit ?? dataset.count, dataset.count)
    let n = dataset.rowWidth
    var out = [Float](repeating: 0, count: count * n)
    let rng = CounterRNG(seed: heldOutBinarizationSeed)
    out.withUnsafeMutableBufferPointer { o in
      for i in 0..<count {
        let dst = o.baseAddress! + i * n
        if binarization == .none {
          dataset.scaledRow(i, into: dst)
          standardization?.apply(dst)
        } else {
          var s = rng.stream(.testBinarize, index: UInt64(i))
          bernoulliRow(dataset, i, dst, &s)
        }
      }
    }
    return out
  }
}

extension RandomStream {
  /// One draw of Bernoulli(intensity / 255) as 0 or 1: u < p with u uniform on 24 bits,
  /// compared as integers, so the result is exact.
  @inline(__always)
  /// 1 with probability `p` (in [0, 1]): 24 uniform bits u, 1 when u < p · 2^24.
  mutating func bernoulli(probability p: Float) -> Float {
    let u = next() >> 40  // [0, 2^24)
    return Double(u) < Double(p) * 16_777_216 ? 1 : 0
  }

  mutating func bernoulli(intensity: UInt8) -> Float {
    let u = next() >> 40  // [0, 2^24)
    return u * 255 < UInt64(intensity) << 24 ? 1 : 0
  }
}
