// Stacked low-rank factors and their fused product; see stacked_low_rank.h.
#include "lowrank/nn/stacked_low_rank.h"

namespace lowrank::nn {

StackedLowRank stacked(const std::vector<LowRankDelta>& deltas) {
  if (deltas.size() == 1) return {deltas[0].a, deltas[0].b, deltas[0].scale};
  std::vector<at::Tensor> as, bs;
  for (const LowRankDelta& d : deltas) {
    as.push_back(d.a);
    bs.push_back(d.b * d.scale);
  }
  return {at::cat(as, 0), at::cat(bs, 1), 1.0};
}

// Each second product is accumulated into its output by the GEMM itself (addmm, β = 1, α = s), so
// no delta is materialised at full width: the products are skinny (rank r), and the separate
// passes over y of a materialised delta (write, scale, add) would cost more than they do. When x
// has many rows (a prefill or training batch), the first products of all the slots, which read the
// same x, are one GEMM x·[A₁; A₂; …]ᵀ, so x is read once; for few rows (decode, a segment of a
// routed batch) x stays in cache and copying the A's together would cost more than it saves.
void add_low_rank(std::span<at::Tensor> ys, const at::Tensor& x,
                  std::span<const StackedLowRank* const> factors) {
  const bool in_place = !at::GradMode::is_enabled();
  auto accumulate = [&](at::Tensor& y, const at::Tensor& h, const StackedLowRank& f) {
    if (in_place)
      y.view({-1, y.size(-1)}).addmm_(h, f.b.t(), 1.0, f.scale);
    else
      y = at::addmm(y.reshape({-1, y.size(-1)}), h, f.b.t(), 1.0, f.scale).view(y.sizes());
  };
  std::vector<at::Tensor> as;
  for (const StackedLowRank* f : factors)
    if (f != nullptr) as.push_back(f->a);
  if (as.empty()) return;
  const int64_t rows = x.numel() / x.size(-1);
  int64_t total_rank = 0;
  for (const at::Tensor& a : as) total_rank += a.size(0);
  if (as.size() == 1 || rows < 8 * total_rank) {
    for (size_t i = 0; i < factors.size(); ++i)
      if (factors[i] != nullptr) {
        const at::Tensor h = at::linear(x, factors[i]->a);
        accumulate(ys[i], h.reshape({-1, h.size(-1)}), *factors[i]);
      }
    return;
  }
  const at::Tensor h = at::linear(x, at::cat(as, 0));
  const at::Tensor h2 = h.reshape({-1, h.size(-1)});
  int64_t column = 0;
  for (size_t i = 0; i < factors.size(); ++i) {
    if (factors[i] == nullptr) continue;
    accumulate(ys[i], h2.narrow(1, column, factors[i]->a.size(0)), *factors[i]);
    column += factors[i]->a.size(0);
  }
}

}  // namespace lowrank::nn
