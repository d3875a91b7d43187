// `lowrank task generate`: writes a task of the long-sequence suite (lowrank/data/tasks/) into a
// new directory. Every task option of every task is a flag here; the library rejects the ones
// the chosen task does not take, naming them.
#include <iostream>
#include <map>
#include <memory>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/tasks/registry.h"
#include "lowrank/data/tasks/task_format.h"

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
  return [flags, &global] { run_generate(*flags, global); };
}

}  // namespace lowrank::cli
