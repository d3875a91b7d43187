// Autoregressive generation with a KV cache: greedy decoding or sampling, with the logits
// processors of transformers' generate() and their semantics (generation/logits_process.py):
//   repetition penalty (Keskar et al., 2019, "CTRL", arXiv:1909.05858): for each token already in
//     the sequence, score / penalty if score > 0 else score * penalty (greedy and sampling);
//   sampling only: temperature (score / T), top-k (keep scores >= the k-th largest), top-p
//     (nucleus, Holtzman et al., 2020, arXiv:1904.09751: drop the smallest tokens whose total
//     probability is <= 1 - p, always keeping the most likely one), in that order, then one
//     draw from softmax(scores) with a generator seeded by `seed`.
// Prompts of different lengths are left-padded into one batch; each row stops on its own (stop
// token ids, stop strings, the callback) and the batch ends when all rows have stopped or after
// max_new_tokens. The stop token or the token completing a stop string is part of the tokens.
// A LowrankMixerForCausalLM decodes the same way: its attention layers through the KV cache, every
// other layer through its mixer's constant-size decode state (Model::new_cache, token_mixer.h),
// which the prompt fills position by position, padding excluded.
// Text: each row's tokens go through a data::TextStream (data/text_stream.h), the one that the
// serving engine uses, so a row's text and finish reason are the server's for the same request: a
// stop string ends the row and is not part of the text (the OpenAI API's rule), text is released
// as whole UTF-8 characters.
// Deviations: the repetition penalty counts a row's real tokens only (transformers also counts
// the padding id); top_k defaults to 0 (off), not 50; sampling always runs on the CPU in float32
// so that a seed gives the same tokens on every device.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/data/finish_reason.h"
#include "lowrank/data/text_stream.h"
#include "lowrank/nn/model.h"

namespace lowrank::nn {

struct GenerateOptions {
  int64_t max_new_tokens = 32;
  bool do_sample = false;           // false: greedy (argmax)
  double temperature = 1.0;         // sampling; > 0
  int64_t top_k = 0;                // sampling; 0 = off
  double top_p = 1.0;               // sampling; in (0, 1], 1 = off
  double repetition_penalty = 1.0;  // > 0; 1 = off
  uint64_t seed = 0;
  std::vector<int64_t> stop_token_ids;
  // Stop when the text contains one of these (excluded from the text); needs `decode`.
  std::vector<std::string> stop_strings;
  // Turns generated ids into text (data::TextStream::decoder(tokenizer)); without it, no text.
  data::TextStream::Decode decode;
  // Called once per generated token of each running row, in row order; return false to stop
  // that row (finish reason "cancelled").
  std::function<bool(size_t row, int64_t token)> on_token;
  // Called with each piece of a row's text as it is released (never empty), after on_token.
  std::function<void(size_t row, std::string_view text)> on_text;
  // Fills the left padding of shorter prompts (masked out; any valid id).
  int64_t pad_token_id = 0;
  // The decode steps' path (model.h FusedDecode): the fused single-token step when it applies.
  FusedDecode fused_decode = FusedDecode::kAuto;
};

// kStop (a stop token or string), kLength or kCancelled; names as the OpenAI API's.
using data::finish_reason_name;
using data::FinishReason;

struct Generation {
  std::vector<int64_t> tokens;  // the new tokens only
  std::string text;             // their text, up to a stop string (empty without `decode`)
  FinishReason finish_reason = FinishReason::kLength;
};

// Generates a continuation of every prompt (a batch; each prompt non-empty). Runs under
// c10::InferenceMode. Throws InvalidArgument for bad options (naming the option) or prompts.
std::vector<Generation> generate(const Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& options);

// The logits processors, on scores [B, V] float32 (CPU), in place where named so. Exposed for
// tests and the serving engine. `seen[b]` lists the tokens of row b so far.
void apply_repetition_penalty(at::Tensor& scores, std::span<const std::vector<int64_t>> seen, double penalty);
void apply_top_k(at::Tensor& scores, int64_t top_k);
void apply_top_p(at::Tensor& scores, double top_p);
// Penalty, then (sampling) temperature, top-k, top-p, and the choice: [B] int64.
at::Tensor select_next_tokens(at::Tensor scores, std::span<const std::vector<int64_t>> seen,
                              const GenerateOptions& options, at::Generator& generator);

// The stop ids a model directory asks for: generation_config.json's eos_token_id (an int or a
// list) when present, else config.json's.
std::vector<int64_t> default_stop_token_ids(const std::filesystem::path& model_dir,
                                            const ModelConfig& config);

}  // namespace lowrank::nn
