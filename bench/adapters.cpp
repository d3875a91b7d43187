// Unmerged LoRA overhead and an adapter training step, against the base model in the same run.
//
// Model: a random Llama-style decoder (hidden 256, 4 layers, 8 heads, MLP 688, vocab 4096),
// float32, batch × seq = 8 × 512 tokens. Adapter: LoRA r = 16, α = 32 on every linear layer of
// the decoder (q, k, v, o, gate, up, down; not lm_head), B non-zero. Measured, each as the median
// of --repeats runs after one warm-up:
//   base       forward of the model alone (inference mode)
//   lora       forward with the adapter attached, unmerged
//   merged     forward after merging the adapter into the weights (should equal base)
//   two_lora   forward with two rank-16 adapters on every slot (the fused path)
//   train      forward + backward + AdamW step on the adapter's tensors only
//   full_train forward + backward + AdamW step on every tensor (full fine-tuning)
//   mixed_K    a batch of 32 rows × 128 tokens whose rows use K = 1, 8, 32 distinct adapters (32
//              adapters attached, ranks 8, 16, 32, 64 in turn; row b uses adapter b mod K),
//              through ForwardOptions::routing; against the base forward of the same batch
// Each ratio is of two cases timed alternately in this run (bench/timing.h): lora and two_lora
// against the same model with its adapters disabled, merged against an unadapted copy, train
// against full_train, mixed_K against the base forward of the mixed batch.
// bench/peers/peft_lora.py measures the same workload with transformers + PEFT for comparison.
//
//   build/bin/bench_adapters [--repeats 5] [--json]
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/core/json.h"
#include "lowrank/core/process.h"
#include "lowrank/core/threads.h"
#include "lowrank/nn/model.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/train/trainer.h"
#include "timing.h"

