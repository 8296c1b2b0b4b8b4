/// A fixed-seed random number generator (xorshift64*) for fuzz loops: the same seed gives the
/// same inputs on every run and platform, so a failure reproduces from the seed and iteration
/// the test prints. (Test support stays free of the VAE module, whose `RandomStream` would
/// otherwise serve.)
public struct SeededRNG: RandomNumberGenerator {
  public let seed: UInt64
  private var state: UInt64

  /// Any seed works; 0 (a fixed point of xorshift) is replaced by another constant.
  public init(seed: UInt64) {
    self.seed = seed
    state = seed == 0 ? 0x9E37_79B9_7F4A_7C15 : seed
  }

  public mutating func next() -> UInt64 {
    state ^= state >> 12
    state ^= state << 25
    state ^= state >> 27
    return state &* 0x2545_F491_4F6C_DD1D
  }
}
