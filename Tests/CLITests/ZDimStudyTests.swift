import Foundation
import TestSupport
import XCTest

/// `scripts/zdim-study`: a `--quick` study end to end (CSV, table, sample grids, --resume) and its
/// one-line argument errors. The script runs with `VAE_DIST_BIN` set to the binary these tests
/// built, so it does not build anything itself.
final class ZDimStudyTests: XCTestCase {
  private var tmp = ""

  private var script: String { TestPaths.packageRoot + "/scripts/zdim-study" }

  private static let csvHeader =
    "zdim,test_elbo,test_recon,test_kl,test_images,parameters,epochs,steps,train_limit,train_seconds"

  override func setUpWithError() throws {
    tmp = NSTemporaryDirectory() + "vae-dist-zdim-study-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: tmp)
  }

  /// Runs the script in the test's temporary directory with the binary the tests use, MNIST from
  /// wherever the other tests find it, one OpenBLAS thread, and no `pip install`.
  private func study(_ args: [String]) throws -> Subprocess.Result {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    var env = ["VAE_DIST_BIN": binary, "VAE_DIST_NO_PIP": "1", "OPENBLAS_NUM_THREADS": "1"]
    if let data = TestPaths.mnistDataDirectory { env["VAE_DIST_DATA"] = data }
    return try Subprocess.run([script] + args, environment: env, cwd: tmp)
  }

