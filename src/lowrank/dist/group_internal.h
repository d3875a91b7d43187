// Group's c10d state, for dist/*.cpp only (they compile with USE_C10D_GLOO and without the shared
// precompiled header; see src/lowrank/CMakeLists.txt).
#pragma once

#ifdef LOWRANK_WITH_DIST
#include <chrono>
#include <string>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

#include "lowrank/dist/group.h"

namespace lowrank::dist {

struct Group::Impl {
  World world;
  std::chrono::milliseconds timeout{0};
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroup> process_group;
  std::string context;  // "step 12": what a failure message names

  // Runs `op` (a collective or store call); any exception becomes IoError("rank R, <context>:
  // <operation> failed: <the first line of the error>").
  template <typename Op>
  auto guarded(std::string_view operation, Op&& op) -> decltype(op());
  [[noreturn]] void fail(std::string_view operation, const std::exception& e) const;
};

template <typename Op>
auto Group::Impl::guarded(std::string_view operation, Op&& op) -> decltype(op()) {
  try {
    return op();
  } catch (const std::exception& e) {
    fail(operation, e);
  }
}

// The one translation unit that includes ProcessGroupGloo.hpp (gloo_backend.cpp): a Gloo backend
// over `store` on the loopback interface when `host` is a loopback address, else on the interface
// that the host name resolves to (Gloo's default device).
c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int size, std::chrono::milliseconds timeout,
                                                    const std::string& host);

}  // namespace lowrank::dist
#endif
