import XCTest

@testable import VAEDist

/// The split of a global batch into ranks × micro-batches: which rows each part sums, when two
/// splits give the same bits, and what a resumed run picks when its micro-batch count is auto.
final class BatchSplitTests: XCTestCase {
  func split(_ p: Int, _ k: Int) -> BatchSplit { BatchSplit(ranks: p, microBatches: k) }

  func testPartsAreTheRanksShardsSplitAgainInOrder() {
    XCTAssertEqual(split(2, 1).parts(batch: 100), [0..<50, 50..<100])
    XCTAssertEqual(split(1, 2).parts(batch: 100), [0..<50, 50..<100])
    XCTAssertEqual(split(2, 2).parts(batch: 100), [0..<25, 25..<50, 50..<75, 75..<100])
    // Uneven: 3 ranks of 100 rows take 33, 33, 34 (floor split), and so do 3 micro-batches.
    XCTAssertEqual(split(3, 1).parts(batch: 100), [0..<33, 33..<66, 66..<100])
    XCTAssertEqual(split(1, 3).parts(batch: 100), split(3, 1).parts(batch: 100))
    // Nested floor splits are not always the flat split: 2 × 3 of 9 rows is 1, 1, 2, 1, 2, 2;
    // 6 × 1 is 1, 2, 1, 2, 1, 2.
    XCTAssertEqual(split(2, 3).parts(batch: 9), [0..<1, 1..<2, 2..<4, 4..<5, 5..<7, 7..<9])
    XCTAssertEqual(split(6, 1).parts(batch: 9), [0..<1, 1..<3, 3..<4, 4..<6, 6..<7, 7..<9])
    XCTAssertEqual(split(3, 2).parts(batch: 9), split(6, 1).parts(batch: 9))
    XCTAssertTrue(split(2, 3).addsLike(split(2, 3), batch: 9))
  }

  func testFlatSplitsOfTheSamePartsAddAlikeNestedOnesOnlyWithThemselves() {
    XCTAssertTrue(split(2, 1).addsLike(split(1, 2), batch: 100))
    XCTAssertTrue(split(1, 4).addsLike(split(4, 1), batch: 100))
    XCTAssertTrue(split(2, 2).addsLike(split(2, 2), batch: 100))
    // (g0 + g1) + (g2 + g3) is another bracketing than ((g0 + g1) + g2) + g3.
    XCTAssertFalse(split(2, 2).addsLike(split(4, 1), batch: 100))
    XCTAssertFalse(split(2, 2).addsLike(split(1, 4), batch: 100))
    // Other parts: another number of them, or other rows.
    XCTAssertFalse(split(2, 1).addsLike(split(1, 1), batch: 100))
    XCTAssertFalse(split(3, 1).addsLike(split(1, 2), batch: 100))
  }

  func testAutoKeepsTheShardsWhenTheRanksDivideThem() {
    XCTAssertEqual(BatchSplit.resuming(split(2, 1), on: 1), split(1, 2))
    XCTAssertEqual(BatchSplit.resuming(split(4, 1), on: 2), split(2, 2))
    XCTAssertEqual(BatchSplit.resuming(split(1, 2), on: 2), split(2, 1))
    XCTAssertEqual(BatchSplit.resuming(split(2, 2), on: 4), split(4, 1))
    XCTAssertEqual(BatchSplit.resuming(split(2, 1), on: 2), split(2, 1))
    // 3 ranks cannot keep 2 parts: one micro-batch each (the run says so).
    XCTAssertEqual(BatchSplit.resuming(split(2, 1), on: 3), split(3, 1))
    XCTAssertEqual(BatchSplit.rankCounts(keeping: 12), [1, 2, 3, 4, 6, 12])
    XCTAssertEqual(BatchSplit.rankCounts(keeping: 1), [1])
  }

  func testDescriptionNamesRanksAndMicroBatches() {
    XCTAssertEqual(split(1, 1).description, "1 rank × 1 micro-batch")
    XCTAssertEqual(split(2, 3).description, "2 ranks × 3 micro-batches")
  }
}
