// nn/decode_step: the fused single-token step against the ATen path of the same model (an
// independent computation of the same equations, itself checked against transformers in
// model_test/generate_test), step after step so that the keys and values the fused step writes are
// read back by later steps: GQA, MHA with q/k/v biases and tanh-GELU, a sliding window, 1 and 2
// threads, packed INT4 weights, LoRA-form adapters with and without routing; bfloat16 against the
// float32 computation of the same weights; and the cases it must decline.
#include "lowrank/nn/decode_step.h"

#include <gtest/gtest.h>

#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <thread>

#include "lowrank/compress/operators.h"
#include "lowrank/core/error.h"
#include "lowrank/nn/generate.h"
#include "lowrank/nn/model.h"
#include "lowrank/ops/group_quant.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

Json config_json(const std::string& architecture, int64_t heads, int64_t kv_heads, bool tie) {
  return {{"architectures", Json::array({architecture})},
          {"model_type", architecture == "MistralForCausalLM" ? "mistral" : "llama"},
          {"vocab_size", 40},
          {"hidden_size", 32},
          {"intermediate_size", 64},
          {"num_hidden_layers", 2},
          {"num_attention_heads", heads},
          {"num_key_value_heads", kv_heads},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", tie}};
}

Model make_model(Json config, uint64_t seed, at::ScalarType dtype = at::kFloat) {
  LoadOptions options;
  options.dtype = dtype;
  Model m = Model::random(ModelConfig::from_json(config, "decode step test model"), seed, options);
  // Random norms and biases (Model::random makes them ones and zeros), so that a weight read from
  // the wrong place shows.
  at::Generator gen = at::detail::createCPUGenerator(seed + 1);
  at::NoGradGuard no_grad;
  for (auto& [name, t] : m.named_tensors()) {
    if (name.ends_with("norm.weight")) t.copy_(at::rand(t.sizes(), gen).add(0.5));
    if (name.ends_with(".bias")) t.copy_(at::randn(t.sizes(), gen).mul(0.1));
  }
  return m;
}

const std::vector<int64_t> kPrompt = {3, 17, 5, 29, 11, 8};
const std::vector<int64_t> kNext = {1, 22, 39, 0, 14, 7, 33, 2, 19};

// The prompt through the ATen path into a fresh cache, then one step per id of kNext on `path`;
// the logits of every step, [steps, vocab] float32.
at::Tensor step_logits(const Model& model, FusedDecode path, const AdapterRouting* routing = nullptr) {
  c10::InferenceMode guard;
  KVCache cache = model.new_cache(1, 4);  // small: the fused step must grow it too
  ForwardOptions o;
  o.cache = &cache;
  o.last_position_only = true;
  o.routing = routing;
  o.fused_decode = FusedDecode::kOff;
  model.forward(at::tensor(kPrompt, at::kLong).unsqueeze(0), o);
  o.fused_decode = path;
  std::vector<at::Tensor> out;
  for (int64_t id : kNext)
    out.push_back(model.forward(at::full({1, 1}, id, at::kLong), o).reshape({-1}).to(at::kFloat));
  return at::stack(out);
}

void expect_fused_matches_aten(const Model& model, const AdapterRouting* routing = nullptr,
                               double tol = 1e-5) {
  for (int threads : {1, 2}) {
    const int before = at::get_num_threads();
    at::set_num_threads(threads);
    const at::Tensor fused = step_logits(model, FusedDecode::kRequire, routing);
    const at::Tensor aten = step_logits(model, FusedDecode::kOff, routing);
    at::set_num_threads(before);
    EXPECT_LT(testing::rel_max_error(fused, aten), tol) << threads << " thread(s)";
  }
}

TEST(DecodeStepTest, GroupedQueryAttentionMatchesTheAtenPath) {
  const Model model = make_model(config_json("LlamaForCausalLM", 4, 2, false), 1);
  EXPECT_EQ(model.fused_decode_obstacle(), "");
  expect_fused_matches_aten(model);
}

TEST(DecodeStepTest, BiasesTanhGeluAndTiedHeadMatchTheAtenPath) {
  Json c = config_json("LlamaForCausalLM", 4, 4, true);
  c["attention_bias"] = true;
  c["mlp_bias"] = true;
  c["hidden_act"] = "gelu_pytorch_tanh";
  expect_fused_matches_aten(make_model(c, 2));
}

TEST(DecodeStepTest, SlidingWindowMatchesTheAtenPath) {
  Json c = config_json("MistralForCausalLM", 4, 1, false);
  c["sliding_window"] = 4;  // shorter than the prompt: the window bites from the first step
  c["rope_theta"] = 500.0;
  expect_fused_matches_aten(make_model(c, 3));
}

TEST(DecodeStepTest, PackedInt4WeightsAndTheirBiasesMatchTheAtenPath) {
  Json c = config_json("LlamaForCausalLM", 4, 2, false);
  c["attention_bias"] = true;  // random biases (make_model), kept by the quantised operators
  c["mlp_bias"] = true;
  Model model = make_model(c, 4);
  for (LinearSlot* s : model.slots())
    s->replace_base(std::make_shared<compress::QuantizedOperator>(
        ops::quantize_groups(s->base().dense_weight(), 4, /*group_size=*/32), s->base().bias()));
  EXPECT_EQ(model.fused_decode_obstacle(), "");
  expect_fused_matches_aten(model);
}

// s·B(Ax) with fixed random factors: the LoRA form.
class TestLora final : public Adapter {
 public:
  TestLora(int64_t in, int64_t out, int64_t r, uint64_t seed, bool low_rank_form = true)
      : low_rank_form_(low_rank_form) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    a_ = at::randn({r, in}, gen).mul(0.3);
    b_ = at::randn({out, r}, gen).mul(0.3);
  }
  std::string_view kind() const override { return "test_lora"; }
  at::Tensor delta(const at::Tensor& x, const at::Tensor&, const BaseOperator&) const override {
    return at::matmul(at::matmul(x, a_.t()), b_.t()).mul(kScale);
  }
  std::optional<LowRankDelta> low_rank_delta() const override {
    if (!low_rank_form_) return std::nullopt;
    return LowRankDelta{a_, b_, kScale};
  }

 private:
  static constexpr double kScale = 0.75;
  at::Tensor a_, b_;
  bool low_rank_form_;
};

