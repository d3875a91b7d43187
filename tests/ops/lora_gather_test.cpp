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

// The paged form: adapters scattered over the slots of two arenas (a shuffled slot table, modules
// starting mid-table, rows of 13 and columns of 7 or 12 elements spread over slots of 5), in
// float32, bfloat16 and float16. The oracle gathers A [r, in] and B [out, r] element by element
// from the arenas by the layout's definition, then computes y + s·(x Aᵀ) Bᵀ in float64 from the
// same (rounded) inputs.
TEST(LoraGatherTest, PagedProductReadsRowsThroughTheSlotTable) {
  const int64_t width = 5, in = 13, num_slots = 96;
  const std::vector<int64_t> ranks = {1, 3, 4, 8};
  const std::vector<int64_t> outs = {7, 12, 7, 12};
  const std::vector<int64_t> firsts = {0, 4, 9, 2};
  const int64_t spr = 3;  // ⌈13 / 5⌉
  const std::vector<std::pair<at::ScalarType, LoraElement>> types = {
      {at::kFloat, LoraElement::kF32}, {at::kBFloat16, LoraElement::kBF16}, {at::kHalf, LoraElement::kF16}};
  for (const auto& [dtype, element] : types) {
    const at::Tensor keys = randn({num_slots, width}, 1).to(dtype);
    const at::Tensor values = randn({num_slots, width}, 2).to(dtype);
    at::Generator gen = at::detail::createCPUGenerator(3);
    const at::Tensor slots = at::randperm(num_slots, gen, at::kLong);  // logical -> physical
    const auto* table = slots.const_data_ptr<int64_t>();
    std::vector<at::Tensor> xs, ys, expected;
    std::vector<LoraPagedTask> tasks;
    for (size_t t = 0; t < ranks.size(); ++t) {
      const int64_t tokens = 1 + static_cast<int64_t>(t % 2), r = ranks[t], out = outs[t];
      xs.push_back(randn({tokens, in}, 10 + t).to(dtype));
      ys.push_back(randn({tokens, out}, 20 + t).to(dtype));
      at::Tensor a = at::zeros({r, in}, at::kDouble), b = at::zeros({out, r}, at::kDouble);
      const at::Tensor k64 = keys.to(at::kDouble), v64 = values.to(at::kDouble);
      for (int64_t j = 0; j < r; ++j) {
        for (int64_t i = 0; i < in; ++i) a[j][i] = k64[table[firsts[t] + j * spr + i / width]][i % width];
        for (int64_t o = 0; o < out; ++o) b[o][j] = v64[table[firsts[t] + j * spr + o / width]][o % width];
      }
      const double scale = 0.5 + static_cast<double>(t);
      expected.push_back(
          at::addmm(ys[t].to(at::kDouble), at::matmul(xs[t].to(at::kDouble), a.t()), b.t(), 1.0, scale));
      LoraPagedTask task;
      task.x = xs[t].const_data_ptr();
      task.y = ys[t].mutable_data_ptr();
      task.a_arena = keys.const_data_ptr();
      task.b_arena = values.const_data_ptr();
      task.slots = table;
      task.first = firsts[t];
      task.slots_per_rank = spr;
      task.slot_width = width;
      task.tokens = tokens;
      task.in = in;
      task.out = out;
      task.rank = r;
      task.scale = static_cast<float>(scale);
      tasks.push_back(task);
    }
    lora_gather_paged(tasks, element);
    // float32 accumulation, then y rounded once to the element type.
    const double eps = dtype == at::kFloat ? 1e-6 : dtype == at::kHalf ? 1e-3 : 8e-3;
    for (size_t t = 0; t < tasks.size(); ++t) {
      const double err = (ys[t].to(at::kDouble) - expected[t]).abs().max().item<double>();
      EXPECT_LE(err, 4 * eps * expected[t].abs().max().item<double>())
          << c10::toString(dtype) << ", task " << t << ", rank " << ranks[t];
    }
  }
}

TEST(LoraGatherTest, PagedRejectsBadTasks) {
  const auto x = randn({1, 6}, 1), arena = randn({8, 4}, 2);
  auto y = at::zeros({1, 3});
  const std::vector<int64_t> slots = {0, 1, 2, 3, 4, 5, 6, 7};
  LoraPagedTask task;
  task.x = x.const_data_ptr();
  task.y = y.mutable_data_ptr();
  task.a_arena = task.b_arena = arena.const_data_ptr();
  task.slots = slots.data();
  task.slots_per_rank = 1;  // in = 6 needs 2 slots of 4
  task.slot_width = 4;
  task.in = 6;
  task.out = 3;
  task.rank = 2;
  EXPECT_NE(testing::error_of([&] {
              lora_gather_paged({&task, 1}, LoraElement::kF32);
            }).find("slots_per_rank = 1"),
            std::string::npos);
  task.slots_per_rank = 2;
  task.slots = nullptr;
  EXPECT_THROW(lora_gather_paged({&task, 1}, LoraElement::kF32), InvalidArgument);
  EXPECT_TRUE(y.eq(0).all().item<bool>());  // nothing ran
}

}  // namespace
}  // namespace lowrank::ops
