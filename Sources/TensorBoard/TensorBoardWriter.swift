import Formats
import SwiftProtobuf

#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a TensorBoard event file the way `torch.utils.tensorboard.SummaryWriter` does: in
/// `directory`, a new file `events.out.tfevents.<unix seconds, 10 digits>.<hostname>` of TFRecord
/// records (`Formats.TFRecord`), the first an `Event` with `file_version: "brain.Event:2"`, then
/// one `Event` per scalar or image, holding a `Summary` with one value.
///
/// Every writer starts a new file and never touches existing ones, so a resumed run adds a file
/// beside the old ones and TensorBoard shows both (it reads a directory's event files in name
/// order). If the name is taken (two writers in the same second), `.1`, `.2`, … is appended.
///
/// `scalar` and `image` only encode and buffer; `flush` writes the buffered records to the file
/// and `close` flushes and closes it. Errors are `FileIOError`s, one line naming the file.
/// Not thread-safe: one writer per thread (rank 0 of a run).
public final class TensorBoardWriter {
  /// The events file this writer appends to.
  public let path: String

  private var fd: Int32
  private var pending: [UInt8] = []

  /// Creates `directory` (and its parents) if needed and a new events file in it, whose first
  /// record is the file-version event.
  /// - Throws: `FileIOError` naming the directory or file that could not be created or written.
  public init(directory: String) throws {
    try Self.makeDirectories(directory)
    let now = Self.now()
    let base = (directory.hasSuffix("/") ? directory : directory + "/")
      + "events.out.tfevents." + Self.padded(Int(now), 10) + "." + Self.hostname()
    var candidate = base
    var n = 0
    while true {
      let fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, mode_t(0o644))
      if fd >= 0 {
        self.fd = fd
        self.path = candidate
        break
      }
      let code = errno
      guard code == EEXIST, n < 1000 else { throw FileIOError.system(candidate, code: code, "cannot create events file") }
      n += 1
      candidate = base + ".\(n)"
    }
    var event = Tensorflow_Event()
    event.wallTime = now
    event.fileVersion = "brain.Event:2"
    append(event)
    try flush()
  }

  /// A writer dropped without `close()` still writes what it buffered (errors cannot be reported
  /// here: call `close()` to see them).
  deinit {
    guard fd >= 0 else { return }
    try? flush()
    _ = closeFile(fd)
  }

  /// Records a scalar (TensorBoard's "Scalars" tab), stored as a float32 `simple_value` like
  /// `SummaryWriter.add_scalar`. `wallTime` is seconds since the Unix epoch (see `now()`).
  public func scalar(_ tag: String, _ value: Double, step: Int, wallTime: Double) {
    var v = Tensorflow_Summary.Value()
    v.tag = tag
    v.simpleValue = Float(value)
    append(summary: v, step: step, wallTime: wallTime)
  }

  /// Records an image (TensorBoard's "Images" tab) given as PNG bytes, such as those of
  /// `Formats.PNG.encodeGray` / `encodeRGB`. `channels` is 1 (grey), 2 (grey + alpha), 3 (RGB)
  /// or 4 (RGBA); `width`, `height` and `channels` must describe the PNG (TensorBoard shows the
  /// PNG and reports these numbers).
  public func image(
    _ tag: String, png: [UInt8], width: Int, height: Int, channels: Int, step: Int, wallTime: Double
  ) {
    precondition((1...4).contains(channels), "TensorBoardWriter.image: channels must be 1...4, not \(channels)")
    precondition(
      width > 0 && height > 0 && width <= Int(Int32.max) && height <= Int(Int32.max),
      "TensorBoardWriter.image: bad size \(width)x\(height)")
    var image = Tensorflow_Summary.Image()
    image.width = Int32(width)
    image.height = Int32(height)
    image.colorspace = Int32(channels)
    image.encodedImageString = Data(png)
    var v = Tensorflow_Summary.Value()
    v.tag = tag
    v.image = image
    append(summary: v, step: step, wallTime: wallTime)
  }

  /// Writes the records buffered since the last flush to the file (no fsync: like TensorBoard's
  /// own writers, a crash may lose the last records but leaves the earlier ones readable).
  /// - Throws: `FileIOError` naming the file; the unwritten records stay buffered.
  public func flush() throws {
    guard fd >= 0 else {
      guard pending.isEmpty else {
        throw FileIOError.plain(path, "write after close")
      }
      return
    }
    var written = 0
    defer { pending.removeFirst(written) }
    try FileIO.writeAll(pending, fd: fd, path: path, written: &written)
  }

  /// Flushes and closes the file. Closing twice is allowed; records after `close` are an error
  /// at the next `flush`/`close`.
  /// - Throws: `FileIOError` naming the file.
  public func close() throws {
    try flush()
    guard fd >= 0 else { return }
    let rc = closeFile(fd)
    fd = -1
    guard rc == 0 else { throw FileIOError.system(path, "close failed") }
  }

  /// The current time in seconds since the Unix epoch, with microseconds, as `time.time()`.
  public static func now() -> Double {
    var tv = timeval()
    gettimeofday(&tv, nil)
    return Double(tv.tv_sec) + Double(tv.tv_usec) / 1e6
  }

  // MARK: Encoding

  private func append(summary value: Tensorflow_Summary.Value, step: Int, wallTime: Double) {
    var event = Tensorflow_Event()
    event.wallTime = wallTime
    event.step = Int64(step)
    event.summary.value = [value]
    append(event)
  }

  private func append(_ event: Tensorflow_Event) {
    // Serializing a message with only known, set fields cannot fail.
    let data: [UInt8]
    do { data = try event.serializedBytes() } catch { fatalError("TensorBoardWriter: cannot encode an Event: \(error)") }
    TFRecord.append(data, to: &pending)
  }

  // MARK: Files

  /// `mkdir -p directory`.
  private static func makeDirectories(_ directory: String) throws {
    guard !directory.isEmpty else {
      throw FileIOError.plain(directory, "empty directory name")
    }
    var prefix = directory.hasPrefix("/") ? "/" : ""
    for part in directory.split(separator: "/") {
      prefix += part
      if mkdir(prefix, 0o755) != 0 {
        let code = errno
        var st = stat()
        guard code == EEXIST, stat(prefix, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR else {
          throw FileIOError.system(prefix, code: code == EEXIST ? ENOTDIR : code, "cannot create directory")
        }
      }
      prefix += "/"
    }
  }

  private static func hostname() -> String {
    var buf = [CChar](repeating: 0, count: 256)
    guard gethostname(&buf, buf.count - 1) == 0 else { return "localhost" }
    let bytes = buf.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) == UInt8(ascii: "/") ? UInt8(ascii: "_") : UInt8(bitPattern: $0) }
    let name = String(decoding: bytes, as: UTF8.self)
    return name.isEmpty ? "localhost" : name
  }

  private static func padded(_ v: Int, _ width: Int) -> String {
    let s = String(v)
    return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
  }
}

/// POSIX `close`, which the writer's own `close()` hides inside the class.
private func closeFile(_ fd: Int32) -> Int32 { close(fd) }
