// Fuzz target: the `.npy` header parser (`NPY.parseHeader`) over the input as a whole file, and
// the writer's encoding (`NPY.encode`, the bytes `NPY.write` and `NPYWriter` put on disk) of
// what it parsed. Built for libFuzzer by scripts/fuzz (-DFUZZING); a plain build makes the
// corpus replayer at the bottom instead.

import Formats
import FuzzSupport

private let fileName = "fuzz-input.npy"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzCheck.run(data, size, fuzzOne) }

func fuzzOne(_ bytes: [UInt8]) {
  guard let header = parse(bytes, fileSize: bytes.count) else { return }
  checkConsistent(header, bytes)
  checkExactSize(bytes)
  checkRewrite(header, bytes)
}

private func parse(_ bytes: [UInt8], fileSize: Int) -> NPY.Header? {
  FuzzCheck.parsed(naming: fileName) { try NPY.parseHeader(bytes, fileSize: fileSize, file: fileName) }
}

/// The header's fields agree with each other and with the bytes: magic, version, the declared
/// header length, rows × row width × item size filling the rest of the file exactly.
private func checkConsistent(_ h: NPY.Header, _ bytes: [UInt8]) {
  precondition(bytes.starts(with: NPY.magic), "parsed without the magic")
  precondition(Int(bytes[6]) == h.version && (1...3).contains(h.version) && bytes[7] == 0, "version \(h.version)")
  let lengthSize = h.version == 1 ? 2 : 4
  var declared = 0
  for i in (0..<lengthSize).reversed() { declared = declared << 8 | Int(bytes[8 + i]) }
  precondition(h.dataOffset == 8 + lengthSize + declared, "data offset \(h.dataOffset), header length \(declared)")
  precondition((1...NPY.maxDimensions).contains(h.shape.count), "\(h.shape.count) dimensions")
  precondition(h.shape.allSatisfy { $0 >= 1 } && h.rows == h.shape[0], "shape \(h.shape), rows \(h.rows)")
  precondition(h.rowWidth == h.shape.dropFirst().reduce(1, *), "row width \(h.rowWidth) for shape \(h.shape)")
  precondition(h.byteCount == h.rows * h.rowWidth * h.dtype.itemSize, "byte count \(h.byteCount)")
  precondition(h.dataOffset + h.byteCount == bytes.count, "\(h.dataOffset) + \(h.byteCount) ≠ \(bytes.count) bytes")
  precondition(h.dataOffset % h.dtype.itemSize == 0, "misaligned data at \(h.dataOffset)")
}

/// The size must be exact: one byte less is truncated data, one more is a trailing byte.
private func checkExactSize(_ bytes: [UInt8]) {
  precondition(parse(Array(bytes.dropLast()), fileSize: bytes.count - 1) == nil, "parsed with its last byte cut")
  precondition(parse(bytes + [0], fileSize: bytes.count + 1) == nil, "parsed with a byte appended")
}

/// Written again, the array has the same dtype, shape and data bytes, in format 1.0 with the
/// data at a multiple of 64, as NumPy writes it.
private func checkRewrite(_ h: NPY.Header, _ bytes: [UInt8]) {
  let data = Array(bytes[h.dataOffset...])
  let again: [UInt8]
  do {
    again = try NPY.encode(dtype: h.dtype, shape: h.shape, data: data, file: fileName)
  } catch {
    preconditionFailure("a parsed header does not encode: \(error)")
  }
  guard let h2 = parse(again, fileSize: again.count) else { preconditionFailure("the re-encoded file does not parse") }
  precondition(h2.dtype == h.dtype && h2.shape == h.shape && h2.rowWidth == h.rowWidth, "re-encoded header differs")
  precondition(h2.version == 1 && h2.dataOffset % 64 == 0, "re-encoded as version \(h2.version) at \(h2.dataOffset)")
  precondition(again[h2.dataOffset...].elementsEqual(data), "re-encoded data differs")
  precondition(h2 == (try? NPY.Header(dtype: h.dtype, shape: h.shape, file: fileName)), "NPY.Header(dtype:shape:) differs")
}

#if !FUZZING
@main
struct Replay {
  static func main() { CorpusReplay.main("fuzz-npy", fuzzOne) }
}
#endif
