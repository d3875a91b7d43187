// The runtime's inference and training speed on one model, and its memory at load.
//
// Model: an HF directory (--model DIR), or a random model of a pretraining preset's shape
// (--preset, default `small`: Llama, hidden 256, 6 layers, 8 heads, MLP 768, vocab 8192, tied
// embeddings; `galore-60m`: hidden 512, 8 layers, MLP 1376), float32 on the CPU unless --dtype. Measured,
// each as the median of --repeats runs after one warm-up:
//   load         Model::load of DIR: wall time, and the growth of the process's peak resident
//                memory during the load over the bytes of the loaded weights (with --model only)
//   forward      one forward of batch 1 x --seq tokens (inference mode, all logits): latency
//   prefill_B    generate() of 1 token from B prompts of --prompt-len tokens: B * prompt-len / t
//   decode_B     generate() of 1 + --new-tokens tokens from the same prompts, greedy, no stop
//                token; decode tokens/s = B * new-tokens / (time from the first token, which the
//                prefill produces, to the last), the median over the runs
//   train_step   forward + backward + AdamW step on every tensor, batch --train-batch x --seq
// for B = 1 and 8. bench/peers/runtime.py runs this program and the same workload in PyTorch +
// transformers in one script and prints the ratios; bench/peers/llamacpp.py runs it with
// --decode-only beside llama.cpp.
//   roofline     memory read bandwidth measured at 1 thread and at the thread count in force
//                (bandwidth.h), before and after the cases; the bytes a batch-1 decode step reads
//                (every slot's base tensors, the head included, plus the KV cache at the mean
//                context) and the GB/s and share of the measured bandwidth the decode reaches
// --model DIR loads through compress::load_model, so a compressed directory (rtn INT4, ...) works;
// --dtype converts the weights at load (float32, bfloat16); --rtn-bits 4|8 quantises every decoder
// slot in the process as `lowrank compress --method rtn` does; --threads sets the thread count;
// --decode-only measures only batch-1 prefill and decode (and the roofline); --no-fused takes the
// ATen path for every step (the fused decode step's baseline, nn/decode_step.h).
//
//   build/bin/bench_runtime [--model DIR | --preset NAME] [--dtype float32|bfloat16] [--rtn-bits 4|8]
//   [--threads N] [--repeats 5]
//                           [--seq 256] [--prompt-len 128] [--new-tokens 32] [--train-batch 8]
//                           [--train-only] [--decode-only] [--no-fused] [--json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include "bandwidth.h"
#include "lowrank/compress/format.h"
#include "lowrank/core/json.h"
#include "lowrank/core/process.h"
#include "lowrank/core/threads.h"
#include "lowrank/nn/generate.h"
#include "lowrank/nn/model.h"
#include "lowrank/optim/adamw.h"
#include "lowrank/train/pretrain.h"
#include "lowrank/train/trainer.h"
#include "models.h"
#include "timing.h"

