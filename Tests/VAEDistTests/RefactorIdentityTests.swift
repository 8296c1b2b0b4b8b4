import Formats
import Foundation
import TestSupport
import VAE
import VAEDist
import XCTest

/// Restructuring the code changes no number: a fixed short run (configs/smoke.yaml, seed 7, one
/// OpenBLAS thread) ends on fixed parameter bytes. The expected SHA-256 is of the model tensors'
/// raw bytes, in name order, from the same command. GEMM results depend on OpenBLAS's kernel, so
/// each hash holds for the kernels it was recorded on; on another kernel the test says so and
/// skips.
final class RefactorIdentityTests: XCTestCase {
  static let expected: [String: String] = [
    // Recorded on an AMD EPYC (Zen 3): OpenBLAS's Zen kernel and OPENBLAS_CORETYPE=Haswell agree.
    "zen": "8211875a8e6edec115b55d0f6c7f0601eea9df19c58e11a627a860734a51ccf9",
    "haswell": "8211875a8e6edec115b55d0f6c7f0601eea9df19c58e11a627a860734a51ccf9",
    // OPENBLAS_CORETYPE=Prescott (the SSE3 fallback Debian's OpenBLAS picks on unknown Intel CPUs).
    "prescott": "66be459ec53db22591c87c7d518cf431283b5c7fdaf00777cd17a4446183524a",
  ]

  func testSmokeRunGivesThePreRestructuringParameters() throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let kernel = BLASInfo.coreName.lowercased()
    guard let want = Self.expected[kernel] else {
      throw XCTSkip("no recorded parameters for OpenBLAS kernel \(BLASInfo.coreName) (have \(Self.expected.keys.sorted()))")
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
    XCTAssertEqual(sum.stdout.split(separator: " ").first.map(String.init), want, "kernel \(BLASInfo.coreName)")
  }
}
