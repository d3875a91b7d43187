// The contract every compression method of compress::registry() passes, run over the registry's
// own list: the compressed directory reloads to the same logits and exports to a dense model
// that computes them too; `lowrank logits`' loading and run (compress::load_model, nn::run_logits)
// reads it; and the output error each slot's report gives equals the error measured on the slot's
// actual calibration inputs, ‖X Ŵᵀ − X Wᵀ‖_F / ‖X Wᵀ‖_F with X recorded during a forward pass
// and Ŵ applied through the reloaded operator's own forward. Per-method oracles (Eckart–Young,
// whitening identities, 2:4 patterns, ...) stay in compress_test.cpp.
#include <gtest/gtest.h>

#include <map>

#include "lowrank/compress/calibration.h"
#include "lowrank/compress/format.h"
#include "lowrank/compress/methods.h"
#include "lowrank/compress/pipeline.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/run.h"
#include "tests/compress/compress_testing.h"
#include "tests/registry_testing.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

using compress_testing::small_model;
using compress_testing::token_stream;
using testing::max_abs_diff;

constexpr int64_t kCalibrationTokens = 24;

// The calibration text: one window of kCalibrationTokens tokens (and the next-token target).
at::Tensor calibration_tokens() {
  return token_stream(kCalibrationTokens + 1);
}

// Options that run `method` at a moderate compression: a parameter ratio for the methods that
// pick ranks (from the registry entry), small iteration counts for the iterative ones.
CompressOptions options_for(const std::string& method) {
  CompressOptions o;
  o.method = method;
  const Method& m = find_method(method);
  if (m.ranks != Method::Ranks::kNone) o.ratio = 0.25;
  // AFM is exact on its calibration outputs when k reaches their span (23 directions for 24 tokens;
  // ratio 0.25 gives k = 24 on q_proj): a smaller k so that it loses something measurable.
  if (method == "afm") o.ratio = 0.75;
  if (method == "svdquant") o.rank = 8;
  // A few iterations: robust PCA stops short of W = L + S, so its error is measurable.
  if (method == "rpca") o.method_options = Json{{"max_iters", 3}};
  return o;
}

// A dense base that keeps the inputs it sees (the slot's actual X, [tokens, in]).
class RecordingOperator final : public nn::BaseOperator {
 public:
  explicit RecordingOperator(std::shared_ptr<const nn::BaseOperator> base) : base_(std::move(base)) {}
  std::string_view kind() const override { return base_->kind(); }
  int64_t in_features() const override { return base_->in_features(); }
  int64_t out_features() const override { return base_->out_features(); }
  at::Tensor forward(const at::Tensor& x) const override {
    inputs_ = x.reshape({-1, x.size(-1)}).detach().clone();
    return base_->forward(x);
  }
  nn::NamedTensors tensors() const override { return base_->tensors(); }
  at::Tensor dense_weight() const override { return base_->dense_weight(); }
  const at::Tensor& inputs() const { return inputs_; }

 private:
  std::shared_ptr<const nn::BaseOperator> base_;
  mutable at::Tensor inputs_;
};

class CompressionContractTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CompressionContractTest, DirectoryRoundTripsAndReportsTheMeasuredErrors) {
  const std::string& method = GetParam();
  if (find_method(method).compress == nullptr)  // matryoshka_kv: the cache, not the slots
    GTEST_SKIP() << method << " compresses the KV cache; its round trip is in matryoshka_kv_test.cpp";
  testing::TempDir dir;
  nn::Model model = small_model(3);
  model.save(dir / "dense");
  nn::Model dense = nn::Model::load(dir / "dense");
  const CompressOptions o = options_for(method);
  // Statistics with the Gram always, so that every method's report gives its output error.
  CalibrationOptions co;
  co.samples = 1;
  co.seq_len = kCalibrationTokens;
  co.fisher = calibration_needs(o).fisher;
  co.progress = false;
  const CalibrationStatistics stats = calibrate(model, calibration_tokens(), co);
  const CompressReport report = compress_model(model, o, &stats);
  ASSERT_GT(report.slots.size(), 0u);
  const at::Tensor ids = calibration_tokens().narrow(0, 0, 12).reshape({2, 6});
  at::Tensor logits;
  {
    c10::InferenceMode g;
    logits = model.forward(ids);
  }

  // The directory: reloaded, through `lowrank logits`' loader and run, and as a dense export.
  save_compressed_model(model, dir / "compressed", dir / "dense", at::kFloat);
  nn::Model loaded = load_model(dir / "compressed");
  save_safetensors(dir / "ids.safetensors", std::vector<NamedTensor>{{"input_ids", ids}});
  nn::run_logits(loaded, dir / "ids.safetensors", dir / "logits.safetensors");
  EXPECT_LT(max_abs_diff(SafetensorsFile::open(dir / "logits.safetensors").load("logits"), logits), 1e-5);
  export_dense(dir / "compressed", dir / "exported");
  const nn::Model exported = nn::Model::load(dir / "exported");
  {
    c10::InferenceMode g;
    EXPECT_LT(max_abs_diff(exported.forward(ids), logits), 1e-4);
  }

  // The reported errors against the measured ones, slot by slot.
  nn::Model recorded = nn::Model::load(dir / "dense");
  std::map<std::string, at::Tensor> inputs;
  {
    std::map<std::string, std::shared_ptr<const RecordingOperator>> recorders;
    for (nn::LinearSlot* s : recorded.slots()) {
      auto r = std::make_shared<const RecordingOperator>(s->base_ptr());
      recorders[s->name()] = r;
      s->replace_base(r);
    }
    c10::InferenceMode guard;
    recorded.forward(calibration_tokens().narrow(0, 0, kCalibrationTokens).unsqueeze(0));
    for (const auto& [name, r] : recorders) inputs[name] = r->inputs();
  }
  for (const SlotReport& r : report.slots) {
    SCOPED_TRACE(r.name);
    const nn::BaseOperator& compressed = loaded.slot(r.name).base();
    EXPECT_EQ(compressed.kind(), r.kind);
    const at::Tensor W = dense.slot(r.name).base().dense_weight().to(at::kDouble);
    const at::Tensor& X = inputs.at(r.name);
    at::Tensor approx;
    {
      c10::InferenceMode g;
      approx = compressed.forward(X).to(at::kDouble);
    }
    const at::Tensor exact = at::matmul(X.to(at::kDouble), W.t());
    const double output_error = (approx - exact).norm().item<double>() / exact.norm().item<double>();
    const double weight_error =
        (compressed.dense_weight().to(at::kDouble) - W).norm().item<double>() / W.norm().item<double>();
    if (r.kind == "dense") {  // left uncompressed (WeLore where a rank would not save parameters)
      EXPECT_LT(output_error, 1e-6);
      continue;
    }
    EXPECT_NEAR(r.output_error, output_error, 1e-6 + 1e-3 * output_error);
    EXPECT_NEAR(r.weight_error, weight_error, 1e-5 + 1e-4 * weight_error);
    EXPECT_GT(r.output_error, 1e-4);  // a compression loses something at these settings
  }
}

INSTANTIATE_TEST_SUITE_P(Registered, CompressionContractTest,
                         ::testing::ValuesIn(testing::registered_names(registry())),
                         testing::method_test_name);

}  // namespace
}  // namespace lowrank::compress
