// Memory read bandwidth, measured: the roof a batch-1 decode step runs under. A step reads every
// weight once per token, so tokens/s can never exceed bandwidth / bytes read per token.
//
// The probe reads a buffer far larger than any cache (512 MiB by default) with 256-bit loads,
// OR-reducing them so nothing is written and the loads cannot be dropped, split over `threads`
// threads (each reading its own contiguous part), and reports the best of `repeats` passes in GB/s
// (1e9 bytes/s; 0 when the buffer cannot be mapped). The buffer is written once before timing so
// that its pages exist.
#pragma once

#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <thread>
#include <vector>

namespace lowrank::bench {

namespace detail {

#if defined(__x86_64__)
__attribute__((target("avx2"))) inline uint64_t read_or_avx2(const uint64_t* p, int64_t words) {
  __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256(), c = _mm256_setzero_si256(),
          d = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 16 <= words; i += 16) {
    a = _mm256_or_si256(a, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i)));
    b = _mm256_or_si256(b, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 4)));
    c = _mm256_or_si256(c, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 8)));
    d = _mm256_or_si256(d, _mm256_load_si256(reinterpret_cast<const __m256i*>(p + i + 12)));
  }
  const __m256i r = _mm256_or_si256(_mm256_or_si256(a, b), _mm256_or_si256(c, d));
  uint64_t out[4];
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), r);
  uint64_t s = out[0] | out[1] | out[2] | out[3];
  for (; i < words; ++i) s |= p[i];
  return s;
}
#endif

inline uint64_t read_or(const uint64_t* p, int64_t words) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return read_or_avx2(p, words);
#endif
  uint64_t s = 0;
  for (int64_t i = 0; i < words; ++i) s |= p[i];
  return s;
}

}  // namespace detail

// GB/s read by `threads` threads over `bytes` bytes, best of `repeats`.
inline double read_bandwidth_gbs(int threads, int64_t bytes = int64_t{512} << 20, int repeats = 3) {
  const int64_t words = bytes / 8 / 64 * 64;
  // Mapped and unmapped here, not taken from the heap: the benchmarks keep freed heap memory
  // (core/process.h keep_freed_memory), and a 512 MiB block left there would hide later growth of
  // the resident memory that bench_runtime measures.
  const size_t length = static_cast<size_t>(words) * 8;
  struct Mapping {
    size_t length;
    void* address = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ~Mapping() {
      if (address != MAP_FAILED) munmap(address, length);
    }
    uint64_t* get() const { return static_cast<uint64_t*>(address); }
  } buf{length};
  if (buf.address == MAP_FAILED) return 0;
  for (int64_t i = 0; i < words; ++i) buf.get()[i] = static_cast<uint64_t>(i);
  double best = 0;
  volatile uint64_t sink = 0;
  for (int r = 0; r < repeats; ++r) {
    std::vector<uint64_t> partial(static_cast<size_t>(threads));
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] {
        const int64_t begin = words * t / threads / 4 * 4;
        const int64_t end = t + 1 == threads ? words : words * (t + 1) / threads / 4 * 4;
        partial[static_cast<size_t>(t)] = detail::read_or(buf.get() + begin, end - begin);
      });
    for (std::thread& th : pool) th.join();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (uint64_t v : partial) sink = sink | v;
    best = std::max(best, static_cast<double>(words * 8) / s / 1e9);
  }
  (void)sink;
  return best;
}

}  // namespace lowrank::bench
