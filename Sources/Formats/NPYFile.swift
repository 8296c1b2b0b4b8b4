#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A `.npy` file mapped read-only into memory (`PROT_READ`, `MAP_SHARED`): the pages are the
/// page cache's, shared by every process that maps the file, never copied. The header is read
/// and checked against the file's size before anything is mapped.
///
/// A mapping does not protect against the file changing: a file truncated while mapped makes
/// reads past its new end fault (SIGBUS), and one rewritten in place changes the data seen.
/// `checkUnchanged()` detects both after the fact, and `mappedBytes` is the range a process's
/// SIGBUS handler can compare a fault address with to name the file. (A file replaced by a
/// rename, as atomic writers do, leaves the mapping on the old contents.)
public final class NPYFile: @unchecked Sendable {  // read-only memory, immutable after init
  /// The path as given.
  public let path: String
  public let header: NPY.Header
  /// The whole file as mapped.
  public let mappedBytes: UnsafeRawBufferPointer
  private let fd: Int32
  private let identity: FileIdentity

  /// Opens, checks and maps the file at `path`.
  /// - Throws: `NPYError` naming `path`: it cannot be opened or read; it is a directory, a FIFO
  ///   or another non-regular file; its header is bad or refused; its size disagrees with the
  ///   header; or it cannot be mapped.
  public init(path: String) throws(NPYError) {
    // O_NONBLOCK: opening a FIFO without a writer would otherwise wait forever.
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
    guard fd >= 0 else { throw .io(file: path, detail: FileIOError.system(path, "cannot open for reading").detail) }
    let identity: FileIdentity
    let header: NPY.Header
    var mapped: UnsafeRawBufferPointer? = nil
    do {
      identity = try FileIdentity(fd: fd, path: path)
      let prefix = try Self.readPrefix(fd: fd, count: min(identity.size, NPY.maxPrefixLength), path: path)
      header = try NPY.parseHeader(prefix, fileSize: identity.size, file: path)
      mapped = try Self.map(fd: fd, size: identity.size, path: path)
      try Self.check(fd: fd, path: path, against: identity)
    } catch {
      if let mapped { munmap(UnsafeMutableRawPointer(mutating: mapped.baseAddress!), mapped.count) }
      close(fd)
      throw error
    }
    self.path = path
    self.header = header
    self.fd = fd
    self.identity = identity
    self.mappedBytes = mapped!
  }

  deinit {
    munmap(UnsafeMutableRawPointer(mutating: mappedBytes.baseAddress!), mappedBytes.count)
    close(fd)
  }

  /// The array's data: `header.byteCount` bytes, C order.
  public var data: UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(rebasing: mappedBytes[header.dataOffset..<(header.dataOffset + header.byteCount)])
  }

  /// The data of a `uint8` file, or nil for another dtype.
  public var uint8Values: UnsafeBufferPointer<UInt8>? {
    header.dtype == .uint8 ? data.bindMemory(to: UInt8.self) : nil
  }

  #if _endian(little)
  /// The data of a `float32` file (little-endian, as this host), or nil for another dtype. The
  /// header check guarantees 4-byte alignment.
  public var float32Values: UnsafeBufferPointer<Float>? {
    header.dtype == .float32 ? data.bindMemory(to: Float.self) : nil
  }
  #endif

  /// The CRC-32 (`CRC32`, zlib's) of the data bytes, read in place.
  public func dataChecksum() -> UInt32 { CRC32.checksum(data) }

  /// Throws when the file's size, modification time or identity (device and inode of the path)
  /// is no longer what it was when it was opened.
  /// - Throws: `NPYError.changed` naming the file and what changed.
  public func checkUnchanged() throws(NPYError) { try Self.check(fd: fd, path: path, against: identity) }

  private static func check(fd: Int32, path: String, against identity: FileIdentity) throws(NPYError) {
    let now: FileIdentity
    do {
      now = try FileIdentity(fd: fd, path: path)
    } catch {
      throw .changed(file: path, detail: "it can no longer be inspected (fstat failed)")
    }
    if now.size != identity.size {
      throw .changed(file: path, detail: "its size went from \(identity.size) to \(now.size) bytes")
    }
    if now.modified != identity.modified { throw .changed(file: path, detail: "it was modified") }
    var st = stat()
    if stat(path, &st) != 0 || UInt64(st.st_dev) != identity.device || UInt64(st.st_ino) != identity.inode {
      throw .changed(file: path, detail: "the path now names another file (renamed, replaced or removed)")
    }
  }

  /// The first `count` bytes (fewer only if the file shrank meanwhile, which is an error).
  private static func readPrefix(fd: Int32, count: Int, path: String) throws(NPYError) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: count)
    var filled = 0
    while filled < count {
      let n = out.withUnsafeMutableBytes { pread(fd, $0.baseAddress! + filled, count - filled, off_t(filled)) }
      if n < 0 && errno == EINTR { continue }
      guard n >= 0 else { throw .io(file: path, detail: FileIOError.system(path, "read failed").detail) }
      guard n > 0 else { throw .changed(file: path, detail: "it ended at byte \(filled) while being read") }
      filled += n
    }
    return out
  }

  private static func map(fd: Int32, size: Int, path: String) throws(NPYError) -> UnsafeRawBufferPointer {
    let p = mmap(nil, size, PROT_READ, MAP_SHARED, fd, 0)
    guard let p, p != MAP_FAILED else {
      throw .io(file: path, detail: FileIOError.system(path, "cannot map \(size) bytes").detail)
    }
    return UnsafeRawBufferPointer(start: p, count: size)
  }
}

/// What identifies an open file's contents cheaply: device, inode, size, modification time.
private struct FileIdentity: Equatable {
  let device: UInt64
  let inode: UInt64
  let size: Int
  let modified: Int64  // nanoseconds

  /// `fd`'s identity; a non-regular file is refused here.
  init(fd: Int32, path: String) throws(NPYError) {
    var st = stat()
    guard fstat(fd, &st) == 0 else { throw .io(file: path, detail: FileIOError.system(path, "cannot stat").detail) }
    let type = st.st_mode & S_IFMT
    guard type == S_IFREG else { throw .notAFile(file: path, kind: Self.describe(type)) }
    device = UInt64(st.st_dev)
    inode = UInt64(st.st_ino)
    size = Int(st.st_size)
    #if canImport(Darwin)
    modified = Int64(st.st_mtimespec.tv_sec) * 1_000_000_000 + Int64(st.st_mtimespec.tv_nsec)
    #else
    modified = Int64(st.st_mtim.tv_sec) * 1_000_000_000 + Int64(st.st_mtim.tv_nsec)
    #endif
  }

  static func describe(_ type: mode_t) -> String {
    switch type {
    case S_IFDIR: return "a directory"
    case S_IFIFO: return "a FIFO"
    case S_IFCHR: return "a character device"
    case S_IFBLK: return "a block device"
    case S_IFSOCK: return "a socket"
    default: return "not a regular file"
    }
  }
}
