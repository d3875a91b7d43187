// Packed group-quantised GEMV (lowrank::ops::group_quant_linear) against the fp32 dense at::linear.
//
// Weight: 4096x4096 float32, N(0, 0.02²), quantised to INT4 (and INT8) in groups of 64 input
// channels (ops::quantize_groups). Cases, each timed by Google Benchmark at the current intra-op
// thread count (LOWRANK_NUM_THREADS, else every core):
//   dense/rows:R    at::linear(x, W) in float32, x [R, 4096]
//   int4/rows:R     ops::group_quant_linear(x, W4) (both R are below the packed-kernel threshold)
//   int8/rows:1     the same for INT8
// for R = 1 (decode, batch 1) and R = 16 (a small prefill). A summary follows, from the same run:
//   - speed ratio dense / int4 per R, from the two timed alternately (bench/timing.h), and the
//     target of the issue: batch-1 INT4 >= 2.5x faster than dense;
//   - max |y_int4 - x Ŵᵀ| (Ŵ = dequantize(), float64 oracle) relative to max |x Ŵᵀ|: the kernel's
//     own error (float summation order), and ||y_int4 - x Wᵀ|| / ||x Wᵀ||: the quantisation error;
//   - for R in {1, 2, 4, ..., 64}: the packed kernel against dequantise + at::linear, and the dense
//     at::linear (where the crossover lies; group_quant_linear switches above
//     kGroupQuantPackedMaxRows rows);
//   - storage: W4 residual (storage_bytes) + a rank-32 16-bit branch ((out + in)·32·2 bytes) +
//     λ (in·2 bytes), over the 16-bit dense weight (out·in·2 bytes): SVDQuant's footprint.
//
//   - W4A4 (ops/w4a4_gemm.h) with SVDQuant's rank-32 branch and smoothing, per R in {1, 16, 64, 256}:
//     fused = one pass over x that scales, quantises to INT4 and computes x̂ L2ᵀ, then the integer
//     product and the up projection; unfused = x̂ = x ⊘ λ, its quantisation and x̂ L2ᵀ as separate
//     passes (at::linear for the down projection), then the same product and up projection. Timed
//     alternately; ratio = unfused / fused. Beside them the W4A4 product alone and the W4A16
//     packed/dequantised group_quant_linear of the same weight.
//
// The process keeps freed memory (core/process.h), as the lowrank program does, so dequantise's
// 64 MiB buffer is not page-faulted afresh each call.
//
//   LOWRANK_NUM_THREADS=1 build/bin/bench_compress [--benchmark_filter=rows:1] [--repeats 21]
//   build/bin/bench_compress --w4a4-only [--repeats 11]     (the W4A4 section alone: a short run)
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <torch/version.h>

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "lowrank/compress/methods.h"
#include "lowrank/core/json.h"
#include "lowrank/core/process.h"
#include "lowrank/core/threads.h"
#include "lowrank/nn/generate.h"
#include "lowrank/ops/group_quant.h"
#include "lowrank/ops/group_quant_kernels.h"
#include "lowrank/ops/w4a4_gemm.h"
#include "models.h"
#include "timing.h"