TEST(DecodeStepTest, LoraFormAdaptersMatchTheAtenPathWithAndWithoutRouting) {
  Model model = make_model(config_json("LlamaForCausalLM", 4, 2, false), 5);
  uint64_t seed = 10;
  for (const char* name : {"model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj", "lm_head"}) {
    LinearSlot& s = model.slot(name);
    s.add_adapter("a", std::make_shared<TestLora>(s.in_features(), s.out_features(), 4, seed++));
    s.add_adapter("b", std::make_shared<TestLora>(s.in_features(), s.out_features(), 2, seed++));
  }
  expect_fused_matches_aten(model);  // both adapters on
  const AdapterRouting only_b{{"a", "b"}, {1}};
  expect_fused_matches_aten(model, &only_b);
  const AdapterRouting base_only{{"a", "b"}, {-1}};
  expect_fused_matches_aten(model, &base_only);
  // The adapters must change the logits, or the comparisons above could not see them.
  EXPECT_GT(testing::rel_max_error(step_logits(model, FusedDecode::kRequire, &only_b),
                                   step_logits(model, FusedDecode::kRequire, &base_only)),
            1e-2);
}

TEST(DecodeStepTest, Bfloat16StaysCloseToTheFloat32ComputationOfTheSameWeights) {
  const Json c = config_json("LlamaForCausalLM", 4, 2, false);
  const Model bf16 = make_model(c, 6, at::kBFloat16);
  // The same bfloat16 values, computed in float32 by the ATen path.
  Model f32 = make_model(c, 6, at::kFloat);
  {
    at::NoGradGuard no_grad;
    const NamedTensors src = bf16.named_tensors();
    const NamedTensors dst = f32.named_tensors();
    ASSERT_EQ(src.size(), dst.size());
    for (size_t i = 0; i < src.size(); ++i) dst[i].second.copy_(src[i].second.to(at::kFloat));
  }
  const at::Tensor want = step_logits(f32, FusedDecode::kOff);
  const double fused = testing::rel_max_error(step_logits(bf16, FusedDecode::kRequire), want);
  const double aten = testing::rel_max_error(step_logits(bf16, FusedDecode::kOff), want);
  // Only the cached keys and values are rounded to bfloat16 on the fused path; the ATen path
  // rounds every intermediate.
  EXPECT_LT(fused, 2e-2);
  EXPECT_LT(fused, aten + 1e-3) << "fused " << fused << ", ATen bfloat16 " << aten;
}

TEST(DecodeStepTest, GenerateTakesTheFusedStepAndKeepsItsTokens) {
  const Model model = make_model(config_json("LlamaForCausalLM", 4, 2, true), 7);
  GenerateOptions o;
  o.max_new_tokens = 12;
  o.fused_decode = FusedDecode::kRequire;
  const auto fused = generate(model, {kPrompt}, o);
  o.fused_decode = FusedDecode::kOff;
  const auto aten = generate(model, {kPrompt}, o);
  EXPECT_EQ(fused[0].tokens, aten[0].tokens);
}

TEST(DecodeStepTest, DeclinesWhatItCannotComputeAndSaysWhy) {
  Model model = make_model(config_json("LlamaForCausalLM", 4, 2, false), 8);
  c10::InferenceMode guard;
  KVCache two = model.new_cache(2, 8);
  ForwardOptions o;
  o.cache = &two;
  o.fused_decode = FusedDecode::kRequire;
  EXPECT_NE(testing::error_of([&] {
              model.forward(at::zeros({2, 1}, at::kLong), o);
            }).find("one token of one sequence"),
            std::string::npos);
  o.cache = nullptr;
  EXPECT_NE(testing::error_of([&] {
              model.forward(at::zeros({1, 1}, at::kLong), o);
            }).find("KV cache"),
            std::string::npos);

  LinearSlot& s = model.slot("model.layers.1.self_attn.v_proj");
  s.add_adapter(
      "odd", std::make_shared<TestLora>(s.in_features(), s.out_features(), 2, 99, /*low_rank_form=*/false));
  EXPECT_NE(model.fused_decode_obstacle().find("adapter \"odd\""), std::string::npos)
      << model.fused_decode_obstacle();
  // kAuto falls back to the ATen path and computes the same thing.
  EXPECT_LT(
      testing::rel_max_error(step_logits(model, FusedDecode::kAuto), step_logits(model, FusedDecode::kOff)),
      1e-6);
}

TEST(DecodeStepTest, ConcurrentDecodersGetTheirOwnResults) {
  const Model model = make_model(config_json("LlamaForCausalLM", 4, 2, false), 9);
  const at::Tensor want = step_logits(model, FusedDecode::kOff);
  std::vector<at::Tensor> got(3);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = step_logits(model, FusedDecode::kRequire); });
  for (std::thread& t : threads) t.join();
  for (const at::Tensor& g : got) EXPECT_LT(testing::rel_max_error(g, want), 1e-5);
}

}  // namespace
}  // namespace lowrank::nn
