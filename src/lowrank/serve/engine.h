// Engine — the serving loop: one base model, many LoRA adapters, continuous batching over a paged
// KV cache (S-LoRA, Sheng et al., 2023, arXiv:2311.03285; Orca's iteration-level scheduling, Yu
// et al., 2022; vLLM's PagedAttention block tables, Kwon et al., 2023, arXiv:2309.06180).
//
// One step: the Scheduler (scheduler.h) plans which requests run and how many tokens each; the
// engine runs the plan as at most two model passes over the shared base weights:
//   - every decoding request in one batch [B, 1] (each row its own adapter, its own past length);
//   - every prompt chunk in one batch [P, longest chunk], shorter chunks left-padded (chunked
//     prefill: a long prompt is split across steps under the token budget).
// Decodes are not padded to the chunk length, and the weights are read twice per step at most,
// however many prompts join it.
// Keys and values live in the page pool (per layer, [pages · page_tokens, n_kv, D] tensors): a
// sequence's token t is in page block_table[t / page_tokens], slot t % page_tokens, and attention
// gathers its past through the block table. The LoRA products of a batch mixing adapters run
// per adapter segment at each adapter's own rank (nn::AdapterRouting), never padded to the
// largest rank: short segments (decode rows) in one gathered kernel call for the whole batch
// (BGMV), long ones (prompt chunks) as a GEMM pair each (paged_lora.h).
// Sampling is per request (its own temperature, top-p, penalties, logit bias, seed, generator; see
// sampler.h), so a request's tokens do not depend on its batch neighbours. Log-probabilities, when
// asked for, are of the raw model distribution (sampler.h; under structured output, of the
// masked one), the prompt's from every column of its prefill chunks.
//
// Prefix caching (scheduler.h, prefix_cache.h; vLLM's automatic prefix caching): a request whose
// prompt begins with full pages another request of the same adapter computed shares those pages
// (read-only, reference-counted) and prefills only the rest, from the first uncached position;
// SchedulerConfig::prefix_caching turns it off.
//
// Text. Each request's tokens go through a data::TextStream (data/text_stream.h): a text delta is
// released only once it is valid UTF-8 and cannot be the start of a stop string; a stop string
// ends the request and, as in OpenAI's API, is not part of the text.
//
// Validation. A request is validated once, where it enters: the HTTP API (openai_api.h) checks
// the sampling bounds (sampling_violation), the prompt limits and the adapter's name. The engine
// asserts the same invariants (InternalError: a caller that skipped the checks is a bug) and checks
// only what can change after the API's checks: an adapter unloaded meanwhile (NotFound, at
// admission by the scheduler) and the pool's capacity.
//
// Adapters live in the same pool (S-LoRA's Unified Paging, paged_lora.h). A loaded adapter is
// kept in host memory (page-locked for a CUDA pool), packed in the pool's layout, and is never
// attached to the model. When the scheduler lists it in a plan's adapter_loads (it was admitted
// with a request and is not resident), the step first copies it into the pages the scheduler
// gave it; evicted adapters (LRU among the unpinned, adapter_cache.h) are simply overwritten
// later. The model's routed forward then reads every row's adapter through its slot table in the
// pool (nn::RoutedAdapterScope with a PagedLoraPass): the pool is the only device-side copy of
// adapter weights, on the CPU as on CUDA.
//
// Files: paged_kv.h (the page pool and one pass's view of it), paged_lora.h (adapter weights in
// the pool and the routed products), request_stream.h (a request's events), engine_metrics.h
// (throughput, TTFT and adapter copies), engine_adapters.cpp (the adapter registry and its loads
// into the pool), engine.cpp (requests and steps).
//
// Deadlines. Between steps, a request past EngineConfig::request_timeout, or every request once a
// shutdown's drain limit has passed, is cancelled in the scheduler, which frees its pages at once
// (nothing is in flight then); its finish event says who ended it (EndedBy, request_stream.h).
//
// Threads. Any thread may call submit / cancel / load_adapter / unload_adapter / stats. The
// model runs on the engine's own thread (start()) or on the caller's (step(), for tests and
// benchmarks; not both). Streams are written on the stepping thread and never block it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/serve/engine_metrics.h"
#include "lowrank/serve/paged_lora.h"
#include "lowrank/serve/request_stream.h"
#include "lowrank/serve/sampler.h"
#include "lowrank/serve/scheduler.h"

namespace lowrank::nn {
class Model;
}
namespace lowrank::data {
class Tokenizer;
}

