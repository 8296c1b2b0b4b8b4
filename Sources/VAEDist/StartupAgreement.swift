import Foundation
import MPIShim

/// How a run begins: from scratch, resumed, or from given weights. Every rank must agree on it
/// (a resume broadcasts rank 0's checkpoint; a rank that expects no broadcast would hang).
public struct StartOptions: Sendable, Equatable {
  public var resume: ResumeMode
  /// `--init`: a fresh run starts from this safetensors file's model tensors.
  public var initialWeights: String?
  public init(resume: ResumeMode = .none, initialWeights: String? = nil) {
    self.resume = resume
    self.initialWeights = initialWeights
  }
}

/// One field of the start-up option agreement: a value every rank must share, how to show it,
/// and its name as the user gave it (a flag or an environment variable).
struct StartupField {
  let name: String
  let value: UInt64
  let show: (UInt64) -> String
}

extension ReplicaCheck {
  /// Start-up, before any collective whose presence depends on options (the shared-memory
  /// window, the parameter allgather of the sharded optimizer, the resume and `--init`
  /// broadcasts): ONE allgather of a fixed-size record that every rank always reaches. When a
  /// rank's record differs from rank 0's, the lowest such rank throws one line naming its first
  /// differing field; the others wait for the job's abort.
  func agreeOnStartup(_ fields: [StartupField]) throws {
    guard comm.size > 1 else { return }
    let all = try comm.allgather(words: fields.map(\.value))
    guard let bad = all.firstIndex(where: { $0 != all[0] }) else { return }
    guard comm.rank == bad else { throw TrainError.peerFailed }
    let i = fields.indices.first { all[bad][$0] != all[0][$0] }!
    let f = fields[i]
    throw TrainError.handshake(
      "\(f.name) differs from rank 0's: \(f.show(f.value)) here, \(f.show(all[0][i])) on rank 0")
  }

  /// The options that decide which collectives run at start-up and in every step.
  static func startupFields(parallel: ParallelOptions, start: StartOptions) -> [StartupField] {
    func enabled(_ v: UInt64) -> String { v == 1 ? "enabled" : "disabled" }
    func path(_ p: String?, _ what: String) -> StartupField {
      let mine = p.map { fnv1a(Array($0.utf8)) | 1 } ?? 0  // | 1: never 0 for a path
      return StartupField(name: what, value: mine) { v in
        v == 0 ? "none" : v == mine ? "'\(p!)'" : "another file"
      }
    }
    let resumeKind: UInt64
    var resumePath: String?
    switch start.resume {
    case .none: resumeKind = 0
    case .auto: resumeKind = 1
    case .path(let p): resumeKind = 2; resumePath = p
    }
    return [
      StartupField(name: "binary version", value: fnv1a(Array(vaeDistVersion.utf8))) { v in
        v == fnv1a(Array(vaeDistVersion.utf8)) ? vaeDistVersion : "another version"
      },
      StartupField(
        name: "optimizer sharding (--[no-]shard-optimizer)", value: parallel.shardOptimizer ? 1 : 0, show: enabled),
      StartupField(
        name: "the shared-memory transport (VAE_DIST_SHM)", value: MPICommunicator.sharedMemoryAllowed ? 1 : 0
      ) { $0 == 1 ? "enabled" : "disabled (VAE_DIST_SHM=0)" },
      StartupField(name: "--micro-batches", value: UInt64(parallel.microBatches)) { String($0) },
      StartupField(name: "--resume", value: resumeKind) { ["not given", "auto", "a file"][Int(min($0, 2))] },
      path(resumePath, "the --resume file"),
      path(start.initialWeights, "--init"),
    ]
  }
}

/// The start-up watchdog, a second line of defence behind the option agreement: armed by
/// `vae-dist train` under MPI (`--startup-timeout`, default 120 s) before MPI_Init and disarmed
/// once every rank has checked the initial parameters. If start-up has not finished by then,
/// the rank prints what it is waiting for and ends the job, instead of spinning until the
/// scheduler's wall time.
public enum StartupWatchdog {
  /// `setting` is shown in the message (how to change the limit).
  public static func arm(seconds: Double, setting: String) { vae_watchdog_arm(seconds, setting) }
  /// What this rank waits for next (shown if the watchdog fires).
  public static func waiting(for what: String) { vae_watchdog_phase(what) }
  public static func disarm() { vae_watchdog_disarm() }
}
