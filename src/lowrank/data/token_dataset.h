// Token datasets: a corpus tokenized once into memory-mapped binary files with a deterministic
// train/validation split (`lowrank data prepare`), read by training and evaluation.
//
// Directory layout (written atomically: the directory appears complete or not at all):
//   dataset.json      {"format": "lowrank.tokens", "version": 1, "corpus", "tokenizer",
//                      "vocab_size", "dtype": "uint16"|"uint32", "documents": {"train", "validation"},
//                      "tokens": {"train", "validation"}, "validation_fraction", "seed", "eos_id"}
//   tokenizer.json    the tokenizer used (so the dataset is self-describing)
//   train.bin         the train split: token ids, little-endian, documents separated by eos_id
//   validation.bin    the validation split, same encoding
//   train.docs.bin / validation.docs.bin   int64 start offsets of each document (for per-document
//                      statistics such as perplexity confidence intervals)
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::data {

struct TokenDatasetInfo {
  std::string corpus;     // corpus name or path it was built from
  std::string tokenizer;  // tokenizer file it was built with
  int64_t vocab_size = 0;
  int32_t eos_id = -1;
  int64_t train_tokens = 0, validation_tokens = 0;
  int64_t train_documents = 0, validation_documents = 0;
};

class TokenDataset {
 public:
  // Throws NotFound / Corruption naming the directory and the file at fault.
  static TokenDataset open(const std::filesystem::path& dir);

  const TokenDatasetInfo& info() const;
  const std::filesystem::path& dir() const;
  // The tokens of "train" or "validation" (throws InvalidArgument for another name).
  int64_t size(std::string_view split) const;
  // Tokens [begin, begin + length) of a split as an int64 tensor (a copy; ids widened).
  at::Tensor slice(std::string_view split, int64_t begin, int64_t length) const;
  // Document start offsets of a split.
  std::span<const int64_t> document_starts(std::string_view split) const;

 private:
  struct Impl;
  std::shared_ptr<const Impl> impl_;
};

}  // namespace lowrank::data
