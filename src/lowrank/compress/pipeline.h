// `lowrank compress` and `lowrank export --dense` as library entry points: load, calibrate,
// compress, evaluate, and write the compressed directory with its report, atomically.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>

#include "lowrank/compress/methods.h"
#include "lowrank/core/json.h"

namespace lowrank::compress {

struct RunOptions {
  std::filesystem::path model;  // dense HF model directory
  std::filesystem::path out;    // new directory (must not exist, or be empty)
  CompressOptions compress;
  std::filesystem::path calib_data;  // token dataset directory or text file (its train split)
  int64_t calib_samples = 32;
  int64_t seq_len = 256;                   // calibration sequence length
  std::filesystem::path eval_data;         // optional: perplexity before and after (validation split)
  int64_t eval_max_tokens = 0;             // 0: all
  int64_t eval_seq_len = 0;                // 0: the model's context, at most 1024
  at::ScalarType save_dtype = at::kFloat;  // floating tensors in the written file
  // pela: the intermediate stage's data (token dataset directory or text file, its train split) and
  // steps (0: 300). Its run directory (checkpoints, metrics.jsonl) is `<out>.pela-run` unless the
  // method option "run_dir" names one; a checkpoint there is resumed.
  std::filesystem::path distill_data;
  int64_t distill_steps = 0;
  bool progress = true;
};

struct RunResult {
  CompressReport report;
  std::optional<double> perplexity_before, perplexity_after;
  OrderedJson pela;  // the intermediate stage's summary (null unless pela)
  std::filesystem::path out;
  OrderedJson to_json() const;
};

// The whole job. Every option and the output directory are checked before the model is touched
// (InvalidArgument / NotFound naming the value); the directory appears only when complete. Writes
// the model files, lowrank_config.json, compress_report.json and compress_report.svg.
RunResult run(const RunOptions& options);

// Replaces every compressed slot's operator of `model` by its dense weight (and bias). Returns the
// number of slots materialised.
int64_t materialise_stored_slots(nn::Model& model);

// A plain dense HF model from a compressed (or plain) one: every compressed slot materialised.
// Written atomically into the new directory `out`. Returns the number of slots materialised.
int64_t export_dense(const std::filesystem::path& model, const std::filesystem::path& out,
                     at::ScalarType dtype = at::kFloat);

// The per-layer picture of a report: kept rank (or bytes ratio) and output/weight error per slot.
std::string report_svg(const CompressReport& report);

}  // namespace lowrank::compress