namespace {

using lowrank::ops::GroupQuantized;

constexpr int64_t kOut = 4096, kIn = 4096, kRank = 32;

struct Problem {
  at::Tensor W;  // float32 [out, in]
  GroupQuantized w4, w8;
  at::Tensor x1, x16;  // [1, in], [16, in]
};

Problem& problem() {
  static Problem p = [] {
    Problem q;
    at::Generator gen = at::detail::createCPUGenerator(42);
    q.W = at::randn({kOut, kIn}, gen, at::kFloat) * 0.02;
    q.w4 = lowrank::ops::quantize_groups(q.W, 4, 64);
    q.w8 = lowrank::ops::quantize_groups(q.W, 8, 64);
    q.x1 = at::randn({1, kIn}, gen, at::kFloat);
    q.x16 = at::randn({16, kIn}, gen, at::kFloat);
    return q;
  }();
  return p;
}

const at::Tensor& input(int64_t rows) {
  return rows == 1 ? problem().x1 : problem().x16;
}

void bm_dense(benchmark::State& state, int64_t rows) {
  const auto& x = input(rows);
  for (auto _ : state) benchmark::DoNotOptimize(at::linear(x, problem().W).data_ptr());
}

void bm_quant(benchmark::State& state, int64_t rows, int bits) {
  const auto& x = input(rows);
  const GroupQuantized& w = bits == 4 ? problem().w4 : problem().w8;
  for (auto _ : state) benchmark::DoNotOptimize(lowrank::ops::group_quant_linear(x, w).data_ptr());
}

// max |y - x Ŵᵀ| / max |x Ŵᵀ| with the oracle in float64.
double kernel_error(const at::Tensor& y, const at::Tensor& x, const GroupQuantized& w) {
  const auto ref = at::matmul(x.to(at::kDouble), w.dequantize(at::kDouble).mT());
  return (y.to(at::kDouble) - ref).abs().max().item<double>() / ref.abs().max().item<double>();
}

double quant_error(const at::Tensor& y, const at::Tensor& x, const at::Tensor& W) {
  const auto ref = at::matmul(x.to(at::kDouble), W.to(at::kDouble).mT());
  return (y.to(at::kDouble) - ref).norm().item<double>() / ref.norm().item<double>();
}

int parse_repeats(int* argc, char** argv, bool* w4a4_only) {
  int repeats = 21, out = 1;
  for (int i = 1; i < *argc; ++i) {
    if (!std::strcmp(argv[i], "--w4a4-only")) {
      *w4a4_only = true;
    } else if (!std::strcmp(argv[i], "--repeats") && i + 1 < *argc) {
      repeats = std::atoi(argv[++i]);
    } else {
      argv[out++] = argv[i];
    }
  }
  *argc = out;
  return repeats;
}

// The W4A4 + rank-32 branch layer, fused against unfused (see the header).
void w4a4_fusion(int repeats) {
  namespace ops = lowrank::ops;
  const Problem& p = problem();
  at::Generator gen = at::detail::createCPUGenerator(11);
  const at::Tensor smooth = at::rand({kIn}, gen, at::kFloat) + 0.5f;
  const at::Tensor inv = at::reciprocal(smooth);
  const at::Tensor down = at::randn({kRank, kIn}, gen, at::kFloat) * 0.02;
  const at::Tensor up = at::randn({kOut, kRank}, gen, at::kFloat) * 0.02;
  const char* kernel = ops::detail::w4a4_avxvnni_available() ? "AVX-VNNI"
                       : ops::detail::w4a4_avx2_compiled()   ? "AVX2 maddubs"
                                                             : "portable";
  std::printf(
      "\nW4A4 %ldx%ld g64 + rank-%ld branch (%s kernel): fused vs unfused activation pass (ratio = "
      "unfused / fused), the W4A4 product alone and W4A16 (group_quant_linear)\n",
      static_cast<long>(kOut), static_cast<long>(kIn), static_cast<long>(kRank), kernel);
  std::printf("%5s %12s %12s %8s %14s %12s %14s\n", "rows", "fused us", "unfused us", "ratio", "w4a4 gemm us",
              "w4a16 us", "fused-unfused");
  for (int64_t rows : {1, 16, 64, 256}) {
    const at::Tensor x = at::randn({rows, kIn}, gen, at::kFloat);
    auto fused = [&] {
      const ops::Int4Activations a = ops::quantize_activations_int4(x, 64, inv, down);
      return ops::w4a4_gemm(a, p.w4).add_(at::linear(a.lora_act, up));
    };
    auto unfused = [&] {
      const at::Tensor xs = x * inv;
      const ops::Int4Activations a = ops::quantize_activations_int4(xs, 64);
      const at::Tensor h = at::linear(xs, down);
      return ops::w4a4_gemm(a, p.w4).add_(at::linear(h, up));
    };
    const int n = rows >= 64 ? std::max(3, repeats / 3) : repeats;
    const auto [tf, tu] =
        lowrank::bench::paired_median_seconds([&] { benchmark::DoNotOptimize(fused().data_ptr()); },
                                              [&] { benchmark::DoNotOptimize(unfused().data_ptr()); }, n);
    const ops::Int4Activations a = ops::quantize_activations_int4(x, 64);
    const double gemm = lowrank::bench::median_seconds(
        [&] { benchmark::DoNotOptimize(ops::w4a4_gemm(a, p.w4).data_ptr()); }, n);
    const double w4a16 = lowrank::bench::median_seconds(
        [&] { benchmark::DoNotOptimize(ops::group_quant_linear(x, p.w4).data_ptr()); }, n);
    // The two paths compute the same values up to float summation order.
    const double differ =
        (fused() - unfused()).abs().max().item<double>() / unfused().abs().max().item<double>();
    std::printf("%5ld %12.1f %12.1f %8.2f %14.1f %12.1f %14.2e\n", static_cast<long>(rows), tf * 1e6,
                tu * 1e6, tu / tf, gemm * 1e6, w4a16 * 1e6, differ);
  }
}

}  // namespace

