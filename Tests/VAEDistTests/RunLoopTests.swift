import Dispatch
import Foundation
import VAE
import VAEData
import XCTest

@testable import VAEDist

/// The run loop's bookkeeping, with the exchange wrapped by test code (as a fault is injected):
/// the exchange time per step in metrics.jsonl, the finiteness check before every save, and
/// the clock and bounds the run relies on.
final class RunLoopTests: XCTestCase {
  override class func setUp() { FloatingPointEnvironment.enableFlushToZero() }

  /// A one-rank communicator whose exchange takes exactly `secondsPerExchange` by its own
  /// clock, and can make one summed gradient value NaN at exchange `nanAt` (1-based).
  final class InstrumentedCommunicator: Communicator {
    let secondsPerExchange: Double
    let nanAt: Int?
    init(secondsPerExchange: Double = 0, nanAt: Int? = nil) {
      self.secondsPerExchange = secondsPerExchange
      self.nanAt = nanAt
    }
    var rank: Int { 0 }
    var size: Int { 1 }
    func allreduceSum(_ buffer: UnsafeMutableBufferPointer<Double>) throws {}
    func allgather(words: [UInt64]) throws -> [[UInt64]] { [words] }
    func broadcast(_ bytes: inout [UInt8], root: Int) throws {}
    func barrier() throws {}
    func finalize() {}
    func makeGradientExchange(layout: ParameterLayout, shardOptimizer: Bool) throws -> GradientExchange {
      InstrumentedExchange(layout: layout, secondsPerExchange: secondsPerExchange, nanAt: nanAt)
    }
  }

  final class InstrumentedExchange: GradientExchange {
    let inner: LocalExchange
    let secondsPerExchange: Double
    let nanAt: Int?
    private(set) var count = 0
    init(layout: ParameterLayout, secondsPerExchange: Double, nanAt: Int?) {
      inner = LocalExchange(layout: layout)
      self.secondsPerExchange = secondsPerExchange
      self.nanAt = nanAt
    }
    var gradients: Arena { inner.gradients }
    var parameters: Arena { inner.parameters }
    var shards: [Range<Int>] { inner.shards }
    var updatedSlice: Range<Int>? { nil }
    var sharesParameters: Bool { false }
    var transport: String { "test" }
    var seconds: Double { Double(count) * secondsPerExchange }
    var votes: UnsafeMutableBufferPointer<Float> { inner.votes }
    func sumAndUpdate(_ update: (Range<Int>, UnsafePointer<Float>) throws -> Void) throws {
      count += 1
      if count == nanAt { inner.gradients.base[0] = .nan }
      try inner.sumAndUpdate(update)
    }
    func gatherToRoot(_ mine: UnsafeBufferPointer<Float>, into full: UnsafeMutableBufferPointer<Float>?) throws {
      try inner.gatherToRoot(mine, into: full)
    }
    func parametersWritten() throws {}
  }

  var root = ""
  override func setUpWithError() throws { root = try TT.makeTempDir("runloop") }
  override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

  func run(_ c: RunConfig, _ comm: Communicator, dir: String, stopAt: Int? = nil) throws -> TrainSummary {
    var polls = 0
    let options = RunOptions(tensorboard: false, stopRequest: {
      polls += 1
      return polls == stopAt ? SIGTERM : 0
    })
    return try TrainingRun(config: c, data: TT.synthetic, comm: comm, runDirectory: dir, options: options).run()
  }

  /// allreduce_ms is the exchange time per step of the steps it covers, also when an
  /// evaluation (which restarts the samples/s clock) falls between two metrics lines: eval
  /// every 6 steps, a line every 4, 2 ms per exchange ⇒ 2.0 on every line.
  func testAllreduceTimeIsPerStepWhenEvaluationsFallBetweenLines() throws {
    var c = TT.tinyConfig(steps: 24, checkpointEvery: 0)
    c.logEvery = 4
    c.evalEvery = 6
    _ = try run(c, InstrumentedCommunicator(secondsPerExchange: 0.002), dir: root + "/a")
    let lines = try TT.metricsLines(root + "/a").filter { $0["allreduce_ms"] != nil }
    XCTAssertEqual(lines.count, 6)
    for line in lines {
      XCTAssertEqual(try XCTUnwrap(line["allreduce_ms"] as? Double), 2.0, accuracy: 1e-9, "\(line)")
    }
  }