namespace {

using namespace lowrank;

// A random model of a pretraining preset's shape (train/pretrain.h; `small` is bench::small_preset_config).
nn::Model preset_model(const std::string& preset, at::ScalarType dtype) {
  nn::LoadOptions options;
  options.dtype = dtype;
  const Json config = preset == "small" ? bench::small_preset_config()
                                        : train::preset_model_config(train::pretrain_preset(preset), 8192);
  return nn::Model::random(nn::ModelConfig::from_json(config, "bench model"), 0, options);
}

// The bytes one batch-1 decode step reads at a context of `context` positions: every slot's base
// tensors (the head included, even when it is the tied embedding) and the cached keys and values.
int64_t decode_bytes_per_token(const nn::Model& model, double context) {
  int64_t bytes = 0;
  for (const nn::LinearSlot* s : model.slots())
    for (const auto& [name, t] : s->base().tensors()) bytes += static_cast<int64_t>(t.nbytes());
  const nn::ModelConfig& c = model.config();
  const double kv = 2.0 * static_cast<double>(c.num_hidden_layers * c.num_key_value_heads * c.head_dim) *
                    static_cast<double>(c10::elementSize(model.dtype())) * context;
  return bytes + static_cast<int64_t>(kv);
}

int64_t weight_bytes(const nn::Model& model) {
  int64_t bytes = 0;
  for (const auto& [name, t] : model.named_tensors()) bytes += static_cast<int64_t>(t.nbytes());
  return bytes;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  std::string preset = "small";
  int repeats = 5;
  int64_t seq = 256, prompt_len = 128, new_tokens = 32, train_batch = 8;
  bool json = false, train_only = false, decode_only = false, fused = true;
  int threads = 0, rtn_bits = 0;
  at::ScalarType dtype = at::kFloat;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (!std::strcmp(argv[i], "--model") && has_value)
      model_dir = argv[++i];
    else if (!std::strcmp(argv[i], "--preset") && has_value)
      preset = argv[++i];
    else if (!std::strcmp(argv[i], "--repeats") && has_value)
      repeats = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--seq") && has_value)
      seq = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--prompt-len") && has_value)
      prompt_len = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--new-tokens") && has_value)
      new_tokens = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--train-batch") && has_value)
      train_batch = std::atoll(argv[++i]);
    else if (!std::strcmp(argv[i], "--json"))
      json = true;
    else if (!std::strcmp(argv[i], "--train-only"))
      train_only = true;
    else if (!std::strcmp(argv[i], "--decode-only"))
      decode_only = true;
    else if (!std::strcmp(argv[i], "--no-fused"))
      fused = false;
    else if (!std::strcmp(argv[i], "--threads") && has_value)
      threads = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--rtn-bits") && has_value)
      rtn_bits = std::atoi(argv[++i]);
    else if (!std::strcmp(argv[i], "--dtype") && has_value) {
      const std::string d = argv[++i];
      if (d == "float32" || d == "f32")
        dtype = at::kFloat;
      else if (d == "bfloat16" || d == "bf16")
        dtype = at::kBFloat16;
      else {
        std::fprintf(stderr, "bench_runtime: --dtype must be float32 or bfloat16, got %s\n", d.c_str());
        return 1;
      }
    } else {
      std::fprintf(stderr, "bench_runtime: unknown argument %s\n", argv[i]);
      return 1;
    }
  }
  keep_freed_memory();  // as the lowrank program does
  configure_threads(threads);
  const int thread_count = at::get_num_threads();
  const double bandwidth_before_1 = bench::read_bandwidth_gbs(1);
  const double bandwidth_before_n =
      thread_count > 1 ? bench::read_bandwidth_gbs(thread_count) : bandwidth_before_1;

  // The peak growth must be the load's own: libtorch's first operations page in hundreds of MB
  // of its code and set up its allocator and thread pool, so run some before measuring, then
  // reset the peak.
  OrderedJson load = nullptr;
  {
    const at::Tensor warm = at::randn({64, 64});
    (void)at::linear(warm, warm).sum().item<float>();
  }
  const bool peak_reset = reset_peak_rss();
  const int64_t rss_before = current_rss_bytes();
  const auto t0 = std::chrono::steady_clock::now();
  nn::LoadOptions load_options;
  load_options.dtype = dtype;
  nn::Model model =
      model_dir.empty() ? preset_model(preset, dtype) : compress::load_model(model_dir, load_options);
  const double load_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t rtn_group = 0;
  if (rtn_bits != 0) {
    // As `lowrank compress --method rtn --bits N`: every decoder slot, lm_head kept; groups of 64,
    // or the largest power of two below that divides every slot's input width (galore-60m's MLP
    // input is 1376 wide).
    rtn_group = 64;
    for (bool fits = false; !fits && rtn_group > 2;) {
      fits = true;
      for (const nn::LinearSlot* s : model.slots()) fits = fits && s->in_features() % rtn_group == 0;
      if (!fits) rtn_group /= 2;
    }
    for (nn::LinearSlot* s : model.slots())
      if (s->name() != "lm_head")
        s->replace_base(std::make_shared<compress::QuantizedOperator>(
            ops::quantize_groups(s->base().dense_weight(), rtn_bits, rtn_group), s->base().bias()));
  }
  const int64_t bytes = weight_bytes(model);
  if (!model_dir.empty()) {
    const double growth = static_cast<double>(peak_rss_bytes() - rss_before);
    load = {{"seconds", load_seconds},
            {"weight_bytes", bytes},
            {"peak_rss_growth_over_weights", growth / static_cast<double>(bytes)},
            {"peak_reset", peak_reset}};
  }

