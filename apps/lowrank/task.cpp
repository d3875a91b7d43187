// `lowrank task generate`: writes a task of the long-sequence suite (lowrank/data/tasks/) into a
// new directory. Every task option of every task is a flag here; the library rejects the ones
// the chosen task does not take, naming them.
// `lowrank task train --task DIR --mixer NAME | --layer-mixers LIST [--mixer-options JSON]
// --preset lra-tiny --out DIR`: a sequence classifier trained on a generated task; `--preset vit-tiny`
// an image classifier (nn/image_classifier.h) on an image task such as fmnist
// (src/lowrank/train/classify.h, docs/tasks.md).
// `lowrank task vq-ttt --model DIR --task DIR --degradations blur:2,noise:3 --out DIR`: the
// visual-quality study and VQ-TTT (src/lowrank/train/vq_ttt_study.h).
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <vector>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/tasks/registry.h"
#include "lowrank/data/tasks/task_format.h"
#include "lowrank/train/classify.h"
#include "lowrank/train/vq_ttt_study.h"

namespace lowrank::cli {

namespace {

struct GenerateFlags {
  data::tasks::TaskRequest request;
  std::map<std::string, std::string> values;  // option key -> the value as typed
  std::map<std::string, CLI::Option*> flags;
};

void run_generate(GenerateFlags& flags, const GlobalOptions& global) {
  for (const auto& [key, option] : flags.flags) {
    if (option->count() > 0) flags.request.options[key] = flags.values[key];
  }
  if (global.json) ProgressBar::set_enabled(false);
  data::tasks::generate_task(flags.request);
  const auto task = data::tasks::TaskDataset::open(flags.request.out, /*verify_hashes=*/false);
  const auto& info = task.info();
  if (global.json) {
    OrderedJson report;
    report["task"] = info.header.task;
    report["out"] = flags.request.out.string();
    report["seed"] = info.header.seed;
    report["parameters"] = info.header.parameters;
    for (auto split : data::tasks::kSplits) {
      const auto& s = info.splits[static_cast<int>(split)];
      report["splits"][data::tasks::split_name(split)] = {
          {"examples", s.examples}, {"min_length", s.min_length}, {"max_length", s.max_length}};
    }
    std::cout << report.dump(2) << "\n";
  } else {
    std::cout << "generated " << info.header.task << " (seed " << info.header.seed << ") -> "
              << flags.request.out.string() << "\n";
    for (auto split : data::tasks::kSplits) {
      const auto& s = info.splits[static_cast<int>(split)];
      std::cout << "  " << data::tasks::split_name(split) << ": " << s.examples << " examples, length "
                << s.min_length << "-" << s.max_length << "\n";
    }
  }
}

void add_train(CLI::App& cmd, const GlobalOptions& global, std::vector<VerbRunner>& runners) {
  auto* train_cmd = cmd.add_subcommand("train", "Train a sequence classifier on a generated task");
  auto o = std::make_shared<train::TaskTrainOptions>();
  auto task = std::make_shared<std::string>();
  auto out = std::make_shared<std::string>();
  auto mixer_options = std::make_shared<std::string>();
  auto stage_mixer_options = std::make_shared<std::string>();
  std::string presets;
  for (const auto& p : train::classify_presets()) presets += "\n  " + p.name + ": " + p.help;
  train_cmd->add_option("--task", *task, "Task directory (lowrank task generate)")->required();
  train_cmd->add_option("--out", *out, "Output directory (run/, model/, train.json)")->required();
  train_cmd->add_option("--preset", o->preset, "Model and schedule preset:" + presets)->capture_default_str();
  train_cmd->add_option("--mixer", o->mixer, "Token mixer of every layer (lowrank methods lists them)");
  train_cmd->add_option("--layer-mixers", o->layer_mixers,
                        "Token mixer per layer (an image preset: per stage), comma-separated");
  train_cmd->add_option("--mixer-options", *mixer_options,
                        "The mixer's options as a JSON object (with --layer-mixers: {\"<mixer>\": {...}})");
  train_cmd->add_option("--stage-mixer-options", *stage_mixer_options,
                        "vit-tiny: one JSON object per stage, over --mixer-options for that stage's mixer "
                        "(e.g. SOFT: '[{\"sr_ratio\": 2}, {\"sr_ratio\": 1}]')");
  train_cmd->add_option("--pooling", o->pooling, "Pooling over positions")
      ->check(CLI::IsMember({"mean", "last"}))
      ->capture_default_str();
  train_cmd->add_option("--steps", o->steps, "Optimizer steps (default: the preset's)");
  train_cmd->add_option("--batch-size", o->batch_size, "Examples per step (default: the preset's)");
  train_cmd->add_option("--lr", o->lr,
                        "Peak learning rate (default: the preset's; the cosine decays to lr/10)");
  train_cmd->add_option("--seed", o->seed, "Seed of the initialisation and the example sampler")
      ->capture_default_str();
  train_cmd->add_flag("--resume", o->resume, "Continue from the newest checkpoint in OUT/run");
  train_cmd->add_option("--checkpoint-every", o->checkpoint_every,
                        "Checkpoint every N steps (default: the preset's)");
  train_cmd->add_option(
      "--stop-after", o->stop_after,
      "Stop after step N without writing a checkpoint, as if killed (for testing --resume)");
  train_cmd->add_option("--eval-every", o->eval_every, "Validate every N steps (default: only at the end)");
  train_cmd->add_option("--eval-examples", o->eval_examples,
                        "Validation examples per evaluation (default: all)");
  runners.push_back([train_cmd, o, task, out, mixer_options, stage_mixer_options, &global] {
    if (!train_cmd->parsed()) return;
    o->task = *task;
    o->out = *out;
    if (!mixer_options->empty()) o->mixer_options = parse_json(*mixer_options, "--mixer-options");
    if (!stage_mixer_options->empty())
      o->stage_mixer_options = parse_json(*stage_mixer_options, "--stage-mixer-options");
    if (global.json) ProgressBar::set_enabled(false);
    const train::TaskTrainSummary s = train::task_train(*o);
    if (global.json) {
      std::cout << s.to_json().dump(2) << "\n";
      return;
    }
    if (!s.finished) {
      std::cout << "stopped after step " << s.steps << "; continue with --resume\n";
      return;
    }
    std::printf(
        "%s: %lld steps, final loss %.4f, validation accuracy %.4f (95%% Wilson CI %.4f .. %.4f, %lld "
        "examples)\n",
        s.model_dir.string().c_str(), static_cast<long long>(s.steps), s.final_loss, s.validation.accuracy,
        s.validation.ci_low, s.validation.ci_high, static_cast<long long>(s.validation.examples));
  });
}

void add_vq_ttt(CLI::App& cmd, const GlobalOptions& global, std::vector<VerbRunner>& runners) {
  auto* sub = cmd.add_subcommand(
      "vq-ttt",
      "Visual-quality study and VQ-TTT: a frozen image classifier on degraded copies of a task's images");
  auto o = std::make_shared<train::VqTttStudyOptions>();
  auto model = std::make_shared<std::string>(), task = std::make_shared<std::string>(),
       out = std::make_shared<std::string>(), degradations = std::make_shared<std::string>(),
       split = std::make_shared<std::string>("test");
  sub->add_option("--model", *model, "A trained image classifier (task train --preset vit-tiny)")->required();
  sub->add_option("--task", *task, "Its image task (fmnist)")->required();
  sub->add_option("--degradations", *degradations,
                  "Comma-separated kind:severity sets (kinds: blur, noise, jpeg, contrast, gamma, sharpen, "
                  "downsample; severity 1..5); clean is always evaluated")
      ->required();
  sub->add_option("--split", *split, "Split to study: val or test")->capture_default_str();
  sub->add_option("--max-examples", o->max_examples, "Images of the split (default: all)");
  sub->add_option("--filter-rank", o->ttt.filter_rank, "Rank of the spectral filter")->capture_default_str();
  sub->add_option("--lora-layers", o->ttt.lora_layers, "LoRA on the slots of the first N layers")
      ->capture_default_str();
  sub->add_option("--lora-rank", o->ttt.lora_rank, "LoRA rank")->capture_default_str();
  sub->add_option("--lora-alpha", o->ttt.lora_alpha, "LoRA alpha")->capture_default_str();
  sub->add_option("--steps", o->ttt.steps, "Adam steps of entropy minimisation per set")
      ->capture_default_str();
  sub->add_option("--batch-size", o->ttt.batch_size, "Unlabeled images per step")->capture_default_str();
  sub->add_option("--lr", o->ttt.lr, "Adam learning rate")->capture_default_str();
  sub->add_option(
         "--objective", o->ttt.objective,
         "entropy (mean prediction entropy, TENT) or infomax (minus the batch's marginal entropy, SHOT)")
      ->capture_default_str();
  sub->add_option("--seed", o->ttt.seed, "Seed of the noise, the filter's init and the minibatches")
      ->capture_default_str();
  sub->add_option("--out", *out, "Directory for report.json")->required();
  runners.push_back([sub, o, model, task, out, degradations, split, &global] {
    if (!sub->parsed()) return;
    o->model = *model;
    o->task = *task;
    o->out = *out;
    std::stringstream list(*degradations);
    for (std::string item; std::getline(list, item, ',');)
      if (!item.empty()) o->degradations.push_back(item);
    LR_CHECK(*split == "val" || *split == "test", InvalidArgument, "--split must be val or test, got \"",
             *split, "\"");
    o->split = *split == "val" ? data::tasks::Split::kVal : data::tasks::Split::kTest;
    if (global.json) ProgressBar::set_enabled(false);
    const train::VqTttStudy study = train::run_vq_ttt_study(*o);
    if (global.json) {
      std::cout << study.to_json().dump(2) << "\n";
      return;
    }
    std::printf("%-14s %-12s %8s %8s %8s %9s %9s\n", "set", "restoration", "frozen", "restored", "vq-ttt",
                "improved", "worsened");
    for (const train::VqTttSetResult& r : study.sets)
      std::printf("%-14s %-12s %8.4f %8.4f %8.4f %9zu %9zu\n", r.degradation.c_str(), r.restoration.c_str(),
                  r.frozen.accuracy, r.restored.accuracy, r.vq_ttt.accuracy, r.improved.size(),
                  r.worsened.size());
    std::printf("report: %s\n", (o->out / "report.json").string().c_str());
  });
}

}  // namespace

VerbRunner add_task(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("task", "Long-sequence classification and synthetic tasks");
  cmd->require_subcommand(1);
  std::string known;
  for (const auto& t : data::tasks::task_registry()) known += "\n  " + t.name + ": " + t.summary;
  auto* generate =
      cmd->add_subcommand("generate", "Generate a task's train/val/test files into a new directory");
  generate->footer("Tasks:" + known);
  auto flags = std::make_shared<GenerateFlags>();
  generate->add_option("--task", flags->request.task, "Task to generate (see the list below)")->required();
  generate->add_flag("--lra", flags->request.lra,
                     "The paper's full-size settings (listops: LRA; selective-copy: Mamba)");
  generate->add_option("--seed", flags->request.seed, "Seed: the same seed gives the same bytes")
      ->capture_default_str();
  generate->add_option("--out", flags->request.out, "Task directory to create (must not exist)")->required();
  // The union of the tasks' options; each help line names the tasks that take it.
  std::map<std::string, std::pair<std::string, std::string>> options;  // key -> (help, tasks)
  for (const auto& t : data::tasks::task_registry()) {
    for (const auto& o : t.options) {
      auto& [help, tasks] = options[o.key];
      // Tasks that share an option may differ in its default: then the help drops the first
      // task's default and points to the per-task table.
      if (help.empty()) {
        help = o.help;
      } else if (help != o.help && help.find(" (default") != std::string::npos) {
        help = help.substr(0, help.find(" (default")) + " (defaults per task: docs/tasks.md)";
      }
      tasks += (tasks.empty() ? "" : ", ") + t.name;
    }
  }
  for (const auto& [key, entry] : options) {
    flags->flags[key] = generate->add_option(data::tasks::option_flag(key), flags->values[key],
                                             entry.first + " [" + entry.second + "]");
  }
  auto runners = std::make_shared<std::vector<VerbRunner>>();
  add_train(*cmd, global, *runners);
  add_vq_ttt(*cmd, global, *runners);
  return [flags, generate, runners, &global] {
    if (generate->parsed()) run_generate(*flags, global);
    for (const VerbRunner& run : *runners) run();
  };
}

}  // namespace lowrank::cli
