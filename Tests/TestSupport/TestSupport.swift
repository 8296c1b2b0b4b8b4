import Foundation

/// Helpers shared by the test targets that run programs: the package root, where MNIST is, the
/// built `vae-dist` binary, and a subprocess runner.
public enum TestPaths {
  /// The package root (this file is Tests/TestSupport/TestSupport.swift).
  public static let packageRoot: String = {
    var url = URL(fileURLWithPath: #filePath)
    for _ in 0..<3 { url.deleteLastPathComponent() }
    return url.path
  }()

  /// Data directories that may hold `mnist/`, in order: `<package>/data` (scripts/test fetches
  /// it there), `$VAE_DIST_DATA`, and the shared copy beside the checkout.
  public static var dataDirectoryCandidates: [String] {
    var candidates = [packageRoot + "/data"]
    if let env = ProcessInfo.processInfo.environment["VAE_DIST_DATA"], !env.isEmpty { candidates.append(env) }
    candidates.append(packageRoot + "/../shared/data")
    return candidates
  }

  /// The first candidate with an `mnist/` directory.
  public static var mnistDataDirectory: String? {
    dataDirectoryCandidates.first {
      var isDir: ObjCBool = false
      return FileManager.default.fileExists(atPath: $0 + "/mnist", isDirectory: &isDir) && isDir.boolValue
    }
  }
}

/// The `vae-dist` executable built beside the test bundle (`.build/<config>/vae-dist`), or
/// `$VAE_DIST_BIN`.
public enum VAEDistBinary {
  public static let path: String? = {
    let fm = FileManager.default
    func isExecutableFile(_ p: String) -> Bool {
      var isDir: ObjCBool = false
      return fm.fileExists(atPath: p, isDirectory: &isDir) && !isDir.boolValue && fm.isExecutableFile(atPath: p)
    }
    if let env = ProcessInfo.processInfo.environment["VAE_DIST_BIN"], !env.isEmpty {
      return isExecutableFile(env) ? env : nil
    }
    var dirs: [URL] = []
    // Linux: Bundle.main is the directory holding the test runner (…/debug/); macOS: the xctest
    // bundle sits in …/debug/ too.
    dirs.append(Bundle.main.bundleURL)
    dirs.append(Bundle.main.bundleURL.deletingLastPathComponent())
    for b in Bundle.allBundles where b.bundlePath.hasSuffix(".xctest") {
      dirs.append(b.bundleURL.deletingLastPathComponent())
    }
    // The runner itself (…/debug/vae-distPackageTests.xctest, or …/Contents/MacOS/… on macOS).
    var u = URL(fileURLWithPath: CommandLine.arguments.first ?? "").standardizedFileURL
    for _ in 0..<4 {
      u.deleteLastPathComponent()
      dirs.append(u)
    }
    for d in dirs {
      let candidate = d.appendingPathComponent("vae-dist").path
      if isExecutableFile(candidate) { return candidate }
    }
    return nil
  }()

  /// Another executable of the package built beside `vae-dist` (e.g. a test program).
  public static func sibling(_ name: String) -> String? {
    guard let path else { return nil }
    let p = URL(fileURLWithPath: path).deletingLastPathComponent().appendingPathComponent(name).path
    return FileManager.default.isExecutableFile(atPath: p) ? p : nil
  }

  /// The release build of `vae-dist` (for tests of optimised-code properties): $VAE_DIST_RELEASE_BIN,
  /// else `release/vae-dist` beside the debug build directory, else `<package>/.build/release/vae-dist`.
  public static var releasePath: String? {
    let fm = FileManager.default
    if let env = ProcessInfo.processInfo.environment["VAE_DIST_RELEASE_BIN"], !env.isEmpty {
      return fm.isExecutableFile(atPath: env) ? env : nil
    }
    var candidates: [String] = []
    if let debug = path {
      let dir = URL(fileURLWithPath: debug).resolvingSymlinksInPath().deletingLastPathComponent()
      candidates.append(dir.deletingLastPathComponent().appendingPathComponent("release/vae-dist").path)
    }
    candidates.append(TestPaths.packageRoot + "/.build/release/vae-dist")
    return candidates.first { fm.isExecutableFile(atPath: $0) }
  }

