// The 2-D wave equation by leapfrog finite differences (wave2d.h).
#include "lowrank/data/wave2d.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <vector>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::data {

void WaveOptions::check() const {
  LR_CHECK(n >= 4, InvalidArgument, "wave grid n = ", n, " must be at least 4");
  LR_CHECK(cfl > 0 && cfl <= 1 / std::numbers::sqrt2, InvalidArgument, "wave CFL number ", cfl,
           " must lie in (0, 1/sqrt(2)] (the leapfrog scheme is unstable above)");
  LR_CHECK(boundary == "absorbing" || boundary == "periodic", InvalidArgument, "wave boundary \"", boundary,
           "\" (expected absorbing or periodic)");
}

WaveSolver::WaveSolver(at::Tensor c, const WaveOptions& options) : options_(options) {
  options.check();
  const int64_t n = options.n;
  LR_CHECK(c.dim() == 2 && c.size(0) == n && c.size(1) == n, InvalidArgument, "wave speed has shape ",
           c.sizes(), ", expected [", n, ", ", n, "]");
  c = c.to(at::kDouble).contiguous();
  LR_CHECK(c.min().item<double>() > 0, InvalidArgument, "wave speed must be positive everywhere");
  h_ = 1.0 / static_cast<double>(n);
  dt_ = options.cfl * h_ / c.max().item<double>();
  c2_ = c * c;
  damping_ = at::zeros({n, n}, at::kDouble);
  if (options.boundary == "absorbing" && options.sponge > 0) {
    // σ = σ_max (d/width)², d the depth into the layer from its inner edge.
    const auto w = static_cast<double>(options.sponge);
    const at::Tensor idx = at::arange(n, at::kDouble);
    const at::Tensor depth =
        at::clamp_min(at::maximum(w - idx, idx - (static_cast<double>(n) - 1 - w)), 0.0) / w;  // [n]
    const at::Tensor d2 = at::maximum(depth.unsqueeze(1).expand({n, n}), depth.unsqueeze(0).expand({n, n}));
    damping_ = options.sponge_damping * d2 * d2;
  }
  u_ = at::zeros({n, n}, at::kDouble);
  u_prev_ = at::zeros({n, n}, at::kDouble);
}

at::Tensor WaveSolver::laplacian(const at::Tensor& u) const {
  at::Tensor padded;
  if (options_.boundary == "periodic")
    padded = at::pad(u.unsqueeze(0).unsqueeze(0), {1, 1, 1, 1}, "circular").squeeze(0).squeeze(0);
  else
    padded = at::constant_pad_nd(u, {1, 1, 1, 1}, 0.0);
  const int64_t n = options_.n;
  using at::indexing::Slice;
  const at::Tensor up = padded.index({Slice(0, n), Slice(1, n + 1)});
  const at::Tensor down = padded.index({Slice(2, n + 2), Slice(1, n + 1)});
  const at::Tensor left = padded.index({Slice(1, n + 1), Slice(0, n)});
  const at::Tensor right = padded.index({Slice(1, n + 1), Slice(2, n + 2)});
  return (up + down + left + right - 4 * u) / (h_ * h_);
}

void WaveSolver::set_state(at::Tensor previous, at::Tensor current) {
  LR_CHECK(previous.sizes() == u_.sizes() && current.sizes() == u_.sizes(), InvalidArgument,
           "wave state must be [", options_.n, ", ", options_.n, "]");
  u_prev_ = previous.to(at::kDouble).clone();
  u_ = current.to(at::kDouble).clone();
  steps_ = 0;
}

void WaveSolver::start_from_rest(const at::Tensor& u0) {
  const at::Tensor u = u0.to(at::kDouble);
  set_state(u + 0.5 * dt_ * dt_ * c2_ * laplacian(u), u);
}

void WaveSolver::set_ricker_source(int64_t row, int64_t col, double amplitude) {
  LR_CHECK(row >= 0 && row < options_.n && col >= 0 && col < options_.n, InvalidArgument, "wave source (",
           row, ", ", col, ") lies outside the ", options_.n, "x", options_.n, " grid");
  source_row_ = row;
  source_col_ = col;
  source_amplitude_ = amplitude;
}

void WaveSolver::step() {
  at::Tensor rhs = c2_ * laplacian(u_);
  if (source_row_ >= 0) {
    const double t = time(), f0 = options_.ricker_frequency, t0 = 1.0 / f0;
    const double arg = std::numbers::pi * f0 * (t - t0);
    const double f = (1 - 2 * arg * arg) * std::exp(-arg * arg) * source_amplitude_ / (h_ * h_);
    rhs[source_row_][source_col_] += f;
  }
  const double dt2 = dt_ * dt_;
  at::Tensor next;
  if (options_.boundary == "absorbing") {
    const at::Tensor half = damping_ * (0.5 * dt_);
    next = (2 * u_ - (1 - half) * u_prev_ + dt2 * rhs) / (1 + half);
  } else {
    next = 2 * u_ - u_prev_ + dt2 * rhs;
  }
  u_prev_ = u_;
  u_ = next;
  ++steps_;
}

