// Perplexity of a causal LM over a token stream with a sliding window: the strided method of
// Hugging Face's "Perplexity of fixed-length models" guide
// (https://huggingface.co/docs/transformers/perplexity). Windows of at most seq_len tokens start
// every `stride` tokens; each window scores only the tokens that the previous window did not
// (the last end − prev_end positions), so each token after the first is scored exactly once,
// with up to seq_len − stride tokens of context.
// As in HF's loop, a window's first token is never a target, so with stride == seq_len
// (non-overlapping windows) each window scores seq_len − 1 tokens.
//   PPL = exp(Σ NLL / N)   over the N scored tokens.
// Confidence interval: the stream is cut into units, each unit u contributing the NLL sum s_u
// of its n_u scored tokens. The units are the documents when their boundaries are known (a
// token belongs to the document of the position it predicts) and at least two documents have
// scored tokens; otherwise they are the windows. With r = Σs_u / Σn_u (the token-weighted mean
// NLL, so the interval is centred on the reported perplexity) and k units, the ratio estimator's
// standard error is se = sqrt(k/(k−1) · Σ(s_u − r·n_u)²) / Σn_u, and the 95% interval is
// exp(r ± 1.96·se). For units of equal size this is sd(c)/√k over the unit means c_u = s_u/n_u.
// It is a normal approximation that treats units as independent (documents are close to that;
// neighbouring windows of one text are not), so read it as an indication.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"
#include "lowrank/data/token_dataset.h"
#include "lowrank/nn/model.h"

namespace lowrank::eval {

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
  std::string ci_unit = "window";  // what the interval treats as samples: "document" or "window"
  int64_t ci_samples = 0;          // documents or windows behind the interval
  int64_t tokens = 0;              // scored tokens
  int64_t chunks = 0;              // windows
  int64_t seq_len = 0, stride = 0;

  OrderedJson to_json() const;
};

// Evaluates `model` on the 1-D int64 `tokens` (at least 2). `document_starts` are the offsets
// where documents start (the first 0, non-decreasing, each below tokens.size(0)); empty when
// unknown. Runs under inference mode. Throws InvalidArgument for a bad option, bad document
// starts or too few tokens.
PerplexityResult perplexity(const nn::Model& model, const at::Tensor& tokens,
                            const PerplexityOptions& options, std::span<const int64_t> document_starts = {});

// The 95% interval of exp(Σ nll_sums / Σ tokens) over units with these NLL sums and scored
// token counts (the ratio estimator of the file comment). One unit gives a zero-width interval.
// Throws InvalidArgument for no units, mismatched sizes or a unit without tokens.
std::pair<double, double> perplexity_interval95(std::span<const double> nll_sums,
                                                std::span<const int64_t> tokens);

// The perplexity of `model` on the first `max_tokens` tokens of `dataset`'s `split` in
// non-overlapping windows of `seq_len` (stride seq_len), the split's documents as the interval's
// units: the validation score of the training pipelines. Nullopt when the split has fewer than 2
// tokens.
std::optional<PerplexityResult> split_perplexity(const nn::Model& model, const data::TokenDataset& dataset,
                                                 std::string_view split, int64_t max_tokens, int64_t seq_len);

// The tokens `lowrank eval` scores and their document starts (data/token_dataset.h).
struct EvalTokens {
  at::Tensor tokens;                     // 1-D int64
  std::vector<int64_t> document_starts;  // empty when the source has no document boundaries
};

// A token dataset directory's `split`, with its document starts, or a UTF-8 text file encoded
// with `model_dir`'s tokenizer.json (no special tokens, no document boundaries). At most
// `max_tokens` (<= 0: all). Throws NotFound / Corruption / InvalidArgument from the readers.
EvalTokens load_eval_tokens(const std::filesystem::path& data, const std::filesystem::path& model_dir,
                            std::string_view split = "validation", int64_t max_tokens = 0);

// The document starts of `starts` that fall inside the first `n` tokens.
std::vector<int64_t> document_starts_below(std::span<const int64_t> starts, int64_t n);

}  // namespace lowrank::eval
