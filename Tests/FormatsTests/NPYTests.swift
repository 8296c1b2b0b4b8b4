import Foundation
import TestSupport
import XCTest

@testable import Formats

final class NPYTests: XCTestCase {
  private var dir: TempDir!

  override func setUpWithError() throws { dir = try TempDir() }
  override func tearDown() { dir = nil }

  // MARK: Helpers

  /// A `.npy` file with `dict` as its header text, padded as NumPy pads, in format `major`.0.
  private func npy(_ dict: String, major: UInt8 = 1, data: [UInt8] = []) -> [UInt8] {
    let lengthSize = major == 1 ? 2 : 4
    var text = Array(dict.utf8)
    let used = 8 + lengthSize + text.count + 1
    text += [UInt8](repeating: 0x20, count: 64 - used % 64) + [0x0A]
    var length: [UInt8] = []
    for i in 0..<lengthSize { length.append(UInt8((text.count >> (8 * i)) & 0xFF)) }
    return NPY.magic + [major, 0] + length + text + data
  }

  private func header(_ shape: String, descr: String = "<f4", fortran: String = "False") -> String {
    "{'descr': '\(descr)', 'fortran_order': \(fortran), 'shape': \(shape), }"
  }

  /// Expects `body` to throw an `NPYError` matching `match` whose description is one line naming `path`.
  private func assertNPYError<T>(
    _ path: String, _ what: String, line: UInt = #line, _ body: () throws -> T, match: (NPYError) -> Bool
  ) {
    do {
      _ = try body()
      XCTFail("\(what): expected an NPYError, got success", line: line)
    } catch let error as NPYError {
      XCTAssertTrue(match(error), "\(what): wrong error \(error)", line: line)
      let text = error.description
      XCTAssertTrue(text.hasPrefix(path + ": "), "\(what): does not start with the path: \(text)", line: line)
      XCTAssertFalse(text.contains("\n") || text.contains("\r"), "\(what): not one line: \(text)", line: line)
    } catch {
      XCTFail("\(what): expected an NPYError, got \(type(of: error)): \(error)", line: line)
    }
  }

  /// Writes `bytes` as `name` and expects opening it to fail as `match` says.
  private func assertRefused(
    _ name: String, _ bytes: [UInt8], line: UInt = #line, match: (NPYError) -> Bool
  ) throws {
    let path = try dir.write(name, bytes)
    assertNPYError(path, name, line: line, { try NPYFile(path: path) }, match: match)
    // The in-memory parser agrees with the file reader.
    assertNPYError(path, name + " (parseHeader)", line: line, { try NPY.parseHeader(bytes, fileSize: bytes.count, file: path) },
                   match: match)
  }

  private func requireNumPy() throws {
    let r = try Subprocess.python("import numpy", [])
    if r.status != 0 { throw XCTSkip("python3 with numpy is not available (set VAE_DIST_PYTHON): \(r.stderr.suffix(200))") }
  }

  private func runPython(_ script: String, _ args: [String], line: UInt = #line) throws -> String {
    let r = try Subprocess.python(script, args)
    XCTAssertEqual(r.status, 0, "python failed: \(r.stderr)", line: line)
    return r.stdout
  }

  // MARK: Files NumPy wrote

