import Formats
import Foundation
import VAE
import VAEData

/// Pictures of a model: decoder outputs as [0, 1] images, latent draws, the 2-D manifold
/// lattice, and grids of tiles written as PNG (`vae-dist sample`, `reconstruct`).
public enum ModelImages {
  /// Decoder outputs of the last `decode` as [0, 1] images: Bernoulli means σ(logit), Gaussian
  /// means clamped (a learned variance's outputs, after the means, are not pictured).
  /// With `standardization`, the means are put back in the data's units first.
  public static func decoded(_ model: VAEModel, rows: Int, standardization: Standardization? = nil) -> [[Float]] {
    let n = model.config.targetSize, stride = model.config.outputSize, likelihood = model.config.likelihood
    guard let st = standardization else {
      return (0..<rows).map { r in (0..<n).map { j in likelihood.pixel(model.logits[r * stride + j]) } }
    }
    return (0..<rows).map { r in
      (0..<n).map { j in min(max(likelihood.mean(model.logits[r * stride + j]) * st.std[j] + st.mean[j], 0), 1) }
    }
  }

  /// `count` draws z ~ N(0, I) of `dim` dimensions, row r from stream (sample, index r) of `seed`.
  public static func latentSamples(count: Int, dim: Int, seed: UInt64, into z: UnsafeMutablePointer<Float>) {
    CounterRNG(seed: seed).fillNormal(z, rows: count, dim: dim, purpose: .sample) { UInt64($0) }
  }

  /// A `side` × `side` lattice of the 2-D latent plane at evenly spaced quantiles of N(0, 1):
  /// row i from the top (z₂ decreasing), column j from the left (z₁ increasing).
  public static func manifoldLattice(side: Int, into z: UnsafeMutablePointer<Float>) {
    for i in 0..<side {
      for j in 0..<side {
        let r = i * side + j
        z[r * 2] = Float(inverseNormalCDF((Double(j) + 0.5) / Double(side)))
        z[r * 2 + 1] = Float(inverseNormalCDF(1 - (Double(i) + 0.5) / Double(side)))
      }
    }
  }

  /// Φ⁻¹(p) by bisection on erfc (plenty fast for a few hundred grid points).
  public static func inverseNormalCDF(_ p: Double) -> Double {
    var lo = -10.0, hi = 10.0
    for _ in 0..<100 {
      let mid = (lo + hi) / 2
      if 0.5 * erfc(-mid / 2.0.squareRoot()) < p { lo = mid } else { hi = mid }
    }
    return (lo + hi) / 2
  }

  /// Tiles for `reconstruct`: rows of `columns` originals, each followed by a row of their
  /// reconstructions; a short last row is padded with black tiles.
  public static func pairedRows(originals: [[Float]], reconstructions: [[Float]], columns: Int) -> [[Float]] {
    let blank = [Float](repeating: 0, count: originals.first?.count ?? 0)
    var tiles: [[Float]] = []
    var start = 0
    while start < originals.count {
      let end = min(start + columns, originals.count)
      let pad = [[Float]](repeating: blank, count: columns - (end - start))
      tiles += originals[start..<end] + pad + reconstructions[start..<end] + pad
      start = end
    }
    return tiles
  }

  /// Height and width of an image of `inputSize` pixels: square when it is a square, else one row.
  public static func shape(inputSize: Int) -> (height: Int, width: Int) {
    let s = Int(Double(inputSize).squareRoot().rounded())
    return s * s == inputSize ? (s, s) : (1, inputSize)
  }

  /// The picture shape [H, W] or [H, W, C] of one example of `config`'s data: its training
  /// file's row shape when that is an image ([H, W], or [H, W, 1 or 3]) and the file can be read,
  /// else square when `inputSize` is a square, else one row.
  public static func pictureShape(_ config: RunConfig) -> [Int] {
    if let file = config.trainFile, let s = try? DataFiles.rowShape(path: file),
      s.count == 2 || (s.count == 3 && (s[2] == 1 || s[2] == 3)), s.reduce(1, *) == config.model.inputSize
    {
      return s
    }
    return squareOrRow(config.model.inputSize)
  }

