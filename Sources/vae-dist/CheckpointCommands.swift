import Formats
import ArgumentParser
import Foundation
import VAE
import VAEData
import VAEDist

/// A checkpoint and, when its metadata holds one, the run config it was trained with.
func loadCheckpoint(_ path: String) throws -> (LoadedCheckpoint, RunConfig?) {
  let c = try Checkpoint.load(path: path)
  let run = c.configYAML.isEmpty ? nil : try? ConfigLoader.parse(c.configYAML, file: path, defaultName: "checkpoint")
  return (c, run)
}

/// One line when a command cannot use a checkpoint of this kind.
func requireKind(_ ck: LoadedCheckpoint, _ kinds: [ModelKind], command: String, instead: String) throws {
  let kind = ck.model.kind
  guard kinds.contains(kind) else {
    let wanted = kinds.map(\.rawValue).joined(separator: " or ")
    throw ConfigError("\(ck.path): a \(kind.rawValue) checkpoint, but vae-dist \(command) needs a \(wanted) (\(instead))")
  }
}

/// The run config a command needs to find the checkpoint's data.
func requireRunConfig(_ config: RunConfig?, _ path: String) throws -> RunConfig {
  guard let config else { throw ConfigError("\(path): metadata has no usable 'config'") }
  return config
}

