// A decode step's attention over the paged KV pool at mixed context lengths: ops::paged_attention
// (serve::PagedStep::attend, what the engine's decode pass runs) against the gathered path it
// replaces (PagedStep::update copies every row's past into a padded [B, n_kv, S_max, D], then the
// model's key mask and SDPA), in the same run.
//
// Workload: --rows rows whose context lengths run geometrically from --min to --max tokens (the
// default 32 rows of 64 … 4096), each row's pages scattered through a pool that holds them all
// (pages of --page tokens), grouped-query heads (--heads query heads over --kv-heads KV heads of
// --head-dim), --dtype float32 or bfloat16 keys and values. One timed call is one layer of one step:
// begin() (the step's bookkeeping), the new token's keys and values written, and the attention —
// for the gathered path also the attention mask the model builds per step. Each path's time is the
// median of --repeats calls, the two interleaved; printed with the ratio and the largest
// difference between the two outputs.
//
//   build/bin/bench_paged_attention [--rows 32] [--min 64] [--max 4096] [--page 16] [--heads 8]
//       [--kv-heads 2] [--head-dim 64] [--dtype float32|bfloat16] [--threads N] [--repeats 20] [--json]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include "lowrank/core/json.h"
#include "lowrank/core/threads.h"
#include "lowrank/nn/attention.h"
#include "lowrank/nn/config.h"
#include "lowrank/serve/paged_kv.h"
#include "timing.h"

using namespace lowrank;

