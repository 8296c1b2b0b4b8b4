import Foundation
import TestSupport
import XCTest

/// The Python package in python/ (vae_dist) against the binary: its held-out binarisation is
/// vae-dist's bit for bit, its PyTorch module loads a checkpoint strictly and reproduces
/// `vae-dist eval --mean-z`, and save_init round-trips (Tests/python/test_vae_dist_package.py).
/// Skipped, with the script's reason, where torch or safetensors is not installed.
final class PythonPackageTests: XCTestCase {
  func testPythonPackageAgreesWithTheBinary() throws {
    let binary = try XCTUnwrap(VAEDistBinary.releasePath ?? VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    guard let data = TestPaths.mnistDataDirectory else {
      throw XCTSkip("no MNIST in any of \(TestPaths.dataDirectoryCandidates) (run scripts/get-data)")
    }
    let script = TestPaths.packageRoot + "/Tests/python/test_vae_dist_package.py"
    let r = try Subprocess.run(
      Subprocess.pythonCommand + [script, binary, data],
      environment: ["PYTHONPATH": TestPaths.packageRoot + "/python", "OPENBLAS_NUM_THREADS": "1"])
    if r.status == 0, let skip = r.stdout.split(separator: "\n").first(where: { $0.hasPrefix("SKIP:") }) {
      throw XCTSkip(String(skip))
    }
    XCTAssertEqual(r.status, 0, "\(r.stdout.suffix(1500))\n\(r.stderr.suffix(1500))")
    XCTAssertTrue(r.stdout.contains("PASS"), r.stdout)
  }
}
