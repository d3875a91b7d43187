#include "lowrank/ops/lora_gather.h"

#include <gtest/gtest.h>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>

#include <vector>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::ops {
namespace {

at::Tensor randn(std::vector<int64_t> shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn(shape, gen, at::kFloat);
}

std::vector<LoraGatherKernel> kernels() {
  std::vector<LoraGatherKernel> out = {LoraGatherKernel::kPortable, LoraGatherKernel::kAuto};
  if (lora_gather_avx2_usable()) out.push_back(LoraGatherKernel::kAvx2);
  return out;
}

// Rows with their own adapter each (ranks that are and are not multiples of 4 and 8, output
// widths with a remainder, several tokens per row), against the double-precision oracle
// y + s·(x Aᵀ) Bᵀ computed by ATen per row.
TEST(LoraGatherTest, MatchesPerRowProducts) {
  const int64_t in = 37;
  const std::vector<int64_t> ranks = {1, 3, 4, 8, 13, 64};
  const std::vector<int64_t> outs = {5, 37, 16, 33, 8, 70};
  const int saved_threads = at::get_num_threads();
  for (const LoraGatherKernel kernel : kernels()) {
    for (int threads : {1, 2}) {
      at::set_num_threads(threads);
      std::vector<at::Tensor> xs, ys, as, bs, expected;
      std::vector<LoraGatherTask> tasks;
      for (size_t t = 0; t < ranks.size(); ++t) {
        const int64_t tokens = 1 + static_cast<int64_t>(t % 3);
        xs.push_back(randn({tokens, in}, 10 + t));
        ys.push_back(randn({tokens, outs[t]}, 20 + t));
        as.push_back(randn({ranks[t], in}, 30 + t));
        bs.push_back(randn({outs[t], ranks[t]}, 40 + t));
        const double scale = 0.5 + static_cast<double>(t);
        expected.push_back(at::addmm(ys[t].to(at::kDouble),
                                     at::matmul(xs[t].to(at::kDouble), as[t].to(at::kDouble).t()),
                                     bs[t].to(at::kDouble).t(), 1.0, scale));
        LoraGatherTask task;
        task.x = xs[t].const_data_ptr<float>();
        task.y = ys[t].mutable_data_ptr<float>();
        task.a = as[t].const_data_ptr<float>();
        task.b = bs[t].const_data_ptr<float>();
        task.tokens = tokens;
        task.in = in;
        task.out = outs[t];
        task.rank = ranks[t];
        task.scale = static_cast<float>(scale);
        tasks.push_back(task);
      }
      lora_gather(tasks, kernel);
      for (size_t t = 0; t < tasks.size(); ++t) {
        const double err = (ys[t].to(at::kDouble) - expected[t]).abs().max().item<double>();
        const double bound = 1e-5 * expected[t].abs().max().item<double>() * static_cast<double>(ranks[t]);
        EXPECT_LE(err, bound) << "kernel " << static_cast<int>(kernel) << ", task " << t << ", rank "
                              << ranks[t];
      }
    }
  }
  at::set_num_threads(saved_threads);
}

TEST(LoraGatherTest, RejectsBadTasks) {
  const auto x = randn({1, 4}, 1), a = randn({2, 4}, 2), b = randn({3, 2}, 3);
  auto y = at::zeros({1, 3});
  LoraGatherTask task{x.const_data_ptr<float>(),
                      y.mutable_data_ptr<float>(),
                      a.const_data_ptr<float>(),
                      b.const_data_ptr<float>(),
                      1,
                      4,
                      3,
                      2,
                      1.0f};
  LoraGatherTask no_rank = task;
  no_rank.rank = 0;
  EXPECT_THROW(lora_gather({&no_rank, 1}), InvalidArgument);
  EXPECT_NE(testing::error_of([&] { lora_gather({&no_rank, 1}); }).find("rank = 0"), std::string::npos);
  LoraGatherTask null_b = task;
  null_b.b = nullptr;
  EXPECT_THROW(lora_gather({&null_b, 1}), InvalidArgument);
  EXPECT_TRUE(y.eq(0).all().item<bool>());  // nothing ran
  if (!lora_gather_avx2_usable()) {
    EXPECT_THROW(lora_gather({&task, 1}, LoraGatherKernel::kAvx2), Unsupported);
  }
}

}  // namespace
}  // namespace lowrank::ops
