import Formats
import XCTest

@testable import VAEDist

final class ModelImagesTests: XCTestCase {
  /// Unmarked values take PNG's grey levels, marked ones red; the border is PNG's padding grey.
  func testColourGridGreyLevelsAreThePNGOnes() {
    let tile: [(Float, Bool)] = [(0.5, false), (.nan, false), (1, true), (0, true)]
    let g = ModelImages.colourGrid([tile], side: 2, columns: 1, scale: 1)
    XCTAssertEqual(g.width, 6)
    XCTAssertEqual(g.height, 6)
    func pixel(_ x: Int, _ y: Int) -> [UInt8] { Array(g.pixels[((y * g.width + x) * 3)..<((y * g.width + x) * 3 + 3)]) }
    let grey = PNG.paddingGrey
    XCTAssertEqual(pixel(0, 0), [grey, grey, grey])
    XCTAssertEqual(pixel(2, 2), [UInt8](repeating: PNG.greyLevel(0.5), count: 3))
    XCTAssertEqual(pixel(3, 2), [0, 0, 0])
    XCTAssertEqual(pixel(2, 3), [255, 48, 48])
    XCTAssertEqual(pixel(3, 3), [96, 0, 0])
    XCTAssertEqual(pixel(5, 5), [grey, grey, grey])
  }
}
