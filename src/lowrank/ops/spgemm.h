// Sparse × sparse matrix products (SpGEMM), C = A·B with A, B and C in CSR, on the CPU.
//
// The method is SMASH's row-wise hashed SpGEMM (Shivdikar, 2021, "SMASH: Sparse Matrix Atomic
// Scratchpad Hashing", MS thesis, Northeastern University, arXiv:2105.14156). It computes each row
// of C as a sum of scaled rows of B (Gustavson's row-wise formulation):
//   C_i = Σ_{k ∈ A_i} A_ik · B_k
// and runs in two phases:
//   - symbolic: flops_i = Σ_{k ∈ A_i} nnz(B_k), an upper bound on nnz(C_i). It also bounds the
//     row's table, bin(i) = ⌈log₂ 2·min(flops_i, cols)⌉, and rows are grouped into these bins
//     (heaviest first: the dynamic scheduler then balances the tail);
//   - numeric: every partial product A_ik·B_kj is merged the moment it is made into a per-thread
//     open-addressing scratchpad table keyed by j (size 2^bin(i), linear probing, multiplicative
//     hash). No partial-product matrix is ever built. A row whose table would not fit the L2
//     budget uses a dense accumulator (a value array of `cols` entries with a row stamp). Each row reserves
//     min(flops_i, cols) entries in its thread's output blocks and is written there, then all rows are
//     compacted into C; each row's columns are sorted unless sort_columns is off (first-touch order then,
//     deterministic as well).
// hash-atomic adds the thesis's atomic merge: rows heavier than heavy_row_flops are split across
// all threads, which insert into one shared table with a compare-and-swap on the key and an atomic
// add on the value. The summation order of such a row then depends on the schedule: values agree
// with `hash` to rounding, not bitwise, and the pattern is the same.
//
// For the thesis's comparison of dataflows, three more kernels compute the same product:
//   dense  Gustavson with a dense accumulator for every row (spgemm_cpu.cpp): the reference that
//          the others are tested against;
//   esc    outer product: expand every A_{:,k} ⊗ B_{k,:} into (i, j, v) triples, sort them by row
//          (stable counting sort) and column, compress runs of equal (i, j);
//   inner  inner product: C_ij = A_i · B_{:,j}, merging each row of A with each non-empty column
//          of B (B in CSC).
//
// Conventions shared by all kernels:
//   - the pattern is structural: (i, j) is stored when some stored A_ik meets a stored B_kj, even
//     when the sum is zero (explicit zeros in, explicit zeros out; drop_zeros removes them);
//   - every kernel except hash-atomic sums each C_ij over k in ascending order, so hash, dense, esc
//     and inner give bitwise identical results, for any thread count;
//   - values are float64; indices are int32 (dimensions < 2³¹), row offsets int64 (nnz may not).
// Deviation: the thesis targets Intel's PIUMA, whose scratchpad is software-managed; here the
// "scratchpad" is a per-thread table sized to stay in the L2 cache (l2_bytes).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

namespace lowrank::ops {

// std::allocator, except that resize() leaves new elements uninitialised: the kernels write every
// element of C (in parallel), so value-initialising it first would be a memset of the whole output
// on one thread, and the first touch of every page from that one thread.
template <typename T>
struct DefaultInitAllocator : std::allocator<T> {
  template <typename U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  DefaultInitAllocator() = default;
  template <typename U>
  DefaultInitAllocator(const DefaultInitAllocator<U>&) noexcept {}
  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};
template <typename T>
using CsrArray = std::vector<T, DefaultInitAllocator<T>>;

// A compressed-sparse-row matrix. Within each row, columns are strictly increasing (no duplicates),
// except in a product computed with sort_columns off, whose rows are unsorted.
struct Csr {
  int64_t rows = 0;
  int64_t cols = 0;
  CsrArray<int64_t> indptr{0};  // rows + 1 offsets into indices/values
  CsrArray<int32_t> indices;
  CsrArray<double> values;

