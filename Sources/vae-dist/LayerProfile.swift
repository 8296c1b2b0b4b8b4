import Foundation
import VAE
import VAEDist

/// `bench --profile`'s per-layer table: each layer of the encoder and decoder towers run alone,
/// forward and backward, on the step's micro-batch size, outside the step (which has no timers).
/// Times are medians of 5 blocks; GFLOP/s counts 2 FLOPs per multiply-add (3 passes backward).
struct LayerProfile {
  struct Row {
    let name: String, op: String
    let forwardMs: Double, backwardMs: Double, gflops: Double
  }

  static func measure(_ model: VAEModel, calls: Int) -> [Row] {
    let towers = model.config.layers
    return zip(towers.encoder, model.encoder.layers).map { measure($0, $1, model, rows: model.maxBatch, calls: calls) }
      + zip(towers.decoder, model.decoder.layers).map { measure($0, $1, model, rows: model.decoder.maxBatch, calls: calls) }
  }

  static func measure(_ spec: LayerSpec, _ layer: any Layer, _ model: VAEModel, rows: Int, calls: Int) -> Row {
    let x = Buffer(rows * layer.inputCount), y = Buffer(rows * layer.outputCount)
    let dy = Buffer(rows * layer.outputCount), dx = Buffer(rows * layer.inputCount)
    x.set((0..<(rows * layer.inputCount)).map { Float($0 % 7) * 0.1 })
    func median(_ body: () -> Void) -> Double {
      var times: [Double] = []
      for _ in 0..<5 {
        let t0 = MonotonicClock.now()
        for _ in 0..<calls { body() }
        times.append((MonotonicClock.now() - t0) / Double(calls))
      }
      return times.sorted()[2]
    }
    let fwd = median { layer.forward(x.ptr, y.ptr, batch: rows, params: model.params, addend: nil) }
    let bwd = median {
      dy.set(Array(repeating: 0.01, count: rows * layer.outputCount))
      layer.backward(x.ptr, dy.ptr, dx.ptr, batch: rows, params: model.params, grads: model.grads, accumulateDx: false)
    }
    let flops = 2.0 * Double(spec.forwardMACs) * Double(rows) * 3
    let op = LayerDecl(op: spec.op, activation: spec.activation).description
    return Row(name: spec.name, op: op, forwardMs: 1000 * fwd, backwardMs: 1000 * bwd, gflops: flops / (fwd + bwd) / 1e9)
  }
}
