import CZlib

/// Why a gzip stream could not be decompressed: the byte offset in the compressed input near
/// which the problem was found and a one-line explanation.
public struct GzipError: Error, CustomStringConvertible, Equatable, Sendable {
  /// Offset into the compressed input (bytes consumed when the problem was found).
  public let offset: Int
  /// One line: what went wrong.
  public let detail: String

  public init(offset: Int, detail: String) {
    self.offset = offset
    self.detail = detail
  }

  public var description: String { "\(detail) (compressed byte offset \(offset))" }
}

/// In-memory gunzip over zlib. Reads whole files: MNIST's largest file is 47 MB decompressed.
public enum Gzip {
  /// Upper bound on the decompressed size of one input (4 GiB): a defence against
  /// decompression bombs, far above any data set this package reads.
  public static let defaultMaxOutput = 1 << 32

  /// True when `bytes` starts with the gzip magic `1f 8b` (detection never looks at names).
  public static func isGzip(_ bytes: [UInt8]) -> Bool {
    bytes.count >= 2 && bytes[0] == 0x1F && bytes[1] == 0x8B
  }

  /// Decompresses a complete gzip file. Concatenated members (multi-member gzip, as written by
  /// `cat a.gz b.gz`) are decompressed one after another into one output. Corrupt data,
  /// truncated input, a bad CRC or length trailer, or bytes after the last member that are not
  /// another gzip member all throw `GzipError`; nothing traps on any input.
  public static func decompress(
    _ input: [UInt8], maxOutput: Int = defaultMaxOutput
  ) throws(GzipError) -> [UInt8] {
    try withInflater(input) { stream throws(GzipError) in try decompress(input, stream, maxOutput: maxOutput) }
  }