  const int64_t vocab = model.config().vocab_size;
  at::Generator gen = at::detail::createCPUGenerator(1);
  const at::Tensor ids = at::randint(vocab, {1, seq}, gen, at::kLong);
  // --train-only: the training step alone (for profiling it).
  const double forward = train_only || decode_only ? 0.0
                                                   : bench::median_seconds(
                                                         [&] {
                                                           c10::InferenceMode g;
                                                           model.forward(ids);
                                                         },
                                                         repeats);

  OrderedJson generation = OrderedJson::object();
  for (int64_t batch : {1, 8}) {
    if (train_only || (decode_only && batch > 1)) break;
    const at::Tensor prompt_ids = at::randint(vocab, {batch, prompt_len}, gen, at::kLong);
    std::vector<std::vector<int64_t>> prompts;
    for (int64_t b = 0; b < batch; ++b) {
      const at::Tensor row = prompt_ids[b].contiguous();
      prompts.emplace_back(row.data_ptr<int64_t>(), row.data_ptr<int64_t>() + prompt_len);
    }
    nn::GenerateOptions options;
    options.fused_decode = fused ? nn::FusedDecode::kAuto : nn::FusedDecode::kOff;
    options.max_new_tokens = 1;
    const double prefill = bench::median_seconds([&] { nn::generate(model, prompts, options); }, repeats);
    options.max_new_tokens = 1 + new_tokens;
    // The decode steps timed on their own: from the first token (the prefill's) to the last, read
    // at the token callback, so that the prefill's run-to-run noise does not enter the rate.
    std::vector<std::chrono::steady_clock::time_point> first(1), last(1);
    options.on_token = [&](size_t row, int64_t) {
      if (row + 1 == static_cast<size_t>(batch)) {
        last[0] = std::chrono::steady_clock::now();
        if (first[0] == std::chrono::steady_clock::time_point{}) first[0] = last[0];
      }
      return true;
    };
    std::vector<double> decode_seconds;
    const double total = bench::median_seconds(
        [&] {
          first[0] = {};
          nn::generate(model, prompts, options);
          decode_seconds.push_back(std::chrono::duration<double>(last[0] - first[0]).count());
        },
        repeats);
    decode_seconds.erase(decode_seconds.begin());  // the warm-up call
    std::sort(decode_seconds.begin(), decode_seconds.end());
    const double decode = decode_seconds[decode_seconds.size() / 2];
    generation[std::to_string(batch)] = {
        {"prefill_seconds", prefill},
        {"prefill_tokens_per_second", static_cast<double>(batch * prompt_len) / prefill},
        {"generate_seconds", total},
        {"decode_seconds", decode},
        {"decode_tokens_per_second", static_cast<double>(batch * new_tokens) / decode}};
  }

  const double bandwidth_after_1 = bench::read_bandwidth_gbs(1);
  const double bandwidth_after_n =
      thread_count > 1 ? bench::read_bandwidth_gbs(thread_count) : bandwidth_after_1;
  OrderedJson roofline = nullptr;
  if (!train_only) {
    const double bandwidth = std::max(bandwidth_before_n, bandwidth_after_n);
    const int64_t per_token = decode_bytes_per_token(
        model, static_cast<double>(prompt_len) + 0.5 * static_cast<double>(new_tokens));
    const double decode = generation["1"]["decode_tokens_per_second"].get<double>();
    const double achieved = decode * static_cast<double>(per_token) / 1e9;
    roofline = {
        {"read_bandwidth_gbs",
         {{"threads_1", {{"before", bandwidth_before_1}, {"after", bandwidth_after_1}}},
          {"threads_n",
           {{"threads", thread_count}, {"before", bandwidth_before_n}, {"after", bandwidth_after_n}}}}},
        {"decode_bytes_per_token", per_token},
        {"decode_roof_tokens_per_second", bandwidth * 1e9 / static_cast<double>(per_token)},
        {"decode_gbs", achieved},
        {"decode_percent_of_bandwidth", 100.0 * achieved / bandwidth}};
  }