  /// np.save's files of several shapes and dtypes, and write_array's formats 2.0 and 3.0: the
  /// header matches, and the data is the array's bytes (x.tobytes()) with the expected values.
  func testReadsNumPyFiles() throws {
    try requireNumPy()
    let script = """
      import sys, numpy as np
      d = sys.argv[1]
      cases = {
        "u8-1d": np.arange(5, dtype=np.uint8),
        "u8-2d": (np.arange(12) * 7 % 256).astype(np.uint8).reshape(3, 4),
        "u8-nhw": np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        "f32-nhwc": (np.arange(2 * 3 * 4 * 3, dtype=np.float32) / np.float32(7)).reshape(2, 3, 4, 3),
        "f32-2d": (np.arange(20, dtype=np.float32) / np.float32(7) - 1).reshape(4, 5),
        "f32-1d": np.arange(3, dtype=np.float32) / np.float32(7),
        "f32-mnist": np.zeros((10, 784), dtype=np.float32) + np.float32(0.5),
      }
      for name, x in cases.items():
          np.save(f"{d}/{name}.npy", x)
          open(f"{d}/{name}.bin", "wb").write(x.tobytes())
      for v in (2, 3):
          x = (np.arange(6, dtype=np.float32) / np.float32(7)).reshape(3, 2)
          with open(f"{d}/f32-v{v}.npy", "wb") as f:
              np.lib.format.write_array(f, x, version=(v, 0))
          open(f"{d}/f32-v{v}.bin", "wb").write(x.tobytes())
      """
    _ = try runPython(script, [dir.path])
    let expected: [(String, NPY.DType, [Int], Int, Int)] = [
      ("u8-1d", .uint8, [5], 1, 1), ("u8-2d", .uint8, [3, 4], 4, 1), ("u8-nhw", .uint8, [2, 3, 4], 12, 1),
      ("f32-nhwc", .float32, [2, 3, 4, 3], 36, 1), ("f32-2d", .float32, [4, 5], 5, 1), ("f32-1d", .float32, [3], 1, 1),
      ("f32-mnist", .float32, [10, 784], 784, 1), ("f32-v2", .float32, [3, 2], 2, 2), ("f32-v3", .float32, [3, 2], 2, 3),
    ]
    for (name, dtype, shape, width, version) in expected {
      let file = try NPYFile(path: "\(dir.path)/\(name).npy")
      let h = file.header
      XCTAssertEqual(h.dtype, dtype, name)
      XCTAssertEqual(h.shape, shape, name)
      XCTAssertEqual(h.rows, shape[0], name)
      XCTAssertEqual(h.rowWidth, width, name)
      XCTAssertEqual(h.version, version, name)
      XCTAssertEqual(h.dataOffset % 64, 0, "\(name): NumPy aligns the data to 64 bytes")
      let raw = try FileIO.readAll(path: "\(dir.path)/\(name).bin")
      XCTAssertEqual(h.byteCount, raw.count, name)
      XCTAssertEqual(Array(file.data), raw, name)
      XCTAssertEqual(file.dataChecksum(), CRC32.checksum(raw), name)
      XCTAssertEqual(file.mappedBytes.count, h.dataOffset + h.byteCount, name)
    }
    let u8 = try NPYFile(path: dir.path + "/u8-2d.npy")
    XCTAssertEqual(Array(try XCTUnwrap(u8.uint8Values)), (0..<12).map { UInt8($0 * 7 % 256) })
    XCTAssertNil(u8.float32Values)
    let f32 = try NPYFile(path: dir.path + "/f32-2d.npy")
    XCTAssertEqual(Array(try XCTUnwrap(f32.float32Values)), (0..<20).map { Float($0) / 7 - 1 })
    XCTAssertNil(f32.uint8Values)
  }

  // MARK: Files we write