namespace {

using namespace lowrank;

nn::Model bench_model() {
  const Json config = {{"architectures", {"LlamaForCausalLM"}},
                       {"model_type", "llama"},
                       {"vocab_size", 4096},
                       {"hidden_size", 256},
                       {"intermediate_size", 688},
                       {"num_hidden_layers", 4},
                       {"num_attention_heads", 8},
                       {"num_key_value_heads", 8},
                       {"max_position_embeddings", 1024},
                       {"rms_norm_eps", 1e-5},
                       {"tie_word_embeddings", false}};
  return nn::Model::random(nn::ModelConfig::from_json(config, "bench model"), 0);
}

adapt::AdapterConfig lora_config() {
  adapt::AdapterConfig c;
  c.r = 16;
  c.lora_alpha = 32;
  c.target_modules = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  return c;
}

void randomize(const adapt::AttachedAdapter& a) {
  at::NoGradGuard g;
  for (auto& [n, t] : a.parameters()) t.normal_(0, 0.02);
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 5;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) repeats = std::atoi(argv[++i]);
    if (!std::strcmp(argv[i], "--json")) json = true;
  }
  keep_freed_memory();  // as the lowrank program does
  configure_threads(0);
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor ids = at::randint(4096, {8, 512}, gen, at::kLong);
  const at::Tensor windows = at::randint(4096, {8, 513}, gen, at::kLong);

  // Every ratio below comes from two cases timed alternately (bench::paired_median_seconds).
  nn::Model model = bench_model();
  auto forward_of = [&](const nn::Model& m) {
    return [&m, &ids] {
      c10::InferenceMode g;
      m.forward(ids);
    };
  };
  auto with_adapters = [&](bool enabled, const std::function<void()>& fn) {
    return [&model, enabled, fn] {
      for (nn::LinearSlot* slot : model.slots()) slot->set_adapters_enabled(enabled);
      fn();
    };
  };
  const auto forward = forward_of(model);

  adapt::AttachedAdapter lora = adapt::create_adapter(model, "a", lora_config(), 1);
  randomize(lora);
  const auto [base, unmerged] =
      bench::paired_median_seconds(with_adapters(false, forward), with_adapters(true, forward), repeats);

  adapt::AttachedAdapter second = adapt::create_adapter(model, "b", lora_config(), 2);
  randomize(second);
  const auto [base_two, two] =
      bench::paired_median_seconds(with_adapters(false, forward), with_adapters(true, forward), repeats);
  adapt::detach_adapter(model, second);

  // Adapter training step (only the adapter's tensors get gradients) against full fine-tuning of
  // a second copy of the model (every tensor).
  std::vector<std::pair<std::string, at::Tensor>> params = lora.parameters();
  for (auto& [n, p] : params) p.requires_grad_(true);
  optim::AdamConfig adam;
  adam.weight_decay = 0;
  optim::AdamW opt(params, adam);
  nn::Model full_model = bench_model();
  std::vector<std::pair<std::string, at::Tensor>> all;
  for (auto& [n, t] : full_model.named_tensors()) all.emplace_back(n, t.requires_grad_(true));
  optim::AdamW full(all, adam);
  const auto [lora_train, full_train] = bench::paired_median_seconds(
      [&] {
        opt.zero_grad();
        train::lm_loss(model, windows).backward();
        opt.step(1e-4);
      },
      [&] {
        full.zero_grad();
        train::lm_loss(full_model, windows).backward();
        full.step(1e-4);
      },
      repeats);
  for (auto& [n, p] : params) p.requires_grad_(false);

  // The merged model against an unadapted copy: the same work, so a ratio near 1.
  std::vector<adapt::AttachedAdapter> to_merge{lora};
  adapt::merge_adapters(model, to_merge);
  const nn::Model plain = bench_model();
  const auto [base_merged, merged] = bench::paired_median_seconds(forward_of(plain), forward, repeats);

  // Mixed-adapter batches.
  nn::Model mixed_model = bench_model();
  const at::Tensor mixed_ids = at::randint(4096, {32, 128}, gen, at::kLong);
  nn::AdapterRouting routing;
  const int64_t ranks[] = {8, 16, 32, 64};
  for (int i = 0; i < 32; ++i) {
    adapt::AdapterConfig c = lora_config();
    c.r = ranks[i % 4];
    c.lora_alpha = 2.0 * static_cast<double>(c.r);
    const std::string name = "adapter" + std::to_string(i);
    randomize(adapt::create_adapter(mixed_model, name, c, static_cast<uint64_t>(i)));
    routing.adapters.push_back(name);
  }
  auto mixed_forward = [&](const nn::AdapterRouting* r) {
    c10::InferenceMode g;
    nn::ForwardOptions o;
    o.routing = r;
    mixed_model.forward(mixed_ids, o);
  };
  nn::AdapterRouting none;
  none.row_adapter.assign(32, -1);
  double mixed_base = 0;
  OrderedJson mixed = OrderedJson::object();
  for (int k : {1, 8, 32}) {
    routing.row_adapter.clear();
    for (int b = 0; b < 32; ++b) routing.row_adapter.push_back(b % k);
    const auto [tb, t] = bench::paired_median_seconds([&] { mixed_forward(&none); },
                                                      [&] { mixed_forward(&routing); }, repeats);
    mixed_base = tb;
    mixed[std::to_string(k)] = {{"seconds", t}, {"base_seconds", tb}, {"ratio", t / tb}};
  }

  const OrderedJson out = {
      {"threads", thread_summary()},
      {"workload", "llama h256 L4 vocab4096, batch 8 x seq 512, LoRA r16 on all decoder linears"},
      {"seconds",
       {{"base", base},
        {"lora", unmerged},
        {"merged", merged},
        {"two_lora", two},
        {"train", lora_train},
        {"full_train", full_train}}},
      {"ratio",
       {{"lora_over_base", unmerged / base},
        {"merged_over_base", merged / base_merged},
        {"two_lora_over_base", two / base_two},
        {"train_over_full_train", lora_train / full_train}}},
      {"mixed_batch", {{"base_seconds", mixed_base}, {"distinct_adapters", mixed}}}};
  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%s\n", out["workload"].get<std::string>().c_str());
  std::printf("%-12s %10s %8s\n", "case", "seconds", "ratio");
  std::printf("%-12s %10.4f %8.3f\n", "base", base, 1.0);
  std::printf("%-12s %10.4f %8.3f\n", "lora", unmerged, unmerged / base);
  std::printf("%-12s %10.4f %8.3f\n", "merged", merged, merged / base_merged);
  std::printf("%-12s %10.4f %8.3f\n", "two_lora", two, two / base_two);
  std::printf("%-12s %10.4f %8.3f  (vs full_train)\n", "train", lora_train, lora_train / full_train);
  std::printf("%-12s %10.4f %8.3f\n", "full_train", full_train, 1.0);
  std::printf("mixed batch 32 x 128: base %.4f s\n", mixed_base);
  for (int k : {1, 8, 32})
    std::printf("  %2d distinct adapters %10.4f s %8.3f x base\n", k,
                mixed[std::to_string(k)]["seconds"].get<double>(),
                mixed[std::to_string(k)]["ratio"].get<double>());
  return 0;
}
