// Shared by the tests that run the whole `finetune` pipeline in process: options for a two-step
// run of 2 windows of 16 tokens on a small word corpus written into `dir`.
#pragma once

#include <filesystem>
#include <string>

#include "lowrank/adapt/finetune.h"
#include "tests/testing.h"

namespace lowrank::testing {

inline adapt::FinetuneOptions two_step_finetune(const std::filesystem::path& model, const std::string& method,
                                                const std::filesystem::path& dir, const std::string& out) {
  adapt::FinetuneOptions o;
  o.model = model;
  o.method = method;
  o.corpus = write_word_corpus(dir / "corpus.txt", 40).string();
  o.out = dir / out;
  o.trainer = adapt::default_finetune_trainer();
  o.trainer.steps = 2;
  o.trainer.batch_size = 2;
  o.trainer.seq_len = 16;
  o.trainer.warmup_steps = 1;
  o.max_documents = 20;
  o.eval_tokens = 256;
  return o;
}

}  // namespace lowrank::testing
