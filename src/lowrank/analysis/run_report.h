// The page of one or several runs (`lowrank report RUN_DIR... --out report.html`, and `GET /runs`
// of `lowrank serve --runs DIR`): one self-contained HTML file, its plots inline SVG drawn by
// analysis/plot.h, no script and no external asset.
//
// A run directory is what a verb leaves behind:
//   - metrics.jsonl (in the directory or its run/ subdirectory): one JSON object per line, written
//     by train/trainer.cpp ({"step", "loss", "lr", "grad_norm", "tokens_per_s"}) or
//     train/classify.cpp (those, and validation lines {"step", "val_accuracy", ...});
//   - pretrain.json or finetune.json: the summary (steps, final loss, validation perplexity, memory
//     accounting, and the trainer's batch_size × grad_accum × seq_len, which gives tokens per step);
//   - compress_report.json: the compression's per-slot rank and error table.
// Every numeric key of metrics.jsonl becomes a column; a plot shows one series per run, with one
// point per line of the file that has that key. The trainer records no per-step validation loss:
// the summary's final validation NLL and perplexity are in the runs table.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "lowrank/core/json.h"

namespace lowrank::analysis {

struct RunData {
  std::string name;  // the directory's name (made unique by read_runs)
  std::filesystem::path dir;
  std::string kind;  // "pretrain", "finetune", "compress", or "train" (metrics only)
  // metrics.jsonl: per numeric key, its (step, value) pairs in file order.
  std::map<std::string, std::vector<std::pair<double, double>>> columns;
  int64_t metric_rows = 0;      // lines of metrics.jsonl
  int64_t tokens_per_step = 0;  // from the summary's trainer; 0: unknown
  Json summary;                 // pretrain.json / finetune.json (null if none)
  Json compression;             // compress_report.json (null if none)
};

// Reads one run directory. Throws NotFound when it holds none of the files above, and
// InvalidArgument naming the file and line for a line of metrics.jsonl that is not a JSON object.
RunData read_run(const std::filesystem::path& dir);
// Reads several. Runs with the same directory name are named "parent/name", and any still alike
// "name (2)", ..., so every series is told apart.
std::vector<RunData> read_runs(const std::vector<std::filesystem::path>& dirs);

// The HTML page of `runs` (at least one), overlaid in shared plots.
std::string run_report_html(const std::vector<RunData>& runs, const std::string& title);

}  // namespace lowrank::analysis
