// Causal long convolution by FFT, Monarch FFT or directly; see long_fft_conv.h.
#include "lowrank/ops/long_fft_conv.h"

#include "lowrank/core/error.h"

namespace lowrank::ops {

namespace {

void check_shapes(const at::Tensor& u, const at::Tensor& k, const char* what) {
  LR_CHECK(u.dim() >= 1 && k.dim() >= 1, InvalidArgument, what, ": u and k need a length axis, got ",
           u.sizes(), " and ", k.sizes());
  LR_CHECK(u.size(-1) >= 1 && k.size(-1) >= 1, InvalidArgument, what, ": empty input or kernel (", u.sizes(),
           ", ", k.sizes(), ")");
  LR_CHECK(at::isFloatingType(u.scalar_type()) && at::isFloatingType(k.scalar_type()), InvalidArgument, what,
           ": u and k must be real floating tensors, got ", u.scalar_type(), " and ", k.scalar_type());
}

// float32 for everything below float64 (the DFT of half-precision inputs loses too much).
at::ScalarType compute_dtype(const at::Tensor& u, const at::Tensor& k) {
  return u.scalar_type() == at::kDouble || k.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

FftConvImpl parse_fft_conv_impl(const std::string& value, const std::string& what) {
  if (value == "fft") return FftConvImpl::kFft;
  if (value == "monarch") return FftConvImpl::kMonarch;
  throw InvalidArgument(str(what, ": impl must be fft or monarch, got \"", value, "\""));
}

std::string to_string(FftConvImpl impl) {
  return impl == FftConvImpl::kFft ? "fft" : "monarch";
}

int64_t fft_conv_size(int64_t input_length, int64_t kernel_length, FftConvImpl impl) {
  const int64_t n = input_length + kernel_length;
  if (impl == FftConvImpl::kFft) return n;
  const int64_t padded = next_power_of_two(n);
  (void)monarch_split(padded);  // refuses a length past the Monarch bound, naming it
  return padded;
}

at::Tensor fft_conv(const at::Tensor& u, const at::Tensor& k, FftConvImpl impl) {
  check_shapes(u, k, "fft_conv");
  const int64_t L = u.size(-1);
  const int64_t n = fft_conv_size(L, k.size(-1), impl);
  const at::ScalarType dtype = compute_dtype(u, k);
  const at::Tensor uc = u.to(dtype), kc = k.to(dtype);
  at::Tensor y;
  if (impl == FftConvImpl::kFft) {
    y = at::fft_irfft(at::fft_rfft(uc, n) * at::fft_rfft(kc, n), n).narrow(-1, 0, L);
  } else {
    // The product of two spectra of real inputs is Hermitian: the real part of the inverse is
    // the convolution (the imaginary part is rounding).
    y = at::real(monarch_ifft(monarch_fft(uc, n) * monarch_fft(kc, n), n)).narrow(-1, 0, L);
  }
  return y.to(u.scalar_type());
}

at::Tensor monarch_conv(const at::Tensor& u, const at::Tensor& k, const MonarchFactors& u_factors,
                        const MonarchFactors& k_factors) {
  check_shapes(u, k, "monarch_conv");
  const int64_t L = u.size(-1), n = u_factors.size();
  LR_CHECK(k_factors.size() == n, InvalidArgument, "monarch_conv: the factors of u and k differ in size (", n,
           " vs ", k_factors.size(), ")");
  LR_CHECK(n >= L + k.size(-1), InvalidArgument, "monarch_conv: FFT length ", n,
           " is below L + L' = ", L + k.size(-1), " (the circular convolution would wrap around)");
  const at::ScalarType dtype =
      at::isComplexType(u_factors.f1.scalar_type()) && u_factors.f1.scalar_type() == at::kComplexDouble
          ? at::kDouble
          : at::kFloat;
  const at::Tensor spectrum = monarch_fft(u.to(dtype), u_factors) * monarch_fft(k.to(dtype), k_factors);
  return at::real(at::fft_ifft(spectrum, n)).narrow(-1, 0, L).to(u.scalar_type());
}

at::Tensor direct_causal_conv(const at::Tensor& u, const at::Tensor& k) {
  check_shapes(u, k, "direct_causal_conv");
  const int64_t L = u.size(-1), Lk = k.size(-1);
  // One depthwise conv1d over the broadcast leading axes flattened into channels.
  std::vector<int64_t> lead =
      at::infer_size(u.sizes().slice(0, u.dim() - 1), k.sizes().slice(0, k.dim() - 1));
  std::vector<int64_t> u_shape = lead, k_shape = lead;
  u_shape.push_back(L);
  k_shape.push_back(Lk);
  const at::ScalarType dtype = compute_dtype(u, k);
  const at::Tensor ub = u.to(dtype).expand(u_shape).reshape({1, -1, L});
  const at::Tensor kb = k.to(dtype).expand(k_shape).reshape({-1, 1, Lk});
  const int64_t channels = kb.size(0);
  // conv1d correlates: out[t] = Σ_j w[j]·in[t + j]; with L' − 1 zeros in front of u and the
  // kernel flipped, that is Σ_m k[m]·u[t − m].
  const at::Tensor out = at::conv1d(at::constant_pad_nd(ub, {Lk - 1, 0}), kb.flip(-1), std::nullopt,
                                    at::IntArrayRef{1}, at::IntArrayRef{0}, at::IntArrayRef{1}, channels);
  return out.reshape(u_shape).to(u.scalar_type());
}

}  // namespace lowrank::ops
