// The Monarch (order-2 Cooley–Tukey) FFT as batched GEMMs; see monarch_fft.h.
#include "lowrank/ops/monarch_fft.h"

#include <cmath>
#include <map>
#include <mutex>
#include <numbers>
#include <tuple>

#include "lowrank/core/error.h"

namespace lowrank::ops {

namespace {

at::ScalarType complex_of(at::ScalarType real) {
  return real == at::kDouble ? at::kComplexDouble : at::kComplexFloat;
}

at::ScalarType real_of(at::ScalarType complex) {
  return complex == at::kComplexDouble ? at::kDouble : at::kFloat;
}

// ω_N^{k1·n2} of [N1, N2]; the exponent is reduced mod N in integers first, so the angle stays
// exact for large N.
at::Tensor make_twiddle(int64_t n1, int64_t n2, at::ScalarType dtype, at::Device device) {
  const int64_t n = n1 * n2;
  const at::Tensor k1 = at::arange(n1, at::kLong).view({-1, 1});
  const at::Tensor j2 = at::arange(n2, at::kLong).view({1, -1});
  const at::Tensor angle = (k1 * j2).remainder(n).to(at::kDouble) * (-2.0 * std::numbers::pi / n);
  return at::polar(at::ones_like(angle), angle).to(dtype).to(device);
}

at::Tensor make_dft_matrix(int64_t n, at::ScalarType dtype, at::Device device) {
  const at::Tensor j = at::arange(n, at::kLong);
  const at::Tensor angle = at::outer(j, j).remainder(n).to(at::kDouble) * (-2.0 * std::numbers::pi / n);
  return at::polar(at::ones_like(angle), angle).to(dtype).to(device);
}

// The fixed DFT matrices and twiddles of monarch_fft(x, n), built once per (kind, sizes, dtype,
// device) and shared: a long convolution calls the FFT three times per forward at the same N.
// Nothing writes them in place (MonarchFactors::dft hands out fresh copies for training).
// Bounded: past 64 entries the cache starts over.
at::Tensor cached_factor(char kind, int64_t a, int64_t b, at::ScalarType dtype, at::Device device) {
  using Key = std::tuple<char, int64_t, int64_t, at::ScalarType, at::DeviceType, at::DeviceIndex>;
  static std::mutex mutex;
  static std::map<Key, at::Tensor> cache;
  const Key key{kind, a, b, dtype, device.type(), device.index()};
  const std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;
  if (cache.size() >= 64) cache.clear();
  at::Tensor t = kind == 't' ? make_twiddle(a, b, dtype, device) : make_dft_matrix(a, dtype, device);
  return cache.emplace(key, std::move(t)).first->second;
}

at::Tensor twiddle(int64_t n1, int64_t n2, at::ScalarType dtype, at::Device device) {
  return cached_factor('t', n1, n2, dtype, device);
}

}  // namespace

int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

std::pair<int64_t, int64_t> monarch_split(int64_t n) {
  int64_t n1 = 1;
  for (int64_t d = 2; d * d <= n; ++d)
    if (n % d == 0) n1 = d;
  const int64_t n2 = n1 >= 2 ? n / n1 : n;
  LR_CHECK(
      n >= 4 && n1 >= 2 && n2 <= kMonarchMaxBlock, InvalidArgument, "monarch_fft: FFT length N = ", n,
      " is not supported: it must split as N = N1·N2 with 2 <= N1 <= N2 <= ", kMonarchMaxBlock,
      " (N1 the largest divisor of N not above sqrt(N)); N = ", n,
      n1 < 2 ? " is prime or below 4" : str(" splits as ", n1, "·", n2),
      ". Supported: every power of two from 4 to 2^24, and composite N whose balanced split stays within ",
      kMonarchMaxBlock);
  return {n1, n2};
}

bool monarch_supported(int64_t n) {
  try {
    (void)monarch_split(n);
    return true;
  } catch (const InvalidArgument&) {
    return false;
  }
}

at::Tensor dft_matrix(int64_t n, at::ScalarType dtype, at::Device device) {
  LR_CHECK(n >= 1, InvalidArgument, "dft_matrix: n must be >= 1, got ", n);
  LR_CHECK(dtype == at::kComplexFloat || dtype == at::kComplexDouble, InvalidArgument,
           "dft_matrix: dtype must be complex64 or complex128, got ", dtype);
  return make_dft_matrix(n, dtype, device);
}

MonarchFactors MonarchFactors::dft(int64_t n, at::ScalarType dtype, at::Device device) {
  const auto [n1, n2] = monarch_split(n);
  return {dft_matrix(n1, dtype, device), dft_matrix(n2, dtype, device)};
}

at::Tensor monarch_fft(const at::Tensor& x, const MonarchFactors& factors) {
  LR_CHECK(x.dim() >= 1, InvalidArgument, "monarch_fft: x must have at least one axis");
  LR_CHECK(factors.f1.dim() == 2 && factors.f1.size(0) == factors.f1.size(1) && factors.f2.dim() == 2 &&
               factors.f2.size(0) == factors.f2.size(1),
           InvalidArgument, "monarch_fft: the factors must be square, got ", factors.f1.sizes(), " and ",
           factors.f2.sizes());
  const int64_t n1 = factors.f1.size(0), n2 = factors.f2.size(0), n = n1 * n2;
  const at::ScalarType cdtype = factors.f1.scalar_type();
  LR_CHECK(at::isComplexType(cdtype) && factors.f2.scalar_type() == cdtype, InvalidArgument,
           "monarch_fft: the factors must be complex and of one dtype, got ", cdtype, " and ",
           factors.f2.scalar_type());
  // Zero-pad or truncate to N, as at::fft_fft(x, N).
  const int64_t length = x.size(-1);
  at::Tensor in = length >= n ? x.narrow(-1, 0, n) : at::constant_pad_nd(x, {0, n - length});
  const std::vector<int64_t> batch(x.sizes().begin(), x.sizes().end() - 1);
  std::vector<int64_t> grid = batch;
  grid.push_back(n1);
  grid.push_back(n2);
  // 1. permute: A[n1, n2] = x[n1·N2 + n2] is a view.
  const at::Tensor a = in.reshape(grid);
  // 2. N2 DFTs of size N1 down the columns: B = F_{N1} · A. A real input takes one real GEMM
  //    against [Re F; Im F] rather than a complex one.
  at::Tensor b;
  if (!a.is_complex()) {
    const at::Tensor f = at::cat({at::real(factors.f1), at::imag(factors.f1)}, 0);  // [2·N1, N1]
    const at::Tensor re_im = at::matmul(f, a.to(real_of(cdtype)));                  // [..., 2·N1, N2]
    b = at::complex(re_im.narrow(-2, 0, n1), re_im.narrow(-2, n1, n1));
  } else {
    b = at::matmul(factors.f1, a.to(cdtype));
  }
  // 3. twiddle, 4. N1 DFTs of size N2 along the rows: C = (T ⊙ B) · F_{N2}.
  const at::Tensor c = at::matmul(b * twiddle(n1, n2, cdtype, x.device()), factors.f2);
  // 5. permute: X[k1 + N1·k2] = C[k1, k2].
  std::vector<int64_t> flat = batch;
  flat.push_back(n);
  return c.transpose(-1, -2).reshape(flat);
}

at::Tensor monarch_fft(const at::Tensor& x, int64_t n) {
  const at::ScalarType real = at::isComplexType(x.scalar_type()) ? real_of(x.scalar_type())
                              : x.scalar_type() == at::kDouble   ? at::kDouble
                                                                 : at::kFloat;
  // The fixed factors come from the cache (the caller's own copies are MonarchFactors::dft's).
  const auto [n1, n2] = monarch_split(n);
  const at::ScalarType dtype = complex_of(real);
  return monarch_fft(x, MonarchFactors{cached_factor('f', n1, 0, dtype, x.device()),
                                       cached_factor('f', n2, 0, dtype, x.device())});
}

at::Tensor monarch_ifft(const at::Tensor& x, int64_t n) {
  LR_CHECK(x.is_complex(), InvalidArgument, "monarch_ifft: x must be complex, got ", x.scalar_type());
  return at::conj(monarch_fft(x.conj().resolve_conj(), n)).resolve_conj() / static_cast<double>(n);
}

}  // namespace lowrank::ops
