// The naive gather kernel of neighborhood attention (neighborhood.h): every query's k_h·k_w key
// slots as an index table, K and V gathered into [B, heads, N, k_h·k_w, D], a masked softmax over
// the slots. ATen ops only, so it runs on any device and autograd gives its backward.
#include <limits>

#include "lowrank/ops/neighborhood.h"

namespace lowrank::ops {

namespace {

// Per query n = y·W + x and slot s = a·k_w + b: the flat key index (a valid one for a slot beyond a
// causal window's count), whether the slot is in the window, and the flat bias index.
struct SlotTables {
  at::Tensor key;    // int64 [N·K]
  at::Tensor valid;  // bool [N, K]
  at::Tensor bias;   // int64 [N·K]
};

SlotTables slot_tables(int64_t H, int64_t W, const NeighborhoodAxis& ah, const NeighborhoodAxis& aw) {
  const int64_t K = ah.kernel * aw.kernel;
  const int64_t N = H * W;
  at::Tensor key = at::empty({N * K}, at::kLong);
  at::Tensor valid = at::empty({N, K}, at::kBool);
  at::Tensor bias = at::empty({N * K}, at::kLong);
  int64_t* key_p = key.data_ptr<int64_t>();
  bool* valid_p = valid.data_ptr<bool>();
  int64_t* bias_p = bias.data_ptr<int64_t>();
  const int64_t bias_width = 2 * aw.kernel - 1;
  for (int64_t y = 0; y < H; ++y) {
    const NeighborhoodWindow wy = neighborhood_window(y, H, ah);
    for (int64_t x = 0; x < W; ++x) {
      const NeighborhoodWindow wx = neighborhood_window(x, W, aw);
      const int64_t n = y * W + x;
      for (int64_t a = 0; a < ah.kernel; ++a)
        for (int64_t b = 0; b < aw.kernel; ++b) {
          const int64_t s = n * K + a * aw.kernel + b;
          const bool in = a < wy.count && b < wx.count;
          const int64_t ky = wy.first + ah.dilation * (in ? a : 0);
          const int64_t kx = wx.first + aw.dilation * (in ? b : 0);
          key_p[s] = ky * W + kx;
          valid_p[s] = in;
          bias_p[s] =
              ((ky - y) / ah.dilation + ah.kernel - 1) * bias_width + (kx - x) / aw.dilation + aw.kernel - 1;
        }
    }
  }
  return {key, valid, bias};
}

}  // namespace

at::Tensor neighborhood_attention_naive(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                        const at::Tensor& bias, const NeighborhoodAxis& axis_h,
                                        const NeighborhoodAxis& axis_w, double scale) {
  const int64_t B = q.size(0), heads = q.size(1), H = q.size(2), W = q.size(3), D = q.size(4);
  const int64_t N = H * W;
  const int64_t K = axis_h.kernel * axis_w.kernel;
  const SlotTables t = slot_tables(H, W, axis_h, axis_w);
  const at::Device device = q.device();
  const at::Tensor key = t.key.to(device);
  // [B, heads, N, D] -> gathered [B, heads, N, K, D]
  const at::Tensor qf = q.reshape({B, heads, N, D});
  const at::Tensor kg = k.reshape({B, heads, N, D}).index_select(2, key).view({B, heads, N, K, D});
  const at::Tensor vg = v.reshape({B, heads, N, D}).index_select(2, key).view({B, heads, N, K, D});
  at::Tensor scores = at::matmul(kg, qf.unsqueeze(-1)).squeeze(-1).mul(scale);  // [B, heads, N, K]
  if (bias.defined())
    scores = scores + bias.reshape({heads, -1}).index_select(1, t.bias.to(device)).view({1, heads, N, K});
  scores = scores.masked_fill(t.valid.to(device).logical_not(), -std::numeric_limits<double>::infinity());
  const at::Tensor p = scores.softmax(-1);
  return at::matmul(p.unsqueeze(-2), vg).squeeze(-2).view({B, heads, H, W, D});
}

}  // namespace lowrank::ops
