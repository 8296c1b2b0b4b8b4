import Foundation
import VAE

/// The config's cross-key rules, which `ConfigSchema.decode` applies after each key's own rule:
/// layer-list entries named by position, data files against named sets, standardisation, and
/// the objective's keys (again after the train flags). Each breach is one `ConfigConflict` line.
extension ConfigSchema {
  /// Each entry of `model.encoder` and `model.decoder` parses, or the error names the entry.
  static func checkLayerLists(_ model: [String: Any]) throws {
    for key in ["encoder", "decoder"] {
      guard let list = model[key] as? [Any] else { continue }
      for (i, e) in list.enumerated() {
        guard let s = e as? String else {
          throw ConfigConflict("model.\(key)[\(i)]: \(e) is not a layer; \(ConfigRule.layerListExpected)")
        }
        do throws(LayerDeclError) { _ = try LayerDecl(parsing: s) } catch {
          throw ConfigConflict("model.\(key)[\(i)]: \(error.description)")
        }
      }
    }
  }

  /// The objective's keys go together (after the file, and again after the flags).
  public static func checkObjective(_ c: RunConfig) throws {
    if let problem = c.objective.problem { throw ConfigConflict(problem) }
    if c.objective.kind == .iwae && c.model.kind != .vae { throw ConfigConflict("train.objective iwae: needs model.kind vae") }
  }

  /// A named data set or files, not both; a held-out file or a fraction, not both; files only
  /// for the VAE (the conditional kinds split square images).
  static func checkDataKeys(_ data: [String: Any], _ c: RunConfig) throws {
    func given(_ k: String) -> Bool { data[k].map(isPresent) == true }
    if c.trainFile == nil {
      if given("test") || given("test_fraction") { throw ConfigConflict("data.test and data.test_fraction need data.train") }
      return
    }
    if given("dataset") { throw ConfigConflict("data.dataset and data.train both given; set one of them") }
    if given("test") && given("test_fraction") { throw ConfigConflict("data.test and data.test_fraction both given; set one of them") }
    if !given("test") && !given("test_fraction") {
      throw ConfigConflict("data.train needs held-out data: give data.test (a file) or data.test_fraction (e.g. 0.1)")
    }
    if (c.testFraction ?? 0.5) <= 0 { throw ConfigConflict("data.test_fraction: expected a fraction in (0, 1)") }
    if c.model.kind != .vae { throw ConfigConflict("data.train: model.kind \(c.model.kind.rawValue) reads the named data sets only") }
  }

  /// Standardised values are not probabilities: a Gaussian likelihood, no binarisation, a VAE.
  static func checkStandardize(_ c: RunConfig) throws {
    guard c.standardize else { return }
    if c.model.likelihood == .bernoulli {
      throw ConfigConflict("data.standardize: standardised values are not in [0, 1]; use model.likelihood gaussian")
    }
    if c.binarize != .none { throw ConfigConflict("data.standardize: needs data.binarize none (got \(c.binarize.rawValue))") }
    if c.model.kind != .vae { throw ConfigConflict("data.standardize: needs model.kind vae") }
  }

  /// Two keys that exclude each other were both given.
  public struct ConfigConflict: Error, Sendable, CustomStringConvertible {
    public let description: String
    init(_ d: String) { description = d }
  }
}
