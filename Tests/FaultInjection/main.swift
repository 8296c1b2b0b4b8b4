// A test program, run by MPITests under mpirun. Three modes:
//   vae-dist-fault-injection OUT_DIR FAULTY_RANK FAULTY_STEP STEPS CHECK_EVERY sharded|replicas [nan]
//     trains the smoke model on the synthetic data with a `FaultInjectingCommunicator`: the
//     faulty rank sees one gradient value changed by +1 (or made NaN) at step FAULTY_STEP, so a
//     replica check failure can be seen end to end; checkpoints every 10 steps.
//   vae-dist-fault-injection stop OUT_DIR STEP SIGNAL_OF_RANK_0 SIGNAL_OF_RANK_1 …
//     each rank's stop request returns its signal (0: none) from step STEP on; every rank prints
//     "rank R: stopped by signal S after step N" and exits 128 + S. VAE_DIST_TEST_PLAIN=1 turns
//     the sharded optimizer off.
//   vae-dist-fault-injection startup-record EXTRA_FIELDS_RANK
//     that rank's start-up record has one more field than the others' (another build).
import Foundation
import VAEDist
import VAE
import VAEData

func fail(_ line: String) -> Never {
  FileHandle.standardError.write(Data((line + "\n").utf8))
  exit(1)
}

let args = CommandLine.arguments
BLASInfo.setThreads(1)
FloatingPointEnvironment.enableFlushToZero()

func smokeConfig(steps: Int, checkEvery: Int) -> RunConfig {
  RunConfig(
    name: "fault", model: ModelConfig(inputSize: 784, hidden: [64], zdim: 4), dataset: "synthetic",
    trainLimit: 2000, batch: 100, epochs: nil, steps: steps, seed: 3, checkpointEvery: 10, evalEvery: 0,
    logEvery: 10, checkEvery: checkEvery)
}

func train(comm: Communicator, out: String, config: RunConfig, options: RunOptions) throws -> TrainSummary {
  let data = try DatasetRegistry.load(name: "synthetic", dataDirectory: ".", trainLimit: 2000)
  return try TrainingRun(config: config, data: data, comm: comm, runDirectory: out, options: options).run()
}

func corruptedRun() throws {
  guard args.count == 7 || (args.count == 8 && args[7] == "nan"), let rank = Int(args[2]), let faultStep = Int(args[3]),
    let steps = Int(args[4]), let checkEvery = Int(args[5]), ["sharded", "replicas"].contains(args[6])
  else { fail("usage: \(args[0]) OUT_DIR FAULTY_RANK FAULTY_STEP STEPS CHECK_EVERY sharded|replicas [nan]") }
  let comm = FaultInjectingCommunicator(
    wrapping: try MPICommunicator(), rank: rank, exchange: faultStep, nan: args.count == 8)
  prefix = "rank \(comm.rank): "
  _ = try train(
    comm: comm, out: args[1], config: smokeConfig(steps: steps, checkEvery: checkEvery),
    options: RunOptions(parallel: ParallelOptions(shardOptimizer: args[6] == "sharded"), tensorboard: false))
  comm.finalize()
}

func stopRun() throws {
  let comm = try MPICommunicator()
  prefix = "rank \(comm.rank): "
  guard args.count == 4 + comm.size, let at = Int(args[3]), let signal = Int32(args[4 + comm.rank]) else {
    fail("usage: \(args[0]) stop OUT_DIR STEP SIGNAL_OF_RANK_0 SIGNAL_OF_RANK_1 …")
  }
  var steps = 0
  let plain = ProcessInfo.processInfo.environment["VAE_DIST_TEST_PLAIN"] == "1"
  let options = RunOptions(parallel: ParallelOptions(shardOptimizer: !plain), tensorboard: false, stopRequest: {
    steps += 1
    return steps >= at ? signal : 0
  })
  let s = try train(comm: comm, out: args[2], config: smokeConfig(steps: 50, checkEvery: 0), options: options)
  print("rank \(comm.rank): stopped by signal \(s.stopSignal ?? 0) after step \(s.steps)")
  comm.finalize()
  exit(128 + (s.stopSignal ?? 0))
}

func startupRecordRun() throws {
  let comm = try MPICommunicator()
  prefix = "rank \(comm.rank): "
  guard args.count == 3, let extra = Int(args[2]) else { fail("usage: \(args[0]) startup-record EXTRA_FIELDS_RANK") }
  var fields = StartupRecord.fields(parallel: ParallelOptions(), start: StartOptions())
  if comm.rank == extra { fields.append(StartupField(setting: .binary, value: 7) { String($0) }) }
  try StartupRecord.agree(fields, comm: comm)
  comm.finalize()
}

nonisolated(unsafe) var prefix = ""
do {
  switch args.count > 1 ? args[1] : "" {
  case "stop": try stopRun()
  case "startup-record": try startupRecordRun()
  default: try corruptedRun()
  }
} catch TrainError.peerFailed {
  sleep(30)  // the rank that found the problem prints it and ends the job
  exit(1)
} catch {
  fail("error: \(prefix)\(error)")
}
