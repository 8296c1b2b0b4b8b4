import Formats
import Foundation
import VAE
import VAEData

/// Training state stored beside the tensors of a checkpoint (as safetensors string metadata).
/// Nothing time-dependent is stored, so two runs with the same seed write identical bytes.
public struct TrainingState: Sendable, Hashable {
  public var step: Int
  public var epoch: Int
  public var seed: UInt64
  public var worldSize: Int
  /// How many parts the global batch was split into: ranks × micro-batches per rank. A resume
  /// that keeps this count on fewer or more ranks keeps the rows each part sums
  /// (`ParallelOptions.microBatches` nil). Checkpoints from before the field: `worldSize`.
  public var shards: Int
  public var globalBatch: Int
  public var adamStep: Int
  public var dataChecksum: UInt32
  /// Partial sums (over all ranks) of the current metrics window, so a resumed run logs the
  /// same lines.
  public var windowRecon: Double
  public var windowKL: Double
  public var windowCount: Int
  public init(
    step: Int, epoch: Int, seed: UInt64, worldSize: Int, shards: Int? = nil, globalBatch: Int, adamStep: Int,
    dataChecksum: UInt32, windowRecon: Double = 0,
    windowKL: Double = 0, windowCount: Int = 0
  ) {
    self.step = step
    self.epoch = epoch
    self.seed = seed
    self.worldSize = worldSize
    self.shards = shards ?? worldSize
    self.globalBatch = globalBatch
    self.adamStep = adamStep
    self.dataChecksum = dataChecksum
    self.windowRecon = windowRecon
    self.windowKL = windowKL
    self.windowCount = windowCount
  }
}

/// A checkpoint read back: the model's shape, its parameters, Adam's moments when present, the
/// training state and the resolved config.
public struct LoadedCheckpoint {
  public let path: String
  public let model: ModelConfig
  public let params: Arena
  public let adamM: Arena?
  public let adamV: Arena?
  public let state: TrainingState
  public let configYAML: String
  public let file: SafeTensorsFile
  /// The data's standardisation (`data.standardize`): tensors `data.mean` and `data.std`.
  public var standardization: Standardization? = nil
}

public enum CheckpointError: Error, CustomStringConvertible {
  /// A safetensors file without vae-dist's `format` metadata (e.g. written by PyTorch, or by
  /// `vae-dist export`): weights, but no training state.
  case notACheckpoint(file: String, format: String?)
  case badMetadata(file: String, field: String, expected: String)
  /// A tensor's bytes do not match the CRC-32 stored when it was written.
  case corruptTensor(file: String, tensor: String, stored: UInt32, computed: UInt32)
  case mismatch(file: String, field: String, checkpoint: String, run: String)

  public var description: String {
    switch self {
    case .notACheckpoint(let file, let format):
      "\(file): not a vae-dist checkpoint (metadata 'format' is \(format.map { "'\($0)'" } ?? "absent"), expected '\(Checkpoint.format)')"
    case .corruptTensor(let file, let tensor, let stored, let computed):
      "\(file): tensor \(tensor) is corrupt: data checksum \(hexCRC(computed)), expected \(hexCRC(stored))"
    case .badMetadata(let file, let field, let expected):
      "\(file): metadata field '\(field)': expected \(expected)"
    case .mismatch(let file, let field, let checkpoint, let run):
      "\(file): cannot resume: \(field) is \(checkpoint) in the checkpoint but \(run) in this run"
    }
  }
}

/// safetensors checkpoints (docs/ARCHITECTURE.md §4): tensors named like a PyTorch module, Adam moments
/// as `adam.m.<name>` / `adam.v.<name>`, metadata `format: vae-dist/1`, atomic writes.
public enum Checkpoint {
  public static let format = "vae-dist/1"

  public static func encode(
    params: Arena, moments: (m: Arena, v: Arena)?, state: TrainingState, modelJSON: String, configYAML: String,
    standardization: Standardization? = nil
  ) -> [UInt8] {
    var tensors: [SafeTensor] = []
    func add(_ prefix: String, _ arena: Arena) {
      for (i, spec) in arena.layout.specs.enumerated() {
        let r = arena.layout.range(of: i)
        let bytes = floatBytes(UnsafeBufferPointer(rebasing: arena.data[r]))
        tensors.append(SafeTensor(name: prefix + spec.name, dtype: .F32, shape: spec.shape, bytes: bytes))
      }
    }
    add("", params)
    if let moments {
      add("adam.m.", moments.m)
      add("adam.v.", moments.v)
    }
    if let st = standardization {
      for (name, values) in [("data.mean", st.mean), ("data.std", st.std)] {
        let bytes = values.withUnsafeBufferPointer { floatBytes($0) }
        tensors.append(SafeTensor(name: name, dtype: .F32, shape: [values.count], bytes: bytes))
      }
    }
    // One CRC-32 per tensor: other safetensors writers reorder the data block, and a mismatch
    // can name the tensor.
    let crcs = "{" + tensors.map { "\"\($0.name)\":\(CRC32.checksum($0.bytes))" }.joined(separator: ",") + "}"
    let meta: [String: String] = [
      "format": format,
      "model": modelJSON,
      "config": configYAML,
      "step": String(state.step),
      "epoch": String(state.epoch),
      "seed": String(state.seed),
      "world_size": String(state.worldSize),
      "shards": String(state.shards),
      "global_batch": String(state.globalBatch),
      "adam_step": String(state.adamStep),
      "data_checksum": String(state.dataChecksum),
      "tensor_crc32": crcs,
      "window_recon": String(state.windowRecon),
      "window_kl": String(state.windowKL),
      "window_count": String(state.windowCount),
    ]
    return SafeTensors.encode(tensors: tensors, metadata: meta)
  }

