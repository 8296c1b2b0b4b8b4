import Foundation
import VAE
import VAEData

/// What one data-parallel step needs: the model over the exchange's arenas, the batcher, the
/// exchange and Adam. Every rank runs `step` on its rows of each global batch; the gradients are
/// summed with one exchange and every rank applies the same Adam update. The run around the
/// step (start-up agreement, logging, evaluation, checkpoints) is `TrainingRun`.
///
/// Results are bit-identical only with flush-to-zero on (the executable turns it on; see
/// `FloatingPointEnvironment`).
public final class Trainer {
  public let config: RunConfig
  public let model: VAEModel
  public let exchange: GradientExchange
  public let adam: Adam
  public let batcher: Batcher
  let comm: Communicator
  /// Free bits: one slot of per-dimension KL sums per (rank, micro-batch), summed in that order
  /// (the rows' order in the global batch), and the mask it gives the model.
  let klSlots: UnsafeMutableBufferPointer<Double>?
  let klMask: Buffer?
  /// Steps done: the next step trains on global batch `completedSteps`.
  public internal(set) var completedSteps = 0
  /// Whether the next step also measures Σg² of the summed gradient it hands to Adam (the run
  /// asks for it before a metrics line).
  public var measuresGradientNorm = false
  /// Σg² (of the mean gradient) measured at the last step that was asked to: this rank's shard
  /// when sharded, the whole gradient otherwise.
  public private(set) var gradientSquares = 0.0
  /// This rank's rows of each global batch, split again into micro-batches the same way.
  public let microShards: [Range<Int>]
  /// The running gradient sum over micro-batches (nil without accumulation).
  let accumulated: Buffer?
  let x: Buffer
  let eps: Buffer
  let indices: UnsafeMutablePointer<Int>
  let noiseRNG: CounterRNG
  /// The (step, rows) whose pixels and noise `x` and `eps` hold: free bits' encoder pass leaves
  /// the step's first micro-batch loaded, and the step does not load it again.
  var loaded: (step: Int, rows: Range<Int>)?
  /// The micro-batch being backpropagated, Σg² so far this step, and the first error the
  /// exchange threw while backward handed it gradients.
  var micro = 0
  var squares = 0.0
  var readyError: Error?
  /// `gradientReady(_:)`, made once (no closure is allocated per step).
  private var readyHook: GradientReady?

  /// Under MPI, call this after the ranks agreed on the options (`TrainingRun` does): building
  /// the exchange is collective.
  public init(
    config: RunConfig, train: Dataset, comm: Communicator, parallel: ParallelOptions = ParallelOptions(),
    standardization: Standardization? = nil
  ) throws {
    self.config = config
    self.comm = comm
    let shard = comm.shard(of: config.batch)
    let k = parallel.microBatches ?? 1
    // Split as the ranks split the batch, so K micro-batches take K ranks' rows.
    microShards = (0..<k).map { j in
      let r = shardRange(rank: j, size: k, count: shard.count)
      return (shard.lowerBound + r.lowerBound)..<(shard.lowerBound + r.upperBound)
    }
    let rows = max(microShards.map(\.count).max() ?? 1, 1)
    exchange = try comm.makeGradientExchange(layout: config.model.layout, shardOptimizer: parallel.shardOptimizer)
    model = VAEModel(
      config: config.model, maxBatch: rows, params: exchange.parameters, grads: exchange.gradients,
      objective: config.objective)
    // Sharded: this rank keeps Adam's moments for its slice only (memory ÷ P).
    adam = Adam(config: config.adam, layout: model.params.layout, owning: exchange.updatedSlice)
    noiseRNG = CounterRNG(seed: config.seed)
    batcher = Batcher(
      dataset: train, binarization: config.binarize, rng: noiseRNG, globalBatch: config.batch,
      conditioning: config.conditioning, standardization: standardization)
    x = Buffer(rows * config.model.inputSize)
    eps = Buffer(rows * noiseWidth(config))
    indices = .allocate(capacity: rows)
    accumulated = k > 1 ? Buffer(model.grads.count) : nil
    let d = config.model.latentSize
    if config.objective.freeBits > 0 {
      klSlots = .allocate(capacity: comm.size * k * d)
      let mask = Buffer(d)
      klMask = mask
      model.klMask = UnsafePointer(mask.ptr)
    } else {
      klSlots = nil
      klMask = nil
    }
    try exchange.writeParameters(isRoot: comm.isRoot) { model.initialise(rng: CounterRNG(seed: config.seed)) }
    readyHook = { [unowned self] in self.gradientReady($0) }
  }

