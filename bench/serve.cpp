// Multi-adapter serving under an S-LoRA-style workload, against three baselines in the same run.
//
// Workload: S-LoRA's generator (Sheng et al., 2023, arXiv:2311.03285; `benchmarks/trace.py`
// generate_requests), seeded: n adapters, adapter i of rank {8, 16, 32, 64}[i mod 4] (S-LoRA's
// S2 mix) with lora_alpha = 2r, on --targets; R·duration requests; request k's adapter is
// floor(x·n) with x ~ numpy's power(α) (density α x^(α-1) on [0, 1]: α = 1 uniform, smaller α
// more skewed towards low ids), inter-arrival times ~ Gamma(shape 1/cv², scale cv²/R) (cv = 1:
// Poisson), prompt and output lengths uniform integers in [lo, hi); random prompt ids; greedy
// decoding with ignore_eos, so every request generates exactly its output length.
//
// Runs, each replaying the same arrivals in real time (a driver thread submits each request at
// its arrival time and timestamps every event it receives):
//   base      serve::Engine on its background thread, no adapters, every request for the base
//   slora     serve::Engine with all n adapters registered (create_adapter), mixed-rank batches;
//             its pool holds a full running batch's KV and every adapter, and each adapter the
//             workload uses is copied into it before the replay (all adapters resident)
//   paged     the same with a pool that holds a full running batch's KV and only --max-batch
//             adapters of rank 64: adapters are copied in when admitted and the least recently
//             used evicted (S-LoRA's Unified Paging; the target is ≥ 0.9× slora's throughput
//             with 1000 and 5000 adapters)
//   padded    the same engine with every adapter the workload uses zero-padded to rank 64
//             (identical Δ = B A, rank-64 compute: S-LoRA's "bmm" ablation)
//   swap      PEFT-style: an FCFS loop on its own thread; the head request's adapter is merged
//             into the base weights (W += s·B A), that request and every waiting request for the
//             same adapter (up to --max-batch) are generated with nn::generate, then unmerged
//             (W -= s·B A), as PEFT's merge/unmerge
// Before them, `step` times one decode pass (a token per row, each row its own adapter) three ways
// in turn, without the replay's noise: base only, the gathered kernel (ops/lora_gather.h), one GEMM
// pair per adapter segment.
// Per request: TTFT (first token − submission), per-token latency ((last − first token) /
// (tokens − 1)), end-to-end latency. Per run: throughput = completed requests / window and
// generated tokens / window, where the window runs from the start of the replay to the last
// completion, or to the deadline (duration + --grace) for a run that does not finish — its
// unfinished requests are cancelled and count as SLO misses; SLO attainment = share of all
// requests with TTFT ≤ --slo-ttft. The default rate is about the base engine's capacity for the
// default model on 2 CPU cores, so the adapter runs and the baselines are saturated and the
// ratios compare capacities (S-LoRA's targets: ≥ 0.8× base-only with 1000 adapters, ≥ 10× swap).
// The padded run registers only the adapters the workload uses (writing each padded adapter to a
// temporary directory first); the others would not change its steps.
//
//   build/bin/bench_serve [--adapters 1000] [--alpha 1] [--rate 20] [--cv 1] [--duration 20]
//       [--grace 20] [--input 8:64] [--output 8:64] [--hidden 256] [--layers 4] [--vocab 2048]
//       [--targets q,k,v,o] [--max-batch 32] [--max-batch-tokens 512] [--slo-ttft 5] [--seed 42]
//       [--runs step,base,slora,padded,swap] [--json]   (paged: add it to --runs)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include <ATen/ATen.h>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/json.h"
#include "lowrank/core/process.h"
#include "lowrank/core/threads.h"
#include "lowrank/nn/generate.h"
#include "lowrank/nn/model.h"
#include "lowrank/ops/lora_gather.h"
#include "lowrank/serve/engine.h"
#include "models.h"
#include "timing.h"

