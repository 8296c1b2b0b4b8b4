// A minimal PNG encoder for 8-bit grayscale images (sample and reconstruction grids), using
// zlib's `compress2` for the IDAT stream and zlib's `crc32` for chunk checksums.

import CZlib

/// Why a PNG could not be written. Descriptions are one line naming the file.
public enum PNGError: Error, CustomStringConvertible, Equatable {
  /// The dimensions are not positive, too large for PNG, or do not match the pixel count.
  case invalidSize(file: String, width: Int, height: Int, pixelCount: Int)
  /// Writing the file failed.
  case io(file: String, detail: String)

  /// One line: the file and what was expected.
  public var description: String {
    switch self {
    case .invalidSize(let file, let width, let height, let pixelCount):
      return "\(file): invalid PNG size \(width)×\(height) with \(pixelCount) pixels, expected "
        + "1 ≤ width, height ≤ \(PNG.maxDimension) and width × height pixels"
    case .io(let file, let detail):
      return "\(file): cannot write PNG: \(detail)"
    }
  }
}

/// 8-bit grayscale PNG encoding and image grids.
public enum PNG {
  /// The largest width or height PNG allows (2³¹ − 1).
  public static let maxDimension = Int(Int32.max)

  /// The grey level of the padding around and between grid cells (and of empty cells): mid-grey,
  /// so that both black backgrounds and white strokes stand out from it.
  public static let paddingGrey: UInt8 = 128

