// `lowrank spgemm`: sparse × sparse products (lowrank/ops/spgemm.h) on Matrix Market or safetensors
// CSR files (lowrank/data/sparse_matrix_file.h), and the synthetic inputs of the benchmarks.
//   lowrank spgemm A.mtx [B.mtx] --out C.mtx|C.safetensors [--algorithm hash|hash-atomic|dense|esc|inner]
//                  [--no-sort] [--drop-zeros] [--max-memory 8G]      (C = A·B; A·A without B)
//   lowrank spgemm --generate rmat:14|er:N:D|stencil2d:N|stencil3d:N [--seed S] --out A.mtx
// Parsing only: the work is the library's.
#include <ATen/Parallel.h>

#include <charconv>
#include <chrono>
#include <iomanip>
#include <iostream>
#include <memory>

#include "apps/lowrank/verbs.h"
#include "lowrank/core/error.h"
#include "lowrank/core/json.h"
#include "lowrank/data/graphs.h"
#include "lowrank/data/sparse_matrix_file.h"
#include "lowrank/ops/spgemm.h"

namespace lowrank::cli {

namespace {

struct SpgemmFlags {
  std::vector<std::string> inputs;
  std::string out, algorithm = "hash", max_memory, generate;
  bool no_sort = false, drop_zeros = false;
  uint64_t seed = 1;
};

// "8G", "512M", "64K", "1000" -> bytes.
int64_t parse_bytes(const std::string& text) {
  int64_t number = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  std::string_view suffix(ptr, text.data() + text.size() - ptr);
  int shift = -1;
  if (suffix.empty() || suffix == "B") shift = 0;
  if (suffix == "K" || suffix == "KiB" || suffix == "k") shift = 10;
  if (suffix == "M" || suffix == "MiB") shift = 20;
  if (suffix == "G" || suffix == "GiB") shift = 30;
  if (suffix == "T" || suffix == "TiB") shift = 40;
  LR_CHECK(ec == std::errc() && number > 0 && shift >= 0, InvalidArgument, "--max-memory \"", text,
           "\" is not a size (expected e.g. 8G, 512M, 1000000)");
  return number << shift;
}

std::string human_bytes(int64_t bytes) {
  const char* unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return str(std::fixed, std::setprecision(u == 0 ? 0 : 1), v, " ", unit[u]);
}

void run_generate(const SpgemmFlags& flags, const GlobalOptions& global) {
  LR_CHECK(flags.inputs.empty(), InvalidArgument, "--generate writes a matrix; it takes no input files");
  const ops::Csr m = data::graph_from_spec(flags.generate, flags.seed);
  data::write_sparse_matrix(flags.out, m);
  if (global.json) {
    OrderedJson report;
    report["graph"] = flags.generate;
    report["rows"] = m.rows;
    report["cols"] = m.cols;
    report["nnz"] = m.nnz();
    report["out"] = flags.out;
    std::cout << report.dump(2) << "\n";
  } else if (!global.quiet) {
    std::cout << flags.generate << ": " << m.rows << "x" << m.cols << ", " << m.nnz() << " entries -> "
              << flags.out << "\n";
  }
}

void run_spgemm(const SpgemmFlags& flags, const GlobalOptions& global) {
  if (!flags.generate.empty()) {
    run_generate(flags, global);
    return;
  }
  LR_CHECK(!flags.inputs.empty() && flags.inputs.size() <= 2, InvalidArgument,
           "give one or two matrices (A [B]); got ", flags.inputs.size());
  ops::SpgemmOptions options;
  options.algorithm = ops::parse_spgemm_algorithm(flags.algorithm);
  options.sort_columns = !flags.no_sort;
  options.drop_zeros = flags.drop_zeros;
  LR_CHECK(options.sort_columns || options.algorithm == ops::SpgemmAlgorithm::kHash ||
               options.algorithm == ops::SpgemmAlgorithm::kHashAtomic,
           InvalidArgument, "--no-sort applies to --algorithm hash and hash-atomic only");
  const int64_t max_memory = flags.max_memory.empty() ? 0 : parse_bytes(flags.max_memory);
  // The output's format is checked before the inputs are read.
  const std::string ext = std::filesystem::path(flags.out).extension().string();
  LR_CHECK(ext == ".mtx" || ext == ".safetensors", InvalidArgument, "--out ", flags.out,
           ": unknown sparse matrix format \"", ext, "\" (expected .mtx or .safetensors)");

  const ops::Csr a = data::read_sparse_matrix(flags.inputs[0]);
  const ops::Csr b = flags.inputs.size() == 2 ? data::read_sparse_matrix(flags.inputs[1]) : ops::Csr{};
  const ops::Csr& right = flags.inputs.size() == 2 ? b : a;
  LR_CHECK(a.cols == right.rows, InvalidArgument, "shapes do not chain: ", flags.inputs[0], " is ", a.rows,
           "x", a.cols, ", ", flags.inputs.size() == 2 ? flags.inputs[1] : flags.inputs[0], " is ",
           right.rows, "x", right.cols, " (A's columns must equal B's rows)");
  const std::vector<int64_t> row_flops = ops::spgemm_row_flops(a, right);
  const int64_t estimate = ops::spgemm_memory_bytes(a, right, options.algorithm, row_flops);
  LR_CHECK(max_memory == 0 || estimate <= max_memory, InvalidArgument, "--algorithm ", flags.algorithm,
           " needs about ", human_bytes(estimate), " for this product, above --max-memory ",
           flags.max_memory);

  ops::SpgemmStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  const ops::Csr c = ops::spgemm(a, right, options, &stats, row_flops);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  data::write_sparse_matrix(flags.out, c);
  const double gflops = seconds > 0 ? 2.0 * static_cast<double>(stats.flops) / seconds * 1e-9 : 0.0;
  if (global.json) {
    OrderedJson report;
    report["algorithm"] = flags.algorithm;
    report["a"] = {a.rows, a.cols, a.nnz()};
    report["b"] = {right.rows, right.cols, right.nnz()};
    report["c"] = {c.rows, c.cols, c.nnz()};
    report["flops"] = stats.flops;
    report["seconds"] = seconds;
    report["gflops"] = gflops;
    report["threads"] = at::get_num_threads();
    report["memory_estimate_bytes"] = estimate;
    report["hash_rows"] = stats.hash_rows;
    report["dense_rows"] = stats.dense_rows;
    report["atomic_rows"] = stats.atomic_rows;
    report["bin_rows"] = stats.bin_rows;
    report["out"] = flags.out;
    std::cout << report.dump(2) << "\n";
  } else if (!global.quiet) {
    std::cout << flags.algorithm << ": " << a.rows << "x" << a.cols << " (" << a.nnz() << ") * " << right.rows
              << "x" << right.cols << " (" << right.nnz() << ") = " << c.rows << "x" << c.cols << " ("
              << c.nnz() << " entries), " << stats.flops << " multiply-adds in " << std::fixed
              << std::setprecision(3) << seconds << " s (" << std::setprecision(2) << gflops << " GFLOP/s, "
              << at::get_num_threads() << " threads) -> " << flags.out << "\n";
  }
}

}  // namespace

VerbRunner add_spgemm(CLI::App& app, const GlobalOptions& global) {
  auto flags = std::make_shared<SpgemmFlags>();
  auto* cmd = app.add_subcommand("spgemm",
                                 "Sparse x sparse product C = A*B (SMASH row-wise hashing; docs/sparse.md)");
  cmd->add_option("inputs", flags->inputs, "A [B]: .mtx or .safetensors (CSR); C = A*A without B");
  cmd->add_option("--out", flags->out, "C (or the generated matrix): .mtx or .safetensors")->required();
  cmd->add_option("--algorithm", flags->algorithm, "hash | hash-atomic | dense | esc | inner")
      ->capture_default_str();
  cmd->add_flag("--no-sort", flags->no_sort,
                "Leave each row's columns in first-touch order (hash kernels; still deterministic)");
  cmd->add_flag("--drop-zeros", flags->drop_zeros, "Remove entries whose value is exactly zero");
  cmd->add_option("--max-memory", flags->max_memory,
                  "Refuse a product whose estimated working memory exceeds this (e.g. 8G), before any work");
  cmd->add_option(
      "--generate", flags->generate,
      "Write a synthetic matrix instead: rmat:SCALE[:EDGE_FACTOR], er:N:MEAN_DEGREE, stencil2d:N, "
      "stencil3d:N");
  cmd->add_option("--seed", flags->seed, "--generate: seed of the random graphs")->capture_default_str();
  return [flags, &global] { run_spgemm(*flags, global); };
}

}  // namespace lowrank::cli
