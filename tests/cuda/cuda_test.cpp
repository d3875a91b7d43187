// The CUDA paths against their CPU twins (the oracle: the CPU kernels and model, themselves tested
// against loops, autograd and the transformers fixtures): the packed INT4/INT8 kernel and its
// dequantisation, the gathered LoRA kernel, a model's logits, a mixed-adapter batch, compressed
// models, and training with and without bf16 autocast. Each test is skipped where libtorch sees
// no CUDA device (every CPU-only build and machine).
#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/InferenceMode.h>

#include <cstdio>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "lowrank/adapt/model_adapters.h"
#include "lowrank/compress/calibration.h"
#include "lowrank/compress/format.h"
#include "lowrank/compress/methods.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/ops/group_quant.h"
#include "lowrank/ops/lora_gather.h"
#include "lowrank/train/trainer.h"
#include "tests/serve/engine_testing.h"
#include "tests/testing.h"
#include "tests/train/trainer_testing.h"

namespace lowrank {
namespace {

namespace fs = std::filesystem;
using testing::max_abs_diff;

#define LOWRANK_REQUIRE_CUDA() \
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device"

const at::Device kCuda(at::kCUDA, 0);

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kFloat);
}

using testing::rel_max_error;

TEST(CudaGroupQuantTest, PackedKernelAndDequantizationMatchTheCpu) {
  LOWRANK_REQUIRE_CUDA();
  const int64_t out = 67;
  for (int bits : {4, 8}) {
    for (int64_t g : {64, 128, 32, 8, 6}) {  // g = 6: no packed CUDA kernel, dequantise + GEMM
      const int64_t in = g == 6 ? 252 : 256;
      const ops::GroupQuantized q = ops::quantize_groups(randn({out, in}, 5), bits, g);
      const ops::GroupQuantized qc = q.to(kCuda);
      // Dequantisation is one float32 product per weight, as on the CPU: bit for bit.
      EXPECT_TRUE(at::equal(qc.dequantize(at::kFloat).cpu(), q.dequantize(at::kFloat))) << bits << " " << g;
      EXPECT_TRUE(at::equal(qc.dequantize(at::kBFloat16).cpu(), q.dequantize(at::kFloat).to(at::kBFloat16)));
      const at::Tensor bias = randn({out}, 6);
      for (int64_t rows : {1, 3, 9, 32, 40}) {
        for (const at::ScalarType dtype : {at::kFloat, at::kBFloat16, at::kHalf}) {
          SCOPED_TRACE(lowrank::str("bits ", bits, " g ", g, " rows ", rows, " dtype ", dtype));
          const at::Tensor x = randn({rows, in}, 7 + rows).to(dtype);
          // The CPU path on the same (rounded) activations, in float32.
          const at::Tensor ref = ops::group_quant_linear(x.to(at::kFloat), q, bias.to(dtype).to(at::kFloat));
          const at::Tensor y = ops::group_quant_linear(x.to(kCuda), qc, bias.to(dtype).to(kCuda));
          EXPECT_EQ(y.scalar_type(), dtype);
          EXPECT_EQ(y.sizes(), (at::IntArrayRef{rows, out}));
          // float32: summation order only; 16-bit outputs: one rounding of the result (and, past
          // 32 rows, cuBLAS's 16-bit GEMM).
          const double tol = dtype == at::kFloat ? 1e-5 : dtype == at::kHalf ? 2e-3 : 1e-2;
          EXPECT_LT(rel_max_error(y, ref), tol);
        }
      }
    }
  }
  // A CPU input with CUDA weights is refused, naming both devices.
  const ops::GroupQuantized qc = ops::quantize_groups(randn({4, 64}, 8), 4, 64).to(kCuda);
  EXPECT_NE(testing::error_of([&] {
              ops::group_quant_linear(randn({1, 64}, 9), qc);
            }).find("cuda"),
            std::string::npos);
}

