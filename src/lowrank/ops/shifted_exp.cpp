// The row-wise shifted exponential; see shifted_exp.h.
#include "lowrank/ops/shifted_exp.h"

#include <ATen/ExpandUtils.h>
#include <ATen/Parallel.h>

#include <cmath>

#include "lowrank/core/error.h"
#include "lowrank/ops/cpu_features.h"
#include "lowrank/ops/shifted_exp_kernels.h"

namespace lowrank::ops {
namespace {

// Rows per parallel task: a row is m (a few hundred) exponentials.
constexpr int64_t kRowGrain = 64;

template <typename T>
T shifted_exp_row_portable(T* x, int64_t m, T shift, T eps) {
  T sum = 0;
  for (int64_t j = 0; j < m; ++j) {
    x[j] = std::exp(x[j] - shift) + eps;
    sum += x[j];
  }
  return sum;
}

template <typename T>
void run_rows(const at::Tensor& x, const at::Tensor& shift, double eps, T* sums) {
  const int64_t m = x.size(-1);
  const int64_t rows = m == 0 ? 0 : x.numel() / m;
  T* data = x.data_ptr<T>();
  const T* shifts = shift.data_ptr<T>();
  const bool vector = std::is_same_v<T, float> && shifted_exp_uses_avx2();
  at::parallel_for(0, rows, kRowGrain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      T* row = data + r * m;
      T sum;
      if constexpr (std::is_same_v<T, float>)
        sum = vector ? detail::shifted_exp_row_avx2(row, m, shifts[r], static_cast<float>(eps))
                     : shifted_exp_row_portable<float>(row, m, shifts[r], static_cast<float>(eps));
      else
        sum = shifted_exp_row_portable<T>(row, m, shifts[r], static_cast<T>(eps));
      if (sums) sums[r] = sum;
    }
  });
}

}  // namespace

bool shifted_exp_uses_avx2() {
  return detail::cpu_has_avx2_fma();
}

at::Tensor shifted_exp_(const at::Tensor& x, const at::Tensor& shift, double eps, bool row_sums) {
  LR_CHECK(x.device().is_cpu() && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble),
           InvalidArgument, "shifted_exp_: x must be a float32 or float64 CPU tensor, got ", x.scalar_type(),
           " on ", x.device());
  LR_CHECK(x.dim() >= 1 && x.is_contiguous(), InvalidArgument,
           "shifted_exp_: x must be contiguous with at least "
           "one dimension, got ",
           x.sizes());
  std::vector<int64_t> row_shape(x.sizes().begin(), x.sizes().end());
  row_shape.back() = 1;
  LR_CHECK(at::is_expandable_to(shift.sizes(), row_shape), InvalidArgument, "shifted_exp_: shift of shape ",
           shift.sizes(), " for x of shape ", x.sizes());
  const at::Tensor shifts = shift.to(x.scalar_type()).expand(row_shape).contiguous();
  at::Tensor sums = row_sums ? at::empty(row_shape, x.options()) : at::Tensor();
  if (x.scalar_type() == at::kFloat)
    run_rows<float>(x, shifts, eps, row_sums ? sums.data_ptr<float>() : nullptr);
  else
    run_rows<double>(x, shifts, eps, row_sums ? sums.data_ptr<double>() : nullptr);
  return sums;
}

}  // namespace lowrank::ops
