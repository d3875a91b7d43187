// Sliding-window perplexity (Hugging Face's strided method) with a confidence interval over
// documents or windows; see perplexity.h.
#include "lowrank/eval/perplexity.h"

#include <algorithm>
#include <cmath>
#include <tuple>
#include <vector>

#include <c10/core/InferenceMode.h>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/progress.h"
#include "lowrank/data/token_dataset.h"
#include "lowrank/data/tokenizer.h"

namespace lowrank::eval {

OrderedJson PerplexityResult::to_json() const {
  return OrderedJson{
      {"perplexity", perplexity}, {"nll", nll},       {"ci95", {ci_low, ci_high}}, {"ci_unit", ci_unit},
      {"ci_samples", ci_samples}, {"tokens", tokens}, {"chunks", chunks},          {"seq_len", seq_len},
      {"stride", stride}};
}

std::pair<double, double> perplexity_interval95(std::span<const double> nll_sums,
                                                std::span<const int64_t> tokens) {
  LR_CHECK(!nll_sums.empty() && nll_sums.size() == tokens.size(), InvalidArgument,
           "perplexity interval: need as many token counts as NLL sums (got ", nll_sums.size(), " and ",
           tokens.size(), ")");
  double total = 0, count = 0;
  for (size_t u = 0; u < nll_sums.size(); ++u) {
    LR_CHECK(tokens[u] > 0, InvalidArgument, "perplexity interval: unit ", u, " has no scored tokens");
    total += nll_sums[u];
    count += static_cast<double>(tokens[u]);
  }
  const double r = total / count;
  const double k = static_cast<double>(nll_sums.size());
  double residuals = 0;
  for (size_t u = 0; u < nll_sums.size(); ++u) {
    const double e = nll_sums[u] - r * static_cast<double>(tokens[u]);
    residuals += e * e;
  }
  const double se = k > 1 ? std::sqrt(k / (k - 1) * residuals) / count : 0.0;
  return {std::exp(r - 1.96 * se), std::exp(r + 1.96 * se)};
}

std::vector<int64_t> document_starts_below(std::span<const int64_t> starts, int64_t n) {
  std::vector<int64_t> out;
  for (int64_t s : starts)
    if (s < n) out.push_back(s);
  return out;
}

PerplexityResult perplexity(const nn::Model& model, const at::Tensor& tokens,
                            const PerplexityOptions& options, std::span<const int64_t> document_starts) {
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
  for (size_t d = 0; d < document_starts.size(); ++d)
    LR_CHECK((d == 0 ? document_starts[0] == 0 : document_starts[d] >= document_starts[d - 1]) &&
                 document_starts[d] < n,
             InvalidArgument, "perplexity: document start ", d, " is ", document_starts[d],
             "; starts must begin at 0, not decrease and stay below the ", n, " tokens");

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
  // NLL sums and scored tokens per window and per document.
  std::vector<double> window_nll, doc_nll(document_starts.size(), 0.0);
  std::vector<int64_t> window_tokens, doc_tokens(document_starts.size(), 0);
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
    const at::Tensor nll =
        -logp.gather(-1, batch.slice(1, 1, len).unsqueeze(-1)).squeeze(-1).to(at::kDouble).cpu().contiguous();
    const auto rows_nll = nll.accessor<double, 2>();
    for (size_t i = first; i < w; ++i) {
      const Window& win = windows[i];
      // The NLL of predicting stream positions [a, b): the token at position t is predicted at
      // logits row t - begin - 1 of its window.
      auto range_sum = [&](int64_t a, int64_t b) {
        double sum = 0;
        for (int64_t t = a; t < b; ++t) sum += rows_nll[static_cast<int64_t>(i - first)][t - win.begin - 1];
        return sum;
      };
      const int64_t a = win.end - win.score;
      window_nll.push_back(range_sum(a, win.end));
      window_tokens.push_back(win.score);
      if (document_starts.empty()) continue;
      // Split the scored positions at the document starts they cross.
      size_t d = static_cast<size_t>(std::upper_bound(document_starts.begin(), document_starts.end(), a) -
                                     document_starts.begin() - 1);
      for (int64_t lo = a; lo < win.end; ++d) {
        const int64_t hi =
            d + 1 < document_starts.size() ? std::min(document_starts[d + 1], win.end) : win.end;
        doc_nll[d] += range_sum(lo, hi);
        doc_tokens[d] += hi - lo;
        lo = hi;
      }
    }
    if (options.progress) bar.advance(static_cast<int64_t>(w - first));
  }
  bar.finish();

  PerplexityResult r;
  r.chunks = static_cast<int64_t>(window_nll.size());
  r.seq_len = seq_len;
  r.stride = stride;
  double total = 0;
  for (size_t i = 0; i < window_nll.size(); ++i) {
    total += window_nll[i];
    r.tokens += window_tokens[i];
  }
  r.nll = total / static_cast<double>(r.tokens);
  r.perplexity = std::exp(r.nll);

  // Documents without a scored token (an empty one, or a stream that starts with a one-token
  // document) carry no information; with fewer than two left, windows are the better units.
  std::vector<double> unit_nll;
  std::vector<int64_t> unit_tokens;
  for (size_t d = 0; d < doc_nll.size(); ++d) {
    if (doc_tokens[d] == 0) continue;
    unit_nll.push_back(doc_nll[d]);
    unit_tokens.push_back(doc_tokens[d]);
  }
  if (unit_nll.size() >= 2) {
    r.ci_unit = "document";
  } else {
    r.ci_unit = "window";
    unit_nll = window_nll;
    unit_tokens = window_tokens;
  }
  r.ci_samples = static_cast<int64_t>(unit_nll.size());
  std::tie(r.ci_low, r.ci_high) = perplexity_interval95(unit_nll, unit_tokens);
  return r;
}

std::optional<PerplexityResult> split_perplexity(const nn::Model& model, const data::TokenDataset& dataset,
                                                 std::string_view split, int64_t max_tokens,
                                                 int64_t seq_len) {
  const int64_t n = std::min<int64_t>(dataset.size(split), max_tokens);
  if (n < 2) return std::nullopt;
  PerplexityOptions options;
  options.seq_len = seq_len;
  options.stride = seq_len;
  return perplexity(model, dataset.slice(split, 0, n), options,
                    document_starts_below(dataset.document_starts(split), n));
}

EvalTokens load_eval_tokens(const std::filesystem::path& data, const std::filesystem::path& model_dir,
                            std::string_view split, int64_t max_tokens) {
  if (std::filesystem::is_directory(data)) {
    const data::TokenDataset dataset = data::TokenDataset::open(data);
    int64_t n = dataset.size(split);
    if (max_tokens > 0) n = std::min(n, max_tokens);
    return {dataset.slice(split, 0, n), document_starts_below(dataset.document_starts(split), n)};
  }
  const data::Tokenizer tokenizer = data::Tokenizer::load(model_dir / "tokenizer.json");
  const std::vector<int32_t> ids = tokenizer.encode(read_text_file(data));
  at::Tensor t = at::empty({static_cast<int64_t>(ids.size())}, at::kLong);
  for (size_t i = 0; i < ids.size(); ++i) t.data_ptr<int64_t>()[i] = ids[i];
  if (max_tokens > 0 && t.size(0) > max_tokens) t = t.slice(0, 0, max_tokens).clone();
  return {t, {}};
}

}  // namespace lowrank::eval
