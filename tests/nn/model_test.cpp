// nn/model on the transformers fixture (logits within 1e-4), KV-cache decoding, loading and
// saving in the HF layout, load errors, and the linear-slot seam.
#include "lowrank/nn/model.h"

#include <gtest/gtest.h>

#include <c10/core/InferenceMode.h>

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "tests/nn/reference.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

namespace fs = std::filesystem;
using testing::fixture;
using testing::max_abs_diff;

fs::path fixture_model() {
  return fixture("hf/llama-tiny/model");
}
SafetensorsFile expected() {
  return SafetensorsFile::open(fixture("hf/llama-tiny/expected.safetensors"));
}

// The message of the lowrank::Error that `f` must throw, with a test failure when it throws none
// or one of another kind (testing::error_of, by contrast, only reports what was thrown).
template <typename F>
std::string expect_error_of_kind(F&& f, ErrorKind kind) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(ModelTest, FixtureLogitsMatchTransformers) {
  const Model model = Model::load(fixture_model());
  const SafetensorsFile e = expected();
  c10::InferenceMode guard;
  const at::Tensor logits = model.forward(e.load("input_ids"));
  const at::Tensor want = e.load("logits");
  ASSERT_EQ(logits.sizes(), want.sizes());
  const double diff = max_abs_diff(logits, want);
  RecordProperty("max_abs_diff", std::to_string(diff));
  std::printf("fixture logits: max |lowrank - transformers| = %.3g\n", diff);
  EXPECT_LE(diff, 1e-4);

  // last_position_only gives the last row of the same logits.
  ForwardOptions last;
  last.last_position_only = true;
  const at::Tensor tail = model.forward(e.load("input_ids"), last);
  EXPECT_LE(max_abs_diff(tail.squeeze(1), logits.select(1, 23)), 1e-5);
}

TEST(ModelTest, KVCacheDecodeEqualsFullForward) {
  const Model model = Model::load(fixture_model());
  const at::Tensor ids = expected().load("input_ids");
  c10::InferenceMode guard;
  const at::Tensor full = model.forward(ids);
  // Prefill 10, then 1, 1, then a chunk of 5, then one at a time; capacity 4 forces growth.
  KVCache cache = model.new_cache(2, 4);
  ForwardOptions o;
  o.cache = &cache;
  std::vector<at::Tensor> parts;
  int64_t at = 0;
  for (int64_t n : {10, 1, 1, 5, 1, 1, 1, 1, 1, 1, 1}) {
    parts.push_back(model.forward(ids.narrow(1, at, n), o));
    at += n;
  }
  ASSERT_EQ(at, 24);
  EXPECT_EQ(cache.length(), 24);
  EXPECT_LE(max_abs_diff(at::cat(parts, 1), full), 1e-5);
}

TEST(ModelTest, SaveLoadRoundTripIsBitwise) {
  const Model model = Model::load(fixture_model());
  testing::TempDir dir;
  model.save(dir.path());
  EXPECT_TRUE(fs::exists(dir / "config.json"));
  const Model again = Model::load(dir.path());
  const NamedTensors a = model.named_tensors(), b = again.named_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(at::equal(a[i].second, b[i].second)) << a[i].first;
  }
  // Same tensor names and bytes as the transformers file.
  const Checkpoint original = Checkpoint::open(fixture_model());
  const Checkpoint saved = Checkpoint::open(dir.path());
  EXPECT_EQ(original.names(), saved.names());
  for (const std::string& n : original.names()) EXPECT_TRUE(at::equal(original.load(n), saved.load(n))) << n;
  const Json config = read_json_file(dir / "config.json");
  EXPECT_EQ(config["architectures"][0], "LlamaForCausalLM");
  EXPECT_EQ(config["dtype"], "float32");

  // bf16 save: the stored values are the rounded weights.
  testing::TempDir half;
  model.save(half.path(), at::kBFloat16);
  const Checkpoint h = Checkpoint::open(half.path());
  EXPECT_EQ(h.info("model.norm.weight").dtype, Dtype::kBF16);
  const Model from_bf16 = Model::load(half.path());
  EXPECT_TRUE(at::equal(from_bf16.named_tensors()[0].second,
                        model.named_tensors()[0].second.to(at::kBFloat16).to(at::kFloat)));
}

