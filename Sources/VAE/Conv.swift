import CSupport

/// The geometry both convolution kinds share: a square kernel over an image, NCHW, or NHWC
/// (`channelsLast`) where the image is the model's own input or output row, as image files
/// hold them (for one channel the two are the same).
public struct ConvGeometry: Sendable, Hashable {
  public let channels: Int, height: Int, width: Int
  public let kernel: Int, stride: Int, padding: Int
  public var channelsLast = false

  public init(channels: Int, height: Int, width: Int, kernel: Int, stride: Int, padding: Int, channelsLast: Bool = false) {
    self.channels = channels
    self.height = height
    self.width = width
    self.kernel = kernel
    self.stride = stride
    self.padding = padding
    self.channelsLast = channelsLast
  }
  /// The convolution's output size over this image.
  public var outHeight: Int { (height + 2 * padding - kernel) / stride + 1 }
  public var outWidth: Int { (width + 2 * padding - kernel) / stride + 1 }
  /// Floats of one image's column matrix: a row of channels·k² taps per output position.
  public var columnsPerImage: Int { outHeight * outWidth * channels * kernel * kernel }

  func im2col(_ x: UnsafePointer<Float>, _ col: UnsafeMutablePointer<Float>, batch: Int) {
    vae_im2col(x, col, batch, channels, height, width, kernel, stride, padding, outHeight, outWidth, channelsLast ? 1 : 0)
  }
  func col2im(_ col: UnsafePointer<Float>, _ x: UnsafeMutablePointer<Float>, batch: Int) {
    vae_col2im(col, x, batch, channels, height, width, kernel, stride, padding, outHeight, outWidth, channelsLast ? 1 : 0)
  }
}

/// `nn.Conv2d` (weight `[out, in, k, k]`, bias `[out]`) over a whole micro-batch at once:
/// im2col into one [batch·Ho·Wo, in·k²] matrix, one GEMM against the weight, a transpose back
/// to NCHW with the bias. Backward: one GEMM for the weight gradient, one for the columns'
/// gradient, col2im for the input's. Scratch is sized once for `maxBatch`.
public final class Conv2d: Layer, @unchecked Sendable {
  public let weight: Range<Int>, bias: Range<Int>
  public let input: ConvGeometry
  public let outChannels: Int
  let col: Buffer, rows: Buffer

  public init(weight: Range<Int>, bias: Range<Int>, input: ConvGeometry, outChannels: Int, maxBatch: Int) {
    let taps = input.channels * input.kernel * input.kernel
    precondition(weight.count == outChannels * taps && bias.count == outChannels)
    self.weight = weight
    self.bias = bias
    self.input = input
    self.outChannels = outChannels
    col = Buffer(maxBatch * input.columnsPerImage)
    rows = Buffer(maxBatch * input.outHeight * input.outWidth * outChannels)
  }

  public var arenaRange: Range<Int> { weight.lowerBound..<bias.upperBound }
  public var inputCount: Int { input.channels * input.height * input.width }
  public var outputCount: Int { outChannels * positions }
  var positions: Int { input.outHeight * input.outWidth }
  var taps: Int { input.channels * input.kernel * input.kernel }

  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, params: Arena,
    addend: UnsafePointer<Float>?
  ) {
    let p = params.base
    input.im2col(x, col.ptr, batch: batch)
    GEMM.forward(col.ptr, p + weight.lowerBound, rows.ptr, batch: batch * positions, inF: taps, outF: outChannels)
    vae_rows_to_nchw(rows.ptr, y, p + bias.lowerBound, batch, outChannels, positions)
    addInPlace(y, addend, count: batch * outputCount)
  }

  public func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    batch: Int, params: Arena, grads: Arena, accumulateDx: Bool
  ) {
    precondition(!accumulateDx, "Conv2d overwrites its input gradient")
    let g = grads.base, n = batch * positions
    vae_channel_sum(dy, g + bias.lowerBound, batch, outChannels, positions, 0)
    vae_nchw_to_rows(dy, rows.ptr, batch, outChannels, positions)
    // `col` still holds this batch's columns from forward.
    GEMM.weightGrad(rows.ptr, col.ptr, g + weight.lowerBound, batch: n, inF: taps, outF: outChannels)
    guard let dx else { return }
    GEMM.inputGrad(rows.ptr, params.base + weight.lowerBound, col.ptr, batch: n, inF: taps, outF: outChannels)
    input.col2im(col.ptr, dx, batch: batch)
  }
}