int main(int argc, char** argv) {
  int64_t rows = 32, min_len = 64, max_len = 4096, page = 16, heads = 8, kv_heads = 2, head_dim = 64;
  int repeats = 20, threads = 0;
  bool json = false;
  at::ScalarType dtype = at::kFloat;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    auto is = [&](const char* flag) { return !std::strcmp(argv[i], flag) && has_value; };
    if (is("--rows"))
      rows = std::atoll(argv[++i]);
    else if (is("--min"))
      min_len = std::atoll(argv[++i]);
    else if (is("--max"))
      max_len = std::atoll(argv[++i]);
    else if (is("--page"))
      page = std::atoll(argv[++i]);
    else if (is("--heads"))
      heads = std::atoll(argv[++i]);
    else if (is("--kv-heads"))
      kv_heads = std::atoll(argv[++i]);
    else if (is("--head-dim"))
      head_dim = std::atoll(argv[++i]);
    else if (is("--repeats"))
      repeats = std::atoi(argv[++i]);
    else if (is("--threads"))
      threads = std::atoi(argv[++i]);
    else if (is("--dtype")) {
      const std::string d = argv[++i];
      const bool bf16 = d == "bfloat16" || d == "bf16";
      if (!bf16 && d != "float32" && d != "f32") {
        std::fprintf(stderr, "bench_paged_attention: --dtype must be float32 or bfloat16, got %s\n",
                     d.c_str());
        return 1;
      }
      dtype = bf16 ? at::kBFloat16 : at::kFloat;
    } else if (!std::strcmp(argv[i], "--json"))
      json = true;
    else {
      std::fprintf(stderr, "bench_paged_attention: unknown argument %s\n", argv[i]);
      return 1;
    }
  }
  if (rows < 1 || min_len < 1 || max_len < min_len || page < 1 || kv_heads < 1 || heads % kv_heads != 0 ||
      head_dim < 1 || repeats < 1) {
    std::fprintf(stderr,
                 "bench_paged_attention: need --rows >= 1, 1 <= --min <= --max, --page >= 1, --heads a "
                 "multiple of --kv-heads, --head-dim >= 1, --repeats >= 1\n");
    return 1;
  }
  configure_threads(threads);
  c10::InferenceMode inference;

  // Context lengths min · (max/min)^(b/(rows−1)), shuffled so that the batch is not sorted.
  std::vector<int64_t> lengths;
  for (int64_t b = 0; b < rows; ++b) {
    const double f = rows > 1 ? static_cast<double>(b) / static_cast<double>(rows - 1) : 1.0;
    lengths.push_back(std::llround(static_cast<double>(min_len) *
                                   std::pow(static_cast<double>(max_len) / static_cast<double>(min_len), f)));
  }
  std::mt19937 rng(42);
  std::shuffle(lengths.begin(), lengths.end(), rng);
  int64_t num_pages = 0;
  for (int64_t L : lengths) num_pages += (L + page - 1) / page;
  std::vector<int32_t> free_pages(static_cast<size_t>(num_pages));
  std::iota(free_pages.begin(), free_pages.end(), 0);
  std::shuffle(free_pages.begin(), free_pages.end(), rng);
  std::vector<std::vector<int32_t>> tables;
  size_t next_page = 0;
  for (int64_t L : lengths) {
    tables.emplace_back();
    for (int64_t p = 0; p < (L + page - 1) / page; ++p) tables.back().push_back(free_pages[next_page++]);
  }

  nn::ModelConfig config;
  config.num_hidden_layers = 1;
  config.num_attention_heads = heads;
  config.num_key_value_heads = kv_heads;
  config.head_dim = head_dim;
  config.sliding_window = {0};
  serve::PagedKV pool(config, num_pages, page, at::TensorOptions().dtype(dtype));
  at::Generator gen = at::detail::createCPUGenerator(7);
  pool.keys[0].normal_(0, 1, gen);
  pool.values[0].normal_(0, 1, gen);
  std::vector<serve::PagedStep::Row> step_rows;
  for (size_t b = 0; b < lengths.size(); ++b)
    step_rows.push_back({.start = lengths[b] - 1, .new_tokens = 1, .block_table = &tables[b]});
  const at::Tensor q = at::randn({rows, heads, 1, head_dim}, gen, at::kFloat).to(dtype);
  const at::Tensor k = at::randn({rows, kv_heads, 1, head_dim}, gen, at::kFloat).to(dtype);
  const at::Tensor v = at::randn({rows, kv_heads, 1, head_dim}, gen, at::kFloat).to(dtype);
  const double scale = 1.0 / std::sqrt(static_cast<double>(head_dim));
  const int64_t groups = heads / kv_heads;

  at::Tensor paged_out, padded_out;
  auto paged = [&] {
    serve::PagedStep step(pool, step_rows);
    step.begin(1, at::Tensor());
    paged_out = *step.attend(0, q, k, v, scale);
  };
  auto padded = [&] {
    serve::PagedStep step(pool, step_rows);
    const at::Tensor key_valid = step.begin(1, at::Tensor());
    const auto [keys, values] = step.update(0, k, v);
    const int64_t S = keys.size(2);
    const nn::AttentionMask mask = nn::make_attention_mask(key_valid, true, S - 1, 1, 0, at::kCPU);
    // As nn::Attention's decode: the query heads of a KV head are the rows of one attention.
    padded_out = at::scaled_dot_product_attention(q.view({rows, kv_heads, groups, head_dim}), keys, values,
                                                  mask.allowed, 0.0, false, scale)
                     .view({rows, heads, 1, head_dim});
  };
  const auto [paged_s, padded_s] = bench::paired_median_seconds(paged, padded, repeats);
  const double max_diff = paged_out.to(at::kFloat).sub(padded_out.to(at::kFloat)).abs().max().item<double>();
  int64_t tokens = std::accumulate(lengths.begin(), lengths.end(), int64_t{0});
  const char* dtype_name = dtype == at::kFloat ? "float32" : "bfloat16";
  if (json) {
    OrderedJson j;
    j["rows"] = rows;
    j["min_len"] = min_len;
    j["max_len"] = max_len;
    j["tokens"] = tokens;
    j["page_tokens"] = page;
    j["heads"] = heads;
    j["kv_heads"] = kv_heads;
    j["head_dim"] = head_dim;
    j["dtype"] = dtype_name;
    j["threads"] = at::get_num_threads();
    j["paged_ms"] = paged_s * 1e3;
    j["padded_ms"] = padded_s * 1e3;
    j["speedup"] = padded_s / paged_s;
    j["max_abs_diff"] = max_diff;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    std::printf(
        "decode attention, one layer: %lld rows of %lld…%lld tokens (%lld in all), pages of %lld, "
        "%lld/%lld heads × %lld, %s, %d threads\n",
        static_cast<long long>(rows), static_cast<long long>(min_len), static_cast<long long>(max_len),
        static_cast<long long>(tokens), static_cast<long long>(page), static_cast<long long>(heads),
        static_cast<long long>(kv_heads), static_cast<long long>(head_dim), dtype_name,
        at::get_num_threads());
    std::printf("  paged (block tables, online softmax)  %9.3f ms\n", paged_s * 1e3);
    std::printf("  padded (gather to S_max, mask, SDPA)  %9.3f ms\n", padded_s * 1e3);
    std::printf("  padded / paged  %.2fx   max |paged - padded| %.2e\n", padded_s / paged_s, max_diff);
  }
  return 0;
}