TEST(CudaLoraGatherTest, MatchesPerRowProducts) {
  LOWRANK_REQUIRE_CUDA();
  const int64_t in = 37;
  const std::vector<int64_t> ranks = {1, 3, 4, 8, 13, 64, 300};
  const std::vector<int64_t> outs = {5, 37, 16, 33, 8, 700, 70};
  std::vector<at::Tensor> xs, ys, as, bs, expected;
  std::vector<ops::LoraGatherTask> tasks;
  for (size_t t = 0; t < ranks.size(); ++t) {
    const int64_t tokens = 1 + static_cast<int64_t>(t % 3);
    xs.push_back(randn({tokens, in}, 10 + t).to(kCuda));
    ys.push_back(randn({tokens, outs[t]}, 20 + t).to(kCuda));
    as.push_back(randn({ranks[t], in}, 30 + t).to(kCuda));
    bs.push_back(randn({outs[t], ranks[t]}, 40 + t).to(kCuda));
    const double scale = 0.5 + static_cast<double>(t);
    const auto d = [](const at::Tensor& v) { return v.to(at::kCPU, at::kDouble); };
    expected.push_back(at::addmm(d(ys[t]), at::matmul(d(xs[t]), d(as[t]).t()), d(bs[t]).t(), 1.0, scale));
    tasks.push_back({xs[t].const_data_ptr<float>(), ys[t].mutable_data_ptr<float>(),
                     as[t].const_data_ptr<float>(), bs[t].const_data_ptr<float>(), tokens, in, outs[t],
                     ranks[t], static_cast<float>(scale)});
  }
  ops::lora_gather_cuda(tasks, 0);
  for (size_t t = 0; t < tasks.size(); ++t) {
    const double err = (ys[t].to(at::kCPU, at::kDouble) - expected[t]).abs().max().item<double>();
    EXPECT_LE(err, 1e-5 * expected[t].abs().max().item<double>() * static_cast<double>(ranks[t]))
        << "task " << t;
  }
  ops::LoraGatherTask bad = tasks[0];
  bad.rank = 0;
  EXPECT_THROW(ops::lora_gather_cuda({&bad, 1}, 0), InvalidArgument);
}

TEST(CudaModelTest, FixtureLogitsMatchTransformers) {
  LOWRANK_REQUIRE_CUDA();
  nn::LoadOptions o;
  o.device = kCuda;
  const nn::Model model = nn::Model::load(testing::fixture("hf/llama-tiny/model"), o);
  const SafetensorsFile e = SafetensorsFile::open(testing::fixture("hf/llama-tiny/expected.safetensors"));
  c10::InferenceMode guard;
  const at::Tensor logits = model.forward(e.load("input_ids")).cpu();
  const double diff = max_abs_diff(logits, e.load("logits"));
  std::printf("fixture logits on CUDA: max |lowrank - transformers| = %.3g\n", diff);
  EXPECT_LE(diff, 1e-4);
}

// A decode batch whose rows use different adapters: on CUDA the rows of at most
// lora_gather_max_tokens tokens take the gathered kernel; the logits equal the CPU model's and the
// CUDA segment form's (GEMM pairs, gathered kernel off).
TEST(CudaRoutingTest, MixedAdapterBatchMatchesTheCpuAndTheSegmentForm) {
  LOWRANK_REQUIRE_CUDA();
  testing::TempDir dir;
  testing::tiny_llama({}, 1).save(dir / "m");
  nn::LoadOptions on_cuda;
  on_cuda.device = kCuda;
  nn::Model cpu = nn::Model::load(dir / "m"), gpu = nn::Model::load(dir / "m", on_cuda);
  std::vector<std::string> names = {"r2", "r4", "r8"};
  for (nn::Model* m : {&cpu, &gpu}) {
    for (size_t i = 0; i < names.size(); ++i) {
      adapt::AdapterConfig c;
      c.method = "lora";
      c.r = 2 << i;
      c.lora_alpha = 2.0 * static_cast<double>(c.r);
      c.target_regex = "all-linear";
      const adapt::AttachedAdapter a = adapt::create_adapter(*m, names[i], c, i);
      at::Generator gen = at::detail::createCPUGenerator(100 + i);
      at::NoGradGuard g;
      for (auto& [n, t] : a.parameters()) t.add_((at::randn(t.sizes(), gen) * 0.2).to(t.device()));
    }
  }
  nn::AdapterRouting routing;
  routing.adapters = names;
  routing.row_adapter = {2, 0, -1, 1, 1, 0};
  nn::ForwardOptions options;
  options.routing = &routing;
  const at::Tensor ids = at::arange(6, at::kLong).reshape({6, 1}) * 5 % 24;
  c10::InferenceMode g;
  const at::Tensor want = cpu.forward(ids, options);
  const at::Tensor gathered = gpu.forward(ids, options).cpu();
  const int64_t saved = ops::lora_gather_max_tokens();
  ops::set_lora_gather_max_tokens(0);
  const at::Tensor segments = gpu.forward(ids, options).cpu();
  ops::set_lora_gather_max_tokens(saved);
  EXPECT_LE(max_abs_diff(gathered, want), 1e-5);
  EXPECT_LE(max_abs_diff(gathered, segments), 1e-5);
}