  /// NPY.write and NPYWriter (in uneven chunks) write the bytes np.save writes, which np.load reads.
  func testNumPyLoadsOurFiles() throws {
    try requireNumPy()
    let floats = (0..<24).map { Float($0) / 7 - 1 }
    try NPY.write(path: dir.path + "/f32.npy", shape: [2, 3, 4], values: floats)
    try NPY.write(path: dir.path + "/u8.npy", shape: [5], values: (0..<5).map { UInt8($0 * 50) })
    let w = try NPYWriter(path: dir.path + "/streamed.npy", dtype: .float32, shape: [6, 4])
    for chunk in [0..<5, 5..<5, 5..<24] { try floats[chunk].withUnsafeBufferPointer { try w.append($0) } }
    XCTAssertFalse(FileManager.default.fileExists(atPath: dir.path + "/streamed.npy"), "visible before finish()")
    try w.finish()
    let script = """
      import io, sys, numpy as np
      d = sys.argv[1]
      floats = (np.arange(24, dtype=np.float32) / np.float32(7) - np.float32(1))
      cases = {"f32": floats.reshape(2, 3, 4), "u8": (np.arange(5) * 50).astype(np.uint8),
               "streamed": floats.reshape(6, 4)}
      for name, want in cases.items():
          got = np.load(f"{d}/{name}.npy")
          assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
          assert np.array_equal(got, want), name
          buf = io.BytesIO()
          np.save(buf, want)
          assert buf.getvalue() == open(f"{d}/{name}.npy", "rb").read(), name + ": bytes differ from np.save's"
      print("ok")
      """
    XCTAssertEqual(try runPython(script, [dir.path]).trimmingCharacters(in: .whitespacesAndNewlines), "ok")
    // And we read back what we wrote.
    let back = try NPYFile(path: dir.path + "/streamed.npy")
    XCTAssertEqual(back.header.shape, [6, 4])
    XCTAssertEqual(Array(try XCTUnwrap(back.float32Values)), floats)
  }

