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
  public static func error(_ line: String) {
    let s = line + "\n"
    s.withCString { vae_write_stderr($0, strlen($0)) }
  }
  public static var isTerminal: Bool { vae_stdout_isatty() != 0 }
}
