import Foundation

// MARK: - Errors

/// Why a safetensors file could not be read, written or used. Every description is one line
/// naming the file, the tensor or field, and what was expected.
public enum SafeTensorsError: Error, CustomStringConvertible, Equatable {
  /// Opening or reading the file failed (`detail` as in `FileIOError.detail`).
  case io(file: String, detail: String)
  /// The file is shorter than the 8-byte header length.
  case tooShort(file: String, size: Int)
  /// The header length does not fit in the file (or exceeds the 100 MB limit of the format).
  case headerLength(file: String, length: UInt64, fileSize: Int)
  /// The header is not a UTF-8 JSON object (or has duplicate keys).
  case badHeaderJSON(file: String, detail: String)
  /// A tensor's header entry is malformed (not an object, bad shape or offsets, unknown field).
  case badEntry(file: String, tensor: String, detail: String)
  /// `__metadata__` is not an object of strings, or a required metadata key is absent.
  case badMetadata(file: String, key: String, detail: String)
  /// A tensor's `data_offsets` are reversed or reach past the end of the data block.
  case offsetsOutOfRange(file: String, tensor: String, begin: Int, end: Int, dataSize: Int)
  /// shape × dtype size differs from the byte span of `data_offsets`.
  case sizeMismatch(file: String, tensor: String, expectedBytes: Int, actualBytes: Int)
  /// Two tensors' byte ranges overlap.
  case overlapping(file: String, tensor: String, other: String, begin: Int, otherEnd: Int)
  /// Bytes `[begin, end)` of the data block belong to no tensor (a gap or trailing bytes).
  case uncoveredData(file: String, begin: Int, end: Int)
  /// The dtype tag is not one this reader knows (sub-byte types are not supported).
  case unsupportedDtype(file: String, tensor: String, dtype: String)
  /// A tensor the caller asked for is absent.
  case missingTensor(file: String, tensor: String)
  /// A tensor has a different dtype than the caller asked for.
  case wrongDtype(file: String, tensor: String, expected: DType, found: DType)
  /// A tensor has a different shape than the caller asked for.
  case shapeMismatch(file: String, tensor: String, expected: [Int], found: [Int])
  /// The data block's checksum differs from the one stored in the metadata.
  case checksumMismatch(file: String, expected: String, actual: String)

  /// One line: `<file>: <what is wrong>, expected <what>`.
  public var description: String {
    switch self {
    case .io(let file, let detail):
      return "\(oneLine(file)): I/O error: \(oneLine(detail))"
    case .tooShort(let file, let size):
      return "\(oneLine(file)): file is \(size) bytes, expected at least 8 (the header length)"
    case .headerLength(let file, let length, let fileSize):
      return "\(oneLine(file)): not a safetensors file, or truncated: header length \(length) does not fit, expected at most "
        + "\(max(0, fileSize - 8)) (file size \(fileSize) − 8) and at most \(SafeTensors.maxHeaderLength)"
    case .badHeaderJSON(let file, let detail):
      return "\(oneLine(file)): header is not a valid JSON object: \(oneLine(detail))"
    case .badEntry(let file, let tensor, let detail):
      return "\(oneLine(file)): tensor \(quoted(tensor)): \(oneLine(detail))"
    case .badMetadata(let file, let key, let detail):
      return "\(oneLine(file)): __metadata__ key \(quoted(key)): \(oneLine(detail))"
    case .offsetsOutOfRange(let file, let tensor, let begin, let end, let dataSize):
      return "\(oneLine(file)): tensor \(quoted(tensor)): data_offsets [\(begin), \(end)] out of range, "
        + "expected begin ≤ end ≤ \(dataSize) (the data block size; truncated file?)"
    case .sizeMismatch(let file, let tensor, let expectedBytes, let actualBytes):
      return "\(oneLine(file)): tensor \(quoted(tensor)): shape × dtype size is \(expectedBytes) bytes "
        + "but data_offsets span \(actualBytes) bytes"
    case .overlapping(let file, let tensor, let other, let begin, let otherEnd):
      return "\(oneLine(file)): tensor \(quoted(tensor)) starts at data offset \(begin), inside tensor "
        + "\(quoted(other)) which ends at \(otherEnd); expected non-overlapping data_offsets"
    case .uncoveredData(let file, let begin, let end):
      return "\(oneLine(file)): data block bytes [\(begin), \(end)) belong to no tensor, "
        + "expected tensors to cover the data block contiguously"
    case .unsupportedDtype(let file, let tensor, let dtype):
      return "\(oneLine(file)): tensor \(quoted(tensor)): unsupported dtype \(quoted(dtype)), expected one of "
        + DType.allCases.map(\.rawValue).sorted().joined(separator: ", ")
    case .missingTensor(let file, let tensor):
      return "\(oneLine(file)): tensor \(quoted(tensor)) not found"
    case .wrongDtype(let file, let tensor, let expected, let found):
      return "\(oneLine(file)): tensor \(quoted(tensor)): expected dtype \(expected.rawValue), found \(quoted(found.rawValue))"
    case .shapeMismatch(let file, let tensor, let expected, let found):
      return "\(oneLine(file)): tensor \(quoted(tensor)): expected shape \(expected), found \(found)"
    case .checksumMismatch(let file, let expected, let actual):
      return "\(oneLine(file)): data checksum mismatch, expected \(quoted(expected)) (from the header), "
        + "data block has \(quoted(actual))"
    }
  }
}