namespace {

using namespace lowrank;
using bench::percentile;
using Clock = std::chrono::steady_clock;

constexpr int64_t kRanks[] = {8, 16, 32, 64};
constexpr int64_t kMaxRank = 64;

struct Options {
  int64_t adapters = 1000;
  double alpha = 1.0;
  double rate = 20.0;
  double cv = 1.0;
  double duration = 20.0;
  double grace = 20.0;
  int64_t input_lo = 8, input_hi = 64;
  int64_t output_lo = 8, output_hi = 64;
  int64_t hidden = 256, layers = 4, vocab = 2048;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  int64_t max_batch = 32;
  int64_t max_batch_tokens = 512;
  double slo_ttft = 5.0;
  uint64_t seed = 42;
  std::vector<std::string> runs = {"step", "base", "slora", "padded", "swap"};
  bool json = false;
};

// ---- workload (S-LoRA trace.py) ----------------------------------------------------------------

struct TraceRequest {
  double arrival = 0;  // seconds from the start of the replay
  int64_t adapter = 0;
  std::vector<int64_t> prompt;
  int64_t output_len = 0;
};

int64_t adapter_rank(int64_t adapter) {
  return kRanks[adapter % 4];
}
std::string adapter_name(int64_t adapter) {
  return "adapter" + std::to_string(adapter);
}
uint64_t adapter_seed(int64_t adapter) {
  return 1000 + static_cast<uint64_t>(adapter);
}

std::vector<TraceRequest> generate_trace(const Options& o) {
  std::mt19937_64 rng(o.seed);
  const int64_t total = static_cast<int64_t>(o.rate * o.duration);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  std::uniform_int_distribution<int64_t> input_len(o.input_lo, o.input_hi - 1);
  std::uniform_int_distribution<int64_t> output_len(o.output_lo, o.output_hi - 1);
  std::uniform_int_distribution<int64_t> token(0, o.vocab - 1);
  std::gamma_distribution<double> interval(1.0 / (o.cv * o.cv), o.cv * o.cv / o.rate);
  std::vector<TraceRequest> trace(static_cast<size_t>(total));
  // The same draw order as trace.py: adapter ids, input lengths, output lengths, intervals.
  for (auto& r : trace) {
    // numpy's power(a): x = U^(1/a), the inverse of the CDF x^a on [0, 1].
    const double x = std::pow(unit(rng), 1.0 / o.alpha);
    r.adapter = std::min(static_cast<int64_t>(x * static_cast<double>(o.adapters)), o.adapters - 1);
  }
  for (auto& r : trace) r.prompt.resize(static_cast<size_t>(input_len(rng)));
  for (auto& r : trace) r.output_len = output_len(rng);
  double t = 0;
  for (auto& r : trace) {
    t += interval(rng);
    r.arrival = t;
  }
  for (auto& r : trace)
    for (auto& id : r.prompt) id = token(rng);
  return trace;
}

// ---- measurement -------------------------------------------------------------------------------

struct Record {
  double submit = -1, first = -1, last = -1, finish = -1;  // seconds from the replay's start
  int64_t tokens = 0;
  bool completed = false;  // every requested token arrived
  bool rejected = false;   // queue full
};

struct Summary {
  std::string name;
  int64_t requests = 0, completed = 0, rejected = 0, tokens = 0;
  double window = 0;
  double req_per_s = 0, tok_per_s = 0;
  double ttft_p50 = NAN, ttft_p99 = NAN, tpot_p50 = NAN, tpot_p99 = NAN, e2e_p50 = NAN, e2e_p99 = NAN;
  double slo = 0;
  std::string note;
};

Summary summarize(std::string name, const std::vector<Record>& records, double deadline, double slo_ttft) {
  Summary s;
  s.name = std::move(name);
  s.requests = static_cast<int64_t>(records.size());
  double end = 0;
  bool all = true;
  int64_t met = 0;
  std::vector<double> ttft, tpot, e2e;
  for (const Record& r : records) {
    s.tokens += r.tokens;
    s.rejected += r.rejected ? 1 : 0;
    if (r.first >= 0) {
      ttft.push_back(r.first - r.submit);
      if (r.first - r.submit <= slo_ttft) ++met;
    }
    if (r.completed) {
      ++s.completed;
      end = std::max(end, r.finish);
      e2e.push_back(r.finish - r.submit);
      if (r.tokens > 1) tpot.push_back((r.last - r.first) / static_cast<double>(r.tokens - 1));
    } else {
      all = false;
    }
  }
  s.window = all ? end : deadline;
  s.req_per_s = static_cast<double>(s.completed) / s.window;
  s.tok_per_s = static_cast<double>(s.tokens) / s.window;
  s.ttft_p50 = percentile(ttft, 0.5);
  s.ttft_p99 = percentile(ttft, 0.99);
  s.tpot_p50 = percentile(tpot, 0.5);
  s.tpot_p99 = percentile(tpot, 0.99);
  s.e2e_p50 = percentile(e2e, 0.5);
  s.e2e_p99 = percentile(e2e, 0.99);
  s.slo = records.empty() ? 0 : static_cast<double>(met) / static_cast<double>(records.size());
  return s;
}

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// ---- engine runs -------------------------------------------------------------------------------

nn::ModelConfig model_config(const Options& o);

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Pages one adapter of rank `rank` takes in the engine's pool (serve/paged_lora.h: per layer and
// targeted module, rank · max(⌈in/W⌉, ⌈out/W⌉) slots of the KV width W).
int64_t adapter_pool_pages(const Options& o, int64_t rank, int64_t page_tokens) {
  const nn::ModelConfig mc = model_config(o);
  const int64_t width = mc.kv_size(), h = mc.hidden_size, q = mc.num_attention_heads * mc.head_dim;
  const std::map<std::string, std::pair<int64_t, int64_t>> shapes = {
      {"q_proj", {h, q}},
      {"k_proj", {h, width}},
      {"v_proj", {h, width}},
      {"o_proj", {q, h}},
      {"gate_proj", {h, mc.intermediate_size}},
      {"up_proj", {h, mc.intermediate_size}},
      {"down_proj", {mc.intermediate_size, h}}};
  int64_t slots = 0;
  for (const std::string& t : o.targets) {
    const auto [in, out] = shapes.at(t);
    slots += rank * std::max(ceil_div(in, width), ceil_div(out, width));
  }
  return ceil_div(slots, page_tokens);
}

// The pool: `slora` holds the KV of a full running batch plus every adapter (all stay resident
// once loaded); `paged` the KV of a full running batch plus max_batch adapters of the largest
// rank, so only the running batch's adapters fit and the others are evicted and copied in again
// (S-LoRA's Unified Paging); the other runs get 512 MiB.
serve::EngineConfig engine_config(const Options& o, int64_t num_requests, const std::string& kind) {
  serve::EngineConfig c;
  c.scheduler.max_running = o.max_batch;
  c.scheduler.max_batch_tokens = std::max(o.max_batch_tokens, o.max_batch);
  c.scheduler.max_queue = num_requests + 16;  // the bench measures latency, not rejection
  c.pool_bytes = int64_t{512} << 20;
  c.seed = o.seed;
  const int64_t kv = o.max_batch * ceil_div(o.input_hi + o.output_hi, c.page_tokens);
  if (kind == "slora") {
    c.num_pages = kv;
    for (int64_t i = 0; i < o.adapters; ++i)
      c.num_pages += adapter_pool_pages(o, adapter_rank(i), c.page_tokens);
  } else if (kind == "paged") {
    c.num_pages = kv + o.max_batch * adapter_pool_pages(o, kMaxRank, c.page_tokens);
  }
  return c;
}

serve::GenerationRequest make_request(const TraceRequest& r, std::string adapter) {
  serve::GenerationRequest g;
  g.adapter = std::move(adapter);
  g.prompt = r.prompt;
  g.sampling.max_new_tokens = r.output_len;
  g.sampling.temperature = 0;
  g.sampling.ignore_eos = true;
  return g;
}

// Replays `trace` against a started engine; `adapter_of` maps a trace adapter to the name served.
std::vector<Record> replay_engine(serve::Engine& engine, const std::vector<TraceRequest>& trace,
                                  const std::function<std::string(int64_t)>& adapter_of, double deadline) {
  std::vector<Record> records(trace.size());
  std::vector<std::pair<size_t, std::shared_ptr<serve::RequestStream>>> active;
  size_t next = 0;
  const Clock::time_point t0 = Clock::now();
  while (true) {
    double now = seconds_since(t0);
    while (next < trace.size() && trace[next].arrival <= now) {
      Record& rec = records[next];
      rec.submit = seconds_since(t0);
      serve::SubmitResult sr = engine.submit(make_request(trace[next], adapter_of(trace[next].adapter)));
      if (sr.stream)
        active.emplace_back(next, std::move(sr.stream));
      else
        rec.rejected = true;
      ++next;
    }
    bool received = false;
    for (auto it = active.begin(); it != active.end();) {
      Record& rec = records[it->first];
      serve::StreamEvent ev;
      bool done = false;
      while (it->second->next(ev, std::chrono::milliseconds(0))) {
        received = true;
        const double t = seconds_since(t0);
        if (ev.kind == serve::StreamEvent::Kind::kToken) {
          if (rec.first < 0) rec.first = t;
          rec.last = t;
          ++rec.tokens;
        } else {
          rec.finish = t;
          rec.completed =
              ev.finish == serve::FinishReason::kLength && rec.tokens == trace[it->first].output_len;
          done = true;
          break;
        }
      }
      it = done ? active.erase(it) : it + 1;
    }
    now = seconds_since(t0);
    if (next == trace.size() && active.empty()) break;
    if (now > deadline) break;
    if (!received) {
      double wait = 0.0005;
      if (next < trace.size()) wait = std::min(wait, std::max(0.0, trace[next].arrival - now));
      std::this_thread::sleep_for(std::chrono::duration<double>(wait));
    }
  }
  return records;
}

void warm_up(serve::Engine& engine, const std::vector<TraceRequest>& trace, const std::string& adapter) {
  for (int i = 0; i < 2 && i < static_cast<int>(trace.size()); ++i) {
    serve::GenerationRequest g = make_request(trace[static_cast<size_t>(i)], adapter);
    g.sampling.max_new_tokens = 4;
    engine.submit(std::move(g));
  }
  engine.run_until_idle();
}

adapt::AdapterConfig lora_config(const Options& o, int64_t rank) {
  adapt::AdapterConfig c;
  c.r = rank;
  c.lora_alpha = 2.0 * static_cast<double>(rank);
  c.target_modules = o.targets;
  c.init_lora_weights = false;  // B non-zero: a real Δ
  return c;
}

nn::ModelConfig model_config(const Options& o) {
  return nn::ModelConfig::from_json(
      bench::serving_llama_config(o.hidden, o.layers, o.vocab,
                                  std::max<int64_t>(1024, o.input_hi + o.output_hi)),
      "bench model");
}

std::shared_ptr<nn::Model> make_model(const Options& o) {
  return std::make_shared<nn::Model>(nn::Model::random(model_config(o), 0));
}

std::set<int64_t> used_adapters(const std::vector<TraceRequest>& trace) {
  std::set<int64_t> used;
  for (const auto& r : trace) used.insert(r.adapter);
  return used;
}

// Writes adapter `i` zero-padded to rank 64 (A rows and B columns beyond r are 0, alpha scaled so
// that s = alpha/r is unchanged): the same Δ at rank-64 cost.
void write_padded_adapter(nn::Model& scratch, const Options& o, int64_t i, const std::filesystem::path& dir) {
  const int64_t r = adapter_rank(i);
  adapt::AttachedAdapter original =
      adapt::create_adapter(scratch, "original", lora_config(o, r), adapter_seed(i));
  adapt::AdapterConfig padded_config = lora_config(o, kMaxRank);
  padded_config.init_lora_weights = true;
  adapt::AttachedAdapter padded = adapt::create_adapter(scratch, "padded", padded_config, 0);
  {
    at::NoGradGuard no_grad;
    for (size_t k = 0; k < original.layers.size(); ++k) {
      const nn::NamedTensors from = original.layers[k].second->parameters();
      const nn::NamedTensors to = padded.layers[k].second->parameters();
      for (size_t t = 0; t < from.size(); ++t) {
        const at::Tensor& src = from[t].second;
        const at::Tensor& dst = to[t].second;
        dst.zero_();
        if (from[t].first == "lora_A.weight")
          dst.narrow(0, 0, r).copy_(src);
        else
          dst.narrow(1, 0, r).copy_(src);
      }
    }
  }
  adapt::save_adapter(padded, dir);
  adapt::detach_adapter(scratch, padded);
  adapt::detach_adapter(scratch, original);
}

struct EngineRun {
  std::vector<Record> records;
  double setup_s = 0;
  serve::EngineStats stats;
};

EngineRun run_engine(const Options& o, const std::vector<TraceRequest>& trace, const std::string& kind,
                     const std::filesystem::path& scratch_dir) {
  EngineRun run;
  const Clock::time_point setup = Clock::now();
  serve::Engine engine(make_model(o), nullptr, {},
                       engine_config(o, static_cast<int64_t>(trace.size()), kind));
  std::function<std::string(int64_t)> adapter_of = [](int64_t) { return std::string(); };
  if (kind == "slora" || kind == "paged") {
    for (int64_t i = 0; i < o.adapters; ++i)
      engine.create_adapter(adapter_name(i), lora_config(o, adapter_rank(i)), adapter_seed(i));
    adapter_of = adapter_name;
    if (kind == "slora") {
      // All adapters resident: one token for each adapter the workload uses copies it in now.
      for (int64_t i : used_adapters(trace)) {
        serve::GenerationRequest g = make_request(trace.front(), adapter_name(i));
        g.prompt.resize(1);
        g.sampling.max_new_tokens = 1;
        engine.submit(std::move(g));
      }
      engine.run_until_idle();
    }
  } else if (kind == "padded") {
    nn::Model scratch = nn::Model::random(model_config(o), 1);
    for (int64_t i : used_adapters(trace)) {
      const std::filesystem::path dir = scratch_dir / adapter_name(i);
      write_padded_adapter(scratch, o, i, dir);
      engine.load_adapter(adapter_name(i), dir);
    }
    adapter_of = adapter_name;
  }
  warm_up(engine, trace, trace.empty() ? std::string() : adapter_of(trace.front().adapter));
  run.setup_s = seconds_since(setup);
  engine.start();
  run.records = replay_engine(engine, trace, adapter_of, o.duration + o.grace);
  run.stats = engine.stats();
  engine.shutdown(false);
  return run;
}

// ---- decode step (deterministic, no replay) ---------------------------------------------------

struct StepTimes {
  int64_t rows = 0;
  double base = 0, gathered = 0, segments = 0;  // median seconds per pass
};

// One decode pass of `rows` rows (one new token each and no past, so what is timed is the
// projections and the MLP, where the adapters act), timed three ways in turn: the base alone; every
// row with its own adapter (ranks 8/16/32/64 in turn, all n adapters attached) through the gathered kernel
// (ops/lora_gather.h, BGMV); the same through one GEMM pair per adapter segment (the gathered path
// turned off).
std::vector<StepTimes> time_decode_steps(const Options& o) {
  nn::Model model = nn::Model::random(model_config(o), 0);
  // All n adapters attached, as in the engine; row b uses adapter b.
  std::vector<adapt::AttachedAdapter> attached;
  for (int64_t i = 0; i < std::max(o.adapters, o.max_batch); ++i)
    attached.push_back(
        adapt::create_adapter(model, adapter_name(i), lora_config(o, adapter_rank(i)), adapter_seed(i)));
  const int64_t gather_tokens = ops::lora_gather_max_tokens();
  at::Generator gen = at::detail::createCPUGenerator(o.seed);
  std::vector<StepTimes> out;
  for (const int64_t rows : std::set<int64_t>{1, std::min<int64_t>(8, o.max_batch), o.max_batch}) {
    const at::Tensor ids = at::randint(o.vocab, {rows, 1}, gen, at::kLong);
    nn::AdapterRouting base_only;  // no adapter active
    base_only.row_adapter.assign(static_cast<size_t>(rows), -1);
    nn::AdapterRouting mixed;
    for (int64_t b = 0; b < rows; ++b) {
      mixed.adapters.push_back(adapter_name(b));
      mixed.row_adapter.push_back(b);
    }
    auto pass = [&](const nn::AdapterRouting& routing, int64_t max_tokens) {
      ops::set_lora_gather_max_tokens(max_tokens);
      nn::ForwardOptions options;
      options.routing = &routing;
      const c10::InferenceMode inference;
      model.forward(ids, options);
    };
    const std::vector<double> m =
        bench::interleaved_median_seconds({[&] { pass(base_only, gather_tokens); },
                                           [&] { pass(mixed, gather_tokens); }, [&] { pass(mixed, 0); }},
                                          rows >= 8 ? 40 : 200);
    out.push_back({rows, m[0], m[1], m[2]});
  }
  ops::set_lora_gather_max_tokens(gather_tokens);
  return out;
}

// ---- swap baseline (PEFT-style merge per batch) ------------------------------------------------

struct MergeTerm {
  at::Tensor weight;  // the slot's dense weight, shared with the model
  at::Tensor delta;   // s·B A, [out, in], computed at merge time from a and b
  at::Tensor a, b;
  double scale = 1;
};

std::vector<Record> run_swap(const Options& o, const std::vector<TraceRequest>& trace, double* setup_s,
                             int64_t* batches) {
  const Clock::time_point setup = Clock::now();
  std::shared_ptr<nn::Model> model = make_model(o);
  // Host copies of every adapter the workload uses (PEFT keeps loaded adapters in memory).
  std::map<int64_t, std::vector<MergeTerm>> adapters;
  for (int64_t i : used_adapters(trace)) {
    adapt::AttachedAdapter a =
        adapt::create_adapter(*model, "swap", lora_config(o, adapter_rank(i)), adapter_seed(i));
    std::vector<MergeTerm>& terms = adapters[i];
    for (const auto& [slot, layer] : a.layers) {
      const std::optional<nn::LowRankDelta> d = layer->low_rank_delta();
      MergeTerm t;
      t.weight = model->slot(slot).base().dense_weight();
      t.a = d->a.clone();
      t.b = d->b.clone();
      t.scale = d->scale;
      terms.push_back(std::move(t));
    }
    adapt::detach_adapter(*model, a);
  }
  *setup_s = seconds_since(setup);

  std::vector<Record> records(trace.size());
  std::mutex mutex;
  std::condition_variable arrived;
  std::deque<size_t> queue;
  bool all_submitted = false;
  std::atomic<bool> stop{false};
  std::atomic<size_t> finished{0};
  Clock::time_point t0;
  int64_t num_batches = 0;

  auto worker = [&] {
    while (true) {
      std::vector<size_t> batch;
      {
        std::unique_lock lock(mutex);
        arrived.wait(lock, [&] { return stop || !queue.empty() || all_submitted; });
        if (stop || queue.empty()) return;
        const int64_t adapter = trace[queue.front()].adapter;
        for (auto it = queue.begin();
             it != queue.end() && static_cast<int64_t>(batch.size()) < o.max_batch;) {
          if (trace[*it].adapter == adapter) {
            batch.push_back(*it);
            it = queue.erase(it);
          } else {
            ++it;
          }
        }
      }
      std::vector<MergeTerm>& terms = adapters.at(trace[batch.front()].adapter);
      {
        at::NoGradGuard no_grad;  // merge: W += s·B A
        for (MergeTerm& t : terms) {
          t.delta = at::mm(t.b, t.a).mul_(t.scale);
          t.weight.add_(t.delta);
        }
      }
      std::vector<std::vector<int64_t>> prompts;
      nn::GenerateOptions g;
      g.max_new_tokens = 0;
      for (size_t k : batch) {
        prompts.push_back(trace[k].prompt);
        g.max_new_tokens = std::max(g.max_new_tokens, trace[k].output_len);
      }
      g.on_token = [&](size_t row, int64_t) {
        const size_t k = batch[row];
        Record& rec = records[k];
        const double t = seconds_since(t0);
        if (rec.first < 0) rec.first = t;
        rec.last = t;
        if (++rec.tokens == trace[k].output_len) {
          rec.finish = t;
          rec.completed = true;
          ++finished;
          return false;
        }
        return !stop.load();
      };
      nn::generate(*model, prompts, g);
      {
        at::NoGradGuard no_grad;  // unmerge: W -= s·B A
        for (MergeTerm& t : terms) {
          t.weight.sub_(at::mm(t.b, t.a).mul_(t.scale));
          t.delta = at::Tensor();
        }
      }
      ++num_batches;
    }
  };

  {
    // Warm-up: one small generation.
    nn::GenerateOptions g;
    g.max_new_tokens = 4;
    nn::generate(*model, {trace.front().prompt}, g);
  }
  t0 = Clock::now();
  std::thread thread(worker);
  const double deadline = o.duration + o.grace;
  size_t next = 0;
  while (true) {
    const double now = seconds_since(t0);
    if (now > deadline) break;
    if (next < trace.size()) {
      if (trace[next].arrival <= now) {
        std::lock_guard lock(mutex);
        records[next].submit = seconds_since(t0);
        queue.push_back(next++);
        if (next == trace.size()) all_submitted = true;
        arrived.notify_one();
        continue;
      }
      std::this_thread::sleep_for(std::chrono::duration<double>(std::min(0.01, trace[next].arrival - now)));
    } else {
      bool idle = false;
      {
        std::lock_guard lock(mutex);
        idle = queue.empty();
      }
      // The worker exits once the queue is empty and everything was submitted.
      if (idle && finished.load() == trace.size()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
  {
    std::lock_guard lock(mutex);
    stop = true;
    all_submitted = true;
  }
  arrived.notify_all();
  thread.join();
  *batches = num_batches;
  return records;
}

// ---- flags and report --------------------------------------------------------------------------

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream in(s);
  for (std::string item; std::getline(in, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

bool parse_range(const std::string& s, int64_t& lo, int64_t& hi) {
  const auto parts = split(s, ':');
  if (parts.size() != 2) return false;
  lo = std::atoll(parts[0].c_str());
  hi = std::atoll(parts[1].c_str());
  return lo >= 1 && hi > lo;
}

int usage(const char* arg) {
  std::fprintf(stderr,
               "bench_serve: bad argument %s\n"
               "usage: bench_serve [--adapters N] [--alpha A] [--rate R] [--cv CV] [--duration S]\n"
               "  [--grace S] [--input LO:HI] [--output LO:HI] [--hidden H] [--layers L] [--vocab V]\n"
               "  [--targets q,k,v,o] [--max-batch B] [--max-batch-tokens T] [--slo-ttft S] [--seed N]\n"
               "  [--runs step,base,slora,paged,padded,swap] [--json]\n",
               arg);
  return 1;
}

OrderedJson summary_json(const Summary& s) {
  auto num = [](double v) { return std::isnan(v) ? OrderedJson(nullptr) : OrderedJson(v); };
  return {{"requests", s.requests},
          {"completed", s.completed},
          {"rejected", s.rejected},
          {"generated_tokens", s.tokens},
          {"window_s", s.window},
          {"requests_per_s", s.req_per_s},
          {"tokens_per_s", s.tok_per_s},
          {"ttft_p50_s", num(s.ttft_p50)},
          {"ttft_p99_s", num(s.ttft_p99)},
          {"per_token_p50_s", num(s.tpot_p50)},
          {"per_token_p99_s", num(s.tpot_p99)},
          {"e2e_p50_s", num(s.e2e_p50)},
          {"e2e_p99_s", num(s.e2e_p99)},
          {"slo_attainment", s.slo},
          {"note", s.note}};
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--json") {
      o.json = true;
      continue;
    }
    if (i + 1 >= argc) return usage(argv[i]);
    const std::string v = argv[++i];
    if (flag == "--adapters")
      o.adapters = std::atoll(v.c_str());
    else if (flag == "--alpha")
      o.alpha = std::atof(v.c_str());
    else if (flag == "--rate")
      o.rate = std::atof(v.c_str());
    else if (flag == "--cv")
      o.cv = std::atof(v.c_str());
    else if (flag == "--duration")
      o.duration = std::atof(v.c_str());
    else if (flag == "--grace")
      o.grace = std::atof(v.c_str());
    else if (flag == "--input") {
      if (!parse_range(v, o.input_lo, o.input_hi)) return usage(argv[i]);
    } else if (flag == "--output") {
      if (!parse_range(v, o.output_lo, o.output_hi)) return usage(argv[i]);
    } else if (flag == "--hidden")
      o.hidden = std::atoll(v.c_str());
    else if (flag == "--layers")
      o.layers = std::atoll(v.c_str());
    else if (flag == "--vocab")
      o.vocab = std::atoll(v.c_str());
    else if (flag == "--targets") {
      o.targets.clear();
      for (const std::string& t : split(v, ',')) o.targets.push_back(t.ends_with("_proj") ? t : t + "_proj");
    } else if (flag == "--max-batch")
      o.max_batch = std::atoll(v.c_str());
    else if (flag == "--max-batch-tokens")
      o.max_batch_tokens = std::atoll(v.c_str());
    else if (flag == "--slo-ttft")
      o.slo_ttft = std::atof(v.c_str());
    else if (flag == "--seed")
      o.seed = std::strtoull(v.c_str(), nullptr, 10);
    else if (flag == "--runs")
      o.runs = split(v, ',');
    else
      return usage(argv[i - 1]);
  }
  if (o.adapters < 1 || o.alpha <= 0 || o.rate <= 0 || o.cv <= 0 || o.duration <= 0 || o.grace < 0 ||
      o.hidden < kMaxRank || o.layers < 1 || o.vocab < 2 || o.max_batch < 1 || o.targets.empty())
    return usage("(a value out of range)");
  for (const std::string& r : o.runs)
    if (r != "step" && r != "base" && r != "slora" && r != "paged" && r != "padded" && r != "swap")
      return usage(r.c_str());

  keep_freed_memory();  // as the lowrank program does
  const int threads = configure_threads(0);
  const std::vector<TraceRequest> trace = generate_trace(o);
  if (trace.empty()) return usage("(no requests: rate × duration < 1)");
  const std::set<int64_t> used = used_adapters(trace);
  const std::filesystem::path scratch =
      std::filesystem::temp_directory_path() / ("bench_serve_" + std::to_string(::getpid()));
  const double deadline = o.duration + o.grace;

  std::string targets;
  for (const std::string& t : o.targets) targets += (targets.empty() ? "" : ",") + t;
  char workload[512];
  std::snprintf(workload, sizeof workload,
                "llama h%lld L%lld vocab %lld, float32, %d threads; %lld adapters (ranks 8/16/32/64, "
                "%s), alpha %.2f, R %.1f req/s, cv %.1f, %.0f s (+%.0f s grace): %zu requests, %zu "
                "adapters used; input [%lld, %lld), output [%lld, %lld); max batch %lld",
                static_cast<long long>(o.hidden), static_cast<long long>(o.layers),
                static_cast<long long>(o.vocab), threads, static_cast<long long>(o.adapters), targets.c_str(),
                o.alpha, o.rate, o.cv, o.duration, o.grace, trace.size(), used.size(),
                static_cast<long long>(o.input_lo), static_cast<long long>(o.input_hi),
                static_cast<long long>(o.output_lo), static_cast<long long>(o.output_hi),
                static_cast<long long>(o.max_batch));
  if (!o.json) std::printf("%s\n", workload);

  std::vector<Summary> summaries;
  std::vector<StepTimes> steps;
  for (const std::string& kind : o.runs) {
    if (kind == "step") {
      if (!o.json) {
        std::printf("timing decode steps ...\n");
        std::fflush(stdout);
      }
      steps = time_decode_steps(o);
      continue;
    }
    if (!o.json) {
      std::printf("running %s ...\n", kind.c_str());
      std::fflush(stdout);
    }
    std::vector<Record> records;
    char note[256];
    if (kind == "swap") {
      double setup_s = 0;
      int64_t batches = 0;
      records = run_swap(o, trace, &setup_s, &batches);
      const auto started =
          std::count_if(records.begin(), records.end(), [](const Record& r) { return r.first >= 0; });
      std::snprintf(note, sizeof note, "setup %.1f s, %lld merged batches, %.1f requests/batch", setup_s,
                    static_cast<long long>(batches),
                    batches > 0 ? static_cast<double>(started) / static_cast<double>(batches) : 0.0);
    } else {
      std::filesystem::create_directories(scratch);
      EngineRun run = run_engine(o, trace, kind, scratch);
      std::filesystem::remove_all(scratch);
      records = std::move(run.records);
      const serve::SchedulerStats& st = run.stats.scheduler;
      std::snprintf(
          note, sizeof note,
          "setup %.1f s, %lld steps, %.1f tokens sampled/step, %lld adapter loads, %lld evictions",
          run.setup_s, static_cast<long long>(st.steps),
          st.steps > 0 ? static_cast<double>(st.tokens_generated) / static_cast<double>(st.steps) : 0.0,
          static_cast<long long>(st.adapters.loads), static_cast<long long>(st.adapters.evictions));
    }
    Summary s = summarize(kind, records, deadline, o.slo_ttft);
    s.note = note;
    summaries.push_back(std::move(s));
  }

  auto find = [&](const std::string& name) -> const Summary* {
    for (const Summary& s : summaries)
      if (s.name == name) return &s;
    return nullptr;
  };
  const Summary* slora = find("slora");
  OrderedJson ratios = OrderedJson::object();
  for (const char* other : {"base", "paged", "padded", "swap"}) {
    const Summary* s = find(other);
    if (slora && s && s->req_per_s > 0)
      ratios[std::string("slora_over_") + other] = {{"requests_per_s", slora->req_per_s / s->req_per_s},
                                                    {"tokens_per_s", slora->tok_per_s / s->tok_per_s}};
  }

  if (o.json) {
    OrderedJson runs = OrderedJson::object();
    if (!steps.empty()) {
      OrderedJson table = OrderedJson::array();
      for (const StepTimes& t : steps)
        table.push_back({{"rows", t.rows},
                         {"base_ms", t.base * 1e3},
                         {"gathered_ms", t.gathered * 1e3},
                         {"segments_ms", t.segments * 1e3}});
      runs["step"] = table;
    }
    for (const Summary& s : summaries) runs[s.name] = summary_json(s);
    const OrderedJson out = {{"threads", thread_summary()},
                             {"workload", workload},
                             {"slo_ttft_s", o.slo_ttft},
                             {"runs", runs},
                             {"ratios", ratios}};
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  if (!steps.empty()) {
    std::printf("\ndecode pass, one token per row, each row its own adapter (median ms):\n");
    std::printf("  %5s %9s %12s %12s %14s %14s\n", "rows", "base", "gathered", "segments", "base/gathered",
                "segments/gath.");
    for (const StepTimes& t : steps)
      std::printf("  %5lld %9.2f %12.2f %12.2f %13.2fx %13.2fx\n", static_cast<long long>(t.rows),
                  t.base * 1e3, t.gathered * 1e3, t.segments * 1e3, t.base / t.gathered,
                  t.segments / t.gathered);
  }
  if (summaries.empty()) return 0;
  std::printf("\n%-7s %9s %8s %8s %8s %8s %9s %9s %8s %8s %6s  %s\n", "run", "done", "req/s", "tok/s",
              "TTFT p50", "TTFT p99", "tok p50", "tok p99", "e2e p50", "e2e p99", "SLO", "");
  for (const Summary& s : summaries) {
    char done[32];
    std::snprintf(done, sizeof done, "%lld/%lld", static_cast<long long>(s.completed),
                  static_cast<long long>(s.requests));
    std::printf("%-7s %9s %8.2f %8.1f %7.2fs %7.2fs %7.1fms %7.1fms %7.2fs %7.2fs %5.1f%%  %s\n",
                s.name.c_str(), done, s.req_per_s, s.tok_per_s, s.ttft_p50, s.ttft_p99, s.tpot_p50 * 1e3,
                s.tpot_p99 * 1e3, s.e2e_p50, s.e2e_p99, 100 * s.slo, s.note.c_str());
  }
  std::printf("(SLO: TTFT <= %.1f s, over all requests; unfinished requests were cancelled at %.0f s)\n",
              o.slo_ttft, deadline);
  if (!ratios.empty()) std::printf("\nthroughput ratios (requests/s; tokens/s):\n");
  const std::map<std::string, std::string> targets_of = {{"base", ">= 0.8 with 1000 adapters"},
                                                         {"paged", "<= 1.11 (paged within 10 %)"},
                                                         {"swap", ">= 10"},
                                                         {"padded", "> 1 expected"}};
  for (const char* other : {"base", "paged", "padded", "swap"}) {
    const std::string key = std::string("slora_over_") + other;
    if (!ratios.contains(key)) continue;
    std::printf("  slora / %-7s %6.2fx ; %6.2fx   (target %s)\n", other,
                ratios[key]["requests_per_s"].get<double>(), ratios[key]["tokens_per_s"].get<double>(),
                targets_of.at(other).c_str());
  }
  return 0;
}
