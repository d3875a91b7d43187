// The CPU kernels of the selective scan (selective_scan.h): the forward with chunk checkpoints and
// the hand-written backward that recomputes one chunk's states at a time.
//
// float32 steps run the AVX-512 kernel (N a multiple of 16, selective_scan_avx512.cpp) or the AVX2
// kernel (a multiple of 8, selective_scan_avx2.cpp) on a CPU that has it; the backward's
// recomputation of a chunk's states takes the AVX2 step.
// Work splits into tasks of (batch row, block of channels). Channels are independent in the
// recurrence, so a task's state [block, N] lives in a local buffer. The forward's blocks are as
// wide as the thread count allows (forward_block): any split gives the same bits there. The
// backward's sums over channels (dB, dC) and over rows (dA) would race between tasks; each task
// writes its own partial slice (dB/dC per block of kBlock channels, dA per row), and the slices
// are summed afterwards, in an order that does not depend on the thread count.
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/ops/cpu_features.h"
#include "lowrank/ops/selective_scan.h"
#include "lowrank/ops/selective_scan_kernels.h"

namespace lowrank::ops {

namespace {

// The backward's channels per task: fixed (its dB/dC partial sums are per block, so the block
// decides their summation order) and wide enough that the strided streams' page crossings do not
// dominate (16 before: fwd+bwd 29.5 → 21.4 ms at L = 4096, bench_selective_scan).
constexpr int64_t kBlock = 64;
constexpr int64_t kMaxForwardBlock = 128, kMinForwardBlock = 16;

struct Shape {
  int64_t batch, L, D, N, chunk;
  int64_t blocks() const { return (D + kBlock - 1) / kBlock; }
  int64_t chunks() const { return (L + chunk - 1) / chunk; }
};

// One position for `channels` channels (selective_scan_kernels.h's interface): the portable loop.
template <typename T>
inline void step_portable(int64_t channels, int64_t N, const T* delta, const T* u, const T* A, const T* b_row,
                          const T* c_row, T* h, T* y) {
  for (int64_t d = 0; d < channels; ++d) {
    const T dt = delta[d];
    const T du = dt * u[d];
    const T* a_row = A + d * N;
    T* hd = h + d * N;
    T acc = 0;
    for (int64_t n = 0; n < N; ++n) {
      hd[n] = std::exp(dt * a_row[n]) * hd[n] + du * b_row[n];
      acc += c_row[n] * hd[n];
    }
    if (y) y[d] = acc;
  }
}

// One step of a channel block: h ← exp(Δ A) h + Δ B u for the channels [d0, d1) at position l of
// row b; writes y when `y` is not null. float32 takes the AVX-512 kernel with N a multiple of 16,
// else the AVX2 kernel with N a multiple of 8, where the CPU has them.
template <typename T>
inline void step_block(const Shape& s, int64_t b, int64_t l, int64_t d0, int64_t d1, const T* u, const T* dt,
                       const T* A, const T* Bm, const T* Cm, T* h, T* y) {
  const int64_t N = s.N;
  const T* b_row = Bm + (b * s.L + l) * N;
  const T* c_row = Cm + (b * s.L + l) * N;
  const int64_t at = (b * s.L + l) * s.D + d0;
  T* y_block = y ? y + at : nullptr;
  if constexpr (std::is_same_v<T, float>)
    selective_scan_step(d1 - d0, N, dt + at, u + at, A + d0 * N, b_row, c_row, h, y_block);
  else
    step_portable<T>(d1 - d0, N, dt + at, u + at, A + d0 * N, b_row, c_row, h, y_block);
}

// The forward's channels per task: as many as keep every thread busy (batch·⌈D/block⌉ ≥ threads),
// up to kMaxForwardBlock. Wide blocks matter: a task walks its positions with a stride of D floats
// through five streams (Δ, u, y and the B, C rows), and at 16 channels per position the page
// crossings of those streams cost about as much as the steps (bench_selective_scan, L = 4096, two
// threads: 7.6 ms at 16 channels, 3.6 ms at 128).
int64_t forward_block(const Shape& s) {
  const int64_t threads = std::max(1, at::get_num_threads());
  int64_t block = kMaxForwardBlock;
  while (block > kMinForwardBlock && s.batch * ((s.D + block - 1) / block) < threads) block /= 2;
  return block;
}

template <typename T>
void forward_impl(const Shape& s, const T* u, const T* dt, const T* A, const T* Bm, const T* Cm, const T* h0,
                  T* y, T* last, T* checkpoints) {
  const int64_t block = forward_block(s);
  const int64_t blocks = (s.D + block - 1) / block;
  at::parallel_for(0, s.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> h(static_cast<size_t>(block * s.N));
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const int64_t d0 = (task % blocks) * block;
      const int64_t d1 = std::min(s.D, d0 + block);
      const int64_t width = (d1 - d0) * s.N;
      std::copy_n(h0 + (b * s.D + d0) * s.N, width, h.data());
      for (int64_t l = 0; l < s.L; ++l) {
        if (checkpoints && l % s.chunk == 0)
          std::copy_n(h.data(), width, checkpoints + ((b * s.chunks() + l / s.chunk) * s.D + d0) * s.N);
        step_block(s, b, l, d0, d1, u, dt, A, Bm, Cm, h.data(), y);
      }
      std::copy_n(h.data(), width, last + (b * s.D + d0) * s.N);
    }
  });
}

