// `lowrank report RUN_DIR... --out report.html [--title TEXT]`: one self-contained HTML page of
// the runs' curves (loss against step and tokens, learning rate, gradient norm, tokens/s), their
// memory accounting and compression tables, several runs overlaid (analysis/run_report.h;
// docs/report.md).
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/analysis/run_report.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"

namespace lowrank::cli {

VerbRunner add_report(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand(
      "report", "One HTML page of training/fine-tuning/compression runs: curves, memory, rank tables");
  struct Args {
    std::vector<std::string> runs;
    std::string out = "report.html", title;
  };
  auto args = std::make_shared<Args>();
  cmd->add_option("RUN_DIR", args->runs,
                  "Run directories (metrics.jsonl or run/metrics.jsonl, pretrain.json, finetune.json, "
                  "compress_report.json); several are overlaid")
      ->required();
  cmd->add_option("--out", args->out, "The HTML file to write")->capture_default_str();
  cmd->add_option("--title", args->title, "The page's title (default: the runs' names)");
  return [args, &global] {
    std::vector<std::filesystem::path> dirs(args->runs.begin(), args->runs.end());
    const std::vector<analysis::RunData> runs = analysis::read_runs(dirs);
    std::string title = args->title;
    if (title.empty()) {
      title = "Runs:";
      for (const auto& r : runs) title += " " + r.name;
    }
    write_file_atomic(args->out, analysis::run_report_html(runs, title));
    if (global.json) {
      OrderedJson names = OrderedJson::array();
      for (const auto& r : runs) names.push_back(r.name);
      std::cout << OrderedJson{{"out", args->out}, {"runs", names}}.dump(2) << "\n";
    } else {
      log::info("wrote ", args->out, " (", runs.size(), runs.size() == 1 ? " run)" : " runs)");
    }
  };
}

}  // namespace lowrank::cli
