// The serving engine on a MatryoshkaKV-compressed model (compress/matryoshka_kv.h): its pages hold
// each layer's r_k key and r_v value coordinates (heads of a layer padded to its largest rank), a
// byte budget buys the pages those widths allow, and every request decodes exactly the tokens
// nn::generate gives the same model alone with its contiguous KV cache (the independent oracle:
// no pages, no block tables, no in-place paged kernel). Adapters are refused on such pages.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "lowrank/compress/matryoshka_kv.h"
#include "lowrank/core/error.h"
#include "lowrank/nn/generate.h"
#include "lowrank/serve/engine.h"
#include "lowrank/serve/paged_kv.h"
#include "tests/serve/engine_testing.h"
#include "tests/testing.h"

namespace lowrank::serve {
namespace {

using namespace testing_support;

// The engine tests' model with PCA bases from two calibration windows and ranks that differ by
// layer, head and K/V (head_dim 8): layer 0 keeps keys 3/5 and values 6/2, layer 1 keys 4/4 and
// values 1/3.
nn::Model compressed_model() {
  nn::Model model = testing::tiny_llama(shape(), kModelSeed);
  compress::CalibrationOptions calibration;
  calibration.samples = 2;
  calibration.seq_len = 24;
  calibration.progress = false;
  const at::Tensor tokens = at::arange(50, at::kLong).mul(7).remainder(shape().vocab_size);
  std::vector<compress::MatryoshkaKVLayer> layers =
      compress::pca_init(compress::collect_kv_statistics(model, tokens, calibration), 8);
  EXPECT_EQ(layers.size(), 2u);
  layers[0].key_ranks = {3, 5};
  layers[0].value_ranks = {6, 2};
  layers[1].key_ranks = {4, 4};
  layers[1].value_ranks = {1, 3};
  compress::install_kv_compression(model, layers);
  return model;
}

std::vector<int64_t> generated_alone(const nn::Model& model, const std::vector<int64_t>& prompt, int64_t n) {
  nn::GenerateOptions options;
  options.max_new_tokens = n;
  return nn::generate(model, {prompt}, options)[0].tokens;
}

TEST(CompressedPagesTest, MatryoshkaKVPagesDecodeAsGenerateAndCostTheirWidths) {
  ASSERT_EQ(shape().hidden_size / shape().heads, 8);
  const nn::Model oracle = compressed_model();
  EngineConfig config;
  config.page_tokens = 4;  // sequences span several, non-contiguous pages
  config.num_pages = 48;
  config.scheduler.max_batch_tokens = 7;  // the 17-token prompt prefills in chunks over its pages
  config.scheduler.max_running = 4;
  Engine engine(std::make_shared<nn::Model>(compressed_model()), nullptr, {}, config);

  // The pool: per layer [slots, n_kv, largest rank], and a page costs exactly those widths.
  const PagedKV& kv = engine.kv_pool();
  ASSERT_TRUE(kv.compressed());
  EXPECT_EQ(kv.keys[0].size(2), 5);
  EXPECT_EQ(kv.values[0].size(2), 6);
  EXPECT_EQ(kv.keys[1].size(2), 4);
  EXPECT_EQ(kv.values[1].size(2), 3);
  const int64_t n_kv = shape().kv_heads;
  EXPECT_EQ(kv.page_bytes(), 4 * n_kv * ((5 + 6) + (4 + 3)) * 4);
  const int64_t full_page = 2 * 2 * 4 * n_kv * 8 * 4;  // layers · K and V · page · n_kv · D · float32
  EXPECT_LT(kv.page_bytes(), full_page);
  EXPECT_EQ(engine.stats().pool_bytes, 48 * kv.page_bytes());

  // A byte budget of 48 full pages buys 48 · 256 / 144 = 85 compressed ones.
  EngineConfig budget;
  budget.page_tokens = 4;
  budget.pool_bytes = 48 * full_page;
  const Engine by_bytes(std::make_shared<nn::Model>(compressed_model()), nullptr, {}, budget);
  EXPECT_EQ(by_bytes.stats().scheduler.pool_pages, 48 * full_page / kv.page_bytes());

  // Mixed lengths decode together (prefill chunks, then in-place paged decode steps).
  struct Case {
    int64_t length, salt;
  };
  const std::vector<Case> cases = {{5, 1}, {17, 2}, {3, 3}, {9, 4}};
  std::vector<std::shared_ptr<RequestStream>> streams;
  for (const Case& c : cases)
    streams.push_back(engine.submit(greedy("", prompt_of(c.length, c.salt), 12)).stream);
  engine.run_until_idle();
  bool differs = false;
  const nn::Model plain = testing::tiny_llama(shape(), kModelSeed);
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::vector<int64_t> prompt = prompt_of(cases[i].length, cases[i].salt);
    const std::vector<int64_t> expected = generated_alone(oracle, prompt, 12);
    EXPECT_EQ(tokens_of(*streams[i]), expected) << "request " << i;
    differs = differs || expected != generated_alone(plain, prompt, 12);
  }
  // The compression changes what is generated (else the comparison could not tell the paths apart).
  EXPECT_TRUE(differs);

  // Adapters cannot share narrower pages: refused at registration, naming the reason.
  try {
    engine.create_adapter("a2", lora(2), 11);
    FAIL() << "an adapter was registered on compressed pages";
  } catch (const Unsupported& e) {
    EXPECT_NE(std::string(e.what()).find("MatryoshkaKV"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowrank::serve
