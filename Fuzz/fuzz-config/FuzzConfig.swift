// Fuzz target: the config loader (`ConfigLoader.parse`, YAML → `RunConfig` through the schema).
// Built for libFuzzer by scripts/fuzz (-DFUZZING); a plain build makes the corpus replayer at
// the bottom instead.

import FuzzSupport
import VAEDist

private let fileName = "fuzz.yaml"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt { FuzzCheck.run(data, size, fuzzOne) }

/// A config parses to a one-line error naming the file, or to a `RunConfig` whose written forms
/// read back: `config.yaml` (run directories, checkpoints, resume's comparisons) parses to a
/// config with the same YAML and the same parameter layout, and the checkpoint's model JSON
/// parses to the same model.
func fuzzOne(_ bytes: [UInt8]) {
  // ConfigLoader.load rejects non-UTF-8 files before parsing.
  guard let text = String(validating: bytes, as: UTF8.self) else { return }
  guard let config = FuzzCheck.parsed(naming: fileName, { try ConfigLoader.parse(text, file: fileName, defaultName: "fuzz") })
  else { return }
  let yaml = config.yaml
  let again: RunConfig
  do {
    again = try ConfigLoader.parse(yaml, file: "written.yaml", defaultName: "other")
  } catch {
    preconditionFailure("the config.yaml of a parsed config does not parse: \(error)\n\(yaml)")
  }
  precondition(again.yaml == yaml, "config.yaml read back is written differently:\n\(yaml)---\n\(again.yaml)")
  precondition(again.model.layout == config.model.layout, "config.yaml read back has another parameter layout:\n\(yaml)")
  let json = config.modelJSON
  do {
    let model = try Checkpoint.parseModelJSON(json, file: "model.json")
    precondition(RunConfig.modelJSON(model) == json, "model JSON read back is written differently: \(json)")
    precondition(model.layout == config.model.layout, "model JSON read back has another parameter layout: \(json)")
  } catch {
    preconditionFailure("the model JSON of a parsed config does not parse: \(error): \(json)")
  }
}

#if !FUZZING
@main
struct Replay {
  static func main() { CorpusReplay.main("fuzz-config", fuzzOne) }
}
#endif
