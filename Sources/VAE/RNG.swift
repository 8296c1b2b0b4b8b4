/// Counter-based randomness: every draw is a pure function of
/// `(seed, purpose, epoch, index)` (docs/ARCHITECTURE.md §1). A `CounterRNG` holds only the seed; asking it
/// for a `stream` keyed by the other three values gives a small SplitMix64 generator whose
/// state is a hash of the key. Nothing is carried from one draw to the next across examples, so
/// the shuffle, the binarisation and the noise of an example do not depend on the number of
/// ranks or on where a run was resumed.
public struct CounterRNG: Sendable, Hashable {
  public let seed: UInt64
  public init(seed: UInt64) { self.seed = seed }

  /// What a stream is for. Distinct purposes give independent streams for the same
  /// (epoch, index). Raw values are part of the reproducibility contract: never renumber.
  public enum Purpose: UInt64, Sendable {
    case initialisation = 1
    case shuffle = 2
    case binarizeStatic = 3
    case binarizeDynamic = 4
    case noise = 5
    case evalNoise = 6
    case testBinarize = 7
    case synthetic = 8
    case sample = 9
    case conditionBinarize = 10
    /// The seeded held-out split of a data file (`data.test_fraction`).
    case testSplit = 11
  }

  @inlinable
  public func stream(_ purpose: Purpose, epoch: UInt64 = 0, index: UInt64 = 0) -> RandomStream {
    var h = SplitMix64.mix(seed &+ 0x9E37_79B9_7F4A_7C15)
    h = SplitMix64.mix(h ^ (purpose.rawValue &* 0xD1B5_4A32_D192_ED03))
    h = SplitMix64.mix(h ^ (epoch &* 0x8CB9_2BA7_2F3D_8DD7))
    h = SplitMix64.mix(h ^ (index &* 0xABC9_8388_FB8E_0F5B))
    return RandomStream(state: h)
  }
}

public enum SplitMix64 {
  @inlinable @inline(__always)
  public static func mix(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}

/// A SplitMix64 sequence. Cheap to create; used for one example's draws.
public struct RandomStream: RandomNumberGenerator, Sendable {
  public var state: UInt64
  @usableFromInline var spareNormal: Float? = nil

  @inlinable public init(state: UInt64) { self.state = state }

  @inlinable @inline(__always)
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// Uniform in [0, 1) with 24 random bits.
  @inlinable @inline(__always)
  public mutating func nextFloat() -> Float {
    Float(next() >> 40) * (1.0 / 16_777_216.0)
  }

  /// Uniform in [0, 1) with 53 random bits.
  @inlinable @inline(__always)
  public mutating func nextDouble() -> Double {
    Double(next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
  }

  /// Uniform in [lo, hi).
  @inlinable
  public mutating func nextFloat(in lo: Float, _ hi: Float) -> Float {
    lo + (hi - lo) * nextFloat()
  }

  /// Standard normal (Box–Muller in Double, both outputs used).
  @inlinable
  public mutating func nextNormal() -> Float {
    if let s = spareNormal { spareNormal = nil; return s }
    let u1 = 1.0 - nextDouble()  // (0, 1]
    let u2 = nextDouble()
    let r = (-2.0 * _log(u1)).squareRoot()
    let t = 2.0 * Double.pi * u2
    spareNormal = Float(r * _sin(t))
    return Float(r * _cos(t))
  }

  /// Uniform integer in 0..<n (Lemire's method, unbiased).
  @inlinable
  public mutating func nextInt(below n: Int) -> Int {
    precondition(n > 0)
    return Int(truncatingIfNeeded: next(upperBound: UInt64(n)))
  }
}

#if canImport(Glibc)
import Glibc
@usableFromInline func _log(_ x: Double) -> Double { Glibc.log(x) }
@usableFromInline func _sin(_ x: Double) -> Double { Glibc.sin(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Glibc.cos(x) }
#else
import Darwin
@usableFromInline func _log(_ x: Double) -> Double { Darwin.log(x) }
@usableFromInline func _sin(_ x: Double) -> Double { Darwin.sin(x) }
@usableFromInline func _cos(_ x: Double) -> Double { Darwin.cos(x) }
#endif

extension CounterRNG {
  /// Fills `rows` × `dim` standard normals (reparameterisation noise, latent samples): row `r`
  /// draws from stream (purpose, epoch, index(r)), so a row depends only on its key. The one
  /// place noise is drawn: training, evaluation and sampling all call it.
  @inlinable
  public func fillNormal(
    _ out: UnsafeMutablePointer<Float>, rows: Int, dim: Int, purpose: Purpose, epoch: UInt64 = 0,
    index: (Int) -> UInt64
  ) {
    for r in 0..<rows {
      var s = stream(purpose, epoch: epoch, index: index(r))
      for j in 0..<dim { out[r * dim + j] = s.nextNormal() }
    }
  }
}