  public static var notFoundMessage: String {
    "vae-dist executable not found next to the test bundle (looked beside \(Bundle.main.bundlePath) and "
      + "\(CommandLine.arguments.first ?? "?")); build it first (swift build) or set VAE_DIST_BIN"
  }
}

/// Runs a program to completion; stdout and stderr go through temporary files (no pipe
/// deadlock however much a child prints).
public enum Subprocess {
  public struct Result {
    public var status: Int32
    public var stdout: String
    public var stderr: String
    public var seconds: Double
    public var stderrLines: [Substring] { stderr.split(separator: "\n", omittingEmptySubsequences: true) }
  }

  /// `environment` adds or overrides variables of this process's environment; `removing` drops some.
  public static func run(
    _ argv: [String], environment: [String: String] = [:], removing: [String] = [], cwd: String? = nil
  ) throws -> Result {
    let tmp = NSTemporaryDirectory() + "vae-dist-sub-" + UUID().uuidString
    let outPath = tmp + ".out", errPath = tmp + ".err"
    FileManager.default.createFile(atPath: outPath, contents: nil)
    FileManager.default.createFile(atPath: errPath, contents: nil)
    defer {
      try? FileManager.default.removeItem(atPath: outPath)
      try? FileManager.default.removeItem(atPath: errPath)
    }
    let p = Process()
    p.executableURL = URL(fileURLWithPath: argv[0])
    p.arguments = Array(argv.dropFirst())
    var env = ProcessInfo.processInfo.environment
    for k in removing { env[k] = nil }
    for (k, v) in environment { env[k] = v }
    p.environment = env
    if let cwd { p.currentDirectoryURL = URL(fileURLWithPath: cwd) }
    let out = try FileHandle(forWritingTo: URL(fileURLWithPath: outPath))
    let err = try FileHandle(forWritingTo: URL(fileURLWithPath: errPath))
    p.standardOutput = out
    p.standardError = err
    p.standardInput = FileHandle.nullDevice
    let start = Date()
    try p.run()
    p.waitUntilExit()
    let seconds = Date().timeIntervalSince(start)
    try? out.close()
    try? err.close()
    return Result(
      status: p.terminationStatus,
      stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
      stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "", seconds: seconds)
  }

  /// The Python the tests use: $VAE_DIST_PYTHON (scripts/test sets it to the project's venv),
  /// else python3 on the PATH.
  public static var pythonCommand: [String] {
    if let p = ProcessInfo.processInfo.environment["VAE_DIST_PYTHON"], !p.isEmpty { return [p] }
    return ["/usr/bin/env", "python3"]
  }

  /// `python -c script args…` with `pythonCommand`.
  public static func python(_ script: String, _ args: [String]) throws -> Result {
    try run(pythonCommand + ["-c", script] + args)
  }
}

/// A small tmpfs for disk-full tests (needs root and mount rights; `nil` with the reason where
/// they are missing, e.g. an unprivileged container).
public final class SmallDisk {
  public let path: String
  private init(path: String) { self.path = path }

  public static func mount(megabytes: Int, at path: String) -> (disk: SmallDisk?, reason: String) {
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    guard let r = try? Subprocess.run(["/bin/mount", "-t", "tmpfs", "-o", "size=\(megabytes)m", "tmpfs", path]) else {
      return (nil, "cannot run /bin/mount")
    }
    guard r.status == 0 else { return (nil, "cannot mount a tmpfs: \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))") }
    return (SmallDisk(path: path), "")
  }

  deinit { _ = try? Subprocess.run(["/bin/umount", "-l", path]) }
}