  public static func save(
    path: String, params: Arena, moments: (m: Arena, v: Arena)?, state: TrainingState, modelJSON: String,
    configYAML: String, standardization: Standardization? = nil
  ) throws {
    let bytes = encode(
      params: params, moments: moments, state: state, modelJSON: modelJSON, configYAML: configYAML,
      standardization: standardization)
    try FileIO.writeAtomically(bytes, to: path)
  }

  /// Reads and validates a checkpoint: format, CRC of the tensor data, every parameter tensor
  /// present with the shape the model config implies, F32 dtype.
  public static func load(path: String) throws -> LoadedCheckpoint {
    try load(bytes: try FileIO.readAll(path: path), path: path)
  }

  /// As `load(path:)`, from bytes already read (e.g. broadcast by rank 0).
  public static func load(bytes: [UInt8], path: String) throws -> LoadedCheckpoint {
    let file = try SafeTensors.decode(bytes, file: path)
    let meta = MetadataReader(meta: file.metadata, path: path)
    guard file.metadata["format"] == format else {
      throw CheckpointError.notACheckpoint(file: path, format: file.metadata["format"])
    }
    let model = try parseModelJSON(try meta.field("model"), file: path)
    try verifyChecksums(file, stored: try meta.field("tensor_crc32"))
    let layout = model.layout
    guard let params = try arena(file, "", layout: layout, required: true) else {
      throw SafeTensorsError.missingTensor(file: path, tensor: layout.specs[0].name)
    }
    let m = try arena(file, "adam.m.", layout: layout, required: false)
    let v = m == nil ? nil : try arena(file, "adam.v.", layout: layout, required: true)
    return LoadedCheckpoint(
      path: path, model: model, params: params, adamM: m, adamV: v, state: try meta.state(),
      configYAML: file.metadata["config"] ?? "", file: file,
      standardization: try standardization(file, width: model.targetSize))
  }

  /// `data.mean` and `data.std` when present: both, F32 of the model's width, std finite and > 0.
  static func standardization(_ file: SafeTensorsFile, width: Int) throws -> Standardization? {
    let mean = file.tensor("data.mean"), std = file.tensor("data.std")
    guard mean != nil || std != nil else { return nil }
    var values: [[Float]] = []
    for (name, t) in [("data.mean", mean), ("data.std", std)] {
      guard let t else { throw SafeTensorsError.missingTensor(file: file.file, tensor: name) }
      guard t.dtype == .F32 else { throw SafeTensorsError.wrongDtype(file: file.file, tensor: name, expected: .F32, found: t.dtype) }
      guard t.shape == [width] else {
        throw SafeTensorsError.shapeMismatch(file: file.file, tensor: name, expected: [width], found: t.shape)
      }
      values.append(floatsFromBytes(t.bytes))
    }
    guard values[0].allSatisfy(\.isFinite), values[1].allSatisfy({ $0.isFinite && $0 > 0 }) else {
      throw CheckpointError.badMetadata(file: file.file, field: "data.std", expected: "finite means and standard deviations > 0")
    }
    return Standardization(mean: values[0], std: values[1])
  }

  /// `tensor_crc32` is a JSON object of one CRC-32 per tensor (or, in checkpoints written
  /// before, one CRC-32 of the data block in file order).
  static func verifyChecksums(_ file: SafeTensorsFile, stored: String) throws {
    if let whole = UInt32(stored) {
      var crc: UInt32 = 0
      for t in file.tensors { crc = CRC32.checksum(t.bytes, continuing: crc) }
      guard whole == crc else {
        throw SafeTensorsError.checksumMismatch(file: file.file, expected: hexCRC(whole), actual: hexCRC(crc))
      }
      return
    }
    guard let map = try? JSONSerialization.jsonObject(with: Data(stored.utf8)) as? [String: Any] else {
      throw CheckpointError.badMetadata(file: file.file, field: "tensor_crc32", expected: "a JSON object of CRC-32s")
    }
    for t in file.tensors {
      guard let n = map[t.name] as? NSNumber, let want = UInt32(exactly: n.doubleValue) else {
        throw CheckpointError.badMetadata(file: file.file, field: "tensor_crc32", expected: "a CRC-32 of tensor \(t.name)")
      }
      let got = CRC32.checksum(t.bytes)
      guard got == want else {
        throw CheckpointError.corruptTensor(file: file.file, tensor: t.name, stored: want, computed: got)
      }
    }
  }

