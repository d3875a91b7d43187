// The chunked Vandermonde product of S4D; see vandermonde.h.
#include "lowrank/ops/vandermonde.h"

#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>

#include "lowrank/core/error.h"

namespace lowrank::ops {

namespace {

int64_t chunk_length(int64_t rows, int64_t L, int64_t chunk_elements) {
  const int64_t budget = chunk_elements > 0 ? chunk_elements : int64_t{1} << 20;
  return std::clamp<int64_t>(budget / std::max<int64_t>(rows, 1), 1, std::max<int64_t>(L, 1));
}

// exp(x · l) for l in [0, n): [H, M, n], as exp(x · b·i) ⊙ exp(x · j) for l = b·i + j, j < b = ⌈√n⌉:
// 2√n complex exponentials and n complex products per row instead of n exponentials (the complex
// exponential dominated S4D's kernel, forward and backward), each entry within two roundings of
// the exponential (both factors are correctly rounded exponentials; no error builds up along l).
at::Tensor powers(const at::Tensor& x, int64_t n) {
  const auto real = at::toRealValueType(x.scalar_type());
  const auto b = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(n))));
  const int64_t rows = (n + b - 1) / b;
  const at::Tensor fine = at::exp(x.unsqueeze(-1) * at::arange(b, x.options().dtype(real)));
  const at::Tensor coarse = at::exp(x.unsqueeze(-1) * at::arange(rows, x.options().dtype(real)).mul_(b));
  const at::Tensor all = (coarse.unsqueeze(-1) * fine.unsqueeze(-2)).flatten(-2);  // [H, M, rows·b]
  return rows * b == n ? all : all.narrow(-1, 0, n);
}

// exp(x · l) for l in [start, start + n) as exp(x · start) ⊙ exp(x · j), j < n, from `base` =
// powers(x, chunk): one complex product per entry instead of a complex exponential, with the
// accuracy of two correctly rounded exponentials (no error builds up along l: each chunk's
// exp(x · start) is computed directly).
at::Tensor powers_from(const at::Tensor& x, const at::Tensor& base, int64_t start, int64_t n) {
  const at::Tensor head = base.narrow(-1, 0, n);
  return start == 0 ? head : at::exp(x * static_cast<double>(start)).unsqueeze(-1) * head;
}

struct LogVandermonde : torch::autograd::Function<LogVandermonde> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& c, const at::Tensor& x,
                            int64_t L, int64_t chunk) {
    at::NoGradGuard no_grad;
    const int64_t H = c.size(0);
    at::Tensor out = at::empty({H, L}, c.options().dtype(at::toRealValueType(c.scalar_type())));
    const at::Tensor base = powers(x, chunk);
    for (int64_t start = 0; start < L; start += chunk) {
      const int64_t n = std::min(chunk, L - start);
      // [H, 1, M] · [H, M, n] -> [H, n]
      const at::Tensor part = at::bmm(c.unsqueeze(1), powers_from(x, base, start, n)).squeeze(1);
      out.narrow(1, start, n).copy_(at::real(part) * 2);
    }
    ctx->save_for_backward({c, x});
    ctx->saved_data["chunk"] = chunk;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &c = saved[0], &x = saved[1];
    const int64_t chunk = ctx->saved_data["chunk"].toInt();
    const at::Tensor g = grads[0].to(c.scalar_type());  // real -> complex with zero imaginary part
    const int64_t L = g.size(1);
    at::Tensor gc = at::zeros_like(c), gx_sum = at::zeros_like(c);
    const at::Tensor base = powers(x, std::min(chunk, L));
    for (int64_t start = 0; start < L; start += chunk) {
      const int64_t n = std::min(chunk, L - start);
      const at::Tensor v = at::conj(powers_from(x, base, start, n));  // [H, M, n]
      const at::Tensor gl = g.narrow(1, start, n);                    // [H, n]
      const at::Tensor l =
          at::arange(start, start + n, gl.options().dtype(at::toRealValueType(gl.scalar_type())));
      gc += at::bmm(v, gl.unsqueeze(-1)).squeeze(-1);
      gx_sum += at::bmm(v, (gl * l).unsqueeze(-1)).squeeze(-1);
    }
    return {gc * 2, at::conj(c) * gx_sum * 2, at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor log_vandermonde(const at::Tensor& c, const at::Tensor& x, int64_t L, int64_t chunk_elements) {
  LR_CHECK(c.dim() == 2 && x.sizes() == c.sizes(), InvalidArgument,
           "log_vandermonde: c and x must both be [H, M], got ", c.sizes(), " and ", x.sizes());
  LR_CHECK(c.is_complex() && x.scalar_type() == c.scalar_type(), InvalidArgument,
           "log_vandermonde: c and x must be complex of one dtype, got ", c.scalar_type(), " and ",
           x.scalar_type());
  LR_CHECK(L >= 1, InvalidArgument, "log_vandermonde: length L must be >= 1, got ", L);
  const int64_t chunk = chunk_length(c.size(0) * c.size(1), L, chunk_elements);
  return LogVandermonde::apply(c, x, L, chunk);
}

}  // namespace lowrank::ops
