import Foundation
import TestSupport
import XCTest

@testable import Formats

final class SafeTensorsTests: XCTestCase {
  private var dir = ""

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory
      .appendingPathComponent("safetensors-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    _ = chmod(dir, 0o755)
    try? FileManager.default.removeItem(atPath: dir)
  }

  // MARK: Fixtures

  private func sampleTensors() -> [SafeTensor] {
    [
      SafeTensor(name: "encoder.0.weight", shape: [2, 3], floats: [1, -2.5, 3.25, 0, -0.0, .pi]),
      SafeTensor(name: "steps", dtype: .I64, shape: [2], bytes: int64Bytes([7, -1])),
      SafeTensor(name: "scale", dtype: .F64, shape: [], bytes: withUnsafeBytes(of: (0.125).bitPattern.littleEndian) { Array($0) }),
      SafeTensor(name: "empty", shape: [0, 5], floats: []),
      SafeTensor(name: "name with \"quotes\", \\ and ü\n", dtype: .U8, shape: [3], bytes: [1, 2, 255]),
      SafeTensor(name: "empty2", dtype: .F64, shape: [3, 0], bytes: []),
    ]
  }

  private let sampleMetadata: [String: String] = [
    "format": "vae-dist/1",
    "model": #"{"zdim":20,"hidden":[500,500]}"#,
    "weird": "tab\there, newline\n, quote \", backslash \\, ctrl \u{01}, emoji 🎲",
  ]

  private func int64Bytes(_ v: [Int64]) -> [UInt8] {
    v.flatMap { x in withUnsafeBytes(of: x.littleEndian) { Array($0) } }
  }

  /// A file with the given header text and data block (header padded with spaces to 8).
  private func rawFile(_ header: String, _ data: [UInt8]) -> [UInt8] {
    var h = Array(header.utf8)
    while h.count % 8 != 0 { h.append(0x20) }
    var out: [UInt8] = []
    withUnsafeBytes(of: UInt64(h.count).littleEndian) { out += $0 }
    return out + h + data
  }

  /// Asserts that decoding `bytes` throws a `SafeTensorsError` accepted by `check`, whose
  /// description is one line containing the file name (and `mentions`, if given).
  private func assertDecodeFails(
    _ bytes: [UInt8], mentions: String? = nil, file: StaticString = #filePath, line: UInt = #line,
    _ check: (SafeTensorsError) -> Bool
  ) {
    let name = "corrupt-\(line).safetensors"
    do {
      _ = try SafeTensors.decode(bytes, file: name)
      XCTFail("decode succeeded, expected an error", file: file, line: line)
    } catch let e as SafeTensorsError {
      XCTAssertTrue(check(e), "unexpected error: \(e)", file: file, line: line)
      assertOneLine(e.description, contains: name, file: file, line: line)
      if let m = mentions {
        XCTAssertTrue(e.description.contains(m), "\(e.description) should mention \(m)", file: file, line: line)
      }
    } catch {
      XCTFail("untyped error \(error)", file: file, line: line)
    }
  }

  private func assertOneLine(_ s: String, contains name: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertTrue(s.contains(name), "\(s) should name \(name)", file: file, line: line)
    XCTAssertFalse(s.contains("\n") || s.contains("\r"), "\(s) is not one line", file: file, line: line)
  }

  // MARK: Round trip and determinism

  func testRoundTripIsByteExact() throws {
    let tensors = sampleTensors()
    let bytes = SafeTensors.encode(tensors: tensors, metadata: sampleMetadata)
    let decoded = try SafeTensors.decode(bytes, file: "rt.safetensors")
    XCTAssertEqual(decoded.tensors, tensors)
    XCTAssertEqual(decoded.metadata, sampleMetadata)
    XCTAssertEqual(decoded.file, "rt.safetensors")
    XCTAssertEqual(SafeTensors.encode(tensors: decoded.tensors, metadata: decoded.metadata), bytes)
    XCTAssertEqual(try decoded.floats("encoder.0.weight"), [1, -2.5, 3.25, 0, -0.0, .pi])
    XCTAssertEqual(try decoded.floats("encoder.0.weight", shape: [2, 3]).count, 6)
    XCTAssertEqual(try decoded.floats("empty"), [])
    XCTAssertEqual(decoded.tensor("steps")?.bytes, int64Bytes([7, -1]))
    XCTAssertNil(decoded.tensor("nope"))
  }

