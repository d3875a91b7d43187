// The gradient projectors against independent oracles: GaLore's side rule, an SVD computed here
// (full rank gives up(down(G)) = G, rank r gives the truncation), semi-orthogonality, the DCT
// selection recomputed from its definition (down(G) = G·Q[:, idx], idx = the top-ℓ1 columns),
// gather/scatter for coordinates, and a state round trip for every kind.
#include <algorithm>
#include <set>

#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>

#include "lowrank/linalg/dct.h"
#include "lowrank/optim/coordinate_projector.h"
#include "lowrank/optim/dct_projector.h"
#include "lowrank/optim/projector.h"
#include "lowrank/optim/random_projector.h"
#include "lowrank/optim/svd_projector.h"
#include "tests/testing.h"

namespace lowrank::optim {
namespace {

using testing::max_abs_diff;

at::Tensor gradient(int64_t m, int64_t n, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::randn({m, n}, gen, at::kFloat);
}

std::set<int64_t> as_set(const at::Tensor& idx) {
  std::set<int64_t> out;
  const at::Tensor c = idx.to(at::kCPU);
  for (int64_t i = 0; i < c.numel(); ++i) out.insert(c[i].item<int64_t>());
  return out;
}

TEST(ProjectorTest, StdSideIsTheShortSide) {
  EXPECT_EQ(std_side(8, 5), ProjectionSide::kRight);
  EXPECT_EQ(std_side(5, 5), ProjectionSide::kRight);
  EXPECT_EQ(std_side(5, 8), ProjectionSide::kLeft);
  SvdProjector tall(8, 5, 3), wide(5, 8, 3);
  tall.refresh(gradient(8, 5, 1), 0);
  wide.refresh(gradient(5, 8, 2), 0);
  // Right: Q [r, n], R = G Qᵀ [m, r]; left: P [m, r], R = Pᵀ G [r, n]. States are r × D.
  EXPECT_EQ(tall.matrix().sizes(), (std::vector<int64_t>{3, 5}));
  EXPECT_EQ(tall.down(gradient(8, 5, 3)).sizes(), (std::vector<int64_t>{8, 3}));
  EXPECT_EQ(wide.matrix().sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_EQ(wide.down(gradient(5, 8, 4)).sizes(), (std::vector<int64_t>{3, 8}));
  EXPECT_EQ(parse_projector_kind("randperm", 8, 5), ProjectorKind::kColumns);
  EXPECT_EQ(parse_projector_kind("randperm", 5, 8), ProjectorKind::kRows);
  EXPECT_NE(testing::error_of([] { parse_projector_kind("nope", 2, 2); }).find("unknown projector"),
            std::string::npos);
}

TEST(SvdProjectorTest, FullRankRoundTripIsIdentity) {
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{9, 6}, {6, 9}, {7, 7}}) {
    const at::Tensor G = gradient(m, n, 5);
    SvdProjector p(m, n, std::min(m, n));
    p.refresh(G, 0);
    EXPECT_LE(max_abs_diff(p.up(p.down(G)), G), 1e-5) << m << "x" << n;
  }
}

TEST(SvdProjectorTest, RankRProjectionIsTheTruncatedSvd) {
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{10, 6}, {6, 10}}) {
    const at::Tensor G = gradient(m, n, 6);
    SvdProjector p(m, n, 2);
    p.refresh(G, 0);
    auto [u, s, vh] = at::linalg_svd(G.to(at::kDouble), false);
    const at::Tensor truncation = at::matmul(u.slice(1, 0, 2) * s.slice(0, 0, 2), vh.slice(0, 0, 2));
    EXPECT_LE(max_abs_diff(p.up(p.down(G)), truncation), 1e-5) << m << "x" << n;
  }
}

TEST(RandomizedSvdProjectorTest, CapturesAnExactlyLowRankGradientWarmStartedToo) {
  // G of rank 3: the rank-3 randomized SVD spans its range, cold and warm-started alike.
  at::Generator gen = at::detail::createCPUGenerator(7);
  const at::Tensor A = at::randn({12, 3}, gen, at::kFloat), B = at::randn({3, 9}, gen, at::kFloat);
  const at::Tensor G = at::matmul(A, B);
  RandomizedSvdProjector p(12, 9, 3, /*seed=*/1, /*oversample=*/2, /*power_iters=*/1);
  p.refresh(G, 0);
  EXPECT_LE(testing::rel_fro_error(p.up(p.down(G)), G), 1e-4);
  const at::Tensor G2 = G + 1e-3 * gradient(12, 9, 8);
  p.refresh(G2, 1);  // warm start from the previous subspace
  EXPECT_LE(testing::rel_fro_error(p.up(p.down(G)), G), 1e-2);
  EXPECT_EQ(p.matrix().sizes(), (std::vector<int64_t>{3, 9}));
}

