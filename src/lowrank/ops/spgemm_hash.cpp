// SMASH: row-wise hashed SpGEMM (spgemm.h has the method and its conventions; Shivdikar 2021,
// arXiv:2105.14156: a row-wise product whose partial products are merged, atomically, into a
// hashed scratchpad the moment they are made).
//
// Phases, for C = A·B:
//   1. symbolic (spgemm_row_flops): flops_i; slot_i = min(flops_i, cols) bounds nnz(C_i); the
//      table of row i has 2^bin(i) ≥ 2·slot_i entries (load factor ≤ ½);
//   2. binning: rows are ordered by bin, heaviest first (a counting sort over ≤ 33 bins), and
//      threads take chunks of that order from a shared counter (dynamic scheduling): the few
//      heavy rows of a power-law matrix start first instead of finishing last;
//   3. numeric: for k ∈ A_i (ascending), j ∈ B_k: insert j into the table (multiplicative hash,
//      linear probing) and add A_ik·B_kj to its value at once; a row whose table would exceed
//      l2_bytes uses a dense accumulator of `cols` entries instead. The row's entries are read out of the
//      table (resetting it), sorted by column (a radix sort for long rows), and appended to the thread's
//      output blocks, which reserve the row's bound;
//   4. compaction: indptr = prefix sums of nnz(C_i); each row is copied into C, in parallel.
// hash-atomic first runs the rows heavier than heavy_row_flops one at a time on all threads: the
// row's partial products are split across threads by k, and every thread inserts into one shared
// table (compare-and-swap on the key, atomic add on the value): the thesis's atomic merge.
#include <algorithm>
#include <atomic>
#include <memory>
#include <numeric>

#include <ATen/Parallel.h>

#include "lowrank/core/parallel_region.h"
#include "lowrank/ops/spgemm.h"

namespace lowrank::ops {

namespace {

constexpr int32_t kEmptyKey = -1;
constexpr int64_t kSlotBytes = 16;  // Slot: int32 key, padding, float64 value

// The thesis's rule: a row takes the dense accumulator when its table would exceed the L2 budget.
// (A rule that also sent rows with tables of ≥ cols/f slots there, f = 1, 4, 16, was measured in
// bench_spgemm on R-MAT, Erdős–Rényi and stencils once tables were read out through their key list
// rather than scanned: it never won beyond noise, and lost up to 20% on Erdős–Rényi. Dropped.)
bool uses_dense_accumulator(int bits, const SpgemmOptions& o) {
  return (kSlotBytes << bits) > o.l2_bytes;
}

// The smallest b ≥ 1 with 2^b ≥ 2·slot.
int table_bits(int64_t slot) {
  int bits = 1;
  while ((int64_t{1} << bits) < 2 * slot) ++bits;
  return bits;
}

// Every partial product of row i over A_i's entries [p_begin, p_end), k ascending:
// fn(j, A_ik · B_kj) for j ∈ B_k.
template <typename Fn>
inline void for_each_product(const Csr& a, const Csr& b, int64_t p_begin, int64_t p_end, Fn&& fn) {
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int32_t k = a.indices[p];
    const double a_ik = a.values[p];
    for (int64_t q = b.indptr[k]; q < b.indptr[k + 1]; ++q) fn(b.indices[q], a_ik * b.values[q]);
  }
}

// Fibonacci hashing: the top `bits` bits of col · ⌊2³²/φ⌋.
inline uint32_t hash_slot(int32_t col, int bits) {
  return (static_cast<uint32_t>(col) * 2654435769u) >> (32 - bits);
}

// A thread's output: rows are appended to blocks of at least 2^20 entries, each row reserving its
// bound min(flops_i, cols) and then advancing by its real length. Only what rows write is used (a
// layout of one slot of min(flops_i, cols) entries per row in one array would touch a page or two
// per row however short, and most of the bound is never written: measured at R-MAT scale 16, a
// third of the run went to the kernel zeroing pages).
class RowBlocks {
 public:
  // Room for `bound` entries; the returned pointers stay valid for the object's lifetime.
  std::pair<int32_t*, double*> reserve(int64_t bound) {
    if (blocks_.empty() || used_ + bound > blocks_.back().capacity) {
      const int64_t capacity = std::max<int64_t>(bound, int64_t{1} << 20);
      blocks_.push_back({std::unique_ptr<int32_t[]>(new int32_t[capacity]),
                         std::unique_ptr<double[]>(new double[capacity]), capacity});
      used_ = 0;
    }
    return {blocks_.back().cols.get() + used_, blocks_.back().values.get() + used_};
  }
  void commit(int64_t length) { used_ += length; }