// Greedy decode of a whole model: the small preset's shape (6 layers, hidden 256, MLP 768, vocab
// 8192, random weights), dense and compressed by `rtn` (INT4) and by `svd` at 40% fewer parameters
// (compress::compress_model, no calibration needed). Decode tokens/s = new tokens / (time of
// prompt + new tokens − time of the prompt alone), batch 1.
static void decode_end_to_end(int repeats) {
  using namespace lowrank;
  const Json config = bench::small_preset_config();
  constexpr int64_t kPrompt = 16, kNew = 64;
  std::vector<std::vector<int64_t>> prompt(1);
  for (int64_t i = 0; i < kPrompt; ++i) prompt[0].push_back((i * 37 + 11) % 8192);
  std::printf(
      "\nEnd-to-end greedy decode, batch 1, prompt %ld, %ld new tokens (small preset shape, random "
      "weights)\n",
      static_cast<long>(kPrompt), static_cast<long>(kNew));
  std::printf("%-10s %14s %12s\n", "model", "decode tok/s", "vs dense");
  double dense_rate = 0;
  for (const char* variant : {"dense", "rtn-int4", "svd-40%"}) {
    nn::Model model = nn::Model::random(nn::ModelConfig::from_json(config, "bench model"), 0);
    compress::CompressOptions o;
    if (std::string(variant) == "rtn-int4") {
      o.method = "rtn";
      compress::compress_model(model, o, nullptr);
    } else if (std::string(variant) == "svd-40%") {
      o.method = "svd";
      o.ratio = 0.4;
      compress::compress_model(model, o, nullptr);
    }
    nn::GenerateOptions g;
    g.max_new_tokens = 1;
    const double prefill =
        bench::median_seconds([&] { nn::generate(model, prompt, g); }, std::max(3, repeats / 4));
    g.max_new_tokens = 1 + kNew;
    const double total =
        bench::median_seconds([&] { nn::generate(model, prompt, g); }, std::max(3, repeats / 4));
    const double rate = static_cast<double>(kNew) / (total - prefill);
    if (dense_rate == 0) dense_rate = rate;
    std::printf("%-10s %14.1f %11.2fx\n", variant, rate, rate / dense_rate);
  }
}