struct Eval: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Held-out ELBO of a checkpoint (and, with --iw K, the importance-weighted bound).",
    discussion: """
      The test set is binarised once with a fixed seed, so numbers are comparable across runs. \
      On a cvae checkpoint: the conditional ELBO of log p(Y|X) (and --iw for it); on a regressor: \
      log p(Y|X) itself. X and Y are the held-out images' fixed bits. All in nats per image. \
      With a Gaussian likelihood (continuous data) the ELBO is a density and may be positive.
      Example: vae-dist eval --checkpoint runs/mnist/final.safetensors --iw 5000 --limit 1000
      """)
  @Option(name: .long, help: ArgumentHelp("A .safetensors checkpoint written by vae-dist train.", valueName: "path"))
  var checkpoint: String
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, parsing: .unconditional, help: "Samples of z per image for the ELBO (averaged).")
  var samples: Int = 1
  @Option(name: .long, parsing: .unconditional,
          help: "Also compute the importance-weighted bound with K samples per image (Burda et al. 2016).")
  var iw: Int?
  @Option(name: .long, parsing: .unconditional, help: "Evaluate only the first N test images.")
  var limit: Int?
  @Flag(name: .long, help: "Use z = μ (ε = 0) instead of sampling: a deterministic check, not a bound.")
  var meanZ = false
  @Flag(name: .long, help: "Also count the active latent units (Burda et al. 2016): dimensions whose posterior mean varies over the test images with variance > 0.01; and split the KL term between them (KL per active unit) and the inactive ones (what the model pays for units it does not use).")
  var activeUnits = false
  @Option(name: .long, parsing: .unconditional, help: "OpenBLAS threads.")
  var threads: Int?
  @Flag(name: .long, help: "Print one JSON object instead of text.")
  var json = false

  func validate() throws {
    try checkPositive(samples, "samples")
    try checkPositive(iw, "iw")
    try checkPositive(limit, "limit")
    try checkPositive(threads, "threads")
  }

  /// The active-unit count (Burda et al. 2016) and the KL split between active and inactive units.
  typealias ActiveUnits = (count: Int, klPerUnit: Double, klActive: Double, klInactive: Double)

  func run() throws {
    applyThreads(threads)
    FloatingPointEnvironment.enableFlushToZero()
    let (ck, testX, count) = try heldOutSet()
    let est = Estimator(config: ck.model, params: ck.params)
    let start = Date()
    let noise: EvalNoise = meanZ ? .zero : .sampled(CounterRNG(seed: heldOutBinarizationSeed))
    let t = testX.withUnsafeBufferPointer {
      est.elbo(x: $0.baseAddress!, count: count, firstIndex: 0, samples: meanZ ? 1 : samples, noise: noise)
    }
    // Standardised data: log p(x) = log p(x') − Σ log std, in the data's own units.
    let jacobian = ck.standardization?.logJacobian ?? 0
    let recon = -t.recon / Double(count) + jacobian, kl = t.kl / Double(count)
    var fields: JSONObject = [
      "checkpoint": .string(checkpoint), "kind": .string(ck.model.kind.rawValue), "step": .int(ck.state.step),
      "images": .int(count), "elbo": .number(-(recon + kl)), "recon": .number(recon), "kl": .number(kl),
      "samples": .int(meanZ ? 0 : samples),
    ]
    let iwBound = iw.map { importanceWeightedBound(est, testX, count: count, samples: $0) - jacobian }
    if let iw, let iwBound { fields.append(contentsOf: ["iw_k": .int(iw), "iw_bound": .number(iwBound)]) }
    let active = activeUnits ? try activeUnitSplit(ck, est, testX, count: count) : nil
    if let a = active {
      fields.append(contentsOf: [
        "active_units": .int(a.count), "kl_per_active_unit": .number(a.klPerUnit),
        "kl_active_units": .number(a.klActive), "kl_inactive_units": .number(a.klInactive),
      ])
    }
    fields.append("seconds", .number((Date().timeIntervalSince(start) * 1000).rounded() / 1000))
    if json {
      Console.out(fields.line)
    } else {
      printText(ck, count: count, recon: recon, kl: kl, iwBound: iwBound, active: active)
    }
  }

  /// The checkpoint and its held-out images (binarised with the fixed seed), at most `--limit`.
  func heldOutSet() throws -> (LoadedCheckpoint, [Float], Int) {
    let (ck, runConfig) = try loadCheckpoint(checkpoint)
    let rc = try requireRunConfig(runConfig, checkpoint)
    let data = try dataOptions.load(rc)
    guard data.test.pixelsPerImage == ck.model.inputSize else {
      throw ConfigError("\(checkpoint): the model expects \(ck.model.inputSize) pixels but \(rc.dataset) has \(data.test.pixelsPerImage)")
    }
    if iw != nil && ck.model.kind == .regressor {
      throw ConfigError("--iw: \(checkpoint) is a regressor: its log p(Y|X) is exact, there is no bound to tighten")
    }
    let count = min(limit ?? data.test.count, data.test.count)
    let testX = Batcher.heldOut(
      data.test, binarization: rc.binarize, conditioning: rc.conditioning, limit: count, standardization: ck.standardization)
    return (ck, testX, count)
  }

  /// The importance-weighted bound with `samples` samples per image, averaged over the images.
  func importanceWeightedBound(_ est: Estimator, _ testX: [Float], count: Int, samples: Int) -> Double {
    var out = [Double](repeating: 0, count: count)
    testX.withUnsafeBufferPointer { x in
      out.withUnsafeMutableBufferPointer { o in
        est.importanceWeighted(x: x.baseAddress!, count: count, firstIndex: 0, samples: samples,
                               rng: CounterRNG(seed: heldOutBinarizationSeed), out: o.baseAddress!)
      }
    }
    return out.reduce(0, +) / Double(count)
  }

  /// Units whose posterior mean varies over the images with variance > 0.01, and the KL term
  /// split between them and the others.
  func activeUnitSplit(_ ck: LoadedCheckpoint, _ est: Estimator, _ testX: [Float], count: Int) throws -> ActiveUnits {
    guard ck.model.kind != .regressor else {
      throw ConfigError("--active-units: \(checkpoint) is a regressor: it has no latent units")
    }
    let s = testX.withUnsafeBufferPointer { est.latentStatistics(x: $0.baseAddress!, count: count) }
    let isActive = s.meanVariance.map { $0 > 0.01 }
    let n = isActive.filter { $0 }.count
    let klActive = zip(s.kl, isActive).filter(\.1).map(\.0).reduce(0, +)
    let klInactive = zip(s.kl, isActive).filter { !$0.1 }.map(\.0).reduce(0, +)
    return (n, n > 0 ? klActive / Double(n) : 0, klActive, klInactive)
  }

  func printText(
    _ ck: LoadedCheckpoint, count: Int, recon: Double, kl: Double, iwBound: Double?, active: ActiveUnits?
  ) {
    let what =
      switch ck.model.kind {
      case .vae: "ELBO"
      case .cvae: "conditional ELBO of log p(Y|X)"
      case .regressor: "log p(Y|X)"
      }
    let density = ck.model.likelihood.isDensity ? " (a density: continuous data, may be positive)" : ""
    Console.out(String(format: "%@ (step %d), %d test images: %@ %.4f nats/image (reconstruction %.4f, KL %.4f)%@%@",
                       checkpoint, ck.state.step, count, what, -(recon + kl), recon, kl, meanZ ? " with z = μ" : "",
                       density))
    if let b = iwBound, let k = iw {
      Console.out(String(format: "importance-weighted bound, K = %d: %.4f nats/image", k, b))
    }
    if let a = active {
      Console.out(String(format: "active units: %d of %d (KL %.3f nats per active unit; %.3f nats in all %d inactive units)",
                         a.count, ck.model.zdim, a.klPerUnit, a.klInactive, ck.model.zdim - a.count))
    }
  }
}

