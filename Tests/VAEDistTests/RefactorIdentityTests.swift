import Formats
import Foundation
import TestSupport
import VAE
import VAEDist
import XCTest

/// Restructurings change no number: a fixed short run (configs/smoke.yaml, seed 7, one OpenBLAS
/// thread, the debug build) ends on the same parameter bytes as the code before them. The
/// expected SHA-256 (of the model tensors' raw bytes, in name order) was recorded with the same
/// command from the code before each restructuring. GEMM results depend on OpenBLAS's kernel
/// and on its blocking, which OPENBLAS_L2_SIZE changes, so each hash holds for the kernel and
/// L2 setting it was recorded with; for another the test says so and skips.
final class RefactorIdentityTests: XCTestCase {
  static let expected: [String: String] = [
    // Recorded on an AMD EPYC (Zen 3): OpenBLAS's Zen kernel and OPENBLAS_CORETYPE=Haswell agree.
    "zen": "8211875a8e6edec115b55d0f6c7f0601eea9df19c58e11a627a860734a51ccf9",
    "haswell": "8211875a8e6edec115b55d0f6c7f0601eea9df19c58e11a627a860734a51ccf9",
    // AMD EPYC with OPENBLAS_CORETYPE=Haswell and OPENBLAS_L2_SIZE=512, as some machines set them.
    "haswell, L2 512": "e490dc9cc63c01c1cb9687c420f9aca3afe59fc9dde64e8bc00cb34a860622d6",
    // OPENBLAS_CORETYPE=Prescott (the SSE3 fallback Debian's OpenBLAS picks on unknown Intel CPUs).
    "prescott": "66be459ec53db22591c87c7d518cf431283b5c7fdaf00777cd17a4446183524a",
  ]

  /// The kernel, and the L2 size when the environment sets one.
  static var setting: String {
    let kernel = BLASInfo.coreName.lowercased()
    guard let l2 = ProcessInfo.processInfo.environment["OPENBLAS_L2_SIZE"], !l2.isEmpty else { return kernel }
    return "\(kernel), L2 \(l2)"
  }

  func testSmokeRunGivesThePreRestructuringParameters() throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    guard let want = Self.expected[Self.setting] else {
      throw XCTSkip("no recorded parameters for OpenBLAS \(Self.setting) (have \(Self.expected.keys.sorted()))")
    }
    let dir = NSTemporaryDirectory() + "vae-identity-\(UUID().uuidString)"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let r = try Subprocess.run(
      [binary, "train", "--config", TestPaths.packageRoot + "/configs/smoke.yaml", "--threads", "1", "--seed", "7",
       "--out", dir + "/run", "--quiet"])
    XCTAssertEqual(r.status, 0, r.stderr)
    let file = try SafeTensors.read(path: dir + "/run/final.safetensors")
    var bytes: [UInt8] = []
    for t in file.tensors.sorted(by: { $0.name < $1.name }) where !t.name.hasPrefix("adam.") {
      bytes += t.bytes
    }
    XCTAssertEqual(file.tensors.filter { !$0.name.hasPrefix("adam.") }.count, 10)
    try Data(bytes).write(to: URL(fileURLWithPath: dir + "/params.bin"))
    let sum = try Subprocess.run(["/usr/bin/env", "sha256sum", dir + "/params.bin"])
    XCTAssertEqual(sum.status, 0, sum.stderr)
    XCTAssertEqual(sum.stdout.split(separator: " ").first.map(String.init), want, "OpenBLAS \(Self.setting)")
  }
}