TEST(ModelTest, ShardedCheckpointLoadsLikeOneFile) {
  const Checkpoint original = Checkpoint::open(fixture_model());
  testing::TempDir dir;
  fs::copy_file(fixture_model() / "config.json", dir / "config.json");
  std::vector<NamedTensor> first, second;
  Json weight_map = Json::object();
  for (const std::string& n : original.names()) {
    const bool in_first = n.find("layers.1") == std::string::npos;
    (in_first ? first : second).push_back({n, original.load(n)});
    weight_map[n] = in_first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  save_safetensors(dir / "model-00001-of-00002.safetensors", first);
  save_safetensors(dir / "model-00002-of-00002.safetensors", second);
  write_json_file(dir / "model.safetensors.index.json",
                  Json{{"metadata", {{"total_size", 1}}}, {"weight_map", weight_map}});
  const Model a = Model::load(fixture_model());
  const Model b = Model::load(dir.path());
  const at::Tensor ids = expected().load("input_ids");
  c10::InferenceMode guard;
  EXPECT_TRUE(at::equal(a.forward(ids), b.forward(ids)));
}

TEST(ModelTest, LoadErrorsNameTensorAndFile) {
  const Checkpoint original = Checkpoint::open(fixture_model());
  auto rewrite = [&](const fs::path& dir, const std::function<void(std::vector<NamedTensor>&)>& edit) {
    fs::create_directories(dir);
    fs::copy_file(fixture_model() / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
    std::vector<NamedTensor> tensors;
    for (const std::string& n : original.names()) tensors.push_back({n, original.load(n)});
    edit(tensors);
    save_safetensors(dir / "model.safetensors", tensors);
  };
  testing::TempDir tmp;
  const std::string q = "model.layers.1.self_attn.q_proj.weight";

  rewrite(tmp / "missing",
          [&](auto& ts) { std::erase_if(ts, [&](const NamedTensor& t) { return t.name == q; }); });
  std::string msg = expect_error_of_kind([&] { Model::load(tmp / "missing"); }, ErrorKind::kNotFound);
  EXPECT_NE(msg.find(q), std::string::npos) << msg;
  EXPECT_NE(msg.find("model.safetensors"), std::string::npos) << msg;

  rewrite(tmp / "shape", [&](auto& ts) {
    for (auto& t : ts)
      if (t.name == q) t.tensor = at::zeros({64, 63});
  });
  msg = expect_error_of_kind([&] { Model::load(tmp / "shape"); }, ErrorKind::kInvalidArgument);
  for (const char* needle : {q.c_str(), "model.safetensors", "[64, 63]", "[64, 64]"})
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;

  rewrite(tmp / "dtype", [&](auto& ts) {
    for (auto& t : ts)
      if (t.name == q) t.tensor = at::zeros({64, 64}, at::kInt);
  });
  msg = expect_error_of_kind([&] { Model::load(tmp / "dtype"); }, ErrorKind::kInvalidArgument);
  for (const char* needle : {q.c_str(), "model.safetensors", "I32"})
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;

  // An extra tensor is ignored (with a warning), as transformers does.
  rewrite(tmp / "extra", [&](auto& ts) {
    ts.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", at::ones({8})});
  });
  EXPECT_NO_THROW(Model::load(tmp / "extra"));

  msg = expect_error_of_kind([&] { Model::load(tmp / "nothing-here"); }, ErrorKind::kNotFound);
  EXPECT_NE(msg.find("config.json"), std::string::npos) << msg;
}

TEST(ModelTest, ForwardRejectsBadInputs) {
  const Model model = Model::load(fixture_model());
  expect_error_of_kind([&] { model.forward(at::full({1, 3}, 512, at::kLong)); }, ErrorKind::kInvalidArgument);
  expect_error_of_kind([&] { model.forward(at::zeros({1, 3}, at::kInt)); }, ErrorKind::kInvalidArgument);
  ForwardOptions o;
  o.attention_mask = at::ones({1, 2}, at::kLong);
  expect_error_of_kind([&] { model.forward(at::zeros({1, 3}, at::kLong), o); }, ErrorKind::kInvalidArgument);
}

// Δ(x) = x A (a fixed matrix): an adapter with its own tensor.
class AddMatrix final : public Adapter {
 public:
  explicit AddMatrix(at::Tensor a) : a_(std::move(a)) {}
  std::string_view kind() const override { return "test"; }
  at::Tensor delta(const at::Tensor& x, const at::Tensor&, const BaseOperator&) const override {
    return at::matmul(x, a_);
  }
  NamedTensors tensors() const override { return {{"test_a", a_}}; }

 private:
  at::Tensor a_;
};

TEST(ModelTest, SlotsAreNamedLikeHfModules) {
  Model model = Model::load(fixture_model());
  const std::vector<LinearSlot*> slots = model.slots();
  ASSERT_EQ(slots.size(), 2u * 7 + 1);
  EXPECT_EQ(slots[0]->name(), "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(slots[6]->name(), "model.layers.0.mlp.down_proj");
  EXPECT_EQ(slots[7]->name(), "model.layers.1.self_attn.q_proj");
  EXPECT_EQ(slots.back()->name(), "lm_head");
  EXPECT_EQ(model.slot("model.layers.1.self_attn.k_proj").out_features(), 32);
  EXPECT_EQ(model.slot("model.layers.1.mlp.down_proj").in_features(), 176);
  expect_error_of_kind([&] { model.slot("model.layers.9.self_attn.q_proj"); }, ErrorKind::kNotFound);
}

TEST(ModelTest, AdaptersAddTheirDeltaAndBasesCanBeReplaced) {
  Model model = Model::load(fixture_model());
  const at::Tensor ids = expected().load("input_ids").narrow(0, 0, 1);
  at::NoGradGuard no_grad;
  const at::Tensor base = model.forward(ids);
  LinearSlot& v = model.slot("model.layers.0.self_attn.v_proj");

  // forward = base(x) + Δ(x): an adapter equal to W_v's own contribution doubles v, which is what
  // a dense base of 2·W_v computes.
  const auto& dense = dynamic_cast<const DenseOperator&>(v.base());
  v.add_adapter("double", std::make_shared<AddMatrix>(dense.weight().t().contiguous()));
  const at::Tensor adapted = model.forward(ids);
  EXPECT_GT(max_abs_diff(adapted, base), 1e-3);
  EXPECT_EQ(v.adapter_names(), std::vector<std::string>{"double"});
  expect_error_of_kind(
      [&] {
        v.add_adapter("double", std::make_shared<AddMatrix>(at::zeros({64, 32})));
      },
      ErrorKind::kInvalidArgument);

  v.set_adapters_enabled(false);
  EXPECT_TRUE(at::equal(model.forward(ids), base));
  v.set_adapters_enabled(true);
  auto removed = v.remove_adapter("double");
  EXPECT_TRUE(at::equal(model.forward(ids), base));
  expect_error_of_kind([&] { v.remove_adapter("double"); }, ErrorKind::kNotFound);

  auto old = v.replace_base(std::make_shared<DenseOperator>(dense.weight() * 2));
  EXPECT_LE(max_abs_diff(model.forward(ids), adapted), 1e-5);
  expect_error_of_kind(
      [&] {
        v.replace_base(std::make_shared<DenseOperator>(at::zeros({3, 64})));
      },
      ErrorKind::kInvalidArgument);
  v.replace_base(old);
  EXPECT_TRUE(at::equal(model.forward(ids), base));
}

TEST(ModelTest, ReducedPrecisionRunsCloseToFloat32) {
  const Model f32 = Model::load(fixture_model());
  const Model bf16 = Model::load(fixture_model(), {at::kBFloat16, at::kCPU});
  EXPECT_EQ(bf16.named_tensors()[0].second.scalar_type(), at::kBFloat16);
  const at::Tensor ids = expected().load("input_ids");
  c10::InferenceMode guard;
  const at::Tensor a = f32.forward(ids), b = bf16.forward(ids);
  EXPECT_EQ(b.scalar_type(), at::kBFloat16);
  EXPECT_LT(testing::rel_fro_error(b, a), 0.05);
}

}  // namespace
}  // namespace lowrank::nn
