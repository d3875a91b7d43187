// The serving engine: requests, steps and their results (see engine.h for the design and its
// references). The adapter registry is in engine_adapters.cpp, the paged KV cache in paged_kv.cpp.
#include "lowrank/serve/engine.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include <c10/core/InferenceMode.h>

#include "lowrank/core/error.h"
#include "lowrank/core/log.h"
#include "lowrank/core/threads.h"
#include "lowrank/data/text_stream.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/generate.h"
#include "lowrank/nn/model.h"
#include "lowrank/nn/token_mixer.h"
#include "lowrank/serve/paged_kv.h"

namespace lowrank::serve {

using Clock = std::chrono::steady_clock;

std::optional<SamplingViolation> sampling_violation(const SamplingParams& s) {
  auto violation = [](std::string param, std::string message) {
    return std::optional<SamplingViolation>({std::move(param), std::move(message)});
  };
  if (s.max_new_tokens < 1)
    return violation("max_tokens", str("'max_tokens' must be at least 1, got ", s.max_new_tokens));
  if (!(s.temperature >= 0 && s.temperature <= 2))
    return violation("temperature", str("'temperature' must be in [0, 2], got ", s.temperature));
  if (!(s.top_p > 0 && s.top_p <= 1))
    return violation("top_p", str("'top_p' must be in (0, 1], got ", s.top_p));
  if (s.top_k < 0) return violation("top_k", str("'top_k' must be >= 0 (or -1: off), got ", s.top_k));
  if (!(s.repetition_penalty > 0 && std::isfinite(s.repetition_penalty)))
    return violation("repetition_penalty",
                     str("'repetition_penalty' must be > 0, got ", s.repetition_penalty));
  for (const std::string& stop : s.stop)
    if (stop.empty()) return violation("stop", "'stop' strings must not be empty");
  for (const auto& [key, value] : {std::pair{"presence_penalty", s.presence_penalty},
                                   std::pair{"frequency_penalty", s.frequency_penalty}})
    if (!(value >= -2 && value <= 2))
      return violation(key, str("'", key, "' must be in [-2, 2], got ", value));
  for (const auto& [id, bias] : s.logit_bias)
    if (!(bias >= -100 && bias <= 100))
      return violation("logit_bias",
                       str("'logit_bias' values must be in [-100, 100], got ", bias, " for token ", id));
  if (s.min_tokens < 0 || s.min_tokens > s.max_new_tokens)
    return violation("min_tokens", str("'min_tokens' must be in [0, max_tokens = ", s.max_new_tokens,
                                       "], got ", s.min_tokens));
  for (const auto& [key, value] :
       {std::pair{"logprobs", s.logprobs}, std::pair{"prompt_logprobs", s.prompt_logprobs}})
    if (value < -1 || value > kMaxLogprobs)
      return violation(key, str("'", key, "' must be in [0, ", kMaxLogprobs, "], got ", value));
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// A request in flight.

struct Engine::Live {
  explicit Live(data::TextStream text_stream) : text(std::move(text_stream)) {}

  GenerationRequest request;
  std::shared_ptr<RequestStream> stream;
  std::optional<RequestSampler> sampler;  // logits processing and the draw (sampler.h)
  std::vector<int64_t> seen;              // prompt, then generated tokens (the repetition penalty's history)
  std::vector<LogprobEntry> prompt_logprobs;  // filled during prefill when asked for
  data::TextStream text;  // the generated tokens, their text, stop strings and stop tokens
  Clock::time_point submitted;
  std::optional<Clock::time_point> deadline;   // EngineConfig::request_timeout
  std::optional<Clock::time_point> scheduled;  // its first step
  std::optional<Clock::time_point> first_token_at;
  bool first_token = false;
  EndedBy ended_by = EndedBy::kRequest;  // set when the engine ends it (end_overdue)
};

Engine::Engine(std::shared_ptr<nn::Model> model, std::shared_ptr<const data::Tokenizer> tokenizer,
               std::vector<int64_t> eos_ids, EngineConfig config)
    : model_(std::move(model)),
      tokenizer_(std::move(tokenizer)),
      eos_ids_(std::move(eos_ids)),
      config_(std::move(config)) {
  LR_CHECK(model_ != nullptr, InvalidArgument, "serving engine: no model");
  // The paged store holds keys and values only; a layer that decodes through another state (a
  // recurrence, running sums) has nowhere to keep it, so such a model is refused before any page
  // is allocated. nn::generate decodes it.
  for (int64_t i = 0; i < model_->config().num_hidden_layers; ++i) {
    const nn::TokenMixer& mixer = model_->mixer(i);
    LR_CHECK(mixer.uses_kv_store(), Unsupported, "serve: layer ", i, "'s mixer ", mixer.name(),
             mixer.has_decode_state() ? " keeps a recurrent state" : " keeps no KV store",
             "; the paged engine serves attention-only models");
  }
  LR_CHECK(config_.page_tokens >= 1, InvalidArgument, "page_tokens must be at least 1, got ",
           config_.page_tokens);
  LR_CHECK(config_.num_pages >= 0, InvalidArgument, "num_pages must be >= 0, got ", config_.num_pages);
  LR_CHECK(config_.max_prompt_tokens >= 0, InvalidArgument, "max_prompt_tokens must be >= 0, got ",
           config_.max_prompt_tokens);
  LR_CHECK(config_.request_timeout.count() >= 0, InvalidArgument, "request_timeout must be >= 0 ms, got ",
           config_.request_timeout.count());
  const nn::ModelConfig& mc = model_->config();
  const int64_t context = mc.max_position_embeddings;
  if (config_.max_prompt_tokens == 0 || config_.max_prompt_tokens > context)
    config_.max_prompt_tokens = context;
  const int64_t width = mc.kv_size();
  const int64_t elem = static_cast<int64_t>(c10::elementSize(model_->dtype()));
  // A page holds page_tokens positions of every layer's keys and values, at the widths the
  // attention stores (narrower under MatryoshkaKV, so a byte budget holds more pages).
  const std::vector<KVWidths> widths = stored_kv_widths(*model_);
  int64_t page_bytes = 0;
  for (const KVWidths& w : widths)
    page_bytes += config_.page_tokens * mc.num_key_value_heads * (w.key + w.value) * elem;
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
  pool_bytes_ = pages * page_bytes;
  kv_ =
      std::make_unique<PagedKV>(mc, pages, config_.page_tokens,
                                at::TensorOptions().dtype(model_->dtype()).device(model_->device()), widths);
  LR_CHECK(kv_->page_bytes() == page_bytes, InternalError, "serving engine: pages of ", kv_->page_bytes(),
           " bytes, ", page_bytes, " expected");
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
// Requests

void Engine::check_request(const GenerationRequest& request) const {
  const nn::ModelConfig& mc = model_->config();
  const auto prompt_tokens = static_cast<int64_t>(request.prompt.size());
  LR_CHECK(prompt_tokens > 0, InternalError, "serving engine: the prompt is empty");
  for (int64_t id : request.prompt)
    LR_CHECK(id >= 0 && id < mc.vocab_size, InternalError, "serving engine: prompt token ", id,
             " is outside the vocabulary [0, ", mc.vocab_size, ")");
  for (const auto& [id, bias] : request.sampling.logit_bias)
    LR_CHECK(id >= 0 && id < mc.vocab_size, InternalError, "serving engine: logit_bias token ", id,
             " is outside the vocabulary [0, ", mc.vocab_size, ")");
  if (const auto v = sampling_violation(request.sampling))
    throw InternalError(str("serving engine: a request with ", v->message));
  LR_CHECK(prompt_tokens <= config_.max_prompt_tokens, InternalError, "serving engine: the prompt has ",
           prompt_tokens, " tokens; the limit is ", config_.max_prompt_tokens);
  LR_CHECK(prompt_tokens + request.sampling.max_new_tokens <= mc.max_position_embeddings, InternalError,
           "serving engine: prompt (", prompt_tokens, " tokens) + max_tokens (",
           request.sampling.max_new_tokens, ") exceeds the model's context of ", mc.max_position_embeddings,
           " tokens");
}

SubmitResult Engine::submit(GenerationRequest request) {
  check_request(request);
  const SamplingParams& s = request.sampling;
  // No token limit here: the scheduler ends a request at max_new_tokens (kLength), and what the
  // stream still holds back then comes with the finish event (deliver_finished).
  data::TextStreamOptions text_options{.stop = s.stop, .stop_token_ids = s.stop_token_ids, .max_tokens = 0};
  if (!s.ignore_eos)
    text_options.stop_token_ids.insert(text_options.stop_token_ids.end(), eos_ids_.begin(), eos_ids_.end());
  const std::vector<int64_t> stop_ids = text_options.stop_token_ids;  // what min_tokens holds back
  // Throws for stop strings without a tokenizer, before anything is queued.
  data::TextStream text(tokenizer_ ? data::TextStream::decoder(*tokenizer_) : data::TextStream::Decode(),
                        std::move(text_options));

  std::unique_lock lock(mutex_);
  SubmitResult result;
  if (stopping_) {
    result.queue_full = true;
    return result;
  }
  const RequestId id = next_id_;
  // Prefix caching keys pages by the adapter and its registration serial (a reloaded adapter of
  // the same name has other weights, so other KV). Prompt logprobs need every prompt position's
  // logits: such a request computes its whole prompt (vLLM skips the lookup likewise).
  const auto serial = adapter_serials_.find(request.adapter);
  Request scheduled{
      .id = id,
      .adapter = request.adapter,
      .prompt_tokens = static_cast<int64_t>(request.prompt.size()),
      .max_new_tokens = s.max_new_tokens,
      .token_ids = request.prompt,
      .cache_salt = serial == adapter_serials_.end() ? std::string() : std::to_string(serial->second),
      .skip_prefix_cache_read = s.prompt_logprobs >= 0};
  if (!scheduler_->submit(scheduled)) {
    result.queue_full = true;
    // A hint: the time the running batch needs to free a slot, at least a second.
    result.retry_after_s = 1;
    return result;
  }
  ++next_id_;
  auto live = std::make_unique<Live>(std::move(text));
  live->sampler.emplace(s, stop_ids, s.seed ? *s.seed : next_seed_++);
  live->seen = request.prompt;
  live->submitted = Clock::now();
  if (config_.request_timeout.count() > 0) live->deadline = live->submitted + config_.request_timeout;
  metrics_.record_request(request.adapter);
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
    event.ended_by = live.ended_by;
    // llama.cpp's server reports a request stopped by its time limit as "length".
    if (live.ended_by == EndedBy::kTimeout) event.finish = FinishReason::kLength;
    const auto now = Clock::now();
    const auto seconds = [](Clock::duration d) { return std::chrono::duration<double>(d).count(); };
    event.timings.queue_s = seconds(live.scheduled.value_or(now) - live.submitted);
    if (live.scheduled)
      event.timings.prefill_s = seconds(live.first_token_at.value_or(now) - *live.scheduled);
    if (live.first_token_at) event.timings.decode_s = seconds(now - *live.first_token_at);
    event.prompt_tokens = static_cast<int64_t>(live.request.prompt.size());
    event.completion_tokens = static_cast<int64_t>(live.text.tokens().size());
    // Whatever was held back, with an incomplete last character as U+FFFD (as decode gives it).
    event.text = live.text.end(f.reason);
    live.stream->push(std::move(event));
    lives_.erase(it);
  }
}

// ---------------------------------------------------------------------------------------------
// Steps

void Engine::end_overdue(Clock::time_point now) {
  const bool drain_over = drain_deadline_ && now >= *drain_deadline_;
  std::vector<std::pair<RequestId, EndedBy>> overdue;
  for (const auto& [id, live] : lives_) {
    if (live->ended_by != EndedBy::kRequest) continue;
    if (drain_over)
      overdue.emplace_back(id, EndedBy::kShutdown);
    else if (live->deadline && now >= *live->deadline)
      overdue.emplace_back(id, EndedBy::kTimeout);
  }
  // Between steps nothing is in flight, so the scheduler frees the pages now. A request that has
  // already finished by itself (not delivered yet) keeps its own reason.
  for (const auto& [id, cause] : overdue)
    if (scheduler_->cancel(id)) lives_.at(id)->ended_by = cause;
}

bool Engine::step() {
  std::unique_lock lock(mutex_);
  end_overdue(Clock::now());
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
    const auto now = Clock::now();
    for (const ScheduledRequest& r : plan.requests) {
      Live* live = lives_.at(r.id).get();
      if (!live->scheduled) {
        live->scheduled = now;
        metrics_.record_queue_time(now - live->submitted);
      }
      lives.push_back(live);
    }
  }
  load_adapters(plan);  // the adapters admitted this step, into their pages first
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
    std::vector<const ResidentAdapter*> resident;  // per routed adapter: its copy in the pool
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
        if (it == routing.adapters.end()) {
          routing.adapters.push_back(r.adapter);
          resident.push_back(&resident_.at(r.adapter));
        }
      }
      routing.row_adapter.push_back(adapter);
    }
    PagedStep kv(*kv_, std::move(rows));
    nn::ForwardOptions forward;
    forward.cache = &kv;
    if (kv.has_padding() && T > 1) forward.attention_mask = mask;  // chunks of different lengths
    // Every row's last column is real (right-aligned); a prompt chunk whose request asked for
    // prompt logprobs needs every column's logits.
    bool every_position = false;
    for (size_t i : *pass)
      every_position |= plan.requests[i].prefill && lives[i]->request.sampling.prompt_logprobs >= 0;
    forward.last_position_only = !every_position;
    forward.routing = &routing;  // always: the rows' adapters come from the pool through it
    const PagedLoraPass adapters(*kv_, std::move(resident));
    const nn::RoutedAdapterScope adapter_scope(adapters);
    const at::Tensor all_logits = model_->forward(ids, forward).to(at::kFloat).cpu();
    const at::Tensor logits = all_logits.select(1, all_logits.size(1) - 1);
    for (int64_t b = 0; b < B; ++b) {
      const size_t i = (*pass)[static_cast<size_t>(b)];
      const ScheduledRequest& r = plan.requests[i];
      Live& live = *lives[i];
      if (r.prefill && live.request.sampling.prompt_logprobs >= 0) {
        // Column c holds prompt position start + c - pad; its logits predict the next position.
        const int64_t pad = T - r.num_tokens;
        const auto prompt_tokens = static_cast<int64_t>(live.request.prompt.size());
        for (int64_t c = pad; c < T; ++c) {
          const int64_t next = r.start + (c - pad) + 1;
          if (next >= prompt_tokens) break;
          live.prompt_logprobs.push_back(logprob_entry(all_logits[b][c],
                                                       live.request.prompt[static_cast<size_t>(next)],
                                                       live.request.sampling.prompt_logprobs));
        }
      }
      if (!r.samples) continue;
      // Structured output masks first; the reported logprobs are of what it leaves (sampler.h).
      const at::Tensor raw = live.sampler->constrain(logits[b]);
      const int64_t token = live.sampler->next(raw.unsqueeze(0).clone(), live.seen);
      std::optional<LogprobEntry> reported;
      if (live.request.sampling.logprobs >= 0)
        reported = logprob_entry(raw, token, live.request.sampling.logprobs);
      results[i].new_tokens = 1;
      results[i].token = token;
      results[i].finish = accept_token(live, token, std::move(reported));
    }
  }
  int64_t generated = 0;
  for (const StepResult& r : results) generated += r.new_tokens;
  std::lock_guard lock(mutex_);
  metrics_.record_step(prefilled, generated, Clock::now());
}