int main(int argc, char** argv) {
  bool w4a4_only = false;
  const int repeats = parse_repeats(&argc, argv, &w4a4_only);
  lowrank::keep_freed_memory();  // as the lowrank program does (dequantise's buffer is reused)
  const int threads = lowrank::configure_threads();
  if (w4a4_only) {
    std::printf("libtorch %s, %d intra-op threads\n", TORCH_VERSION, threads);
    w4a4_fusion(repeats);
    return 0;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  Problem& p = problem();
  const auto view4 = [&] {
    lowrank::ops::detail::GroupQuantView v;
    v.bits = 4;
    v.group_size = p.w4.group_size;
    v.out_features = kOut;
    v.in_features = kIn;
    v.packed = static_cast<const uint8_t*>(p.w4.packed.const_data_ptr());
    v.scales = p.w4.scales.const_data_ptr<float>();
    return v;
  }();

  for (int64_t rows : {1, 16}) {
    const std::string r = "/rows:" + std::to_string(rows);
    benchmark::RegisterBenchmark(("dense" + r).c_str(), bm_dense, rows)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
    benchmark::RegisterBenchmark(("int4" + r).c_str(), bm_quant, rows, 4)
        ->Unit(benchmark::kMicrosecond)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("int8/rows:1", bm_quant, 1, 8)->Unit(benchmark::kMicrosecond)->UseRealTime();
  std::printf("libtorch %s, %d intra-op threads, %s, weight %ldx%ld float32, groups of 64\n", TORCH_VERSION,
              threads,
              lowrank::ops::detail::group_quant_avx2_usable(view4) ? "AVX2 kernel" : "portable kernel",
              static_cast<long>(kOut), static_cast<long>(kIn));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();

  std::printf("\nSummary (%d paired repeats; ratio = dense / quantised time)\n", repeats);
  std::printf("%-6s %5s %12s %12s %8s %14s %12s\n", "format", "rows", "dense us", "quant us", "ratio",
              "kernel err", "quant err");
  double batch1_ratio = 0;
  for (int bits : {4, 8}) {
    for (int64_t rows : {1, 16}) {
      if (bits == 8 && rows != 1) continue;
      const auto& x = input(rows);
      const GroupQuantized& w = bits == 4 ? p.w4 : p.w8;
      const auto [dense, quant] = lowrank::bench::paired_median_seconds(
          [&] { benchmark::DoNotOptimize(at::linear(x, p.W).data_ptr()); },
          [&] { benchmark::DoNotOptimize(lowrank::ops::group_quant_linear(x, w).data_ptr()); }, repeats);
      const auto y = lowrank::ops::group_quant_linear(x, w);
      std::printf("int%-3d %5ld %12.1f %12.1f %8.2f %14.2e %12.4f\n", bits, static_cast<long>(rows),
                  dense * 1e6, quant * 1e6, dense / quant, kernel_error(y, x, w), quant_error(y, x, p.W));
      if (bits == 4 && rows == 1) batch1_ratio = dense / quant;
    }
  }

  std::printf(
      "\nINT4 packed kernel vs dequantise + at::linear (group_quant_linear packs up to %ld rows), and the\n"
      "fp32 dense at::linear of the same rows\n",
      static_cast<long>(lowrank::ops::detail::kGroupQuantPackedMaxRows));
  std::printf("%5s %12s %16s %12s %14s\n", "rows", "packed us", "dequant+gemm us", "dense us", "gemm/packed");
  at::Generator gen = at::detail::createCPUGenerator(7);
  for (int64_t rows : {1, 2, 4, 8, 16, 32, 64}) {
    const auto x = at::randn({rows, kIn}, gen, at::kFloat);
    auto y = at::empty({rows, kOut}, x.options());
    const int sweep_repeats = std::max(3, repeats / 4);
    const auto [packed, gemm] = lowrank::bench::paired_median_seconds(
        [&] {
          lowrank::ops::detail::group_quant_packed_matmul(view4, x.const_data_ptr<float>(), rows, nullptr,
                                                          y.mutable_data_ptr<float>());
        },
        [&] { benchmark::DoNotOptimize(at::linear(x, p.w4.dequantize()).data_ptr()); }, sweep_repeats);
    const double dense = lowrank::bench::median_seconds(
        [&] { benchmark::DoNotOptimize(at::linear(x, p.W).data_ptr()); }, sweep_repeats);
    std::printf("%5ld %12.1f %16.1f %12.1f %14.2f\n", static_cast<long>(rows), packed * 1e6, gemm * 1e6,
                dense * 1e6, gemm / packed);
  }

  const double w4_bytes = static_cast<double>(p.w4.storage_bytes());
  const double branch_bytes = static_cast<double>((kOut + kIn) * kRank * 2 + kIn * 2);
  const double dense16 = static_cast<double>(kOut * kIn * 2);
  std::printf(
      "\nStorage: W4 residual %.2f MiB + rank-%ld 16-bit branch and λ %.2f MiB = %.3f of the 16-bit dense "
      "%.2f MiB (W4 alone %.3f)\n",
      w4_bytes / (1 << 20), static_cast<long>(kRank), branch_bytes / (1 << 20),
      (w4_bytes + branch_bytes) / dense16, dense16 / (1 << 20), w4_bytes / dense16);
  std::printf(
      "\nTarget (4096x4096 batch-1 INT4 GEMV >= 2.5x faster than fp32 dense, %d threads): %s (%.2fx)\n",
      threads, batch1_ratio >= 2.5 ? "MET" : "MISSED", batch1_ratio);
  w4a4_fusion(repeats);
  decode_end_to_end(repeats);
  return 0;
}
