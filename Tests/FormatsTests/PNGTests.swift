import Foundation
import TestSupport
import XCTest

@testable import Formats

final class PNGTests: XCTestCase {
  private var dir = ""

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("png-tests-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(atPath: dir)
  }

  // MARK: Independent PNG structure checks in Swift

  /// Bitwise CRC-32 (polynomial 0xEDB88320), independent of zlib.
  private func referenceCRC(_ bytes: [UInt8]) -> UInt32 {
    var c: UInt32 = 0xFFFF_FFFF
    for b in bytes {
      c ^= UInt32(b)
      for _ in 0..<8 { c = (c & 1) != 0 ? (c >> 1) ^ 0xEDB8_8320 : c >> 1 }
    }
    return ~c
  }

  private func bigEndian(_ b: ArraySlice<UInt8>) -> UInt32 {
    b.reduce(0) { $0 << 8 | UInt32($1) }
  }

  /// The chunks of a PNG (type, data), checking the signature, lengths and every CRC.
  private func chunks(_ png: [UInt8], file: StaticString = #filePath, line: UInt = #line) -> [(String, [UInt8])] {
    XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A], "signature", file: file, line: line)
    var out: [(String, [UInt8])] = []
    var pos = 8
    while pos + 12 <= png.count {
      let n = Int(bigEndian(png[pos..<(pos + 4)]))
      guard pos + 12 + n <= png.count else { break }
      let type = Array(png[(pos + 4)..<(pos + 8)])
      let data = Array(png[(pos + 8)..<(pos + 8 + n)])
      let crc = bigEndian(png[(pos + 8 + n)..<(pos + 12 + n)])
      XCTAssertEqual(crc, referenceCRC(type + data), "CRC of \(String(decoding: type, as: UTF8.self))", file: file, line: line)
      out.append((String(decoding: type, as: UTF8.self), data))
      pos += 12 + n
    }
    XCTAssertEqual(pos, png.count, "chunks must end exactly at the end of the file", file: file, line: line)
    return out
  }

  func testSignatureIHDRAndCRCs() {
    let (w, h) = (5, 3)
    let pixels = (0..<(w * h)).map { UInt8($0 * 17) }
    let png = PNG.encodeGray(width: w, height: h, pixels: pixels)
    let cs = chunks(png)
    XCTAssertEqual(cs.map(\.0), ["IHDR", "IDAT", "IEND"])
    let ihdr = cs[0].1
    XCTAssertEqual(ihdr.count, 13)
    XCTAssertEqual(bigEndian(ihdr[0..<4]), 5)
    XCTAssertEqual(bigEndian(ihdr[4..<8]), 3)
    XCTAssertEqual(Array(ihdr[8..<13]), [8, 0, 0, 0, 0])  // depth 8, gray, deflate, filter 0, no interlace
    XCTAssertEqual(cs[2].1, [])
    XCTAssertEqual(cs[1].1.first, 0x78, "zlib header")
    XCTAssertEqual(PNG.encodeGray(width: w, height: h, pixels: pixels), png, "deterministic")
  }

  // MARK: Decoding with Python's standard library

  private static let decoder = """
    import json, struct, sys, zlib
    data = open(sys.argv[1], "rb").read()
    assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n", "bad signature"
    pos, chunks = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        (crc,) = struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])
        assert zlib.crc32(typ + body) & 0xFFFFFFFF == crc, "bad CRC in " + typ.decode()
        chunks.append((typ, body))
        pos += 12 + n
    assert pos == len(data), "trailing bytes"
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b""), "chunk order"
    w, h, depth, ctype, comp, filt, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    idats = [b for t, b in chunks if t == b"IDAT"]
    raw = zlib.decompress(b"".join(idats))
    assert len(raw) == h * (w + 1), "scanline bytes"
    pixels = bytearray()
    for y in range(h):
        row = raw[y * (w + 1):(y + 1) * (w + 1)]
        assert row[0] == 0, "filter type %d" % row[0]
        pixels += row[1:]
    print(json.dumps({"width": w, "height": h, "depth": depth, "ctype": ctype, "comp": comp,
                      "filter": filt, "interlace": interlace, "idat": len(idats),
                      "crc": zlib.crc32(bytes(pixels)) & 0xFFFFFFFF,
                      "pixels": list(pixels) if len(pixels) <= 100000 else None}))
    """

  private func decodeWithPython(_ path: String) throws -> [String: Any] {
    guard try Subprocess.python("import zlib, struct, json", []).status == 0 else {
      throw XCTSkip("python3 unavailable")
    }
    let r = try Subprocess.python(Self.decoder, [path])
    XCTAssertEqual(r.status, 0, r.stderr)
    return try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
  }

  func testPythonDecodesPixels() throws {
    let (w, h) = (37, 23)
    var rng = SystemRandomNumberGenerator()
    let pixels = (0..<(w * h)).map { i in i % 3 == 0 ? UInt8.random(in: 0...255, using: &rng) : UInt8(i % 256) }
    let path = dir + "/img.png"
    try PNG.writeGray(path: path, width: w, height: h, pixels: pixels)
    let d = try decodeWithPython(path)
    XCTAssertEqual(d["width"] as? Int, w)
    XCTAssertEqual(d["height"] as? Int, h)
    XCTAssertEqual(d["depth"] as? Int, 8)
    XCTAssertEqual(d["ctype"] as? Int, 0)
    XCTAssertEqual(d["interlace"] as? Int, 0)
    XCTAssertEqual((d["pixels"] as? [Int])?.map { UInt8($0) }, pixels)
  }

  func testOnePixelAndLargeImageSplitOverIDATChunks() throws {
    let one = dir + "/one.png"
    try PNG.writeGray(path: one, width: 1, height: 1, pixels: [200])
    XCTAssertEqual(try decodeWithPython(one)["pixels"] as? [Int], [200])

    // Incompressible 1200×1000 noise: the zlib stream exceeds one IDAT chunk.
    let (w, h) = (1200, 1000)
    var rng = SystemRandomNumberGenerator()
    let pixels = (0..<(w * h)).map { _ in UInt8.random(in: 0...255, using: &rng) }
    let path = dir + "/noise.png"
    try PNG.writeGray(path: path, width: w, height: h, pixels: pixels)
    let d = try decodeWithPython(path)
    XCTAssertEqual(d["width"] as? Int, w)
    XCTAssertEqual(d["height"] as? Int, h)
    XCTAssertGreaterThan(d["idat"] as? Int ?? 0, 1)
    XCTAssertEqual((d["crc"] as? NSNumber)?.uint32Value, CRC32.checksum(pixels))
  }

  func testStoredZlibFallbackInflates() throws {
    for size in [0, 1, 65535, 65536, 200_000] {
      let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 * 7 + 3) }
      let path = dir + "/stored-\(size).z"
      try FileIO.writeAtomically(PNG.zlibStored(data), to: path)
      let script = "import sys, zlib; d = zlib.decompress(open(sys.argv[1], 'rb').read()); "
        + "print(len(d), zlib.crc32(d) & 0xFFFFFFFF)"
      let r = try Subprocess.python(script, [path])
      guard r.status == 0 || !r.stderr.contains("No such file") else { throw XCTSkip("python3 unavailable") }
      XCTAssertEqual(r.status, 0, r.stderr)
      XCTAssertEqual(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                     "\(size) \(CRC32.checksum(data))")
    }
  }

  // MARK: Grid and errors

  func testGridLayout() {
    // Three 2×2 images in 2 columns with padding 1: 2 rows of cells, 7×7 pixels.
    let images: [[Float]] = [[0, 1, 0.5, 1], [1, 1, 1, 1], [-3, 7, .nan, 0.2]]
    let g = PNG.grid(images: images, rows: 2, cols: 2, gridColumns: 2, padding: 1)
    XCTAssertEqual(g.width, 7)
    XCTAssertEqual(g.height, 7)
    let grey = PNG.paddingGrey
    let expected: [[UInt8]] = [
      [grey, grey, grey, grey, grey, grey, grey],
      [grey, 0, 255, grey, 255, 255, grey],
      [grey, 128, 255, grey, 255, 255, grey],
      [grey, grey, grey, grey, grey, grey, grey],
      [grey, 0, 255, grey, grey, grey, grey],
      [grey, 0, 51, grey, grey, grey, grey],
      [grey, grey, grey, grey, grey, grey, grey],
    ]
    XCTAssertEqual(g.pixels, expected.flatMap { $0 })

    // Fewer images than columns: the grid shrinks; no images: one empty cell.
    let small = PNG.grid(images: [[1]], rows: 1, cols: 1, gridColumns: 8, padding: 2)
    XCTAssertEqual(small.width, 5)
    XCTAssertEqual(small.height, 5)
    XCTAssertEqual(small.pixels[2 * 5 + 2], 255)
    let none = PNG.grid(images: [], rows: 2, cols: 3, gridColumns: 4, padding: 0)
    XCTAssertEqual(none.width * none.height, 6)
    XCTAssertEqual(none.pixels, [UInt8](repeating: grey, count: 6))
    // A short image is padded with black, a long one truncated; the result is encodable.
    let odd = PNG.grid(images: [[1], [1, 1, 1, 1, 1, 1]], rows: 2, cols: 2, gridColumns: 2, padding: 0)
    XCTAssertEqual(odd.pixels, [255, 0, 255, 255, 0, 0, 255, 255])
    XCTAssertFalse(PNG.encodeGray(width: odd.width, height: odd.height, pixels: odd.pixels).isEmpty)
  }

  func testGreyLevelsRoundClampAndMakeNaNBlack() {
    let values: [Float] = [0, 1, 0.5, 0.2, 1 / 255, 0.499 / 255, -3, 7, .nan, .infinity, -.infinity]
    XCTAssertEqual(values.map(PNG.greyLevel), [0, 255, 128, 51, 1, 0, 0, 255, 0, 255, 0])
  }

  func testWriteGrayRejectsBadSizes() {
    for (w, h, n) in [(0, 1, 0), (2, 2, 3), (-1, -1, 1), (Int.max, 2, 4)] {
      let path = dir + "/bad.png"
      XCTAssertThrowsError(try PNG.writeGray(path: path, width: w, height: h, pixels: [UInt8](repeating: 0, count: n))) { error in
        guard case .invalidSize(path, w, h, n)? = error as? PNGError else { return XCTFail("\(error)") }
        XCTAssertTrue("\(error)".contains(path))
      }
    }
    XCTAssertThrowsError(try PNG.writeGray(path: dir + "/missing/x.png", width: 1, height: 1, pixels: [0])) { error in
      guard case .io? = error as? PNGError else { return XCTFail("\(error)") }
      XCTAssertTrue("\(error)".contains("missing/x.png"))
    }
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), [])
  }
}
