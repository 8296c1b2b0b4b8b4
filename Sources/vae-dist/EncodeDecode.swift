import ArgumentParser
import Formats
import Foundation
import VAE
import VAEData
import VAEDist

/// What `encode` and `decode` share: the checkpoint, BLAS threads and the rows per chunk.
struct LatentCodeOptions: ParsableArguments {
  @Option(name: .long, help: ArgumentHelp("A vae .safetensors checkpoint written by vae-dist train.", valueName: "path"))
  var checkpoint: String
  @Option(name: .long, parsing: .unconditional, help: "OpenBLAS threads (default: OpenBLAS's own choice, usually all cores).")
  var threads: Int?
  /// Rows read, run through the network and written at a time (tests use a small value to
  /// cross chunk boundaries).
  @Option(name: .long, parsing: .unconditional, help: .hidden)
  var chunkRows: Int = 1024

  func validate() throws {
    try checkPositive(threads, "threads")
    try checkPositive(chunkRows, "chunk-rows")
  }

  /// The checkpoint (a vae) and its run config, with threads and flush-to-zero set up.
  func load(command: String) throws -> (LoadedCheckpoint, RunConfig?) {
    applyThreads(threads)
    FloatingPointEnvironment.enableFlushToZero()
    let (ck, config) = try loadCheckpoint(checkpoint)
    try requireKind(ck, [.vae], command: command, instead: "only a vae has an encoder and decoder of x alone")
    return (ck, config)
  }
}

struct Encode: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Latent codes of data rows: the posterior means μ(x) (and log σ²(x)) of a vae checkpoint, as .npy files.",
    discussion: """
      Input (--input): a NumPy .npy array [N, ...] of uint8 (read as value / 255, as training \
      reads it) or float32, one example per row; a row (the product of the trailing dimensions) \
      must have the model's input_size values, e.g. [N, 28, 28] or [N, 784] for MNIST. The file \
      is mapped read-only and encoded 1024 rows at a time, so it may be larger than memory.
      Output (--out): float32 [N, zdim], row i the posterior mean μ(x_i) (z = μ is what \
      vae-dist reconstruct decodes); --logvar writes the log-variances log σ²(x_i) too, same \
      shape. Outputs appear only when complete: on an error nothing is left behind and an \
      existing file is kept.
      Example:
        vae-dist encode --checkpoint runs/mnist/final.safetensors \\
            --input test.npy --out z.npy --logvar logvar.npy
        python -c "import numpy as np; z = np.load('z.npy'); print(z.shape, z.dtype)"
        # (N, 20) float32 for a zdim 20 model
      """)
  @OptionGroup var options: LatentCodeOptions
  @Option(name: .long, help: ArgumentHelp("The data to encode: a .npy array [N, ...] of uint8 or float32.", valueName: "X.npy"))
  var input: String
  @Option(name: .long, help: ArgumentHelp("Where to write the posterior means, float32 [N, zdim].", valueName: "Z.npy"))
  var out: String
  @Option(name: .long, help: ArgumentHelp("Also write the posterior log-variances here, float32 [N, zdim].", valueName: "V.npy"))
  var logvar: String?

  func validate() throws {
    if let logvar, logvar == out { throw ValidationError("--logvar: \(logvar) is also --out: give two different files") }
  }

  func run() throws {
    let (ck, _) = try options.load(command: "encode")
    let x = try NPYRows(path: input, width: ck.model.inputSize, of: "\(options.checkpoint) has model.input_size")
    let d = ck.model.zdim, batch = min(options.chunkRows, x.rows)
    let means = try NPYWriter(path: out, dtype: .float32, shape: [x.rows, d])
    let logvars = try logvar.map { try NPYWriter(path: $0, dtype: .float32, shape: [x.rows, d]) }
    let model = VAEModel(config: ck.model, maxBatch: batch, params: ck.params)
    let rows = Buffer(batch * x.width)
    for first in stride(from: 0, to: x.rows, by: batch) {
      let n = min(batch, x.rows - first)
      try x.read(first: first, count: n, into: rows.ptr)
      // Standardised training data: the model reads rows as training standardised them.
      if let st = ck.standardization { for r in 0..<n { st.apply(rows.ptr + r * x.width) } }
      model.encode(rows.ptr, batch: n)
      try means.append(UnsafeBufferPointer(start: model.mu.ptr, count: n * d))
      try logvars?.append(UnsafeBufferPointer(start: model.logvar.ptr, count: n * d))
    }
    try x.file.checkUnchanged()
    try logvars?.finish()
    try means.finish()
    Console.out("wrote posterior means [\(x.rows), \(d)] to \(out)" + (logvar.map { " and log-variances to \($0)" } ?? ""))
  }
}