namespace lowrank::serve {

struct PagedKV;         // paged_kv.h
class TokenConstraint;  // token_constraint.h

// Sampling of one request. The bounds are the OpenAI API's (sampling_violation).
struct SamplingParams {
  int64_t max_new_tokens = 16;          // >= 1
  double temperature = 1.0;             // [0, 2]; 0 = greedy (argmax)
  double top_p = 1.0;                   // (0, 1]
  int64_t top_k = 0;                    // >= 0; 0 = off
  double repetition_penalty = 1.0;      // > 0; 1 = off
  std::optional<uint64_t> seed;         // none: drawn from the engine's counter
  std::vector<std::string> stop;        // stop strings (need a tokenizer); excluded from the text
  std::vector<int64_t> stop_token_ids;  // besides the model's eos ids
  bool ignore_eos = false;              // run to max_new_tokens (benchmarks)
  // The logits processing of sampler.h, in its order:
  int64_t min_tokens = 0;                              // [0, max_new_tokens]: no stop id before
  std::vector<std::pair<int64_t, double>> logit_bias;  // token id → bias in [-100, 100]
  double presence_penalty = 0;                         // [-2, 2]; 0 = off (OpenAI)
  double frequency_penalty = 0;                        // [-2, 2]; 0 = off (OpenAI)
  // Log-probabilities to report (sampler.h: of the raw model distribution): -1 = none, else the
  // chosen token's with this many alternatives (<= kMaxLogprobs); prompt_logprobs likewise for
  // every prompt token after the first.
  int64_t logprobs = -1;
  int64_t prompt_logprobs = -1;
  // Structured output (token_constraint.h): the automaton the output must match, or none. Its
  // mask comes before every step of the processing above (sampler.h).
  std::shared_ptr<TokenConstraint> constraint;
};

// A sampling field outside its bounds: the request field (OpenAI's name) and why.
struct SamplingViolation {
  std::string param;
  std::string message;
};
// The first field of `sampling` outside the bounds above, or none. The one statement of the bounds:
// the API refuses such a request (400 naming the field); the engine asserts there is none.
std::optional<SamplingViolation> sampling_violation(const SamplingParams& sampling);

struct GenerationRequest {
  std::string adapter;  // a loaded adapter's name; empty = the base model
  std::vector<int64_t> prompt;
  SamplingParams sampling;
};

struct EngineConfig {
  SchedulerConfig scheduler;
  int64_t page_tokens = 16;
  // Pool size: num_pages if > 0, else as many pages as pool_bytes holds (KV of all layers).
  int64_t num_pages = 0;
  int64_t pool_bytes = int64_t{256} << 20;
  // Longest prompt accepted (0: the model's max_position_embeddings); prompt + max_new_tokens
  // must also fit the model's context.
  int64_t max_prompt_tokens = 0;
  uint64_t seed = 0;  // seeds requests that bring none
  // A request still running this long after submit() is ended at the next step, its pages freed
  // at once, with what it generated so far and finish reason kLength (EndedBy::kTimeout). 0: no
  // limit.
  std::chrono::milliseconds request_timeout{0};
};

struct SubmitResult {
  std::shared_ptr<RequestStream> stream;  // null when the queue is full
  bool queue_full = false;                // → HTTP 429
  int64_t retry_after_s = 1;              // a hint for Retry-After
};

struct AdapterInfo {
  std::string name;
  std::filesystem::path dir;
  int64_t rank = 0;
  bool resident = false;
  int64_t pins = 0;
};

class Engine {
 public:
  // `tokenizer` may be null (token-id requests only; stop strings then throw). `eos_ids` end a
  // request unless it sets ignore_eos. Throws InvalidArgument for a bad config field (named).
  Engine(std::shared_ptr<nn::Model> model, std::shared_ptr<const data::Tokenizer> tokenizer,
         std::vector<int64_t> eos_ids, EngineConfig config);
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine();  // shutdown(false)

  // Loads a PEFT adapter directory into host memory under `name` (packed in the pool's layout,
  // paged_lora.h) and registers it with the scheduler; nothing is attached to the model, and
  // steps go on meanwhile. Throws InvalidArgument for a taken name, Unsupported for an adapter
  // without a low-rank form B·A on every slot or with modules_to_save, and what
  // adapt::read_adapter throws (NotFound, Corruption, ...).
  AdapterInfo load_adapter(const std::string& name, const std::filesystem::path& dir);
  // Throws NotFound for an unknown name, InvalidArgument ("busy") while a running request uses it.
  // Waiting requests that name it finish as kRejected.
  void unload_adapter(const std::string& name);
  // A freshly initialised adapter of `config` (adapt::create_adapter with `seed`, attached to the
  // model only while it is built and packed; set config.init_lora_weights = false for a non-zero
  // Δ), registered like a loaded one: for tests and benchmarks that need many adapters without
  // writing them to disk. Throws as load_adapter.
  AdapterInfo create_adapter(const std::string& name, const adapt::AdapterConfig& config, uint64_t seed);
  std::vector<AdapterInfo> adapters() const;
  bool has_adapter(const std::string& name) const;

