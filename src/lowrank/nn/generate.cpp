// Generation loop and logits processors; see generate.h for the semantics and references.
#include "lowrank/nn/generate.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <algorithm>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"

namespace lowrank::nn {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void validate(const GenerateOptions& o) {
  LR_CHECK(o.max_new_tokens >= 0, InvalidArgument, "max_new_tokens must be >= 0, got ", o.max_new_tokens);
  LR_CHECK(o.repetition_penalty > 0, InvalidArgument, "repetition_penalty must be > 0, got ",
           o.repetition_penalty);
  if (o.do_sample) {
    LR_CHECK(o.temperature > 0, InvalidArgument, "temperature must be > 0 when sampling, got ",
             o.temperature);
    LR_CHECK(o.top_k >= 0, InvalidArgument, "top_k must be >= 0, got ", o.top_k);
    LR_CHECK(o.top_p > 0 && o.top_p <= 1, InvalidArgument, "top_p must be in (0, 1], got ", o.top_p);
  }
}

}  // namespace

void apply_repetition_penalty(at::Tensor& scores, std::span<const std::vector<int64_t>> seen,
                              double penalty) {
  if (penalty == 1.0) return;
  for (size_t b = 0; b < seen.size(); ++b) {
    if (seen[b].empty()) continue;
    // As RepetitionPenaltyLogitsProcessor: gather the score of every id seen, penalise, scatter
    // back (torch.where(score < 0, score * penalty, score / penalty)). A repeated id reads the
    // same score and writes the same value, so neither a sort nor a copy of the history is needed.
    const at::Tensor idx = at::from_blob(const_cast<int64_t*>(seen[b].data()),
                                         {static_cast<int64_t>(seen[b].size())}, at::kLong);
    at::Tensor row = scores[static_cast<int64_t>(b)];
    const at::Tensor s = row.index_select(0, idx);
    row.index_copy_(0, idx, at::where(s.lt(0), s.mul(penalty), s.div(penalty)));
  }
}

void apply_top_k(at::Tensor& scores, int64_t top_k) {
  // TopKLogitsWarper: remove scores below the k-th largest (ties at the threshold survive).
  const int64_t k = std::min(std::max<int64_t>(top_k, 1), scores.size(-1));
  const at::Tensor kth = std::get<0>(at::topk(scores, k, -1)).narrow(-1, k - 1, 1);
  scores.masked_fill_(scores.lt(kth), kNegInf);
}

void apply_top_p(at::Tensor& scores, double top_p) {
  // TopPLogitsWarper: sort ascending, drop the prefix whose cumulative probability is
  // <= 1 - top_p, always keep the largest (min_tokens_to_keep = 1).
  auto [sorted, order] = at::sort(scores, /*dim=*/-1, /*descending=*/false);
  const at::Tensor cumulative = sorted.softmax(-1).cumsum(-1);
  at::Tensor remove = cumulative.le(1 - top_p);
  remove.narrow(-1, remove.size(-1) - 1, 1).fill_(false);
  const at::Tensor remove_by_token = remove.scatter(-1, order, remove);
  scores.masked_fill_(remove_by_token, kNegInf);
}

at::Tensor select_next_tokens(at::Tensor scores, std::span<const std::vector<int64_t>> seen,
                              const GenerateOptions& options, at::Generator& generator) {
  apply_repetition_penalty(scores, seen, options.repetition_penalty);
  if (!options.do_sample) return scores.argmax(-1);
  if (options.temperature != 1.0) scores.div_(options.temperature);
  if (options.top_k > 0) apply_top_k(scores, options.top_k);
  if (options.top_p < 1.0) apply_top_p(scores, options.top_p);
  return at::multinomial(scores.softmax(-1), 1, /*replacement=*/false, generator).squeeze(1);
}