  /// The PNG signature.
  static let signature: [UInt8] = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]

  /// The largest IDAT chunk this encoder writes; longer streams are split over several chunks.
  static let maxIDATChunk = 1 << 20

  /// Whether `width`×`height` with `pixelCount` pixels is encodable.
  static func isValidSize(width: Int, height: Int, pixelCount: Int) -> Bool {
    guard (1...maxDimension).contains(width), (1...maxDimension).contains(height) else { return false }
    let (n, overflow) = width.multipliedReportingOverflow(by: height)
    return !overflow && n == pixelCount
  }

  /// The bytes of a PNG file: 8-bit grayscale (colour type 0), no interlacing, every row with
  /// filter type 0 (None), zlib level 9.
  ///
  /// `pixels` holds `height` rows of `width` bytes, top row first; 0 is black, 255 white.
  /// - Precondition: `1 ≤ width, height ≤ 2³¹ − 1` and `pixels.count == width × height`
  ///   (`writeGray` checks this and throws instead).
  public static func encodeGray(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
    precondition(
      isValidSize(width: width, height: height, pixelCount: pixels.count),
      "PNG.encodeGray: \(width)×\(height) does not match \(pixels.count) pixels")
    return encode(width: width, height: height, pixels: pixels, channels: 1)
  }

  /// As `encodeGray`, for 8-bit RGB (colour type 2): `pixels` holds 3 bytes (red, green, blue)
  /// per pixel, rows top first.
  public static func encodeRGB(width: Int, height: Int, pixels: [UInt8]) -> [UInt8] {
    precondition(
      pixels.count % 3 == 0 && isValidSize(width: width, height: height, pixelCount: pixels.count / 3),
      "PNG.encodeRGB: \(width)×\(height) does not match \(pixels.count) bytes")
    return encode(width: width, height: height, pixels: pixels, channels: 3)
  }

  /// Encodes the RGB image (see `encodeRGB`) and writes it atomically to `path`.
  public static func writeRGB(path: String, width: Int, height: Int, pixels: [UInt8]) throws {
    guard pixels.count % 3 == 0, isValidSize(width: width, height: height, pixelCount: pixels.count / 3) else {
      throw PNGError.invalidSize(file: path, width: width, height: height, pixelCount: pixels.count / 3)
    }
    try write(encodeRGB(width: width, height: height, pixels: pixels), to: path)
  }

  private static func encode(width: Int, height: Int, pixels: [UInt8], channels: Int) -> [UInt8] {
    // Raw scanlines: a filter-type byte (0) before each row.
    let rowBytes = width * channels
    var raw = [UInt8](repeating: 0, count: height * (rowBytes + 1))
    raw.withUnsafeMutableBufferPointer { dst in
      pixels.withUnsafeBufferPointer { src in
        for y in 0..<height {
          let d = y * (rowBytes + 1) + 1
          let s = y * rowBytes
          for x in 0..<rowBytes { dst[d + x] = src[s + x] }
        }
      }
    }
    let z = zlibCompress(raw) ?? zlibStored(raw)

    var out = signature
    var ihdr: [UInt8] = []
    appendBigEndian(UInt32(width), to: &ihdr)
    appendBigEndian(UInt32(height), to: &ihdr)
    ihdr += [8, channels == 3 ? 2 : 0, 0, 0, 0]  // bit depth 8, grey or RGB, deflate, adaptive filtering, no interlace
    appendChunk("IHDR", ihdr, to: &out)
    var start = 0
    repeat {
      let end = min(start + maxIDATChunk, z.count)
      appendChunk("IDAT", Array(z[start..<end]), to: &out)
      start = end
    } while start < z.count
    appendChunk("IEND", [], to: &out)
    return out
  }

  /// Encodes the image (see `encodeGray`) and writes it atomically to `path`.
  /// - Throws: `PNGError.invalidSize` for bad dimensions, `PNGError.io` when writing fails.
  public static func writeGray(path: String, width: Int, height: Int, pixels: [UInt8]) throws {
    guard isValidSize(width: width, height: height, pixelCount: pixels.count) else {
      throw PNGError.invalidSize(file: path, width: width, height: height, pixelCount: pixels.count)
    }
    try write(encodeGray(width: width, height: height, pixels: pixels), to: path)
  }

  private static func write(_ bytes: [UInt8], to path: String) throws {
    do {
      try FileIO.writeAtomically(bytes, to: path)
    } catch {
      throw PNGError.io(file: path, detail: error.detail)
    }
  }

  /// Tiles images into a grid, row by row, ready for `encodeGray`.
  ///
  /// Each image holds `rows × cols` values in [0, 1] (row-major), mapped to grey levels
  /// `round(v × 255)`; values outside [0, 1] are clamped and NaN is black. Missing values (a
  /// short image) are black, extra values are ignored. The grid has
  /// `min(gridColumns, images.count)` columns (at least 1) and as many rows as needed (at
  /// least 1); `padding` pixels of mid-grey (`paddingGrey`) surround every cell, also at the
  /// border, and fill unused cells.
  /// - Precondition: `rows ≥ 1`, `cols ≥ 1`, `padding ≥ 0`.
  public static func grid(
    images: [[Float]], rows: Int, cols: Int, gridColumns: Int, padding: Int = 2
  ) -> (width: Int, height: Int, pixels: [UInt8]) {
    precondition(rows >= 1 && cols >= 1 && padding >= 0, "PNG.grid: rows, cols must be ≥ 1, padding ≥ 0")
    let columns = max(1, min(gridColumns, images.count))
    let gridRows = max(1, (images.count + columns - 1) / columns)
    let width = columns * cols + (columns + 1) * padding
    let height = gridRows * rows + (gridRows + 1) * padding
    var pixels = [UInt8](repeating: paddingGrey, count: width * height)
    for (k, image) in images.enumerated() {
      let top = padding + (k / columns) * (rows + padding)
      let left = padding + (k % columns) * (cols + padding)
      for r in 0..<rows {
        for c in 0..<cols {
          let i = r * cols + c
          let v = i < image.count ? image[i] : 0
          pixels[(top + r) * width + left + c] = greyLevel(v)
        }
      }
    }
    return (width, height, pixels)
  }

  /// `v` in [0, 1] as a grey level 0…255: `round(v × 255)`, clamped to [0, 1] first; NaN is 0
  /// (black). Every grey image of the package maps values to pixels with this.
  public static func greyLevel(_ v: Float) -> UInt8 {
    guard !v.isNaN else { return 0 }
    return UInt8((min(max(v, 0), 1) * 255).rounded())
  }

  // MARK: Internals

  private static func appendBigEndian(_ v: UInt32, to out: inout [UInt8]) {
    out += [UInt8(truncatingIfNeeded: v >> 24), UInt8(truncatingIfNeeded: v >> 16),
            UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)]
  }

  /// Appends a chunk: length, type, data, CRC-32 of type and data.
  private static func appendChunk(_ type: String, _ data: [UInt8], to out: inout [UInt8]) {
    let typeBytes = Array(type.utf8)
    appendBigEndian(UInt32(data.count), to: &out)
    out += typeBytes
    out += data
    let crc = CRC32.checksum(data, continuing: CRC32.checksum(typeBytes))
    appendBigEndian(crc, to: &out)
  }

  /// A zlib stream of `data` at level 9, or nil if zlib fails.
  static func zlibCompress(_ data: [UInt8]) -> [UInt8]? {
    var bound = compressBound(uLong(data.count))
    var out = [UInt8](repeating: 0, count: Int(bound))
    let rc = out.withUnsafeMutableBufferPointer { dst in
      data.withUnsafeBufferPointer { src in
        compress2(dst.baseAddress, &bound, src.baseAddress, uLong(src.count), 9)
      }
    }
    guard rc == Z_OK else { return nil }
    out.removeLast(out.count - Int(bound))
    return out
  }

  /// A valid zlib stream of `data` made of uncompressed (stored) deflate blocks: the fallback
  /// when zlib cannot allocate memory, so encoding never fails.
  static func zlibStored(_ data: [UInt8]) -> [UInt8] {
    var out: [UInt8] = [0x78, 0x01]
    var start = 0
    repeat {
      let n = min(65535, data.count - start)
      let final: UInt8 = start + n == data.count ? 1 : 0
      out += [final, UInt8(n & 0xFF), UInt8(n >> 8), UInt8(~n & 0xFF), UInt8((~n >> 8) & 0xFF)]
      out += data[start..<(start + n)]
      start += n
    } while start < data.count
    let adler = data.withUnsafeBufferPointer { buf -> UInt32 in
      var a = adler32(0, nil, 0)
      var done = 0
      while done < buf.count, let base = buf.baseAddress {
        let n = min(buf.count - done, 1 << 30)
        a = adler32(a, base + done, uInt(n))
        done += n
      }
      return UInt32(truncatingIfNeeded: a)
    }
    appendBigEndian(adler, to: &out)
    return out
  }
}
