// Sliding-window perplexity (Hugging Face's strided method) with a chunk-level confidence
// interval; see perplexity.h.
#include "lowrank/train/perplexity.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <c10/core/InferenceMode.h>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/token_dataset.h"
#include "lowrank/data/tokenizer.h"

namespace lowrank::train {

OrderedJson PerplexityResult::to_json() const {
  return OrderedJson{{"perplexity", perplexity}, {"nll", nll},       {"ci95", {ci_low, ci_high}},
                     {"tokens", tokens},         {"chunks", chunks}, {"seq_len", seq_len},
                     {"stride", stride}};
}

PerplexityResult perplexity(const nn::Model& model, const at::Tensor& tokens,
                            const PerplexityOptions& options) {
  LR_CHECK(tokens.dim() == 1 && tokens.size(0) >= 2, InvalidArgument,
           "perplexity: need a 1-D stream of at least 2 tokens, got shape ", tokens.sizes());
  int64_t seq_len = options.seq_len;
  if (seq_len <= 0) seq_len = std::min<int64_t>(model.config().max_position_embeddings, 1024);
  LR_CHECK(seq_len >= 2, InvalidArgument, "perplexity: --seq-len must be >= 2, got ", seq_len);
  const int64_t stride = options.stride > 0 ? options.stride : std::max<int64_t>(1, seq_len / 2);
  LR_CHECK(stride <= seq_len, InvalidArgument, "perplexity: --stride ", stride, " exceeds --seq-len ",
           seq_len);
  LR_CHECK(options.batch_size >= 1, InvalidArgument, "perplexity: batch size must be >= 1");
  const int64_t n = tokens.size(0);
  const at::Tensor ids = tokens.to(at::kLong).contiguous();

  // The windows: [begin, end) with the last `score` tokens scored.
  struct Window {
    int64_t begin, end, score;
  };
  std::vector<Window> windows;
  for (int64_t begin = 0, prev_end = 0; begin < n; begin += stride) {
    const int64_t end = std::min(begin + seq_len, n);
    // The first token of the stream has no context and is never scored.
    const int64_t score = std::min(end - prev_end, end - begin - 1);
    if (score > 0) windows.push_back({begin, end, score});
    prev_end = end;
    if (end == n) break;
  }

  c10::InferenceMode guard;
  std::vector<double> chunk_nll;
  double total = 0;
  int64_t scored = 0;
  ProgressBar bar(static_cast<int64_t>(windows.size()), "perplexity");
  if (!options.progress) bar.finish();
  for (size_t w = 0; w < windows.size();) {
    // Batch windows of the same length (all but the last are seq_len long).
    const int64_t len = windows[w].end - windows[w].begin;
    std::vector<at::Tensor> rows;
    size_t first = w;
    while (w < windows.size() && static_cast<int64_t>(rows.size()) < options.batch_size &&
           windows[w].end - windows[w].begin == len) {
      rows.push_back(ids.slice(0, windows[w].begin, windows[w].end));
      ++w;
    }
    at::Tensor batch = at::stack(rows).to(model.device());                         // [B, len]
    at::Tensor logits = model.forward(batch.slice(1, 0, len - 1)).to(at::kFloat);  // [B, len-1, V]
    at::Tensor logp = at::log_softmax(logits, -1);
    at::Tensor nll = -logp.gather(-1, batch.slice(1, 1, len).unsqueeze(-1)).squeeze(-1).to(at::kDouble).cpu();
    for (size_t i = first; i < w; ++i) {
      // Target position j (1-based in the window) is predicted at logits row j - 1.
      const double sum = nll[static_cast<int64_t>(i - first)]
                             .slice(0, len - 1 - windows[i].score, len - 1)
                             .sum()
                             .item<double>();
      chunk_nll.push_back(sum / static_cast<double>(windows[i].score));
      total += sum;
      scored += windows[i].score;
    }
    if (options.progress) bar.advance(static_cast<int64_t>(w - first));
  }
  bar.finish();

  PerplexityResult r;
  r.tokens = scored;
  r.chunks = static_cast<int64_t>(chunk_nll.size());
  r.seq_len = seq_len;
  r.stride = stride;
  r.nll = total / static_cast<double>(scored);
  r.perplexity = std::exp(r.nll);
  double mean = 0;
  for (double c : chunk_nll) mean += c;
  mean /= static_cast<double>(chunk_nll.size());
  double var = 0;
  for (double c : chunk_nll) var += (c - mean) * (c - mean);
  const double k = static_cast<double>(chunk_nll.size());
  const double se = k > 1 ? std::sqrt(var / (k - 1) / k) : 0.0;
  r.ci_low = std::exp(mean - 1.96 * se);
  r.ci_high = std::exp(mean + 1.96 * se);
  return r;
}

at::Tensor load_eval_tokens(const std::filesystem::path& data, const std::filesystem::path& model_dir,
                            std::string_view split, int64_t max_tokens) {
  if (std::filesystem::is_directory(data)) {
    const data::TokenDataset dataset = data::TokenDataset::open(data);
    int64_t n = dataset.size(split);
    if (max_tokens > 0) n = std::min(n, max_tokens);
    return dataset.slice(split, 0, n);
  }
  const data::Tokenizer tokenizer = data::Tokenizer::load(model_dir / "tokenizer.json");
  const std::vector<int32_t> ids = tokenizer.encode(read_text_file(data));
  at::Tensor t = at::empty({static_cast<int64_t>(ids.size())}, at::kLong);
  for (size_t i = 0; i < ids.size(); ++i) t.data_ptr<int64_t>()[i] = ids[i];
  if (max_tokens > 0 && t.size(0) > max_tokens) t = t.slice(0, 0, max_tokens).clone();
  return t;
}

}  // namespace lowrank::train
