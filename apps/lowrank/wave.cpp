// `lowrank wave`: the a-priori CP convolution study (Boukraichi et al.; docs/compression.md).
//   lowrank wave simulate --out D.safetensors [--samples 200] [--grid 64] [--ahead 4]
//                         [--boundary absorbing|periodic] [--cfl 0.5] [--per-simulation 4] [--seed 0]
//     The file holds `inputs` [N, 3, n, n] (u^{t−1}, u^t, c) and `targets` [N, 1, n, n]
//     (u^{t+ahead}), float32, with the options in its metadata (lowrank/data/wave2d.h).
//   lowrank wave train --data D --out DIR [--test T] [--conv dense|cp:R | --init MODEL] [--width 16]
//                      [--levels 2] [--kernel-size 5] [--steps N | --epochs E] [--batch-size 16]
//                      [--lr 2e-3] ... [--resume]
//     The encoder–decoder of lowrank/nn/wave_cnn.h: OUT/run (metrics.jsonl, checkpoints/),
//     OUT/model, OUT/train.json (parameters, train and test errors).
//   lowrank wave eval --model DIR --data D
//   lowrank wave compress --model DENSE --rank R --out DIR   (post-hoc CP by CP-ALS)
// Parsing only: the work is the library's.
#include <iostream>
#include <memory>
#include <sstream>

#include "apps/lowrank/loop_flags.h"
#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/json.h"
#include "lowrank/core/progress.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/wave2d.h"
#include "lowrank/nn/wave_cnn.h"
#include "lowrank/train/wave.h"

namespace lowrank::cli {

namespace {

namespace fs = std::filesystem;

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
  OrderedJson report;
  report["out"] = flags.out;
  report["samples"] = d.inputs.size(0);
  report["grid"] = flags.grid;
  report["ahead"] = flags.ahead;
  report["boundary"] = flags.boundary;
  print_report(report, global,
               str("simulated ", d.inputs.size(0), " samples on a ", flags.grid, "x", flags.grid, " grid (",
                   flags.boundary, ", ", flags.ahead, " steps ahead) -> ", flags.out, "\n"));
}

struct TrainFlags {
  std::string data, test, out, conv = "dense", init;
  int64_t width = 16, levels = 2, kernel_size = 5, eval_every = 0;
  LoopFlags loop{.batch_size = 16, .lr = 2e-3, .min_lr = 1e-4};
};

OrderedJson model_summary(const nn::WaveCnn& model) {
  return OrderedJson{{"conv", model.config().conv},
                     {"rank", model.config().rank},
                     {"parameters", model.parameter_count()},
                     {"inner_conv_parameters", model.inner_parameter_count()}};
}

void run_train(const TrainFlags& flags, const GlobalOptions& global) {
  if (global.json) ProgressBar::set_enabled(false);
  const data::WaveDataset train_set = data::load_wave_dataset(flags.data);
  const data::WaveDataset test_set =
      flags.test.empty() ? data::WaveDataset{} : data::load_wave_dataset(flags.test);
  nn::WaveCnn model = [&] {
    if (!flags.init.empty()) return nn::WaveCnn::load(flags.init);
    nn::WaveCnnConfig c;
    c.width = flags.width;
    c.levels = flags.levels;
    c.kernel_size = flags.kernel_size;
    c.set_conv(flags.conv);
    const auto [in, out] = nn::wave_scales(train_set.inputs, train_set.targets);
    c.input_scale = in;
    c.output_scale = out;
    return nn::WaveCnn::random(c, flags.loop.seed);
  }();
  train::WaveTrainConfig config;
  config.trainer = flags.loop.trainer_config();
  config.epochs = flags.loop.epochs;
  config.eval_every = flags.eval_every;
  const fs::path out(flags.out);
  fs::create_directories(out);
  const train::WaveTrainResult r =
      train::train_wave(model, train_set, test_set, config, out / "run", flags.loop.resume);
  if (!r.finished) return;
  model.save(out / "model");
  OrderedJson report = model_summary(model);
  report["model"] = (out / "model").string();
  report["steps"] = r.step;
  report["train_samples"] = train_set.inputs.size(0);
  report["final_loss"] = r.steps.empty() ? 0.0 : r.steps.back().loss;
  report["train"] = r.train.to_json();
  if (r.test.samples > 0) {
    report["test"] = r.test.to_json();
    report["generalization_gap"] = r.test.relative_l2 - r.train.relative_l2;
  }
  write_json_file(out / "train.json", report);
  std::ostringstream text;
  text << "trained wave_cnn (" << model.config().conv
       << (model.config().conv == "cp" ? ":" + std::to_string(model.config().rank) : std::string()) << ", "
       << model.parameter_count() << " parameters, " << r.step << " steps): train relative L2 "
       << r.train.relative_l2;
  if (r.test.samples > 0) text << ", test " << r.test.relative_l2;
  text << " -> " << (out / "model").string() << "\n";
  print_report(report, global, text.str());
}

struct EvalFlags {
  std::string model, data;
  int64_t batch_size = 32;
};

void run_eval(const EvalFlags& flags, const GlobalOptions& global) {
  const nn::WaveCnn model = nn::WaveCnn::load(flags.model);
  const data::WaveDataset set = data::load_wave_dataset(flags.data);
  const train::WaveEvalResult r = train::evaluate_wave(model, set, flags.batch_size);
  OrderedJson report = r.to_json();
  const OrderedJson summary = model_summary(model);
  for (const auto& [key, value] : summary.items()) report[key] = value;
  print_report(report, global,
               str(flags.data, ": relative L2 ", r.relative_l2, " (persistence ", r.persistence_relative_l2,
                   ") over ", r.samples, " samples\n"));
}

struct CompressFlags {
  std::string model, out;
  int64_t rank = 8, iters = 100;
};

void run_compress(const CompressFlags& flags, const GlobalOptions& global) {
  StagedDirectory probe(flags.out);  // a bad --out fails before the work
  const nn::WaveCnn dense = nn::WaveCnn::load(flags.model);
  std::vector<double> errors;
  const nn::WaveCnn cp = nn::WaveCnn::posthoc_cp(dense, flags.rank, &errors, flags.iters);
  cp.save(flags.out);
  OrderedJson report = model_summary(cp);
  report["dense_inner_conv_parameters"] = dense.inner_parameter_count();
  report["kernel_errors"] = errors;
  report["out"] = flags.out;
  print_report(report, global,
               str("post-hoc CP rank ", flags.rank, ": inner convolutions ", dense.inner_parameter_count(),
                   " -> ", cp.inner_parameter_count(), " parameters -> ", flags.out, "\n"));
}

}  // namespace

