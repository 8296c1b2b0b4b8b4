import Foundation

/// What rank 0 prints while training: on a terminal one updating line, otherwise a plain line
/// at most every 10 seconds; evaluations always get their own line. Nothing here changes a number.
final class Progress {
  let options: OutputOptions
  private var lastPrint = 0.0

  init(options: OutputOptions) { self.options = options }

  func line(_ text: String) {
    if !options.quiet { Console.out(text) }
  }

  /// The periodic training line.
  func step(
    step: Int, totalSteps: Int, epoch: Int, epochs: Int, loss: Double, samplesPerSecond: Double,
    remainingSamples: Int, elapsed: Double
  ) {
    guard !options.quiet, options.periodicLines else { return }
    let remaining = Double(remainingSamples) / max(samplesPerSecond, 1)
    let text =
      "epoch \(epoch)/\(epochs) step \(step)/\(totalSteps) loss \(fmt(loss)) \(Int(samplesPerSecond)) samples/s ETA \(duration(remaining))"
    if options.terminal {
      Console.raw("\r\u{1B}[K" + text)
    } else if elapsed - lastPrint >= 10 || step == totalSteps {
      lastPrint = elapsed
      Console.out(text)
    }
  }

  func evaluation(step: Int, elbo: Double, recon: Double, kl: Double) {
    guard !options.quiet else { return }
    if options.terminal { Console.raw("\r\u{1B}[K") }
    Console.out(
      "step \(step): held-out ELBO \(fmt(elbo)) nats/image (reconstruction loss \(fmt(recon)), KL \(fmt(kl)))")
  }

  /// Ends the updating line.
  func finish() {
    if options.terminal && !options.quiet { Console.raw("\n") }
  }
}

/// A JSON number, or null when not finite.
func json(_ x: Double) -> String {
  x.isFinite ? "\(x)" : "null"
}

func fmt(_ x: Double) -> String { String(format: "%.2f", x) }

func duration(_ s: Double) -> String {
  guard s.isFinite else { return "?" }
  let t = Int(s.rounded())
  if t >= 3600 { return "\(t / 3600)h\(String(format: "%02d", (t % 3600) / 60))m" }
  if t >= 60 { return "\(t / 60)m\(String(format: "%02d", t % 60))s" }
  return "\(t)s"
}

/// Accumulates the time between successive `lap` calls under each phase's name.
final class PhaseTimer {
  var phases: [String: Double] = [:]
  private let clock: () -> Double
  private var last: Double
  init(clock: @escaping () -> Double) {
    self.clock = clock
    last = clock()
  }
  func lap(_ name: String) {
    let now = clock()
    phases[name, default: 0] += now - last
    last = now
  }
  func move(_ seconds: Double, from: String, to: String) {
    phases[from, default: 0] -= seconds
    phases[to, default: 0] += seconds
  }
}