std::vector<Generation> generate(const Model& model, const std::vector<std::vector<int64_t>>& prompts,
                                 const GenerateOptions& options) {
  validate(options);
  LR_CHECK(!prompts.empty(), InvalidArgument, "generate: no prompts");
  const int64_t B = static_cast<int64_t>(prompts.size());
  int64_t L = 0;
  for (size_t b = 0; b < prompts.size(); ++b) {
    LR_CHECK(!prompts[b].empty(), InvalidArgument, "generate: prompt ", b, " is empty");
    L = std::max<int64_t>(L, static_cast<int64_t>(prompts[b].size()));
  }
  std::vector<Generation> out(prompts.size());
  if (options.max_new_tokens == 0) return out;
  // One text stream per row: text, stop strings, stop tokens and the token limit. Built before any
  // model pass, so that bad stop strings fail fast.
  std::vector<data::TextStream> streams;
  for (size_t b = 0; b < prompts.size(); ++b)
    streams.emplace_back(options.decode, data::TextStreamOptions{.stop = options.stop_strings,
                                                                 .stop_token_ids = options.stop_token_ids,
                                                                 .max_tokens = options.max_new_tokens});
  auto release = [&](size_t row, std::string text) {
    if (text.empty()) return;
    if (options.on_text) options.on_text(row, text);
    out[row].text += text;
  };

  c10::InferenceMode inference;
  // Left padding: row b's prompt occupies the last prompts[b].size() columns.
  at::Tensor ids = at::full({B, L}, options.pad_token_id, at::kLong);
  at::Tensor mask = at::zeros({B, L}, at::kLong);
  bool padded = false;
  for (int64_t b = 0; b < B; ++b) {
    const auto& p = prompts[b];
    const int64_t n = static_cast<int64_t>(p.size());
    ids[b].narrow(0, L - n, n).copy_(at::tensor(p, at::kLong));
    mask[b].narrow(0, L - n, n).fill_(1);
    padded = padded || n < L;
  }
  KVCache cache = model.new_cache(B, L + options.max_new_tokens);
  ForwardOptions forward;
  forward.cache = &cache;
  forward.last_position_only = true;
  forward.fused_decode =
      options.fused_decode == FusedDecode::kRequire ? FusedDecode::kAuto : options.fused_decode;
  if (padded) forward.attention_mask = mask;
  at::Tensor logits = model.forward(ids, forward);

  std::vector<std::vector<int64_t>> seen(prompts);
  std::vector<bool> running(prompts.size(), true);
  at::Generator generator = at::detail::createCPUGenerator(options.seed);
  forward.attention_mask = at::Tensor();
  forward.fused_decode = options.fused_decode;

  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    at::Tensor scores = logits.select(1, 0).to(at::kCPU).to(at::kFloat).contiguous();
    const at::Tensor next = select_next_tokens(scores, seen, options, generator).contiguous();
    const int64_t* chosen = next.data_ptr<int64_t>();
    bool any_running = false;
    for (size_t b = 0; b < prompts.size(); ++b) {
      if (!running[b]) continue;
      const int64_t token = chosen[b];
      Generation& g = out[b];
      g.tokens.push_back(token);
      seen[b].push_back(token);
      data::TextStream& stream = streams[b];
      std::string text = stream.push(token);
      if (options.on_token && !options.on_token(b, token)) text += stream.end(FinishReason::kCancelled);
      release(b, std::move(text));
      g.finish_reason = stream.finished() ? stream.finish() : FinishReason::kLength;
      running[b] = !stream.finished();
      any_running = any_running || running[b];
    }
    if (!any_running || step + 1 == options.max_new_tokens) break;
    // Stopped rows keep feeding the pad id; their outputs are final and ignored.
    at::Tensor step_ids = at::full({B, 1}, options.pad_token_id, at::kLong);
    for (int64_t b = 0; b < B; ++b)
      if (running[b]) step_ids[b][0] = chosen[b];
    logits = model.forward(step_ids, forward);
  }
  return out;
}

std::vector<int64_t> default_stop_token_ids(const std::filesystem::path& model_dir,
                                            const ModelConfig& config) {
  const std::filesystem::path path = model_dir / "generation_config.json";
  std::error_code ec;
  if (std::filesystem::is_regular_file(path, ec)) {
    const Json j = read_json_file(path);
    if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
      std::vector<int64_t> ids;
      auto take = [&](const Json& v) {
        LR_CHECK(v.is_number_integer(), InvalidArgument, path.string(),
                 ": key \"eos_token_id\" must be an integer ", "or a list of integers, got ", v.dump());
        ids.push_back(v.get<int64_t>());
      };
      if (it->is_array()) {
        for (const Json& v : *it) take(v);
      } else {
        take(*it);
      }
      return ids;
    }
  }
  return config.eos_token_ids;
}

}  // namespace lowrank::nn