/// `nn.ConvTranspose2d` (weight `[in, out, k, k]`, bias `[out]`, `output_padding`): the
/// convolution's backward-data as its forward. Its output image is the `output` geometry, the
/// convolution over which gives back the input's size. Forward: the input to rows, one GEMM to
/// columns, col2im into the output, the bias; backward: im2col of dL/dy, one GEMM each for the
/// weight and the input gradient.
public final class ConvTranspose2d: Layer, @unchecked Sendable {
  public let weight: Range<Int>, bias: Range<Int>
  public let inChannels: Int
  /// The output image's geometry (channels = out channels).
  public let output: ConvGeometry
  let xRows: Buffer, col: Buffer

  public init(weight: Range<Int>, bias: Range<Int>, inChannels: Int, output: ConvGeometry, maxBatch: Int) {
    precondition(weight.count == inChannels * output.channels * output.kernel * output.kernel)
    precondition(bias.count == output.channels)
    self.weight = weight
    self.bias = bias
    self.inChannels = inChannels
    self.output = output
    xRows = Buffer(maxBatch * output.outHeight * output.outWidth * inChannels)
    col = Buffer(maxBatch * output.columnsPerImage)
  }

  public var arenaRange: Range<Int> { weight.lowerBound..<bias.upperBound }
  /// Input positions: the convolution over the output image gives back the input's size.
  var positions: Int { output.outHeight * output.outWidth }
  var planeOut: Int { output.height * output.width }
  var taps: Int { output.channels * output.kernel * output.kernel }
  public var inputCount: Int { inChannels * positions }
  public var outputCount: Int { output.channels * planeOut }

  public func forward(
    _ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>, batch: Int, params: Arena,
    addend: UnsafePointer<Float>?
  ) {
    let p = params.base
    vae_nchw_to_rows(x, xRows.ptr, batch, inChannels, positions)
    GEMM.inputGrad(xRows.ptr, p + weight.lowerBound, col.ptr, batch: batch * positions, inF: taps, outF: inChannels)
    output.col2im(col.ptr, y, batch: batch)
    vae_channel_bias(y, p + bias.lowerBound, batch, output.channels, planeOut, output.channelsLast ? 1 : 0)
    addInPlace(y, addend, count: batch * outputCount)
  }

  public func backward(
    _ x: UnsafePointer<Float>, _ dy: UnsafeMutablePointer<Float>, _ dx: UnsafeMutablePointer<Float>?,
    batch: Int, params: Arena, grads: Arena, accumulateDx: Bool
  ) {
    precondition(!accumulateDx, "ConvTranspose2d overwrites its input gradient")
    let g = grads.base, n = batch * positions
    vae_channel_sum(dy, g + bias.lowerBound, batch, output.channels, planeOut, output.channelsLast ? 1 : 0)
    output.im2col(dy, col.ptr, batch: batch)
    // `xRows` still holds this batch's input rows from forward.
    GEMM.weightGrad(xRows.ptr, col.ptr, g + weight.lowerBound, batch: n, inF: taps, outF: inChannels)
    guard let dx else { return }
    GEMM.forward(col.ptr, params.base + weight.lowerBound, xRows.ptr, batch: n, inF: taps, outF: inChannels)
    vae_rows_to_nchw(xRows.ptr, dx, nil, batch, inChannels, positions)
  }
}

/// y += addend over `count` values, when there is an addend (another tower's pre-activation).
func addInPlace(_ y: UnsafeMutablePointer<Float>, _ addend: UnsafePointer<Float>?, count: Int) {
  guard let addend else { return }
  for i in 0..<count { y[i] += addend[i] }
}
