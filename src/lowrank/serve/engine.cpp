// The serving engine (ENGINE_IMPLEMENTED); see engine.h for the design and its references.
#include "lowrank/serve/engine.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <regex>
#include <utility>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/generate.h"
#include "lowrank/nn/model.h"

namespace lowrank::serve {

namespace {

constexpr std::array<double, 12> kTtftBuckets = {0.005, 0.01, 0.025, 0.05, 0.1,  0.25,
                                                 0.5,   1.0,  2.5,   5.0,  10.0, 30.0};
constexpr auto kRateWindow = std::chrono::seconds(10);

using Clock = std::chrono::steady_clock;

// Length of the longest suffix of `text` that is a proper prefix of some stop string: text that
// must be held back because the next token may complete a stop string.
size_t stop_prefix_suffix(std::string_view text, const std::vector<std::string>& stops) {
  size_t held = 0;
  for (const std::string& stop : stops)
    for (size_t n = std::min(stop.size() - 1, text.size()); n > held; --n)
      if (text.substr(text.size() - n) == std::string_view(stop).substr(0, n)) {
        held = n;
        break;
      }
  return held;
}

// The tokenizer decodes an incomplete UTF-8 sequence (a character split across tokens) to
// U+FFFD; hold such a tail back until the next token completes it.
size_t replacement_tail(std::string_view text) {
  constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  size_t held = 0;
  while (text.size() >= held + kReplacement.size() &&
         text.substr(text.size() - held - kReplacement.size(), kReplacement.size()) == kReplacement)
    held += kReplacement.size();
  return held;
}

void validate(const SamplingParams& s, const data::Tokenizer* tokenizer) {
  LR_CHECK(s.max_new_tokens >= 1, InvalidArgument, "max_tokens must be at least 1, got ", s.max_new_tokens);
  LR_CHECK(s.temperature >= 0 && std::isfinite(s.temperature), InvalidArgument,
           "temperature must be >= 0, got ", s.temperature);
  LR_CHECK(s.top_p > 0 && s.top_p <= 1, InvalidArgument, "top_p must be in (0, 1], got ", s.top_p);
  LR_CHECK(s.top_k >= 0, InvalidArgument, "top_k must be >= 0, got ", s.top_k);
  LR_CHECK(s.repetition_penalty > 0, InvalidArgument, "repetition_penalty must be > 0, got ",
           s.repetition_penalty);
  for (const std::string& stop : s.stop)
    LR_CHECK(!stop.empty(), InvalidArgument, "stop strings must not be empty");
  LR_CHECK(s.stop.empty() || tokenizer != nullptr, InvalidArgument,
           "stop strings need a tokenizer, and this engine has none");
}

// The model layer a slot belongs to ("model.layers.3.self_attn.q_proj" -> 3; -1 otherwise).
int64_t layer_of(const std::string& slot) {
  static const std::regex pattern(R"(layers\.(\d+)\.)");
  std::smatch m;
  return std::regex_search(slot, m, pattern) ? std::stoll(m[1].str()) : -1;
}

}  // namespace

std::span<const double> ttft_buckets() {
  return kTtftBuckets;
}

// ---------------------------------------------------------------------------------------------
// RequestStream

void RequestStream::push(StreamEvent event) {
  {
    std::lock_guard lock(mutex_);
    if (event.kind == StreamEvent::Kind::kFinish) finished_ = true;
    events_.push_back(std::move(event));
  }
  ready_.notify_all();
}

bool RequestStream::next(StreamEvent& event, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return false;
  event = std::move(events_.front());
  events_.pop_front();
  return true;
}

StreamEvent RequestStream::wait(std::string* text, std::vector<int64_t>* tokens) {
  StreamEvent event;
  while (true) {
    if (!next(event, std::chrono::milliseconds(1000))) continue;
    if (text) *text += event.text;
    if (event.kind == StreamEvent::Kind::kFinish) return event;
    if (tokens) tokens->push_back(event.token);
  }
}

bool RequestStream::finished() const {
  std::lock_guard lock(mutex_);
  return finished_;
}

// ---------------------------------------------------------------------------------------------
// Paged KV: per layer, keys and values of every page slot, [num_pages · page_tokens, n_kv, D].

struct Engine::PagedKV {
  int64_t page_tokens = 0;
  std::vector<at::Tensor> keys, values;
};

namespace {

// One model pass's view of the pool: B rows, each with its past length, its block table and its
// number of new positions (T = the largest). Rows with fewer new positions are left-padded (the
// attention mask marks the padding). Keys are laid out right-aligned (nn::KVStore): row b's
// position p is column p + S − start_b − new_b of the S = max_b (start_b + new_b) columns, and its
// new positions are its queries' last new_b columns of T.
class PagedStep final : public nn::KVStore {
 public:
  struct Row {
    int64_t start = 0;
    int64_t new_tokens = 1;
    const std::vector<int32_t>* block_table = nullptr;
  };

