// swift-tools-version: 6.0
import PackageDescription

let package = Package(
  name: "vae-dist",
  platforms: [.macOS(.v13)],
  products: [
    .executable(name: "vae-dist", targets: ["vae-dist"]),
    .library(name: "Formats", targets: ["Formats"]),
    .library(name: "VAE", targets: ["VAE"]),
    .library(name: "VAEData", targets: ["VAEData"]),
    .library(name: "VAEDist", targets: ["VAEDist"]),
    .library(name: "TensorBoard", targets: ["TensorBoard"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/jpsim/Yams", from: "5.0.1"),
    // Only the runtime library: the generated code is committed (scripts/generate-protos).
    .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
  ],
  targets: [
    // OpenBLAS through pkg-config `openblas` (only it exports openblas_set_num_threads/get_corename).
    .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                   providers: [.apt(["libopenblas-dev"])]),
    // zlib: gzip IDX files, PNG compression, CRC-32 checksums (used only by Formats).
    .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                   providers: [.apt(["zlib1g-dev"])]),
    // Open MPI through pkg-config `ompi-c` (no unsafeFlags, so the package stays usable as a dependency).
    .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                   providers: [.apt(["libopenmpi-dev"])]),
    // Plain C functions over MPI: Open MPI's MPI_COMM_WORLD etc. are macros Swift cannot import.
    .target(name: "MPIShim", dependencies: ["CMPI"], path: "Sources/MPIShim"),
    // Small C helpers Swift cannot express portably: MXCSR flush-to-zero, CPU feature checks, stdio.
    .target(name: "CSupport", path: "Sources/CSupport"),
    // File formats with no tie to the model or MPI: safetensors, PNG, IDX + gzip, TFRecord,
    // CRC-32 and CRC-32C, whole-file reads and atomic writes.
    .target(name: "Formats", dependencies: ["CZlib"]),
    .target(name: "VAE", dependencies: ["CBLAS", "CSupport"]),
    // TensorBoard event files (TFRecord of tensorflow.Event protobufs). The .pb.swift files are
    // generated from the .proto beside them by scripts/generate-protos and committed; the build
    // never runs protoc.
    .target(
      name: "TensorBoard",
      dependencies: ["Formats", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
      exclude: ["Protos/tensorboard_event.proto"]),
    .target(name: "VAEData", dependencies: ["VAE", "Formats", "CSupport"]),
    .target(
      name: "VAEDist",
      dependencies: [
        "TensorBoard", "VAE", "VAEData", "Formats", "CSupport", "MPIShim", .product(name: "Yams", package: "Yams"),
      ]),
    .executableTarget(
      name: "vae-dist",
      dependencies: [
        "VAE", "VAEData", "VAEDist", "Formats", "CSupport", "MPIShim",
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ]),
    // A test program (MPITests runs it under mpirun): training with an injected fault.
    .executableTarget(
      name: "vae-dist-fault-injection", dependencies: ["VAEDist", "VAEData", "VAE"], path: "Tests/FaultInjection"),
    // Fuzz targets (scripts/fuzz builds them for libFuzzer with -DFUZZING); a plain build makes
    // each one a corpus replayer, which FuzzCorpusTests runs over Fuzz/corpus/<target>.
    .target(name: "FuzzSupport", path: "Fuzz/FuzzSupport"),
    .executableTarget(
      name: "fuzz-safetensors", dependencies: ["Formats", "VAE", "VAEDist", "FuzzSupport"], path: "Fuzz/fuzz-safetensors"),
    .executableTarget(name: "fuzz-idx", dependencies: ["Formats", "FuzzSupport"], path: "Fuzz/fuzz-idx"),
    .executableTarget(name: "fuzz-config", dependencies: ["VAEDist", "FuzzSupport"], path: "Fuzz/fuzz-config"),
    .executableTarget(name: "fuzz-npy", dependencies: ["Formats", "FuzzSupport"], path: "Fuzz/fuzz-npy"),
    // Shared by the test targets that run programs (binary locator, subprocess runner, paths).
    .target(name: "TestSupport", dependencies: ["CZlib"], path: "Tests/TestSupport"),
    .testTarget(name: "FormatsTests", dependencies: ["Formats", "CZlib", "TestSupport"]),
    .testTarget(name: "VAETests", dependencies: ["VAE", "TestSupport"]),
    // Runs the fuzz replayers, which any full build makes. Not dependencies: a test target's
    // executable dependencies are linked into its bundle, and each defines LLVMFuzzerTestOneInput.
    .testTarget(name: "FuzzCorpusTests", dependencies: ["TestSupport"]),
    .testTarget(name: "VAEDataTests", dependencies: ["VAEData", "VAE", "CSupport", "TestSupport"]),
    .testTarget(name: "VAEDistTests", dependencies: ["VAEDist", "VAEData", "VAE", "Formats", "TestSupport"]),
    .testTarget(
      name: "TensorBoardTests",
      dependencies: [
        "TensorBoard", "Formats", "TestSupport", .product(name: "SwiftProtobuf", package: "swift-protobuf"),
      ]),
    .testTarget(name: "CLITests", dependencies: ["vae-dist", "VAEDist", "VAE", "TestSupport"]),
    .testTarget(
      name: "MPITests",
      dependencies: ["vae-dist", "vae-dist-fault-injection", "VAEDist", "VAE", "Formats", "TestSupport"]),
  ]
)