  private func assertPNG(_ path: String, line: UInt = #line) {
    guard let data = FileManager.default.contents(atPath: path) else {
      XCTFail("\(path) does not exist", line: line)
      return
    }
    XCTAssertEqual(
      Array(data.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "\(path): no PNG signature", line: line)
    XCTAssertGreaterThan(data.count, 200, "\(path): suspiciously small PNG", line: line)
  }

  /// The CSV as (header, rows of fields).
  private func readCSV(_ path: String) throws -> (String, [[String]]) {
    let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map(String.init)
    let header = try XCTUnwrap(lines.first, "\(path) is empty")
    return (header, lines.dropFirst().map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) })
  }

  func testQuickStudyWritesCSVSamplesAndResumes() throws {
    guard TestPaths.mnistDataDirectory != nil else {
      throw XCTSkip("no MNIST in any of \(TestPaths.dataDirectoryCandidates) (run scripts/get-data)")
    }
    let out = tmp + "/study"
    let r = try study(["--quick", "--zdims", "8 2", "--out", out])
    XCTAssertEqual(r.status, 0, "zdim-study --quick failed:\nstdout:\n\(r.stdout)\nstderr:\n\(r.stderr)")
    guard r.status == 0 else { return }

    // The CSV: the header and one row per zdim, in increasing zdim.
    let csv = out + "/zdim-study.csv"
    let (header, rows) = try readCSV(csv)
    XCTAssertEqual(header, Self.csvHeader)
    XCTAssertEqual(rows.map { $0.first ?? "" }, ["2", "8"], "one row per zdim: \(rows)")
    let column = Dictionary(uniqueKeysWithValues: header.split(separator: ",").enumerated().map { (String($1), $0) })
    var elbos: [Double] = []
    for row in rows {
      XCTAssertEqual(row.count, column.count, "row \(row)")
      guard row.count == column.count else { continue }
      func number(_ key: String) -> Double { Double(row[column[key]!]) ?? .nan }
      let elbo = number("test_elbo"), recon = number("test_recon"), kl = number("test_kl")
      XCTAssertTrue(elbo.isFinite && elbo < 0, "z = \(row[0]): ELBO \(row[column["test_elbo"]!]) is not finite and negative")
      XCTAssertEqual(elbo, -(recon + kl), accuracy: 1e-6 * abs(elbo), "z = \(row[0]): ELBO != -(recon + kl)")
      XCTAssertGreaterThanOrEqual(kl, 0)
      XCTAssertEqual(row[column["test_images"]!], "10000")
      XCTAssertEqual(row[column["epochs"]!], "1")
      XCTAssertEqual(row[column["steps"]!], "10", "--quick: 1 epoch of 1000 images at batch 100")
      XCTAssertEqual(row[column["train_limit"]!], "1000")
      XCTAssertGreaterThan(Int(row[column["parameters"]!]) ?? 0, 2_000_000, "the tutorial network")
      XCTAssertTrue(number("train_seconds") >= 0, "train_seconds \(row[column["train_seconds"]!])")
      elbos.append(elbo)
    }

    // Sample grids (and the latent lattice of the 2-D model), the table, the plot or its note.
    for z in [2, 8] { assertPNG(out + "/z-\(z)/samples.png") }
    assertPNG(out + "/z-2/manifold.png")
    XCTAssertEqual(r.stdout.components(separatedBy: "<- best").count - 1, 1, "one best zdim marked:\n\(r.stdout)")
    if FileManager.default.fileExists(atPath: out + "/zdim-study.png") {
      assertPNG(out + "/zdim-study.png")
    } else {
      XCTAssertTrue(r.stdout.contains("plot skipped"), "no plot and no note saying so:\n\(r.stdout)")
    }

    // Running again into the same --out without --resume is refused, naming --resume.
    let again = try study(["--quick", "--zdims", "2 8", "--out", out])
    XCTAssertEqual(again.status, 2)
    XCTAssertEqual(again.stderr.split(separator: "\n").count, 1, "one-line error: \(again.stderr)")
    XCTAssertTrue(again.stderr.contains("--resume"), again.stderr)

    // --resume trains nothing again and reports the same numbers.
    let resumed = try study(["--quick", "--zdims", "2 8", "--out", out, "--resume"])
    XCTAssertEqual(resumed.status, 0, "--resume failed:\n\(resumed.stdout)\n\(resumed.stderr)")
    XCTAssertEqual(resumed.stdout.components(separatedBy: "not training again").count - 1, 2, resumed.stdout)
    let (_, rowsAgain) = try readCSV(csv)
    XCTAssertEqual(rowsAgain.compactMap { $0.count > 1 ? Double($0[1]) : nil }, elbos)

    // --resume with other settings is refused before anything runs.
    let other = try study(["--quick", "--zdims", "2 8", "--out", out, "--resume", "--epochs", "2"])
    XCTAssertEqual(other.status, 2)
    XCTAssertTrue(other.stderr.contains("--resume") && other.stderr.contains("epochs=2"), other.stderr)
  }

  func testBadArgumentsAreOneLineErrors() throws {
    let cases: [([String], String)] = [
      (["--zdims", "0"], "--zdims"),
      (["--zdims", "10001"], "--zdims"),
      (["--zdims", "2 x"], "--zdims"),
      (["--zdims=1.5"], "--zdims"),
      (["--bogus"], "--bogus"),
      (["--quick", "--bogus", "3"], "--bogus"),
      (["--config", tmp + "/no-such.yaml"], "--config"),
      (["--epochs", "0"], "--epochs"),
      (["--train-limit", "many"], "--train-limit"),
      (["--seed"], "--seed"),
    ]
    for (args, flag) in cases {
      let r = try study(args + ["--out", tmp + "/never"])
      let cmd = "zdim-study " + args.joined(separator: " ")
      XCTAssertEqual(r.status, 2, "\(cmd): exit status \(r.status)")
      XCTAssertEqual(r.stderrLines.count, 1, "\(cmd): expected one stderr line, got:\n\(r.stderr)")
      let line = r.stderrLines.first.map(String.init) ?? ""
      XCTAssertTrue(line.hasPrefix("zdim-study: "), "\(cmd): \(line)")
      XCTAssertTrue(line.contains(flag), "\(cmd): error does not name \(flag): \(line)")
      XCTAssertEqual(r.stdout, "", "\(cmd): printed on stdout")
    }
    // Nothing was started: no study directory, no data fetched into the working directory.
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: tmp), [])
  }

  func testHelp() throws {
    let r = try study(["--help"])
    XCTAssertEqual(r.status, 0)
    XCTAssertEqual(r.stderr, "")
    for s in ["--zdims", "--config", "--epochs", "--train-limit", "--seed", "--out", "--resume", "--quick", "zdim-study.csv", "minutes"] {
      XCTAssertTrue(r.stdout.contains(s), "--help does not mention \(s)")
    }
  }
}
