#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A file written in pieces and then put in place atomically: the bytes go to a temporary file
/// `.<name>.tmp-<pid>-<random>` in the same directory; `commit()` fsyncs it, renames it over
/// the path and fsyncs the directory. A reader sees either the old file or the complete new
/// one, also after a crash. Until `commit()` succeeds the old file is untouched, and a writer
/// released without committing (or after a failed commit) removes its temporary file.
public final class AtomicFileWriter {
  /// The file the user knows (the rename's target).
  public let path: String
  /// The temporary file written until `commit()`.
  public let temporaryPath: String
  private let directory: String
  private var fd: Int32
  private var renamed = false

  /// Creates the temporary file beside `path`.
  /// - Throws: `FileIOError` naming `path` when `path` names a directory or the temporary file
  ///   cannot be created.
  public init(path: String) throws(FileIOError) {
    let (dir, prefix, base) = FileIO.splitPath(path)
    guard !base.isEmpty, base != ".", base != ".." else {
      throw .plain(path, "expected a file path, not a directory")
    }
    let suffix = String(UInt64.random(in: 0...UInt64.max), radix: 16)
    let tmp = prefix + "." + base + ".tmp-\(getpid())-\(suffix)"
    let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode_t(0o644))
    guard fd >= 0 else { throw .system(path, "cannot create temporary file \(tmp)") }
    self.path = path
    self.temporaryPath = tmp
    self.directory = dir
    self.fd = fd
  }

  deinit {
    if fd >= 0 { close(fd) }
    if !renamed { unlink(temporaryPath) }
  }

  /// Appends `bytes` to the temporary file.
  /// - Throws: `FileIOError` with the system's reason (`No space left on device`, …).
  public func write(_ bytes: UnsafeRawBufferPointer) throws(FileIOError) {
    guard fd >= 0 else { throw .plain(path, "write after commit") }
    try FileIO.writeAll(bytes, fd: fd, path: path, what: "write to \(temporaryPath)")
  }

  /// Appends `bytes` to the temporary file.
  public func write(_ bytes: [UInt8]) throws(FileIOError) {
    try bytes.withUnsafeBytes { raw in Result { () throws(FileIOError) in try write(raw) } }.get()
  }

  /// fsyncs the temporary file, renames it over `path` and fsyncs the directory. (If only the
  /// final directory fsync fails, the new file is already in place; the error says so.)
  public func commit() throws(FileIOError) {
    guard fd >= 0 else { throw .plain(path, "commit after commit") }
    guard fsync(fd) == 0 else { throw .system(path, "fsync of \(temporaryPath) failed") }
    let closing = fd
    fd = -1
    guard close(closing) == 0 else { throw .system(path, "close of \(temporaryPath) failed") }
    guard rename(temporaryPath, path) == 0 else { throw .system(path, "rename of \(temporaryPath) over it failed") }
    renamed = true
    let rc = FileIO.fsyncDirectory(directory)
    // Some file systems cannot fsync directories (EINVAL); the rename is then as durable as it gets.
    if rc != 0 && rc != EINVAL {
      let reason = String(cString: strerror(rc))
      throw FileIOError(
        path: path, detail: "new contents in place, but fsync of directory \(directory) failed: \(reason)",
        reason: reason)
    }
  }
}
