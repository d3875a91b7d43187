// The row-wise shifted exponential (ops/shifted_exp.h) against the same quantity composed in
// float64 here, exp(x − shift) + eps and its row sums: float64 rows to 1e-14 and float32 rows
// (the AVX2 kernel where the CPU has it) to 1e-6 relative, over row lengths below, at and past the
// 8-lane width; a shift of +inf gives a row of eps; broadcast shifts; bad input refused naming it.
#include "lowrank/ops/shifted_exp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "lowrank/core/error.h"
#include "lowrank/ops/shifted_exp_kernels.h"

namespace lowrank::ops {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// x [rows, m] with values in [−12, 2], and a shift per row (the last row +inf).
struct Rows {
  at::Tensor x, shift;
};
Rows make_rows(int64_t rows, int64_t m, uint64_t seed) {
  at::manual_seed(seed);
  const auto f64 = at::TensorOptions().dtype(at::kDouble);
  at::Tensor x = at::rand({rows, m}, f64) * 14.0 - 12.0;
  at::Tensor shift = at::rand({rows, 1}, f64) * 4.0 - 2.0;
  shift[rows - 1][0] = kInf;
  return {x, shift};
}

// The reference: each entry from its definition, in float64.
std::pair<at::Tensor, at::Tensor> reference(const Rows& r, double eps) {
  at::Tensor want = at::empty_like(r.x);
  at::Tensor sums = at::zeros({r.x.size(0), 1}, r.x.options());
  auto x = r.x.accessor<double, 2>();
  auto s = r.shift.accessor<double, 2>();
  auto w = want.accessor<double, 2>();
  auto t = sums.accessor<double, 2>();
  for (int64_t i = 0; i < r.x.size(0); ++i)
    for (int64_t j = 0; j < r.x.size(1); ++j) {
      w[i][j] = std::exp(x[i][j] - s[i][0]) + eps;
      t[i][0] += w[i][j];
    }
  return {want, sums};
}

double max_rel(const at::Tensor& got, const at::Tensor& want) {
  const at::Tensor g = got.to(at::kDouble);
  return ((g - want).abs() / want.abs().clamp_min(1e-30)).max().item<double>();
}

TEST(ShiftedExpTest, Float64RowsEqualTheDefinition) {
  for (const int64_t m : {1, 7, 8, 9, 266})
    for (const double eps : {0.0, 1e-4}) {
      const Rows r = make_rows(37, m, 1 + m);
      const auto [want, want_sums] = reference(r, eps);
      const at::Tensor x = r.x.clone();
      const at::Tensor sums = shifted_exp_(x, r.shift, eps, /*row_sums=*/true);
      EXPECT_LE(max_rel(x, want), 1e-14) << "m " << m << ", eps " << eps;
      EXPECT_LE(max_rel(sums, want_sums), 1e-13) << "m " << m << ", eps " << eps;
    }
}

TEST(ShiftedExpTest, Float32RowsWithin1e6Relative) {
  for (const int64_t m : {1, 7, 8, 9, 266})
    for (const double eps : {0.0, 1e-4}) {
      Rows r = make_rows(37, m, 11 + m);
      r.x = r.x.to(at::kFloat).to(at::kDouble);  // the float32 inputs, exactly
      const auto [want, want_sums] = reference(r, eps);
      const at::Tensor x = r.x.to(at::kFloat);
      const at::Tensor sums = shifted_exp_(x, r.shift.to(at::kFloat), eps, /*row_sums=*/true);
      EXPECT_EQ(sums.scalar_type(), at::kFloat);
      // The shift is rounded to float32 too: relative error ≤ |shift|·2^-24 on top of the exp's.
      EXPECT_LE(max_rel(x, want), 1e-6) << "m " << m << ", eps " << eps;
      EXPECT_LE(max_rel(sums, want_sums), 1e-6) << "m " << m << ", eps " << eps;
    }
}

TEST(ShiftedExpTest, Avx2RowEqualsStdExpWhereTheCpuHasIt) {
  if (!shifted_exp_uses_avx2()) GTEST_SKIP() << "this CPU has no AVX2 + FMA";
  Rows r = make_rows(1, 19, 5);
  r.shift[0][0] = 0.75;
  r.x = r.x.to(at::kFloat).to(at::kDouble);
  const auto [want, want_sums] = reference(r, 0.5);
  at::Tensor x = r.x.to(at::kFloat).contiguous();
  const float sum = detail::shifted_exp_row_avx2(x.data_ptr<float>(), 19, 0.75f, 0.5f);
  EXPECT_LE(max_rel(x, want), 1e-6);
  EXPECT_NEAR(sum, want_sums.item<double>(), 1e-6 * want_sums.item<double>());
}

TEST(ShiftedExpTest, BroadcastShiftAndNoRowSums) {
  // One shift for every row of a [2, 3, 4, m] tensor per leading index: [2, 1, 1, 1].
  at::manual_seed(3);
  const at::Tensor x0 = at::randn({2, 3, 4, 10}, at::kDouble);
  const at::Tensor shift = at::randn({2, 1, 1, 1}, at::kDouble);
  const at::Tensor x = x0.clone();
  EXPECT_FALSE(shifted_exp_(x, shift, 0.0, /*row_sums=*/false).defined());
  EXPECT_LE(max_rel(x, at::exp(x0 - shift)), 1e-14);
}

TEST(ShiftedExpTest, BadInputIsRefusedNamingIt) {
  const at::Tensor shift = at::zeros({4, 1});
  auto message = [](auto&& fn) {
    try {
      fn();
    } catch (const InvalidArgument& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message([&] {
              shifted_exp_(at::zeros({4, 8}, at::kBFloat16), shift, 0, false);
            }).find("float32 or float64"),
            std::string::npos);
  EXPECT_NE(message([&] {
              shifted_exp_(at::zeros({8, 4}).t(), shift, 0, false);
            }).find("contiguous"),
            std::string::npos);
  EXPECT_NE(message([&] {
              shifted_exp_(at::zeros({4, 8}), at::zeros({3, 1}), 0, false);
            }).find("shift of shape"),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::ops
