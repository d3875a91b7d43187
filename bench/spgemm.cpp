// SpGEMM (ops/spgemm.h), C = A·A on synthetic graphs (data/graphs.h), every kernel in one run:
//   hash         SMASH's row-wise hashing (the default), on the run's threads and on one thread
//   hash-atomic  heavy rows split across threads into one shared table
//   dense        Gustavson with a dense accumulator (the reference)
//   esc          outer product, expand–sort–compress (skipped when its triples exceed --esc-max-gib)
//   inner        inner product (skipped when rows × non-empty columns exceeds --inner-max-pairs)
//   eigen        Eigen 3.4's sparse product in this binary (one thread: Eigen's is sequential;
//                skipped above --eigen-max-flops partial products, as it alone would take most of
//                the run at R-MAT scale 16)
// Each row reports the interleaved medians, GFLOP/s = 2·flops / time (flops: partial products), and
// checks that every kernel's C equals the reference's (pattern, values to 1e-12; Eigen's size).
//
//   build/bin/bench_spgemm [--graphs rmat:10,rmat:12,...] [--repeats 3] [--out FILE.json]
//                          [--esc-max-gib 3] [--inner-max-pairs 3e8] [--eigen-max-flops 2e8]
//                          [--algorithms hash,dense,...]
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/data/graphs.h"
#include "lowrank/ops/spgemm.h"
#include "timing.h"

#ifdef LOWRANK_HAVE_EIGEN
#include <Eigen/SparseCore>
#endif

namespace {

namespace ops = lowrank::ops;

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = s.find(',', start);
    out.push_back(s.substr(start, end == std::string::npos ? std::string::npos : end - start));
    if (end == std::string::npos) break;
    start = end + 1;
  }
  return out;
}

double max_rel_diff(const ops::Csr& x, const ops::Csr& y) {
  if (x.indptr != y.indptr || x.indices != y.indices) return INFINITY;
  double d = 0;
  for (size_t p = 0; p < x.values.size(); ++p)
    d = std::max(d, std::abs(x.values[p] - y.values[p]) / (1.0 + std::abs(y.values[p])));
  return d;
}

}  // namespace

int main(int argc, char** argv) {
  std::string out = "bench/results/spgemm.json";
  std::string graphs =
      "rmat:10,rmat:11,rmat:12,rmat:13,rmat:14,rmat:15,rmat:16,er:16384:16,stencil2d:256,stencil3d:40";
  int repeats = 3;
  double esc_max_gib = 3.0, inner_max_pairs = 3e8, eigen_max_flops = 2e8;
  std::string algorithms = "hash,hash_1thread,hash-atomic,dense,esc,inner,eigen";
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--out") == 0) out = argv[i + 1];
    if (std::strcmp(argv[i], "--graphs") == 0) graphs = argv[i + 1];
    if (std::strcmp(argv[i], "--repeats") == 0) repeats = std::stoi(argv[i + 1]);
    if (std::strcmp(argv[i], "--esc-max-gib") == 0) esc_max_gib = std::stod(argv[i + 1]);
    if (std::strcmp(argv[i], "--inner-max-pairs") == 0) inner_max_pairs = std::stod(argv[i + 1]);
    if (std::strcmp(argv[i], "--algorithms") == 0) algorithms = argv[i + 1];
    if (std::strcmp(argv[i], "--eigen-max-flops") == 0) eigen_max_flops = std::stod(argv[i + 1]);
  }
  const int threads = at::get_num_threads();
#ifdef LOWRANK_HAVE_EIGEN
  const bool eigen = true;
#else
  const bool eigen = false;
