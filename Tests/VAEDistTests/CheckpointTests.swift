import Formats
import Foundation
import VAE
import XCTest

@testable import VAE
@testable import VAEData
@testable import VAEDist

final class CheckpointTests: XCTestCase {
  // Training expects flush-to-zero, which the executable turns on for its thread.
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  private var dir = ""

  override func setUpWithError() throws {
    dir = try TT.makeTempDir("checkpoint-tests")
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: dir)
  }

  // MARK: Fixtures

  /// Two hidden layers (so encoder.1 / decoder.1 exist) and a Gaussian likelihood, to exercise
  /// every part of the model metadata.
  private let model = ModelConfig(inputSize: 12, hidden: [5, 4], decoderHidden: [3, 6], zdim: 2,
                                  likelihood: .gaussian(sigma: 0.25))
  private let configYAML = "name: ck\nmodel:\n  input_size: 12\n"

  private let state = TrainingState(
    step: 1234, epoch: 5, seed: 9_223_372_036_854_775_813, worldSize: 8, globalBatch: 96, adamStep: 1234,
    dataChecksum: 0xDEAD_BEEF, windowRecon: -123.5, windowKL: 7.25, windowCount: 48)

  /// Parameters and Adam moments with distinct, awkward values (negative zero, subnormals, big).
  private func filledArenas() -> (Arena, Adam) {
    let layout = model.layout
    let params = Arena(layout: layout)
    let rng = CounterRNG(seed: 11)
    var s = rng.stream(.initialisation)
    for i in 0..<params.count { params.data[i] = s.nextFloat(in: -2, 2) }
    params.data[0] = -0.0
    params.data[1] = Float.leastNonzeroMagnitude
    params.data[2] = 3.0e38
    let adam = Adam(config: AdamConfig(), layout: layout)
    for i in 0..<params.count {
      adam.m.data[i] = s.nextFloat(in: -1, 1) * 1e-3
      adam.v.data[i] = s.nextFloat(in: 0, 1) * 1e-6
    }
    adam.step = state.adamStep
    return (params, adam)
  }

  private var modelJSON: String { RunConfig.modelJSON(model) }

  /// A valid checkpoint, as the tensors and metadata `Checkpoint.encode` writes.
  private func validFile() -> SafeTensorsFile {
    let (params, adam) = filledArenas()
    let bytes = Checkpoint.encode(params: params, moments: (adam.m, adam.v), state: state, modelJSON: modelJSON, configYAML: configYAML)
    return try! SafeTensors.decode(bytes, file: "valid")
  }

  /// Writes `tensors` and `metadata` with a correct `tensor_crc32` (so that the checksum is not
  /// what fails) unless `keepCRC` is set.
  private func writeFile(
    _ name: String, tensors: [SafeTensor], metadata: [String: String], keepCRC: Bool = false
  ) throws -> String {
    var meta = metadata
    if !keepCRC {
      var crc: UInt32 = 0
      for t in tensors { crc = CRC32.checksum(t.bytes, continuing: crc) }
      meta["tensor_crc32"] = String(crc)
    }
    let path = dir + "/" + name
    try TT.write(SafeTensors.encode(tensors: tensors, metadata: meta), path)
    return path
  }

  /// Expects `Checkpoint.load(path:)` to throw an error accepted by `match`, with a one-line
  /// description naming the file.
  private func assertLoadFails(
    _ path: String, _ what: String, line: UInt = #line, _ match: (Error) -> Bool
  ) {
    do {
      _ = try Checkpoint.load(path: path)
      XCTFail("\(what): loaded without error", line: line)
    } catch {
      XCTAssertTrue(match(error), "\(what): unexpected error \(type(of: error)): \(error)", line: line)
      TT.assertOneLine(String(describing: error), names: path, what, line: line)
    }
  }

  // MARK: Round trip

  func testSaveLoadRoundTripIsExact() throws {
    let (params, adam) = filledArenas()
    let path = dir + "/ck.safetensors"
    try Checkpoint.save(path: path, params: params, moments: (adam.m, adam.v), state: state, modelJSON: modelJSON, configYAML: configYAML)
    let c = try Checkpoint.load(path: path)
    XCTAssertEqual(c.path, path)
    XCTAssertEqual(c.model, model)
    XCTAssertEqual(c.state, state)
    XCTAssertEqual(c.configYAML, configYAML)
    func bits(_ a: Arena) -> [UInt32] { a.toArray().map(\.bitPattern) }
    XCTAssertEqual(bits(c.params), bits(params))
    XCTAssertEqual(c.adamM.map(bits), bits(adam.m))
    XCTAssertEqual(c.adamV.map(bits), bits(adam.v))
    XCTAssertEqual(c.params.layout, model.layout)

    // Names, order and metadata as documented (docs/ARCHITECTURE.md §4).
    let f = try SafeTensors.read(path: path)
    let names = model.layout.specs.map(\.name)
    XCTAssertEqual(f.tensors.map(\.name), names + names.map { "adam.m." + $0 } + names.map { "adam.v." + $0 })
    XCTAssertEqual(Array(names.prefix(6)), [
      "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
      "encoder.mu.weight", "encoder.mu.bias",
    ])
    XCTAssertEqual(names.last, "decoder.out.bias")
    XCTAssertEqual(f.tensor("encoder.0.weight")?.shape, [5, 12])
    XCTAssertEqual(f.tensor("decoder.out.weight")?.shape, [12, 6])
    XCTAssertEqual(f.metadata["format"], "vae-dist/1")
    for key in ["model", "step", "epoch", "seed", "world_size", "global_batch", "tensor_crc32"] {
      XCTAssertNotNil(f.metadata[key], key)
    }
    XCTAssertEqual(try Checkpoint.parseModelJSON(f.metadata["model"] ?? "", file: path), model)

    // Saving what was loaded reproduces the file byte for byte.
    let again = Checkpoint.encode(
      params: c.params, moments: (adam.m, adam.v), state: c.state, modelJSON: RunConfig.modelJSON(c.model), configYAML: c.configYAML)
    XCTAssertEqual(again, try TT.bytes(path))
  }

  func testCheckpointWithoutAdamLoadsWithoutMoments() throws {
    let (params, _) = filledArenas()
    let path = dir + "/noadam.safetensors"
    try Checkpoint.save(path: path, params: params, moments: nil, state: state, modelJSON: modelJSON, configYAML: "")
    let c = try Checkpoint.load(path: path)
    XCTAssertNil(c.adamM)
    XCTAssertNil(c.adamV)
    XCTAssertEqual(c.params.toArray().map(\.bitPattern), params.toArray().map(\.bitPattern))
  }

  func testSaveOverwritesAtomicallyAndLeavesNoTemporaryFiles() throws {
    let (params, adam) = filledArenas()
    let path = dir + "/ck.safetensors"
    try Checkpoint.save(path: path, params: params, moments: (adam.m, adam.v), state: state, modelJSON: modelJSON, configYAML: "a")
    var s2 = state
    s2.step = 2000
    try Checkpoint.save(path: path, params: params, moments: (adam.m, adam.v), state: s2, modelJSON: modelJSON, configYAML: "b")
    XCTAssertEqual(try Checkpoint.load(path: path).state.step, 2000)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["ck.safetensors"])
  }

  // MARK: Corrupt files

  func testCorruptHeaderBytes() throws {
    let path = dir + "/ck.safetensors"
    var b = SafeTensors.encode(tensors: validFile().tensors, metadata: validFile().metadata)
    for i in 8..<20 { b[i] = 0xFF }
    try TT.write(b, path)
    assertLoadFails(path, "corrupt header") {
      if case SafeTensorsError.badHeaderJSON = $0 { return true }
      return false
    }
    // Header bytes that stay UTF-8 but break the JSON.
    for i in 8..<20 { b[i] = UInt8(ascii: "A") }
    try TT.write(b, path)
    assertLoadFails(path, "header of letters") {
      if case SafeTensorsError.badHeaderJSON = $0 { return true }
      return false
    }
  }

  func testTruncatedFiles() throws {
    let full = SafeTensors.encode(tensors: validFile().tensors, metadata: validFile().metadata)
    let path = dir + "/trunc.safetensors"
    try TT.write(Array(full.dropLast(100)), path)
    assertLoadFails(path, "data block cut short") {
      if case SafeTensorsError.offsetsOutOfRange = $0 { return true }
      return false
    }
    try TT.write(Array(full.prefix(60)), path)
    assertLoadFails(path, "cut inside the header") {
      if case SafeTensorsError.headerLength = $0 { return true }
      return false
    }
    try TT.write(Array(full.prefix(5)), path)
    assertLoadFails(path, "shorter than the length prefix") {
      if case SafeTensorsError.tooShort(_, 5) = $0 { return true }
      return false
    }
    try TT.write([], path)
    assertLoadFails(path, "empty file") {
      if case SafeTensorsError.tooShort(_, 0) = $0 { return true }
      return false
    }
    let missing = dir + "/does-not-exist.safetensors"
    assertLoadFails(missing, "missing file") { ($0 as? FileIOError)?.path == missing }
  }

  func testWrongDtype() throws {
    let v = validFile()
    let tensors = v.tensors.map { t -> SafeTensor in
      guard t.name == "encoder.1.bias" else { return t }
      let doubles = floatsFromBytes(t.bytes).map(Double.init)
      let bytes = doubles.flatMap { d in withUnsafeBytes(of: d.bitPattern.littleEndian) { Array($0) } }
      return SafeTensor(name: t.name, dtype: .F64, shape: t.shape, bytes: bytes)
    }
    let path = try writeFile("f64.safetensors", tensors: tensors, metadata: v.metadata)
    assertLoadFails(path, "F64 tensor") {
      if case SafeTensorsError.wrongDtype(_, "encoder.1.bias", .F32, .F64) = $0 { return true }
      return false
    }
  }

  func testMissingTensor() throws {
    let v = validFile()
    let path = try writeFile(
      "missing.safetensors", tensors: v.tensors.filter { $0.name != "decoder.out.bias" }, metadata: v.metadata)
    assertLoadFails(path, "missing parameter") {
      if case SafeTensorsError.missingTensor(_, "decoder.out.bias") = $0 { return true }
      return false
    }
    // Adam's first moments present but a second moment missing: not silently a fresh optimizer.
    let path2 = try writeFile(
      "missing-v.safetensors", tensors: v.tensors.filter { $0.name != "adam.v.encoder.mu.weight" }, metadata: v.metadata)
    assertLoadFails(path2, "missing Adam moment") {
      if case SafeTensorsError.missingTensor(_, "adam.v.encoder.mu.weight") = $0 { return true }
      return false
    }
  }

  /// A valid checkpoint whose `model` metadata claims `claimed` (tensors and checksums kept).
  private func fileClaiming(_ claimed: ModelConfig, _ name: String) throws -> String {
    let v = validFile()
    var meta = v.metadata
    meta["model"] = RunConfig.modelJSON(claimed)
    return try writeFile(name, tensors: v.tensors, metadata: meta)
  }

  func testShapeDisagreesWithModelMetadata() throws {
    let v = validFile()
    // The metadata claims zdim 3; the tensors were written for zdim 2.
    var m = model
    m.zdim = 3
    let path = try fileClaiming(m, "zdim.safetensors")
    assertLoadFails(path, "zdim in metadata") {
      if case SafeTensorsError.shapeMismatch(_, "encoder.mu.weight", [3, 4], [2, 4]) = $0 { return true }
      return false
    }
    // A transposed weight with the right element count.
    let tensors = v.tensors.map { t -> SafeTensor in
      t.name == "decoder.0.weight" ? SafeTensor(name: t.name, dtype: t.dtype, shape: [2, 3], bytes: t.bytes) : t
    }
    let path2 = try writeFile("transposed.safetensors", tensors: tensors, metadata: v.metadata)
    assertLoadFails(path2, "transposed weight") {
      if case SafeTensorsError.shapeMismatch(_, "decoder.0.weight", [3, 2], [2, 3]) = $0 { return true }
      return false
    }
  }

  /// A `model` claiming 1048576 inputs and 100000-wide layers (~850 GB) fails in one line
  /// before anything is allocated: its parameter count is over the model limit, and a model
  /// under the limit is still checked against the tensors before its arena is allocated.
  func testModelMetadataAskingForHugeArenasFailsBeforeAllocating() throws {
    var m = model
    m.inputSize = 1_048_576
    m.hidden = [100_000, 100_000]
    m.decoderHidden = [100_000, 100_000]
    m.zdim = 10_000
    assertLoadFails(try fileClaiming(m, "huge.safetensors"), "huge model in metadata") {
      "\($0)".contains("metadata field 'model'")
    }
    m.inputSize = 20_000
    m.hidden = [20_000, 20_000]
    m.decoderHidden = [20_000, 20_000]
    m.zdim = 1_000
    let path = try fileClaiming(m, "large.safetensors")
    assertLoadFails(path, "large model in metadata") {
      if case SafeTensorsError.shapeMismatch(_, "encoder.0.weight", [20_000, 20_000], [5, 12]) = $0 { return true }
      return false
    }
  }

  func testFlippedDataByteFailsTheChecksum() throws {
    let path = dir + "/flip.safetensors"
    let (params, adam) = filledArenas()
    try Checkpoint.save(path: path, params: params, moments: (adam.m, adam.v), state: state, modelJSON: modelJSON, configYAML: configYAML)
    var b = try TT.bytes(path)
    // Flip one bit in the middle of the data block (a parameter's mantissa).
    let headerLength = Int(b[0]) | Int(b[1]) << 8 | Int(b[2]) << 16 | Int(b[3]) << 24
    b[8 + headerLength + 13] ^= 0x01
    try TT.write(b, path)
    // Byte 13 of the data block lies in the file's first tensor: the error names it.
    let first = try XCTUnwrap(try SafeTensors.read(path: path).tensors.first?.name)
    assertLoadFails(path, "flipped data bit") {
      if case CheckpointError.corruptTensor(_, let name, _, _) = $0 { return name == first && "\($0)".contains(first) }
      return false
    }
  }

  func testMissingOrInvalidFormat() throws {
    let v = validFile()
    var meta = v.metadata
    meta["format"] = nil
    let p1 = try writeFile("noformat.safetensors", tensors: v.tensors, metadata: meta)
    assertLoadFails(p1, "missing format") {
      if case CheckpointError.notACheckpoint(_, nil) = $0 { return true }
      return false
    }
    meta["format"] = "vae-dist/2"
    let p2 = try writeFile("format2.safetensors", tensors: v.tensors, metadata: meta)
    assertLoadFails(p2, "other format") {
      if case CheckpointError.notACheckpoint(_, "vae-dist/2") = $0 { return true }
      return false
    }
    // A plain safetensors file (no metadata at all), such as one saved by PyTorch.
    let p3 = try writeFile("plain.safetensors", tensors: v.tensors, metadata: [:], keepCRC: true)
    assertLoadFails(p3, "no metadata") {
      if case CheckpointError.notACheckpoint(_, nil) = $0 { return "\($0)".contains("not a vae-dist checkpoint") }
      return false
    }
  }

  func testBadTrainingStateMetadata() throws {
    let v = validFile()
    let cases: [(String, String?, String)] = [
      ("step", "-1", "step"), ("step", nil, "step"), ("seed", "x", "seed"),
      ("world_size", "1.5", "world_size"), ("data_checksum", "4294967296", "data_checksum"),
      ("model", "{\"zdim\": 2}", "model.input_size"),
      ("model", "not json", "model"),
    ]
    for (key, value, field) in cases {
      var meta = v.metadata
      meta[key] = value
      let path = try writeFile("bad-\(key).safetensors", tensors: v.tensors, metadata: meta)
      assertLoadFails(path, "\(key)=\(value ?? "nil")") {
        if case CheckpointError.badMetadata(_, let f, _) = $0 { return f == field }
        return false
      }
    }
  }

  /// The step checkpoints and final are found, newest first; junk in the directory is ignored.
  func testCandidatesOrder() throws {
    let run = dir + "/run"
    let ck = run + "/checkpoints"
    try FileManager.default.createDirectory(atPath: ck, withIntermediateDirectories: true)
    for name in ["step-00000005.safetensors", "step-00000120.safetensors", "step-00000040.safetensors",
                 "notes.txt", "step-x.safetensors", ".step-00000200.safetensors.tmp-1-2"] {
      try TT.write([0], ck + "/" + name)
    }
    XCTAssertEqual(Checkpoint.candidates(runDirectory: run).map { ($0 as NSString).lastPathComponent }, [
      "step-00000120.safetensors", "step-00000040.safetensors", "step-00000005.safetensors",
    ])
    try TT.write([0], run + "/final.safetensors")
    XCTAssertEqual(Checkpoint.candidates(runDirectory: run).first, run + "/final.safetensors")
    XCTAssertEqual(Checkpoint.stepPath(runDirectory: run, step: 42), ck + "/step-00000042.safetensors")
  }
}