/// What `sample` and `reconstruct` share: the checkpoint they read and the PNG they write.
struct PictureOptions: ParsableArguments {
  @Option(name: .long, help: ArgumentHelp("A .safetensors checkpoint.", valueName: "path"))
  var checkpoint: String
  @Option(name: .long, help: ArgumentHelp("Output PNG file.", valueName: "file.png"))
  var out: String
  @Option(name: .long, parsing: .unconditional, help: "Pixel scale of the PNG (1…16), so digits are visible.")
  var scale: Int = 1

  func validate() throws {
    guard (1...16).contains(scale) else { throw ValidationError("--scale: expected 1…16, got \(scale)") }
  }
}

struct Sample: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Decode z ~ N(0, I) into a PNG grid of generated images.",
    discussion: """
      Pixels are the decoder's means (Bernoulli probabilities). With --manifold and a 2-D latent \
      space, draws the tutorial-style grid of decoded points at evenly spaced quantiles of N(0, I).
      Example: vae-dist sample --checkpoint runs/mnist/final.safetensors --n 64 --out samples.png
      """)
  @OptionGroup var picture: PictureOptions
  @Option(name: .long, parsing: .unconditional, help: "Number of samples (1…10000).")
  var n: Int = 64
  @Option(name: .long, parsing: .unconditional, help: "Seed for z.")
  var seed: Int = 0
  @Flag(name: .long, help: "For zdim = 2: decode a --grid × --grid lattice of the latent space.")
  var manifold = false
  @Option(name: .long, parsing: .unconditional, help: "Lattice side for --manifold (2…100).")
  var grid: Int = 20

  func validate() throws {
    guard (1...10_000).contains(n) else { throw ValidationError("--n: expected 1…10000, got \(n)") }
    guard (2...100).contains(grid) else { throw ValidationError("--grid: expected 2…100, got \(grid)") }
    guard seed >= 0 else { throw ValidationError("--seed: expected a non-negative integer, got \(seed)") }
  }

  func run() throws {
    let checkpoint = picture.checkpoint
    let (ck, _) = try loadCheckpoint(checkpoint)
    try requireKind(ck, [.vae], command: "sample", instead: "vae-dist complete draws a conditional model's completions")
    let d = ck.model.zdim
    if manifold && d != 2 {
      throw ConfigError("--manifold: needs a model with zdim = 2, but \(checkpoint) has zdim = \(d)")
    }
    let count = manifold ? grid * grid : n
    let model = VAEModel(config: ck.model, maxBatch: count, params: ck.params)
    let z = Buffer(count * d)
    if manifold {
      ModelImages.manifoldLattice(side: grid, into: z.ptr)
    } else {
      ModelImages.latentSamples(count: count, dim: d, seed: UInt64(seed), into: z.ptr)
    }
    model.decode(UnsafePointer(z.ptr), batch: count)
    let columns = manifold ? grid : Int(Double(count).squareRoot().rounded(.up))
    // The checkpoint's config names its data files, whose shape the pictures take.
    let shape = (try? ConfigLoader.parse(ck.configYAML, file: checkpoint, defaultName: "run")).map(ModelImages.pictureShape)
    try ModelImages.writeGrid(
      ModelImages.decoded(model, rows: count, standardization: ck.standardization),
      shape: shape ?? ModelImages.squareOrRow(ck.model.inputSize), columns: columns, scale: picture.scale,
      to: picture.out)
    Console.out("wrote \(count) \(manifold ? "latent-grid images" : "samples") to \(picture.out)")
  }
}

