import Foundation

/// Per-dimension standardisation of continuous data (`data.standardize`): x' = (x − mean) / std
/// with the training split's mean and standard deviation. Stored in checkpoints and undone by
/// `sample`, `decode` and `reconstruct`. A model of x' is a density of x scaled by the
/// Jacobian: log p(x) = log p(x') − Σ log std, which `logJacobian` is, so reported ELBOs are in
/// the data's own units.
public struct Standardization: Sendable, Equatable {
  public let mean: [Float]
  /// Never 0: a constant column keeps std 1 (it becomes 0 after centring).
  public let std: [Float]

  public init(mean: [Float], std: [Float]) {
    precondition(mean.count == std.count && std.allSatisfy { $0 > 0 })
    self.mean = mean
    self.std = std
  }

  /// The mean and standard deviation of every column of `d`'s examples, summed in Double in
  /// row order (the same bits on every rank).
  public static func fit(_ d: Dataset) -> Standardization {
    let n = d.rowWidth
    var sum = [Double](repeating: 0, count: n), squares = [Double](repeating: 0, count: n)
    var row = [Float](repeating: 0, count: n)
    row.withUnsafeMutableBufferPointer { r in
      for i in 0..<d.count {
        d.scaledRow(i, into: r.baseAddress!)
        for j in 0..<n {
          let v = Double(r[j])
          sum[j] += v
          squares[j] += v * v
        }
      }
    }
    let count = Double(max(d.count, 1))
    let mean = sum.map { $0 / count }
    let std = (0..<n).map { j -> Float in
      let s = Float(max(squares[j] / count - mean[j] * mean[j], 0).squareRoot())
      return s > 1e-6 ? s : 1
    }
    return Standardization(mean: mean.map(Float.init), std: std)
  }

  /// Σ log std: log p(x) = log p(x') − logJacobian.
  public var logJacobian: Double { std.reduce(0.0) { $0 + log(Double($1)) } }

  @inline(__always)
  public func apply(_ row: UnsafeMutablePointer<Float>) {
    for j in 0..<mean.count { row[j] = (row[j] - mean[j]) / std[j] }
  }

  public func undo(_ row: UnsafeMutablePointer<Float>) {
    for j in 0..<mean.count { row[j] = row[j] * std[j] + mean[j] }
  }

  public func undo(_ row: [Float]) -> [Float] {
    zip(row, zip(std, mean)).map { $0 * $1.0 + $1.1 }
  }
}