  // Queues a request. Throws NotFound (an adapter not loaded, or unloaded since the caller checked)
  // and InvalidArgument (a request the pool can never hold; stop strings without a tokenizer)
  // before queueing; returns queue_full past SchedulerConfig::max_queue waiting requests, or after
  // shutdown began. A request the API would refuse (empty prompt, a token id outside the
  // vocabulary, a sampling field out of bounds, a prompt over max_prompt_tokens or over the
  // context) is a caller's bug: InternalError.
  SubmitResult submit(GenerationRequest request);
  // Cancels a waiting or running request (a disconnected client); its stream finishes with
  // kCancelled. False when it is unknown or already finished.
  bool cancel(RequestId id);

  // Runs one scheduler step on the calling thread. Returns false when there was nothing to do.
  bool step();
  // Steps until no request is waiting or running.
  void run_until_idle();
  // Runs steps on a background thread until shutdown().
  void start();
  // Stops accepting requests; with `drain`, lets running and waiting requests finish, otherwise
  // cancels them; then joins the background thread. A drain given `drain_limit` cancels what is
  // still in flight once that much time has passed. Requests the shutdown cancels finish with
  // kCancelled and EndedBy::kShutdown. Idempotent.
  void shutdown(bool drain, std::optional<std::chrono::milliseconds> drain_limit = std::nullopt);

  EngineStats stats() const;
  // The pages the prefix cache holds now (read-only while cached), and the pool they live in: for
  // tests that check shared pages are never written.
  std::vector<int32_t> prefix_cached_pages() const;
  const PagedKV& kv_pool() const { return *kv_; }
  const nn::Model& model() const { return *model_; }
  const data::Tokenizer* tokenizer() const { return tokenizer_.get(); }
  const EngineConfig& config() const { return config_; }

 private:
  struct Live;  // a request in flight: its sampling state, text stream and event stream
  // Packs `adapter` into host memory and registers it under `name`.
  AdapterInfo register_adapter(const std::string& name, const std::filesystem::path& dir,
                               const adapt::AttachedAdapter& adapter);
  // Copies the plan's adapter_loads into their pages, and any adapter the plan uses whose copy in
  // the pool is not current (after a failed step): afterwards resident_ holds every adapter the
  // plan uses, at the pages the scheduler gave it. With model_mutex_ held.
  void load_adapters(const StepPlan& plan);
  // Throws InvalidArgument for an empty name or one already loaded.
  void check_name_free(const std::string& name) const;
  void run_plan(const StepPlan& plan, std::vector<StepResult>& results);
  // Asserts the invariants of a request that passed the API's checks (InternalError).
  void check_request(const GenerationRequest& request) const;
  // Records a sampled token: its text and event; kStop when it ends the request.
  FinishReason accept_token(Live& live, int64_t token, std::optional<LogprobEntry> logprobs);
  void deliver_finished();  // with mutex_ held
  // Ends the requests past their deadline (EndedBy::kTimeout) and, once a drain's time is up,
  // every request (EndedBy::kShutdown); their pages are freed now. With mutex_ held, between steps.
  void end_overdue(std::chrono::steady_clock::time_point now);
  void loop();

  std::shared_ptr<nn::Model> model_;
  std::shared_ptr<const data::Tokenizer> tokenizer_;
  std::vector<int64_t> eos_ids_;
  EngineConfig config_;
  std::unique_ptr<PagedKV> kv_;  // KV pages and resident adapters' pages
  int64_t pool_bytes_ = 0;

  // Lock order: model_mutex_, then mutex_. A step holds model_mutex_ while it runs the model and
  // mutex_ only to plan and to complete it, so submit/cancel never wait for a model pass.
  std::mutex model_mutex_;    // the model's slots and the pool: a step's passes, loads, unloads
  mutable std::mutex mutex_;  // everything below
  std::condition_variable work_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unordered_map<RequestId, std::unique_ptr<Live>> lives_;
  // Registered adapters in host memory. Entries are erased only under model_mutex_ too, so a step
  // may use pointers to them without mutex_.
  std::map<std::string, std::pair<AdapterInfo, HostAdapter>> host_adapters_;
  // Adapters whose copy is in the pool, with their slot tables (model_mutex_). An entry stays
  // after its adapter is evicted until it is loaded again or unloaded; a step checks its pages
  // against the scheduler's before using it.
  std::unordered_map<std::string, ResidentAdapter> resident_;
  // Per registered adapter name, the serial of its registration (mutex_): the prefix cache's salt,
  // so that KV computed under an unloaded adapter never serves a new one of the same name.
  std::unordered_map<std::string, uint64_t> adapter_serials_;
  uint64_t next_adapter_serial_ = 0;
  RequestId next_id_ = 1;
  uint64_t next_seed_ = 0;
  bool stopping_ = false;
  bool draining_ = false;
  std::optional<std::chrono::steady_clock::time_point> drain_deadline_;
  std::thread thread_;
  EngineMetrics metrics_;
};

}  // namespace lowrank::serve
