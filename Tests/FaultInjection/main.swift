// A test program, run by MPITests under mpirun: trains the smoke model on the synthetic data
// with a `FaultInjectingCommunicator`, so a replica check failure can be seen end to end.
// usage: vae-dist-fault-injection OUT_DIR FAULTY_RANK FAULTY_STEP STEPS CHECK_EVERY sharded|replicas [nan]
// The faulty rank sees one gradient value changed by +1 (or made NaN) at step FAULTY_STEP;
// checkpoints every 10 steps.
import Foundation
import VAE
import VAEData
import VAEDist

let args = CommandLine.arguments
guard args.count == 7 || (args.count == 8 && args[7] == "nan"), let rank = Int(args[2]), let faultStep = Int(args[3]), let steps = Int(args[4]),
  let checkEvery = Int(args[5]), ["sharded", "replicas"].contains(args[6])
else {
  Console.error("usage: \(args[0]) OUT_DIR FAULTY_RANK FAULTY_STEP STEPS CHECK_EVERY sharded|replicas [nan]")
  exit(2)
}
BLASInfo.setThreads(1)
var prefix = ""
do {
  let comm = FaultInjectingCommunicator(
    wrapping: try MPICommunicator(), rank: rank, exchange: faultStep, nan: args.count == 8)
  prefix = "rank \(comm.rank): "
  let config = RunConfig(
    name: "fault", model: ModelConfig(inputSize: 784, hidden: [64], zdim: 4), dataset: "synthetic",
    trainLimit: 2000, batch: 100, epochs: nil, steps: steps, seed: 3, checkpointEvery: 10, evalEvery: 0,
    logEvery: 10, checkEvery: checkEvery)
  let data = try DatasetRegistry.load(name: "synthetic", dataDirectory: ".", trainLimit: 2000)
  let trainer = try Trainer(
    config: config, data: data, comm: comm, runDirectory: args[1], output: OutputOptions(quiet: true),
    parallel: ParallelOptions(shardOptimizer: args[6] == "sharded"))
  _ = try trainer.run()
  comm.finalize()
} catch TrainError.peerFailed {
  sleep(30)  // the rank that found the problem prints it and ends the job
  exit(1)
} catch {
  Console.error("error: \(prefix)\(error)")
  exit(1)
}