struct Decode: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Data from latent codes: the decoder's mean for each z of a vae checkpoint, as a .npy file.",
    discussion: """
      Input (--input): a float32 .npy array [N, zdim] of latent points, e.g. what vae-dist \
      encode wrote (np.save(path, z.astype(np.float32)) for your own); read 1024 rows at a time, \
      so it may be larger than memory.
      Output (--out): float32 [N, ...], row i the mean of p(x|z_i): Bernoulli probabilities \
      σ(logits) in [0, 1], or a Gaussian model's means. Each row has the shape of one training \
      example: the trailing shape of the training file (data.train) when it can still be read, \
      [28, 28] for mnist, fashion-mnist and synthetic, else [input_size]. The output appears \
      only when complete: on an error nothing is left behind and an existing file is kept.
      Example:
        vae-dist decode --checkpoint runs/mnist/final.safetensors --input z.npy \\
            --out x.npy
        python -c "import numpy as np; x = np.load('x.npy'); print(x.shape, x.max())"
        # (N, 28, 28) and a value ≤ 1 for an MNIST model
      """)
  @OptionGroup var options: LatentCodeOptions
  @Option(name: .long, help: ArgumentHelp("The latent codes to decode: a float32 .npy array [N, zdim].", valueName: "Z.npy"))
  var input: String
  @Option(name: .long, help: ArgumentHelp("Where to write the decoder means, float32 [N, ...] in the data's shape.", valueName: "X.npy"))
  var out: String

  func run() throws {
    let (ck, runConfig) = try options.load(command: "decode")
    let d = ck.model.zdim, width = ck.model.inputSize, outputWidth = ck.model.outputSize, likelihood = ck.model.likelihood
    let z = try NPYRows(path: input, width: d, of: "\(options.checkpoint) has model.zdim", float32Only: true)
    let batch = min(options.chunkRows, z.rows)
    let shape = [z.rows] + dataRowShape(ck.model, runConfig)
    let writer = try NPYWriter(path: out, dtype: .float32, shape: shape)
    let model = VAEModel(config: ck.model, maxBatch: batch, params: ck.params)
    let codes = Buffer(batch * d), means = Buffer(batch * width)
    for first in stride(from: 0, to: z.rows, by: batch) {
      let n = min(batch, z.rows - first)
      try z.read(first: first, count: n, into: codes.ptr)
      model.decode(codes.ptr, batch: n)
      // Means only (a learned variance's outputs follow them in each row), in the data's units.
      for r in 0..<n {
        for j in 0..<width { means.ptr[r * width + j] = likelihood.mean(model.logits[r * outputWidth + j]) }
        ck.standardization?.undo(means.ptr + r * width)
      }
      try writer.append(UnsafeBufferPointer(start: means.ptr, count: n * width))
    }
    try z.file.checkUnchanged()
    try writer.finish()
    Console.out("wrote decoder means [\(shape.map(String.init).joined(separator: ", "))] to \(out)")
  }
}

/// The shape of one example of the data `model` was trained on: the training file's trailing
/// shape when the run config names one that can still be read (and it fits), 28 × 28 for the
/// named image data sets, else `[input_size]`.
func dataRowShape(_ model: ModelConfig, _ config: RunConfig?) -> [Int] {
  let n = model.inputSize
  guard let config else { return [n] }
  if let train = config.trainFile {
    if let shape = try? DataFiles.rowShape(path: train), shape.reduce(1, *) == n { return shape }
    return [n]
  }
  return DatasetRegistry.names.contains(config.dataset) && n == 28 * 28 ? [28, 28] : [n]
}

/// The rows of a `.npy` file given to `encode` or `decode`, mapped read-only and read a chunk at
/// a time as model inputs the way training reads them (`Dataset.scaledRow`: uint8 as value / 255,
/// float32 as it is, which must be finite: `DataFiles.checkRow`).
struct NPYRows {
  let file: NPYFile
  let data: Dataset
  var path: String { file.path }
  var rows: Int { file.header.rows }
  var width: Int { file.header.rowWidth }

  /// Opens `path`, whose rows must have `width` values (`of`: whose width that is, "C has model.zdim").
  init(path: String, width: Int, of: String, float32Only: Bool = false) throws {
    file = try NPYFile(path: path)
    // Before a value is read: a file truncated meanwhile ends the command with one line.
    MappedFileGuard.register([file], reader: "vae-dist", rankPrefix: "")
    data = DataFiles.dataset(of: file)
    let h = file.header
    let shape = "(" + h.shape.map(String.init).joined(separator: ", ") + (h.shape.count == 1 ? ",)" : ")")
    if float32Only && h.dtype != .float32 {
      throw ConfigError("\(path): \(h.dtype) values, expected float32 latent codes (np.save(path, z.astype(np.float32)))")
    }
    guard h.rowWidth == width else {
      throw ConfigError("\(path): rows of \(h.rowWidth) values (shape \(shape)), but \(of) \(width)")
    }
  }

  /// Rows `first ..< first + count` as floats into `out` (`count × width` values).
  func read(first: Int, count: Int, into out: UnsafeMutablePointer<Float>) throws {
    for r in 0..<count {
      try DataFiles.checkRow(data, first + r, unitInterval: false)
      data.scaledRow(first + r, into: out + r * width)
    }
  }
}
