// `lowrank wave simulate`: the 2-D acoustic wave data set of the a-priori CP convolution study
// (lowrank/data/wave2d.h), written as one safetensors file.
//   lowrank wave simulate --out D.safetensors [--samples 200] [--grid 64] [--ahead 4]
//                         [--boundary absorbing|periodic] [--cfl 0.5] [--per-simulation 4] [--seed 0]
// The file holds `inputs` [N, 3, n, n] (u^{t−1}, u^t, c) and `targets` [N, 1, n, n] (u^{t+ahead}),
// float32, with the options in its metadata. Parsing only: the work is the library's.
#include <iostream>
#include <memory>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/wave2d.h"

namespace lowrank::cli {

namespace {

struct SimulateFlags {
  std::string out, boundary = "absorbing";
  int64_t samples = 200, grid = 64, ahead = 4, per_simulation = 4;
  double cfl = 0.5;
  uint64_t seed = 0;
};

void run_simulate(const SimulateFlags& flags, const GlobalOptions& global) {
  LR_CHECK(std::filesystem::path(flags.out).extension() == ".safetensors", InvalidArgument, "--out ",
           flags.out, ": the data set is written as .safetensors");
  data::WaveOptions options;
  options.n = flags.grid;
  options.cfl = flags.cfl;
  options.boundary = flags.boundary;
  options.check();  // CFL, boundary, grid: before any work
  const data::WaveDataset d =
      data::simulate_wave_dataset(options, flags.samples, flags.ahead, flags.seed, flags.per_simulation);
  const std::vector<NamedTensor> tensors = {{"inputs", d.inputs}, {"targets", d.targets}};
  save_safetensors(flags.out, tensors,
                   {{"grid", std::to_string(flags.grid)},
                    {"ahead", std::to_string(flags.ahead)},
                    {"boundary", flags.boundary},
                    {"cfl", std::to_string(flags.cfl)},
                    {"seed", std::to_string(flags.seed)},
                    {"per_simulation", std::to_string(flags.per_simulation)}});
  if (global.json) {
    OrderedJson report;
    report["out"] = flags.out;
    report["samples"] = d.inputs.size(0);
    report["grid"] = flags.grid;
    report["ahead"] = flags.ahead;
    report["boundary"] = flags.boundary;
    std::cout << report.dump(2) << "\n";
  } else if (!global.quiet) {
    std::cout << "simulated " << d.inputs.size(0) << " samples on a " << flags.grid << "x" << flags.grid
              << " grid (" << flags.boundary << ", " << flags.ahead << " steps ahead) -> " << flags.out
              << "\n";
  }
}

}  // namespace

VerbRunner add_wave(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("wave", "2-D wave-equation data for the CP convolution study (docs/compression.md)");
  cmd->require_subcommand(1);
  auto flags = std::make_shared<SimulateFlags>();
  auto* simulate =
      cmd->add_subcommand("simulate", "Simulate a supervised data set (u^{t-1}, u^t, c) -> u^{t+ahead}");
  simulate->add_option("--out", flags->out, "Data set to write (.safetensors)")->required();
  simulate->add_option("--samples", flags->samples, "Number of samples")->capture_default_str();
  simulate->add_option("--grid", flags->grid, "Grid size n (n x n)")->capture_default_str();
  simulate->add_option("--ahead", flags->ahead, "Leapfrog steps between input and target")
      ->capture_default_str();
  simulate->add_option("--boundary", flags->boundary, "absorbing | periodic")->capture_default_str();
  simulate->add_option("--cfl", flags->cfl, "c_max dt / h, at most 1/sqrt(2)")->capture_default_str();
  simulate->add_option("--per-simulation", flags->per_simulation, "Samples taken from each simulation")
      ->capture_default_str();
  simulate->add_option("--seed", flags->seed, "Seed of the media, sources and times")->capture_default_str();
  return [flags, &global] { run_simulate(*flags, global); };
}

}  // namespace lowrank::cli
