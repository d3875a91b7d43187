// Helpers shared by the kernel-method tests: fixture loading and seeded fp64 draws.
#pragma once

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <gtest/gtest.h>

#include <string>

#include "lowrank/core/safetensors.h"
#include "tests/testing.h"

namespace lowrank::kernel_methods::kernel_testing {

// tests/fixtures/kernels/<name> (written by tests/fixtures/kernels/make.py).
inline SafetensorsFile fixture(const std::string& name) {
  return SafetensorsFile::open(testing::fixture("kernels/" + name));
}

inline at::Tensor normal(at::IntArrayRef shape, uint64_t seed) {
  at::Generator gen = at::detail::createCPUGenerator(seed);
  return at::empty(shape, at::kDouble).normal_(0, 1, gen);
}

// Expects `fn` to throw a lowrank::Error whose message contains `part`.
template <typename Fn>
void expect_error(Fn&& fn, const std::string& part) {
  const std::string message = testing::error_of(fn);
  EXPECT_NE(message.find(part), std::string::npos)
      << "message: " << message << "\nexpected to contain: " << part;
}

// Fits made of many tiny operations: intra-op threads only add synchronisation, which dominates
// on a busy machine, so such tests run single-threaded while one of these lives.
class SingleThreaded {
 public:
  SingleThreaded() : previous_(at::get_num_threads()) { at::set_num_threads(1); }
  ~SingleThreaded() { at::set_num_threads(previous_); }
  SingleThreaded(const SingleThreaded&) = delete;
  SingleThreaded& operator=(const SingleThreaded&) = delete;

 private:
  int previous_;
};

}  // namespace lowrank::kernel_methods::kernel_testing
