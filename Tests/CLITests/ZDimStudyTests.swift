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
    "zdim,budget,steps,test_elbo,test_recon,test_kl,iw_bound,iw_k,iw_images,active_units,kl_per_active_unit,kl_inactive_units,parameters,train_seconds"

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

  /// Two zdims, each ONE run measured at 1 and 2 epochs; a second call measures nothing
  /// again, and a larger budget adds rows by continuing the same runs.
  func testQuickStudyWritesCSVSamplesAndResumes() throws {
    guard TestPaths.mnistDataDirectory != nil else {
      throw XCTSkip("no MNIST in any of \(TestPaths.dataDirectoryCandidates) (run scripts/get-data)")
    }
    let out = tmp + "/study"
    let r = try study(["--quick", "--zdims", "8 2", "--out", out])
    XCTAssertEqual(r.status, 0, "zdim-study --quick failed:\nstdout:\n\(r.stdout)\nstderr:\n\(r.stderr)")
    let (header, rows) = try readCSV(out + "/zdim-study.csv")
    XCTAssertEqual(header, Self.csvHeader)
    let column = Dictionary(uniqueKeysWithValues: header.split(separator: ",").enumerated().map { (String($1), $0) })
    XCTAssertEqual(rows.map { "\($0[0])@\($0[1])" }, ["2@1", "8@1", "2@2", "8@2"], "one row per (zdim, budget)")
    for row in rows {
      func number(_ key: String) -> Double { Double(row[column[key]!]) ?? .nan }
      let elbo = number("test_elbo"), recon = number("test_recon"), kl = number("test_kl")
      XCTAssertEqual(row.count, column.count, "row \(row)")
      XCTAssertTrue(elbo.isFinite && elbo < 0, "\(row)")
      XCTAssertEqual(elbo, -(recon + kl), accuracy: 1e-6 * abs(elbo))
      XCTAssertEqual(row[column["steps"]!], row[1] == "1" ? "10" : "20", "--quick: 1000 images at batch 100")
      XCTAssertGreaterThan(Int(row[column["parameters"]!]) ?? 0, 2_000_000, "the tutorial network")
      XCTAssertTrue(number("iw_bound").isFinite && row[column["iw_k"]!] == "10" && row[column["iw_images"]!] == "100")
      let active = Int(row[column["active_units"]!]) ?? -1
      XCTAssertTrue((0...Int(row[0])!).contains(active), "active units \(active) of z = \(row[0])")
    }
    // The 2-epoch numbers come from continuing the 1-epoch run: more steps, the same run directory.
    XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/z-8/epochs-1.safetensors"))
    XCTAssertTrue(FileManager.default.fileExists(atPath: out + "/z-8/epochs-2.safetensors"))
    for z in [2, 8] { assertPNG(out + "/z-\(z)/samples.png") }
    let again = try study(["--quick", "--zdims", "2 8", "--out", out])
    XCTAssertEqual(again.status, 0, again.stderr)
    XCTAssertFalse(again.stdout.contains("training") || again.stdout.contains("measuring"), again.stdout)
    XCTAssertEqual(try readCSV(out + "/zdim-study.csv").1, rows)
    let more = try study(["--quick", "--zdims", "2", "--epochs", "1 2 3", "--out", out])
    XCTAssertEqual(more.status, 0, more.stderr)
    XCTAssertEqual(more.stdout.components(separatedBy: "training to").count - 1, 1, more.stdout)
    let extended = try readCSV(out + "/zdim-study.csv").1
    XCTAssertEqual(extended.count, 5)
    XCTAssertEqual(extended.last.map { [$0[0], $0[1], $0[2]] }, ["2", "3", "30"])

    // --parallel-z 2 trains both zdims at once and measures the same numbers (each run is
    // seeded; only the wall time differs).
    let par = tmp + "/parallel"
    let p = try study(["--quick", "--zdims", "8 2", "--parallel-z", "2", "--out", par])
    XCTAssertEqual(p.status, 0, "--parallel-z 2 failed:\n\(p.stdout)\n\(p.stderr)")
    let withoutTime = { (rows: [[String]]) in rows.map { Array($0.dropLast()) } }
    XCTAssertEqual(withoutTime(try readCSV(par + "/zdim-study.csv").1), withoutTime(rows))

    // --collect trains and measures nothing: it rebuilds the CSV from what was measured.
    try FileManager.default.removeItem(atPath: par + "/zdim-study.csv")
    let c = try study(["--quick", "--zdims", "8 2 50", "--collect", "--out", par])
    XCTAssertEqual(c.status, 0, c.stderr)
    XCTAssertFalse(c.stdout.contains("training") || c.stdout.contains("measuring"), c.stdout)
    XCTAssertFalse(FileManager.default.fileExists(atPath: par + "/z-50"), "--collect must not start z = 50")
    XCTAssertEqual(withoutTime(try readCSV(par + "/zdim-study.csv").1), withoutTime(rows))
  }

  /// --slurm submits one job per zdim with the study's other options and returns; a fake
  /// `sbatch` on the PATH records what would be submitted.
  func testSlurmSubmitsOneJobPerZdim() throws {
    let bin = tmp + "/bin"
    try FileManager.default.createDirectory(atPath: bin, withIntermediateDirectories: true)
    let log = tmp + "/sbatch.log"
    let fake = "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> \(log); done\necho '---' >> \(log)\necho 'Submitted batch job 1'\n"
    try fake.write(toFile: bin + "/sbatch", atomically: true, encoding: .utf8)
    XCTAssertEqual(chmod(bin + "/sbatch", 0o755), 0)
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    var env = ["VAE_DIST_BIN": binary, "VAE_DIST_NO_PIP": "1",
               "PATH": bin + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")]
    env["VAE_DIST_DATA"] = tmp  // not read: --slurm only submits
    let out = tmp + "/s"
    let r = try Subprocess.run(
      [script, "--zdims", "2 1000", "--epochs", "10 30 100", "--np", "4", "--slurm", "--docs", "--data", tmp, "--out", out],
      environment: env, cwd: tmp)
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("--collect --docs"), r.stdout)
    let jobs = try String(contentsOfFile: log, encoding: .utf8).components(separatedBy: "---\n").filter { !$0.isEmpty }
    XCTAssertEqual(jobs.count, 2, "one sbatch per zdim")
    for (job, z) in zip(jobs, ["2", "1000"]) {
      let args = job.split(separator: "\n").map(String.init)
      func value(_ flag: String) -> String? { args.firstIndex(of: flag).map { args[$0 + 1] } }
      XCTAssertEqual(value("--job-name"), "zdim-\(z)")
      XCTAssertEqual(value("--ntasks"), "4")
      XCTAssertEqual(value("--output"), out + "/slurm-zdim-\(z).out")
      let wrap = try XCTUnwrap(value("--wrap"))
      XCTAssertTrue(wrap.contains("--zdims \(z) "), wrap)
      XCTAssertTrue(wrap.contains("--np 4") && wrap.contains("--epochs 10\\ 30\\ 100"), wrap)
      XCTAssertFalse(wrap.contains("--slurm") || wrap.contains("--docs"), wrap)
    }
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
      (["--epochs", "30 10"], "--epochs"),
      (["--iw", "many"], "--iw"),
      (["--np"], "--np"),
      (["--parallel-z", "0"], "--parallel-z"),
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
    for s in ["--zdims", "--config", "--epochs", "--iw", "--np", "--out", "--docs", "--quick", "--parallel-z", "--collect",
              "--slurm", "active", "zdim-study.csv", "minutes"] {
      XCTAssertTrue(r.stdout.contains(s), "--help does not mention \(s)")
    }
  }
}
