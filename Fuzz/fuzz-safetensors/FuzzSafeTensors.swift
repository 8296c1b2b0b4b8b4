// Fuzz target: the safetensors reader (`SafeTensors.decode`) and the checkpoint check on top of
// it (`Checkpoint.load`). Built for libFuzzer by scripts/fuzz (-DFUZZING); a plain build makes
// the corpus replayer at the bottom instead.

import Formats
import FuzzSupport
import VAE
import VAEDist

private let fileName = "fuzz.safetensors"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzCheck.run(data, size, fuzzOne) }

/// Decodes `bytes`; a decoded file must describe its data block exactly and survive a
/// re-encode unchanged; then the same bytes as a vae-dist checkpoint.
func fuzzOne(_ bytes: [UInt8]) {
  guard let file = FuzzCheck.parsed(naming: fileName, { try SafeTensors.decode(bytes, file: fileName) }) else { return }
  checkDataBlock(file, bytes)
  checkReencode(file)
  checkCheckpoint(bytes)
}

/// The tensors, in file order, are the data block: each one's bytes lie inside it, are shape
/// product × dtype size long, and together they cover it with no gap or overlap.
private func checkDataBlock(_ file: SafeTensorsFile, _ bytes: [UInt8]) {
  var headerLength = 0
  for i in 0..<8 { headerLength |= Int(bytes[i]) << (8 * i) }
  let data = bytes[(8 + headerLength)...]
  var at = data.startIndex
  var names = Set<String>()
  for t in file.tensors {
    precondition(names.insert(t.name).inserted, "decoded two tensors named \(t.name)")
    precondition(t.name != "__metadata__", "decoded a tensor named __metadata__")
    let count = t.elementCount
    precondition(count != nil && count! * t.dtype.size == t.bytes.count,
                 "tensor \(t.name): \(t.bytes.count) bytes for shape \(t.shape) × \(t.dtype)")
    precondition(at + t.bytes.count <= data.endIndex, "tensor \(t.name) reaches past the data block")
    precondition(data[at..<(at + t.bytes.count)].elementsEqual(t.bytes), "tensor \(t.name): bytes are not its data_offsets range")
    at += t.bytes.count
  }
  precondition(at == data.endIndex, "tensors cover \(at - data.startIndex) of the data block's \(data.count) bytes")
}

/// Encoding the decoded tensors and metadata gives a file that decodes to the same values, and
/// whose encoding is the same bytes again.
private func checkReencode(_ file: SafeTensorsFile) {
  let encoded = SafeTensors.encode(tensors: file.tensors, metadata: file.metadata)
  let again: SafeTensorsFile
  do {
    again = try SafeTensors.decode(encoded, file: "reencoded.safetensors")
  } catch {
    preconditionFailure("re-encoded file does not decode: \(error)")
  }
  precondition(again.tensors == file.tensors, "re-encoded file decodes to other tensors")
  precondition(again.metadata == file.metadata, "re-encoded file decodes to other metadata")
  precondition(SafeTensors.encode(tensors: again.tensors, metadata: again.metadata) == encoded,
               "encoding is not stable under decode and encode")
}

/// As a checkpoint: either a one-line error naming the file, or parameters equal to their
/// tensors, and a re-save that loads to the same model, state, parameters and moments.
private func checkCheckpoint(_ bytes: [UInt8]) {
  guard let ck = FuzzCheck.parsed(naming: fileName, { try Checkpoint.load(bytes: bytes, path: fileName) }) else { return }
  precondition((ck.adamM == nil) == (ck.adamV == nil), "only one of Adam's moments loaded")
  checkArena(ck.params, "", ck.file)
  if let m = ck.adamM, let v = ck.adamV {
    checkArena(m, "adam.m.", ck.file)
    checkArena(v, "adam.v.", ck.file)
  }
  let saved = Checkpoint.encode(
    params: ck.params, moments: ck.adamM.map { ($0, ck.adamV!) }, state: ck.state,
    modelJSON: RunConfig.modelJSON(ck.model), configYAML: ck.configYAML, standardization: ck.standardization)
  let back: LoadedCheckpoint
  do {
    back = try Checkpoint.load(bytes: saved, path: "resaved.safetensors")
  } catch {
    preconditionFailure("a loaded checkpoint saved again does not load: \(error)")
  }
  precondition(back.model == ck.model, "re-saved checkpoint has another model: \(back.model) vs \(ck.model)")
  // Descriptions, so that a NaN in the metrics window compares equal to itself.
  precondition("\(back.state)" == "\(ck.state)", "re-saved checkpoint has another state: \(back.state) vs \(ck.state)")
  precondition(back.configYAML == ck.configYAML, "re-saved checkpoint has another config")
  precondition(bitsEqual(back.params, ck.params), "re-saved checkpoint has other parameters")
  precondition((back.adamM == nil) == (ck.adamM == nil), "re-saved checkpoint lost or gained Adam's moments")
  if let m = back.adamM, let v = back.adamV {
    precondition(bitsEqual(m, ck.adamM!) && bitsEqual(v, ck.adamV!), "re-saved checkpoint has other moments")
  }
}

/// Every tensor of `arena`'s layout holds the floats of the file's tensor `prefix` + name.
private func checkArena(_ arena: Arena, _ prefix: String, _ file: SafeTensorsFile) {
  for (i, spec) in arena.layout.specs.enumerated() {
    guard let t = file.tensor(prefix + spec.name) else { preconditionFailure("loaded \(prefix + spec.name) from nowhere") }
    let stored = floatsFromBytes(t.bytes).map(\.bitPattern)
    let loaded = arena.data[arena.layout.range(of: i)].map(\.bitPattern)
    precondition(stored == loaded, "\(prefix + spec.name): loaded values differ from the file's")
  }
}

private func bitsEqual(_ a: Arena, _ b: Arena) -> Bool {
  a.layout == b.layout && a.data.map(\.bitPattern) == b.data.map(\.bitPattern)
}

#if !FUZZING
@main
struct Replay {
  static func main() { CorpusReplay.main("fuzz-safetensors", fuzzOne) }
}
#endif
