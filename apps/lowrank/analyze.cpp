// `lowrank analyze MODEL_DIR --out DIR`: singular-value spectra and rank statistics of every
// 2-D weight; writes spectra.json and spectra.svg.
// `lowrank analyze MAMBA_DIR --lyapunov --data D --out DIR`: the Lyapunov exponents of every Mamba
// layer's recurrence and a whole-model float64 estimate (mix/mamba_lyapunov.h); writes
// lyapunov.json and lyapunov.svg.
#include <cstdio>
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/analysis/spectra.h"
#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/eval/perplexity.h"
#include "lowrank/mix/mamba_lyapunov.h"
#include "lowrank/nn/model.h"

namespace lowrank::cli {

namespace {

struct AnalyzeArgs {
  std::string model, out;
  analysis::SpectraOptions options;
  bool lyapunov = false;
  std::string data;
  int64_t seq_len = 256, sequences = 4;
  mix::LyapunovOptions lyapunov_options;
};

void run_lyapunov(const AnalyzeArgs& args, const GlobalOptions& global) {
  LR_CHECK(!args.data.empty(), InvalidArgument,
           "analyze --lyapunov needs --data (a token dataset directory or a UTF-8 text file)");
  nn::Model model = nn::Model::load(args.model, {at::kDouble});
  const eval::EvalTokens data =
      eval::load_eval_tokens(args.data, args.model, "validation", args.sequences * args.seq_len);
  const int64_t sequences = data.tokens.size(0) / args.seq_len;
  LR_CHECK(sequences >= 1, InvalidArgument, "analyze --lyapunov: ", args.data, " holds ", data.tokens.size(0),
           " tokens, fewer than one sequence of --seq-len ", args.seq_len);
  const at::Tensor tokens =
      data.tokens.narrow(0, 0, sequences * args.seq_len).reshape({sequences, args.seq_len});
  log::info("lyapunov: ", sequences, " sequence(s) of ", args.seq_len, " tokens, float64");
  const mix::LyapunovReport r = mix::mamba_lyapunov(model, tokens, args.lyapunov_options);
  mix::write_lyapunov_report(args.out, r, "Lyapunov exponents: " + args.model);
  const mix::PerturbationGrowth& g = r.whole_model;
  if (global.json) {
    OrderedJson layers = OrderedJson::array();
    for (const auto& e : r.layers)
      layers.push_back({{"layer", e.layer}, {"max", e.max}, {"mean", e.mean}, {"min", e.min}});
    std::cout << OrderedJson{{"out", args.out},
                             {"all_negative", r.all_negative},
                             {"whole_model_exponent", g.exponent},
                             {"layers", layers}}
                     .dump(2)
              << "\n";
    return;
  }
  std::printf("%5s  %12s  %12s  %12s  %14s  %10s\n", "layer", "max", "mean", "min", "max 1 sequence",
              "mean dt");
  for (const auto& e : r.layers)
    std::printf("%5lld  %12.4g  %12.4g  %12.4g  %14.4g  %10.4g\n", static_cast<long long>(e.layer), e.max,
                e.mean, e.min, e.max_single_sequence, e.mean_delta);
  std::printf("every exponent negative: %s\n", r.all_negative ? "yes" : "no");
  std::printf("whole model (float64, epsilon %.3g): slope %.4g nats/position over positions [%lld, %lld)\n",
              r.epsilon, g.exponent, static_cast<long long>(g.fit_begin), static_cast<long long>(g.fit_end));
  log::info("wrote ", args.out, "/lyapunov.json and ", args.out, "/lyapunov.svg");
}

}  // namespace

VerbRunner add_analyze(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "analyze",
      "Singular-value spectra of every 2-D weight: effective rank, 90%/99% energy ranks, WeLore rank; or, "
      "with --lyapunov, the Lyapunov exponents of a Mamba model's recurrences");
  auto args = std::make_shared<AnalyzeArgs>();
  cmd->add_option("MODEL", args->model, "HF model directory or safetensors file")->required();
  cmd->add_option(
         "--out", args->out,
         "Output directory for spectra.json and spectra.svg (lyapunov.json and lyapunov.svg with --lyapunov)")
      ->required();
  cmd->add_option("--tau", args->options.welore_tau, "WeLore threshold on the min-max-normalised spectrum")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--include", args->options.include, "Only tensors whose name matches this regex");
  cmd->add_flag("--lyapunov", args->lyapunov,
                "Lyapunov exponents of every Mamba layer (closed form A * mean dt) and a whole-model float64 "
                "estimate, on --data; writes lyapunov.json and lyapunov.svg");
  cmd->add_option("--data", args->data,
                  "With --lyapunov: a token dataset directory (its validation split) or a UTF-8 text file");
  cmd->add_option("--seq-len", args->seq_len, "With --lyapunov: positions per sequence")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--sequences", args->sequences,
                  "With --lyapunov: sequences analysed (fewer if the data is short)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--epsilon", args->lyapunov_options.epsilon,
                  "With --lyapunov: the size of the whole-model input perturbation")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--perturbed-positions", args->lyapunov_options.perturbed_positions,
                  "With --lyapunov: how many leading positions are perturbed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  return [args, &global] {
    if (args->lyapunov) {
      run_lyapunov(*args, global);
      return;
    }
    LR_CHECK(args->data.empty(), InvalidArgument, "analyze: --data is used with --lyapunov only");
    Checkpoint ckpt = Checkpoint::open(args->model);
    auto spectra = analysis::analyze_spectra(ckpt, args->options);
    analysis::write_spectra_report(args->out, spectra, args->options, "Weight spectra: " + args->model);
    if (global.json) {
      OrderedJson summary = OrderedJson::array();
      for (const auto& m : spectra)
        summary.push_back({{"name", m.name},
                           {"shape", {m.rows, m.cols}},
                           {"effective_rank", m.effective_rank},
                           {"rank_90", m.rank90},
                           {"rank_99", m.rank99},
                           {"welore_rank", m.welore_rank}});
      std::cout << OrderedJson{{"out", args->out}, {"matrices", summary}}.dump(2) << "\n";
      return;
    }
    size_t width = 4;
    for (const auto& m : spectra) width = std::max(width, m.name.size());
    std::printf("%-*s  %11s  %8s  %7s  %7s  %7s\n", static_cast<int>(width), "name", "shape", "eff.rank",
                "r90", "r99", "welore");
    for (const auto& m : spectra) {
      std::string shape = std::to_string(m.rows) + "x" + std::to_string(m.cols);
      std::printf("%-*s  %11s  %8.1f  %7lld  %7lld  %7lld\n", static_cast<int>(width), m.name.c_str(),
                  shape.c_str(), m.effective_rank, static_cast<long long>(m.rank90),
                  static_cast<long long>(m.rank99), static_cast<long long>(m.welore_rank));
    }
    log::info("wrote ", args->out, "/spectra.json and ", args->out, "/spectra.svg");
  };
}

}  // namespace lowrank::cli
