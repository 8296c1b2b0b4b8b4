import Foundation
import VAE
import VAEData

/// Digit completion by a conditional model (the tutorial's Figure 8): predicted means of Y for
/// input rows [X | Y], and the numbers that make "the regressor blurs, the CVAE draws one sharp
/// digit, differently each time" checkable (docs/ARCHITECTURE.md, "Completion").
public final class Completer {
  public let model: VAEModel
  let z: Buffer
  let chunk: Int

  public init(config: ModelConfig, params: Arena, chunk: Int = 500) {
    precondition(config.kind != .vae, "completion needs a cvae or a regressor")
    model = VAEModel(config: config, maxBatch: chunk, params: params)
    z = Buffer(chunk * max(config.latentSize, 1))
    self.chunk = chunk
  }

  public var targetSize: Int { model.config.targetSize }

  /// Bernoulli means (σ of the logits; Gaussian means clamped to [0, 1]) of Y for `count` rows,
  /// [count, targetSize]. A CVAE decodes z ~ N(0, I), row r's from stream (sample, epoch draw,
  /// index r) of `seed`; a regressor has no z (`draw` does not matter).
  public func means(_ rows: [Float], count: Int, draw: Int, seed: UInt64 = 0) -> [Float] {
    let n = model.config.inputSize, t = targetSize, d = model.config.latentSize
    var out = [Float](repeating: 0, count: count * t)
    rows.withUnsafeBufferPointer { x in
      var start = 0
      while start < count {
        let b = min(chunk, count - start)
        let rowsPtr = x.baseAddress! + start * n
        if model.config.kind == .regressor {
          model.predict(rowsPtr, batch: b)
        } else {
          model.setInput(rowsPtr, batch: b)
          CounterRNG(seed: seed).fillNormal(z.ptr, rows: b, dim: d, purpose: .sample, epoch: UInt64(draw)) {
            UInt64(start + $0)
          }
          model.decode(UnsafePointer(z.ptr), batch: b)
        }
        for i in 0..<(b * t) { out[start * t + i] = model.config.likelihood.pixel(model.logits[i]) }
        start += b
      }
    }
    return out
  }
}

extension Conditioning {
  /// The layout of a completion figure, one row per held-out example: the true image, then one
  /// tile per column of `completions` (each [count, targetSize] Y means) with the example's X
  /// kept in place. `rows` are held-out rows as the model reads them (X then Y).
  public func completionTiles(rows: [Float], count: Int, completions: [[Float]]) -> [[Float]] {
    let c = conditionSize, p = pixels, t = p - c
    var tiles: [[Float]] = []
    for i in 0..<count {
      let x = Array(rows[(i * p)..<(i * p + c)])
      tiles.append(assemble(x: x, y: Array(rows[(i * p + c)..<((i + 1) * p)])))
      for col in completions { tiles.append(assemble(x: x, y: Array(col[(i * t)..<((i + 1) * t)]))) }
    }
    return tiles
  }

  /// Which pixels of an assembled image are X (true) rather than Y.
  public var conditionMask: [Bool] {
    assemble(x: [Float](repeating: 1, count: conditionSize), y: [Float](repeating: 0, count: pixels - conditionSize))
      .map { $0 == 1 }
  }
}

/// The completion numbers of one model over `count` held-out images (see `vae-dist complete`).
public struct CompletionStats: Sendable {
  /// Mean per-pixel Bernoulli entropy of the predicted means, nats (lower is sharper).
  public var entropy: Double
  /// Mean over images of the mean pairwise L2 distance between the completions.
  public var diversity: Double
  /// Mean over images and completions of Σ_pixels (mean − Y)².
  public var meanSquaredError: Double
  /// Mean over images of the smallest Σ_pixels (mean − Y)² among the completions.
  public var bestSquaredError: Double

  /// `completions`: k arrays of [count, t] means of the same images; `targets`: the rows' Y.
  public static func of(_ completions: [[Float]], targets: [Float], count: Int, t: Int) -> CompletionStats {
    var entropy = 0.0, diversity = 0.0, mse = 0.0, best = 0.0
    let k = completions.count
    for i in 0..<count {
      var errors: [Double] = []
      for c in completions {
        var e = 0.0
        for j in 0..<t {
          let p = Double(c[i * t + j])
          let y = Double(targets[i * t + j])
          e += (p - y) * (p - y)
          if p > 0 && p < 1 { entropy -= p * Foundation.log(p) + (1 - p) * Foundation.log(1 - p) }
        }
        errors.append(e)
      }
      mse += errors.reduce(0, +) / Double(k)
      best += errors.min() ?? 0
      var pairs = 0.0, sum = 0.0
      for a in 0..<k {
        for b in (a + 1)..<max(k, a + 1) {
          var d2 = 0.0
          for j in 0..<t {
            let d = Double(completions[a][i * t + j]) - Double(completions[b][i * t + j])
            d2 += d * d
          }
          sum += d2.squareRoot()
          pairs += 1
        }
      }
      diversity += pairs > 0 ? sum / pairs : 0
    }
    let n = Double(max(count, 1))
    return CompletionStats(
      entropy: entropy / (n * Double(k) * Double(t)), diversity: diversity / n, meanSquaredError: mse / n,
      bestSquaredError: best / n)
  }
}
