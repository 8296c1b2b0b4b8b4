#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Why a file could not be read or written: the path, the failing step and the system's reason.
/// The description is one line: `<path>: I/O error: <detail>`.
public struct FileIOError: Error, CustomStringConvertible, Equatable, Sendable {
  /// The file that was being read or written.
  public let path: String
  /// The failing step and the reason, such as
  /// `cannot open for reading: No such file or directory (errno 2)`.
  public let detail: String
  /// The reason alone: the system's text for the error (`No such file or directory`), or what
  /// was wrong when no system call failed (`is a directory, expected a file`).
  public let reason: String

  public init(path: String, detail: String, reason: String) {
    self.path = path
    self.detail = detail
    self.reason = reason
  }

  /// `step` failed with the system error `code` (by default `errno`, read before `step` is
  /// built, so that building the message cannot change it).
  public static func system(_ path: String, code: Int32 = errno, _ step: @autoclosure () -> String) -> FileIOError {
    let reason = String(cString: strerror(code))
    return FileIOError(path: path, detail: "\(step()): \(reason) (errno \(code))", reason: reason)
  }

  /// No system call failed; `reason` says what is wrong.
  public static func plain(_ path: String, _ reason: String) -> FileIOError {
    FileIOError(path: path, detail: reason, reason: reason)
  }

  public var description: String { "\(oneLine(path)): I/O error: \(oneLine(detail))" }
}

/// Whole-file reads and atomic whole-file writes through POSIX calls, so that every failure
/// carries the system's reason and the path.
public enum FileIO {
  /// The whole contents of the file at `path`.
  /// - Throws: `FileIOError` when the file cannot be opened or read, or is a directory.
  public static func readAll(path: String) throws(FileIOError) -> [UInt8] {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { throw .system(path, "cannot open for reading") }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw .system(path, "cannot stat") }
    guard (st.st_mode & S_IFMT) != S_IFDIR else { throw .plain(path, "is a directory, expected a file") }
    // One byte more than the size, so that reaching end of file needs no second buffer.
    var out = [UInt8](repeating: 0, count: max(Int(st.st_size), 0) + 1)
    var filled = 0
    while true {
      if filled == out.count { out.append(contentsOf: repeatElement(0, count: max(out.count, 1 << 16))) }
      let n = retryingOnEINTR {  // `out` is never empty, so it has a base address
        out.withUnsafeMutableBytes { raw in read(fd, raw.baseAddress! + filled, raw.count - filled) }
      }
      guard n >= 0 else { throw .system(path, "read failed") }
      if n == 0 { break }
      filled += n
    }
    out.removeSubrange(filled...)
    return out
  }

  /// Writes `bytes` to `path` atomically: writes a temporary file in the same directory, fsyncs
  /// it, renames it over `path` and fsyncs the directory. A reader sees either the old file or
  /// the complete new one, also after a crash.
  ///
  /// On any error before the rename, the old file at `path` is untouched and the temporary file
  /// is removed. (If only the final directory fsync fails, the new file is already in place;
  /// the error says so.)
  /// - Throws: `FileIOError` naming `path` and the failing step.
  public static func writeAtomically(_ bytes: [UInt8], to path: String) throws(FileIOError) {
    let file = try AtomicFileWriter(path: path)
    try file.write(bytes)
    try file.commit()
  }

  /// Writes all of `bytes` to `fd` (short writes continue; EINTR retries). `what` names the
  /// step in the error, e.g. "write to <temporary file>"; `path` is the file the user knows.
  /// - Throws: `FileIOError` with the system's reason (`No space left on device`, `File too
  ///   large` past a `ulimit -f` when SIGXFSZ is ignored, …).
  public static func writeAll(_ bytes: [UInt8], fd: Int32, path: String, what: String = "write") throws(FileIOError) {
    var written = 0
    try writeAll(bytes, fd: fd, path: path, what: what, written: &written)
  }

  /// As `writeAll(_:fd:path:what:)`, for `bytes[written...]`; `written` advances as bytes go
  /// out, so after an error it tells how many did (a caller can keep the rest for a retry).
  public static func writeAll(
    _ bytes: [UInt8], fd: Int32, path: String, what: String = "write", written: inout Int
  ) throws(FileIOError) {
    var done = written
    defer { written = done }
    try bytes.withUnsafeBytes { raw in
      Result { () throws(FileIOError) in try writeAll(raw, fd: fd, path: path, what: what, written: &done) }
    }.get()
  }

  /// As `writeAll(_:fd:path:what:)` for bytes in memory the caller owns.
  public static func writeAll(
    _ bytes: UnsafeRawBufferPointer, fd: Int32, path: String, what: String = "write"
  ) throws(FileIOError) {
    var written = 0
    try writeAll(bytes, fd: fd, path: path, what: what, written: &written)
  }

  /// The one write loop: `bytes[written...]` to `fd`, `written` advancing as bytes go out.
  public static func writeAll(
    _ bytes: UnsafeRawBufferPointer, fd: Int32, path: String, what: String = "write", written: inout Int
  ) throws(FileIOError) {
    guard let base = bytes.baseAddress else { return }
    while written < bytes.count {
      let at = written
      let n = retryingOnEINTR { write(fd, base + at, bytes.count - at) }
      guard n >= 0 else { throw .system(path, "\(what) failed") }
      if n == 0 { throw .plain(path, "\(what) made no progress") }
      written += n
    }
  }

  /// `call()` again while it fails with EINTR: its result, or −1 with `errno` set.
  private static func retryingOnEINTR(_ call: () -> Int) -> Int {
    while true {
      let n = call()
      if n >= 0 || errno != EINTR { return n }
    }
  }

  /// fsyncs the directory `dir` so that a rename in it survives a crash; 0 or the errno.
  static func fsyncDirectory(_ dir: String) -> Int32 {
    let fd = open(dir, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return errno }
    let rc = fsync(fd) == 0 ? 0 : errno
    close(fd)
    return rc
  }

  /// The directory of `path` (`.` when none), `path` up to and including its last `/` (empty
  /// when none), and its last component.
  static func splitPath(_ path: String) -> (dir: String, prefix: String, base: String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", "", path) }
    let base = String(path[path.index(after: slash)...])
    let prefix = String(path[...slash])
    let dir = slash == path.startIndex ? "/" : String(path[..<slash])
    return (dir, prefix, base)
  }
}
