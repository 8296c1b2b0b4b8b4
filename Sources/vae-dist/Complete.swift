import Formats
import ArgumentParser
import Foundation
import VAE
import VAEData
import VAEDist

struct Complete: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Complete held-out digits from their condition X with a CVAE (and a regressor): the tutorial's Figure 8.",
    discussion: """
      Writes a PNG with one row per test digit (the first --n of the test set): the true digit, \
      then the regressor's prediction (with --regressor), then --samples CVAE completions, each \
      from its own z ~ N(0, I). The condition X (e.g. the middle column) is drawn in red in every \
      tile (bright: 1, dark: 0); predicted pixels are Bernoulli means in grey. Tiles are 28 × 28 \
      with 2-pixel grey borders, scaled by --scale: the PNG is scale·(30·columns + 2) wide and \
      scale·(30·n + 2) high. It also prints, over the first --limit held-out images, per model: \
      log p(Y|X) (the CVAE's conditional ELBO; the regressor's exact value), the mean per-pixel \
      entropy of the predicted means (nats, lower is sharper), diversity (mean pairwise L2 \
      distance between 5 completions of one input: the CVAE over 5 z, both over 5 resampled X), \
      and the mean and best-of-5 squared error to the true Y. X and Y of the held-out set are \
      fixed bits (seed 20140101), so numbers compare across runs.
      Example: vae-dist complete --checkpoint runs/cvae-column/final.safetensors \
      --regressor runs/regressor-column/final.safetensors --out completions.png
      """)
  @Option(name: .long, help: ArgumentHelp("A cvae checkpoint.", valueName: "path"))
  var checkpoint: String
  @Option(name: .long, help: ArgumentHelp("A regressor checkpoint with the same condition, shown beside the CVAE.", valueName: "path"))
  var regressor: String?
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, parsing: .unconditional, help: "Test digits in the figure (1…100).")
  var n: Int = 12
  @Option(name: .long, parsing: .unconditional, help: "CVAE completions per digit in the figure (1…20).")
  var samples: Int = 3
  @Option(name: .long, parsing: .unconditional, help: "Pixel scale of the figure (1…16).")
  var scale: Int = 3
  @Option(name: .long, parsing: .unconditional, help: "Held-out images for the numbers (default: all).")
  var limit: Int?
  @Option(name: .long, parsing: .unconditional, help: "Seed of the CVAE's z draws.")
  var seed: Int = 0
  @Option(name: .long, help: ArgumentHelp("Output PNG file.", valueName: "file.png"))
  var out: String
  @Flag(name: .long, help: "Print the numbers as one JSON object.")
  var json = false
  @Option(name: .long, parsing: .unconditional, help: "OpenBLAS threads.")
  var threads: Int?

  func validate() throws {
    guard (1...100).contains(n) else { throw ValidationError("--n: expected 1…100, got \(n)") }
    guard (1...20).contains(samples) else { throw ValidationError("--samples: expected 1…20, got \(samples)") }
    guard (1...16).contains(scale) else { throw ValidationError("--scale: expected 1…16, got \(scale)") }
    guard seed >= 0 else { throw ValidationError("--seed: expected a non-negative integer, got \(seed)") }
    try checkPositive(limit, "limit")
    try checkPositive(threads, "threads")
  }

  /// The numbers of one model: its log-likelihood term and completion statistics.
  struct Report {
    var kind: ModelKind
    var logLikelihood: Double
    var primary: CompletionStats
    var overX: CompletionStats
  }

  func run() throws {
    applyThreads(threads)
    FloatingPointEnvironment.enableFlushToZero()
    let (ck, runConfig) = try loadCheckpoint(checkpoint)
    try requireKind(ck, [.cvae], command: "complete --checkpoint", instead: "give the regressor as --regressor")
    let rc = try requireRunConfig(runConfig, checkpoint)
    guard let cond = rc.conditioning else { throw ConfigError("\(checkpoint): no condition in its config") }
    var reg: LoadedCheckpoint?
    if let regressor {
      let (r, rrc) = try loadCheckpoint(regressor)
      try requireKind(r, [.regressor], command: "complete --regressor", instead: "give the CVAE as --checkpoint")
      guard rrc?.conditioning == cond, r.model.inputSize == ck.model.inputSize else {
        throw ConfigError("--regressor: \(regressor) conditions on other pixels than \(checkpoint)")
      }
      reg = r
    }
    let data = try dataOptions.load(rc)
    let count = min(limit ?? data.test.count, data.test.count)
    let rows = Batcher.heldOut(data.test, binarization: rc.binarize, conditioning: cond, limit: count)
    let resampled = (1...5).map {
      Batcher.heldOut(data.test, binarization: rc.binarize, conditioning: cond, limit: count, xDraw: $0)
    }
    let cvae = Completer(config: ck.model, params: ck.params)
    let regModel = reg.map { Completer(config: $0.model, params: $0.params) }
    var reports = [try report(cvae, rows: rows, resampled: resampled, count: count)]
    if let regModel { reports.append(try report(regModel, rows: rows, resampled: resampled, count: count)) }
    try figure(cvae: cvae, regressor: regModel, rows: rows, cond: cond)
    printReports(reports, count: count)
  }

  func report(_ m: Completer, rows: [Float], resampled: [[Float]], count: Int) throws -> Report {
    let n = m.model.config.inputSize, c = m.model.config.conditionSize, t = m.targetSize
    var targets = [Float](repeating: 0, count: count * t)
    for i in 0..<count { for j in 0..<t { targets[i * t + j] = rows[i * n + c + j] } }
    let est = Estimator(config: m.model.config, params: m.model.params)
    let terms = rows.withUnsafeBufferPointer {
      est.elbo(x: $0.baseAddress!, count: count, firstIndex: 0, noise: .sampled(CounterRNG(seed: heldOutBinarizationSeed)))
    }
    let isCVAE = m.model.config.kind == .cvae
    // CVAE: 5 z's on the held-out X; regressor: its one prediction per resampled X.
    let primary = isCVAE
      ? (0..<5).map { m.means(rows, count: count, draw: $0, seed: UInt64(seed)) }
      : resampled.map { m.means($0, count: count, draw: 0) }
    let overX = resampled.map { m.means($0, count: count, draw: 0, seed: UInt64(seed)) }
    return Report(
      kind: m.model.config.kind, logLikelihood: (terms.recon - terms.kl) / Double(count),
      primary: CompletionStats.of(primary, targets: targets, count: count, t: t),
      overX: CompletionStats.of(overX, targets: targets, count: count, t: t))
  }

  func printReports(_ reports: [Report], count: Int) {
    if json {
      var fields: JSONObject = ["images": .int(count), "figure": .string(out)]
      for r in reports {
        fields.append(r.kind.rawValue, .object([
          "log_p_y_given_x": .number(r.logLikelihood), "entropy": .number(r.primary.entropy),
          "diversity": .number(r.primary.diversity), "diversity_over_x": .number(r.overX.diversity),
          "mean_sq_error": .number(r.primary.meanSquaredError), "best_of_5_sq_error": .number(r.primary.bestSquaredError),
        ]))
      }
      Console.out(fields.line)
      return
    }
    Console.out("wrote \(out); numbers over \(count) held-out images (nats per image; entropy per pixel):")
    for r in reports {
      let head =
        r.kind == .cvae
        ? String(format: "conditional ELBO %.2f, entropy %.4f, diversity over 5 z %.2f (over 5 X %.2f)",
                 r.logLikelihood, r.primary.entropy, r.primary.diversity, r.overX.diversity)
        : String(format: "log p(Y|X) %.2f, entropy %.4f, diversity over 5 X %.2f",
                 r.logLikelihood, r.primary.entropy, r.primary.diversity)
      Console.out(String(format: "  %@: %@, squared error mean %.2f, best of 5 %.2f", r.kind.rawValue, head,
                         r.primary.meanSquaredError, r.primary.bestSquaredError))
    }
  }

  /// Rows of tiles: truth, regressor, CVAE samples; X in red everywhere.
  func figure(cvae: Completer, regressor: Completer?, rows: [Float], cond: Conditioning) throws {
    let count = min(n, rows.count / cond.pixels)
    let firstRows = Array(rows.prefix(count * cond.pixels))
    var columns: [[Float]] = []  // per column: [count, targetSize] means
    if let regressor { columns.append(regressor.means(firstRows, count: count, draw: 0)) }
    for s in 0..<samples { columns.append(cvae.means(firstRows, count: count, draw: s, seed: UInt64(seed))) }
    let isX = cond.conditionMask
    let tiles = cond.completionTiles(rows: firstRows, count: count, completions: columns).map { Array(zip($0, isX)) }
    let side = Int(Double(cond.pixels).squareRoot().rounded())
    let image = ModelImages.colourGrid(tiles, side: side, columns: 1 + columns.count, scale: scale)
    try PNG.writeRGB(path: out, width: image.width, height: image.height, pixels: image.pixels)
  }
}
