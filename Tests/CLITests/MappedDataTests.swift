import Formats
import Foundation
import TestSupport
import XCTest

/// A `.npy` data file is mapped, not copied: changing it under a running `train` must end the
/// run with one line naming the file (never a bus error), and leave the checkpoints written
/// before it loadable.
final class MappedDataTests: XCTestCase {
  var dir: TempDir!
  var data = ""

  /// 2000 rows of 64 floats in [0, 1] (512 KB, 125 pages): a batch of 50 random rows reads
  /// past the first page almost surely.
  override func setUpWithError() throws {
    dir = try TempDir()
    data = dir.path + "/rows.npy"
    var values = [Float](repeating: 0, count: 2000 * 64)
    for i in values.indices { values[i] = Float((i * 7919) % 1000) / 1000 }
    try NPY.write(path: data, shape: [2000, 64], values: values)
  }

  override func tearDownWithError() throws { dir = nil }

  /// Starts a long run on `data` that checkpoints every 1000 steps and waits for its first
  /// checkpoint; the next save is 1000 steps away, so a change is met by the batcher first.
  func startRun(environment: [String: String] = [:]) throws -> (Process, errors: String, run: String) {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let config = dir.path + "/mapped.yaml", run = dir.path + "/run", errors = dir.path + "/stderr"
    try """
      data:
        train: rows.npy
        test_fraction: 0.05
      model:
        hidden: [32]
        zdim: 4
      train:
        batch: 50
        steps: 100000000
        checkpoint_every: 1000
        log_every: 100

      """.write(toFile: config, atomically: true, encoding: .utf8)
    _ = FileManager.default.createFile(atPath: errors, contents: nil)
    let p = Process()
    p.executableURL = URL(fileURLWithPath: binary)
    p.arguments = ["train", "--config", config, "--out", run, "--quiet", "--no-tensorboard", "--threads", "1"]
    p.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    p.standardOutput = FileHandle.nullDevice
    p.standardError = try FileHandle(forWritingTo: URL(fileURLWithPath: errors))
    try p.run()
    let first = run + "/checkpoints/step-00001000.safetensors"
    let deadline = Date().addingTimeInterval(120)
    while !FileManager.default.fileExists(atPath: first) && p.isRunning && Date() < deadline { usleep(20_000) }
    XCTAssertTrue(FileManager.default.fileExists(atPath: first), "no checkpoint at step 1000")
    return (p, errors, run)
  }

  /// Waits for `p` (at most 30 s) and returns the seconds it took and its stderr lines.
  func finish(_ p: Process, errors: String) throws -> (seconds: Double, lines: [Substring]) {
    let start = Date()
    while p.isRunning && Date().timeIntervalSince(start) < 30 { usleep(10_000) }
    if p.isRunning { p.terminate() }
    p.waitUntilExit()
    let text = try String(contentsOfFile: errors, encoding: .utf8)
    return (Date().timeIntervalSince(start), text.split(separator: "\n"))
  }

