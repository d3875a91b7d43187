// Neighborhood attention: the tiled kernel (Fused NA's structure on the CPU) against the naive
// gather kernel, forward, in 1-D and 2-D in one run (ops/neighborhood.h). Each row reports both
// medians (interleaved, so that machine drift affects both alike), their ratio naive / tiled, and
// the largest difference between the two outputs. float32, B = 1, 4 heads, head dim 64.
// The targets: ≥ 3× in 1-D, ≥ 2× in 2-D, the 1-D gain the larger (the paper reports its
// GPU kernels at +1607% / +581% over naive ones).
//
//   build/bin/bench_neighborhood [--out bench/results/neighborhood.json] [--repeats 5]
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/ops/neighborhood.h"
#include "timing.h"

namespace {

using lowrank::ops::NeighborhoodAxis;
using lowrank::ops::NeighborhoodKernel;

struct Row {
  std::string name;
  std::vector<int64_t> spatial;  // {L} or {H, W}
  std::vector<NeighborhoodAxis> axes;
};

}  // namespace

int main(int argc, char** argv) {
  std::string out = "bench/results/neighborhood.json";
  int repeats = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
  }
  const std::vector<Row> rows = {
      {"1d_L4096_k7", {4096}, {{7, 1, false}}},
      {"1d_L4096_k31", {4096}, {{31, 1, false}}},
      {"1d_L4096_k15_causal_d2", {4096}, {{15, 2, true}}},
      {"2d_64x64_k7", {64, 64}, {{7, 1, false}, {7, 1, false}}},
      {"2d_32x32_k13", {32, 32}, {{13, 1, false}, {13, 1, false}}},
  };
  const int64_t B = 1, heads = 4, D = 64;
  lowrank::Json results = lowrank::Json::array();
  std::printf("%-26s %12s %12s %8s %10s\n", "row", "naive_ms", "tiled_ms", "ratio", "max_diff");
  for (const Row& r : rows) {
    std::vector<int64_t> shape = {B, heads};
    shape.insert(shape.end(), r.spatial.begin(), r.spatial.end());
    shape.push_back(D);
    at::manual_seed(1);
    const at::Tensor q = at::randn(shape), k = at::randn(shape), v = at::randn(shape);
    std::vector<int64_t> bias_shape = {heads};
    for (const NeighborhoodAxis& a : r.axes) bias_shape.push_back(2 * a.kernel - 1);
    const at::Tensor bias = at::randn(bias_shape).mul(0.1);
    const double scale = 0.125;
    at::Tensor naive, tiled;
    const auto [t_naive, t_tiled] = lowrank::bench::paired_median_seconds(
        [&] {
          naive =
              lowrank::ops::neighborhood_attention(q, k, v, bias, r.axes, scale, NeighborhoodKernel::kNaive);
        },
        [&] {
          tiled =
              lowrank::ops::neighborhood_attention(q, k, v, bias, r.axes, scale, NeighborhoodKernel::kTiled);
        },
        repeats);
    const double diff = (naive - tiled).abs().max().item<double>();
    std::printf("%-26s %12.2f %12.2f %8.2f %10.2e\n", r.name.c_str(), t_naive * 1e3, t_tiled * 1e3,
                t_naive / t_tiled, diff);
    results.push_back({{"row", r.name},
                       {"naive_ms", t_naive * 1e3},
                       {"tiled_ms", t_tiled * 1e3},
                       {"naive_over_tiled", t_naive / t_tiled},
                       {"max_abs_diff", diff}});
  }
  lowrank::write_json_file(out, lowrank::Json{{"benchmark", "neighborhood"},
                                              {"dtype", "float32"},
                                              {"batch", B},
                                              {"heads", heads},
                                              {"head_dim", D},
                                              {"threads", at::get_num_threads()},
                                              {"repeats", repeats},
                                              {"rows", results}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
