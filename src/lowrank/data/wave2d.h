// The 2-D acoustic wave equation, the data of the a-priori CP convolution study (Boukraichi et al.):
//   u_tt = c(x)² Δu + f(t) δ(x − x_s)     on [0, 1)², grid n × n, spacing h = 1/n
// discretised by the leapfrog scheme (second order in space and time) with the 5-point Laplacian:
//   u^{m+1} = 2u^m − u^{m−1} + dt² (c² Δ_h u^m + f^m)
// at dt = cfl · h / max c (stable for cfl ≤ 1/√2). Boundaries:
//   periodic   Δ_h wraps around; with no source the discrete energy
//                E^{m+½} = ½ Σ (1/c²) ((u^{m+1} − u^m)/dt)² h² − ½ Σ u^{m+1} (Δ_h u^m) h²
//              is conserved exactly (to rounding): the scheme's symplectic invariant;
//   absorbing  zero Dirichlet outside, and a damping layer of `sponge` cells in which the scheme
//              becomes (u^{m+1} − 2u^m + u^{m−1})/dt² + σ (u^{m+1} − u^{m−1})/(2dt) = c² Δ_h u^m + f,
//              σ = σ_max (d/width)² growing towards the edge (Cerjan et al., 1985), so outgoing waves
//              are damped instead of reflected.
// Source: a Ricker wavelet f(t) = (1 − 2π²f₀²(t − t₀)²) exp(−π²f₀²(t − t₀)²), t₀ = 1/f₀, at one
// grid point (amplitude / h², a discrete delta). Medium: two layers, c = c_top above a horizontal
// interface and c_bottom below.
// Deviation: the paper's simulator is a finite-element one; this is finite differences.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include <ATen/ATen.h>

namespace lowrank::data {

struct WaveOptions {
  int64_t n = 64;
  double cfl = 0.5;
  std::string boundary = "absorbing";  // absorbing | periodic
  int64_t sponge = 10;                 // absorbing: damping-layer width in cells
  double sponge_damping = 60.0;        // σ_max (1 / time)
  double ricker_frequency = 6.0;       // f₀

  // InvalidArgument names the option at fault: n < 4, cfl ∉ (0, 1/√2], an unknown boundary.
  void check() const;
};

// One simulation on float64 fields [n, n] (row = y, column = x).
class WaveSolver {
 public:
  // InvalidArgument names the option at fault: n < 4, cfl ∉ (0, 1/√2], an unknown boundary, a c
  // that is not [n, n] and positive.
  WaveSolver(at::Tensor c, const WaveOptions& options);

  double dt() const { return dt_; }
  double h() const { return h_; }
  int64_t steps() const { return steps_; }
  double time() const { return static_cast<double>(steps_) * dt_; }
  const at::Tensor& u() const { return u_; }              // u^m
  const at::Tensor& previous() const { return u_prev_; }  // u^{m−1}

  // Sets u^{−1} and u^0 as given (the step count restarts at 0).
  void set_state(at::Tensor previous, at::Tensor current);
  // u^0 = u0 at rest: u^{−1} = u0 + dt²/2 · c² Δ_h u0 (the Taylor start, second order).
  void start_from_rest(const at::Tensor& u0);
  // Adds a Ricker source at grid point (row, col); sources act from the next step on.
  void set_ricker_source(int64_t row, int64_t col, double amplitude = 1.0);
  // One leapfrog step.
  void step();
  // Δ_h u with this solver's boundary.
  at::Tensor laplacian(const at::Tensor& u) const;
  // E^{m−½} of the header from (u^{m−1}, u^m) (meaningful for periodic boundaries, no source).
  double energy() const;

 private:
  WaveOptions options_;
  at::Tensor c2_, damping_;  // c², σ (absorbing)
  at::Tensor u_, u_prev_;
  double h_ = 0, dt_ = 0;
  int64_t steps_ = 0;
  int64_t source_row_ = -1, source_col_ = -1;
  double source_amplitude_ = 0;
};

// c for a two-layer medium: c_top on rows < interface, c_bottom on the rest.
at::Tensor two_layer_speed(int64_t n, int64_t interface_row, double c_top, double c_bottom);

// A supervised data set: `samples` pairs (u^{m−1}, u^m, c) → u^{m+ahead}, float32, from
// simulations with a random two-layer medium (c in [1, 2], interface in the middle half) and a
// Ricker source at a random point away from the boundary; `per_simulation` samples are taken at
// random times of each simulation. inputs [N, 3, n, n], targets [N, 1, n, n]. Seeded.
struct WaveDataset {
  at::Tensor inputs, targets;
};
WaveDataset simulate_wave_dataset(const WaveOptions& options, int64_t samples, int64_t ahead, uint64_t seed,
                                  int64_t per_simulation = 4);

// A data set written by `lowrank wave simulate` (float32 `inputs` [N, 3, n, n] and `targets`
// [N, 1, n, n]). NotFound for a missing file or tensor; Corruption, naming the file and tensor,
// for shapes that do not pair up.
WaveDataset load_wave_dataset(const std::filesystem::path& path);

}  // namespace lowrank::data