  /// [H, W] of `shape(inputSize:)`.
  public static func squareOrRow(_ inputSize: Int) -> [Int] {
    let (h, w) = shape(inputSize: inputSize)
    return [h, w]
  }

  /// Writes `tiles` (values in [0, 1]) of `shape` [H, W] (grey) or [H, W, 3] (colour, channels
  /// last) as a grid PNG of `columns` columns, every pixel `scale` × `scale`.
  public static func writeGrid(_ tiles: [[Float]], shape: [Int], columns: Int, scale: Int = 1, to path: String) throws {
    let (h, w) = (shape[0], shape[1])
    guard shape.count == 3 && shape[2] == 3 else {
      let g = PNG.grid(images: tiles, rows: h, cols: w, gridColumns: columns)
      let big = upscale(g.pixels, width: g.width, height: g.height, channels: 1, by: scale)
      return try PNG.writeGray(path: path, width: g.width * scale, height: g.height * scale, pixels: big)
    }
    let g = rgbGrid(tiles, height: h, width: w, columns: columns)
    let big = upscale(g.pixels, width: g.width, height: g.height, channels: 3, by: scale)
    try PNG.writeRGB(path: path, width: g.width * scale, height: g.height * scale, pixels: big)
  }

  /// Colour tiles ([H, W, 3] values in [0, 1]) in a grid with 2-pixel mid-grey borders.
  static func rgbGrid(_ tiles: [[Float]], height h: Int, width w: Int, columns: Int) -> (width: Int, height: Int, pixels: [UInt8]) {
    let pad = 2, rows = (tiles.count + columns - 1) / columns
    let cw = columns * (w + pad) + pad, ch = rows * (h + pad) + pad
    var out = [UInt8](repeating: PNG.paddingGrey, count: cw * ch * 3)
    for (k, tile) in tiles.enumerated() {
      let top = pad + (k / columns) * (h + pad), left = pad + (k % columns) * (w + pad)
      for y in 0..<h {
        for x in 0..<w {
          for c in 0..<3 { out[((top + y) * cw + left + x) * 3 + c] = PNG.greyLevel(tile[(y * w + x) * 3 + c]) }
        }
      }
    }
    return (cw, ch, out)
  }

  /// Nearest-neighbour enlargement of an image by `k` in each direction.
  static func upscale(_ pixels: [UInt8], width w: Int, height h: Int, channels c: Int, by k: Int) -> [UInt8] {
    guard k > 1 else { return pixels }
    var big = [UInt8](repeating: 0, count: w * k * h * k * c)
    for y in 0..<(h * k) {
      for x in 0..<(w * k) {
        let s = ((y / k) * w + x / k) * c, d = (y * w * k + x) * c
        for ch in 0..<c { big[d + ch] = pixels[s + ch] }
      }
    }
    return big
  }

  /// An RGB grid of square `side` × `side` tiles, `columns` per row, 2-pixel mid-grey borders,
  /// every pixel `scale` × `scale`: grey levels for ordinary values in [0, 1], red for values
  /// marked true (the condition: bright for 1, dark for 0).
  public static func colourGrid(_ tiles: [[(Float, Bool)]], side: Int, columns: Int, scale: Int)
    -> (width: Int, height: Int, pixels: [UInt8])
  {
    let pad = 2, cell = side + pad
    let rows = (tiles.count + columns - 1) / columns
    let w = columns * cell + pad, h = rows * cell + pad
    var small = [UInt8](repeating: PNG.paddingGrey, count: w * h * 3)
    for (k, tile) in tiles.enumerated() {
      let top = pad + (k / columns) * cell, left = pad + (k % columns) * cell
      for (i, (v, marked)) in tile.enumerated() {
        let o = ((top + i / side) * w + left + i % side) * 3
        let g = PNG.greyLevel(v)
        let rgb: (UInt8, UInt8, UInt8) = marked ? (v >= 0.5 ? (255, 48, 48) : (96, 0, 0)) : (g, g, g)
        small[o] = rgb.0
        small[o + 1] = rgb.1
        small[o + 2] = rgb.2
      }
    }
    return (w * scale, h * scale, upscale(small, width: w, height: h, channels: 3, by: scale))
  }
}