 private:
  struct Block {
    std::unique_ptr<int32_t[]> cols;
    std::unique_ptr<double[]> values;
    int64_t capacity;
  };
  std::vector<Block> blocks_;
  int64_t used_ = 0;
};

// One slot of a thread's table: key and value side by side, so that a probe touches one cache line.
struct Slot {
  int32_t key;
  double value;
};

// One thread's accumulators; the table starts empty and is left empty after every row.
struct Scratch {
  std::vector<Slot> table;
  std::vector<double> dense;                    // the dense accumulator, allocated on first use
  std::vector<int32_t> stamp;                   // dense[j] belongs to row stamp[j]
  std::vector<int32_t> touched, touched_spare;  // the dense accumulator's columns of this row
  std::vector<uint64_t> order, spare;           // (column << 32 | slot) of a hashed row, to sort
};

// Where a row goes: its slot of min(flops_i, cols) entries in the output buffers.
struct RowOut {
  int32_t* cols;
  double* values;
};

// Sorts packed (column << 32 | low) integers by column: a least-significant-digit radix sort on
// 8-bit digits of the column (2 passes below 65536 columns) for long rows, std::sort for short ones.
template <typename T>
void sort_by_column(std::vector<T>& v, std::vector<T>& spare, int column_bits, int shift) {
  if (v.size() < 96) {
    std::sort(v.begin(), v.end());
    return;
  }
  spare.resize(v.size());
  for (int digit = shift; digit < shift + column_bits; digit += 8) {
    size_t count[257] = {0};
    for (T x : v) ++count[((x >> digit) & 255) + 1];
    for (int d = 0; d < 256; ++d) count[d + 1] += count[d];
    for (T x : v) spare[count[(x >> digit) & 255]++] = x;
    v.swap(spare);
  }
}

// Row i through the thread's own table of 2^bits slots, into `out`; returns the row's length. Each
// new key is also listed as a packed (column << 32 | slot) integer, so reading the row out costs
// its length, not the table's size; with `sort` the list is sorted by column first (otherwise the
// row comes out in first-touch order, which is deterministic too).
int64_t hash_row(const Csr& a, const Csr& b, int64_t i, int bits, bool sort, int column_bits, Scratch& s,
                 RowOut out) {
  const uint32_t mask = (uint32_t{1} << bits) - 1;
  Slot* table = s.table.data();
  s.order.clear();
  for_each_product(a, b, a.indptr[i], a.indptr[i + 1], [&](int32_t j, double product) {
    uint32_t slot = hash_slot(j, bits);
    while (table[slot].key != j && table[slot].key != kEmptyKey) slot = (slot + 1) & mask;
    if (table[slot].key == kEmptyKey) {
      table[slot].key = j;
      table[slot].value = 0.0;
      s.order.push_back(static_cast<uint64_t>(j) << 32 | slot);
    }
    table[slot].value += product;
  });
  if (sort) sort_by_column(s.order, s.spare, column_bits, 32);
  int64_t n = 0;
  for (uint64_t packed : s.order) {
    Slot& e = table[static_cast<uint32_t>(packed)];
    out.cols[n] = e.key;
    out.values[n++] = e.value;
    e.key = kEmptyKey;
  }
  return n;
}

// Row i through the dense accumulator, into `out` in column order; returns the row's length.
int64_t dense_row(const Csr& a, const Csr& b, int64_t i, int column_bits, Scratch& s, RowOut out) {
  if (s.dense.empty()) {
    s.dense.assign(b.cols, 0.0);
    s.stamp.assign(b.cols, -1);
  }
  const auto row = static_cast<int32_t>(i);
  s.touched.clear();
  for_each_product(a, b, a.indptr[i], a.indptr[i + 1], [&](int32_t j, double product) {
    if (s.stamp[j] != row) {
      s.stamp[j] = row;
      s.dense[j] = 0.0;
      s.touched.push_back(j);
    }
    s.dense[j] += product;
  });
  int64_t n = 0;
  if (static_cast<int64_t>(s.touched.size()) * 16 > b.cols) {  // dense enough: scan the stamps
    for (int32_t j = 0; j < b.cols; ++j)
      if (s.stamp[j] == row) {
        out.cols[n] = j;
        out.values[n++] = s.dense[j];
      }
    return n;
  }
  sort_by_column(s.touched, s.touched_spare, column_bits, 0);
  for (int32_t j : s.touched) {
    out.cols[n] = j;
    out.values[n++] = s.dense[j];
  }
  return n;
}

// Row i of a heavy row on all members: member m merges the partial products of A_i's entries
// [p0 + m·n/M, p0 + (m+1)·n/M) into the shared table; member 0 then reads the table out into `out`
// (sorted), resets it and returns the row's length (0 on the others). Every member crosses the
// barrier twice.
int64_t atomic_row(const Csr& a, const Csr& b, int64_t i, int bits, std::vector<int32_t>& keys,
                   std::vector<double>& values, int column_bits, int member, int members,
                   SpinBarrier& barrier, Scratch& s, RowOut out) {
  const uint32_t mask = (uint32_t{1} << bits) - 1;
  const int64_t p0 = a.indptr[i], n = a.indptr[i + 1] - p0;
  for_each_product(
      a, b, p0 + n * member / members, p0 + n * (member + 1) / members, [&](int32_t j, double product) {
        uint32_t slot = hash_slot(j, bits);
        for (;;) {
          std::atomic_ref<int32_t> key(keys[slot]);
          int32_t seen = key.load(std::memory_order_acquire);
          if (seen == kEmptyKey && key.compare_exchange_strong(seen, j, std::memory_order_acq_rel)) break;
          if (seen == j) break;  // present, or another thread claimed the slot for j first
          slot = (slot + 1) & mask;
        }
        std::atomic_ref<double>(values[slot]).fetch_add(product, std::memory_order_relaxed);
      });
  barrier.arrive_and_wait();
  int64_t length = 0;
  if (member == 0) {
    s.order.clear();
    for (uint32_t slot = 0; slot <= mask; ++slot)
      if (keys[slot] != kEmptyKey) s.order.push_back(static_cast<uint64_t>(keys[slot]) << 32 | slot);
    sort_by_column(s.order, s.spare, column_bits, 32);
    for (uint64_t packed : s.order) {
      const auto slot = static_cast<uint32_t>(packed);
      out.cols[length] = keys[slot];
      out.values[length++] = values[slot];
      keys[slot] = kEmptyKey;
      values[slot] = 0.0;
    }
  }
  barrier.arrive_and_wait();
  return length;
}

}  // namespace

