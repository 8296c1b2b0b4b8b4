extension NPY {
  /// The header NumPy's `np.save` writes for a C-order array of `shape` and `dtype` (format
  /// 1.0): the dictionary with sorted keys, spare spaces for growing the first dimension, then
  /// spaces and a newline up to a multiple of 64 bytes. Only the number of dimensions is checked
  /// here (at most `maxDimensions`); `Header(dtype:shape:file:)` checks the rest.
  public static func encodeHeader(dtype: DType, shape: [Int]) -> [UInt8] {
    precondition(shape.count <= maxDimensions, "NPY.encodeHeader: more than \(maxDimensions) dimensions")
    var dict = "{'descr': '\(dtype.descr)', 'fortran_order': False, 'shape': \(python(shape: shape)), }"
    // NumPy's GROWTH_AXIS_MAX_DIGITS: room to rewrite the row count in place.
    if let first = shape.first { dict += String(repeating: " ", count: max(0, 21 - String(first).count)) }
    let used = magic.count + 2 + 2 + dict.utf8.count + 1
    let padding = 64 - used % 64
    let length = dict.utf8.count + padding + 1
    return magic + [1, 0, UInt8(length & 0xFF), UInt8(length >> 8)] + Array(dict.utf8)
      + [UInt8](repeating: 0x20, count: padding) + [0x0A]
  }

  /// The bytes of a `.npy` file holding `data` (the raw little-endian elements, C order) as
  /// `dtype` and `shape`.
  /// - Throws: `NPYError` naming `file` when the shape is not `[N, ...]` rows or `data` has
  ///   another size.
  public static func encode(dtype: DType, shape: [Int], data: [UInt8], file: String) throws(NPYError) -> [UInt8] {
    let header = try Header(dtype: dtype, shape: shape, file: file)
    guard data.count == header.byteCount else {
      throw .badWrite(file: file, detail: "\(data.count) data bytes for shape \(python(shape: shape)) of "
                      + "\(dtype), expected \(header.byteCount)")
    }
    return encodeHeader(dtype: dtype, shape: shape) + data
  }

  /// Writes `values` as a float32 array of `shape` to `path` atomically.
  /// - Throws: `NPYError` naming `path`.
  public static func write(path: String, shape: [Int], values: [Float]) throws(NPYError) {
    let writer = try NPYWriter(path: path, dtype: .float32, shape: shape)
    try values.withUnsafeBufferPointer { v in Result { () throws(NPYError) in try writer.append(v) } }.get()
    try writer.finish()
  }

  /// Writes `values` as a uint8 array of `shape` to `path` atomically.
  /// - Throws: `NPYError` naming `path`.
  public static func write(path: String, shape: [Int], values: [UInt8]) throws(NPYError) {
    let writer = try NPYWriter(path: path, dtype: .uint8, shape: shape)
    try values.withUnsafeBufferPointer { v in Result { () throws(NPYError) in try writer.append(v) } }.get()
    try writer.finish()
  }
}

/// Writes a `.npy` file of a known dtype and shape in pieces, so that arrays larger than
/// memory can be written: the header first, then rows appended in any chunks, then `finish()`,
/// which checks that exactly the shape's elements came and puts the file in place atomically
/// (`AtomicFileWriter`). A writer released without `finish()` leaves no file behind.
public final class NPYWriter {
  public let path: String
  public let header: NPY.Header
  private let file: AtomicFileWriter
  private var elementsWritten = 0

  /// Creates the temporary file and writes the header.
  /// - Throws: `NPYError` naming `path` (a bad shape, or the file cannot be created).
  public init(path: String, dtype: NPY.DType, shape: [Int]) throws(NPYError) {
    header = try NPY.Header(dtype: dtype, shape: shape, file: path)
    self.path = path
    do {
      file = try AtomicFileWriter(path: path)
      try file.write(NPY.encodeHeader(dtype: dtype, shape: shape))
    } catch {
      throw .io(file: path, detail: error.detail)
    }
  }

  /// Appends float32 elements (C order) to a float32 file.
  public func append(_ values: UnsafeBufferPointer<Float>) throws(NPYError) {
    try reserve(values.count, of: .float32)
    #if _endian(little)
    try write(UnsafeRawBufferPointer(values))
    #else
    var chunk = [UInt32](repeating: 0, count: min(values.count, 4096))
    var done = 0
    while done < values.count {
      let n = min(chunk.count, values.count - done)
      for i in 0..<n { chunk[i] = values[done + i].bitPattern.littleEndian }
      try chunk.withUnsafeBytes { raw in
        Result { () throws(NPYError) in try write(UnsafeRawBufferPointer(rebasing: raw[..<(4 * n)])) }
      }.get()
      done += n
    }
    #endif
  }

  /// Appends uint8 elements (C order) to a uint8 file.
  public func append(_ values: UnsafeBufferPointer<UInt8>) throws(NPYError) {
    try reserve(values.count, of: .uint8)
    try write(UnsafeRawBufferPointer(values))
  }

  /// Checks that every element of the shape was appended, then puts the file in place.
  /// - Throws: `NPYError` naming the file: too few elements, or an I/O failure.
  public func finish() throws(NPYError) {
    guard elementsWritten == header.elementCount else {
      throw .badWrite(file: path, detail: "\(elementsWritten) of the \(header.elementCount) elements of shape "
                      + "\(NPY.python(shape: header.shape)) were written")
    }
    do {
      try file.commit()
    } catch {
      throw .io(file: path, detail: error.detail)
    }
  }

  /// Counts `count` more elements of `dtype`, refusing a dtype other than the file's and more
  /// elements than the shape holds.
  private func reserve(_ count: Int, of dtype: NPY.DType) throws(NPYError) {
    guard dtype == header.dtype else {
      throw .badWrite(file: path, detail: "\(dtype) values appended to a \(header.dtype) file")
    }
    guard count <= header.elementCount - elementsWritten else {
      throw .badWrite(file: path, detail: "\(elementsWritten + count) elements appended, more than the "
                      + "\(header.elementCount) of shape \(NPY.python(shape: header.shape))")
    }
    elementsWritten += count
  }

  private func write(_ bytes: UnsafeRawBufferPointer) throws(NPYError) {
    do {
      try file.write(bytes)
    } catch {
      throw .io(file: path, detail: error.detail)
    }
  }
}
