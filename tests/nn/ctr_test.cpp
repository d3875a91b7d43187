// The CTR models (nn/ctr.h): DeepFM's FM term against the explicit pairwise sum Σ_{f<g} ⟨e_f, e_g⟩,
// the DCNv2 cross network against a float64 loop over DeepCTR's stacked kernels, DeepCTR's tensor
// names, the directory round trip (dense and compressed) and the loader's errors.
#include <gtest/gtest.h>

#include <ATen/ATen.h>

#include "lowrank/compress/ctr_compression.h"
#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/nn/ctr.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

using testing::max_abs_diff;

CtrConfig config(const std::string& type) {
  CtrConfig c;
  c.model_type = type;
  c.schema.sparse = {{"C1", 4}, {"C2", 9}, {"C3", 6}};
  c.schema.dense = {"I1", "I2"};
  c.embedding_dim = 5;
  c.hidden_units = {8, 6};
  c.cross_layers = type == "dcnv2" ? 2 : 0;
  return c;
}

CtrModel model(const std::string& type, uint64_t seed = 3) {
  CtrModel m = CtrModel::random(config(type), seed);
  at::NoGradGuard g;
  at::manual_seed(seed);
  for (auto& [name, t] : m.parameters()) t.copy_(at::randn(t.sizes()) * 0.3);
  return m;
}

data::CtrData rows(int64_t n, uint64_t seed) {
  const CtrConfig c = config("dnn");
  at::manual_seed(seed);
  std::vector<at::Tensor> cols;
  // Ids up to V inclusive: V is the OOV bucket, a real row of every table.
  for (const data::CtrField& f : c.schema.sparse)
    cols.push_back(at::randint(0, f.vocab_size + 1, {n, 1}, at::kLong));
  data::CtrData d;
  d.sparse = at::cat(cols, 1);
  d.dense = at::rand({n, 2});
  d.labels = at::zeros({n});
  return d;
}

TEST(CtrModel, DeepFmAddsTheExplicitPairwiseInteractions) {
  // Same seed, same tensors: DeepFM's logits minus the DNN's are the FM term alone.
  const CtrModel fm = model("deepfm"), dnn = model("dnn");
  const data::CtrData d = rows(20, 4);
  at::NoGradGuard g;
  const at::Tensor diff = (fm.forward(d) - dnn.forward(d)).to(at::kDouble);
  at::Tensor expected = at::zeros({20}, at::kDouble);
  for (int f = 0; f < 3; ++f)
    for (int h = f + 1; h < 3; ++h) {
      const at::Tensor ef = fm.embeddings()[f].table.to(at::kDouble).index_select(0, d.sparse.select(1, f));
      const at::Tensor eh = fm.embeddings()[h].table.to(at::kDouble).index_select(0, d.sparse.select(1, h));
      expected += (ef * eh).sum(1);
    }
  EXPECT_LT(max_abs_diff(diff, expected), 1e-5);
}

TEST(CtrModel, Dcnv2CrossNetworkMatchesAFloat64Loop) {
  const CtrModel m = model("dcnv2");
  const data::CtrData d = rows(6, 5);
  at::NoGradGuard g;
  const at::Tensor logits = m.forward(d).to(at::kDouble);
  // By hand, from the file's tensors (DeepCTR's names and layout), row by row in float64.
  NamedTensors named = m.named_tensors();
  auto get = [&](const std::string& n) {
    for (auto& [k, t] : named)
      if (k == n) return t.to(at::kDouble);
    ADD_FAILURE() << "no tensor " << n;
    return at::Tensor();
  };
  const at::Tensor kernels = get("crossnet.kernels"), bias = get("crossnet.bias");
  ASSERT_EQ(kernels.sizes(), (at::IntArrayRef{2, 17, 17}));
  for (int64_t b = 0; b < 6; ++b) {
    std::vector<at::Tensor> parts;
    double lin = 0;
    for (int f = 0; f < 3; ++f) {
      const int64_t id = d.sparse[b][f].item<int64_t>();
      parts.push_back(get("embedding_dict.C" + std::to_string(f + 1) + ".weight")[id]);
      lin += get("linear_model.embedding_dict.C" + std::to_string(f + 1) + ".weight")[id][0].item<double>();
    }
    parts.push_back(d.dense[b].to(at::kDouble));
    lin += at::dot(d.dense[b].to(at::kDouble), get("linear_model.weight").squeeze(1)).item<double>();
    const at::Tensor x0 = at::cat(parts).unsqueeze(1);  // [17, 1]
    at::Tensor x = x0;
    for (int l = 0; l < 2; ++l) x = x0 * (at::matmul(kernels[l], x) + bias[l]) + x;
    at::Tensor h = x0.squeeze(1);
    for (int i = 0; i < 2; ++i)
      h = at::relu(at::mv(get("dnn.linears." + std::to_string(i) + ".weight"), h) +
                   get("dnn.linears." + std::to_string(i) + ".bias"));
    const double z = lin +
                     at::dot(get("dnn_linear.weight").squeeze(0), at::cat({x.squeeze(1), h})).item<double>() +
                     get("out.bias")[0].item<double>();
    EXPECT_NEAR(logits[b].item<double>(), z, 1e-4);
  }
}