  deinit {
    indices.deallocate()
    klSlots?.deallocate()
  }

  /// This rank's rows of each global batch.
  public var rowsPerStep: Int { microShards.reduce(0) { $0 + $1.count } }

  /// One optimizer step on global batch `completedSteps`; returns this rank's loss sums.
  /// `observer` (benchmarks) wraps each phase from outside.
  @discardableResult
  public func step(observer: StepObserver = .unobserved) throws -> LossTerms {
    applySchedules(step: completedSteps)
    try applyFreeBits(observer: observer)
    var terms = LossTerms()
    for (j, rows) in microShards.enumerated() {
      if loaded?.step != completedSteps || loaded?.rows != rows { try observer.measure(.batch) { loadBatch(rows) } }
      terms = terms + (try observer.measure(.forward) { forward(rows: rows.count) })
      try observer.measure(.backward) { try backward(micro: j) }
    }
    try observer.measure(.exchange) { try exchangeAndUpdate() }
    completedSteps += 1
    return terms
  }

  /// The KL weight and the learning rate of step `t`: pure functions of the step (and the run's
  /// length), so every rank, micro-batch and resumed run agrees.
  func applySchedules(step t: Int) {
    model.klWeight = config.objective.klWeight(step: t)
    adam.config.lr = config.lrSchedule.lr(
      base: config.adam.lr, step: t, stepsPerEpoch: batcher.stepsPerEpoch,
      totalSteps: config.steps ?? (config.epochs ?? 1) * max(batcher.stepsPerEpoch, 1))
  }

  /// Free bits (Kingma et al. 2016): an encoder pass over this rank's micro-batches sums each
  /// latent dimension's KL; the sums of every (rank, micro-batch) are added in the global batch's
  /// row order (so np K and K micro-batches agree bit for bit), and dimension j keeps its KL
  /// gradient only while its mean over the global batch is above λ. The micro-batches go last to
  /// first, so that the first stays loaded for the step (each slot is its own: the order changes
  /// no bit).
  func applyFreeBits(observer: StepObserver) throws {
    guard let slots = klSlots, let mask = klMask else { return }
    let d = config.model.latentSize, k = microShards.count
    slots.update(repeating: 0)
    for (j, rows) in microShards.enumerated().reversed() {
      try observer.measure(.batch) { loadBatch(rows) }
      model.encode(UnsafePointer(x.ptr), batch: rows.count)
      model.addKLPerDimension(batch: rows.count, into: slots.baseAddress! + (comm.rank * k + j) * d)
    }
    try comm.allreduceSum(slots)
    let lambda = Double(config.objective.freeBits)
    for j in 0..<d {
      var total = 0.0
      for slot in 0..<(comm.size * k) { total += slots[slot * d + j] }
      mask.ptr[j] = total / Double(config.batch) > lambda ? 1 : 0
    }
  }

  /// Rows `rows` of global batch `completedSteps`: pixels (binarised as configured) and noise
  /// ε, each a pure function of (seed, epoch, example index).
  func loadBatch(_ rows: Range<Int>) {
    let spe = batcher.stepsPerEpoch, epoch = completedSteps / spe
    batcher.fill(epoch: epoch, batchInEpoch: completedSteps % spe, rows: rows, x: x.ptr, indices: indices)
    noiseRNG.fillNormal(eps.ptr, rows: rows.count, dim: noiseWidth(config), purpose: .noise, epoch: UInt64(epoch)) {
      UInt64(indices[$0])
    }
    loaded = (completedSteps, rows)
  }

