/// How a cost grows with the size of its input, for tests that a parser or lookup stays linear
/// without asserting absolute times (which a shared, noisy machine cannot promise).
public enum Scaling {
  /// The time per item of `run` on an input of `large` items divided by that on `small` items:
  /// about 1 for linear work, about `large / small` for quadratic work. Each size takes the
  /// fastest of `repeats` runs (noise only ever adds time); `prepare` is not timed.
  public static func perItemGrowth<Input>(
    small: Int, large: Int, repeats: Int = 3, prepare: (Int) -> Input, run: (Input) throws -> Void
  ) rethrows -> Double {
    func perItem(_ n: Int) throws -> Double {
      let input = prepare(n)
      var best = Double.infinity
      let clock = ContinuousClock()
      for _ in 0..<repeats {
        let start = clock.now
        try run(input)
        let d = clock.now - start
        let seconds = Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        best = min(best, seconds)
      }
      return best / Double(n)
    }
    let s = try perItem(small)
    return try perItem(large) / s
  }
}
