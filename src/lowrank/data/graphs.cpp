// Synthetic sparse matrices (graphs.h).
#include "lowrank/data/graphs.h"

#include <charconv>
#include <numeric>
#include <string>
#include <type_traits>
#include <vector>

#include <ATen/Parallel.h>

#include "lowrank/core/error.h"
#include "lowrank/core/random.h"

namespace lowrank::data {

namespace {

// A uniform double in [0, 1) from (seed, counter).
inline double uniform(uint64_t seed, uint64_t counter) {
  return unit_interval(splitmix64(seed ^ splitmix64(counter)));
}

}  // namespace

ops::Csr rmat_graph(const RmatOptions& o) {
  LR_CHECK(o.scale >= 0 && o.scale <= 30, InvalidArgument, "R-MAT scale ", o.scale, " is outside [0, 30]");
  LR_CHECK(o.edge_factor >= 1, InvalidArgument, "R-MAT edge factor ", o.edge_factor, " must be at least 1");
  LR_CHECK(o.a > 0 && o.b >= 0 && o.c >= 0 && o.a + o.b + o.c < 1, InvalidArgument,
           "R-MAT probabilities a=", o.a, " b=", o.b, " c=", o.c,
           " must be non-negative with a > 0 and a + b + c < 1");
  const int64_t n = int64_t{1} << o.scale, m = o.edge_factor * n;
  std::vector<int64_t> r(m), c(m);
  std::vector<double> v(m);
  const uint64_t seed = splitmix64(o.seed);
  at::parallel_for(0, m, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      int64_t i = 0, j = 0;
      for (int level = 0; level < o.scale; ++level) {
        const double u = uniform(seed, static_cast<uint64_t>(e) * 64 + level);
        const int64_t bit = int64_t{1} << (o.scale - 1 - level);
        if (u < o.a) {
        } else if (u < o.a + o.b) {
          j |= bit;
        } else if (u < o.a + o.b + o.c) {
          i |= bit;
        } else {
          i |= bit;
          j |= bit;
        }
      }
      r[e] = i;
      c[e] = j;
      v[e] = 0.5 + uniform(seed, static_cast<uint64_t>(e) * 64 + 63);
    }
  });
  // Graph500's relabelling: a seeded Fisher–Yates permutation of the vertices.
  std::vector<int64_t> perm(n);
  std::iota(perm.begin(), perm.end(), 0);
  const uint64_t perm_seed = splitmix64(seed + 1);
  for (int64_t k = n - 1; k > 0; --k) {
    const auto t = static_cast<int64_t>(splitmix64(perm_seed ^ splitmix64(k)) % static_cast<uint64_t>(k + 1));
    std::swap(perm[k], perm[t]);
  }
  for (int64_t e = 0; e < m; ++e) {
    r[e] = perm[r[e]];
    c[e] = perm[c[e]];
  }
  return ops::csr_from_coo(n, n, r, c, v);
}

ops::Csr erdos_renyi_graph(int64_t n, double mean_degree, uint64_t seed) {
  LR_CHECK(n >= 1 && n < (int64_t{1} << 31), InvalidArgument, "Erdős–Rényi size ", n,
           " is outside [1, 2^31)");
  LR_CHECK(mean_degree > 0 && mean_degree <= static_cast<double>(n), InvalidArgument,
           "Erdős–Rényi mean degree ", mean_degree, " is outside (0, n = ", n, "]");
  const auto m = static_cast<int64_t>(static_cast<double>(n) * mean_degree);
  std::vector<int64_t> r(m), c(m);
  std::vector<double> v(m);
  const uint64_t s = splitmix64(seed + 0x5eed);
  for (int64_t e = 0; e < m; ++e) {
    r[e] = static_cast<int64_t>(uniform(s, 3 * e) * static_cast<double>(n));
    c[e] = static_cast<int64_t>(uniform(s, 3 * e + 1) * static_cast<double>(n));
    v[e] = 0.5 + uniform(s, 3 * e + 2);
  }
  return ops::csr_from_coo(n, n, r, c, v);
}