double WaveSolver::energy() const {
  const double h2 = h_ * h_;
  const at::Tensor v = (u_ - u_prev_) / dt_;
  const double kinetic = 0.5 * (v * v / c2_).sum().item<double>() * h2;
  const double potential = -0.5 * (u_ * laplacian(u_prev_)).sum().item<double>() * h2;
  return kinetic + potential;
}

at::Tensor two_layer_speed(int64_t n, int64_t interface_row, double c_top, double c_bottom) {
  LR_CHECK(c_top > 0 && c_bottom > 0, InvalidArgument, "wave speeds must be positive, got ", c_top, " and ",
           c_bottom);
  at::Tensor c = at::full({n, n}, c_bottom, at::kDouble);
  if (interface_row > 0) c.narrow(0, 0, std::min(interface_row, n)).fill_(c_top);
  return c;
}

WaveDataset simulate_wave_dataset(const WaveOptions& options, int64_t samples, int64_t ahead, uint64_t seed,
                                  int64_t per_simulation) {
  LR_CHECK(samples >= 1 && ahead >= 1 && per_simulation >= 1, InvalidArgument,
           "wave data set: samples, ahead and per_simulation must be positive, got ", samples, ", ", ahead,
           ", ", per_simulation);
  const int64_t n = options.n;
  auto uniform = [&](uint64_t counter) { return unit_interval(splitmix64(splitmix64(seed) ^ counter)); };
  std::vector<at::Tensor> inputs, targets;
  uint64_t draw = 0;
  for (int64_t sim = 0; static_cast<int64_t>(inputs.size()) < samples; ++sim) {
    const double c_top = 1 + uniform(draw++), c_bottom = 1 + uniform(draw++);
    const auto interface = static_cast<int64_t>(n / 4 + uniform(draw++) * static_cast<double>(n / 2));
    const at::Tensor c = two_layer_speed(n, interface, c_top, c_bottom);
    WaveSolver solver(c, options);
    const int64_t margin = options.boundary == "absorbing" ? options.sponge + 2 : 0;
    const auto row = margin + static_cast<int64_t>(uniform(draw++) * static_cast<double>(n - 2 * margin));
    const auto col = margin + static_cast<int64_t>(uniform(draw++) * static_cast<double>(n - 2 * margin));
    solver.set_ricker_source(row, col);
    // Snapshots at random times after the wavelet's peak (t₀ = 1/f₀), within ~half a domain crossing.
    const auto start = static_cast<int64_t>(std::ceil(1.0 / options.ricker_frequency / solver.dt()));
    const auto span = std::max<int64_t>(1, static_cast<int64_t>(0.5 / (2.0 * solver.dt())));
    std::vector<int64_t> times;
    for (int64_t k = 0; k < per_simulation; ++k)
      times.push_back(start + static_cast<int64_t>(uniform(draw++) * static_cast<double>(span)));
    std::sort(times.begin(), times.end());
    const at::Tensor c32 = c.to(at::kFloat);
    for (int64_t t : times) {
      while (solver.steps() < t) solver.step();
      const at::Tensor prev = solver.previous().to(at::kFloat), cur = solver.u().to(at::kFloat);
      WaveSolver ahead_solver = solver;  // the state is copied on write: step() builds new tensors
      for (int64_t s = 0; s < ahead; ++s) ahead_solver.step();
      inputs.push_back(at::stack({prev, cur, c32}));
      targets.push_back(ahead_solver.u().to(at::kFloat).unsqueeze(0));
      if (static_cast<int64_t>(inputs.size()) == samples) break;
    }
  }
  return {at::stack(inputs), at::stack(targets)};
}

WaveDataset load_wave_dataset(const std::filesystem::path& path) {
  const SafetensorsFile file = SafetensorsFile::open(path);
  for (const char* name : {"inputs", "targets"})
    LR_CHECK(file.contains(name), NotFound, path.string(), ": no tensor \"", name,
             "\" (not a data set of `lowrank wave simulate`)");
  WaveDataset d{file.load("inputs", at::kFloat), file.load("targets", at::kFloat)};
  LR_CHECK(d.inputs.dim() == 4 && d.inputs.size(1) == 3 && d.inputs.size(0) >= 1, Corruption, path.string(),
           ": inputs has shape ", d.inputs.sizes(), ", expected [N >= 1, 3, n, n]");
  LR_CHECK(d.targets.dim() == 4 && d.targets.size(0) == d.inputs.size(0) && d.targets.size(1) == 1 &&
               d.targets.size(2) == d.inputs.size(2) && d.targets.size(3) == d.inputs.size(3),
           Corruption, path.string(), ": targets has shape ", d.targets.sizes(), ", expected [",
           d.inputs.size(0), ", 1, ", d.inputs.size(2), ", ", d.inputs.size(3), "]");
  return d;
}

}  // namespace lowrank::data
