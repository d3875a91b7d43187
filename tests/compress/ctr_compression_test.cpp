// CTR-model compression (compress/ctr_compression.h): the factored layers AFM and SVD write equal
// their materialised dense forms in every model type; a layer's measured calibration output error is
// the tail of its output spectrum; ranks fit the parameter budget exactly (the next rank would not);
// bad options and already compressed models are refused.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/compress/ctr_compression.h"
#include "lowrank/core/error.h"
#include "lowrank/nn/ctr.h"
#include "tests/testing.h"

namespace lowrank::compress {
namespace {

using testing::max_abs_diff;

// A small CTR model and data for the layer-level checks.
data::CtrSchema tiny_schema() {
  data::CtrSchema s;
  s.sparse = {{"C1", 7}, {"C2", 40}, {"C3", 15}};
  s.dense = {"I1", "I2"};
  return s;
}

data::CtrData tiny_rows(const data::CtrSchema& s, int64_t n, uint64_t seed) {
  at::manual_seed(seed);
  std::vector<at::Tensor> cols;
  for (const data::CtrField& f : s.sparse) cols.push_back(at::randint(0, f.vocab_size, {n, 1}, at::kLong));
  return data::checked_ctr_data(s, at::cat(cols, 1), at::rand({n, s.dense_count()}),
                                at::randint(0, 2, {n}, at::kLong).to(at::kFloat), "tiny");
}

nn::CtrModel trained_looking_model(const std::string& type) {
  nn::CtrConfig c;
  c.model_type = type;
  c.schema = tiny_schema();
  c.embedding_dim = 6;
  c.hidden_units = {12, 10};
  c.cross_layers = type == "dcnv2" ? 2 : 0;
  nn::CtrModel m = nn::CtrModel::random(c, 11);
  // Scale the tiny initial weights up, so that every layer's outputs carry signal.
  at::NoGradGuard g;
  for (auto& [name, t] : m.parameters()) t.copy_(at::randn(t.sizes()) * 0.5);
  return m;
}

TEST(CtrCompression, FactoredForwardEqualsTheMaterialisedDenseModel) {
  for (const std::string type : {"dnn", "deepfm", "dcnv2"}) {
    for (const std::string method : {"afm", "svd"}) {
      SCOPED_TRACE(type + " " + method);
      nn::CtrModel model = trained_looking_model(type);
      const data::CtrData rows = tiny_rows(model.config().schema, 300, 12);
      CtrCompressOptions o;
      o.method = method;
      o.ratio = 0.4;
      const CtrCompressReport r = compress_ctr_model(model, rows, o);
      EXPECT_LT(r.model_params_after, r.model_params_before);
      // Materialise every factored layer into a dense one and compare the logits.
      nn::CtrModel dense = model;
      for (nn::CtrEmbedding& e : dense.embeddings())
        if (e.factored()) e = {at::linear(e.table, e.proj_weight, e.proj_bias), {}, {}};
      auto materialise = [](std::vector<nn::CtrLinear>& list) {
        for (nn::CtrLinear& l : list)
          if (l.factored())
            l = {at::matmul(l.up_weight, l.weight), at::addmv(l.up_bias, l.up_weight, l.bias), {}, {}, false};
      };
      materialise(dense.dnn());
      materialise(dense.cross());
      const data::CtrData batch = tiny_rows(model.config().schema, 50, 13);
      at::NoGradGuard g;
      EXPECT_LT(max_abs_diff(model.forward(batch), dense.forward(batch)), 1e-4);
    }
  }
}

TEST(CtrCompression, EveryLayersCalibrationErrorIsItsTail) {
  nn::CtrModel original = trained_looking_model("dcnv2");
  nn::CtrModel model = original;
  const data::CtrData rows = tiny_rows(model.config().schema, 400, 14);
  CtrCompressOptions o;
  o.ratio = 0.5;
  o.embeddings = false;  // one layer at a time below: the DNN's first layer sees the original input
  o.cross = false;
  const CtrCompressReport r = compress_ctr_model(model, rows, o);
  // The first DNN layer's input is the same in both models, so its output error is measured exactly.
  at::Tensor y_orig, y_new;
  original.forward(rows, [&](const std::string& l, const at::Tensor& y) {
    if (l == "dnn.linears.0") y_orig = y.to(at::kDouble);
  });
  model.forward(rows, [&](const std::string& l, const at::Tensor& y) {
    if (l == "dnn.linears.0") y_new = y.to(at::kDouble);
  });
  const double mse = (y_new - y_orig).pow(2).sum(1).mean().item<double>();
  ASSERT_EQ(r.layers[0].name, "dnn.linears.0");
  ASSERT_GT(r.layers[0].rank, 0);
  EXPECT_NEAR(mse, r.layers[0].tail, 1e-4 * (r.layers[0].tail + 1e-3) + 1e-6);
  EXPECT_GT(r.layers[0].tail, 1e-3);
}

TEST(CtrCompression, RanksFitTheParameterBudget) {
  for (double ratio : {0.3, 0.6, 0.8}) {
    const int64_t k = ctr_linear_rank(400, 429, ratio);
    EXPECT_LE(k * 430 + 400 * (k + 1), (1 - ratio) * (400 * 429 + 400));
    EXPECT_GT((k + 1) * 430 + 400 * (k + 2), (1 - ratio) * (400 * 429 + 400));
    const int64_t e = ctr_embedding_rank(1001, 16, ratio);
    EXPECT_LE(1001 * e + 16 * e + 16, (1 - ratio) * 1001 * 16);
    EXPECT_GT(1001 * (e + 1) + 16 * (e + 1) + 16, (1 - ratio) * 1001 * 16);
  }
  EXPECT_EQ(ctr_embedding_rank(8, 16, 0.9), 0);  // no k >= 1 fits a tenth of a 7-id table
}

TEST(CtrCompression, RefusesBadOptionsAndCompressedModels) {
  nn::CtrModel model = trained_looking_model("dnn");
  const data::CtrData rows = tiny_rows(model.config().schema, 50, 15);
  CtrCompressOptions o;
  EXPECT_THROW(compress_ctr_model(model, rows, o), InvalidArgument);  // neither ratio nor factor
  o.ratio = 1.2;
  EXPECT_THROW(compress_ctr_model(model, rows, o), InvalidArgument);
  o.ratio = 0.5;
  EXPECT_THROW(
      compress_ctr_model(
          model, data::CtrData{at::zeros({0, 3}, at::kLong), at::zeros({0, 2}), at::zeros({0}), 0}, o),
      InvalidArgument);  // empty calibration
  compress_ctr_model(model, rows, o);
  EXPECT_THROW(compress_ctr_model(model, rows, o), InvalidArgument);  // already compressed
}

}  // namespace
}  // namespace lowrank::compress
