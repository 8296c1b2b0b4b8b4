import Foundation

/// The settings every rank must share before any collective whose presence depends on them
/// (the shared-memory window, the parameter allgather of the sharded optimizer, the resume and
/// initial-weights broadcasts). The executable maps each to its flag for hints.
public enum StartupSetting: String, Sendable, CaseIterable {
  case binary = "binary version"
  case sharding = "optimizer sharding"
  case sharedMemory = "the shared-memory transport (VAE_DIST_SHM)"
  case overlap = "overlapping the exchange with backward (VAE_DIST_OVERLAP)"
  case microBatches = "micro-batches per rank"
  case resume = "resume mode"
  case resumeFile = "the resume checkpoint"
  case initialWeights = "the initial weights file"
}

/// One field of the start-up agreement: a value every rank must share and how to show it.
public struct StartupField {
  public let setting: StartupSetting
  public let value: UInt64
  public let show: (UInt64) -> String
  public init(setting: StartupSetting, value: UInt64, show: @escaping (UInt64) -> String) {
    self.setting = setting
    self.value = value
    self.show = show
  }
}

/// The start-up record: a fixed header (format version, field count) that any two builds can
/// compare, then the fields. Both are one allgather every rank always reaches.
public enum StartupRecord {
  /// Bumped whenever the meaning of a field changes.
  public static let formatVersion: UInt64 = 2

  /// When a rank's record differs from rank 0's, the lowest such rank throws one line naming
  /// its first differing field; the others wait for the job's end.
  public static func agree(_ fields: [StartupField], comm: Communicator) throws {
    guard comm.size > 1 else { return }
    let header = try comm.allgather(words: [formatVersion, UInt64(fields.count)])
    if let bad = header.firstIndex(where: { $0 != header[0] }) {
      guard comm.rank == bad else { throw TrainError.peerFailed }
      throw TrainError.optionMismatch(
        .binary,
        "the start-up record differs from rank 0's (format \(header[bad][0]) with \(header[bad][1]) fields here, format \(header[0][0]) with \(header[0][1]) fields on rank 0): every rank must run the same vae-dist build")
    }
    let all = try comm.allgather(words: fields.map(\.value))
    guard let bad = all.firstIndex(where: { $0 != all[0] }) else { return }
    guard comm.rank == bad else { throw TrainError.peerFailed }
    let i = fields.indices.first { all[bad][$0] != all[0][$0] }!
    let f = fields[i]
    throw TrainError.optionMismatch(
      f.setting, "\(f.setting.rawValue) differs from rank 0's: \(f.show(f.value)) here, \(f.show(all[0][i])) on rank 0")
  }

  /// The options that decide which collectives run at start-up and in every step.
  public static func fields(parallel: ParallelOptions, start: StartOptions) -> [StartupField] {
    func enabled(_ v: UInt64) -> String { v == 1 ? "enabled" : "disabled" }
    func path(_ p: String?, _ setting: StartupSetting) -> StartupField {
      let mine = p.map { fnv1a(Array($0.utf8)) | 1 } ?? 0  // | 1: never 0 for a path
      return StartupField(setting: setting, value: mine) { v in
        v == 0 ? "none" : v == mine ? "'\(p!)'" : "another file"
      }
    }
    let version = fnv1a(Array(vaeDistVersion.utf8))
    return [
      StartupField(setting: .binary, value: version) { $0 == version ? vaeDistVersion : "another version" },
      StartupField(setting: .sharding, value: parallel.shardOptimizer ? 1 : 0, show: enabled),
      StartupField(setting: .sharedMemory, value: MPICommunicator.sharedMemoryAllowed ? 1 : 0) {
        $0 == 1 ? "enabled" : "disabled (VAE_DIST_SHM=0)"
      },
      StartupField(setting: .overlap, value: MPICommunicator.overlapAllowed ? 1 : 0) {
        $0 == 1 ? "enabled" : "disabled (VAE_DIST_OVERLAP=0)"
      },
      StartupField(setting: .microBatches, value: UInt64(parallel.microBatches ?? 0)) { $0 == 0 ? "auto" : String($0) },
      StartupField(setting: .resume, value: start.resume.kind) { ["not given", "auto", "a file"][Int(min($0, 2))] },
      path(start.resume.file, .resumeFile),
      path(start.initialWeights, .initialWeights),
    ]
  }
}

extension ResumeMode {
  var kind: UInt64 {
    switch self {
    case .none: 0
    case .auto: 1
    case .path: 2
    }
  }
  var file: String? {
    if case .path(let p) = self { return p }
    return nil
  }
}
