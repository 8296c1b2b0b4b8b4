import CBLAS
import CSupport

/// Facts about the BLAS in use, for logs, `config.yaml` and the fallback warning.
public enum BLASInfo {
  /// The kernel OpenBLAS chose at load time ("Haswell", "Prescott", "SkylakeX", "Zen", …).
  public static var coreName: String {
    guard let p = openblas_get_corename() else { return "unknown" }
    return String(cString: p).trimmingCharacters()
  }
  public static var threads: Int { Int(openblas_get_num_threads()) }
  public static func setThreads(_ n: Int) { openblas_set_num_threads(Int32(n)) }
  public static var config: String {
    guard let p = openblas_get_config() else { return "unknown" }
    return String(cString: p).trimmingCharacters()
  }
  public static var cpuHasAVX2FMA: Bool { vae_cpu_has_avx2_fma() != 0 }
  /// The fastest kernel this CPU can run (Cooperlake, SkylakeX or Haswell), if any.
  public static var bestKernelForCPU: String? {
    vae_cpu_best_openblas_core().map { String(cString: $0) }
  }
  /// The x86-64 kernels an OpenBLAS build may pick on a CI machine, each with whether this CPU
  /// can run it (`OPENBLAS_CORETYPE=<name>`) and, when not, the instruction sets it lacks.
  public static var x86Kernels: [(name: String, missing: [String])] {
    kernelRequirements(features: vae_cpu_features())
  }

  /// `x86Kernels` for a CPU with the `VAE_CPU_*` feature bits `features`.
  public static func kernelRequirements(features: Int32) -> [(name: String, missing: [String])] {
    let names = ["avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"]
    // VAE_CPU_* are the bits 1 << i, in the order of `names`.
    func missing(_ needed: Int) -> [String] {
      (0..<needed).filter { features & (Int32(1) << Int32($0)) == 0 }.map { names[$0] }
    }
    return [("Haswell", missing(2)), ("Zen", missing(2)), ("SkylakeX", missing(6)), ("Cooperlake", missing(7))]
  }

  /// True when OpenBLAS runs a kernel without AVX2/FMA on a CPU that has them.
  public static var isFallback: Bool { fallbackWarning() != nil }

  /// Kernels that use neither AVX2 nor FMA: what OpenBLAS falls back to on CPUs it does not know.
  public static let fallbackKernels: Set<String> = [
    "prescott", "core2", "penryn", "dunnington", "nehalem", "katmai", "coppermine", "northwood",
    "banias", "atom", "opteron", "barcelona", "bobcat", "generic", "sandybridge",
  ]

  /// A one-line warning when OpenBLAS runs a fallback kernel on a CPU that could run Haswell's.
  public static func fallbackWarning(
    coreName: String = coreName, hasAVX2FMA: Bool = cpuHasAVX2FMA,
    best: String? = bestKernelForCPU
  ) -> String? {
    guard hasAVX2FMA, fallbackKernels.contains(coreName.lowercased()) else { return nil }
    let fix = best.map { $0 == "Haswell" ? "OPENBLAS_CORETYPE=Haswell" : "OPENBLAS_CORETYPE=\($0) (or Haswell)" }
      ?? "OPENBLAS_CORETYPE=Haswell"
    return "OpenBLAS chose its \(coreName) fallback kernel on a CPU with AVX2 and FMA "
      + "(2-3× slower GEMMs); set \(fix)"
  }
}

/// Flush subnormals to zero on the calling thread (see CSupport).
public enum FloatingPointEnvironment {
  public static func enableFlushToZero() { vae_enable_flush_to_zero() }
  public static var flushToZeroEnabled: Bool { vae_flush_to_zero_enabled() != 0 }
}

extension String {
  fileprivate func trimmingCharacters() -> String {
    var s = Substring(self)
    while let c = s.first, c == " " || c == "\n" { s = s.dropFirst() }
    while let c = s.last, c == " " || c == "\n" { s = s.dropLast() }
    return String(s)
  }
}

/// Row-major GEMM wrappers in the shapes the layers need.
@usableFromInline enum GEMM {
  /// y[b, out] = x[b, in] · W[out, in]ᵀ  (+ beta · y)
  @inline(__always) @usableFromInline
  static func forward(
    _ x: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ y: UnsafeMutablePointer<Float>,
    batch: Int, inF: Int, outF: Int, beta: Float = 0
  ) {
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasTrans, Int32(batch), Int32(outF), Int32(inF), 1, x,
      Int32(inF), w, Int32(inF), beta, y, Int32(outF))
  }
  /// dW[out, in] = dy[b, out]ᵀ · x[b, in]  (+ beta · dW)
  @inline(__always) @usableFromInline
  static func weightGrad(
    _ dy: UnsafePointer<Float>, _ x: UnsafePointer<Float>, _ dw: UnsafeMutablePointer<Float>,
    batch: Int, inF: Int, outF: Int, beta: Float = 0
  ) {
    cblas_sgemm(
      CblasRowMajor, CblasTrans, CblasNoTrans, Int32(outF), Int32(inF), Int32(batch), 1, dy,
      Int32(outF), x, Int32(inF), beta, dw, Int32(inF))
  }
  /// dx[b, in] = dy[b, out] · W[out, in]  (+ beta · dx)
  @inline(__always) @usableFromInline
  static func inputGrad(
    _ dy: UnsafePointer<Float>, _ w: UnsafePointer<Float>, _ dx: UnsafeMutablePointer<Float>,
    batch: Int, inF: Int, outF: Int, beta: Float = 0
  ) {
    cblas_sgemm(
      CblasRowMajor, CblasNoTrans, CblasNoTrans, Int32(batch), Int32(inF), Int32(outF), 1, dy,
      Int32(outF), w, Int32(inF), beta, dx, Int32(inF))
  }
}
