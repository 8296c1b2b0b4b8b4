import CSupport
import VAE
import XCTest

@testable import VAEData

/// The vectorised dynamic-binarisation kernel (`vae_bernoulli_bytes`, C) against the scalar
/// stream it replaces (`RandomStream.bernoulli(intensity:)`, which conditioning still uses):
/// the same draws, bit for bit, and the same stream state afterwards.
final class BinarizationKernelTests: XCTestCase {
  func testKernelDrawsWhatTheScalarStreamDraws() {
    var seeds = SplitMix64State(0x5EED)
    for n in [0, 1, 7, 8, 33, 784, 3072] {
      let bytes = (0..<n).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ Int(seeds.next() & 0xFF)) }
      let start = seeds.next()
      var scalar = RandomStream(state: start)
      let expected = bytes.map { scalar.bernoulli(intensity: $0) }
      var got = [Float](repeating: -1, count: n)
      let end = bytes.withUnsafeBufferPointer { b in
        got.withUnsafeMutableBufferPointer { vae_bernoulli_bytes(start, b.baseAddress, $0.baseAddress, n) }
      }
      XCTAssertEqual(got, expected, "n = \(n)")
      XCTAssertEqual(end, scalar.state, "stream state after \(n) draws")
    }
  }

  /// Intensity 0 never draws 1, 255 always does, and 128 draws 1 about half the time.
  func testKernelProbabilitiesAtTheEnds() {
    let n = 20_000
    for (value, lo, hi) in [(UInt8(0), 0, 0), (255, n, n), (128, n / 2 - 400, n / 2 + 400)] {
      let bytes = [UInt8](repeating: value, count: n)
      var out = [Float](repeating: 0, count: n)
      _ = bytes.withUnsafeBufferPointer { b in
        out.withUnsafeMutableBufferPointer { vae_bernoulli_bytes(12345, b.baseAddress, $0.baseAddress, n) }
      }
      let ones = Int(out.reduce(0, +))
      XCTAssertTrue((lo...hi).contains(ones), "intensity \(value): \(ones) ones of \(n)")
    }
  }
}

/// A plain SplitMix64 for the test's inputs (independent of the streams under test).
struct SplitMix64State {
  var s: UInt64
  init(_ seed: UInt64) { s = seed }
  mutating func next() -> UInt64 {
    s &+= 0x9E37_79B9_7F4A_7C15
    return SplitMix64.mix(s &- 0x9E37_79B9_7F4A_7C15)
  }
}