TEST(RandomizedSvdProjectorTest, WarmRefreshTracksADriftingSubspaceOnBothSides) {
  // G_t = U_t diag(s) V_tᵀ + noise with a slowly rotating U_t, V_t (s_i = i^-1/2, 12 directions):
  // every refresh is orthonormal, and from the second warm one on (each warm refresh is one more
  // round of subspace iteration) it captures >= 99% of the exact top-r energy of G_t (the oracle:
  // the singular values of an SVD computed here), also with power_iters = 0 (one round).
  for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{80, 50}, {50, 80}}) {
    for (int64_t q : {0, 1}) {
      at::Generator gen = at::detail::createCPUGenerator(21);
      const at::Tensor s = at::arange(1, 13, at::kFloat).pow(-0.5);
      at::Tensor U = std::get<0>(at::linalg_qr(at::randn({m, 12}, gen)));
      at::Tensor V = std::get<0>(at::linalg_qr(at::randn({n, 12}, gen)));
      RandomizedSvdProjector p(m, n, 4, /*seed=*/3, /*oversample=*/4, q);
      for (int t = 0; t < 4; ++t) {
        const at::Tensor G = at::matmul(U * s, V.t()) + 0.01 * at::randn({m, n}, gen);
        p.refresh(G, 200 * t);
        const at::Tensor M = p.matrix();
        const at::Tensor gram =
            p.side() == ProjectionSide::kRight ? at::matmul(M, M.t()) : at::matmul(M.t(), M);
        EXPECT_LE(max_abs_diff(gram, at::eye(4)), 1e-5);
        const double captured = p.down(G).square().sum().item<double>();
        const double exact = at::linalg_svdvals(G).slice(0, 0, 4).square().sum().item<double>();
        if (t >= 2) {
          EXPECT_GE(captured / exact, 0.99) << m << "x" << n << " q=" << q << " t=" << t;
        }
        U = std::get<0>(at::linalg_qr(U + 0.05 * at::randn(U.sizes(), gen)));
        V = std::get<0>(at::linalg_qr(V + 0.05 * at::randn(V.sizes(), gen)));
      }
    }
  }
}

TEST(RandomProjectorTest, SemiOrthogonalSeededAndRedrawnPerStep) {
  RandomOrthogonalProjector a(10, 6, 3, 42), b(10, 6, 3, 42);
  const at::Tensor G = gradient(10, 6, 9);
  a.refresh(G, 0);
  b.refresh(G, 0);
  EXPECT_LE(max_abs_diff(at::matmul(a.matrix(), a.matrix().t()), at::eye(3)), 1e-5);  // Q Qᵀ = I
  EXPECT_TRUE(at::equal(a.matrix(), b.matrix()));
  b.refresh(G, 200);
  EXPECT_GT(max_abs_diff(a.matrix(), b.matrix()), 1e-3);
  RandomOrthogonalProjector left(6, 10, 3, 42);
  left.refresh(gradient(6, 10, 9), 0);
  EXPECT_LE(max_abs_diff(at::matmul(left.matrix().t(), left.matrix()), at::eye(3)), 1e-5);  // PᵀP = I
}

TEST(GaussianProjectorTest, StateIsOnlyTheSeedAndEntriesHaveVarianceOneOverR) {
  const int64_t n = 64, r = 8;
  GaussianProjector p(n, n, r, 3);
  EXPECT_EQ(p.state_bytes(), 0);
  p.refresh(gradient(n, n, 1), 0);
  EXPECT_EQ(p.state_bytes(), 8);
  const NamedTensors state = p.state_tensors();
  ASSERT_EQ(state.size(), 1u);
  EXPECT_EQ(state[0].first, "seed");
  // down(I) = Qᵀ [n, r] for the square (right) case: entries N(0, 1/r).
  const at::Tensor Qt = p.down(at::eye(n));
  EXPECT_EQ(Qt.sizes(), (std::vector<int64_t>{n, r}));
  EXPECT_NEAR(Qt.pow(2).mean().item<double>(), 1.0 / r, 0.25 / r);
  GaussianProjector q(n, n, r, 99);
  q.load_state(state, at::kCPU);
  const at::Tensor G = gradient(n, n, 2);
  EXPECT_TRUE(at::equal(q.down(G), p.down(G)));
}

TEST(CoordinateProjectorTest, DownGathersAndUpScattersIntoZeros) {
  const at::Tensor G = gradient(6, 5, 10);
  CoordinateProjector cols(ProjectorKind::kColumns, 6, 5, 2, 1);
  cols.refresh(G, 0);
  ASSERT_EQ(cols.indices().numel(), 2);
  EXPECT_EQ(as_set(cols.indices()).size(), 2u);
  EXPECT_TRUE(at::equal(cols.down(G), G.index_select(1, cols.indices())));
  at::Tensor expected = at::zeros_like(G);
  for (int64_t j : as_set(cols.indices())) expected.select(1, j).copy_(G.select(1, j));
  EXPECT_TRUE(at::equal(cols.up(cols.down(G)), expected));
  EXPECT_EQ(cols.state_bytes(), 2 * 8);

  CoordinateProjector rows(ProjectorKind::kRows, 6, 5, 4, 1);
  rows.refresh(G, 0);
  EXPECT_TRUE(at::equal(rows.down(G), G.index_select(0, rows.indices())));
  CoordinateProjector randk(ProjectorKind::kRandK, 6, 5, 7, 1);
  randk.refresh(G, 0);
  EXPECT_EQ(randk.down(G).sizes(), (std::vector<int64_t>{7}));
  const at::Tensor kept = randk.up(randk.down(G));
  EXPECT_EQ(kept.ne(0).sum().item<int64_t>(), 7);
  EXPECT_TRUE(at::equal(kept.reshape({-1}).index_select(0, randk.indices()), randk.down(G)));
  // Full rank: a permutation, so nothing is lost.
  CoordinateProjector all(ProjectorKind::kColumns, 6, 5, 5, 3);
  all.refresh(G, 0);
  EXPECT_TRUE(at::equal(all.up(all.down(G)), G));
}