  func testWriterRefusesWrongAmountsAndLeavesNoFile() throws {
    let path = dir.path + "/out.npy"
    var w: NPYWriter? = try NPYWriter(path: path, dtype: .float32, shape: [2, 2])
    try [Float(1), 2, 3].withUnsafeBufferPointer { try w!.append($0) }
    assertNPYError(path, "too few", { try w!.finish() }) {
      if case .badWrite(_, let d) = $0 { return d.contains("3 of the 4 elements") }
      return false
    }
    assertNPYError(path, "too many", { try [Float(1), 2].withUnsafeBufferPointer { try w!.append($0) } }) {
      if case .badWrite = $0 { return true }
      return false
    }
    assertNPYError(path, "wrong dtype", { try [UInt8(1)].withUnsafeBufferPointer { try w!.append($0) } }) {
      if case .badWrite(_, let d) = $0 { return d.contains("uint8 values appended to a float32 file") }
      return false
    }
    w = nil
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir.path), [], "temporary file left behind")
    assertNPYError(path, "zero rows", { try NPY.write(path: path, shape: [0, 3], values: [Float]()) }) {
      if case .badShape = $0 { return true }
      return false
    }
    assertNPYError(path, "size mismatch", { try NPY.write(path: path, shape: [2], values: [UInt8(1)]) }) {
      if case .badWrite = $0 { return true }
      return false
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: path))
  }

  // MARK: Files NumPy writes that we refuse

  func testRefusesOtherDTypesAndFortranOrderWithAHint() throws {
    try requireNumPy()
    let script = """
      import sys, numpy as np
      d = sys.argv[1]
      x = np.arange(6).reshape(2, 3)
      np.save(f"{d}/f64.npy", x.astype(np.float64))
      np.save(f"{d}/i64.npy", x.astype(np.int64))
      np.save(f"{d}/f16.npy", x.astype(np.float16))
      np.save(f"{d}/be.npy", x.astype(">f4"))
      np.save(f"{d}/fortran.npy", np.asfortranarray(x.astype(np.float32)))
      np.save(f"{d}/object.npy", np.array([1, "a"], dtype=object), allow_pickle=True)
      np.save(f"{d}/structured.npy", np.zeros(3, dtype=[("a", "<f4"), ("b", "u1")]))
      np.save(f"{d}/zero-rows.npy", np.zeros((0, 784), dtype=np.float32))
      np.save(f"{d}/scalar.npy", np.float32(1.5))
      """
    _ = try runPython(script, [dir.path])
    let cases: [(String, String)] = [
      ("f64", "dtype '<f8' (float64) is not supported: save float32 (np.save(path, x.astype(np.float32))) or uint8"),
      ("i64", "dtype '<i8' (int64) is not supported: save float32"),
      ("f16", "dtype '<f2' (float16) is not supported: save float32"),
      ("be", "dtype '>f4' (big-endian float32) is not supported: save little-endian float32 (np.save(path, x.astype('<f4')))"),
      ("fortran", "Fortran order (fortran_order: True): save a C-order array (np.save(path, np.ascontiguousarray(x)))"),
      ("object", "dtype '|O' (Python objects) is not supported"),
      ("structured", "structured dtype [('a', '<f4'), ('b', '|u1')] is not supported"),
      ("zero-rows", "shape (0, 784) has no rows"),
      ("scalar", "shape () is a single value"),
    ]
    for (name, message) in cases {
      let path = "\(dir.path)/\(name).npy"
      assertNPYError(path, name, { try NPYFile(path: path) }) { $0.description.contains(message) }
    }
  }

  /// A dtype's item size too large for its bits to fit an Int (scripts/fuzz found
  /// '|O9223372036854775807', which trapped): named without a bit count.
  func testDescribeSurvivesHugeItemSizes() {
    XCTAssertEqual(NPY.describe(descr: "<f9223372036854775807"), "floating point")
    XCTAssertEqual(NPY.describe(descr: "<i9223372036854775807"), "int")
    XCTAssertEqual(NPY.describe(descr: "|O9223372036854775807"), "Python objects")
    XCTAssertEqual(NPY.describe(descr: "<f1152921504606846975"), "float9223372036854775800")
    XCTAssertEqual(NPY.describe(descr: ">f8"), "big-endian float64")
  }

  // MARK: Damaged and lying files

  func testTruncatedAndLyingFiles() throws {
    let data = [UInt8](repeating: 7, count: 24)
    let good = npy(header("(2, 3)"), data: data)
    XCTAssertEqual(good.count, 128 + 24, "a 60-byte dictionary pads to a 128-byte header")
    XCTAssertEqual(try NPY.parseHeader(good, fileSize: good.count, file: "good").shape, [2, 3])
    try assertRefused("truncated-data.npy", Array(good.dropLast(5))) {
      $0 == .truncated(file: self.dir.path + "/truncated-data.npy", section: "data", offset: 128, expected: 24, actual: 19)
    }
    try assertRefused("trailing.npy", good + [0]) {
      $0 == .trailingBytes(file: self.dir.path + "/trailing.npy", offset: 152, extra: 1)
    }
    try assertRefused("shape-too-big.npy", npy(header("(3, 3)"), data: data)) {
      if case .truncated(_, "data", 128, 36, 24) = $0 { return true }
      return false
    }
    try assertRefused("shape-too-small.npy", npy(header("(1, 3)"), data: data)) {
      if case .trailingBytes(_, 140, 12) = $0 { return true }
      return false
    }
    try assertRefused("truncated-header.npy", Array(good.prefix(40))) {
      if case .truncated(_, "header", 10, 118, 30) = $0 { return true }
      return false
    }
    try assertRefused("short-preamble.npy", Array(good.prefix(9))) {
      if case .truncated(_, "header", 0, 10, 9) = $0 { return true }
      return false
    }
    var longer = good
    longer[8] &+= 16  // the header claims 16 of the data bytes
    try assertRefused("header-length-too-long.npy", longer) {
      if case .badHeader(_, 128, let d) = $0 { return d.contains("found byte 0x07, expected only spaces and a newline after") }
      return false
    }
    var shorter = good
    shorter[8] = 17  // ends after "{'descr': '<f4', "
    try assertRefused("header-length-too-short.npy", shorter) {
      if case .badHeader(_, 27, let d) = $0 { return d.contains("found the end of the header, expected a string key") }
      return false
    }
  }

  func testPreambleErrors() throws {
    try assertRefused("empty.npy", []) { if case .empty = $0 { return true }; return false }
    try assertRefused("magic.npy", Array("PK\u{3}\u{4}rest of a zip".utf8)) {
      if case .badMagic(_, let found) = $0 { return found == Array("PK\u{3}\u{4}rest".utf8) }
      return false
    }
    let good = npy(header("(1,)"), data: [0, 0, 0, 0])
    for (major, minor) in [(4, 0), (1, 1), (0, 0)] {
      var b = good
      (b[6], b[7]) = (UInt8(major), UInt8(minor))
      try assertRefused("version-\(major)-\(minor).npy", b) {
        $0 == .unsupportedVersion(file: self.dir.path + "/version-\(major)-\(minor).npy", major: UInt8(major),
                                  minor: UInt8(minor))
      }
    }
    var huge = npy(header("(1,)"), major: 2, data: [0, 0, 0, 0])
    huge[8...11] = [0x11, 0x27, 0, 0]  // 10001
    try assertRefused("huge-header.npy", huge) { if case .badHeader(_, 8, _) = $0 { return true }; return false }
  }

  /// The dictionary parser is strict: what `ast.literal_eval` + NumPy would refuse, and
  /// expressions it would accept but NumPy never writes, are one-line errors.
  func testHeaderDictionaryErrors() throws {
    let d = [UInt8](repeating: 0, count: 8)
    let bad: [(String, String)] = [
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}", "unexpected key 'extra'"),
      ("{'descr': '<f4', 'shape': (2,)}", "lacks 'fortran_order'"),
      ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2,)}", "key 'descr' twice"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': [2]}", "'shape' must be a tuple of integers, found [2]"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (2)}", "'shape' must be a tuple of integers, found 2"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (2.0,)}", "expected a decimal integer"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (1*2,)}", "found '*', expected ',' or ')'"),
      ("{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}", "'fortran_order' must be True or False, found 0"),
      ("{'descr': '<f4', 'fortran_order': false, 'shape': (2,)}", "found the name 'false'"),
      ("{'descr': '<f\\x34', 'fortran_order': False, 'shape': (2,)}", "escape sequences"),
      ("{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}", "found 'f', expected ',' or '}'"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,)} # comment", "found '#'"),
      ("{'descr': 7, 'fortran_order': False, 'shape': (2,)}", "'descr' must be a dtype string"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (02,)}", "leading zero"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (-2,)}", "has a negative dimension"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "too large for this platform"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0)}", "rows of width 0"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (\(Array(repeating: "1", count: 33).joined(separator: ", ")))}",
       "33 dimensions"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4)}", "more bytes than this platform"),
      ("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': " + String(repeating: "[", count: 40), "nested more"),
      ("[1, 2]", "expected the header dictionary's '{'"),
    ]
    for (i, (dict, message)) in bad.enumerated() {
      let path = "header-\(i).npy"
      assertNPYError(path, dict, { try NPY.parseHeader(self.npy(dict, data: d), fileSize: self.npy(dict, data: d).count,
                                                       file: path) }) {
        $0.description.contains(message)
      }
    }
  }

  func testAcceptedHeaderVariants() throws {
    // Other spellings NumPy reads the same: double quotes, any key order, no trailing comma,
    // Python 2's 3L in formats 1.0 and 2.0, uint8 descr variants.
    let variants: [(String, UInt8, NPY.DType, [Int])] = [
      ("{\"shape\": (2, 2), \"fortran_order\": False, \"descr\": \"|u1\"}", 1, .uint8, [2, 2]),
      ("{'descr': 'u1', 'fortran_order': False, 'shape': (4L,)}", 1, .uint8, [4]),
      ("{'descr':'<u1','fortran_order':False,'shape':(1,4,),}", 2, .uint8, [1, 4]),
      ("\n{ 'descr' : '<f4' ,\t'fortran_order' : False , 'shape' : ( 1 , ) }", 3, .float32, [1]),
    ]
    for (dict, major, dtype, shape) in variants {
      let b = npy(dict, major: major, data: [UInt8](repeating: 1, count: 4))
      let h = try NPY.parseHeader(b, fileSize: b.count, file: "v.npy")
      XCTAssertEqual(h.dtype, dtype, dict)
      XCTAssertEqual(h.shape, shape, dict)
      XCTAssertEqual(h.version, Int(major), dict)
    }
    let long = npy("{'descr': 'u1', 'fortran_order': False, 'shape': (4L,)}", major: 3, data: [1, 1, 1, 1])
    XCTAssertThrowsError(try NPY.parseHeader(long, fileSize: long.count, file: "v3.npy"), "3L in format 3.0")
    // Misaligned float32 data (a hand-made header of odd length) is refused; uint8 is fine.
    let short = Array("{'descr':'<f4','fortran_order':False,'shape':(1,)}".utf8)  // 49 bytes
    let odd = NPY.magic + [1, 0, 51, 0] + short + [0x20, 0x0A, 0, 0, 0, 0]  // data at byte 61
    assertNPYError("odd.npy", "misaligned", { try NPY.parseHeader(odd, fileSize: odd.count, file: "odd.npy") }) {
      $0.description.contains("not a multiple of 4")
    }
  }

  // MARK: Paths that are not .npy files

  func testDirectoryFIFOAndUnreadablePaths() throws {
    let sub = dir.path + "/a-directory.npy"
    try FileManager.default.createDirectory(atPath: sub, withIntermediateDirectories: false)
    assertNPYError(sub, "directory", { try NPYFile(path: sub) }) { $0 == .notAFile(file: sub, kind: "a directory") }
    let fifo = dir.path + "/fifo.npy"
    XCTAssertEqual(mkfifo(fifo, 0o600), 0)
    assertNPYError(fifo, "FIFO", { try NPYFile(path: fifo) }) { $0 == .notAFile(file: fifo, kind: "a FIFO") }
    let missing = dir.path + "/missing.npy"
    assertNPYError(missing, "missing", { try NPYFile(path: missing) }) {
      if case .io(_, let d) = $0 { return d.contains("No such file or directory") }
      return false
    }
    let locked = try dir.write("locked.npy", npy(header("(1,)"), data: [0, 0, 0, 0]))
    XCTAssertEqual(chmod(locked, 0), 0)
    if geteuid() == 0 {
      XCTAssertEqual(try NPYFile(path: locked).header.shape, [1], "root reads a mode-000 file")
    } else {
      assertNPYError(locked, "unreadable", { try NPYFile(path: locked) }) {
        if case .io(_, let d) = $0 { return d.contains("Permission denied") }
        return false
      }
    }
  }

  /// A mapped file that is truncated, rewritten or replaced is reported by checkUnchanged.
  func testChangesAfterMappingAreDetected() throws {
    let bytes = npy(header("(4, 4)", descr: "|u1"), data: Array(0..<16))
    let path = try dir.write("x.npy", bytes)
    let file = try NPYFile(path: path)
    XCTAssertNoThrow(try file.checkUnchanged())
    XCTAssertEqual(truncate(path, off_t(bytes.count - 8)), 0)
    assertNPYError(path, "truncated", { try file.checkUnchanged() }) {
      if case .changed(_, let d) = $0 { return d.contains("size went from 144 to 136") }
      return false
    }
    let second = try NPYFile(path: try dir.write("y.npy", bytes))
    try FileIO.writeAtomically(bytes, to: second.path)
    assertNPYError(second.path, "replaced", { try second.checkUnchanged() }) {
      if case .changed(_, let d) = $0 { return d.contains("another file") }
      return false
    }
    XCTAssertEqual(Array(second.data), Array(0..<16), "the mapping keeps the replaced file's contents")
  }
}
