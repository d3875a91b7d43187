// `lowrank merge` (fold adapters into a dense HF model) and `lowrank extract` (a LoRA from the
// difference of two checkpoints).
#include <cstdio>
#include <filesystem>
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/json.h"
#include "lowrank/core/log.h"
#include "lowrank/nn/run.h"

namespace lowrank::cli {

namespace fs = std::filesystem;

VerbRunner add_merge(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("merge", "Fold adapters into the base weights and write a dense HF model");
  struct Args {
    std::string model, out, dtype = "float32";
    std::vector<std::string> adapters;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--model", args->model, "HF model directory")->required();
  cmd->add_option("--adapter", args->adapters, "PEFT adapter directory, optionally DIR:WEIGHT (repeatable)")
      ->required();
  cmd->add_option("--out", args->out, "Output HF model directory")->required();
  cmd->add_option("--dtype", args->dtype, "Dtype of the merge and of the written weights")
      ->capture_default_str();
  return [args, &global] {
    nn::Model model = nn::Model::load(args->model, {nn::parse_dtype(args->dtype), at::kCPU});
    std::vector<adapt::AttachedAdapter> adapters = adapt::load_adapters(model, args->adapters);
    int64_t layers = 0;
    for (const auto& a : adapters) layers += static_cast<int64_t>(a.layers.size());
    adapt::merge_adapters(model, adapters);
    model.save(args->out);
    nn::copy_model_side_files(args->model, args->out);
    if (global.json) {
      std::cout
          << OrderedJson{{"out", args->out}, {"adapters", args->adapters}, {"merged_layers", layers}}.dump(2)
          << "\n";
      return;
    }
    log::info("merged ", adapters.size(), " adapter(s) into ", layers, " layers; wrote ", args->out);
  };
}

VerbRunner add_extract(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "extract", "A LoRA adapter from the difference of a tuned and a base checkpoint (truncated SVD)");
  struct Args {
    std::string base, tuned, out;
    int64_t rank = 16;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("--base", args->base, "Base HF model directory")->required();
  cmd->add_option("--tuned", args->tuned, "Fine-tuned HF model directory (same architecture)")->required();
  cmd->add_option("--rank", args->rank, "LoRA rank")->capture_default_str();
  cmd->add_option("--out", args->out, "Output PEFT adapter directory")->required();
  return [args, &global] {
    const nn::Model base = nn::Model::load(args->base);
    const nn::Model tuned = nn::Model::load(args->tuned);
    LR_CHECK(base.config().architecture == tuned.config().architecture &&
                 base.config().num_hidden_layers == tuned.config().num_hidden_layers,
             InvalidArgument, "extract: ", args->base, " and ", args->tuned,
             " are different architectures or depths");
    const auto slots = adapt::extract_lora(base, tuned, {args->rank}, args->out);
    const OrderedJson report = adapt::extract_report_json(slots, args->rank);
    write_json_file(fs::path(args->out) / "extract_report.json", report);
    if (global.json) {
      std::cout << report.dump(2) << "\n";
      return;
    }
    for (const auto& s : slots)
      std::printf("%-44s  |dW|/|W| %.4f  energy captured %.4f\n", s.module.c_str(), s.relative_change,
                  s.energy);
    std::printf("extracted rank-%lld LoRA on %zu slots into %s (mean energy %.4f)\n",
                static_cast<long long>(args->rank), slots.size(), args->out.c_str(),
                report["mean_energy"].get<double>());
  };
}

}  // namespace lowrank::cli