  /// The checkpoint at step 1000 still loads (`vae-dist info` checks every tensor's CRC-32).
  func assertFirstCheckpointLoads(_ run: String) throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    let info = try Subprocess.run([binary, "info", run + "/checkpoints/step-00001000.safetensors"])
    XCTAssertEqual(info.status, 0, info.stderr)
    XCTAssertTrue(info.stdout.contains("step 1000,"), info.stdout)
  }

  /// Truncated mid-run: the next batch reads past the file's new end (SIGBUS); the guard turns
  /// that into one line naming the file and exit status 1, within a few seconds.
  func testTruncatedDataFileEndsTheRunWithOneLineNamingIt() throws {
    let (p, errors, run) = try startRun()
    XCTAssertEqual(truncate(data, 4096), 0)
    let (seconds, lines) = try finish(p, errors: errors)
    XCTAssertEqual(p.terminationReason, .exit, "killed by signal \(p.terminationStatus)")
    XCTAssertEqual(p.terminationStatus, 1)
    XCTAssertLessThan(seconds, 5)
    XCTAssertEqual(lines, [
      "vae-dist: error: \(data): the data file changed while training read it (truncated or rewritten); stopped",
    ])
    try assertFirstCheckpointLoads(run)
  }

  /// Rewritten in place (same size, other values): no fault, but the next checkpoint is refused
  /// with one line naming the file, and the previous one stays the newest.
  func testDataFileRewrittenInPlaceStopsBeforeTheNextCheckpoint() throws {
    let (p, errors, run) = try startRun()
    let fd = open(data, O_WRONLY)
    XCTAssertGreaterThanOrEqual(fd, 0)
    let half = [Float](repeating: 0.5, count: 64)
    XCTAssertEqual(half.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 4096) }, 256)
    close(fd)
    let (_, lines) = try finish(p, errors: errors)
    XCTAssertEqual(p.terminationReason, .exit)
    XCTAssertEqual(p.terminationStatus, 1)
    XCTAssertEqual(lines.count, 1, lines.joined(separator: "\n"))
    let line = String(lines.first ?? "")
    XCTAssertTrue(line.hasPrefix("vae-dist: error: \(data): the file changed while it was in use: it was modified; stopped at step 2000 before saving, so "), line)
    XCTAssertTrue(line.hasSuffix("step-00001000.safetensors is the newest checkpoint"), line)
    XCTAssertFalse(FileManager.default.fileExists(atPath: run + "/checkpoints/step-00002000.safetensors"))
    try assertFirstCheckpointLoads(run)
  }

  /// The guard leaves other bus errors alone: a SIGBUS sent from outside (not a fault in a
  /// mapped file) still kills the process by that signal, without the data file's line.
  func testOtherBusErrorsStillKill() throws {
    let (p, errors, _) = try startRun(environment: ["SWIFT_BACKTRACE": "enable=no"])
    kill(p.processIdentifier, SIGBUS)
    let (_, lines) = try finish(p, errors: errors)
    XCTAssertEqual(p.terminationReason, .uncaughtSignal)
    XCTAssertEqual(p.terminationStatus, SIGBUS)
    XCTAssertFalse(lines.contains { $0.contains("the data file changed") }, lines.joined(separator: "\n"))
  }

  /// Every run's metrics start with a `startup` line: the time to the first step and the
  /// phases inside it (a mapped file's check among them), which add up to no more than it.
  func testStartupLineTimesThePhasesBeforeTheFirstStep() throws {
    let binary = try XCTUnwrap(VAEDistBinary.path, VAEDistBinary.notFoundMessage)
    try "data:\n  train: rows.npy\n  test_fraction: 0.05\nmodel:\n  hidden: [8]\n  zdim: 2\ntrain:\n  batch: 50\n  steps: 5\n"
      .write(toFile: dir.path + "/short.yaml", atomically: true, encoding: .utf8)
    let r = try Subprocess.run(
      [binary, "train", "--config", dir.path + "/short.yaml", "--out", dir.path + "/short", "--quiet", "--no-tensorboard"])
    XCTAssertEqual(r.status, 0, r.stderr)
    let first = try XCTUnwrap(try String(contentsOfFile: dir.path + "/short/metrics.jsonl", encoding: .utf8).split(separator: "\n").first)
    let line = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(first.utf8)) as? [String: Any])
    XCTAssertEqual(line["event"] as? String, "startup")
    XCTAssertEqual(line["step"] as? Int, 0)
    let total = try XCTUnwrap(line["startup_s"] as? Double)
    var phases = 0.0
    for key in ["data_load_s", "data_check_s", "data_checksum_s", "handshake_s"] {
      let s = try XCTUnwrap(line[key] as? Double, "\(key) missing from \(first)")
      XCTAssertGreaterThanOrEqual(s, 0, key)
      phases += s
    }
    XCTAssertLessThanOrEqual(phases, total + 0.004, "phases (each rounded to 1 ms) within startup_s: \(first)")
    XCTAssertLessThan(total, r.seconds, "startup_s is part of the command's time")
  }
}