  /// A gzip-mode zlib inflater over `input` for `body`, ended afterwards. zlib keeps a pointer
  /// to its z_stream, so the stream lives at one address throughout.
  private static func withInflater<T>(
    _ input: [UInt8], _ body: (UnsafeMutablePointer<z_stream>) throws(GzipError) -> T
  ) throws(GzipError) -> T {
    guard isGzip(input) else {
      throw GzipError(offset: 0, detail: "not a gzip stream (missing magic bytes 1f 8b)")
    }
    let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
    stream.initialize(to: z_stream())
    defer { stream.deallocate() }
    let initRC = inflateInit2_(stream, 16 + MAX_WBITS, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
    guard initRC == Z_OK else {
      throw GzipError(offset: 0, detail: "zlib inflateInit2 failed with code \(initRC)")
    }
    defer { inflateEnd(stream) }
    return try body(stream)
  }

  private static func decompress(
    _ input: [UInt8], _ stream: UnsafeMutablePointer<z_stream>, maxOutput: Int
  ) throws(GzipError) -> [UInt8] {
    var output = [UInt8](repeating: 0, count: initialCapacity(input, maxOutput: maxOutput))
    var inPos = 0
    var outPos = 0
    while true {
      // A full buffer grows up to the limit; at the limit zlib goes on without room (a trailer
      // or an empty member needs none) until it needs some (Z_BUF_ERROR below).
      if outPos == output.count, output.count < maxOutput {
        let grown = min(output.count > maxOutput / 2 ? maxOutput : output.count * 2, maxOutput)
        output.append(contentsOf: repeatElement(0, count: grown - output.count))
      }
      let rc = inflateStep(stream, input, &inPos, &output, &outPos)
      switch rc {
      case Z_STREAM_END:
        if try atEndOfLastMember(stream, input, inPos) {
          output.removeSubrange(outPos...)
          return output
        }
      case Z_OK:
        continue
      case Z_BUF_ERROR:
        try checkRoomOrInput(stream.pointee, input: input, inPos: inPos, outputCount: output.count, maxOutput: maxOutput)
      default:
        throw inflateError(rc, stream.pointee, at: inPos)
      }
    }
  }

  /// The first `count` decompressed bytes of a gzip stream (fewer when it is shorter), without
  /// decompressing the rest: enough to read a header. Corrupt data before that point throws.
  public static func prefix(_ input: [UInt8], count: Int) throws(GzipError) -> [UInt8] {
    try withInflater(input) { stream throws(GzipError) in
      var output = [UInt8](repeating: 0, count: max(count, 0))
      var inPos = 0, outPos = 0
      while outPos < output.count {
        let rc = inflateStep(stream, input, &inPos, &output, &outPos)
        if rc == Z_STREAM_END || (rc == Z_BUF_ERROR && inPos == input.count) { break }
        guard rc == Z_OK || rc == Z_BUF_ERROR else { throw inflateError(rc, stream.pointee, at: inPos) }
      }
      return Array(output[..<outPos])
    }
  }

  /// The output buffer's first size: the ISIZE trailer of the last member (uncompressed size mod
  /// 2^32) is a good hint for single-member files; never trusted beyond the output limit.
  private static func initialCapacity(_ input: [UInt8], maxOutput: Int) -> Int {
    var capacity = max(input.count &* 2, 1 << 16)
    if input.count >= 18 {
      let n = input.count
      let isize =
        Int(input[n - 4]) | Int(input[n - 3]) << 8 | Int(input[n - 2]) << 16
        | Int(input[n - 1]) << 24
      // Deflate cannot expand more than ~1032:1, so a larger claim is a lie: ignore it.
      if isize > 0, isize / 1100 <= input.count { capacity = isize }
    }
    return min(max(capacity, 1), max(maxOutput, 1))
  }

  /// One `inflate` call from `inPos` into `output` at `outPos` (at most 4 GiB each way, zlib's
  /// counters being 32-bit); advances both positions by what zlib consumed and produced.
  private static func inflateStep(
    _ stream: UnsafeMutablePointer<z_stream>, _ input: [UInt8], _ inPos: inout Int, _ output: inout [UInt8],
    _ outPos: inout Int
  ) -> Int32 {
    let chunkLimit = Int(UInt32.max)
    let availIn = min(input.count - inPos, chunkLimit)
    let availOut = min(output.count - outPos, chunkLimit)
    let (inAt, outAt) = (inPos, outPos)
    let rc: Int32 = input.withUnsafeBufferPointer { inBuf in
      output.withUnsafeMutableBufferPointer { outBuf in
        // zlib never writes through next_in; the cast only satisfies its C signature.
        stream.pointee.next_in = inBuf.baseAddress.map { UnsafeMutablePointer(mutating: $0 + inAt) }
        stream.pointee.avail_in = UInt32(availIn)
        stream.pointee.next_out = outBuf.baseAddress.map { $0 + outAt }
        stream.pointee.avail_out = UInt32(availOut)
        return inflate(stream, Z_NO_FLUSH)
      }
    }
    inPos += availIn - Int(stream.pointee.avail_in)
    outPos += availOut - Int(stream.pointee.avail_out)
    return rc
  }

  /// At the end of a member: true when the input ends there too; else the next bytes must be
  /// another member, and the stream is reset to read it.
  private static func atEndOfLastMember(
    _ stream: UnsafeMutablePointer<z_stream>, _ input: [UInt8], _ inPos: Int
  ) throws(GzipError) -> Bool {
    let rest = input.count - inPos
    if rest == 0 { return true }
    guard rest >= 2, input[inPos] == 0x1F, input[inPos + 1] == 0x8B else {
      throw GzipError(
        offset: inPos, detail: "\(rest) trailing byte(s) after the end of the gzip stream are not a gzip member")
    }
    guard inflateReset(stream) == Z_OK else {
      throw GzipError(offset: inPos, detail: "zlib inflateReset failed")
    }
    return false
  }

  /// Z_BUF_ERROR: fine when the output is full below the limit (the loop grows it); an error
  /// at the limit, at the end of the input (truncated), or otherwise.
  private static func checkRoomOrInput(
    _ stream: z_stream, input: [UInt8], inPos: Int, outputCount: Int, maxOutput: Int
  ) throws(GzipError) {
    if stream.avail_out == 0 {
      guard outputCount < maxOutput else {
        throw GzipError(offset: inPos, detail: "decompressed size exceeds the limit of \(maxOutput) bytes")
      }
      return
    }
    if inPos >= input.count {
      throw GzipError(offset: inPos, detail: "truncated gzip stream (input ended before the end of the member)")
    }
    throw GzipError(offset: inPos, detail: "zlib made no progress (Z_BUF_ERROR)")
  }

  /// The error for any other result of `inflate`.
  private static func inflateError(_ rc: Int32, _ stream: z_stream, at inPos: Int) -> GzipError {
    switch rc {
    case Z_DATA_ERROR: GzipError(offset: inPos, detail: "inflate: \(zlibMessage(stream))")
    case Z_NEED_DICT: GzipError(offset: inPos, detail: "gzip member needs a preset dictionary")
    case Z_MEM_ERROR: GzipError(offset: inPos, detail: "zlib ran out of memory")
    default: GzipError(offset: inPos, detail: "zlib inflate failed with code \(rc): \(zlibMessage(stream))")
    }
  }

  private static func zlibMessage(_ stream: z_stream) -> String {
    guard let msg = stream.msg else { return "no detail from zlib" }
    return String(cString: msg)
  }
}