  int64_t nnz() const { return indptr.empty() ? 0 : indptr.back(); }
  // InvalidArgument naming `what` (and the row) unless the arrays describe a valid matrix as above.
  void check(std::string_view what, bool require_sorted = true) const;
};

// An empty rows × cols matrix.
Csr csr_zeros(int64_t rows, int64_t cols);
// From coordinate triples: duplicates are summed, explicit zeros kept. InvalidArgument names the
// first entry out of range.
Csr csr_from_coo(int64_t rows, int64_t cols, std::span<const int64_t> row, std::span<const int64_t> col,
                 std::span<const double> value);
// From a 2-D ATen tensor: strided (its nonzeros), sparse COO (coalesced) or sparse CSR (as stored).
Csr csr_from_tensor(const at::Tensor& tensor);
// An ATen sparse CSR tensor (int64 indices) of the given dtype.
at::Tensor csr_to_tensor(const Csr& matrix, at::ScalarType dtype = at::kDouble);
// A dense float64 tensor.
at::Tensor csr_to_dense(const Csr& matrix);
// Aᵀ in CSR, i.e. A in CSC: columns sorted in every row.
Csr csr_transpose(const Csr& matrix);
// The same matrix without the entries whose value is exactly zero.
Csr csr_drop_zeros(const Csr& matrix);

enum class SpgemmAlgorithm { kHash, kHashAtomic, kDense, kEsc, kInner };
inline constexpr SpgemmAlgorithm kSpgemmAlgorithms[] = {SpgemmAlgorithm::kHash, SpgemmAlgorithm::kHashAtomic,
                                                        SpgemmAlgorithm::kDense, SpgemmAlgorithm::kEsc,
                                                        SpgemmAlgorithm::kInner};
std::string_view spgemm_algorithm_name(SpgemmAlgorithm algorithm);
// "hash", "hash-atomic", "dense", "esc", "inner"; InvalidArgument lists them otherwise.
SpgemmAlgorithm parse_spgemm_algorithm(std::string_view name);

struct SpgemmOptions {
  SpgemmAlgorithm algorithm = SpgemmAlgorithm::kHash;
  bool sort_columns = true;  // off: each row's columns in first-touch order (hash kernels only)
  bool drop_zeros = false;
  // hash: a row whose table (16 bytes a slot) would exceed this uses the dense accumulator.
  int64_t l2_bytes = int64_t{1} << 20;
  // hash-atomic: rows with more partial products are split across threads. 0: automatic
  // (max(total flops / (4 · threads), 4096)).
  int64_t heavy_row_flops = 0;
};

// What a product did, for --stats and the benchmarks.
struct SpgemmStats {
  int64_t flops = 0;                                       // partial products Σ_i flops_i (multiply-adds)
  int64_t nnz = 0;                                         // nnz(C)
  int64_t hash_rows = 0, dense_rows = 0, atomic_rows = 0;  // rows per accumulator (hash kernels)
  std::vector<int64_t> bin_rows;  // rows per table bin (index b: tables of 2^b slots; hash kernels)
  int64_t peak_bytes = 0;         // the estimate of spgemm_memory_bytes
};

// flops_i for every row of A·B (the symbolic phase). InvalidArgument names both shapes when
// A.cols != B.rows.
std::vector<int64_t> spgemm_row_flops(const Csr& a, const Csr& b);
// The bytes a product allocates beyond its inputs (output included), from the symbolic phase:
// what --max-memory is checked against before any work.
int64_t spgemm_memory_bytes(const Csr& a, const Csr& b, SpgemmAlgorithm algorithm,
                            std::span<const int64_t> row_flops);

// C = A·B. Threads: libtorch's intra-op pool (at::get_num_threads()). `row_flops`, when given, is
// spgemm_row_flops(a, b) already computed by the caller (the CLI's --max-memory check).
Csr spgemm(const Csr& a, const Csr& b, const SpgemmOptions& options = {}, SpgemmStats* stats = nullptr,
           std::span<const int64_t> row_flops = {});

// The kernels, each in its own file (spgemm_cpu.cpp, spgemm_hash.cpp, spgemm_esc.cpp,
// spgemm_inner.cpp); spgemm() checks the inputs and dispatches. All return sorted rows, except
// spgemm_hash with sort_columns off.
Csr spgemm_dense(const Csr& a, const Csr& b);
Csr spgemm_hash(const Csr& a, const Csr& b, std::span<const int64_t> row_flops, const SpgemmOptions& options,
                bool atomic_heavy_rows, SpgemmStats* stats);
Csr spgemm_esc(const Csr& a, const Csr& b);
Csr spgemm_inner(const Csr& a, const Csr& b);
// A rows × cols matrix from one (columns, values) list per row, concatenated (the kernels that
// build rows independently).
Csr csr_from_row_lists(int64_t cols, const std::vector<std::vector<int32_t>>& row_cols,
                       const std::vector<std::vector<double>>& row_vals);

}  // namespace lowrank::ops
