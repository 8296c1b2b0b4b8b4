import XCTest

@testable import VAE
@testable import VAEData

/// The X/Y split of conditional models (the tutorial's middle column) and how X is drawn.
final class ConditioningTests: XCTestCase {
  let mnistShape = Conditioning(mask: .middleColumn, binarization: .dynamic, rows: 28, cols: 28)

  /// 28 condition pixels, column 13 of each row; 756 targets, the rest in order.
  func testMiddleColumnIsColumn13() {
    XCTAssertEqual(mnistShape.conditionSize, 28)
    XCTAssertEqual(mnistShape.yPixels.count, 756)
    XCTAssertEqual(mnistShape.xPixels, (0..<28).map { $0 * 28 + 13 })
    XCTAssertEqual(Set(mnistShape.xPixels).intersection(mnistShape.yPixels), [])
    XCTAssertEqual((mnistShape.xPixels + mnistShape.yPixels).sorted(), Array(0..<784))
    XCTAssertEqual(mnistShape.yPixels.prefix(14), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14])
  }

  /// Split then reassemble gives the image back; the row is [X | Y].
  func testSplitAndAssembleRoundTrip() {
    let image = (0..<784).map { Float($0) }
    var row = [Float](repeating: -1, count: 784)
    image.withUnsafeBufferPointer { img in
      row.withUnsafeMutableBufferPointer { r in
        mnistShape.split(img.baseAddress!, raw: [UInt8](repeating: 0, count: 784), binarize: nil, into: r.baseAddress!)
      }
    }
    XCTAssertEqual(Array(row.prefix(28)), (0..<28).map { Float($0 * 28 + 13) })
    XCTAssertEqual(row[28], 0)
    XCTAssertEqual(row[28 + 13], 14)  // pixel 13 is X, so Y's 14th value is pixel 14
    XCTAssertEqual(mnistShape.assemble(x: Array(row.prefix(28)), y: Array(row.dropFirst(28))), image)
  }

  /// In training, X is resampled every time an image is used (another epoch: other bits for
  /// the same image), Y stays the grey levels; the held-out X and Y are fixed bits.
  func testConditionIsResampledPerEpochAndFixedWhenHeldOut() {
    let data = DatasetRegistry.synthetic(seed: 0, trainCount: 200, testCount: 50)
    let batcher = Batcher(
      dataset: data.train, binarization: .none, rng: CounterRNG(seed: 5), globalBatch: 200, conditioning: mnistShape)
    func rowOf(image: Int, epoch: Int) -> [Float] {
      var x = [Float](repeating: 0, count: 200 * 784)
      var idx = [Int](repeating: 0, count: 200)
      x.withUnsafeMutableBufferPointer { xp in
        idx.withUnsafeMutableBufferPointer { ip in
          batcher.fill(epoch: epoch, batchInEpoch: 0, rows: 0..<200, x: xp.baseAddress!, indices: ip.baseAddress!)
        }
      }
      let r = idx.firstIndex(of: image)!
      return Array(x[(r * 784)..<((r + 1) * 784)])
    }
    // An image with grey column pixels, so X has something to draw.
    let image = (0..<200).first { i in mnistShape.xPixels.filter { data.train.images[i * 784 + $0] > 60 }.count >= 4 }!
    let e0 = rowOf(image: image, epoch: 0), e1 = rowOf(image: image, epoch: 1), again = rowOf(image: image, epoch: 0)
    XCTAssertEqual(e0, again, "the same (seed, epoch, image) draws the same X")
    XCTAssertNotEqual(Array(e0.prefix(28)), Array(e1.prefix(28)), "X must be redrawn in another epoch")
    XCTAssertTrue(e0.prefix(28).allSatisfy { $0 == 0 || $0 == 1 })
    XCTAssertEqual(Array(e0.dropFirst(28)), Array(e1.dropFirst(28)), "Y is the grey image in every epoch")
    let greyY = mnistShape.yPixels.map { Float(data.train.images[image * 784 + $0]) * (1 / 255) }
    XCTAssertEqual(Array(e0.dropFirst(28)), greyY)
    // Where the intensity is 0 or 255, X is certain.
    for (j, p) in mnistShape.xPixels.enumerated() {
      let v = data.train.images[image * 784 + p]
      if v == 0 { XCTAssertEqual(e0[j], 0) }
      if v == 255 { XCTAssertEqual(e0[j], 1) }
    }
    // Held out: the VAE's fixed held-out bits, split; twice the same.
    let held = Batcher.heldOut(data.test, binarization: .none, conditioning: mnistShape)
    XCTAssertEqual(held, Batcher.heldOut(data.test, binarization: .dynamic, conditioning: mnistShape))
    let bits = Batcher.heldOut(data.test, binarization: .dynamic)
    for i in 0..<data.test.count {
      let x = Array(held[(i * 784)..<(i * 784 + 28)]), y = Array(held[(i * 784 + 28)..<((i + 1) * 784)])
      XCTAssertEqual(mnistShape.assemble(x: x, y: y), Array(bits[(i * 784)..<((i + 1) * 784)]))
    }
    // A resampled X (for completion diversity) differs from the fixed one but keeps Y.
    let resampled = Batcher.heldOut(data.test, binarization: .none, conditioning: mnistShape, xDraw: 1)
    XCTAssertNotEqual(resampled, held)
    for i in 0..<data.test.count {
      XCTAssertEqual(resampled[(i * 784 + 28)..<((i + 1) * 784)], held[(i * 784 + 28)..<((i + 1) * 784)])
    }
  }
}