  PagedStep(std::vector<at::Tensor>& keys, std::vector<at::Tensor>& values, int64_t page_tokens,
            std::vector<Row> rows)
      : keys_(keys), values_(values), page_tokens_(page_tokens), rows_(std::move(rows)) {
    std::vector<int64_t> starts;
    for (const Row& r : rows_) {
      starts.push_back(r.start);
      T_ = std::max(T_, r.new_tokens);
      S_ = std::max(S_, r.start + r.new_tokens);
      ragged_ = ragged_ || r.start != rows_.front().start || r.new_tokens != rows_.front().new_tokens;
    }
    valid_count_ = on_device(at::tensor(starts, at::kLong));
  }

  int64_t batch() const override { return static_cast<int64_t>(rows_.size()); }
  int64_t num_layers() const override { return static_cast<int64_t>(keys_.size()); }
  int64_t length() const override { return S_ - T_; }
  bool has_padding() const override { return ragged_; }
  const at::Tensor& valid_count() const override { return valid_count_; }

  at::Tensor begin(int64_t T, const at::Tensor& /*valid: the same padding, from the rows*/) override {
    LR_CHECK(T == T_, InternalError, "paged KV: a step of ", T, " positions for rows of at most ", T_);
    const int64_t B = batch();
    std::vector<int64_t> write, new_rows;
    std::vector<int64_t> read(static_cast<size_t>(B * S_), 0);  // padding reads slot 0, masked
    std::vector<uint8_t> key_valid(static_cast<size_t>(B * S_), 0);
    for (int64_t b = 0; b < B; ++b) {
      const Row& r = rows_[static_cast<size_t>(b)];
      const int64_t offset = S_ - r.start - r.new_tokens;
      for (int64_t p = 0; p < r.start + r.new_tokens; ++p) {
        const auto page = static_cast<size_t>(p / page_tokens_);
        LR_CHECK(page < r.block_table->size(), InternalError, "paged KV: position ", p, " beyond the ",
                 r.block_table->size(), " pages of its block table");
        const int64_t slot = int64_t{(*r.block_table)[page]} * page_tokens_ + p % page_tokens_;
        read[static_cast<size_t>(b * S_ + offset + p)] = slot;
        key_valid[static_cast<size_t>(b * S_ + offset + p)] = 1;
        if (p >= r.start) {
          write.push_back(slot);
          new_rows.push_back(b * T_ + T_ - r.new_tokens + (p - r.start));
        }
      }
    }
    write_ = on_device(at::tensor(write, at::kLong));
    new_rows_ = ragged_ ? on_device(at::tensor(new_rows, at::kLong)) : at::Tensor();
    read_ = on_device(at::tensor(read, at::kLong));
    return on_device(at::tensor(key_valid, at::kByte).view({B, S_}).to(at::kBool));
  }