  double train_step = 0;
  if (!decode_only) {
    const at::Tensor windows = at::randint(vocab, {train_batch, seq + 1}, gen, at::kLong);
    std::vector<std::pair<std::string, at::Tensor>> params;
    for (auto& [n, t] : model.named_tensors()) params.emplace_back(n, t.requires_grad_(true));
    optim::AdamConfig adam;
    optim::AdamW optimizer(params, adam);
    train_step = bench::median_seconds(
        [&] {
          optimizer.zero_grad();
          train::lm_loss(model, windows).backward();
          optimizer.step(1e-4);
        },
        repeats);
  }

  const OrderedJson out = {
      {"threads", thread_summary()},
      {"model", model_dir.empty() ? "random " + preset + "-preset shape" : model_dir},
      {"dtype", c10::toString(model.dtype())},
      {"rtn_bits", rtn_bits},
      {"rtn_group_size", rtn_group},
      {"fused_decode",
       fused ? (model.fused_decode_obstacle().empty() ? "yes" : model.fused_decode_obstacle()) : "off"},
      {"weight_bytes", bytes},
      {"workload",
       {{"seq", seq}, {"prompt_len", prompt_len}, {"new_tokens", new_tokens}, {"train_batch", train_batch}}},
      {"load", load},
      {"forward_seconds", forward},
      {"generation", generation},
      {"roofline", roofline},
      {"train_step_seconds", train_step}};
  if (json) {
    std::printf("%s\n", out.dump(2).c_str());
    return 0;
  }
  std::printf("%s (%s, fused decode: %s): %s\n", out["model"].get<std::string>().c_str(),
              c10::toString(model.dtype()), out["fused_decode"].get<std::string>().c_str(),
              thread_summary().c_str());
  if (!load.is_null())
    std::printf("load %.3f s, peak RSS growth %.2f x the %.1f MiB of weights\n", load_seconds,
                load["peak_rss_growth_over_weights"].get<double>(), static_cast<double>(bytes) / (1 << 20));
  std::printf("forward 1 x %lld: %.4f s\n", static_cast<long long>(seq), forward);
  for (int64_t batch : {1, 8}) {
    if (train_only || (decode_only && batch > 1)) break;
    const OrderedJson& g = generation[std::to_string(batch)];
    std::printf("batch %lld: prefill %.0f tok/s, decode %.1f tok/s\n", static_cast<long long>(batch),
                g["prefill_tokens_per_second"].get<double>(), g["decode_tokens_per_second"].get<double>());
  }
  if (!roofline.is_null())
    std::printf(
        "roofline: read %.1f GB/s at 1 thread, %.1f at %d; decode reads %.1f MB/token: %.1f GB/s, "
        "%.0f%% of the bandwidth (roof %.0f tok/s)\n",
        std::max(bandwidth_before_1, bandwidth_after_1), std::max(bandwidth_before_n, bandwidth_after_n),
        thread_count, static_cast<double>(roofline["decode_bytes_per_token"].get<int64_t>()) / 1e6,
        roofline["decode_gbs"].get<double>(), roofline["decode_percent_of_bandwidth"].get<double>(),
        roofline["decode_roof_tokens_per_second"].get<double>());
  if (!decode_only)
    std::printf("train step %lld x %lld: %.4f s\n", static_cast<long long>(train_batch),
                static_cast<long long>(seq), train_step);
  return 0;
}
