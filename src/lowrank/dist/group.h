// A data-parallel process group: the ranks of one run, joined through a TCPStore rendezvous and
// talking through PyTorch's c10d (ProcessGroupGloo on CPU tensors). The library's only door to
// c10d besides gradient_reducer.h: c10d is not a stable API (2.15 renamed _allgather_base to
// all_gather_single), so its types stay in dist/*.cpp and this header shows none of them.
//
// Failures: a collective or store operation that fails (a peer died: Gloo reports "Connection
// closed by peer" within milliseconds; a peer hung: the timeout) throws IoError with one line
// naming this rank, the operation and the peer's error. Built without c10d (LOWRANK_DIST=OFF),
// join() throws Unsupported.
#pragma once

#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <ATen/core/Tensor.h>

#include "lowrank/dist/world.h"

namespace lowrank::dist {

// True when this build has data-parallel training (c10d with Gloo).
bool available();

class Group {
 public:
  // Joins `world`: connects to (or, for World::hosts_store(), hosts) the TCPStore at
  // MASTER_ADDR:MASTER_PORT and builds the Gloo backend. The whole rendezvous must finish within
  // `timeout` (TCPStore's own client retries overrun it, so the deadline is ours); the same
  // timeout then bounds every collective. Throws IoError naming the address when it cannot.
  static std::unique_ptr<Group> join(const World& world, std::chrono::milliseconds timeout);
  ~Group();
  Group(const Group&) = delete;
  Group& operator=(const Group&) = delete;

  int rank() const;
  int size() const;
  const World& world() const;

  // Sums each tensor over the ranks, in place (every rank ends with the same bits).
  void all_reduce_sum(std::vector<at::Tensor>& tensors);
  // The mean of one number over the ranks (float64).
  double all_reduce_mean(double value);
  // Copies `root`'s tensors into every rank's, in place, coalesced into buffers of `buffer_bytes`
  // as DDP's initial weight broadcast does (c10d::broadcast_coalesced). No autograd.
  void broadcast(const std::vector<at::Tensor>& tensors, int root = 0, int64_t buffer_bytes = 256 << 20);
  // Returns when every rank has called it.
  void barrier();
  // Every rank's `value` under `key` (indexed by rank), exchanged through the store.
  std::vector<std::string> all_gather_text(std::string_view key, const std::string& value);

  // What the next failure message names as the current step (the trainer sets it).
  void set_context(std::string context);
  // Throws IoError for a collective that failed outside these methods (the Reducer's all-reduce
  // during backward): "rank R, <context>: <operation> failed: <the error's first line>".
  [[noreturn]] void fail(std::string_view operation, const std::exception& error) const;

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  explicit Group(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace lowrank::dist
