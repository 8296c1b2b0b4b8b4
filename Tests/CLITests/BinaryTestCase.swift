import Foundation
import TestSupport
import XCTest

/// The binary run in a fresh directory per test (removed afterwards), one OpenBLAS thread.
class BinaryTestCase: XCTestCase {
  var dir = ""

  override func setUpWithError() throws {
    dir = NSTemporaryDirectory() + "vae-\(type(of: self))-\(UUID().uuidString)"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

  /// `vae-dist args…` with `dir` as the working directory.
  func run(_ args: [String]) throws -> Subprocess.Result {
    let bin = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    return try Subprocess.run([bin] + args, environment: ["OPENBLAS_NUM_THREADS": "1"], cwd: dir)
  }
}
