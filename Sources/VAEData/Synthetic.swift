import VAE
import Formats

/// The seeded synthetic data set: simple shapes, for tests and smoke runs without files.
extension DatasetRegistry {
  /// A seeded synthetic data set of simple shapes, deterministic for `seed`. Label `c` (0...9)
  /// decides the shape: 0 filled rectangle, 1 hollow frame, 2 horizontal bar, 3 vertical bar,
  /// 4 disc, 5 ring, 6 diagonal stroke, 7 anti-diagonal stroke, 8 plus, 9 cross; position, size
  /// and intensity (160...255 on a 0 background) vary per image. Example `i` of a split depends
  /// only on `(seed, split, i)`, so a smaller `trainCount` gives a prefix of a larger one.
  /// `rows` and `cols` must be at least 8.
  public static func synthetic(
    seed: UInt64, trainCount: Int, testCount: Int, rows: Int = 28, cols: Int = 28
  ) -> DataSplits {
    precondition(trainCount >= 0 && testCount >= 0, "synthetic: negative count")
    precondition(rows >= 8 && cols >= 8 && rows <= IDX.maxSide && cols <= IDX.maxSide,
                 "synthetic: image side must be 8...\(IDX.maxSide)")
    let rng = CounterRNG(seed: seed)
    func split(_ epoch: UInt64, _ count: Int) -> Dataset {
      let pixels = rows * cols
      var images = [UInt8](repeating: 0, count: count * pixels)
      var labels = [UInt8](repeating: 0, count: count)
      images.withUnsafeMutableBufferPointer { buf in
        for i in 0..<count {
          var stream = rng.stream(.synthetic, epoch: epoch, index: UInt64(i))
          let label = stream.nextInt(below: 10)
          labels[i] = UInt8(label)
          let canvas = Canvas(
            buffer: UnsafeMutableBufferPointer(rebasing: buf[i * pixels ..< (i + 1) * pixels]),
            rows: rows, cols: cols)
          drawShape(label, on: canvas, rng: &stream)
        }
      }
      return Dataset(name: "synthetic", count: count, rows: rows, cols: cols, images: images, labels: labels)
    }
    return DataSplits(train: split(0, trainCount), test: split(1, testCount))
  }

  /// Draws the shape of class `label` with integer arithmetic only (bit-identical everywhere).
  /// The draws, in order: intensity, thickness, then the box of the shape.
  fileprivate static func drawShape(_ label: Int, on canvas: Canvas, rng: inout RandomStream) {
    let side = min(canvas.rows, canvas.cols)
    let v = UInt8(160 + rng.nextInt(below: 96))
    let thick = max(1, side / 14) + rng.nextInt(below: 2)
    func box(_ minFrac: Int, _ maxFrac: Int) -> Box { canvas.box(minFrac: minFrac, maxFrac: maxFrac, rng: &rng) }
    switch label {
    case 0: canvas.fill(box(3, 6), v)
    case 1: canvas.frame(box(4, 8), thick: thick, v)
    case 2: canvas.bar(box(5, 8), horizontal: true, thick: thick, v)
    case 3: canvas.bar(box(5, 8), horizontal: false, thick: thick, v)
    case 4, 5: canvas.disc(box(4, 7), ring: label == 5, thick: thick, v)
    case 6, 7: canvas.diagonal(box(5, 8), falling: label == 6, thick: thick, v)
    case 8: canvas.plus(box(5, 8), thick: thick, v)
    default: canvas.cross(box(5, 8), thick: thick, v)
    }
  }
}

/// Rows r0...r1, columns c0...c1.
private typealias Box = (r0: Int, c0: Int, r1: Int, c1: Int)

private struct Canvas {
  let buffer: UnsafeMutableBufferPointer<UInt8>
  let rows: Int
  let cols: Int

  func set(_ r: Int, _ c: Int, _ v: UInt8) {
    guard r >= 0, r < rows, c >= 0, c < cols else { return }
    buffer[r * cols + c] = max(buffer[r * cols + c], v)
  }

  func fill(r0: Int, c0: Int, r1: Int, c1: Int, _ v: UInt8) {
    guard r0 <= r1, c0 <= c1 else { return }
    for r in r0...r1 { for c in c0...c1 { set(r, c, v) } }
  }

