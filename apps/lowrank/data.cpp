// `lowrank data prepare`: tokenize a corpus into a memory-mapped token dataset with a
// deterministic train/validation split (lowrank/data/prepare.h, corpus.h, token_dataset.h).
#include <iostream>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/corpus.h"
#include "lowrank/data/prepare.h"

namespace lowrank::cli {

namespace {

void run_prepare(const data::PrepareOptions& options, const GlobalOptions& global) {
  if (global.json) ProgressBar::set_enabled(false);
  const data::PrepareSummary summary = data::prepare_dataset(options);
  const data::TokenDatasetInfo& info = summary.info;
  if (global.json) {
    OrderedJson report;
    report["out"] = options.out.string();
    report["corpus"] = info.corpus;
    report["unit"] = summary.unit;
    report["corpus_bytes"] = summary.corpus_bytes;
    report["skipped_documents"] = summary.skipped_documents;
    report["tokenizer"] = info.tokenizer;
    report["vocab_size"] = info.vocab_size;
    report["dtype"] = summary.dtype;
    report["eos_id"] = info.eos_id;
    report["documents"] = {{"train", info.train_documents}, {"validation", info.validation_documents}};
    report["tokens"] = {{"train", info.train_tokens}, {"validation", info.validation_tokens}};
    report["validation_fraction"] = options.validation_fraction;
    report["seed"] = options.seed;
    std::cout << report.dump(2) << "\n";
  } else {
    std::cout << "prepared " << info.corpus << " (" << info.train_documents + info.validation_documents << " "
              << summary.unit << "s, " << summary.corpus_bytes << " bytes) -> " << options.out.string()
              << "\n"
              << "  train:      " << info.train_documents << " documents, " << info.train_tokens
              << " tokens\n"
              << "  validation: " << info.validation_documents << " documents, " << info.validation_tokens
              << " tokens\n"
              << "  dtype " << summary.dtype << ", vocab_size " << info.vocab_size << ", eos_id "
              << info.eos_id << "\n";
  }
}

}  // namespace

VerbRunner add_data(CLI::App& app, const GlobalOptions& global) {
  auto* cmd = app.add_subcommand("data", "Prepare token datasets from text corpora");
  cmd->require_subcommand(1);
  std::string known;
  for (const auto& name : data::corpus_names()) known += (known.empty() ? "" : ", ") + name;
  auto* prepare = cmd->add_subcommand(
      "prepare", "Tokenize a corpus into memory-mapped token files with a train/validation split");
  auto options = std::make_shared<data::PrepareOptions>();
  prepare
      ->add_option("--corpus", options->corpus, "A named corpus (" + known + ") or a text file / directory")
      ->required();
  prepare->add_option("--tokenizer", options->tokenizer, "tokenizer.json, or a directory holding one")
      ->required();
  prepare->add_option("--out", options->out, "Dataset directory to create (must not exist)")->required();
  prepare
      ->add_option("--validation-fraction", options->validation_fraction,
                   "Expected share of documents in the validation split, in [0, 1)")
      ->capture_default_str();
  prepare->add_option("--seed", options->seed, "Seed of the split hash")->capture_default_str();
  prepare->add_option("--max-documents", options->max_documents, "Use only the first N documents (-1: all)")
      ->capture_default_str();
  return [options, &global] { run_prepare(*options, global); };
}

}  // namespace lowrank::cli
