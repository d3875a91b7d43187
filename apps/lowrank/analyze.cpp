// `lowrank analyze MODEL_DIR --out DIR`: singular-value spectra and rank statistics of every
// 2-D weight; writes spectra.json and spectra.svg.
#include <cstdio>
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/analysis/spectra.h"
#include "lowrank/core/log.h"

namespace lowrank::cli {

VerbRunner add_analyze(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "analyze",
      "Singular-value spectra of every 2-D weight: effective rank, 90%/99% energy ranks, WeLore rank");
  struct Args {
    std::string model, out;
    analysis::SpectraOptions options;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("MODEL", args->model, "HF model directory or safetensors file")->required();
  cmd->add_option("--out", args->out, "Output directory for spectra.json and spectra.svg")->required();
  cmd->add_option("--tau", args->options.welore_tau, "WeLore threshold on the min-max-normalised spectrum")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--include", args->options.include, "Only tensors whose name matches this regex");
  return [args, &global] {
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
