import VAE

/// Which pixels of an image are the condition X of a conditional model (the rest are the target
/// Y), and how X is binarised in training. A conditional model's input row is [X | Y]: X's pixels
/// in row-major order, then Y's.
public struct Conditioning: Sendable, Hashable {
  public enum Mask: String, Sendable, Hashable, CaseIterable, Codable {
    /// Column (cols − 1) / 2 — column 13 of a 28 × 28 digit, as in the tutorial's §4.2.
    case middleColumn = "middle-column"
  }

  public let mask: Mask
  /// How X is drawn from the intensities in training: `dynamic` resamples it every time the
  /// image is used (the tutorial's choice), `static` once per image, `none` keeps grey levels.
  public let binarization: Binarization
  /// Image indices (row-major) of X's and of Y's pixels, each in increasing order.
  public let xPixels: [Int]
  public let yPixels: [Int]

  public init(mask: Mask, binarization: Binarization, rows: Int, cols: Int) {
    self.mask = mask
    self.binarization = binarization
    let inX: (Int, Int) -> Bool
    switch mask {
    case .middleColumn: inX = { _, c in c == (cols - 1) / 2 }
    }
    var x: [Int] = [], y: [Int] = []
    for r in 0..<rows {
      for c in 0..<cols { if inX(r, c) { x.append(r * cols + c) } else { y.append(r * cols + c) } }
    }
    xPixels = x
    yPixels = y
  }

  public var conditionSize: Int { xPixels.count }
  public var pixels: Int { xPixels.count + yPixels.count }

  /// Fills `dst` ([X | Y]) from `image` (image order): Y from `image` as it is, X from `image`
  /// too, or — with `binarize` given — drawn from the raw intensities `raw` with that stream.
  func split(
    _ image: UnsafePointer<Float>, raw: UnsafePointer<UInt8>, binarize: RandomStream?,
    into dst: UnsafeMutablePointer<Float>
  ) {
    let c = xPixels.count
    if var s = binarize {
      for (j, p) in xPixels.enumerated() { dst[j] = s.bernoulli(intensity: raw[p]) }
    } else {
      for (j, p) in xPixels.enumerated() { dst[j] = image[p] }
    }
    for (j, p) in yPixels.enumerated() { dst[c + j] = image[p] }
  }

  /// An image (row-major) put back together from X and Y values.
  public func assemble(x: [Float], y: [Float]) -> [Float] {
    precondition(x.count == xPixels.count && y.count == yPixels.count)
    var out = [Float](repeating: 0, count: pixels)
    for (j, p) in xPixels.enumerated() { out[p] = x[j] }
    for (j, p) in yPixels.enumerated() { out[p] = y[j] }
    return out
  }
}