// The serving engine on CUDA (paged KV cache, continuous batching, requests for adapters of ranks
// 2, 8 and 4 and the base model sharing decode steps): each request's greedy tokens are those
// nn::generate gives on the CPU for the same model with only its adapter attached.
TEST(CudaServeTest, MixedAdapterBatchMatchesEachRequestGeneratedAloneOnTheCpu) {
  LOWRANK_REQUIRE_CUDA();
  using namespace serve::testing_support;
  testing::TempDir dir;
  testing::tiny_llama(shape(), kModelSeed).save(dir / "m");
  nn::LoadOptions on_cuda;
  on_cuda.device = kCuda;
  serve::EngineConfig config;
  config.num_pages = 64;
  config.page_tokens = 4;
  serve::Engine engine(std::make_shared<nn::Model>(nn::Model::load(dir / "m", on_cuda)), nullptr,
                       std::vector<int64_t>{}, config);
  for (const AdapterSpec& a : kAdapters) engine.create_adapter(a.name, lora(a.rank), a.seed);
  const std::vector<std::tuple<std::string, int64_t, int64_t>> cases = {
      {"a2", 5, 1}, {"", 9, 2}, {"b8", 3, 3}, {"c4", 12, 4}, {"a2", 7, 5}, {"b8", 1, 6}};
  std::vector<std::shared_ptr<serve::RequestStream>> streams;
  for (const auto& [adapter, length, salt] : cases) {
    streams.push_back(engine.submit(greedy(adapter, prompt_of(length, salt), 10)).stream);
    ASSERT_TRUE(streams.back());
  }
  engine.run_until_idle();
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& [adapter, length, salt] = cases[i];
    EXPECT_EQ(tokens_of(*streams[i]), reference(adapter, prompt_of(length, salt), 10)) << "request " << i;
  }
}

// Quantised (RTN INT4) and SVDQuant models written to a directory and loaded onto CUDA compute the
// CPU-loaded model's logits, for decode-sized (packed kernel) and prefill-sized inputs.
TEST(CudaCompressTest, CompressedModelsLoadOntoCudaWithTheCpuLogits) {
  LOWRANK_REQUIRE_CUDA();
  for (const char* method : {"rtn", "svdquant"}) {
    SCOPED_TRACE(method);
    testing::TempDir dir;
    testing::TinyLlama shape;
    shape.vocab_size = 32;
    shape.hidden_size = 64;
    shape.intermediate_size = 128;
    shape.heads = 4;
    nn::Model model = testing::tiny_llama(shape, 3);
    model.save(dir / "dense");
    compress::CompressOptions o;
    o.method = method;
    o.rank = std::string(method) == "svdquant" ? 8 : 0;
    std::optional<compress::CalibrationStatistics> stats;
    if (compress::calibration_needs(o).any) {
      compress::CalibrationOptions co;
      co.samples = 4;
      co.seq_len = 16;
      co.progress = false;
      stats = compress::calibrate(model, at::arange(400, at::kLong) * 7 % 32, co);
    }
    compress::compress_model(model, o, stats ? &*stats : nullptr);
    compress::save_compressed_model(model, dir / "c", dir / "dense", at::kFloat);
    nn::LoadOptions on_cuda;
    on_cuda.device = kCuda;
    const nn::Model cpu = compress::load_model(dir / "c"), gpu = compress::load_model(dir / "c", on_cuda);
    c10::InferenceMode g;
    for (int64_t seq : {4, 24}) {  // 8 and 48 rows: the packed kernel, then dequantisation + GEMM
      const at::Tensor ids = at::arange(2 * seq, at::kLong).reshape({2, seq}) * 5 % 32;
      EXPECT_LE(rel_max_error(gpu.forward(ids), cpu.forward(ids)), 1e-5) << seq << " tokens";
    }
  }
}

