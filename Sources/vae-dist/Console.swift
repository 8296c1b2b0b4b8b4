import CSupport
import Foundation

/// Terminal output through the C side (Swift 6 treats C's `stdout` as unsafe shared state).
public enum Console {
  public static func out(_ line: String) {
    let s = line + "\n"
    s.withCString { vae_write_stdout($0, strlen($0)) }
  }
  public static func raw(_ text: String) {
    text.withCString { vae_write_stdout($0, strlen($0)) }
  }
  /// Call once at start: a write past a file-size limit then fails with "File too large"
  /// (an error that names the file) instead of SIGXFSZ killing the process.
  public static func reportFileSizeLimitAsError() { vae_ignore_file_size_signal() }

  public static func error(_ line: String) {
    let s = line + "\n"
    s.withCString { vae_write_stderr($0, strlen($0)) }
  }
  /// "vae-dist: warning: <text>" on stderr: every warning of the tool looks the same.
  public static func warning(_ text: String) { error("vae-dist: warning: " + text) }
  public static var isTerminal: Bool { vae_stdout_isatty() != 0 }
}
