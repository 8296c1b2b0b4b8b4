import Foundation

/// Shared by the fuzz targets (scripts/fuzz): libFuzzer's entry point, the checks every target
/// makes of a parser's error, and the corpus replayer that a normal build runs instead.
public enum FuzzCheck {
  /// libFuzzer's input as bytes for `body`; what each target's `LLVMFuzzerTestOneInput` returns.
  public static func run(_ data: UnsafePointer<UInt8>, _ size: Int, _ body: ([UInt8]) -> Void) -> CInt {
    body(Array(UnsafeBufferPointer(start: data, count: size)))
    return 0
  }

  /// The value `parse` returns, or nil when it throws an error that describes itself in one
  /// non-empty line naming `file`, as the parsers promise for bad input; any other error stops
  /// the process (libFuzzer reports it as a crash).
  public static func parsed<T>(naming file: String, _ parse: () throws -> T) -> T? {
    do {
      return try parse()
    } catch {
      let text = "\(error)"
      precondition(!text.isEmpty, "error with an empty description: \(type(of: error))")
      precondition(!text.contains("\n") && !text.contains("\r"), "error is not one line: \(text)")
      precondition(text.contains(file), "error does not name the file \(file): \(text)")
      return nil
    }
  }
}

/// The replayer's entry point: runs every file given on the command line (directories: every
/// regular file below them, in sorted order) through the target's fuzz function, once each.
public enum CorpusReplay {
  /// Parses `CommandLine.arguments`, runs `body` on each input and exits: 0 after printing
  /// "<name>: ran N inputs", 2 on a usage error or an unreadable path. A violated property
  /// stops the process inside `body`, as under libFuzzer.
  public static func main(_ name: String, _ body: ([UInt8]) -> Void) -> Never {
    var verbose = false
    var paths: [String] = []
    for arg in CommandLine.arguments.dropFirst() {
      switch arg {
      case "-h", "--help":
        print("""
          Usage: \(name) [--verbose] FILE|DIR…
          Runs each input file (directories: every file below them) through the fuzz target's
          checks once, as libFuzzer would, and prints how many ran. Built by a plain `swift build`;
          scripts/fuzz builds the libFuzzer version of this target.
          """)
        exit(0)
      case "-v", "--verbose": verbose = true
      default: paths.append(arg)
      }
    }
    guard !paths.isEmpty else { fail(name, "no inputs given (try --help)") }
    var files: [String] = []
    for p in paths { files += expand(p, name: name) }
    for f in files {
      guard let data = FileManager.default.contents(atPath: f) else { fail(name, "\(f): cannot read") }
      if verbose { FileHandle.standardError.write(Data("\(f)\n".utf8)) }
      body([UInt8](data))
    }
    print("\(name): ran \(files.count) inputs")
    exit(0)
  }

  /// A file, or every regular file below a directory (sorted, hidden files skipped).
  private static func expand(_ path: String, name: String) -> [String] {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else { fail(name, "\(path): no such file") }
    guard isDir.boolValue else { return [path] }
    guard let e = FileManager.default.enumerator(atPath: path) else { fail(name, "\(path): cannot list") }
    var out: [String] = []
    while let rel = e.nextObject() as? String {
      let full = (path as NSString).appendingPathComponent(rel)
      var sub: ObjCBool = false
      if (rel as NSString).lastPathComponent.hasPrefix(".") { continue }
      if FileManager.default.fileExists(atPath: full, isDirectory: &sub), !sub.boolValue { out.append(full) }
    }
    return out.sorted()
  }

  private static func fail(_ name: String, _ message: String) -> Never {
    FileHandle.standardError.write(Data("\(name): error: \(message)\n".utf8))
    exit(2)
  }
}