FinishReason Engine::accept_token(Live& live, int64_t token, std::optional<LogprobEntry> logprobs) {
  StreamEvent event;
  if (!live.first_token) {
    live.first_token = true;
    event.prompt_logprobs = std::move(live.prompt_logprobs);
    live.first_token_at = Clock::now();
    const auto ttft = *live.first_token_at - live.submitted;
    std::lock_guard lock(mutex_);
    metrics_.record_first_token(ttft);
  }
  live.seen.push_back(token);
  live.sampler->accept(token);
  event.token = token;
  event.logprobs = std::move(logprobs);
  event.text = live.text.push(token);
  live.stream->push(std::move(event));
  return live.text.finish();
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
  thread_ = std::thread([this] {
    bind_intra_op_threads();  // when asked to: this thread's OpenMP pool is its own (core/threads.h)
    loop();
  });
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

void Engine::shutdown(bool drain, std::optional<std::chrono::milliseconds> drain_limit) {
  {
    std::lock_guard lock(mutex_);
    const bool first = !stopping_;
    stopping_ = true;
    draining_ = drain;
    if (drain && drain_limit && first) drain_deadline_ = Clock::now() + *drain_limit;
    if (!drain) {
      std::vector<RequestId> ids;
      for (const auto& [id, live] : lives_) ids.push_back(id);
      for (RequestId id : ids)
        if (scheduler_->cancel(id)) lives_.at(id)->ended_by = EndedBy::kShutdown;
      deliver_finished();
    }
  }
  work_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (drain) run_until_idle();  // without a thread, drain on the caller's
  std::lock_guard lock(mutex_);
  deliver_finished();
}

std::vector<int32_t> Engine::prefix_cached_pages() const {
  std::lock_guard lock(mutex_);
  return scheduler_->prefix_cache().pages();
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mutex_);
  EngineStats s;
  s.scheduler = scheduler_->stats();
  s.adapters_loaded = static_cast<int64_t>(host_adapters_.size());
  metrics_.fill(s, Clock::now());
  s.pool_bytes = pool_bytes_;
  for (const auto& [name, entry] : host_adapters_)
    if (scheduler_->adapters().is_resident(name)) s.adapter_bytes_resident += entry.second.pool_bytes();
  return s;
}

}  // namespace lowrank::serve