#endif
  std::printf("SpGEMM C = A*A, %d threads; Eigen 3.4 peer: %s\n", threads, eigen ? "yes" : "not built");
  std::printf("%-15s %8s %9s %11s %10s %9s %9s %9s %9s %9s %9s %9s %8s\n", "graph", "rows", "nnz(A)", "flops",
              "nnz(C)", "hash_ms", "hash1_ms", "atomic", "dense", "esc", "inner", "eigen", "GFLOP/s");
  lowrank::Json rows = lowrank::Json::array();
  for (const std::string& spec : split(graphs)) {
    const ops::Csr a = lowrank::data::graph_from_spec(spec, 1);
    const std::vector<int64_t> row_flops = ops::spgemm_row_flops(a, a);
    int64_t flops = 0;
    for (int64_t f : row_flops) flops += f;
    int64_t nonempty_cols = 0;
    {
      std::vector<char> seen(a.cols, 0);
      for (int32_t j : a.indices) seen[j] = 1;
      for (char s : seen) nonempty_cols += s;
    }
    const bool run_esc = static_cast<double>(ops::spgemm_memory_bytes(
                             a, a, ops::SpgemmAlgorithm::kEsc, row_flops)) <= esc_max_gib * 1073741824.0;
    const bool run_inner =
        static_cast<double>(a.rows) * static_cast<double>(nonempty_cols) <= inner_max_pairs;

    const ops::Csr reference = ops::spgemm(a, a);
    // Each timed function keeps its last product; the warm-up call's is checked against the
    // reference after the timing (no extra call).
    std::vector<std::string> names;
    std::vector<std::function<void()>> fns;
    std::vector<std::shared_ptr<ops::Csr>> products;
    const std::vector<std::string> wanted = split(algorithms);
    auto want = [&](const std::string& name) {
      return std::find(wanted.begin(), wanted.end(), name) != wanted.end();
    };
    auto add = [&](const std::string& name, ops::SpgemmAlgorithm alg, int nthreads) {
      if (!want(name)) return;
      ops::SpgemmOptions o;
      o.algorithm = alg;
      auto product = std::make_shared<ops::Csr>();
      names.push_back(name);
      products.push_back(product);
      fns.push_back([&a, o, nthreads, product] {
        const int saved = at::get_num_threads();
        at::set_num_threads(nthreads);
        *product = ops::Csr{};
        *product = ops::spgemm(a, a, o);
        at::set_num_threads(saved);
      });
    };
    add("hash", ops::SpgemmAlgorithm::kHash, threads);
    add("hash_1thread", ops::SpgemmAlgorithm::kHash, 1);
    add("hash-atomic", ops::SpgemmAlgorithm::kHashAtomic, threads);
    add("dense", ops::SpgemmAlgorithm::kDense, threads);
    if (run_esc) add("esc", ops::SpgemmAlgorithm::kEsc, threads);
    if (run_inner) add("inner", ops::SpgemmAlgorithm::kInner, threads);
#ifdef LOWRANK_HAVE_EIGEN
    using EigenCsr = Eigen::SparseMatrix<double, Eigen::RowMajor, int64_t>;
    EigenCsr ea(a.rows, a.cols);
    auto eigen_nnz = std::make_shared<int64_t>(-1);
    if (want("eigen") && static_cast<double>(flops) <= eigen_max_flops) {
      std::vector<Eigen::Triplet<double, int64_t>> t;
      t.reserve(a.nnz());
      for (int64_t i = 0; i < a.rows; ++i)
        for (int64_t p = a.indptr[i]; p < a.indptr[i + 1]; ++p) t.emplace_back(i, a.indices[p], a.values[p]);
      ea.setFromTriplets(t.begin(), t.end());
      names.push_back("eigen");
      products.push_back(nullptr);
      fns.push_back([&ea, eigen_nnz] {
        const EigenCsr c = EigenCsr(ea * ea);
        *eigen_nnz = c.nonZeros();
      });
    }
#endif
    const std::vector<double> t = lowrank::bench::interleaved_median_seconds(fns, repeats);
    std::vector<double> diffs;
    for (size_t k = 0; k < names.size(); ++k) {
#ifdef LOWRANK_HAVE_EIGEN
      if (names[k] == "eigen") {  // Eigen's pattern and values are checked in the tests; here its size
        diffs.push_back(*eigen_nnz == reference.nnz() ? 0.0 : INFINITY);
        continue;
      }
#endif
      diffs.push_back(max_rel_diff(*products[k], reference));
    }
    products.clear();
    lowrank::Json seconds = lowrank::Json::object(), gflops = lowrank::Json::object(),
                  diff = lowrank::Json::object();
    auto ms = [&](const std::string& name) {
      for (size_t k = 0; k < names.size(); ++k)
        if (names[k] == name) return t[k] * 1e3;
      return std::nan("");
    };
    for (size_t k = 0; k < names.size(); ++k) {
      seconds[names[k]] = t[k];
      gflops[names[k]] = 2.0 * static_cast<double>(flops) / t[k] * 1e-9;
      diff[names[k]] = diffs[k];
      if (!(diffs[k] <= 1e-12))
        std::fprintf(stderr, "%s on %s differs from the reference: %g\n", names[k].c_str(), spec.c_str(),
                     diffs[k]);
    }
    std::printf("%-15s %8lld %9lld %11lld %10lld %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %9.2f %8.3f\n",
                spec.c_str(), static_cast<long long>(a.rows), static_cast<long long>(a.nnz()),
                static_cast<long long>(flops), static_cast<long long>(reference.nnz()), ms("hash"),
                ms("hash_1thread"), ms("hash-atomic"), ms("dense"), ms("esc"), ms("inner"), ms("eigen"),
                2.0 * static_cast<double>(flops) / ms("hash") * 1e-6);
    std::fflush(stdout);
    rows.push_back({{"graph", spec},
                    {"rows", a.rows},
                    {"nnz_a", a.nnz()},
                    {"flops", flops},
                    {"nnz_c", reference.nnz()},
                    {"seconds", seconds},
                    {"gflops", gflops},
                    {"max_rel_diff", diff}});
  }
  lowrank::write_json_file(out, lowrank::Json{{"benchmark", "spgemm"},
                                              {"product", "A*A"},
                                              {"threads", threads},
                                              {"repeats", repeats},
                                              {"eigen", eigen},
                                              {"rows", rows}});
  std::printf("wrote %s\n", out.c_str());
  return 0;
}
