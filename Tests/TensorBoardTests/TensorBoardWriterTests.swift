import Formats
import Foundation
import SwiftProtobuf
import TestSupport
import XCTest

@testable import TensorBoard

/// `TensorBoardWriter`: the files it writes parsed back in Swift (records, CRCs, Events), and read
/// by TensorBoard's own `EventAccumulator` through Python when a Python with tensorboard exists.
final class TensorBoardWriterTests: XCTestCase {
  private var tmp = ""

  override func setUpWithError() throws {
    tmp = NSTemporaryDirectory() + "vae-dist-tensorboard-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: tmp, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: tmp)
  }

  /// What the tests log: scalars under several tags (a TensorBoard-style "group/name" one, an
  /// odd value or two) and two images.
  struct Scalar: Equatable {
    var tag: String
    var step: Int
    var value: Double
    var wallTime: Double
  }

  private static let scalars: [Scalar] = {
    var out: [Scalar] = []
    let t0 = 1_700_000_000.25
    for step in stride(from: 0, through: 300, by: 100) {
      let s = Double(step)
      out.append(Scalar(tag: "train/loss", step: step, value: 200 / (1 + s / 100), wallTime: t0 + s))
      out.append(Scalar(tag: "train/kl", step: step, value: 0.1 + 1e-3 * s, wallTime: t0 + s + 0.5))
    }
    out.append(Scalar(tag: "eval/test_elbo", step: 300, value: -123.456789, wallTime: t0 + 301))
    out.append(Scalar(tag: "größe μ", step: 7, value: 1e-8, wallTime: t0 + 302))
    out.append(Scalar(tag: "big", step: 1 << 40, value: 3.4e38, wallTime: t0 + 303))
    return out
  }()

  /// A 6 × 4 grey PNG and a 3 × 2 RGB PNG.
  private static let grey = (png: PNG.encodeGray(width: 6, height: 4, pixels: (0..<24).map { UInt8($0 * 10) }), w: 6, h: 4)
  private static let rgb = (png: PNG.encodeRGB(width: 3, height: 2, pixels: (0..<18).map { UInt8($0 * 14) }), w: 3, h: 2)

  /// Writes every scalar and both images with one writer into `dir`, closes it, returns its file.
  @discardableResult
  private func writeRun(_ dir: String, scalars: [Scalar] = scalars, images: Bool = true) throws -> String {
    let w = try TensorBoardWriter(directory: dir)
    for s in scalars { w.scalar(s.tag, s.value, step: s.step, wallTime: s.wallTime) }
    if images {
      w.image("samples", png: Self.grey.png, width: Self.grey.w, height: Self.grey.h, channels: 1, step: 300, wallTime: 1_700_000_400)
      w.image("recon/rgb", png: Self.rgb.png, width: Self.rgb.w, height: Self.rgb.h, channels: 3, step: 5, wallTime: 1_700_000_401)
    }
    try w.flush()
    try w.close()
    return w.path
  }

  // MARK: Pure Swift: records, CRCs and Events parsed back