TEST(CtrModel, DirectoryRoundTripsDenseAndCompressed) {
  testing::TempDir dir;
  CtrModel m = model("dcnv2");
  m.save(dir / "dense");
  const data::CtrData d = rows(30, 6);
  const CtrModel loaded = CtrModel::load(dir / "dense");
  at::NoGradGuard g;
  EXPECT_TRUE(at::equal(loaded.forward(d), m.forward(d)));
  EXPECT_TRUE(SafetensorsFile::open(dir / "dense/model.safetensors").contains("crossnet.kernels"));

  compress::CtrCompressOptions o;
  o.ratio = 0.5;
  o.relu = true;
  compress::compress_ctr_model(m, d, o);
  m.save(dir / "afm");
  const CtrModel back = CtrModel::load(dir / "afm");
  EXPECT_TRUE(at::equal(back.forward(d), m.forward(d)));
  EXPECT_EQ(back.parameter_count(), m.parameter_count());
  const SafetensorsFile f = SafetensorsFile::open(dir / "afm/model.safetensors");
  EXPECT_TRUE(f.contains("dnn.after_linears.0.weight"));
  EXPECT_TRUE(f.contains("crossnet.1.up.weight"));
  EXPECT_TRUE(f.contains("embedding_proj.C2.weight"));
  EXPECT_TRUE(back.dnn()[0].relu);
  EXPECT_THROW(m.save(dir / "afm"), InvalidArgument);  // an existing directory is not overwritten
}

TEST(CtrModel, FusedInferenceLookupsEqualTheFieldByFieldPath) {
  // A compressed DeepFM: C1's table (5 rows) stays dense, the others are factored; C3 is made dense
  // again, so both fused groups and the reordering back into field order run.
  CtrModel m = model("deepfm");
  const data::CtrData d = rows(40, 9);
  compress::CtrCompressOptions o;
  o.ratio = 0.5;
  const auto report = compress::compress_ctr_model(m, d, o);
  ASSERT_EQ(report.layers[0].rank, -1);
  ASSERT_GT(report.layers[1].rank, 0);
  // C3 back to a dense table, so that a factored field (C2) sits between two dense ones.
  {
    CtrEmbedding& e = m.embeddings()[2];
    ASSERT_TRUE(e.factored());
    e = {at::linear(e.table, e.proj_weight, e.proj_bias).detach(), {}, {}};
  }
  const at::Tensor per_field = m.forward(d).detach();  // gradients on: field by field
  at::Tensor fused;
  {
    at::NoGradGuard g;
    fused = m.forward(d);
  }
  EXPECT_LT(max_abs_diff(fused, per_field), 1e-5);
  // An in-place change of a table is seen (the cache is rebuilt), as is a copy's own change.
  {
    at::NoGradGuard g;
    m.embeddings()[2].table.mul_(2);
    EXPECT_GT(max_abs_diff(m.forward(d), fused), 1e-4);
  }
  EXPECT_LT(max_abs_diff(m.forward(d).detach(),
                         [&] {
                           at::NoGradGuard g;
                           return m.forward(d);
                         }()),
            1e-5);
}

TEST(CtrModel, LoaderNamesBadFilesAndTensors) {
  testing::TempDir dir;
  EXPECT_THROW(CtrModel::load(dir.path()), NotFound);
  model("dnn").save(dir / "m");
  // A tensor of the wrong shape.
  {
    const SafetensorsFile f = SafetensorsFile::open(dir / "m/model.safetensors");
    std::vector<NamedTensor> tensors;
    for (const TensorInfo& info : f.tensors())
      tensors.push_back(
          {info.name, info.name == "dnn.linears.1.weight" ? at::zeros({3, 3}) : f.load(info.name)});
    save_safetensors(dir / "m/model.safetensors", tensors);
  }
  try {
    CtrModel::load(dir / "m");
    FAIL() << "loaded a bad tensor";
  } catch (const Corruption& e) {
    EXPECT_NE(std::string(e.what()).find("dnn.linears.1.weight"), std::string::npos) << e.what();
  }
  testing::write_text_file(dir / "m/ctr_config.json",
                           R"({"model_type": "wide", "sparse_fields": [], "dense_fields": ["a"]})");
  EXPECT_THROW(CtrModel::load(dir / "m"), InvalidArgument);
}

}  // namespace
}  // namespace lowrank::nn
