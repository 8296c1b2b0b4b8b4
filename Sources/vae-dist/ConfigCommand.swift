import ArgumentParser
import Foundation
import VAEDist

struct ConfigCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "config",
    abstract: "Describe the keys of a run config (configs/*.yaml).",
    discussion: """
      --keys lists every key a config may set: its section and name, what it accepts, its \
      default and what it means. Keys a model kind does not use are ignored for it (e.g. sigma \
      for a Bernoulli model). The train flags --zdim, --epochs, … override the key of the same \
      name. --markdown prints the table that docs/reference.md and docs/ARCHITECTURE.md hold \
      (scripts/update-docs writes it there). --model FILE prints the network a config file \
      builds: each layer with its output shape and parameters (as Keras' summary() or \
      torchinfo), shapes inferred from the config and its data files, or the one-line error \
      that train would give.
      Examples: vae-dist config --keys; vae-dist config --model configs/mnist-conv.yaml
      """)

  @Flag(name: .long, help: "List every config key with what it accepts, its default and its meaning.")
  var keys = false
  @Flag(name: .long, help: "With --keys: as a Markdown table (the one in docs/reference.md and docs/ARCHITECTURE.md).")
  var markdown = false

  @Option(name: .long, help: ArgumentHelp("Print the layer table of this config file's model.", valueName: "file"))
  var model: String?

  func validate() throws {
    if !keys && model == nil { throw ValidationError("give --keys (the config keys) or --model FILE (a config's layer table)") }
    if keys && model != nil { throw ValidationError("--keys and --model: give one of them") }
  }

  func run() throws {
    if let model {
      let c = try ConfigLoader.load(path: model)
      Console.out(c.model.summary)
      return
    }
    Console.out(markdown ? Self.markdownTable() : Self.text())
  }

  /// One block per key: `path: accepts (default …)`, then the help indented.
  static func text() -> String {
    ConfigSchema.reference.map { e in
      "\(e.path): \(e.accepts) (default: \(e.defaultValue))\n    \(e.help)"
    }.joined(separator: "\n")
  }

  /// A Markdown table: key, accepts, default, meaning; `|` and `<` escaped inside cells.
  static func markdownTable() -> String {
    func cell(_ s: String) -> String {
      s.replacingOccurrences(of: "|", with: "\\|").replacingOccurrences(of: "<", with: "\\<")
    }
    let rows = ConfigSchema.reference.map { e in
      "| `\(e.path)` | \(cell(e.accepts)) | \(cell(e.defaultValue)) | \(cell(e.help)) |"
    }
    return (["| key | accepts | default | meaning |", "|---|---|---|---|"] + rows).joined(separator: "\n")
  }
}