  /// The final checkpoint is checked like every other: parameters made non-finite by the last
  /// update stop the run with one line naming the tensor, and no final.safetensors is written.
  func testFinalSaveRefusesNonFiniteParameters() throws {
    let c = TT.tinyConfig(steps: 10, checkpointEvery: 5)
    XCTAssertThrowsError(try run(c, InstrumentedCommunicator(nanAt: 10), dir: root + "/f")) { e in
      XCTAssertTrue("\(e)".contains("step 10: parameter encoder.0.weight is not finite"), "\(e)")
      XCTAssertTrue("\(e)".contains("step-00000005.safetensors is the newest checkpoint"), "\(e)")
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/f/final.safetensors"))
  }

  /// Before any checkpoint, the line says that none was written (not "no checkpoint is the newest").
  func testNonFiniteParametersBeforeAnyCheckpointSayNoneWasWritten() throws {
    let c = TT.tinyConfig(steps: 10, checkpointEvery: 0)
    XCTAssertThrowsError(try run(c, InstrumentedCommunicator(nanAt: 3), dir: root + "/n")) { e in
      XCTAssertTrue("\(e)".contains("and no checkpoint of this run was written yet"), "\(e)")
      XCTAssertFalse("\(e)".contains("is the newest checkpoint"), "\(e)")
    }
  }

  /// So is the checkpoint of an agreed stop.
  func testStopSaveRefusesNonFiniteParameters() throws {
    let c = TT.tinyConfig(steps: 20, checkpointEvery: 5)
    XCTAssertThrowsError(try run(c, InstrumentedCommunicator(nanAt: 7), dir: root + "/s", stopAt: 7)) { e in
      XCTAssertTrue("\(e)".contains("step 7: parameter encoder.0.weight is not finite"), "\(e)")
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: root + "/s/checkpoints/step-00000007.safetensors"))
    // Without the fault the same stop writes its checkpoint and reports the signal.
    let s = try run(c, InstrumentedCommunicator(), dir: root + "/ok", stopAt: 7)
    XCTAssertEqual(s.stopSignal, SIGTERM)
    XCTAssertTrue(FileManager.default.fileExists(atPath: root + "/ok/checkpoints/step-00000007.safetensors"))
  }

  /// Run times come from the monotonic clock (a wall-clock step during a run, e.g. by NTP,
  /// would otherwise show in time_s and samples/s): its zero is the system's uptime clock, not 1970.
  func testRunClockIsMonotonic() {
    let uptime = Double(DispatchTime.now().uptimeNanoseconds) / 1e9
    XCTAssertEqual(MonotonicClock.now(), uptime, accuracy: 0.5)
    let clock = RunClock(step: 0, elapsedBefore: 5)
    XCTAssertEqual(clock.elapsed, 5, accuracy: 0.5)
  }

  /// A model over 2³¹ − 1 parameters, which the config's width ranges allow, is refused when the
  /// config is read (one line), not by a trap converting a count to MPI's int.
  func testModelsOverTheExchangeLimitAreAConfigError() throws {
    let yaml = "model:\n  input_size: 784\n  hidden: [60000, 60000]\n  zdim: 20\n"
    XCTAssertThrowsError(try ConfigLoader.parse(yaml, file: "big.yaml", defaultName: "big")) { e in
      let text = "\(e)"
      XCTAssertTrue(text.contains("parameters; at most 2147483639"), text)
      XCTAssertFalse(text.contains("\n"), text)
    }
    XCTAssertNil(ModelConfig(inputSize: 784, hidden: [500, 500], zdim: 20).problem)
  }
}
