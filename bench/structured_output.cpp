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
// Reported: ms per generated token (the whole batch's wall time / its generated tokens, prefill
// included in all runs alike) and warm / plain and cold / plain (target: warm ≤ 1.10).
//
//   build/bin/bench_structured_output [--batch 32] [--tokens 48] [--hidden 64] [--layers 2]
//       [--repeats 3] [--tokenizer tests/fixtures/hf/bpe-gpt2style]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/model.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/json_schema_regex.h"
#include "lowrank/serve/token_constraint.h"

using namespace lowrank;

namespace {

struct Options {
  int64_t batch = 32, tokens = 48, hidden = 64, layers = 2, repeats = 3;
  std::string tokenizer = "tests/fixtures/hf/bpe-gpt2style";
};

const char* kSchema = R"({"type":"array","minItems":50,"items":{"type":"object",
  "properties":{"id":{"type":"integer"},"name":{"type":"string","maxLength":8},"ok":{"type":"boolean"}},
  "required":["id","name","ok"]}})";

// Seconds to decode `batch` requests of `tokens` tokens each, with `constraint` (or none).
double run(serve::Engine& engine, const Options& o, const std::vector<int64_t>& prompt,
           const std::shared_ptr<serve::TokenConstraint>& constraint, int64_t& generated) {
  std::vector<std::shared_ptr<serve::RequestStream>> streams;
  const auto start = std::chrono::steady_clock::now();
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
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
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

  double plain = 1e30, cold = 1e30, warm = 1e30;
  int64_t tokens = 0;
  run(engine, o, prompt, nullptr, tokens);  // warm-up: allocations, the thread pool
  for (int64_t r = 0; r < o.repeats; ++r) {
    plain = std::min(plain, run(engine, o, prompt, nullptr, tokens) / static_cast<double>(tokens));
    auto fresh = std::make_shared<serve::TokenConstraint>(serve::RegexAutomaton::compile(regex), vocabulary);
    cold = std::min(cold, run(engine, o, prompt, fresh, tokens) / static_cast<double>(tokens));
    warm = std::min(warm, run(engine, o, prompt, fresh, tokens) / static_cast<double>(tokens));
  }
  std::printf("batch %lld, %lld tokens each, vocab %lld, hidden %lld, layers %lld (best of %lld)\n",
              static_cast<long long>(o.batch), static_cast<long long>(o.tokens),
              static_cast<long long>(tokenizer->vocab_size()), static_cast<long long>(o.hidden),
              static_cast<long long>(o.layers), static_cast<long long>(o.repeats));
  std::printf(
      "plain  %.4f ms/token\ncold   %.4f ms/token  (%.3fx plain)\nwarm   %.4f ms/token  (%.3fx plain)\n",
      plain * 1e3, cold * 1e3, cold / plain, warm * 1e3, warm / plain);
  return 0;
}
