// nn/autocast.h: the scope runs the CPU's matrix products in bfloat16 / float16, leaves other ops
// alone, and restores the previous state; bad modes and devices are named.
#include "lowrank/nn/autocast.h"

#include <gtest/gtest.h>

#include "lowrank/core/error.h"
#include "tests/testing.h"

namespace lowrank::nn {
namespace {

TEST(AutocastTest, ScopeRunsCpuMatmulsInTheHalfType) {
  const at::Tensor x = at::randn({4, 8}), w = at::randn({8, 3});
  EXPECT_EQ(at::matmul(x, w).scalar_type(), at::kFloat);
  for (at::ScalarType half : {at::kBFloat16, at::kHalf}) {
    {
      const AutocastScope scope(at::kCPU, half);
      EXPECT_EQ(at::matmul(x, w).scalar_type(), half);
      EXPECT_EQ(at::linear(x, w.t()).scalar_type(), half);
      EXPECT_EQ((x + x).scalar_type(), at::kFloat);  // not a lower-precision op
    }
    EXPECT_EQ(at::matmul(x, w).scalar_type(), at::kFloat);
  }
  const AutocastScope off(at::kCPU, at::kFloat);
  EXPECT_EQ(at::matmul(x, w).scalar_type(), at::kFloat);
  EXPECT_THROW(autocast_dtype("fp8"), InvalidArgument);
  EXPECT_NE(testing::error_of([] { check_autocast_device("bf16", at::Device("meta")); }).find("meta"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::nn