template <typename T>
void backward_impl(const Shape& s, const T* u, const T* dt, const T* A, const T* Bm, const T* Cm,
                   const T* checkpoints, const T* gy, const T* glast, T* du, T* ddt, T* dA_rows, T* dB_blocks,
                   T* dC_blocks, T* dh0) {
  const int64_t blocks = s.blocks();
  const int64_t N = s.N;
  at::parallel_for(0, s.batch * blocks, 1, [&](int64_t begin, int64_t end) {
    // The states of one chunk, states[i] = h before position l0 + i (i = 0 .. chunk).
    std::vector<T> states(static_cast<size_t>((s.chunk + 1) * kBlock * N));
    std::vector<T> g(static_cast<size_t>(kBlock * N));  // dL/dh at the current position
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const int64_t block = task % blocks;
      const int64_t d0 = block * kBlock;
      const int64_t d1 = std::min(s.D, d0 + kBlock);
      const int64_t width = (d1 - d0) * N;
      if (glast)
        std::copy_n(glast + (b * s.D + d0) * N, width, g.data());
      else
        std::fill_n(g.data(), width, T(0));
      T* dA_row = dA_rows + b * s.D * N;
      T* dB_block = dB_blocks + block * s.batch * s.L * N;
      T* dC_block = dC_blocks + block * s.batch * s.L * N;
      for (int64_t c = s.chunks() - 1; c >= 0; --c) {
        const int64_t l0 = c * s.chunk;
        const int64_t l1 = std::min(s.L, l0 + s.chunk);
        std::copy_n(checkpoints + ((b * s.chunks() + c) * s.D + d0) * N, width, states.data());
        for (int64_t l = l0; l < l1; ++l) {
          T* next = states.data() + (l - l0 + 1) * width;
          std::copy_n(next - width, width, next);
          step_block<T>(s, b, l, d0, d1, u, dt, A, Bm, Cm, next, nullptr);
        }
        for (int64_t l = l1 - 1; l >= l0; --l) {
          const T* prev = states.data() + (l - l0) * width;
          const T* cur = prev + width;
          const int64_t row = b * s.L + l;
          const T* b_row = Bm + row * N;
          const T* c_row = Cm + row * N;
          T* db_row = dB_block + row * N;
          T* dc_row = dC_block + row * N;
          for (int64_t d = d0; d < d1; ++d) {
            const int64_t at = row * s.D + d;
            const T delta = dt[at], x = u[at], gyv = gy[at];
            const T* a_row = A + d * N;
            const T* hp = prev + (d - d0) * N;
            const T* hc = cur + (d - d0) * N;
            T* gd = g.data() + (d - d0) * N;
            T* da = dA_row + d * N;
            if constexpr (std::is_same_v<T, float>) {
              if (selective_scan_uses_avx2(N)) {
                const detail::ScanBackwardSums sums = detail::selective_scan_backward_channel_avx2(
                    N, delta, x, gyv, a_row, b_row, c_row, hp, hc, gd, da, db_row, dc_row);
                du[at] = sums.du;
                ddt[at] = sums.ddelta;
                continue;
              }
            }
            T du_acc = 0, ddt_acc = 0;
            for (int64_t n = 0; n < N; ++n) {
              // y_l = Σ C h_l: dL/dh_l gains gy·C, and dL/dC gains gy·h_l.
              const T gh = gd[n] + gyv * c_row[n];
              dc_row[n] += gyv * hc[n];
              // h_l = a h_{l−1} + Δ B u, a = exp(Δ A).
              const T a = std::exp(delta * a_row[n]);
              const T ga = gh * hp[n] * a;  // dL/d(Δ A) through a
              ddt_acc += ga * a_row[n] + gh * b_row[n] * x;
              da[n] += ga * delta;
              db_row[n] += gh * delta * x;
              du_acc += gh * delta * b_row[n];
              gd[n] = gh * a;  // dL/dh_{l−1}
            }
            du[at] = du_acc;
            ddt[at] = ddt_acc;
          }
        }
      }
      std::copy_n(g.data(), width, dh0 + (b * s.D + d0) * N);
    }
  });
}

Shape shape_of(const at::Tensor& u, const at::Tensor& A, int64_t chunk) {
  LR_CHECK(chunk >= 1, InvalidArgument, "selective_scan: chunk must be >= 1, got ", chunk);
  return {u.size(0), u.size(1), u.size(2), A.size(1), chunk};
}

