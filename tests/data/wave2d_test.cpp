// The wave solver (data/wave2d.h): second-order convergence to an exact standing wave, exact
// conservation of the discrete energy, damping at absorbing boundaries, and the data set's shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "lowrank/data/wave2d.h"
#include "tests/testing.h"

namespace lowrank::data {
namespace {

// max |u − u_exact| at t = 1/4 for u = sin 2πx sin 2πy cos(2√2 π t) (c = 1, periodic), at rest.
double standing_wave_error(int64_t n) {
  WaveOptions o;
  o.n = n;
  o.boundary = "periodic";
  WaveSolver solver(at::ones({n, n}, at::kDouble), o);
  const at::Tensor x = at::arange(n, at::kDouble) / static_cast<double>(n);
  const at::Tensor mode = at::outer(at::sin(2 * std::numbers::pi * x), at::sin(2 * std::numbers::pi * x));
  solver.start_from_rest(mode);
  const auto steps = static_cast<int64_t>(std::llround(0.25 / solver.dt()));
  EXPECT_NEAR(static_cast<double>(steps) * solver.dt(), 0.25, 1e-12);  // dt = 0.5 / n divides 1/4
  for (int64_t s = 0; s < steps; ++s) solver.step();
  const double exact_t = std::cos(2 * std::numbers::sqrt2 * std::numbers::pi * 0.25);
  return (solver.u() - mode * exact_t).abs().max().item<double>();
}

TEST(WaveSolverTest, ConvergesAtSecondOrder) {
  const double e16 = standing_wave_error(16), e32 = standing_wave_error(32), e64 = standing_wave_error(64);
  // Halving h (and dt, at fixed CFL) divides the error by about 4.
  EXPECT_GT(e16 / e32, 3.5) << e16 << " " << e32;
  EXPECT_LT(e16 / e32, 4.5) << e16 << " " << e32;
  EXPECT_GT(e32 / e64, 3.5) << e32 << " " << e64;
  EXPECT_LT(e32 / e64, 4.5) << e32 << " " << e64;
}

TEST(WaveSolverTest, PeriodicEnergyIsConservedOverAThousandSteps) {
  WaveOptions o;
  o.n = 32;
  o.boundary = "periodic";
  WaveSolver solver(two_layer_speed(32, 12, 1.0, 1.8), o);
  // A smooth bump at rest in a two-layer medium.
  const at::Tensor x = at::arange(32, at::kDouble) / 32.0;
  const at::Tensor g = at::exp(-(x - 0.4).pow(2) / 0.01);
  solver.start_from_rest(at::outer(g, g));
  solver.step();
  const double e0 = solver.energy();
  ASSERT_GT(e0, 0);
  double worst = 0;
  for (int s = 0; s < 1000; ++s) {
    solver.step();
    worst = std::max(worst, std::abs(solver.energy() - e0) / e0);
  }
  EXPECT_LT(worst, 1e-10);
}

TEST(WaveSolverTest, AbsorbingLayerDampsOutgoingWaves) {
  WaveOptions o;
  o.n = 48;
  WaveSolver absorbing(at::ones({48, 48}, at::kDouble), o);
  o.sponge = 0;
  WaveSolver reflecting(at::ones({48, 48}, at::kDouble), o);
  for (WaveSolver* s : {&absorbing, &reflecting}) {
    s->set_ricker_source(24, 24);
    // 3 domain crossings: everything has reached the boundary several times.
    while (s->time() < 3.0) s->step();
  }
  const double left = absorbing.u().abs().max().item<double>(),
               kept = reflecting.u().abs().max().item<double>();
  EXPECT_LT(left, 0.05 * kept) << left << " vs " << kept;
}

TEST(WaveSolverTest, DatasetShapesAndBadOptions) {
  WaveOptions o;
  o.n = 16;
  o.sponge = 3;
  const WaveDataset d = simulate_wave_dataset(o, 6, 4, 7, 4);
  EXPECT_EQ(d.inputs.sizes(), (std::vector<int64_t>{6, 3, 16, 16}));
  EXPECT_EQ(d.targets.sizes(), (std::vector<int64_t>{6, 1, 16, 16}));
  EXPECT_GT(d.targets.abs().max().item<double>(), 0);
  const at::Tensor c = d.inputs.select(1, 2);
  EXPECT_GE(c.min().item<double>(), 1.0);
  EXPECT_LE(c.max().item<double>(), 2.0);
  EXPECT_TRUE(at::equal(simulate_wave_dataset(o, 6, 4, 7, 4).targets, d.targets));  // seeded
  o.cfl = 0.8;
  EXPECT_NE(testing::error_of([&] {
              WaveSolver(at::ones({16, 16}), o);
            }).find("CFL number 0.8"),
            std::string::npos);
  o.cfl = 0.5;
  o.boundary = "reflecting";
  EXPECT_NE(testing::error_of([&] {
              WaveSolver(at::ones({16, 16}), o);
            }).find("\"reflecting\""),
            std::string::npos);
}

}  // namespace
}  // namespace lowrank::data