  func fill(_ b: Box, _ v: UInt8) { fill(r0: b.r0, c0: b.c0, r1: b.r1, c1: b.c1, v) }

  /// A box between minFrac/8 and maxFrac/8 of the usable side, placed at random inside a margin.
  func box(minFrac: Int, maxFrac: Int, rng: inout RandomStream) -> Box {
    let margin = max(1, min(rows, cols) / 14)
    let usableR = rows - 2 * margin, usableC = cols - 2 * margin
    let loH = max(3, usableR * minFrac / 8), hiH = max(loH, usableR * maxFrac / 8)
    let loW = max(3, usableC * minFrac / 8), hiW = max(loW, usableC * maxFrac / 8)
    let h = loH + rng.nextInt(below: hiH - loH + 1)
    let w = loW + rng.nextInt(below: hiW - loW + 1)
    let r0 = margin + rng.nextInt(below: max(1, usableR - h + 1))
    let c0 = margin + rng.nextInt(below: max(1, usableC - w + 1))
    return (r0, c0, r0 + h - 1, c0 + w - 1)
  }

  func frame(_ b: Box, thick: Int, _ v: UInt8) {
    fill(r0: b.r0, c0: b.c0, r1: b.r0 + thick - 1, c1: b.c1, v)
    fill(r0: b.r1 - thick + 1, c0: b.c0, r1: b.r1, c1: b.c1, v)
    fill(r0: b.r0, c0: b.c0, r1: b.r1, c1: b.c0 + thick - 1, v)
    fill(r0: b.r0, c0: b.c1 - thick + 1, r1: b.r1, c1: b.c1, v)
  }

  func bar(_ b: Box, horizontal: Bool, thick: Int, _ v: UInt8) {
    if horizontal {
      let r = b.r0 + (b.r1 - b.r0) / 2
      fill(r0: r - thick / 2, c0: b.c0, r1: r - thick / 2 + thick, c1: b.c1, v)
    } else {
      let c = b.c0 + (b.c1 - b.c0) / 2
      fill(r0: b.r0, c0: c - thick / 2, r1: b.r1, c1: c - thick / 2 + thick, v)
    }
  }

  func disc(_ b: Box, ring: Bool, thick: Int, _ v: UInt8) {
    let radius = max(2, min(b.r1 - b.r0, b.c1 - b.c0) / 2)
    let cr = b.r0 + radius, cc = b.c0 + radius
    // r^2 + r instead of r^2 rounds the outline (no one-pixel nubs at the poles).
    let outer = radius * radius + radius
    let innerRadius = max(0, radius - thick)
    let inner = innerRadius * innerRadius + innerRadius
    for r in (cr - radius)...(cr + radius) {
      for c in (cc - radius)...(cc + radius) {
        let d = (r - cr) * (r - cr) + (c - cc) * (c - cc)
        if d <= outer && (!ring || d > inner) { set(r, c, v) }
      }
    }
  }

  /// "\\" when falling, "/" otherwise.
  func diagonal(_ b: Box, falling: Bool, thick: Int, _ v: UInt8) {
    let n = min(b.r1 - b.r0, b.c1 - b.c0)
    for t in 0...n {
      let r = b.r0 + t
      let c = falling ? b.c0 + t : b.c0 + n - t
      fill(r0: r, c0: c - thick / 2, r1: r, c1: c + thick / 2 + 1, v)
    }
  }

  func plus(_ b: Box, thick: Int, _ v: UInt8) {
    let r = b.r0 + (b.r1 - b.r0) / 2, c = b.c0 + (b.c1 - b.c0) / 2
    fill(r0: r - thick / 2, c0: b.c0, r1: r + thick / 2, c1: b.c1, v)
    fill(r0: b.r0, c0: c - thick / 2, r1: b.r1, c1: c + thick / 2, v)
  }

  func cross(_ b: Box, thick: Int, _ v: UInt8) {
    let n = min(b.r1 - b.r0, b.c1 - b.c0)
    for t in 0...n {
      let r = b.r0 + t
      fill(r0: r, c0: b.c0 + t - thick / 2, r1: r, c1: b.c0 + t + thick / 2, v)
      fill(r0: r, c0: b.c0 + n - t - thick / 2, r1: r, c1: b.c0 + n - t + thick / 2, v)
    }
  }
}