  func testFileNameIsSummaryWritersPattern() throws {
    let before = Int(Date().timeIntervalSince1970)
    let path = try writeRun(tmp + "/run", images: false)
    let after = Int(Date().timeIntervalSince1970)
    let name = URL(fileURLWithPath: path).lastPathComponent
    let parts = name.split(separator: ".", maxSplits: 4).map(String.init)
    XCTAssertEqual(Array(parts.prefix(3)), ["events", "out", "tfevents"], name)
    XCTAssertEqual(parts[3].count, 10, name)
    let seconds = try XCTUnwrap(Int(parts[3]), name)
    XCTAssertTrue((before...after).contains(seconds), name)
    var host = [CChar](repeating: 0, count: 256)
    XCTAssertEqual(gethostname(&host, 255), 0)
    XCTAssertEqual(parts[4], String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), name)
    XCTAssertEqual(URL(fileURLWithPath: path).deletingLastPathComponent().path, URL(fileURLWithPath: tmp + "/run").path)
  }

  func testRecordsDecodeToTheEventsWritten() throws {
    let start = TensorBoardWriter.now()
    let path = try writeRun(tmp + "/a/b/c")  // parents are created
    let bytes = try FileIO.readAll(path: path)

    // The first record by hand: length, masked CRC of the length, data, masked CRC of the data.
    let length = bytes[0..<8].enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    let le32 = { (at: Int) in bytes[at..<at + 4].enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * $1.offset) } }
    XCTAssertEqual(le32(8), CRC32C.mask(CRC32C.checksum(bytes[0..<8])))
    XCTAssertEqual(le32(12 + length), CRC32C.mask(CRC32C.checksum(bytes[12..<12 + length])))

    let events = try TFRecord.records(in: bytes, path: path).map { try Tensorflow_Event(serializedBytes: $0) }
    XCTAssertEqual(events.count, 1 + Self.scalars.count + 2)
    let first = try XCTUnwrap(events.first)
    XCTAssertEqual(first.fileVersion, "brain.Event:2")
    XCTAssertEqual(first.step, 0)
    XCTAssertTrue(first.wallTime >= start - 1 && first.wallTime <= TensorBoardWriter.now() + 1, "\(first.wallTime)")

    for (s, e) in zip(Self.scalars, events.dropFirst()) {
      XCTAssertEqual(e.step, Int64(s.step))
      XCTAssertEqual(e.wallTime, s.wallTime)
      XCTAssertEqual(e.summary.value.count, 1)
      let v = try XCTUnwrap(e.summary.value.first)
      XCTAssertEqual(v.tag, s.tag)
      XCTAssertEqual(v.simpleValue, Float(s.value))
    }
    let images = events.suffix(2).map { ($0.step, $0.summary.value[0]) }
    XCTAssertEqual(images[0].0, 300)
    XCTAssertEqual(images[0].1.tag, "samples")
    XCTAssertEqual(images[0].1.image.width, 6)
    XCTAssertEqual(images[0].1.image.height, 4)
    XCTAssertEqual(images[0].1.image.colorspace, 1)
    XCTAssertEqual(Array(images[0].1.image.encodedImageString), Self.grey.png)
    XCTAssertEqual(images[1].1.tag, "recon/rgb")
    XCTAssertEqual(images[1].1.image.colorspace, 3)
    XCTAssertEqual(Array(images[1].1.image.encodedImageString), Self.rgb.png)
  }

  func testFlushWritesWhatIsBufferedAndCloseTwiceIsFine() throws {
    let w = try TensorBoardWriter(directory: tmp)
    // The file-version record is on disk as soon as the writer exists.
    XCTAssertEqual(try TFRecord.records(in: FileIO.readAll(path: w.path), path: w.path).count, 1)
    w.scalar("x", 1, step: 1, wallTime: 1)
    XCTAssertEqual(try TFRecord.records(in: FileIO.readAll(path: w.path), path: w.path).count, 1)
    try w.flush()
    XCTAssertEqual(try TFRecord.records(in: FileIO.readAll(path: w.path), path: w.path).count, 2)
    try w.close()
    try w.close()
    w.scalar("x", 2, step: 2, wallTime: 2)
    XCTAssertThrowsError(try w.flush()) { XCTAssertTrue("\($0)".hasPrefix(w.path + ": "), "\($0)") }
  }

  /// A flush that fails (here: the file's descriptor pointed at /dev/full) names the file and
  /// the system's reason, and keeps the records; once writes work again they all arrive.
  func testFailedFlushKeepsTheRecordsForTheNextOne() throws {
    let w = try TensorBoardWriter(directory: tmp)
    let fds = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd").compactMap(Int32.init)
    let fd = try XCTUnwrap(fds.first { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\($0)")) == w.path })
    let full = open("/dev/full", O_WRONLY)
    guard full >= 0 else { throw XCTSkip("no /dev/full") }
    XCTAssertEqual(dup2(full, fd), fd)
    close(full)
    w.scalar("x", 1, step: 1, wallTime: 1)
    w.scalar("x", 2, step: 2, wallTime: 2)
    XCTAssertThrowsError(try w.flush()) { error in
      XCTAssertEqual("\(error)", "\(w.path): I/O error: write failed: \(String(cString: strerror(ENOSPC))) (errno \(ENOSPC))")
    }
    let file = open(w.path, O_WRONLY | O_APPEND)
    XCTAssertEqual(dup2(file, fd), fd)
    close(file)
    try w.close()
    XCTAssertEqual(try TFRecord.records(in: FileIO.readAll(path: w.path), path: w.path).count, 3)
  }

  func testDroppedWriterWritesWhatItBuffered() throws {
    var path = ""
    do {
      let w = try TensorBoardWriter(directory: tmp)
      w.scalar("x", 1, step: 1, wallTime: 1)
      path = w.path
    }
    XCTAssertEqual(try TFRecord.records(in: FileIO.readAll(path: path), path: path).count, 2)
  }

  /// A resumed run: each writer adds its own file and leaves the others alone, also when both
  /// start within the same second (the second name gets a suffix).
  func testEachWriterAddsItsOwnFile() throws {
    let first = try writeRun(tmp, scalars: Array(Self.scalars.prefix(3)), images: false)
    let firstBytes = try FileIO.readAll(path: first)
    let second = try writeRun(tmp, scalars: Array(Self.scalars.dropFirst(3)), images: false)
    XCTAssertNotEqual(first, second)
    XCTAssertEqual(try FileIO.readAll(path: first), firstBytes)
    let files = try FileManager.default.contentsOfDirectory(atPath: tmp).filter { $0.contains("tfevents") }.sorted()
    XCTAssertEqual(files.count, 2)
    // TensorBoard reads a directory's files in name order: the first writer's file first.
    XCTAssertEqual(tmp + "/" + files[0], first)
  }

  func testErrorsAreOneLineNamingTheFile() throws {
    let file = tmp + "/not-a-directory"
    try Data([1]).write(to: URL(fileURLWithPath: file))
    for dir in [file, file + "/run"] {
      XCTAssertThrowsError(try TensorBoardWriter(directory: dir)) { error in
        let text = "\(error)"
        XCTAssertTrue(text.hasPrefix(file + ": "), text)
        XCTAssertFalse(text.contains("\n"), text)
      }
    }
    let readOnly = tmp + "/read-only"
    try FileManager.default.createDirectory(atPath: readOnly, withIntermediateDirectories: false)
    try FileManager.default.setAttributes([.posixPermissions: 0o555], ofItemAtPath: readOnly)
    defer { try? FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: readOnly) }
    if getuid() != 0 {  // root writes anyway
      XCTAssertThrowsError(try TensorBoardWriter(directory: readOnly)) { error in
        XCTAssertTrue("\(error)".hasPrefix(readOnly + "/events.out.tfevents."), "\(error)")
      }
    }
  }

  // MARK: TensorBoard's own reader

  /// The first of `VAE_DIST_PYTHON`, the project's .venv (scripts/test makes it) and python3 that can import
  /// tensorboard, or nil with what was tried.
  private static func pythonWithTensorBoard() -> (python: String?, tried: String) {
    var candidates: [String] = []
    if let p = ProcessInfo.processInfo.environment["VAE_DIST_PYTHON"], !p.isEmpty { candidates.append(p) }
    let venv = TestPaths.packageRoot + "/.venv/bin/python"
    if FileManager.default.isExecutableFile(atPath: venv) { candidates.append(venv) }
    candidates.append("python3")
    for c in candidates {
      let argv = c.contains("/") ? [c] : ["/usr/bin/env", c]
      if let r = try? Subprocess.run(argv + ["-c", "import tensorboard"]), r.status == 0 { return (c, "") }
    }
    return (nil, candidates.joined(separator: ", "))
  }

  /// Prints, as JSON, every scalar and image TensorBoard's EventAccumulator finds in a directory.
  private static let reader = #"""
    import json, sys
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    print(json.dumps({
        "scalars": [[t, e.step, e.value, e.wall_time] for t in tags["scalars"] for e in acc.Scalars(t)],
        "images": [[t, e.step, e.width, e.height, e.encoded_image_string.hex()]
                   for t in tags["images"] for e in acc.Images(t)],
    }))
    """#

  func testTensorBoardsEventAccumulatorReadsEveryScalarAndImage() throws {
    let (python, tried) = Self.pythonWithTensorBoard()
    guard let python else {
      throw XCTSkip("no Python with tensorboard (tried \(tried)); set VAE_DIST_PYTHON or pip install tensorboard")
    }
    // Two writers, as a resumed run has: TensorBoard must read both files.
    let dir = tmp + "/run"
    try writeRun(dir, scalars: Array(Self.scalars.prefix(4)), images: false)
    try writeRun(dir, scalars: Array(Self.scalars.dropFirst(4)))

    let argv = python.contains("/") ? [python] : ["/usr/bin/env", python]
    let r = try Subprocess.run(argv + ["-c", Self.reader, dir], environment: ["TF_CPP_MIN_LOG_LEVEL": "3"])
    XCTAssertEqual(r.status, 0, "EventAccumulator failed:\n\(r.stderr)")
    guard r.status == 0 else { return }
    let json = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: [[Any]]], "not JSON: \(r.stdout)")

    let read = try XCTUnwrap(json["scalars"]).map { row -> Scalar in
      Scalar(tag: row[0] as! String, step: (row[1] as! NSNumber).intValue, value: (row[2] as! NSNumber).doubleValue,
             wallTime: (row[3] as! NSNumber).doubleValue)
    }
    let key = { (s: Scalar) in "\(s.tag)@\(s.step)" }
    XCTAssertEqual(read.map(key).sorted(), Self.scalars.map(key).sorted())
    let byKey = Dictionary(uniqueKeysWithValues: read.map { (key($0), $0) })
    for s in Self.scalars {
      guard let got = byKey[key(s)] else { continue }
      XCTAssertEqual(Float(got.value), Float(s.value), "\(key(s))")  // stored as float32
      XCTAssertEqual(got.wallTime, s.wallTime, accuracy: 1e-6, "\(key(s))")
    }

    let images = try XCTUnwrap(json["images"]).map { row in
      (row[0] as! String, (row[1] as! NSNumber).intValue, (row[2] as! NSNumber).intValue,
       (row[3] as! NSNumber).intValue, row[4] as! String)
    }.sorted { $0.0 < $1.0 }
    XCTAssertEqual(images.count, 2)
    guard images.count == 2 else { return }
    XCTAssertEqual(images[0].0, "recon/rgb")
    XCTAssertEqual([images[0].1, images[0].2, images[0].3], [5, 3, 2])
    XCTAssertEqual(images[0].4, Self.hex(Self.rgb.png))
    XCTAssertEqual(images[1].0, "samples")
    XCTAssertEqual([images[1].1, images[1].2, images[1].3], [300, 6, 4])
    XCTAssertEqual(images[1].4, Self.hex(Self.grey.png))
  }

  private static func hex(_ bytes: [UInt8]) -> String {
    bytes.map { String(format: "%02x", $0) }.joined()
  }
}