struct Reconstruct: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Encode test images and decode them again: a PNG with originals and reconstructions.",
    discussion: """
      Rows alternate: test images as the model sees them (binarised with the fixed held-out seed \
      when the run binarised), then their reconstructions from z = μ(x).
      Example: vae-dist reconstruct --checkpoint runs/mnist/final.safetensors --out recon.png
      """)
  @OptionGroup var picture: PictureOptions
  @OptionGroup var dataOptions: DataOptions
  @Option(name: .long, parsing: .unconditional, help: "Number of test images (from the start of the test set, 1…10000).")
  var n: Int = 32

  func validate() throws {
    guard (1...10_000).contains(n) else { throw ValidationError("--n: expected 1…10000, got \(n)") }
  }

  func run() throws {
    let checkpoint = picture.checkpoint
    let (ck, runConfig) = try loadCheckpoint(checkpoint)
    try requireKind(ck, [.vae], command: "reconstruct", instead: "vae-dist complete shows a conditional model's completions")
    let rc = try requireRunConfig(runConfig, checkpoint)
    let data = try dataOptions.load(rc)
    let count = min(n, data.test.count)
    let dim = ck.model.inputSize
    let st = ck.standardization
    let x = Batcher.heldOut(data.test, binarization: rc.binarize, limit: count, standardization: st)
    let model = VAEModel(config: ck.model, maxBatch: count, params: ck.params)
    x.withUnsafeBufferPointer { model.encode($0.baseAddress!, batch: count) }
    model.decode(UnsafePointer(model.mu.ptr), batch: count)
    let originals = (0..<count).map { i in
      let row = Array(x[(i * dim)..<((i + 1) * dim)])
      return st.map { $0.undo(row).map { min(max($0, 0), 1) } } ?? row
    }
    let columns = min(count, 8)
    let tiles = ModelImages.pairedRows(
      originals: originals, reconstructions: ModelImages.decoded(model, rows: count, standardization: st), columns: columns)
    try ModelImages.writeGrid(tiles, shape: ModelImages.pictureShape(rc), columns: columns, scale: picture.scale, to: picture.out)
    Console.out("wrote \(count) originals and reconstructions to \(picture.out)")
  }
}

struct Info: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Show a checkpoint's config, training state and tensors.",
    discussion: "Example: vae-dist info runs/mnist/final.safetensors")
  @Argument(help: ArgumentHelp("A .safetensors checkpoint.", valueName: "checkpoint"))
  var path: String

  func run() throws {
    let (ck, _) = try loadCheckpoint(path)
    let s = ck.state
    Console.out("\(path)")
    Console.out("kind \(ck.model.kind.rawValue)")
    Console.out("format \(Checkpoint.format), step \(s.step), epoch \(s.epoch), seed \(s.seed), world size \(s.worldSize) (\(s.shards) shards), global batch \(s.globalBatch), Adam step \(s.adamStep)")
    Console.out("model \(RunConfig.modelJSON(ck.model))")
    Console.out("parameters \(ck.params.count)")
    Console.out("layers:")
    for line in ck.model.summary.split(separator: "\n") { Console.out("  " + line) }
    Console.out("tensors:")
    for t in ck.file.tensors {
      Console.out("  \(t.name) \(t.dtype) [\(t.shape.map(String.init).joined(separator: ", "))] \(t.bytes.count) bytes")
    }
    if !ck.configYAML.isEmpty {
      Console.out("config:")
      for line in ck.configYAML.split(separator: "\n") { Console.out("  " + line) }
    }
  }
}

struct Export: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Write a checkpoint's model tensors only (no Adam moments), for PyTorch's load_state_dict(strict=True).",
    discussion: """
      The output is a safetensors file whose metadata keeps the model's shape (`model`, `kind`), \
      so python/vae_dist.torch.load can build the module; `vae-dist train --init` reads it too.
      Example: vae-dist export --checkpoint runs/mnist/final.safetensors --torch mnist-weights.safetensors
      """)
  @Option(name: .long, help: ArgumentHelp("A checkpoint written by vae-dist train.", valueName: "path"))
  var checkpoint: String
  @Option(name: .customLong("torch"), help: ArgumentHelp("Output safetensors file (model tensors only).", valueName: "file"))
  var out: String

  func run() throws {
    let (ck, _) = try loadCheckpoint(checkpoint)
    let layout = ck.params.layout
    let tensors = layout.specs.map { SafeTensor(name: $0.name, shape: $0.shape, floats: ck.params.values(named: $0.name)!) }
    let meta = ["format": "vae-dist/weights", "model": RunConfig.modelJSON(ck.model), "kind": ck.model.kind.rawValue]
    try FileIO.writeAtomically(SafeTensors.encode(tensors: tensors, metadata: meta), to: out)
    Console.out("wrote \(tensors.count) model tensors (\(ck.params.count) parameters) to \(out)")
  }
}
