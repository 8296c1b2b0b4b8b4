import TestSupport
import XCTest

@testable import VAE

final class ParameterLayoutTests: XCTestCase {
  func testLookupByNameFindsEveryTensorAndItsRange() {
    let layout = ParameterLayout(specs: [
      TensorSpec(name: "a.weight", shape: [2, 3]), TensorSpec(name: "a.bias", shape: [2]),
      TensorSpec(name: "b.weight", shape: [1, 2]),
    ])
    XCTAssertEqual(layout.index(of: "a.bias"), 1)
    XCTAssertEqual(layout.range(named: "b.weight"), 8..<10)
    XCTAssertNil(layout.index(of: "c.weight"))
    XCTAssertEqual(layout, ParameterLayout(specs: layout.specs))
    XCTAssertNotEqual(layout, ParameterLayout(specs: Array(layout.specs.dropLast())))
    let arena = Arena(layout: layout)
    XCTAssertTrue(arena.setValues(named: "a.bias", [4, 5]))
    XCTAssertEqual(Array(arena.data), [0, 0, 0, 0, 0, 0, 4, 5, 0, 0])
  }

  /// Looking up every tensor of a layout by name costs the same per tensor at 200,000 tensors
  /// as at 20,000 (a linear search makes it 10 times as much); fastest of three runs, loose bound.
  func testLookupByNameStaysConstantPerTensor() {
    let growth = Scaling.perItemGrowth(
      small: 20_000, large: 200_000,
      prepare: { n in ParameterLayout(specs: (0..<n).map { TensorSpec(name: "layer.\($0).weight", shape: [1]) }) }
    ) { layout in
      for (i, spec) in layout.specs.enumerated() where layout.index(of: spec.name) != i {
        return XCTFail("\(spec.name) not at \(i)")
      }
    }
    XCTAssertLessThan(growth, 4, "time per lookup grew \(growth)× from 20,000 to 200,000 tensors")
  }
}
