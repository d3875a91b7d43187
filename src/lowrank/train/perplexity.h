// Perplexity of a causal LM over a token stream with a sliding window: the strided method of
// Hugging Face's "Perplexity of fixed-length models" guide
// (https://huggingface.co/docs/transformers/perplexity). Windows of at most seq_len tokens start
// every `stride` tokens; each window scores only the tokens that the previous window did not
// (the last end − prev_end positions), so each token after the first is scored exactly once,
// with up to seq_len − stride tokens of context.
// As in HF's loop, a window's first token is never a target, so with stride == seq_len
// (non-overlapping windows) each window scores seq_len − 1 tokens.
//   PPL = exp(Σ NLL / N)   over the N scored tokens.
// Confidence interval: each window is a chunk; with c_i its mean NLL, m the mean of the c_i and
// se = sd(c) / sqrt(n) over n chunks, the 95% interval is exp(m ± 1.96·se) (a normal
// approximation over chunks, which are only roughly independent; reported as an indication).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string_view>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/nn/model.h"

namespace lowrank::train {

struct PerplexityOptions {
  int64_t seq_len = 0;     // window length; 0: the model's max_position_embeddings, at most 1024
  int64_t stride = 0;      // window step; 0: seq_len / 2 (at least 1)
  int64_t batch_size = 8;  // windows per forward pass
  bool progress = true;    // show a progress bar
};

struct PerplexityResult {
  double nll = 0;                  // mean NLL per scored token (nats)
  double perplexity = 0;           // exp(nll)
  double ci_low = 0, ci_high = 0;  // 95% interval, see the file comment
  int64_t tokens = 0;              // scored tokens
  int64_t chunks = 0;              // windows
  int64_t seq_len = 0, stride = 0;

  OrderedJson to_json() const;
};

// Evaluates `model` on the 1-D int64 `tokens` (at least 2). Runs under inference mode. Throws
// InvalidArgument for a bad option or too few tokens.
PerplexityResult perplexity(const nn::Model& model, const at::Tensor& tokens,
                            const PerplexityOptions& options);

// The tokens `lowrank eval` scores: a token dataset directory's `split` (data/token_dataset.h),
// or a UTF-8 text file encoded with `model_dir`'s tokenizer.json (no special tokens). At most
// `max_tokens` (<= 0: all). Throws NotFound / Corruption / InvalidArgument from the readers.
at::Tensor load_eval_tokens(const std::filesystem::path& data, const std::filesystem::path& model_dir,
                            std::string_view split = "validation", int64_t max_tokens = 0);

}  // namespace lowrank::train