  /// The tensors `prefix` + each name of `layout` as one arena: all present (nil when not
  /// `required` and the first is absent), F32, of the layout's shapes. All are checked before
  /// the arena is allocated: the layout comes from the file's metadata, which could otherwise
  /// ask for any amount of memory.
  static func arena(_ file: SafeTensorsFile, _ prefix: String, layout: ParameterLayout, required: Bool) throws -> Arena? {
    if !required, file.tensor(prefix + layout.specs[0].name) == nil { return nil }
    var tensors: [SafeTensor] = []
    for spec in layout.specs {
      let name = prefix + spec.name
      guard let t = file.tensor(name) else { throw SafeTensorsError.missingTensor(file: file.file, tensor: name) }
      guard t.dtype == .F32 else {
        throw SafeTensorsError.wrongDtype(file: file.file, tensor: name, expected: .F32, found: t.dtype)
      }
      guard t.shape == spec.shape else {
        throw SafeTensorsError.shapeMismatch(file: file.file, tensor: name, expected: spec.shape, found: t.shape)
      }
      tensors.append(t)
    }
    let a = Arena(layout: layout)
    for (spec, t) in zip(layout.specs, tensors) { a.setValues(named: spec.name, floatsFromBytes(t.bytes)) }
    return a
  }

  /// Typed reads of the string metadata, each error naming the field.
  struct MetadataReader {
    let meta: [String: String]
    let path: String

    func field(_ k: String) throws -> String {
      guard let v = meta[k] else { throw CheckpointError.badMetadata(file: path, field: k, expected: "present") }
      return v
    }
    func int(_ k: String) throws -> Int {
      guard let v = Int(try field(k)), v >= 0 else {
        throw CheckpointError.badMetadata(file: path, field: k, expected: "a non-negative integer")
      }
      return v
    }
    func double(_ k: String) throws -> Double {
      guard let v = Double(try field(k)) else {
        throw CheckpointError.badMetadata(file: path, field: k, expected: "a number")
      }
      return v
    }
    func state() throws -> TrainingState {
      guard let seed = UInt64(try field("seed")) else {
        throw CheckpointError.badMetadata(file: path, field: "seed", expected: "an unsigned integer")
      }
      guard let dataChecksum = UInt32(try field("data_checksum")) else {
        throw CheckpointError.badMetadata(file: path, field: "data_checksum", expected: "a CRC-32")
      }
      let world = try int("world_size")
      let shards = meta["shards"] == nil ? world : try int("shards")
      guard world >= 1, shards >= world, shards % world == 0 else {
        throw CheckpointError.badMetadata(file: path, field: "shards", expected: "a positive multiple of world_size (\(world))")
      }
      return TrainingState(
        step: try int("step"), epoch: try int("epoch"), seed: seed, worldSize: world, shards: shards,
        globalBatch: try int("global_batch"), adamStep: try int("adam_step"), dataChecksum: dataChecksum,
        windowRecon: try double("window_recon"), windowKL: try double("window_kl"),
        windowCount: try int("window_count"))
    }
  }

  /// Parses the `model` metadata JSON back into a `ModelConfig`, checking every field against
  /// the config schema.
  public static func parseModelJSON(_ text: String, file: String) throws -> ModelConfig {
    guard let obj = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
      throw CheckpointError.badMetadata(file: file, field: "model", expected: "a JSON object")
    }
    do {
      return try ConfigSchema.decodeModel(obj)
    } catch {
      throw CheckpointError.badMetadata(file: file, field: error.path, expected: error.expected)
    }
  }

  /// Checkpoints in `directory/checkpoints` and `directory/final.safetensors`, newest first
  /// by step number in the name (final last-resort first, as it is the end of a run).
  public static func candidates(runDirectory: String) -> [String] {
    let dir = (runDirectory as NSString).appendingPathComponent("checkpoints")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []
    let steps = names.compactMap { n -> (Int, String)? in
      guard n.hasPrefix("step-"), n.hasSuffix(".safetensors"),
        let s = Int(n.dropFirst(5).dropLast(12))
      else { return nil }
      return (s, (dir as NSString).appendingPathComponent(n))
    }.sorted { $0.0 > $1.0 }
    var out: [String] = []
    let final = (runDirectory as NSString).appendingPathComponent("final.safetensors")
    if FileManager.default.fileExists(atPath: final) { out.append(final) }
    return out + steps.map(\.1)
  }

  public static func stepPath(runDirectory: String, step: Int) -> String {
    let name = "step-" + String(format: "%08d", step) + ".safetensors"
    return ((runDirectory as NSString).appendingPathComponent("checkpoints") as NSString)
      .appendingPathComponent(name)
  }
}

/// A CRC-32 as every message shows one: eight hex digits. (Checkpoint metadata stores them in
/// decimal, as written since the first format.)
func hexCRC(_ crc: UInt32) -> String { String(format: "%08x", crc) }
