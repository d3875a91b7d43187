// Structured output's per-token overhead (serve/token_constraint.h, the sampler's mask) against
// unconstrained decoding, in the same run, on the same engine and model.
//
// Workload: a random tiny Llama whose vocabulary is the byte-level BPE fixture tokenizer's
// (tests/fixtures/hf/bpe-gpt2style, 512 tokens), a batch of --batch requests decoded together for
// --tokens tokens each. The constrained requests carry a JSON schema (an array of at least 50
// small objects, so that no output can end before --tokens and every run decodes the same number
// of tokens at the same batch size); the unconstrained ones ignore eos. Runs, in turn, --repeats
// times each:
//   plain       no constraint
//   cold        the schema compiled anew (an empty cache): the first request of each new
//               automaton state pays its allowed-set walk over the vocabulary trie
//   warm        the same compiled constraint again (every state it reaches is cached)
// Reported: ms per generated token (the process's CPU time for the whole batch / its generated
// tokens, prefill included in all runs alike; CPU time, as wall time on a shared machine measures
// the neighbours), the median over --repeats interleaved rounds, and warm / plain and cold / plain
// (target: warm ≤ 1.10); and the constraint's own work per token measured alone (the mask and
// the state advance replayed over a constrained run's outputs), as a share of plain's per-token
// time, a number the neighbours disturb much less than the ratios. Run it with LOWRANK_NUM_THREADS=1 so that
// idle OpenMP threads do not spin into the CPU time.
//
//   build/bin/bench_structured_output [--batch 32] [--tokens 48] [--hidden 64] [--layers 2]
//       [--repeats 5] [--tokenizer tests/fixtures/hf/bpe-gpt2style]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/model.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/json_schema_regex.h"
#include "lowrank/serve/sampler.h"
#include "lowrank/serve/token_constraint.h"

using namespace lowrank;

namespace {

struct Options {
  int64_t batch = 32, tokens = 48, hidden = 64, layers = 2, repeats = 5;
  std::string tokenizer = "tests/fixtures/hf/bpe-gpt2style";
};

const char* kSchema = R"({"type":"array","minItems":50,"items":{"type":"object",
  "properties":{"id":{"type":"integer"},"name":{"type":"string","maxLength":8},"ok":{"type":"boolean"}},
  "required":["id","name","ok"]}})";

