// The CPU Cauchy kernel of S4; see cauchy.h.
#include "lowrank/ops/cauchy.h"

#include <ATen/Parallel.h>
#include <c10/util/complex.h>
#include <torch/csrc/autograd/custom_function.h>

#include "lowrank/core/error.h"

namespace lowrank::ops {

namespace {

// y[r, k] = Σ_n v[r, n] / (z[k] − w[r, n]).
template <typename T>
void cauchy_rows(const c10::complex<T>* v, const c10::complex<T>* z, const c10::complex<T>* w,
                 c10::complex<T>* y, int64_t R, int64_t N, int64_t L) {
  at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t k = 0; k < L; ++k) {
        c10::complex<T> acc(0, 0);
        for (int64_t n = 0; n < N; ++n) acc += v[r * N + n] / (z[k] - w[r * N + n]);
        y[r * L + k] = acc;
      }
  });
}

// gv[r, n] = Σ_k g[r, k] conj(1/(z_k − w)), gw[r, n] = Σ_k g[r, k] conj(v/(z_k − w)²).
template <typename T>
void cauchy_rows_backward(const c10::complex<T>* v, const c10::complex<T>* z, const c10::complex<T>* w,
                          const c10::complex<T>* g, c10::complex<T>* gv, c10::complex<T>* gw, int64_t R,
                          int64_t N, int64_t L) {
  at::parallel_for(0, R, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      for (int64_t n = 0; n < N; ++n) {
        c10::complex<T> sv(0, 0), sw(0, 0);
        for (int64_t k = 0; k < L; ++k) {
          const c10::complex<T> inv = c10::complex<T>(1, 0) / (z[k] - w[r * N + n]);
          const c10::complex<T> gi = g[r * L + k] * std::conj(inv);
          sv += gi;
          sw += gi * std::conj(inv);
        }
        gv[r * N + n] = sv;
        gw[r * N + n] = sw * std::conj(v[r * N + n]);
      }
  });
}

struct CauchyFunction : torch::autograd::Function<CauchyFunction> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& v_in,
                            const at::Tensor& z_in, const at::Tensor& w_in) {
    // resolve_conj: a conj view's data are the unconjugated values.
    const at::Tensor v = v_in.resolve_conj().contiguous(), z = z_in.resolve_conj().contiguous(),
                     w = w_in.resolve_conj().contiguous();
    const int64_t R = v.size(0), N = v.size(1), L = z.size(0);
    at::Tensor y = at::empty({R, L}, v.options());
    AT_DISPATCH_COMPLEX_TYPES(v.scalar_type(), "cauchy", [&] {
      using T = typename scalar_t::value_type;
      cauchy_rows<T>(v.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                     y.data_ptr<scalar_t>(), R, N, L);
    });
    ctx->save_for_backward({v, z, w});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor &v = saved[0], &z = saved[1], &w = saved[2];
    const at::Tensor g = grads[0].resolve_conj().contiguous();
    const int64_t R = v.size(0), N = v.size(1), L = z.size(0);
    at::Tensor gv = at::empty_like(v), gw = at::empty_like(w);
    AT_DISPATCH_COMPLEX_TYPES(v.scalar_type(), "cauchy_backward", [&] {
      using T = typename scalar_t::value_type;
      cauchy_rows_backward<T>(v.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(),
                              g.data_ptr<scalar_t>(), gv.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(), R, N,
                              L);
    });
    return {gv, at::Tensor(), gw};
  }
};

}  // namespace

at::Tensor cauchy(const at::Tensor& v, const at::Tensor& z, const at::Tensor& w, bool conj) {
  LR_CHECK(v.dim() == 2 && w.sizes() == v.sizes() && z.dim() == 1, InvalidArgument,
           "cauchy: v and w must be [R, N] and z [L], got ", v.sizes(), ", ", w.sizes(), " and ", z.sizes());
  LR_CHECK(v.is_complex() && w.scalar_type() == v.scalar_type() && z.scalar_type() == v.scalar_type(),
           InvalidArgument, "cauchy: v, z and w must be complex of one dtype, got ", v.scalar_type(), ", ",
           z.scalar_type(), " and ", w.scalar_type());
  LR_CHECK(v.device().is_cpu(), Unsupported, "cauchy: the kernel runs on the CPU, got ", v.device());
  if (!conj) return CauchyFunction::apply(v, z, w);
  // The conjugate pairs as N more modes: autograd carries the gradient through conj.
  return CauchyFunction::apply(at::cat({v, at::conj(v)}, 1), z, at::cat({w, at::conj(w)}, 1));
}

}  // namespace lowrank::ops