namespace {
// The (2·dims + 1)-point Laplacian on an n^dims grid, row-major grid order.
ops::Csr laplacian(int64_t n, int dims) {
  LR_CHECK(n >= 1, InvalidArgument, "stencil grid size ", n, " must be at least 1");
  int64_t size = 1;
  for (int d = 0; d < dims; ++d) {
    size *= n;
    LR_CHECK(size < (int64_t{1} << 31), InvalidArgument, "stencil grid ", n, "^", dims,
             " exceeds 2^31 - 1 points");
  }
  ops::Csr m = ops::csr_zeros(size, size);
  m.indices.reserve(size * (2 * dims + 1));
  m.values.reserve(size * (2 * dims + 1));
  std::vector<int64_t> stride(dims, 1);
  for (int d = dims - 2; d >= 0; --d) stride[d] = stride[d + 1] * n;
  for (int64_t p = 0; p < size; ++p) {
    // Neighbours in ascending index order: −stride[0] … −stride[dims−1], self, +stride[dims−1] … +stride[0].
    for (int d = 0; d < dims; ++d)
      if ((p / stride[d]) % n > 0) {
        m.indices.push_back(static_cast<int32_t>(p - stride[d]));
        m.values.push_back(-1.0);
      }
    m.indices.push_back(static_cast<int32_t>(p));
    m.values.push_back(2.0 * dims);
    for (int d = dims - 1; d >= 0; --d)
      if ((p / stride[d]) % n < n - 1) {
        m.indices.push_back(static_cast<int32_t>(p + stride[d]));
        m.values.push_back(-1.0);
      }
    m.indptr[p + 1] = static_cast<int64_t>(m.indices.size());
  }
  return m;
}

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (;;) {
    const size_t end = s.find(sep, start);
    out.push_back(s.substr(start, end == std::string_view::npos ? std::string_view::npos : end - start));
    if (end == std::string_view::npos) return out;
    start = end + 1;
  }
}
}  // namespace

ops::Csr laplacian_2d(int64_t n) {
  return laplacian(n, 2);
}
ops::Csr laplacian_3d(int64_t n) {
  return laplacian(n, 3);
}

ops::Csr graph_from_spec(std::string_view spec, uint64_t seed) {
  const std::vector<std::string_view> part = split(spec, ':');
  // Parameter k of the spec as a T (int64_t or double).
  auto number = [&]<typename T>(size_t k, T) {
    T value{};
    LR_CHECK(k < part.size(), InvalidArgument, "graph \"", spec, "\": missing parameter ", k);
    auto [ptr, ec] = std::from_chars(part[k].data(), part[k].data() + part[k].size(), value);
    LR_CHECK(ec == std::errc() && ptr == part[k].data() + part[k].size(), InvalidArgument, "graph \"", spec,
             "\": \"", part[k], "\" is not ", std::is_integral_v<T> ? "an integer" : "a number");
    return value;
  };
  auto integer = [&](size_t k) { return number(k, int64_t{}); };
  auto real = [&](size_t k) { return number(k, double{}); };
  const std::string_view kind = part[0];
  if (kind == "rmat" && (part.size() == 2 || part.size() == 3)) {
    RmatOptions o;
    o.scale = static_cast<int>(integer(1));
    if (part.size() == 3) o.edge_factor = integer(2);
    o.seed = seed;
    return rmat_graph(o);
  }
  if (kind == "er" && part.size() == 3) return erdos_renyi_graph(integer(1), real(2), seed);
  if (kind == "stencil2d" && part.size() == 2) return laplacian_2d(integer(1));
  if (kind == "stencil3d" && part.size() == 2) return laplacian_3d(integer(1));
  throw InvalidArgument(
      str("unknown graph \"", spec,
          "\" (expected rmat:SCALE[:EDGE_FACTOR], er:N:MEAN_DEGREE, stencil2d:N or stencil3d:N)"));
}

}  // namespace lowrank::data
