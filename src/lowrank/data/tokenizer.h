// Byte-level BPE tokenizer, loaded from and saved to Hugging Face `tokenizer.json`.
//
// References:
// - Sennrich, Haddow & Birch, 2016, "Neural Machine Translation of Rare Words with Subword Units"
//   (ACL): byte-pair encoding, merges applied by rank.
// - Radford et al., 2019, "Language Models are Unsupervised Multitask Learners" (GPT-2): BPE over
//   bytes, with each byte shown as a printable character (`bytes_to_unicode`) and a pre-tokenizer
//   regex that keeps merges inside words.
// - Hugging Face `tokenizers` (Rust crate, v0.23): the pipeline reproduced here step for step,
//   added tokens -> normalizer -> pre-tokenizer -> BPE model -> post-processor, and back through
//   the decoder. The file format is theirs; see docs/tokenizer.md for what is accepted.
//
// The pipeline (names as in `tokenizers`):
//   1. added tokens are split out of the raw text (longest match first; `lstrip`, `rstrip`,
//      `single_word` honoured), first those with `normalized: false`, then, after the
//      normalizer (none, or NFC as in Qwen2's files), those with `normalized: true`;
//   2. each remaining piece is pre-tokenized into words: `ByteLevel` (optionally prefixed with a
//      space and split by the GPT-2 regex, then mapped byte -> printable char) and `Split`
//      (a regex with a delimiter behaviour), possibly inside a `Sequence`;
//   3. each word is encoded by the BPE model (lowest-rank merge first, cached per word);
//   4. with add_special_tokens, the post-processor (`TemplateProcessing`, `RobertaProcessing`,
//      `BertProcessing`, `ByteLevel`, `Sequence`) adds its special tokens.
// Regexes run on PCRE2 in UTF + UCP mode (JIT when available) rather than Oniguruma; the one
// class they disagree on, `\s` and U+180E, is rewritten to Oniguruma's meaning. Characters
// assigned after PCRE2's Unicode version can still fall into different `\p{..}` classes.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowrank/core/json.h"

namespace lowrank::data {

namespace detail {
struct TokenizerImpl;
}

// An immutable tokenizer. Copies are cheap and share state.
//
// Thread safety: every const member may be called concurrently from any number of threads (the
// per-word BPE cache is internally locked).
//
// Errors: loading throws NotFound (no file), Corruption (not JSON, or inconsistent: a merge of
// unknown tokens, a bad id), InvalidArgument (a field of the wrong type) and Unsupported (a
// component this engine does not implement: a Metaspace pre-tokenizer, a Unigram model, a
// normalizer other than NFC, truncation, ...), each naming the file and the component.
class Tokenizer {
 public:
  // Loads `path`: a tokenizer.json file, or a directory that holds one. When a
  // tokenizer_config.json sits beside it, its bos_token / eos_token name the bos and eos ids.
  static Tokenizer load(const std::filesystem::path& path);
  // Builds from a parsed tokenizer.json; `what` names the source in error messages.
  static Tokenizer from_json(const Json& spec, std::string_view what);

  // Token ids of `text` (UTF-8; InvalidArgument names the offset of an invalid byte). With
  // add_special_tokens the post-processor adds its tokens (e.g. a leading bos).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Text of `ids`. Byte sequences that are not valid UTF-8 become U+FFFD, one per maximal
  // invalid subpart (as Rust's String::from_utf8_lossy, which `tokenizers` uses). Throws
  // InvalidArgument for an id that names no token (`tokenizers` silently drops it).
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  // One past the largest id of the model vocabulary and the added tokens (the embedding rows
  // a model needs).
  int64_t vocab_size() const;
  // The id of a token string (as stored in the vocabulary, i.e. byte-level characters for
  // model tokens), added tokens first.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // The token string of `id`; throws InvalidArgument when no token has this id.
  std::string id_to_token(int32_t id) const;
  // True for the ids of added tokens flagged `special`.
  bool is_special(int32_t id) const;
  // Beginning / end of sequence ids: from tokenizer_config.json when it was found by load(),
  // else the first special added token named like one (<s>, <|begin_of_text|>, ... /
  // </s>, <|end_of_text|>, <|endoftext|>, ...).
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

  // Writes tokenizer.json (atomically) in the layout `tokenizers` writes: the same components,
  // the vocabulary in id order and the merges as pairs. `path` may name a directory.
  void save(const std::filesystem::path& path) const;
  // The full tokenizer.json document save() writes.
  std::string to_json_string() const;

  const detail::TokenizerImpl& impl() const { return *impl_; }

 private:
  static Tokenizer build(const Json& spec, std::string_view what, const std::filesystem::path& config);
  explicit Tokenizer(std::shared_ptr<const detail::TokenizerImpl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const detail::TokenizerImpl> impl_;
};

}  // namespace lowrank::data
