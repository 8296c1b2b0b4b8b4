import Formats
import Foundation
import TensorBoard
import VAE
import VAEData

/// TensorBoard event files beside metrics.jsonl (rank 0): the same numbers as scalars, and at
/// every evaluation a picture of the model (VAE: samples and reconstructions; conditional
/// kinds: completions of held-out digits).
extension Trainer {
  func openTensorBoard() throws {
    guard comm.isRoot, output.tensorboard else { return }
    tensorboard = try TensorBoardWriter(directory: runDirectory)
  }

  /// The scalars of one metrics line, tagged `train/<field>` (JSON numbers only).
  func tensorboardScalars(_ fields: [(String, String)], prefix: String, wallTime: Double) throws {
    guard let tb = tensorboard else { return }
    for (key, value) in fields where !["step", "epoch", "world_size", "time_s", "wall_time"].contains(key) {
      if let x = Double(value) { tb.scalar("\(prefix)/\(key)", x, step: step, wallTime: wallTime) }
    }
    try flushTensorBoard(tb)
  }

  /// Images at an evaluation: 64 samples and 8 reconstructions (VAE), or 8 completions.
  func tensorboardImages(wallTime: Double) throws {
    guard let tb = tensorboard else { return }
    for (tag, image) in evaluationImages() {
      tb.image(tag, png: PNG.encodeGray(width: image.width, height: image.height, pixels: image.pixels),
               width: image.width, height: image.height, channels: 1, step: step, wallTime: wallTime)
    }
    try flushTensorBoard(tb)
  }

  /// Like metrics.jsonl, a failed write stops the run (one line naming the events file).
  func flushTensorBoard(_ tb: TensorBoardWriter) throws {
    do { try tb.flush() } catch let e as FileIOError { throw TrainError.io(e.description) }
  }

  func evaluationImages() -> [(String, (width: Int, height: Int, pixels: [UInt8]))] {
    let cfg = config.model
    let (h, w) = ModelImages.shape(inputSize: cfg.inputSize)
    let n = cfg.inputSize
    let shown = min(8, data.test.count)
    let rows = Array(testX.prefix(shown * n))
    if cfg.kind == .vae {
      let model = VAEModel(config: cfg, maxBatch: 64, params: model.params)
      let z = Buffer(64 * cfg.zdim)
      ModelImages.latentSamples(count: 64, dim: cfg.zdim, seed: 0, into: z.ptr)
      model.decode(UnsafePointer(z.ptr), batch: 64)
      let samples = PNG.grid(images: ModelImages.decoded(model, rows: 64), rows: h, cols: w, gridColumns: 8)
      rows.withUnsafeBufferPointer { model.encode($0.baseAddress!, batch: shown) }
      model.decode(UnsafePointer(model.mu.ptr), batch: shown)
      let originals = (0..<shown).map { Array(rows[($0 * n)..<(($0 + 1) * n)]) }
      let tiles = ModelImages.pairedRows(
        originals: originals, reconstructions: ModelImages.decoded(model, rows: shown), columns: shown)
      return [("samples", samples), ("reconstructions", PNG.grid(images: tiles, rows: h, cols: w, gridColumns: shown))]
    }
    guard let cond = config.conditioning else { return [] }
    let completer = Completer(config: cfg, params: model.params, chunk: shown)
    let draws = cfg.kind == .cvae ? 3 : 1
    let means = (0..<draws).map { completer.means(rows, count: shown, draw: $0) }
    let tiles = cond.completionTiles(rows: rows, count: shown, completions: means)
    return [("completions", PNG.grid(images: tiles, rows: h, cols: w, gridColumns: 1 + draws))]
  }
}