  std::pair<at::Tensor, at::Tensor> update(int64_t layer, const at::Tensor& k, const at::Tensor& v) override {
    const int64_t B = batch();
    const int64_t n_kv = k.size(1);
    const int64_t D = k.size(3);
    at::Tensor& K = keys_[static_cast<size_t>(layer)];
    at::Tensor& V = values_[static_cast<size_t>(layer)];
    // [B, n_kv, T, D] -> [B·T, n_kv, D]; the real (not padding) positions, in the order of write_.
    auto real = [&](const at::Tensor& x) {
      at::Tensor rows = x.transpose(1, 2).reshape({B * T_, n_kv, D});
      return new_rows_.defined() ? rows.index_select(0, new_rows_) : rows;
    };
    K.index_copy_(0, write_, real(k));
    V.index_copy_(0, write_, real(v));
    // Gather each row's past through its block table: [B·S, n_kv, D] -> [B, n_kv, S, D].
    return {K.index_select(0, read_).view({B, S_, n_kv, D}).transpose(1, 2),
            V.index_select(0, read_).view({B, S_, n_kv, D}).transpose(1, 2)};
  }

  void commit() override {}

 private:
  // Index and mask tensors live where the pool does (built on the host, copied once per pass).
  at::Tensor on_device(const at::Tensor& t) const { return t.to(keys_.front().device()); }