TEST(DctProjectorTest, DownIsGTimesSelectedBasisAndIndicesAreTheTopL1Columns) {
  // Tall: Q [n, n], scores are the ℓ1 norms of the columns of G Q.
  {
    const at::Tensor G = gradient(12, 8, 11);
    DctProjector p(12, 8, 3);
    p.refresh(G, 0);
    const at::Tensor Q = linalg::dct3_matrix(8);
    EXPECT_LE(max_abs_diff(p.down(G), at::matmul(G, Q.index_select(1, p.indices()))), 1e-6);
    const at::Tensor scores = at::matmul(G.to(at::kDouble), Q.to(at::kDouble)).abs().sum(0);
    const std::set<int64_t> chosen = as_set(p.indices());
    ASSERT_EQ(chosen.size(), 3u);
    double min_chosen = 1e30, max_other = -1;
    for (int64_t j = 0; j < 8; ++j) {
      const double s = scores[j].item<double>();
      if (chosen.count(j)) {
        min_chosen = std::min(min_chosen, s);
      } else {
        max_other = std::max(max_other, s);
      }
    }
    EXPECT_GE(min_chosen, max_other);
    // up(u) = u Q[:, idx]ᵀ; with r = d it is the identity.
    DctProjector full(12, 8, 8);
    full.refresh(G, 0);
    EXPECT_LE(max_abs_diff(full.up(full.down(G)), G), 1e-5);
  }
  // Wide: scores are the ℓ1 norms of the rows of Qᵀ G, down(G) = Q[:, idx]ᵀ G.
  {
    const at::Tensor G = gradient(6, 14, 12);
    DctProjector p(6, 14, 2);
    p.refresh(G, 0);
    const at::Tensor Q = linalg::dct3_matrix(6);
    EXPECT_LE(max_abs_diff(p.down(G), at::matmul(Q.index_select(1, p.indices()).t(), G)), 1e-6);
    const at::Tensor scores = at::matmul(Q.t().to(at::kDouble), G.to(at::kDouble)).abs().sum(1);
    const at::Tensor top = std::get<1>(at::topk(scores, 2));
    EXPECT_EQ(as_set(p.indices()), as_set(top));
    EXPECT_EQ(p.down(G).sizes(), (std::vector<int64_t>{2, 14}));
  }
}

TEST(ProjectorTest, StateRoundTripReproducesTheProjection) {
  for (ProjectorKind kind :
       {ProjectorKind::kSvd, ProjectorKind::kRandomizedSvd, ProjectorKind::kRandomOrthogonal,
        ProjectorKind::kGaussian, ProjectorKind::kColumns, ProjectorKind::kRows, ProjectorKind::kRandK,
        ProjectorKind::kDct}) {
    for (auto [m, n] : std::vector<std::pair<int64_t, int64_t>>{{9, 6}, {6, 9}}) {
      ProjectorOptions o;
      o.kind = kind;
      o.rank = 3;
      o.seed = 5;
      auto a = make_projector(o, m, n);
      EXPECT_FALSE(a->ready());
      EXPECT_TRUE(a->state_tensors().empty());
      a->refresh(gradient(m, n, 13), 4);
      EXPECT_TRUE(a->ready());
      o.seed = 77;  // the state alone defines the subspace
      auto b = make_projector(o, m, n);
      b->load_state(a->state_tensors(), at::kCPU);
      const at::Tensor G = gradient(m, n, 14);
      EXPECT_TRUE(at::equal(a->down(G), b->down(G))) << projector_kind_name(kind);
      EXPECT_TRUE(at::equal(a->up(a->down(G)), b->up(b->down(G)))) << projector_kind_name(kind);
      EXPECT_EQ(a->state_bytes(), b->state_bytes());
    }
  }
  // A mis-shaped state is Corruption.
  ProjectorOptions o;
  o.rank = 2;
  auto p = make_projector(o, 9, 6);
  EXPECT_THROW(p->load_state({{"ortho", at::zeros({3, 6})}}, at::kCPU), Corruption);
  EXPECT_THROW(p->load_state({}, at::kCPU), Corruption);
}

}  // namespace
}  // namespace lowrank::optim