  func testEncodingIsDeterministicAndAligned() throws {
    var reversed: [String: String] = [:]
    for k in sampleMetadata.keys.sorted().reversed() { reversed[k] = sampleMetadata[k] }
    let a = SafeTensors.encode(tensors: sampleTensors(), metadata: sampleMetadata)
    let b = SafeTensors.encode(tensors: sampleTensors(), metadata: reversed)
    XCTAssertEqual(a, b)
    let n = a[0..<8].enumerated().reduce(UInt64(0)) { $0 | UInt64($1.element) << (8 * UInt64($1.offset)) }
    XCTAssertEqual(n % 8, 0)

    // The exact header of a small file.
    let small = SafeTensors.encode(
      tensors: [
        SafeTensor(name: "b", shape: [2], floats: [1, 2]),
        SafeTensor(name: "a", dtype: .I64, shape: [], bytes: int64Bytes([3])),
      ],
      metadata: ["z": "1", "a": "x\"y"])
    let header = String(decoding: small[8..<(small.count - 16)], as: UTF8.self)
    let json = #"{"__metadata__":{"a":"x\"y","z":"1"},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"#
      + #""a":{"dtype":"I64","shape":[],"data_offsets":[8,16]}}"#
    XCTAssertEqual(json.utf8.count, 143)
    XCTAssertEqual(header, json + " ")  // padded to 144 bytes
    // No metadata: no __metadata__ key.
    let bare = SafeTensors.encode(tensors: [], metadata: [:])
    XCTAssertEqual(bare, [8, 0, 0, 0, 0, 0, 0, 0] + Array("{}      ".utf8))
    let decodedBare = try SafeTensors.decode(bare, file: "bare")
    XCTAssertTrue(decodedBare.tensors.isEmpty && decodedBare.metadata.isEmpty)
  }

