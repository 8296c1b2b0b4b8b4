import Formats
import Foundation
import VAE

/// The files of one run directory: `config.yaml`, `metrics.jsonl`, `checkpoints/step-N.safetensors`
/// and `final.safetensors` (docs/ARCHITECTURE.md, "Run directory"). Rank 0 alone writes here.
final class RunDirectory {
  let path: String
  /// The open metrics.jsonl (append mode), rank 0 only.
  private var metrics: Int32?

  init(path: String) { self.path = path }

  var checkpointsDirectory: String { (path as NSString).appendingPathComponent("checkpoints") }
  var metricsPath: String { (path as NSString).appendingPathComponent("metrics.jsonl") }
  var configPath: String { (path as NSString).appendingPathComponent("config.yaml") }
  var finalPath: String { (path as NSString).appendingPathComponent("final.safetensors") }
  func stepPath(_ step: Int) -> String { Checkpoint.stepPath(runDirectory: path, step: step) }

  /// Checkpoints of the run, newest first (see `Checkpoint.candidates`).
  var checkpoints: [String] { Checkpoint.candidates(runDirectory: path) }

  /// Creates the directories and removes temporary files an interrupted checkpoint write left;
  /// returns how many were removed.
  @discardableResult
  func create() throws -> Int {
    do {
      try FileManager.default.createDirectory(atPath: checkpointsDirectory, withIntermediateDirectories: true)
    } catch {
      throw TrainError.io("\(checkpointsDirectory): cannot create the run directory: \(error.localizedDescription)")
    }
    return removeStaleTemporaryFiles()
  }

  /// Atomic writes go through `.<name>.tmp-<pid>-<random>` beside the target; a writer killed
  /// mid-write leaves one behind. Only one job writes a run directory, so any not of this
  /// process is stale.
  @discardableResult
  func removeStaleTemporaryFiles() -> Int {
    let mine = ".tmp-\(getpid())-"
    var removed = 0
    for dir in [path, checkpointsDirectory] {
      for name in (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
      where name.hasPrefix(".") && name.contains(".tmp-") && !name.contains(mine) {
        if (try? FileManager.default.removeItem(atPath: (dir as NSString).appendingPathComponent(name))) != nil {
          removed += 1
        }
      }
    }
    return removed
  }

  func writeConfig(_ text: String) throws {
    do {
      try FileIO.writeAtomically(Array(text.utf8), to: configPath)
    } catch {
      throw TrainError.io("\(configPath): cannot write: \(error)")
    }
  }

  // MARK: - metrics.jsonl

  func openMetrics() throws { metrics = try Self.openForAppending(metricsPath) }

  static func openForAppending(_ file: String) throws -> Int32 {
    let fd = open(file, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, mode_t(0o644))
    guard fd >= 0 else {
      throw TrainError.io("\(file): cannot open for appending: \(String(cString: strerror(errno)))")
    }
    return fd
  }

  /// `fields` as one JSON line at the end of `file` (open on `fd`).
  static func appendLine(_ fields: JSONObject, fd: Int32, file: String) throws {
    do {
      try FileIO.writeAll(Array((fields.line + "\n").utf8), fd: fd, path: file, what: "appending a line")
    } catch {
      throw TrainError.io(error.description)
    }
  }

  /// Appends `fields` as one line (`JSONObject.line`: non-finite numbers become null with a
  /// `<key>_nonfinite` note). A failed write (disk full, quota, file-size limit) stops the run:
  /// nothing is lost silently.
  func appendMetrics(_ fields: JSONObject) throws {
    guard let fd = metrics else { return }
    try Self.appendLine(fields, fd: fd, file: metricsPath)
  }

  func closeMetrics() throws {
    guard let fd = metrics else { return }
    metrics = nil
    if close(fd) != 0 { throw TrainError.io("\(metricsPath): close failed: \(String(cString: strerror(errno)))") }
  }

  func removeMetrics() {
    try? FileManager.default.removeItem(atPath: metricsPath)
    try? FileManager.default.removeItem(atPath: segmentsPath)
  }

  /// segments.jsonl: one line per start of the run (fresh, then each resume), kept across
  /// resumes, so the run's history (world sizes, requeues, work redone) survives the metrics'
  /// truncation at the checkpoint.
  var segmentsPath: String { (path as NSString).appendingPathComponent("segments.jsonl") }

  func appendSegment(_ fields: JSONObject) throws {
    let fd = try Self.openForAppending(segmentsPath)
    defer { close(fd) }
    try Self.appendLine(fields, fd: fd, file: segmentsPath)
  }

  /// How many starts segments.jsonl records so far.
  var segmentCount: Int {
    ((try? String(contentsOfFile: segmentsPath, encoding: .utf8)) ?? "").split(separator: "\n").count
  }

  /// Drops metrics lines past `step` (written after the checkpoint by the interrupted run) and
  /// the final evaluation of a finished run at `step` when `finished` (a resumed run logs it
  /// again). Returns the run time logged up to there, so `time_s` continues where it was. A
  /// failed rewrite stops the run (the old file stays as it was: the write is atomic).
  func truncateMetrics(after step: Int, finished: Bool) throws -> Double {
    guard let text = try? String(contentsOfFile: metricsPath, encoding: .utf8) else { return 0 }
    var kept: [Substring] = []
    var elapsed = 0.0
    for line in text.split(separator: "\n") {
      guard let obj = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
        let s = (obj["step"] as? NSNumber)?.intValue
      else { continue }
      if finished && s == step && obj["test_elbo"] != nil { continue }
      if s <= step {
        kept.append(line)
        elapsed = (obj["time_s"] as? NSNumber)?.doubleValue ?? elapsed
      }
    }
    do {
      try FileIO.writeAtomically(Array(kept.map { $0 + "\n" }.joined().utf8), to: metricsPath)
    } catch {
      throw TrainError.io("\(error); the run was not resumed")
    }
    return elapsed
  }

  // MARK: - checkpoints

  /// Keeps the newest `keep` step checkpoints (final.safetensors is never pruned).
  func pruneCheckpoints(keep: Int) {
    let steps = checkpoints.filter { !$0.hasSuffix("final.safetensors") }
    for old in steps.dropFirst(max(keep, 1)) { try? FileManager.default.removeItem(atPath: old) }
  }

  /// The newest checkpoint that reads and validates, with its bytes; unreadable ones are
  /// skipped with a warning through `warn`.
  func newestValidCheckpoint(warn: (String) -> Void) -> (path: String, bytes: [UInt8])? {
    var best: (step: Int, path: String, bytes: [UInt8])?
    for p in checkpoints {
      do {
        let b = try FileIO.readAll(path: p)
        let c = try Checkpoint.load(bytes: b, path: p)
        if best == nil || c.state.step > best!.step { best = (c.state.step, p, b) }
      } catch {
        let why = "\(error)"
        warn("skipping an unreadable checkpoint: " + (why.hasPrefix(p) ? why : "\(p): \(why)"))
      }
    }
    return best.map { ($0.path, $0.bytes) }
  }
}