// Training on CUDA: the first loss (same weights, same windows) equals the CPU's; float32 training
// follows the CPU run; bf16 autocast changes the numbers (it is on) by a bfloat16-sized amount and
// still trains. GaLore's projected update runs on the device as well.
TEST(CudaTrainTest, Float32FollowsTheCpuAndBf16AutocastTrains) {
  LOWRANK_REQUIRE_CUDA();
  testing::TempDir dir;
  const train::TokenStream data = train::testing_support::pattern_stream(4000);
  // The settings of TrainerTest.LossFallsOnALearnableStream: on the CPU the loss ends at 0.36 of
  // its start, for AdamW and for GaLore at rank 4 alike.
  train::TrainerConfig c = train::testing_support::small_config();
  c.steps = 20;
  c.lr = 2e-2;
  c.min_lr = 2e-3;
  c.warmup_steps = 4;
  c.adam.weight_decay = 0;
  auto run = [&](const std::string& name, at::Device device, const train::TrainerConfig& config) {
    testing::tiny_llama({}, 1).save(dir / (name + "-init"));
    nn::LoadOptions o;
    o.device = device;
    nn::Model model = nn::Model::load(dir / (name + "-init"), o);
    return train::train(model, data, config, dir / name, false).steps;
  };
  const auto cpu = run("cpu", at::kCPU, c);
  const auto f32 = run("f32", kCuda, c);
  train::TrainerConfig bf = c;
  bf.autocast = "bf16";
  const auto bf16 = run("bf16", kCuda, bf);
  ASSERT_EQ(cpu.size(), 20u);
  ASSERT_EQ(f32.size(), 20u);
  ASSERT_EQ(bf16.size(), 20u);
  EXPECT_NEAR(f32[0].loss, cpu[0].loss, 1e-5 * cpu[0].loss);
  // Twenty steps later only float rounding (summation order) separates the two runs.
  EXPECT_NEAR(f32.back().loss, cpu.back().loss, 1e-2 * cpu.back().loss);
  EXPECT_NE(bf16[0].loss, f32[0].loss);
  EXPECT_NEAR(bf16[0].loss, f32[0].loss, 2e-2 * f32[0].loss);
  EXPECT_LT(bf16.back().loss, 0.6 * bf16[0].loss);
  std::printf("CUDA training, loss at steps 1 and 20: cpu %.5f %.5f, f32 %.5f %.5f, bf16 %.5f %.5f\n",
              cpu[0].loss, cpu.back().loss, f32[0].loss, f32.back().loss, bf16[0].loss, bf16.back().loss);

  train::TrainerConfig galore = c;
  galore.optimizer = "galore";
  galore.optimizer_options = Json{{"rank", 4}, {"update_gap", 10}};
  const auto g_cpu = run("galore-cpu", at::kCPU, galore);
  const auto g_gpu = run("galore-gpu", kCuda, galore);
  EXPECT_NEAR(g_gpu[0].loss, g_cpu[0].loss, 1e-5 * g_cpu[0].loss);
  EXPECT_LT(g_gpu.back().loss, 0.6 * g_gpu[0].loss);
  std::printf("GaLore rank 4, loss at step 20: cpu %.5f, cuda %.5f\n", g_cpu.back().loss, g_gpu.back().loss);
}

}  // namespace
}  // namespace lowrank
