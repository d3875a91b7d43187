// Training a byte-level BPE tokenizer on a corpus, as the `BpeTrainer` of Hugging Face
// `tokenizers` (models/bpe/trainer.rs) does it, so that the result is a tokenizer.json that
// `tokenizers` loads and encodes identically.
//
// References: Sennrich et al., 2016, "Neural Machine Translation of Rare Words with Subword Units"
// (ACL), Algorithm 1: count the pre-tokenized words, then repeatedly merge the most frequent
// adjacent pair. Radford et al., 2019 (GPT-2): over the 256 byte-level characters.
//
// As in `tokenizers`: the vocabulary is the special tokens (ids 0..), then the initial alphabet
// (the 256 byte-level characters plus any other character of the words, by code point), then one
// token per merge. Ties between equally frequent pairs go to the pair of smaller ids (first id,
// then second). Training stops at vocab_size tokens, when no pair is left, or when the best
// pair occurs fewer than min_frequency times. Training texts are not split on special tokens.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lowrank/data/tokenizer.h"

namespace lowrank::data {

namespace detail {
class PreTokenizer;
}

struct BpeTrainerOptions {
  int64_t vocab_size = 30000;                 // target size, special tokens and alphabet included
  int64_t min_frequency = 0;                  // a pair occurring fewer times is never merged
  std::vector<std::string> special_tokens{};  // added first, with ids 0, 1, ...; flagged special
  // The pre-tokenizer written into the tokenizer: "gpt2" (ByteLevel with the GPT-2 regex),
  // "llama3" or "qwen2" (Split on that family's regex, then ByteLevel without regex; llama3 also
  // sets ignore_merges as Meta's file does).
  std::string pre_tokenizer = "gpt2";
};

// The names pre_tokenizer accepts.
std::vector<std::string> bpe_pre_tokenizer_presets();

// Accumulates word counts from texts, then learns the merges. Not thread-safe.
class BpeTrainer {
 public:
  // Throws InvalidArgument for a vocab_size below 1, a negative min_frequency, an unknown
  // pre_tokenizer, or an empty or repeated special token.
  explicit BpeTrainer(BpeTrainerOptions options);

  // Counts the words of one training sequence (valid UTF-8, else InvalidArgument).
  void feed(std::string_view text);
  // Feeds each line of a file, line ending included (as `tokenizers`' train_from_files).
  // Throws NotFound / IoError naming the file, InvalidArgument naming the line if not UTF-8.
  void feed_file(const std::filesystem::path& path);

  // Learns the merges and builds the tokenizer (ByteLevel decoder, no post-processor).
  Tokenizer train() const;
  // The tokenizer.json of train(), for inspection.
  Json train_json() const;

  const std::unordered_map<std::string, uint64_t>& word_counts() const { return word_counts_; }

 private:
  BpeTrainerOptions options_;
  Json pre_tokenizer_spec_;
  std::shared_ptr<const detail::PreTokenizer> pre_tokenizer_;
  std::unordered_map<std::string, uint64_t> word_counts_;
  std::vector<std::string> words_scratch_;
};

// Convenience: feed all of `texts` (or every line of `files`) and train.
Tokenizer train_bpe(std::span<const std::string> texts, const BpeTrainerOptions& options);
Tokenizer train_bpe_files(std::span<const std::filesystem::path> files, const BpeTrainerOptions& options);

}  // namespace lowrank::data