void check_cpu_inputs(std::initializer_list<const at::Tensor*> tensors, at::ScalarType dtype) {
  for (const at::Tensor* t : tensors)
    LR_CHECK(t->defined() && t->device().is_cpu() && t->scalar_type() == dtype && t->is_contiguous(),
             InvalidArgument,
             "selective_scan CPU kernel: every input must be a contiguous CPU tensor of one "
             "dtype (float32 or float64)");
}

}  // namespace

bool selective_scan_uses_avx2(int64_t state_size) {
  return state_size % 8 == 0 && detail::cpu_has_avx2_fma();
}

void selective_scan_step(int64_t channels, int64_t N, const float* delta, const float* u, const float* A,
                         const float* b_row, const float* c_row, float* h, float* y) {
  if (detail::selective_scan_avx512_usable(N))
    detail::selective_scan_step_avx512(channels, N, delta, u, A, b_row, c_row, h, y);
  else if (selective_scan_uses_avx2(N))
    detail::selective_scan_step_avx2(channels, N, delta, u, A, b_row, c_row, h, y);
  else
    step_portable<float>(channels, N, delta, u, A, b_row, c_row, h, y);
}

namespace detail {

void selective_scan_step_portable(int64_t channels, int64_t N, const float* delta, const float* u,
                                  const float* A, const float* b_row, const float* c_row, float* h,
                                  float* y) {
  step_portable<float>(channels, N, delta, u, A, b_row, c_row, h, y);
}

}  // namespace detail

void selective_scan_cpu_forward(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                const at::Tensor& B, const at::Tensor& C, const at::Tensor& h0, int64_t chunk,
                                at::Tensor& y, at::Tensor& last_state, at::Tensor& checkpoints) {
  const at::ScalarType dtype = u.scalar_type();
  check_cpu_inputs({&u, &delta, &A, &B, &C, &h0}, dtype);
  const Shape s = shape_of(u, A, chunk);
  y = at::empty({s.batch, s.L, s.D}, u.options());
  last_state = at::empty({s.batch, s.D, s.N}, u.options());
  if (checkpoints.defined()) checkpoints = at::empty({s.batch, s.chunks(), s.D, s.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "selective_scan_cpu_forward", [&] {
    forward_impl<scalar_t>(s, u.const_data_ptr<scalar_t>(), delta.const_data_ptr<scalar_t>(),
                           A.const_data_ptr<scalar_t>(), B.const_data_ptr<scalar_t>(),
                           C.const_data_ptr<scalar_t>(), h0.const_data_ptr<scalar_t>(),
                           y.data_ptr<scalar_t>(), last_state.data_ptr<scalar_t>(),
                           checkpoints.defined() ? checkpoints.data_ptr<scalar_t>() : nullptr);
  });
}

SelectiveScanGrads selective_scan_cpu_backward(const at::Tensor& u, const at::Tensor& delta,
                                               const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                                               const at::Tensor& checkpoints, int64_t chunk,
                                               const at::Tensor& grad_y, const at::Tensor& grad_last) {
  const at::ScalarType dtype = u.scalar_type();
  check_cpu_inputs({&u, &delta, &A, &B, &C, &checkpoints}, dtype);
  const Shape s = shape_of(u, A, chunk);
  const at::Tensor gy = grad_y.defined() ? grad_y.to(dtype).contiguous() : at::zeros_like(u);
  const at::Tensor glast = grad_last.defined() ? grad_last.to(dtype).contiguous() : at::Tensor();
  SelectiveScanGrads grads;
  grads.u = at::empty_like(u);
  grads.delta = at::empty_like(delta);
  grads.h0 = at::empty({s.batch, s.D, s.N}, u.options());
  at::Tensor dA_rows = at::zeros({s.batch, s.D, s.N}, u.options());
  at::Tensor dB_blocks = at::zeros({s.blocks(), s.batch, s.L, s.N}, u.options());
  at::Tensor dC_blocks = at::zeros({s.blocks(), s.batch, s.L, s.N}, u.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "selective_scan_cpu_backward", [&] {
    backward_impl<scalar_t>(
        s, u.const_data_ptr<scalar_t>(), delta.const_data_ptr<scalar_t>(), A.const_data_ptr<scalar_t>(),
        B.const_data_ptr<scalar_t>(), C.const_data_ptr<scalar_t>(), checkpoints.const_data_ptr<scalar_t>(),
        gy.const_data_ptr<scalar_t>(), glast.defined() ? glast.const_data_ptr<scalar_t>() : nullptr,
        grads.u.data_ptr<scalar_t>(), grads.delta.data_ptr<scalar_t>(), dA_rows.data_ptr<scalar_t>(),
        dB_blocks.data_ptr<scalar_t>(), dC_blocks.data_ptr<scalar_t>(), grads.h0.data_ptr<scalar_t>());
  });
  grads.A = dA_rows.sum(0);
  grads.B = dB_blocks.sum(0);
  grads.C = dC_blocks.sum(0);
  return grads;
}

}  // namespace lowrank::ops