// The process's CPU time: on a shared machine, wall time mostly measures the neighbours.
double cpu_seconds() {
  timespec t{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return static_cast<double>(t.tv_sec) + 1e-9 * static_cast<double>(t.tv_nsec);
}

// CPU seconds to decode `batch` requests of `tokens` tokens each, with `constraint` (or none).
double run(serve::Engine& engine, const Options& o, const std::vector<int64_t>& prompt,
           const std::shared_ptr<serve::TokenConstraint>& constraint, int64_t& generated,
           std::vector<std::vector<int64_t>>* outputs = nullptr) {
  std::vector<std::shared_ptr<serve::RequestStream>> streams;
  const double start = cpu_seconds();
  for (int64_t i = 0; i < o.batch; ++i) {
    serve::GenerationRequest r;
    r.prompt = prompt;
    r.sampling.max_new_tokens = o.tokens;
    r.sampling.temperature = 1.0;
    r.sampling.seed = static_cast<uint64_t>(i);
    r.sampling.ignore_eos = constraint == nullptr;
    r.sampling.constraint = constraint;
    streams.push_back(engine.submit(std::move(r)).stream);
  }
  engine.run_until_idle();
  const double seconds = cpu_seconds() - start;
  generated = 0;
  for (auto& s : streams) {
    std::vector<int64_t> tokens;
    const serve::StreamEvent finish = s->wait(nullptr, &tokens);
    if (finish.finish != data::FinishReason::kLength) {
      std::fprintf(stderr, "a request ended early (%d): the workload needs full-length outputs\n",
                   static_cast<int>(finish.finish));
      std::exit(1);
    }
    generated += static_cast<int64_t>(tokens.size());
    if (outputs) outputs->push_back(std::move(tokens));
  }
  return seconds;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i], v = argv[i + 1];
    if (flag == "--batch")
      o.batch = std::stoll(v);
    else if (flag == "--tokens")
      o.tokens = std::stoll(v);
    else if (flag == "--hidden")
      o.hidden = std::stoll(v);
    else if (flag == "--layers")
      o.layers = std::stoll(v);
    else if (flag == "--repeats")
      o.repeats = std::stoll(v);
    else if (flag == "--tokenizer")
      o.tokenizer = v;
    else {
      std::fprintf(stderr, "unknown flag %s\n", flag.c_str());
      return 2;
    }
  }
  const auto tokenizer = std::make_shared<const data::Tokenizer>(data::Tokenizer::load(o.tokenizer));
  const Json config = {{"architectures", {"LlamaForCausalLM"}},
                       {"model_type", "llama"},
                       {"vocab_size", tokenizer->vocab_size()},
                       {"hidden_size", o.hidden},
                       {"intermediate_size", o.hidden * 2},
                       {"num_hidden_layers", o.layers},
                       {"num_attention_heads", 4},
                       {"num_key_value_heads", 4},
                       {"max_position_embeddings", 256},
                       {"rms_norm_eps", 1e-5},
                       {"tie_word_embeddings", true}};
  auto model = std::make_shared<nn::Model>(nn::Model::random(nn::ModelConfig::from_json(config, "bench"), 0));
  serve::EngineConfig ec;
  ec.num_pages = o.batch * 16;
  ec.page_tokens = 8;
  ec.scheduler.max_running = o.batch;
  ec.scheduler.max_batch_tokens = 4096;
  serve::Engine engine(model, tokenizer, {*tokenizer->eos_id()}, ec);
  std::vector<int64_t> prompt;
  for (int32_t id : tokenizer->encode("Return the list: ")) prompt.push_back(id);
  const auto vocabulary = serve::TokenVocabulary::of(*tokenizer);
  const std::string regex = serve::json_schema_regex(parse_json(kSchema, "schema"), "schema");

  // Interleaved, so that a neighbour's burst hits every run alike; the medians are reported.
  std::vector<double> plains, colds, warms;
  int64_t tokens = 0;
  run(engine, o, prompt, nullptr, tokens);  // warm-up: allocations, the thread pool
  for (int64_t r = 0; r < o.repeats; ++r) {
    plains.push_back(run(engine, o, prompt, nullptr, tokens) / static_cast<double>(tokens));
    auto fresh = std::make_shared<serve::TokenConstraint>(serve::RegexAutomaton::compile(regex), vocabulary);
    colds.push_back(run(engine, o, prompt, fresh, tokens) / static_cast<double>(tokens));
    warms.push_back(run(engine, o, prompt, fresh, tokens) / static_cast<double>(tokens));
  }
  // The constraint's own work per token, alone: the warm constraint's mask (constrain) and state
  // advance (accept) replayed over the outputs of a constrained run, on random logits.
  std::vector<std::vector<int64_t>> outputs;
  auto shared = std::make_shared<serve::TokenConstraint>(serve::RegexAutomaton::compile(regex), vocabulary);
  run(engine, o, prompt, shared, tokens, &outputs);
  const at::Tensor logits = at::randn({tokenizer->vocab_size()});
  serve::SamplingParams sp;
  sp.constraint = shared;
  double mask = 1e30;
  for (int64_t r = 0; r < o.repeats; ++r) {
    const double start = cpu_seconds();
    int64_t n = 0;
    for (const auto& output : outputs) {
      serve::RequestSampler sampler(sp, {*tokenizer->eos_id()}, 0);
      for (int64_t token : output) {
        const at::Tensor masked = sampler.constrain(logits);
        sampler.accept(token);
        n += masked.size(0) > 0;
      }
    }
    mask = std::min(mask, (cpu_seconds() - start) / static_cast<double>(n));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double plain = median(plains), cold = median(colds), warm = median(warms);
  std::printf(
      "batch %lld, %lld tokens each, vocab %lld, hidden %lld, layers %lld (median of %lld, CPU time)\n",
      static_cast<long long>(o.batch), static_cast<long long>(o.tokens),
      static_cast<long long>(tokenizer->vocab_size()), static_cast<long long>(o.hidden),
      static_cast<long long>(o.layers), static_cast<long long>(o.repeats));
  std::printf(
      "plain  %.4f ms/token\ncold   %.4f ms/token  (%.3fx plain)\nwarm   %.4f ms/token  (%.3fx plain)\n",
      plain * 1e3, cold * 1e3, cold / plain, warm * 1e3, warm / plain);
  std::printf("mask + advance alone: %.4f ms/token (%.1f %% of plain's per-token time)\n", mask * 1e3,
              100.0 * mask / plain);
  return 0;
}
