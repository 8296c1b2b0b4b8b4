import CSupport
import Formats
import Foundation
import MPIShim
import VAE
import VAEData
import VAEDist

/// How `train` shows a run (none of it changes a number).
struct OutputStyle {
  /// Only the final result (and warnings).
  var quiet = false
  /// One updating line (a single process on a terminal); otherwise plain lines.
  var terminal = false
  /// Periodic progress lines at all (evaluations are always shown).
  var periodicLines = true
}

/// Renders a run's events (`RunEvent`) on the terminal or log: rank 0's progress as one updating
/// line or a plain line at most every 10 seconds, evaluations on their own line, warnings on
/// stderr; start-up phases go to the watchdog.
final class RunConsole {
  let style: OutputStyle
  /// Lines printed on stderr once start-up is over (e.g. a slow BLAS kernel), even when quiet.
  var warningsAtStart: [String] = []
  private var lastPrint = -Double.infinity

  init(style: OutputStyle) { self.style = style }

  func handle(_ event: RunEvent) {
    switch event {
    case .waiting(let what): StartupWatchdog.waiting(for: what)
    case .started:
      StartupWatchdog.disarm()
      for w in warningsAtStart { Console.warning(w) }
    case .info(let text): line(text)
    case .warning(let text): Console.warning(text)
    case .progress(let p): progress(p)
    case .evaluation(let step, let elbo, let recon, let kl):
      guard !style.quiet else { return }
      if style.terminal { Console.raw("\r\u{1B}[K") }
      Console.out("step \(step): held-out ELBO \(fmt(elbo)) nats/image (reconstruction loss \(fmt(recon)), KL \(fmt(kl)))")
    case .finished:
      if style.terminal && !style.quiet { Console.raw("\n") }
    }
  }

  func line(_ text: String) {
    if !style.quiet { Console.out(text) }
  }

  func progress(_ p: TrainingProgress) {
    guard !style.quiet, style.periodicLines else { return }
    let remaining = Double(p.remainingSamples) / max(p.samplesPerSecond, 1)
    let text =
      "epoch \(p.epoch)/\(p.epochs) step \(p.step)/\(p.totalSteps) loss \(fmt(p.loss)) \(Int(p.samplesPerSecond)) samples/s ETA \(duration(remaining))"
    if style.terminal {
      Console.raw("\r\u{1B}[K" + text)
    } else if p.elapsed - lastPrint >= 10 || p.step == p.totalSteps {
      lastPrint = p.elapsed
      Console.out(text)
    }
  }
}

func fmt(_ x: Double) -> String { String(format: "%.2f", x) }

func duration(_ s: Double) -> String {
  guard s.isFinite else { return "?" }
  let t = Int(s.rounded())
  if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
  if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
  return "\(t)s"
}

/// The start-up watchdog, a second line of defence behind the ranks' option agreement: armed by
/// `train` under MPI (`--startup-timeout`) before MPI_Init and disarmed when the run reports
/// `started`. If start-up has not finished by then, the rank prints what it waits for and exits,
/// which ends the job (the launcher ends the other ranks). The watchdog thread calls no MPI
/// function: MPI is initialised FUNNELED, so only the main thread may.
enum StartupWatchdog {
  /// `setting` is shown in the message (how to change the limit).
  static func arm(seconds: Double, setting: String) { vae_watchdog_arm(seconds, setting) }
  /// This process's rank, for the message (set by the main thread once MPI knows it).
  static func setRank(_ rank: Int) { vae_watchdog_set_rank(Int32(rank)) }
  /// What this rank waits for next (shown if the watchdog fires).
  static func waiting(for what: String) { vae_watchdog_phase(what) }
  static func disarm() { vae_watchdog_disarm() }
}

/// SIGTERM, SIGINT and SIGUSR1 ask a run to stop after the current step with a checkpoint (a
/// second signal exits at once); `pending` is the first one received, or 0.
enum StopSignals {
  static func install() { vae_install_stop_handlers() }
  static var pending: Int32 { vae_stop_signal() }
}

/// Data files mapped into memory (`.npy`) fault (SIGBUS) when they are truncated while a command
/// reads them. Registered here after loading, such a fault ends the process with one line naming
/// the file and exit status 1 instead of a crash; other faults crash as before.
enum MappedFileGuard {
  /// Installs the handlers (once) and registers every mapped file of `data`; `reader` says who
  /// read it ("training"), `rankPrefix` is "" or "rank N: ".
  static func register(_ data: DataSplits, reader: String, rankPrefix: String) {
    register(data.mappedFiles, reader: reader, rankPrefix: rankPrefix)
  }

  /// Registers `files` (e.g. the input of `encode`/`decode`).
  static func register(_ files: [NPYFile], reader: String, rankPrefix: String) {
    guard !files.isEmpty else { return }
    vae_mapped_file_guard_install()
    for f in files {
      let line = "vae-dist: error: \(rankPrefix)\(oneLine(f.path)): the data file changed while \(reader) read it (truncated or rewritten); stopped\n"
      let bytes = f.mappedBytes
      let ok = line.withCString { vae_mapped_file_guard_register(bytes.baseAddress, bytes.count, $0) }
      if ok != 0 {
        Console.warning("\(rankPrefix)more than \(VAE_MAPPED_FILE_GUARD_SLOTS) mapped data files: \(oneLine(f.path)) changing would crash instead of a one-line error")
      }
    }
  }
}