  func testHeaderEscapesAreValidJSON() throws {
    let bytes = SafeTensors.encode(tensors: sampleTensors(), metadata: sampleMetadata)
    let n = Int(bytes[0]) | Int(bytes[1]) << 8 | Int(bytes[2]) << 16
    let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(bytes[8..<(8 + n)])) as? [String: Any])
    XCTAssertEqual(obj["__metadata__"] as? [String: String], sampleMetadata)
    XCTAssertNotNil(obj["name with \"quotes\", \\ and ü\n"])
  }

  func testFloatByteHelpersAreLittleEndian() {
    XCTAssertEqual(floatBytes([1.0, -2.0]), [0x00, 0x00, 0x80, 0x3F, 0x00, 0x00, 0x00, 0xC0])
    let values: [Float] = [0, -0.0, 1, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude, .nan]
    let back = floatsFromBytes(floatBytes(values))
    XCTAssertEqual(back.map(\.bitPattern), values.map(\.bitPattern))
    XCTAssertEqual(floatsFromBytes([0x00, 0x00, 0x80, 0x3F, 0xAA]), [1.0])  // trailing bytes ignored
    var out = [Float](repeating: 9, count: 3)
    let n = out.withUnsafeMutableBufferPointer { floatsFromBytes(floatBytes([4, 5]), into: $0) }
    XCTAssertEqual(n, 2)
    XCTAssertEqual(out, [4, 5, 9])
  }

  // MARK: Typed errors

  func testFileShorterThanEightBytes() {
    assertDecodeFails([1, 2, 3, 4, 5], mentions: "5 bytes") {
      if case .tooShort(_, 5) = $0 { return true }
      return false
    }
    assertDecodeFails([]) {
      if case .tooShort(_, 0) = $0 { return true }
      return false
    }
  }

  func testHeaderLengthLargerThanFile() {
    var bytes = SafeTensors.encode(tensors: sampleTensors(), metadata: [:])
    let size = bytes.count
    bytes.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(size).littleEndian) { Array($0) })
    assertDecodeFails(bytes, mentions: "header length \(size)") {
      if case .headerLength(_, UInt64(size), size) = $0 { return true }
      return false
    }
    bytes.replaceSubrange(0..<8, with: [UInt8](repeating: 0xFF, count: 8))
    assertDecodeFails(bytes) {
      if case .headerLength(_, UInt64.max, _) = $0 { return true }
      return false
    }
  }

  func testCorruptHeaderJSON() {
    var bytes = SafeTensors.encode(tensors: sampleTensors(), metadata: sampleMetadata)
    bytes[20] = UInt8(ascii: "\"")  // ends the first key early: invalid JSON
    assertDecodeFails(bytes) {
      if case .badHeaderJSON = $0 { return true }
      return false
    }
    // Not an object, not starting with '{', not UTF-8, duplicate keys, empty header.
    let cases: [[UInt8]] = [
      rawFile("[1, 2]", []),
      rawFile(" {}", []),
      rawFile("{\"a\u{FF}\":1}", []).map { $0 == 0xC3 ? 0xFF : $0 },
      rawFile(#"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, [1]),
      [0, 0, 0, 0, 0, 0, 0, 0],
      rawFile("{\"a\":1} x", []),
    ]
    for c in cases {
      assertDecodeFails(c) {
        if case .badHeaderJSON = $0 { return true }
        return false
      }
    }
    assertDecodeFails(cases[3], mentions: "duplicate key \"x\"") { _ in true }
  }

  func testTruncatedData() {
    let bytes = SafeTensors.encode(tensors: sampleTensors(), metadata: [:])
    assertDecodeFails(Array(bytes.dropLast(3)), mentions: "\"name with") {
      if case .offsetsOutOfRange(_, let t, _, let end, let size) = $0 {
        return t.hasPrefix("name with") && end == size + 3
      }
      return false
    }
  }

  func testTrailingBytesAndGapsAreRejected() {
    let bytes = SafeTensors.encode(tensors: sampleTensors(), metadata: [:])
    assertDecodeFails(bytes + [0, 0, 0, 0]) {
      if case .uncoveredData = $0 { return true }
      return false
    }
    let gap = rawFile(
      #"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[3,4]}}"#,
      [1, 2, 3, 4])
    assertDecodeFails(gap, mentions: "[2, 3)") {
      if case .uncoveredData(_, 2, 3) = $0 { return true }
      return false
    }
  }

  func testWrongDtypeMissingTensorAndShapeMismatch() throws {
    let file = try SafeTensors.decode(
      SafeTensors.encode(tensors: sampleTensors(), metadata: [:]), file: "typed.safetensors")
    XCTAssertThrowsError(try file.floats("steps")) { error in
      guard case .wrongDtype(_, "steps", .F32, .I64)? = error as? SafeTensorsError else {
        return XCTFail("unexpected \(error)")
      }
      assertOneLine("\(error)", contains: "typed.safetensors")
    }
    XCTAssertThrowsError(try file.floats("decoder.out.weight")) { error in
      guard case .missingTensor(_, "decoder.out.weight")? = error as? SafeTensorsError else {
        return XCTFail("unexpected \(error)")
      }
      assertOneLine("\(error)", contains: "typed.safetensors")
    }
    XCTAssertThrowsError(try file.floats("encoder.0.weight", shape: [3, 2])) { error in
      guard case .shapeMismatch(_, "encoder.0.weight", [3, 2], [2, 3])? = error as? SafeTensorsError else {
        return XCTFail("unexpected \(error)")
      }
      assertOneLine("\(error)", contains: "typed.safetensors")
    }
  }

  func testShapeTimesDtypeNotMatchingOffsets() {
    let bytes = rawFile(#"{"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}"#, [UInt8](repeating: 0, count: 12))
    assertDecodeFails(bytes, mentions: "\"w\"") {
      if case .sizeMismatch(_, "w", 16, 12) = $0 { return true }
      return false
    }
  }

  func testOverlappingOffsets() {
    let bytes = rawFile(
      #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
      [UInt8](repeating: 0, count: 12))
    assertDecodeFails(bytes, mentions: "\"a\"") {
      if case .overlapping(_, "b", "a", 4, 8) = $0 { return true }
      return false
    }
  }

  func testMetadataValueNotAString() {
    for value in ["1", "true", "null", "[\"x\"]", "{\"a\":\"b\"}"] {
      let bytes = rawFile(#"{"__metadata__":{"ok":"fine","step":"# + value + "}}", [])
      assertDecodeFails(bytes, mentions: "\"step\"") {
        if case .badMetadata(_, "step", _) = $0 { return true }
        return false
      }
    }
    assertDecodeFails(rawFile(#"{"__metadata__":"nope"}"#, [])) {
      if case .badMetadata(_, "__metadata__", _) = $0 { return true }
      return false
    }
    // A null __metadata__ means none, as in the reference implementation.
    XCTAssertEqual(try SafeTensors.decode(rawFile(#"{"__metadata__":null}"#, []), file: "n").metadata, [:])
  }

  func testUnsupportedDtype() {
    let bytes = rawFile(#"{"q":{"dtype":"F4","shape":[2],"data_offsets":[0,1]}}"#, [0])
    assertDecodeFails(bytes, mentions: "F32") {
      if case .unsupportedDtype(_, "q", "F4") = $0 { return true }
      return false
    }
    // The message lists every supported tag, sorted, exactly as before DType existed.
    XCTAssertEqual(
      SafeTensorsError.unsupportedDtype(file: "m.safetensors", tensor: "q", dtype: "F4").description,
      #"m.safetensors: tensor "q": unsupported dtype "F4", expected one of BF16, BOOL, C64, F16, F32, F64, "#
        + "F8_E4M3, F8_E5M2, F8_E8M0, I16, I32, I64, I8, U16, U32, U64, U8")
  }

  func testDTypeTagsAndSizes() {
    let sizes: [String: Int] = [
      "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1,
      "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
      "I32": 4, "U32": 4, "F32": 4,
      "I64": 8, "U64": 8, "F64": 8, "C64": 8,
    ]
    XCTAssertEqual(Dictionary(uniqueKeysWithValues: DType.allCases.map { ($0.rawValue, $0.size) }), sizes)
    XCTAssertEqual("\(DType.F8_E4M3)", "F8_E4M3")
    XCTAssertNil(DType(rawValue: "F4"))
    XCTAssertNil(DType(rawValue: "f32"))
  }

  func testMalformedEntries() {
    let entries = [
      #""not an object""#,
      #"{"dtype":"F32","shape":[1]}"#,
      #"{"dtype":"F32","shape":[1],"data_offsets":[0,4],"extra":1}"#,
      #"{"dtype":3,"shape":[1],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":1,"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[true],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":["1"],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[1e300],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[99999999999999999999999999],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}"#,
      #"{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}"#,
      #"{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}"#,
      #"{"dtype":"F32","shape":[1],"data_offsets":[0,4.0]}"#,
      #"{"dtype":"F32","shape":[1],"data_offsets":[false,4]}"#,
      #"{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}"#,
      #"{"dtype":"F32","shape":[1],"data_offsets":null}"#,
    ]
    for entry in entries {
      let bytes = rawFile(#"{"t":"# + entry + "}", [0, 0, 0, 0])
      assertDecodeFails(bytes, mentions: "\"t\"") {
        if case .badEntry(_, "t", _) = $0 { return true }
        return false
      }
    }
    // Reversed offsets and offsets past the end.
    for offsets in ["[4,0]", "[0,8]", "[8,12]"] {
      let bytes = rawFile(#"{"t":{"dtype":"U8","shape":[4],"data_offsets":"# + offsets + "}}", [0, 0, 0, 0])
      assertDecodeFails(bytes) {
        if case .offsetsOutOfRange(_, "t", _, _, 4) = $0 { return true }
        return false
      }
    }
  }

  func testKeysWithEscapesAndFileOrder() throws {
    // Header order differs from data order: tensors come back in data order.
    let bytes = rawFile(
      #"{"b\u00fc\"":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"z":{"dtype":"U8","shape":[0],"data_offsets":[1,1]},"#
        + #""a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
      [10, 20])
    let f = try SafeTensors.decode(bytes, file: "order")
    XCTAssertEqual(f.tensors.map(\.name), ["a", "z", "bü\""])
    XCTAssertEqual(f.tensor("bü\"")?.bytes, [20])
  }

  func testDuplicateFieldsAndDeepNestingAreOneLineErrors() {
    let twice = rawFile(#"{"t":{"dtype":"U8","shape":[1],"dtype":"U8","data_offsets":[0,1]}}"#, [0])
    assertDecodeFails(twice, mentions: "\"dtype\" given twice") {
      if case .badEntry(_, "t", _) = $0 { return true }
      return false
    }
    let deep = rawFile("{\"t\":" + String(repeating: "[", count: 50_000) + String(repeating: "]", count: 50_000) + "}", [])
    assertDecodeFails(deep, mentions: "nesting deeper than") {
      if case .badHeaderJSON = $0 { return true }
      return false
    }
    assertDecodeFails(rawFile(#"{"t":{"dtype":"U8","shape":[1.5e3],"data_offsets":[0,1]}}"#, [0]), mentions: "the number 1.5e3") {
      if case .badEntry(_, "t", _) = $0 { return true }
      return false
    }
  }

  /// A header of `n` one-byte tensors, in shuffled header order (so that sorting by offset has
  /// work to do), as `SafeTensors.encode` would not write it.
  private func manyTensorsFile(_ n: Int) -> [UInt8] {
    var rng = SeededRNG(seed: 0x11_7EA2)
    let order = (0..<n).shuffled(using: &rng)
    let entries = order.map { #""tensor.\#($0)":{"dtype":"U8","shape":[1],"data_offsets":[\#($0),\#($0 + 1)]}"# }
    return rawFile(#"{"__metadata__":{"format":"test"},"# + entries.joined(separator: ",") + "}", [UInt8](repeating: 7, count: n))
  }

  /// Decoding a header and looking up every tensor by name costs the same per tensor at 30,000
  /// tensors as at 3,000 (a lookup or scan that is linear per tensor makes it 10 times as much).
  /// The bound is loose, and each size is timed at its fastest of three runs, so a busy machine
  /// does not fail it.
  func testDecodeAndLookupStayLinearInTheNumberOfTensors() throws {
    let growth = try Scaling.perItemGrowth(small: 3_000, large: 30_000, prepare: manyTensorsFile) { bytes in
      let f = try SafeTensors.decode(bytes, file: "many.safetensors")
      for i in stride(from: 0, to: f.tensors.count, by: 1) {
        guard f.tensor("tensor.\(i)")?.bytes == [7] else { return XCTFail("tensor.\(i) not found") }
      }
    }
    XCTAssertLessThan(growth, 4, "time per tensor grew \(growth)× from 3,000 to 30,000 tensors")
  }

  func testRandomCorruptionNeverTraps() {
    let good = SafeTensors.encode(tensors: sampleTensors(), metadata: sampleMetadata)
    var rng = SeededRNG(seed: 0x5AFE_7E45)
    var failures = 0
    for i in 0..<3000 {
      let at = "seed \(rng.seed), iteration \(i)"
      var b = good
      switch i % 4 {
      case 0:
        for _ in 0..<Int.random(in: 1...4, using: &rng) {
          b[Int.random(in: 0..<b.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
        }
      case 1:
        b = Array(b.prefix(Int.random(in: 0..<b.count, using: &rng)))
      case 2:
        let at = Int.random(in: 8..<b.count, using: &rng)
        b[at] = [UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "\"")][i % 5]
      default:
        b.insert(UInt8.random(in: 0...255, using: &rng), at: Int.random(in: 0..<b.count, using: &rng))
      }
      do {
        _ = try SafeTensors.decode(b, file: "fuzz")
      } catch let e as SafeTensorsError {
        failures += 1
        XCTAssertFalse(e.description.contains("\n"), "\(at): multi-line description: \(e)")
      } catch {
        XCTFail("\(at): untyped error \(error)")
      }
    }
    XCTAssertGreaterThan(failures, 1000, "seed \(rng.seed)")
  }

  // MARK: Files

  private func directoryEntries() throws -> [String] {
    try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
  }

  func testAtomicWriteReplacesExistingFile() throws {
    let path = dir + "/model.safetensors"
    let first = SafeTensors.encode(tensors: sampleTensors(), metadata: ["v": "1"])
    try FileIO.writeAtomically(first, to: path)
    XCTAssertEqual(try SafeTensors.read(path: path).metadata, ["v": "1"])
    let second = SafeTensors.encode(tensors: Array(sampleTensors().prefix(2)), metadata: ["v": "2"])
    try FileIO.writeAtomically(second, to: path)
    XCTAssertEqual(try FileIO.readAll(path: path), second)
    XCTAssertEqual(try SafeTensors.read(path: path).tensors.count, 2)
    XCTAssertEqual(try directoryEntries(), ["model.safetensors"])
  }

  func testAtomicWriteRelativePath() throws {
    let old = FileManager.default.currentDirectoryPath
    XCTAssertTrue(FileManager.default.changeCurrentDirectoryPath(dir))
    defer { _ = FileManager.default.changeCurrentDirectoryPath(old) }
    try FileIO.writeAtomically([1, 2, 3], to: "rel.bin")
    XCTAssertEqual(try FileIO.readAll(path: dir + "/rel.bin"), [1, 2, 3])
    XCTAssertEqual(try directoryEntries(), ["rel.bin"])
  }

  func testFailedWriteIntoMissingDirectory() throws {
    let path = dir + "/no/such/dir/model.safetensors"
    XCTAssertThrowsError(try FileIO.writeAtomically([1, 2, 3], to: path)) { error in
      guard let e = error as? FileIOError else { return XCTFail("\(error)") }
      XCTAssertEqual(e.path, path)
      assertOneLine("\(error)", contains: path)
    }
    XCTAssertEqual(try directoryEntries(), [])
  }

  func testFailedRenameLeavesOldContentsAndNoTempFiles() throws {
    // The target is a non-empty directory: writing the temp file works, the rename fails.
    let path = dir + "/model.safetensors"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    try Data([9, 9]).write(to: URL(fileURLWithPath: path + "/inside"))
    XCTAssertThrowsError(try FileIO.writeAtomically([1, 2, 3], to: path)) { error in
      guard let e = error as? FileIOError, e.path == path else { return XCTFail("\(error)") }
      XCTAssertTrue(e.detail.contains("rename"), e.detail)
    }
    XCTAssertEqual(try directoryEntries(), ["model.safetensors"])
    XCTAssertEqual(try FileIO.readAll(path: path + "/inside"), [9, 9])
    XCTAssertThrowsError(try SafeTensors.read(path: path)) { error in
      guard case .io(path, _)? = error as? SafeTensorsError else { return XCTFail("\(error)") }
    }
  }

  func testFailedWriteInReadOnlyDirectoryKeepsOldFile() throws {
    guard geteuid() != 0 else { throw XCTSkip("running as root: a read-only directory does not stop writes") }
    let path = dir + "/model.safetensors"
    try FileIO.writeAtomically([1, 2, 3], to: path)
    XCTAssertEqual(chmod(dir, 0o555), 0)
    XCTAssertThrowsError(try FileIO.writeAtomically([4, 5, 6], to: path))
    XCTAssertEqual(chmod(dir, 0o755), 0)
    XCTAssertEqual(try FileIO.readAll(path: path), [1, 2, 3])
    XCTAssertEqual(try directoryEntries(), ["model.safetensors"])
  }

  func testReadMissingFile() {
    let path = dir + "/missing.safetensors"
    XCTAssertThrowsError(try SafeTensors.read(path: path)) { error in
      guard case .io(path, _)? = error as? SafeTensorsError else { return XCTFail("\(error)") }
      assertOneLine("\(error)", contains: path)
    }
  }

  // MARK: Interop with the reference implementation (Python safetensors)

  private func requireSafetensorsPython() throws {
    let r = try Subprocess.python("import safetensors.numpy, numpy", [])
    if r.status != 0 {
      throw XCTSkip("python3 with safetensors and numpy unavailable: \(r.stderr.suffix(200))")
    }
  }

  func testPythonLoadsSwiftFile() throws {
    try requireSafetensorsPython()
    let path = dir + "/from-swift.safetensors"
    try FileIO.writeAtomically(SafeTensors.encode(tensors: sampleTensors(), metadata: sampleMetadata), to: path)
    let script = """
      import json, sys
      import numpy as np
      from safetensors import safe_open
      from safetensors.numpy import load_file
      tensors = load_file(sys.argv[1])
      with safe_open(sys.argv[1], framework="np") as f:
          meta = f.metadata()
          order = list(f.keys())
      out = {"metadata": meta, "tensors": {k: {"dtype": str(v.dtype), "shape": list(v.shape),
             "values": v.astype(np.float64).ravel().tolist()} for k, v in tensors.items()}}
      print(json.dumps(out))
      """
    let r = try Subprocess.python(script, [path])
    XCTAssertEqual(r.status, 0, r.stderr)
    let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    XCTAssertEqual(obj["metadata"] as? [String: String], sampleMetadata)
    let ts = try XCTUnwrap(obj["tensors"] as? [String: [String: Any]])
    XCTAssertEqual(Set(ts.keys), Set(sampleTensors().map(\.name)))
    func check(_ name: String, _ dtype: String, _ shape: [Int], _ values: [Double]) {
      XCTAssertEqual(ts[name]?["dtype"] as? String, dtype, name)
      XCTAssertEqual(ts[name]?["shape"] as? [Int], shape, name)
      XCTAssertEqual(ts[name]?["values"] as? [Double], values, name)
    }
    check("encoder.0.weight", "float32", [2, 3], [1, -2.5, 3.25, 0, -0.0, Double(Float.pi)])
    check("steps", "int64", [2], [7, -1])
    check("scale", "float64", [], [0.125])
    check("empty", "float32", [0, 5], [])
    check("name with \"quotes\", \\ and ü\n", "uint8", [3], [1, 2, 255])
    check("empty2", "float64", [3, 0], [])
  }

  func testSwiftDecodesPythonFile() throws {
    try requireSafetensorsPython()
    let path = dir + "/from-python.safetensors"
    let script = """
      import sys
      import numpy as np
      from safetensors.numpy import save_file
      save_file({
          "decoder.out.weight": (np.arange(12, dtype=np.float32) * 0.5 - 2).reshape(3, 4),
          "decoder.out.bias": np.array([1.5, -0.25, 1e-30], dtype=np.float32),
          "count": np.array([1, -2, 3], dtype=np.int64),
          "scalar": np.array(2.5, dtype=np.float64),
          "bytes": np.array([[1, 2], [3, 4]], dtype=np.uint8),
          "nothing": np.zeros((0, 3), dtype=np.float32),
      }, sys.argv[1], metadata={"format": "pt", "note": "quote \\" and ü"})
      """
    let r = try Subprocess.python(script, [path])
    XCTAssertEqual(r.status, 0, r.stderr)
    let f = try SafeTensors.read(path: path)
    XCTAssertEqual(f.metadata, ["format": "pt", "note": "quote \" and ü"])
    XCTAssertEqual(try f.floats("decoder.out.weight", shape: [3, 4]), (0..<12).map { Float($0) * 0.5 - 2 })
    XCTAssertEqual(try f.floats("decoder.out.bias", shape: [3]), [1.5, -0.25, 1e-30])
    XCTAssertEqual(f.tensor("count")?.dtype, .I64)
    XCTAssertEqual(f.tensor("count")?.bytes, int64Bytes([1, -2, 3]))
    XCTAssertEqual(f.tensor("scalar")?.shape, [])
    XCTAssertEqual(f.tensor("scalar")?.bytes, withUnsafeBytes(of: (2.5).bitPattern.littleEndian) { Array($0) })
    XCTAssertEqual(f.tensor("bytes")?.bytes, [1, 2, 3, 4])
    XCTAssertEqual(try f.floats("nothing", shape: [0, 3]), [])
    XCTAssertEqual(f.tensors.count, 6)
    // Re-encoding what Python wrote gives a file Python's tensors survive unchanged.
    let again = try SafeTensors.decode(SafeTensors.encode(tensors: f.tensors, metadata: f.metadata), file: "again")
    XCTAssertEqual(again.tensors, f.tensors)
  }
}
