// The tiled kernel of neighborhood attention (neighborhood.h): Fused NA's structure
// (arXiv:2403.04690, §4) on the CPU.
//
// Legend: B batch, h heads, H × W the grid (a sequence is one row), D head dim; (p_h, p_w) a
// dilation group; primed coordinates are group coordinates (y = p_h + d_h·y'). A query tile is
// TH × TW group positions; its halo is the union of its queries' windows, a rectangle of at most
// (TH + k_h − 1) × (TW + k_w − 1) group positions (windows move monotonically with the query),
// walked in sub-tiles of kKvTile keys:
//   S = (scale·Q_tile) K_subᵀ                  one small GEMM   [Nq, kKvTile]
//   S += bias, S = −∞ outside each query's window (per axis: window start/count; causal too)
//   m' = max(m, rowmax S);  acc = acc·e^{m−m'} + e^{S−m'} V_sub;  l = l·e^{m−m'} + Σ e^{S−m'}
// and y = acc / l at the end. No attention weights are stored; the work is independent per
// (b, head, group, tile), which at::parallel_for spreads over the threads.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/Parallel.h>

#include "lowrank/ops/neighborhood.h"

namespace lowrank::ops {

namespace {

constexpr int64_t kKvTile = 64;

struct TileShape {
  int64_t h = 1, w = 1;
};

// One axis of a query tile: each query's window start and count in group coordinates, and the halo.
struct AxisTile {
  std::vector<int64_t> start, count;
  int64_t halo_lo = 0, halo_len = 0;
};

AxisTile axis_tile(int64_t group, int64_t first, int64_t len, int64_t length, const NeighborhoodAxis& a) {
  AxisTile t;
  t.start.resize(len);
  t.count.resize(len);
  int64_t lo = std::numeric_limits<int64_t>::max(), hi = 0;
  for (int64_t i = 0; i < len; ++i) {
    const NeighborhoodWindow w = neighborhood_window(group + a.dilation * (first + i), length, a);
    t.start[i] = (w.first - group) / a.dilation;
    t.count[i] = w.count;
    lo = std::min(lo, t.start[i]);
    hi = std::max(hi, t.start[i] + w.count);
  }
  t.halo_lo = lo;
  t.halo_len = hi - lo;
  return t;
}

template <typename T>
void tiled_forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& bias,
                   const NeighborhoodAxis& ah, const NeighborhoodAxis& aw, double scale, at::Tensor& out,
                   TileShape tile) {
  const int64_t B = q.size(0), heads = q.size(1), H = q.size(2), W = q.size(3), D = q.size(4);
  const int64_t dh = ah.dilation, dw = aw.dilation;
  const int64_t tiles_h = ((H + dh - 1) / dh + tile.h - 1) / tile.h;
  const int64_t tiles_w = ((W + dw - 1) / dw + tile.w - 1) / tile.w;
  const int64_t tasks = B * heads * dh * dw * tiles_h * tiles_w;
  const T* qp = q.data_ptr<T>();
  const T* kp = k.data_ptr<T>();
  const T* vp = v.data_ptr<T>();
  const T* bp = bias.defined() ? bias.data_ptr<T>() : nullptr;
  T* op = out.data_ptr<T>();
  const int64_t bias_w = 2 * aw.kernel - 1;
  const int64_t bias_per_head = (2 * ah.kernel - 1) * bias_w;
  const T neg_inf = -std::numeric_limits<T>::infinity();

  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> qt, kt, vt, s, acc, m, l;
    for (int64_t task = begin; task < end; ++task) {
      int64_t r = task;
      const int64_t tx = r % tiles_w;
      r /= tiles_w;
      const int64_t ty = r % tiles_h;
      r /= tiles_h;
      const int64_t pw = r % dw;
      r /= dw;
      const int64_t ph = r % dh;
      r /= dh;
      const int64_t bh = r;  // b·heads + head
      const int64_t head = bh % heads;
      const int64_t Hp = (H - ph + dh - 1) / dh, Wp = (W - pw + dw - 1) / dw;
      const int64_t y0 = ty * tile.h, x0 = tx * tile.w;
      if (y0 >= Hp || x0 >= Wp) continue;
      const int64_t th = std::min(tile.h, Hp - y0), tw = std::min(tile.w, Wp - x0);
      const AxisTile ry = axis_tile(ph, y0, th, H, ah);
      const AxisTile rx = axis_tile(pw, x0, tw, W, aw);
      const int64_t nq = th * tw;
      const int64_t nk = ry.halo_len * rx.halo_len;
      const int64_t base = bh * H * W * D;
      auto offset = [&](int64_t gy, int64_t gx, int64_t py, int64_t px) {
        return base + ((py + dh * gy) * W + (px + dw * gx)) * D;
      };

      // Q tile [nq, D] (scaled), K halo transposed [D, nk], V halo [nk, D].
      qt.resize(nq * D);
      for (int64_t i = 0; i < th; ++i)
        for (int64_t j = 0; j < tw; ++j) {
          const T* src = qp + offset(y0 + i, x0 + j, ph, pw);
          T* dst = qt.data() + (i * tw + j) * D;
          for (int64_t c = 0; c < D; ++c) dst[c] = static_cast<T>(src[c] * scale);
        }
      kt.resize(D * nk);
      vt.resize(nk * D);
      for (int64_t i = 0; i < ry.halo_len; ++i)
        for (int64_t j = 0; j < rx.halo_len; ++j) {
          const int64_t n = i * rx.halo_len + j;
          const int64_t o = offset(ry.halo_lo + i, rx.halo_lo + j, ph, pw);
          for (int64_t c = 0; c < D; ++c) kt[c * nk + n] = kp[o + c];
          std::copy(vp + o, vp + o + D, vt.data() + n * D);
        }

      acc.assign(nq * D, T(0));
      m.assign(nq, neg_inf);
      l.assign(nq, T(0));
      s.resize(nq * kKvTile);
      for (int64_t c0 = 0; c0 < nk; c0 += kKvTile) {
        const int64_t nc = std::min(kKvTile, nk - c0);
        // S = Q_tile · K_subᵀ: the inner loop runs along the keys, contiguous in kt.
        std::fill(s.begin(), s.begin() + nq * nc, T(0));
        for (int64_t i = 0; i < nq; ++i) {
          T* srow = s.data() + i * nc;
          const T* qrow = qt.data() + i * D;
          for (int64_t c = 0; c < D; ++c) {
            const T qv = qrow[c];
            const T* krow = kt.data() + c * nk + c0;
            for (int64_t j = 0; j < nc; ++j) srow[j] += qv * krow[j];
          }
        }
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t qy = i / tw, qx = i % tw;
          const int64_t sy = ry.start[qy] - ry.halo_lo, cy = ry.count[qy];
          const int64_t sx = rx.start[qx] - rx.halo_lo, cx = rx.count[qx];
          T* srow = s.data() + i * nc;
          T row_max = neg_inf;
          // The halo position (ky, kx) of key c0 + j, advanced along the row (no division per key).
          int64_t ky = c0 / rx.halo_len, kx = c0 % rx.halo_len - 1;
          for (int64_t j = 0; j < nc; ++j) {
            if (++kx == rx.halo_len) {
              kx = 0;
              ++ky;
            }
            const bool in = ky >= sy && ky < sy + cy && kx >= sx && kx < sx + cx;
            if (!in) {
              srow[j] = neg_inf;
              continue;
            }
            if (bp) {
              // offset in group coordinates + k − 1, per axis
              const int64_t by = (ry.halo_lo + ky) - (y0 + qy) + ah.kernel - 1;
              const int64_t bx = (rx.halo_lo + kx) - (x0 + qx) + aw.kernel - 1;
              srow[j] += bp[head * bias_per_head + by * bias_w + bx];
            }
            row_max = std::max(row_max, srow[j]);
          }
          if (row_max == neg_inf) continue;  // no key of this sub-tile in the window
          const T m_new = std::max(m[i], row_max);
          const T rescale = std::exp(m[i] - m_new);  // 0 on the first visit (m = −∞)
          T* arow = acc.data() + i * D;
          for (int64_t c = 0; c < D; ++c) arow[c] *= rescale;
          T sum = 0;
          for (int64_t j = 0; j < nc; ++j) {
            if (srow[j] == neg_inf) continue;
            const T p = std::exp(srow[j] - m_new);
            sum += p;
            const T* vrow = vt.data() + (c0 + j) * D;
            for (int64_t c = 0; c < D; ++c) arow[c] += p * vrow[c];
          }
          l[i] = l[i] * rescale + sum;
          m[i] = m_new;
        }
      }
      for (int64_t i = 0; i < nq; ++i) {
        T* dst = op + offset(y0 + i / tw, x0 + i % tw, ph, pw);
        const T inv = T(1) / l[i];
        for (int64_t c = 0; c < D; ++c) dst[c] = acc[i * D + c] * inv;
      }
    }
  });
}

}  // namespace

at::Tensor neighborhood_attention_tiled(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& bias, const NeighborhoodAxis& axis_h,
                                        const NeighborhoodAxis& axis_w, double scale) {
  const at::Tensor qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
  const at::Tensor bc = bias.defined() ? bias.to(q.scalar_type()).contiguous() : bias;
  at::Tensor out = at::empty_like(qc);
  // A sequence is one row: its tile runs along it, about one window long (rounded up to 8, 16 to
  // 64), so that the halo (tile + k − 1 keys) wastes at most about half of the Q·Kᵀ GEMM on
  // masked keys while the GEMM stays wide enough. A grid gets 8 × 8 tiles.
  const int64_t row_tile = std::clamp<int64_t>((axis_w.kernel + 1 + 7) / 8 * 8, 16, 64);
  const TileShape tile = q.size(2) == 1 ? TileShape{1, row_tile} : TileShape{8, 8};
  if (q.scalar_type() == at::kDouble)
    tiled_forward<double>(qc, kc, vc, bc, axis_h, axis_w, scale, out, tile);
  else
    tiled_forward<float>(qc, kc, vc, bc, axis_h, axis_w, scale, out, tile);
  return out;
}

}  // namespace lowrank::ops
