/// What is wrong with a `.npy` file, or why one could not be read or written. Every
/// `description` is one line that starts with the file's path and says what was expected;
/// refusals of a dtype or layout say how to save the array so that it is accepted.
public enum NPYError: Error, CustomStringConvertible, Equatable, Sendable {
  /// The file could not be opened, read, mapped or written (`detail`: the step and the system's
  /// reason, as in `FileIOError.detail`).
  case io(file: String, detail: String)
  /// The path names something other than a regular file (`kind`: "a directory", "a FIFO", …).
  case notAFile(file: String, kind: String)
  /// The file has no bytes at all.
  case empty(file: String)
  /// The file does not start with the magic `\x93NUMPY` (`found`: its first bytes).
  case badMagic(file: String, found: [UInt8])
  /// The format version after the magic is not 1.0, 2.0 or 3.0.
  case unsupportedVersion(file: String, major: UInt8, minor: UInt8)
  /// The `section` ("header" or "data") starting at byte `offset` needs `expected` bytes but
  /// only `actual` are present.
  case truncated(file: String, section: String, offset: Int, expected: Int, actual: Int)
  /// The data ends at byte `offset` but `extra` more bytes follow.
  case trailingBytes(file: String, offset: Int, extra: Int)
  /// The header dictionary is malformed at byte `offset` of the file (`detail`: what was found
  /// and what was expected).
  case badHeader(file: String, offset: Int, detail: String)
  /// A well-formed header describes an array this reader does not take (a dtype, Fortran
  /// order, a misaligned data offset); `detail` says what and how to save it instead.
  case unsupported(file: String, detail: String)
  /// The shape (`shape`, as Python writes it) is not one of `[N, ...]` rows (`detail`: why).
  case badShape(file: String, shape: String, detail: String)
  /// The file changed (size, modification time or identity) after it was opened and mapped.
  case changed(file: String, detail: String)
  /// A writer was given the wrong amount of data (`detail`: what was given and expected).
  case badWrite(file: String, detail: String)

  public var description: String {
    switch self {
    case .io(let file, let detail):
      return "\(oneLine(file)): \(oneLine(detail))"
    case .notAFile(let file, let kind):
      return "\(oneLine(file)): is \(kind), expected a .npy file"
    case .empty(let file):
      return "\(oneLine(file)): file is empty, expected a .npy file (it starts with \\x93NUMPY)"
    case .badMagic(let file, let found):
      return "\(oneLine(file)): not a .npy file: expected the magic \\x93NUMPY at byte offset 0, found "
        + NPY.escaped(found)
    case .unsupportedVersion(let file, let major, let minor):
      return "\(oneLine(file)): .npy format version \(major).\(minor) is not supported (expected 1.0, 2.0 or 3.0)"
    case .truncated(let file, let section, let offset, let expected, let actual):
      return "\(oneLine(file)): truncated \(section) at byte offset \(offset): expected \(expected) bytes, "
        + "found \(actual)"
    case .trailingBytes(let file, let offset, let extra):
      return "\(oneLine(file)): \(extra) unexpected trailing byte(s) after the data, which ends at byte offset \(offset)"
    case .badHeader(let file, let offset, let detail):
      return "\(oneLine(file)): bad .npy header at byte offset \(offset): \(oneLine(detail))"
    case .unsupported(let file, let detail):
      return "\(oneLine(file)): \(oneLine(detail))"
    case .badShape(let file, let shape, let detail):
      return "\(oneLine(file)): shape \(oneLine(shape)) \(oneLine(detail))"
    case .changed(let file, let detail):
      return "\(oneLine(file)): the file changed while it was in use: \(oneLine(detail))"
    case .badWrite(let file, let detail):
      return "\(oneLine(file)): \(oneLine(detail))"
    }
  }
}