VerbRunner add_wave(CLI::App& app, const GlobalOptions& global) {
  auto* cmd =
      app.add_subcommand("wave", "2-D wave-equation data for the CP convolution study (docs/compression.md)");
  cmd->require_subcommand(1);
  auto mode = std::make_shared<std::string>();
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
  simulate->callback([mode] { *mode = "simulate"; });

  auto tr = std::make_shared<TrainFlags>();
  auto* train = cmd->add_subcommand("train", "Train the wave encoder-decoder, dense or a-priori CP");
  train->add_option("--data", tr->data, "Training set (.safetensors of `wave simulate`)")->required();
  train->add_option("--test", tr->test, "Test set, evaluated at the end (and every --eval-every steps)");
  train->add_option("--out", tr->out, "Output directory (run/, model/, train.json)")->required();
  train->add_option("--conv", tr->conv, "dense | cp:R (rank of every inner convolution)")
      ->capture_default_str();
  train->add_option("--init", tr->init, "Start from this model directory (e.g. from `wave compress`)");
  train->add_option("--width", tr->width, "Channels C of the first level (2C below)")->capture_default_str();
  train->add_option("--levels", tr->levels, "Downsamplings")->capture_default_str();
  train->add_option("--kernel-size", tr->kernel_size, "k of every convolution (odd)")->capture_default_str();
  train->add_option("--eval-every", tr->eval_every, "Evaluate on --test every N steps")
      ->capture_default_str();
  tr->loop.add_to(*train, "samples", "the weights and the sample order");
  train->callback([tr, train, mode] {
    if (!tr->init.empty() && train->count("--conv") > 0)
      throw CLI::ValidationError("--conv", "an --init model keeps its own convolutions");
    *mode = "train";
  });

  auto ev = std::make_shared<EvalFlags>();
  auto* eval = cmd->add_subcommand("eval", "Relative L2 error of a wave model on a data set");
  eval->add_option("--model", ev->model, "Model directory")->required();
  eval->add_option("--data", ev->data, "Data set (.safetensors)")->required();
  eval->add_option("--batch-size", ev->batch_size, "Samples per forward pass")->capture_default_str();
  eval->callback([mode] { *mode = "eval"; });

  auto cp = std::make_shared<CompressFlags>();
  auto* compress =
      cmd->add_subcommand("compress", "Post-hoc CP (CP-ALS) of a dense wave model's inner convolutions");
  compress->add_option("--model", cp->model, "Dense model directory")->required();
  compress->add_option("--rank", cp->rank, "CP rank R")->capture_default_str();
  compress->add_option("--iters", cp->iters, "ALS iterations at most")->capture_default_str();
  compress->add_option("--out", cp->out, "Output model directory")->required();
  compress->callback([mode] { *mode = "compress"; });

  return [=, &global] {
    if (*mode == "simulate") run_simulate(*flags, global);
    if (*mode == "train") run_train(*tr, global);
    if (*mode == "eval") run_eval(*ev, global);
    if (*mode == "compress") run_compress(*cp, global);
  };
}

}  // namespace lowrank::cli