  std::vector<at::Tensor>& keys_;
  std::vector<at::Tensor>& values_;
  int64_t page_tokens_;
  std::vector<Row> rows_;
  int64_t T_ = 0;  // new positions of the longest row
  int64_t S_ = 0;  // key columns
  bool ragged_ = false;
  at::Tensor valid_count_, write_, read_, new_rows_;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// A request in flight.

struct Engine::Live {
  GenerationRequest request;
  std::shared_ptr<RequestStream> stream;
  nn::GenerateOptions options;  // the sampling subset select_next_tokens reads
  at::Generator generator;
  std::vector<int64_t> seen;  // prompt, then generated tokens
  std::vector<int32_t> generated;
  std::string text;     // the generated text decoded so far (up to a stop string)
  size_t released = 0;  // bytes of `text` sent
  // Incremental decoding: generated[prefix_offset, read_offset) is the context whose text already
  // ends `text`; `pending` is the text after it that ends in an incomplete character (U+FFFD).
  size_t prefix_offset = 0, read_offset = 0;
  std::string pending;
  bool stopped = false;  // a stop string was found: `text` is final
  Clock::time_point submitted;
  bool first_token = false;
};

Engine::Engine(std::shared_ptr<nn::Model> model, std::shared_ptr<const data::Tokenizer> tokenizer,
               std::vector<int64_t> eos_ids, EngineConfig config)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      eos_ids_(std::move(eos_ids)),
      config_(std::move(config)),
      kv_(std::make_unique<PagedKV>()),
      ttft_counts_(kTtftBuckets.size() + 1, 0) {
  LR_CHECK(model_ != nullptr, InvalidArgument, "serving engine: no model");
  LR_CHECK(config_.page_tokens >= 1, InvalidArgument, "page_tokens must be at least 1, got ",
           config_.page_tokens);
  LR_CHECK(config_.num_pages >= 0, InvalidArgument, "num_pages must be >= 0, got ", config_.num_pages);
  LR_CHECK(config_.max_prompt_tokens >= 0, InvalidArgument, "max_prompt_tokens must be >= 0, got ",
           config_.max_prompt_tokens);
  const nn::ModelConfig& mc = model_->config();
  const int64_t context = mc.max_position_embeddings;
  if (config_.max_prompt_tokens == 0 || config_.max_prompt_tokens > context)
    config_.max_prompt_tokens = context;
  const int64_t width = mc.kv_size();
  const int64_t elem = static_cast<int64_t>(c10::elementSize(model_->dtype()));
  const int64_t page_bytes = 2 * mc.num_hidden_layers * config_.page_tokens * width * elem;
  int64_t pages = config_.num_pages;
  if (pages == 0) {
    LR_CHECK(config_.pool_bytes >= page_bytes, InvalidArgument, "pool_bytes ", config_.pool_bytes,
             " holds no page of ", page_bytes, " bytes");
    pages = config_.pool_bytes / page_bytes;
  }
  config_.num_pages = pages;
  PoolConfig pool{
      .num_pages = pages, .page_tokens = config_.page_tokens, .hidden_size = width, .lora_modules = {}};
  scheduler_ = std::make_unique<Scheduler>(config_.scheduler, pool);
  kv_->page_tokens = config_.page_tokens;
  const auto options = at::TensorOptions().dtype(model_->dtype()).device(model_->device());
  for (int64_t l = 0; l < mc.num_hidden_layers; ++l) {
    kv_->keys.push_back(
        at::zeros({pages * config_.page_tokens, mc.num_key_value_heads, mc.head_dim}, options));
    kv_->values.push_back(
        at::zeros({pages * config_.page_tokens, mc.num_key_value_heads, mc.head_dim}, options));
  }
  next_seed_ = config_.seed;
}

Engine::~Engine() {
  try {
    shutdown(false);
  } catch (const std::exception& e) {
    log::warn("serving engine: shutdown failed: ", e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Adapters

namespace {

// Pages of the pool an adapter takes when resident (memory_pool.h): per layer, its A and B
// entries fill key and value slots of width H at the same indices, so a layer needs
// ⌈Σ its parameters / 2H⌉ slots; the adapter takes the largest layer's count in every layer.
int64_t adapter_pool_pages(const adapt::AttachedAdapter& adapter, int64_t width, int64_t page_tokens) {
  std::map<int64_t, int64_t> params;
  for (const auto& [slot, layer] : adapter.layers)
    for (const auto& [name, tensor] : layer->parameters()) params[layer_of(slot)] += tensor.numel();
  int64_t slots = 1;
  for (const auto& [layer, n] : params) slots = std::max(slots, (n + 2 * width - 1) / (2 * width));
  return (slots + page_tokens - 1) / page_tokens;
}

int64_t adapter_rank(const adapt::AdapterConfig& config) {
  int64_t r = config.r;
  for (const auto& [pattern, rank] : config.rank_pattern) r = std::max(r, rank);
  return r;
}

// Adapters whose modules_to_save replace whole modules cannot share a batch with others.
void check_batchable(const adapt::AttachedAdapter& adapter) {
  LR_CHECK(adapter.saved_modules.empty(), Unsupported, "adapter '", adapter.name,
           "' replaces whole modules (modules_to_save), which a batch mixing adapters cannot serve");
}

}  // namespace

void Engine::check_name_free(const std::string& name) const {
  LR_CHECK(!name.empty(), InvalidArgument, "an adapter name must not be empty (empty means the base model)");
  std::lock_guard lock(mutex_);
  LR_CHECK(!attached_.contains(name), InvalidArgument, "adapter '", name, "' is already loaded");
}

AdapterInfo Engine::load_adapter(const std::string& name, const std::filesystem::path& dir) {
  check_name_free(name);
  // The files are read and the layers built while steps go on (read_adapter only reads the
  // model); the model lock is held only to attach them. Saved modules would replace bases, which
  // concurrent reads of the slots must never see: they are refused first.
  adapt::AttachedAdapter prepared = adapt::read_adapter(*model_, dir, name);
  check_batchable(prepared);
  return attach_adapter(name, dir, [&](nn::Model& model) {
    adapt::attach_adapter(model, prepared);
    return std::move(prepared);
  });
}

AdapterInfo Engine::create_adapter(const std::string& name, const adapt::AdapterConfig& config,
                                   uint64_t seed) {
  return attach_adapter(name, {},
                        [&](nn::Model& model) { return adapt::create_adapter(model, name, config, seed); });
}

AdapterInfo Engine::attach_adapter(const std::string& name, const std::filesystem::path& dir,
                                   const std::function<adapt::AttachedAdapter(nn::Model&)>& attach) {
  std::lock_guard model_lock(model_mutex_);  // no step runs while slots change
  check_name_free(name);
  adapt::AttachedAdapter attached = attach(*model_);
  try {
    check_batchable(attached);
    AdapterInfo info{.name = name, .dir = dir, .rank = adapter_rank(attached.config)};
    const int64_t pages = adapter_pool_pages(attached, model_->config().kv_size(), config_.page_tokens);
    std::lock_guard lock(mutex_);
    scheduler_->adapters().register_adapter(name, info.rank, pages);
    attached_.emplace(name, std::make_pair(info, std::move(attached)));
    return info;
  } catch (...) {
    adapt::detach_adapter(*model_, attached);
    throw;
  }
}

void Engine::unload_adapter(const std::string& name) {
  std::lock_guard model_lock(model_mutex_);
  adapt::AttachedAdapter attached;
  {
    std::lock_guard lock(mutex_);
    auto it = attached_.find(name);
    LR_CHECK(it != attached_.end(), NotFound, "adapter '", name, "' is not loaded");
    scheduler_->adapters().unregister(name);  // throws "busy" while a running request pins it
    attached = std::move(it->second.second);
    attached_.erase(it);
  }
  adapt::detach_adapter(*model_, attached);
  work_.notify_all();  // waiting requests that named it are rejected at the next step
}

std::vector<AdapterInfo> Engine::adapters() const {
  std::lock_guard lock(mutex_);
  std::vector<AdapterInfo> out;
  for (const auto& [name, entry] : attached_) {
    AdapterInfo info = entry.first;
    info.resident = scheduler_->adapters().is_resident(name);
    info.pins = scheduler_->adapters().pin_count(name);
    out.push_back(std::move(info));
  }
  return out;
}

bool Engine::has_adapter(const std::string& name) const {
  std::lock_guard lock(mutex_);
  return attached_.contains(name);
}

// ---------------------------------------------------------------------------------------------
// Requests

SubmitResult Engine::submit(GenerationRequest request) {
  const nn::ModelConfig& mc = model_->config();
  const auto prompt_tokens = static_cast<int64_t>(request.prompt.size());
  LR_CHECK(prompt_tokens > 0, InvalidArgument, "the prompt is empty");
  for (int64_t id : request.prompt)
    LR_CHECK(id >= 0 && id < mc.vocab_size, InvalidArgument, "prompt token ", id,
             " is outside the vocabulary [0, ", mc.vocab_size, ")");
  validate(request.sampling, tokenizer_.get());
  LR_CHECK(prompt_tokens <= config_.max_prompt_tokens, InvalidArgument, "the prompt has ", prompt_tokens,
           " tokens; the limit is ", config_.max_prompt_tokens);
  LR_CHECK(prompt_tokens + request.sampling.max_new_tokens <= mc.max_position_embeddings, InvalidArgument,
           "prompt (", prompt_tokens, " tokens) + max_tokens (", request.sampling.max_new_tokens,
           ") exceeds the model's context of ", mc.max_position_embeddings, " tokens");

  std::unique_lock lock(mutex_);
  SubmitResult result;
  if (stopping_) {
    result.queue_full = true;
    return result;
  }
  const RequestId id = next_id_;
  Request scheduled{.id = id,
                    .adapter = request.adapter,
                    .prompt_tokens = prompt_tokens,
                    .max_new_tokens = request.sampling.max_new_tokens};
  if (!scheduler_->submit(scheduled)) {
    result.queue_full = true;
    // A hint: the time the running batch needs to free a slot, at least a second.
    result.retry_after_s = 1;
    return result;
  }
  ++next_id_;
  auto live = std::make_unique<Live>();
  const SamplingParams& s = request.sampling;
  live->options.do_sample = s.temperature > 0;
  live->options.temperature = s.temperature > 0 ? s.temperature : 1.0;
  live->options.top_k = s.top_k;
  live->options.top_p = s.top_p;
  live->options.repetition_penalty = s.repetition_penalty;
  live->generator = at::detail::createCPUGenerator(s.seed ? *s.seed : next_seed_++);
  live->seen = request.prompt;
  live->submitted = Clock::now();
  live->stream = std::make_shared<RequestStream>(id);
  live->request = std::move(request);
  result.stream = live->stream;
  lives_.emplace(id, std::move(live));
  lock.unlock();
  work_.notify_all();
  return result;
}

bool Engine::cancel(RequestId id) {
  std::lock_guard lock(mutex_);
  if (!scheduler_->cancel(id)) return false;
  deliver_finished();  // a waiting one (or a running one between steps) leaves now
  work_.notify_all();
  return true;
}

void Engine::deliver_finished() {
  for (const FinishedRequest& f : scheduler_->take_finished()) {
    auto it = lives_.find(f.id);
    if (it == lives_.end()) continue;
    Live& live = *it->second;
    StreamEvent event;
    event.kind = StreamEvent::Kind::kFinish;
    event.finish = f.reason;
    event.message = f.message;
    event.prompt_tokens = static_cast<int64_t>(live.request.prompt.size());
    event.completion_tokens = static_cast<int64_t>(live.generated.size());
    // Whatever was held back, with an incomplete last character as U+FFFD (as decode gives it).
    event.text = live.text.substr(live.released) + (live.stopped ? std::string() : live.pending);
    live.stream->push(std::move(event));
    lives_.erase(it);
  }
}

// ---------------------------------------------------------------------------------------------
// Steps

bool Engine::step() {
  std::unique_lock lock(mutex_);
  deliver_finished();
  StepPlan plan = scheduler_->next_step();
  if (plan.empty()) {
    deliver_finished();  // requests rejected at the head of the queue
    return false;
  }
  lock.unlock();
  std::vector<StepResult> results;
  try {
    std::lock_guard model_lock(model_mutex_);
    run_plan(plan, results);
  } catch (const std::exception& e) {
    // A failed model pass must not wedge the engine: its requests leave as cancelled.
    log::warn("serving engine: step ", plan.step, " failed: ", e.what());
    results.clear();
    for (const ScheduledRequest& r : plan.requests)
      results.push_back({.id = r.id, .new_tokens = r.samples ? 1 : 0, .finish = FinishReason::kCancelled});
  }
  lock.lock();
  scheduler_->complete_step(results);
  deliver_finished();
  return true;
}

void Engine::run_plan(const StepPlan& plan, std::vector<StepResult>& results) {
  c10::InferenceMode inference;
  std::vector<Live*> lives;
  {
    std::lock_guard lock(mutex_);
    for (const ScheduledRequest& r : plan.requests) lives.push_back(lives_.at(r.id).get());
  }
  // Two passes at most: every decode row together ([B, 1]), then every prompt chunk together
  // (left-padded to the longest chunk). Within each, rows are sorted by adapter, so that each
  // adapter's rows form one segment of the LoRA products.
  std::vector<size_t> decodes, prefills;
  for (size_t i = 0; i < plan.requests.size(); ++i)
    (plan.requests[i].prefill ? prefills : decodes).push_back(i);
  for (std::vector<size_t>* pass : {&decodes, &prefills})
    std::stable_sort(pass->begin(), pass->end(),
                     [&](size_t a, size_t b) { return plan.requests[a].adapter < plan.requests[b].adapter; });

  results.assign(plan.requests.size(), {});
  for (size_t i = 0; i < plan.requests.size(); ++i) results[i].id = plan.requests[i].id;
  int64_t prefilled = 0;
  for (const std::vector<size_t>* pass : {&decodes, &prefills}) {
    if (pass->empty()) continue;
    const auto B = static_cast<int64_t>(pass->size());
    int64_t T = 0;
    for (size_t i : *pass) T = std::max(T, plan.requests[i].num_tokens);
    at::Tensor ids = at::zeros({B, T}, at::kLong);
    at::Tensor mask = at::ones({B, T}, at::kLong);
    int64_t* id_data = ids.data_ptr<int64_t>();
    int64_t* mask_data = mask.data_ptr<int64_t>();
    std::vector<PagedStep::Row> rows;
    nn::AdapterRouting routing;
    for (int64_t b = 0; b < B; ++b) {
      const ScheduledRequest& r = plan.requests[(*pass)[static_cast<size_t>(b)]];
      const Live& live = *lives[(*pass)[static_cast<size_t>(b)]];
      const int64_t pad = T - r.num_tokens;
      std::fill_n(mask_data + b * T, pad, 0);
      if (r.prefill) {
        std::copy_n(live.request.prompt.begin() + r.start, r.num_tokens, id_data + b * T + pad);
        prefilled += r.num_tokens;
      } else {
        id_data[b * T + pad] = live.seen.back();
      }
      rows.push_back({.start = r.start, .new_tokens = r.num_tokens, .block_table = &r.block_table});
      int64_t adapter = -1;
      if (!r.adapter.empty()) {
        auto it = std::find(routing.adapters.begin(), routing.adapters.end(), r.adapter);
        adapter = it - routing.adapters.begin();
        if (it == routing.adapters.end()) routing.adapters.push_back(r.adapter);
      }
      routing.row_adapter.push_back(adapter);
    }
    PagedStep kv(kv_->keys, kv_->values, kv_->page_tokens, std::move(rows));
    nn::ForwardOptions forward;
    forward.cache = &kv;
    if (kv.has_padding() && T > 1) forward.attention_mask = mask;  // chunks of different lengths
    forward.last_position_only = true;  // every row's last column is real (right-aligned)
    forward.routing = &routing;         // always: without it every attached adapter would apply to every row
    const at::Tensor logits = model_->forward(ids, forward).select(1, 0).to(at::kFloat).cpu();
    for (int64_t b = 0; b < B; ++b) {
      const size_t i = (*pass)[static_cast<size_t>(b)];
      if (!plan.requests[i].samples) continue;
      Live& live = *lives[i];
      at::Tensor scores = logits.narrow(0, b, 1).clone();
      // Only the repetition penalty reads the history (in place, not copied).
      const std::span<const std::vector<int64_t>> seen = live.options.repetition_penalty != 1.0
                                                             ? std::span(&live.seen, 1)
                                                             : std::span<const std::vector<int64_t>>();
      const int64_t token =
          nn::select_next_tokens(scores, seen, live.options, live.generator).item<int64_t>();
      results[i].new_tokens = 1;
      results[i].finish = accept_token(live, token);
    }
  }
  std::lock_guard lock(mutex_);
  prompt_tokens_ += prefilled;
  int64_t generated = 0;
  for (const StepResult& r : results) generated += r.new_tokens;
  const auto now = Clock::now();
  recent_tokens_.emplace_back(now, generated);
  while (!recent_tokens_.empty() && now - recent_tokens_.front().first > kRateWindow)
    recent_tokens_.pop_front();
}

FinishReason Engine::accept_token(Live& live, int64_t token) {
  const auto now = Clock::now();
  if (!live.first_token) {
    live.first_token = true;
    const double ttft = std::chrono::duration<double>(now - live.submitted).count();
    std::lock_guard lock(mutex_);
    const auto bucket =
        std::lower_bound(kTtftBuckets.begin(), kTtftBuckets.end(), ttft) - kTtftBuckets.begin();
    ++ttft_counts_[static_cast<size_t>(bucket)];
    ttft_sum_ += ttft;
    ++ttft_count_;
  }
  live.seen.push_back(token);
  live.generated.push_back(static_cast<int32_t>(token));
  const SamplingParams& s = live.request.sampling;
  const bool stop_token =
      (!s.ignore_eos && std::find(eos_ids_.begin(), eos_ids_.end(), token) != eos_ids_.end()) ||
      std::find(s.stop_token_ids.begin(), s.stop_token_ids.end(), token) != s.stop_token_ids.end();
  StreamEvent event;
  event.token = token;
  if (tokenizer_ && !live.stopped) {
    // Incremental decoding (as vLLM's detokenize_incrementally), so that a token costs the same
    // however long the text is: decode the context tokens and the tokens after them, and append
    // what the latter add. The offsets advance only past text that ends in a whole character and
    // is not empty, so the context starts on a character boundary and decoding it alone gives the
    // text it has within the whole (the decoders are per-token byte or word concatenations).
    const size_t searched = live.text.size();
    const std::span<const int32_t> ids(live.generated);
    const std::string context = tokenizer_->decode(
        ids.subspan(live.prefix_offset, live.read_offset - live.prefix_offset), /*skip_special_tokens=*/true);
    std::string window = tokenizer_->decode(ids.subspan(live.prefix_offset), /*skip_special_tokens=*/true);
    LR_CHECK(window.starts_with(context), Corruption, "incremental decoding: the text of tokens [",
             live.prefix_offset, ", ", live.read_offset, ") is not a prefix of the text of tokens [",
             live.prefix_offset, ", ", ids.size(), ")");
    std::string added = window.substr(context.size());
    if (replacement_tail(added) > 0 && !stop_token) {
      live.pending = std::move(added);
    } else if (!added.empty()) {
      live.text += added;
      live.pending.clear();
      live.prefix_offset = live.read_offset;
      live.read_offset = ids.size();
    }
    size_t end = live.text.size();
    size_t found = std::string::npos;
    for (const std::string& stop : s.stop)  // a new match ends in the appended text
      found = std::min(found, live.text.find(stop, searched >= stop.size() ? searched - stop.size() + 1 : 0));
    if (found != std::string::npos) {
      live.text.resize(found);  // OpenAI: the stop string is not part of the text
      live.stopped = true;
      end = found;
    } else if (!stop_token) {
      end -= stop_prefix_suffix(live.text, s.stop);
    }
    if (end > live.released) {
      event.text = live.text.substr(live.released, end - live.released);
      live.released = end;
    }
  }
  live.stream->push(std::move(event));
  return stop_token || live.stopped ? FinishReason::kStop : FinishReason::kNone;
}

void Engine::run_until_idle() {
  while (true) {
    {
      std::lock_guard lock(mutex_);
      if (scheduler_->idle()) {
        deliver_finished();
        return;
      }
    }
    step();
  }
}

void Engine::start() {
  std::lock_guard lock(mutex_);
  LR_CHECK(!thread_.joinable(), InvalidArgument, "serving engine: already started");
  LR_CHECK(!stopping_, InvalidArgument, "serving engine: already shut down");
  thread_ = std::thread([this] { loop(); });
}

void Engine::loop() {
  while (true) {
    {
      std::unique_lock lock(mutex_);
      work_.wait(lock, [&] { return stopping_ || !scheduler_->idle(); });
      if (stopping_ && (!draining_ || scheduler_->idle())) return;
    }
    step();
  }
}

void Engine::shutdown(bool drain) {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    draining_ = drain;
    if (!drain) {
      std::vector<RequestId> ids;
      for (const auto& [id, live] : lives_) ids.push_back(id);
      for (RequestId id : ids) scheduler_->cancel(id);
      deliver_finished();
    }
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (drain) run_until_idle();  // without a thread, drain on the caller's
  std::lock_guard lock(mutex_);
  deliver_finished();
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mutex_);
  EngineStats s;
  s.scheduler = scheduler_->stats();
  s.adapters_loaded = static_cast<int64_t>(attached_.size());
  s.prompt_tokens = prompt_tokens_;
  int64_t recent = 0;
  for (const auto& [time, n] : recent_tokens_) recent += n;
  if (!recent_tokens_.empty()) {
    const double span =
        std::max(1.0, std::chrono::duration<double>(Clock::now() - recent_tokens_.front().first).count());
    s.tokens_per_second = static_cast<double>(recent) / span;
  }
  s.ttft_bounds.assign(kTtftBuckets.begin(), kTtftBuckets.end());
  int64_t cumulative = 0;
  for (int64_t n : ttft_counts_) s.ttft_counts.push_back(cumulative += n);
  s.ttft_sum = ttft_sum_;
  s.ttft_count = ttft_count_;
  return s;
}

}  // namespace lowrank::serve