Csr spgemm_hash(const Csr& a, const Csr& b, std::span<const int64_t> row_flops, const SpgemmOptions& options,
                bool atomic_heavy_rows, SpgemmStats* stats) {
  const int64_t rows = a.rows;
  // Row i writes at most min(flops_i, cols) entries, into its thread's blocks at row_cols[i] and
  // row_vals[i].
  std::vector<int64_t> bound(rows);
  for (int64_t i = 0; i < rows; ++i) bound[i] = std::min<int64_t>(row_flops[i], b.cols);
  std::vector<const int32_t*> row_cols(rows, nullptr);
  std::vector<const double*> row_vals(rows, nullptr);
  std::vector<int64_t> row_nnz(rows, 0);

  // Bins, and the rows that hash-atomic splits across threads.
  const int members_wanted = at::get_num_threads();
  const int64_t total_flops = std::accumulate(row_flops.begin(), row_flops.end(), int64_t{0});
  const int64_t heavy_flops = options.heavy_row_flops > 0
                                  ? options.heavy_row_flops
                                  : std::max<int64_t>(total_flops / (4 * std::max(1, members_wanted)), 4096);
  std::vector<int> bins(rows, 0);
  std::vector<int64_t> bin_rows(34, 0);
  std::vector<int64_t> heavy_rows;
  for (int64_t i = 0; i < rows; ++i) {
    bins[i] = bound[i] == 0 ? 0 : table_bits(bound[i]);
    ++bin_rows[bins[i]];
    if (atomic_heavy_rows && members_wanted > 1 && row_flops[i] > heavy_flops) heavy_rows.push_back(i);
  }
  // Light rows, heaviest bin first (a stable counting sort: within a bin, rows in index order).
  std::vector<int64_t> order;
  order.reserve(rows - heavy_rows.size());
  {
    std::vector<int64_t> start(35, 0);
    for (int64_t i = 0; i < rows; ++i)
      if (!(atomic_heavy_rows && members_wanted > 1 && row_flops[i] > heavy_flops)) ++start[33 - bins[i] + 1];
    std::partial_sum(start.begin(), start.end(), start.begin());
    order.resize(start[34]);
    for (int64_t i = 0; i < rows; ++i)
      if (!(atomic_heavy_rows && members_wanted > 1 && row_flops[i] > heavy_flops))
        order[start[33 - bins[i]]++] = i;
  }
  const int max_light_bits = [&] {
    int bits = 1;
    for (int64_t i : order)
      if (!uses_dense_accumulator(bins[i], options)) bits = std::max(bits, bins[i]);
    return bits;
  }();
  // The shared table of the heavy rows.
  int heavy_bits = 1;
  for (int64_t i : heavy_rows) heavy_bits = std::max(heavy_bits, bins[i]);
  std::vector<int32_t> shared_keys(heavy_rows.empty() ? 0 : (size_t{1} << heavy_bits), kEmptyKey);
  std::vector<double> shared_values(shared_keys.size(), 0.0);
  int column_bits = 1;  // bits of the largest column index
  while (column_bits < 31 && (int64_t{1} << column_bits) < b.cols) ++column_bits;

  std::atomic<int64_t> next{0};
  std::atomic<int64_t> hash_count{0}, dense_count{0};
  std::vector<RowBlocks> outputs(std::max(1, members_wanted));
  parallel_region([&](int member, int members, SpinBarrier& barrier) {
    Scratch s;
    RowBlocks& output = outputs[member];
    // Room for row i in this member's blocks; record where it went once its length is known.
    auto place = [&](int64_t i) {
      const auto [cols, values] = output.reserve(bound[i]);
      row_cols[i] = cols;
      row_vals[i] = values;
      return RowOut{cols, values};
    };
    for (int64_t i : heavy_rows) {
      const RowOut out = member == 0 ? place(i) : RowOut{nullptr, nullptr};
      const int64_t n = atomic_row(a, b, i, bins[i], shared_keys, shared_values, column_bits, member, members,
                                   barrier, s, out);
      if (member == 0) {
        row_nnz[i] = n;
        output.commit(n);
      }
    }
    s.table.assign(size_t{1} << max_light_bits, Slot{kEmptyKey, 0.0});
    constexpr int64_t kChunk = 8;
    int64_t hashed = 0, densed = 0;
    for (;;) {
      const int64_t begin = next.fetch_add(kChunk, std::memory_order_relaxed);
      if (begin >= static_cast<int64_t>(order.size())) break;
      const int64_t end = std::min<int64_t>(begin + kChunk, order.size());
      for (int64_t t = begin; t < end; ++t) {
        const int64_t i = order[t];
        if (bound[i] == 0) continue;
        const RowOut out = place(i);
        if (uses_dense_accumulator(bins[i], options)) {
          row_nnz[i] = dense_row(a, b, i, column_bits, s, out);
          ++densed;
        } else {
          row_nnz[i] = hash_row(a, b, i, bins[i], options.sort_columns, column_bits, s, out);
          ++hashed;
        }
        output.commit(row_nnz[i]);
      }
    }
    hash_count += hashed;
    dense_count += densed;
  });

  // Compaction.
  Csr c = csr_zeros(rows, b.cols);
  for (int64_t i = 0; i < rows; ++i) c.indptr[i + 1] = c.indptr[i] + row_nnz[i];
  c.indices.resize(c.nnz());
  c.values.resize(c.nnz());
  at::parallel_for(0, rows, 256, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (row_nnz[i] == 0) continue;
      std::copy_n(row_cols[i], row_nnz[i], c.indices.begin() + c.indptr[i]);
      std::copy_n(row_vals[i], row_nnz[i], c.values.begin() + c.indptr[i]);
    }
  });
  if (stats) {
    stats->hash_rows = hash_count.load();
    stats->dense_rows = dense_count.load();
    stats->atomic_rows = static_cast<int64_t>(heavy_rows.size());
    stats->bin_rows = bin_rows;
    while (!stats->bin_rows.empty() && stats->bin_rows.back() == 0) stats->bin_rows.pop_back();
  }
  return c;
}

}  // namespace lowrank::ops
