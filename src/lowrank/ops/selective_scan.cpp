// The selective scan: argument checks, the autograd Function around the CPU kernels, the ATen
// composite, and D / z / Δ-bias / softplus around the core; see selective_scan.h.
#include "lowrank/ops/selective_scan.h"

#include <torch/csrc/autograd/custom_function.h>

#include "lowrank/core/error.h"

namespace lowrank::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The CPU kernel with its hand-written backward. Outputs: y and the last state (both differentiable:
// a prefill's state feeds the next step).
struct SelectiveScanFunction : torch::autograd::Function<SelectiveScanFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& u, const at::Tensor& delta,
                               const at::Tensor& A, const at::Tensor& B, const at::Tensor& C,
                               const at::Tensor& h0, int64_t chunk, bool needs_grad) {
    at::Tensor y, last;
    // Checkpoints only when a backward will run.
    at::Tensor checkpoints = needs_grad ? at::empty({0}, u.options()) : at::Tensor();
    selective_scan_cpu_forward(u, delta, A, B, C, h0, chunk, y, last, checkpoints);
    ctx->save_for_backward({u, delta, A, B, C, checkpoints});
    ctx->saved_data["chunk"] = chunk;
    return {y, last};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const SelectiveScanGrads g =
        selective_scan_cpu_backward(saved[0], saved[1], saved[2], saved[3], saved[4], saved[5],
                                    ctx->saved_data["chunk"].toInt(), grads[0], grads[1]);
    return {g.u, g.delta, g.A, g.B, g.C, g.h0, at::Tensor(), at::Tensor()};
  }
};

void check_shape(const at::Tensor& t, const char* name, at::IntArrayRef expected) {
  LR_CHECK(t.defined() && t.sizes() == expected, InvalidArgument, "selective_scan: ", name, " must be ",
           expected, ", got ", t.defined() ? ::lowrank::str(t.sizes()) : std::string("undefined"));
}

}  // namespace

SelectiveScanResult selective_scan_core_cpu(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                            const at::Tensor& B, const at::Tensor& C, const at::Tensor& h0,
                                            int64_t chunk) {
  // (Inside the Function's forward grad mode is off, so whether a backward will run is asked here.)
  const bool needs_grad =
      at::GradMode::is_enabled() && (u.requires_grad() || delta.requires_grad() || A.requires_grad() ||
                                     B.requires_grad() || C.requires_grad() || h0.requires_grad());
  const variable_list out =
      SelectiveScanFunction::apply(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(),
                                   C.contiguous(), h0.contiguous(), chunk, needs_grad);
  return {out[0], out[1]};
}

SelectiveScanResult selective_scan_core_composite(const at::Tensor& u, const at::Tensor& delta,
                                                  const at::Tensor& A, const at::Tensor& B,
                                                  const at::Tensor& C, const at::Tensor& h0) {
  const int64_t L = u.size(1);
  at::Tensor h = h0;
  std::vector<at::Tensor> ys;
  ys.reserve(static_cast<size_t>(L));
  for (int64_t l = 0; l < L; ++l) {
    const at::Tensor dt = delta.select(1, l).unsqueeze(-1);                                  // [b, D, 1]
    const at::Tensor dbu = dt * B.select(1, l).unsqueeze(1) * u.select(1, l).unsqueeze(-1);  // [b, D, N]
    h = at::exp(dt * A) * h + dbu;
    ys.push_back(at::matmul(h, C.select(1, l).unsqueeze(-1)).squeeze(-1));  // [b, D]
  }
  return {at::stack(ys, 1), h};
}

SelectiveScanResult selective_scan(const at::Tensor& u, const at::Tensor& delta, const at::Tensor& A,
                                   const at::Tensor& B, const at::Tensor& C,
                                   const SelectiveScanOptions& options) {
  LR_CHECK(u.defined() && u.dim() == 3, InvalidArgument, "selective_scan: u must be [batch, L, D], got ",
           u.defined() ? ::lowrank::str(u.sizes()) : std::string("undefined"));
  LR_CHECK(u.is_floating_point(), Unsupported, "selective_scan: u has dtype ", c10::toString(u.scalar_type()),
           " (floating types only)");
  const int64_t batch = u.size(0), L = u.size(1), D = u.size(2);
  LR_CHECK(A.defined() && A.dim() == 2 && A.size(0) == D, InvalidArgument, "selective_scan: A must be [", D,
           ", N], got ", A.defined() ? ::lowrank::str(A.sizes()) : std::string("undefined"));
  const int64_t N = A.size(1);
  check_shape(delta, "delta", {batch, L, D});
  check_shape(B, "B", {batch, L, N});
  check_shape(C, "C", {batch, L, N});
  if (options.D.defined()) check_shape(options.D, "D", {D});
  if (options.z.defined()) check_shape(options.z, "z", {batch, L, D});
  if (options.delta_bias.defined()) check_shape(options.delta_bias, "delta_bias", {D});
  if (options.initial_state.defined()) check_shape(options.initial_state, "initial_state", {batch, D, N});
  LR_CHECK(options.chunk >= 1, InvalidArgument, "selective_scan: chunk must be >= 1, got ", options.chunk);

  // The scan runs in float32 (float64 for float64 inputs), as the reference's `.float()`.
  const at::ScalarType compute = u.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor uc = u.to(compute);
  at::Tensor dt = delta.to(compute);
  if (options.delta_bias.defined()) dt = dt + options.delta_bias.to(compute);
  if (options.delta_softplus) dt = at::softplus(dt);
  const at::Tensor Ac = A.to(compute), Bc = B.to(compute), Cc = C.to(compute);
  const at::Tensor h0 = options.initial_state.defined() ? options.initial_state.to(compute)
                                                        : at::zeros({batch, D, N}, uc.options());
  SelectiveScanResult core = u.device().is_cpu()
                                 ? selective_scan_core_cpu(uc, dt, Ac, Bc, Cc, h0, options.chunk)
                                 : selective_scan_core_composite(uc, dt, Ac, Bc, Cc, h0);
  at::Tensor y = core.y;
  if (options.D.defined()) y = y + uc * options.D.to(compute);
  if (options.z.defined()) y = y * at::silu(options.z.to(compute));
  return {y.to(u.scalar_type()), core.last_state};
}

}  // namespace lowrank::ops
