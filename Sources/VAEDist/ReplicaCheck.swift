import Foundation
import VAE

/// Agreement between ranks: at start-up the config, data, binary and model size; during the
/// run, the replicas' parameters (bit-identical, or the job stops naming the diverged rank).
/// Every check is collective: all ranks call it at the same point.
struct ReplicaCheck {
  let comm: Communicator

  /// Every rank contributes `value`; when some rank differs from rank 0, the lowest such rank
  /// throws a one-line error naming itself and the field, the others wait for the abort.
  func agree(_ field: String, _ value: UInt64, show: (UInt64) -> String = { String($0) }) throws {
    let all = try comm.allgather(words: [value]).map { $0[0] }
    guard let bad = all.firstIndex(where: { $0 != all[0] }) else { return }
    if comm.rank == bad {
      throw TrainError.handshake("\(field) differs from rank 0's: \(show(value)) here, \(show(all[0])) on rank 0")
    }
    throw TrainError.peerFailed
  }

  /// Start-up, after `StartupRecord.agree` (which also compares the binaries): config, data and
  /// parameter count must agree on every rank. A differing config is named by its first
  /// differing line.
  func handshake(configYAML mine: String, dataChecksum: UInt32, parameterCount: Int) throws {
    guard comm.size > 1 else { return }
    var rootYAML = Array(mine.utf8)
    try comm.broadcast(&rootYAML, root: 0)
    let theirs = String(decoding: rootYAML, as: UTF8.self)
    let all = try comm.allgather(words: [mine == theirs ? 0 : 1]).map { $0[0] }
    if let bad = all.firstIndex(of: 1) {
      guard comm.rank == bad else { throw TrainError.peerFailed }
      let a = mine.split(separator: "\n"), b = theirs.split(separator: "\n")
      let i = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
      let here = i < a.count ? String(a[i]).trimmingCharacters(in: .whitespaces) : "(nothing)"
      let there = i < b.count ? String(b[i]).trimmingCharacters(in: .whitespaces) : "(nothing)"
      throw TrainError.handshake("config differs from rank 0's: '\(here)' here, '\(there)' on rank 0")
    }
    try agree("data checksum", UInt64(dataChecksum)) { hexCRC(UInt32(truncatingIfNeeded: $0)) }
    try agree("parameter count", UInt64(parameterCount))
  }

  /// Replicas must hold bit-identical parameters; a diverged one stops the job.
  func checkParameters(_ params: Arena, what: String) throws {
    guard comm.size > 1 else { return }
    try agree("checksum of \(what)", fnv1aFloats(UnsafeBufferPointer(params.data))) {
      String(format: "%016llx", $0)
    }
  }
}

/// The version every rank must agree on at start-up.
public let vaeDistVersion = "vae-dist 0.2.0 (checkpoint format vae-dist/1)"

func fnv1a(_ bytes: [UInt8]) -> UInt64 {
  var h: UInt64 = 0xcbf2_9ce4_8422_2325
  for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
  return h
}

/// A 64-bit hash of float bits (FNV-1a over 32-bit words; fast enough for 1.3 M parameters).
func fnv1aFloats(_ a: UnsafeBufferPointer<Float>) -> UInt64 {
  var h: UInt64 = 0xcbf2_9ce4_8422_2325
  for x in a { h = (h ^ UInt64(x.bitPattern)) &* 0x100_0000_01b3 }
  return h
}