  func forward(rows: Int) -> LossTerms {
    model.loss(x: UnsafePointer(x.ptr), eps: UnsafePointer(eps.ptr), batch: rows)
  }

  /// Backward of micro-batch `j`. Each layer's gradients go to `gradientReady` as backward
  /// finishes them; the last micro-batch's start the optimizer step.
  func backward(micro j: Int) throws {
    micro = j
    if j == microShards.count - 1 {
      adam.beginStep()
      squares = 0
    }
    model.backward(ready: readyHook)
    if let e = readyError {
      readyError = nil
      throw e
    }
  }

  /// One layer's range of the gradient arena is final for micro-batch `micro`: added to the
  /// running sum in order, ((g0 + g1) + g2) + …, the last one into the gradient arena itself
  /// (the ranks' order), which then goes to the exchange.
  func gradientReady(_ r: Range<Int>) {
    let g = model.grads.base, last = microShards.count - 1
    if let a = accumulated?.ptr {
      if micro == 0 {
        (a + r.lowerBound).update(from: g + r.lowerBound, count: r.count)
      } else if micro < last {
        for i in r { a[i] += g[i] }
      } else {
        for i in r { g[i] = a[i] + g[i] }
      }
    }
    guard micro == last, readyError == nil else { return }
    do { try exchange.gradientsReady(r, update: update) } catch { readyError = error }
  }

  /// Adam (scaled by 1/B) on summed gradients `g` of `range`, and their Σg² when asked for.
  func update(_ range: Range<Int>, _ g: UnsafePointer<Float>) {
    if measuresGradientNorm { squares += sumOfSquares(g, range.count) }
    adam.apply(params: model.params, gradients: g, range: range, scale: 1 / Float(config.batch))
  }

  /// The one exchange: the gradients summed over ranks go to Adam in the parts this rank
  /// updates (those it has not updated during backward).
  func exchangeAndUpdate() throws {
    try exchange.sumAndUpdate(update)
    let scale = Double(1 / Float(config.batch))
    if measuresGradientNorm { gradientSquares = squares * scale * scale }
  }

  /// Σ x² over `n` values, in Double.
  func sumOfSquares(_ g: UnsafePointer<Float>, _ n: Int) -> Double {
    var s = 0.0
    for i in 0..<n { s += Double(g[i]) * Double(g[i]) }
    return s
  }

  /// The epoch a run that has done `steps` steps is in, counted from 1 (0 before the first
  /// step): what the progress line, metrics.jsonl and checkpoints (`vae-dist info`) all say.
  public func epochNumber(afterSteps steps: Int) -> Int {
    steps == 0 ? 0 : (steps - 1) / batcher.stepsPerEpoch + 1
  }
}

/// The phases of a step, for observers that time them.
public enum StepPhase: String, CaseIterable, Sendable {
  case batch = "batch+noise"
  case forward
  case backward
  /// The gradient exchange and the Adam update it hands the sum to.
  case exchange = "exchange+adam"
}

/// Wraps each phase of a step (`Trainer.step(observer:)`), e.g. to time it; the default runs
/// each phase as it is.
open class StepObserver {
  public init() {}
  /// Runs `body`; subclasses may measure (or synchronise) around it.
  open func measure<T>(_ phase: StepPhase, _ body: () throws -> T) throws -> T { try body() }
  nonisolated(unsafe) public static let unobserved = StepObserver()
}

/// Noise values per row: the latent width, times the samples of importance-weighted training
/// (row r's k draws, one after the other; the same stream as one sample for k = 1).
func noiseWidth(_ config: RunConfig) -> Int { config.model.latentSize * config.objective.samplesPerRow }
