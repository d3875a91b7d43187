// The process group over c10d; see group.h.
#include "lowrank/dist/group.h"

#include <future>
#include <thread>

#include "lowrank/core/error.h"

#ifdef LOWRANK_WITH_DIST
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/comm.hpp>

#include "lowrank/dist/group_internal.h"
#endif

namespace lowrank::dist {

#ifdef LOWRANK_WITH_DIST

bool available() {
  return true;
}

namespace {

std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  std::string text = c10_error ? c10_error->what_without_backtrace() : e.what();
  if (const size_t end = text.find('\n'); end != std::string::npos) text.resize(end);
  return text;
}

std::string seconds(std::chrono::milliseconds t) {
  return str(static_cast<double>(t.count()) / 1000.0, " s");
}

}  // namespace

void Group::Impl::fail(std::string_view operation, const std::exception& e) const {
  throw IoError(str("rank ", world.rank, context.empty() ? "" : ", ", context, ": ", operation,
                    " failed: ", first_line(e)));
}

std::unique_ptr<Group> Group::join(const World& world, std::chrono::milliseconds timeout) {
  LR_CHECK(timeout.count() > 0, InvalidArgument, "the data-parallel timeout must be positive");
  auto impl = std::make_unique<Impl>();
  impl->world = world;
  impl->timeout = timeout;
  // The rendezvous runs on a helper thread so that this one can give up at the deadline: a
  // TCPStore client retries its connection past its own timeout. A thread that overruns is left
  // behind; the process is about to exit with the error anyway.
  using Joined = std::pair<c10::intrusive_ptr<c10d::Store>, c10::intrusive_ptr<c10d::ProcessGroup>>;
  auto promise = std::make_shared<std::promise<Joined>>();
  std::future<Joined> joined = promise->get_future();
  std::thread([promise, world, timeout] {
    try {
      c10d::TCPStoreOptions opts;
      opts.port = static_cast<uint16_t>(world.master_port);
      opts.isServer = world.hosts_store();
      opts.waitWorkers = false;
      opts.timeout = timeout;
      c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(world.master_addr, opts);
      // Keys of a torchrun restart never meet the previous attempt's (as torch's env:// rendezvous).
      store = c10::make_intrusive<c10d::PrefixStore>(str("/worker/attempt_", world.restart_count), store);
      auto backend = make_gloo_backend(c10::make_intrusive<c10d::PrefixStore>("default_pg", store),
                                       world.rank, world.world_size, timeout, world.master_addr);
      auto pg = c10::make_intrusive<c10d::ProcessGroup>(store, world.rank, world.world_size);
      pg->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, backend);
      pg->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
      promise->set_value({store, pg});
    } catch (...) {
      promise->set_exception(std::current_exception());
    }
  }).detach();
  const std::string where = str(world.master_addr, ":", world.master_port);
  if (joined.wait_for(timeout) != std::future_status::ready)
    throw IoError(str("rank ", world.rank, ": no rendezvous of ", world.world_size, " ranks at ", where,
                      " within ", seconds(timeout), " (--dist-timeout)"));
  try {
    std::tie(impl->store, impl->process_group) = joined.get();
  } catch (const std::exception& e) {
    throw IoError(
        str("rank ", world.rank, ": cannot join the process group at ", where, ": ", first_line(e)));
  }
  return std::unique_ptr<Group>(new Group(std::move(impl)));
}

int Group::rank() const {
  return impl_->world.rank;
}
int Group::size() const {
  return impl_->world.world_size;
}

void Group::all_reduce_sum(std::vector<at::Tensor>& tensors) {
  impl_->guarded("all_reduce", [&] {
    for (at::Tensor& t : tensors) {
      std::vector<at::Tensor> one{t};
      impl_->process_group->allreduce(one)->wait(impl_->timeout);
    }
  });
}

double Group::all_reduce_mean(double value) {
  std::vector<at::Tensor> t{at::full({1}, value, at::kDouble)};
  all_reduce_sum(t);
  return t[0].item<double>() / size();
}

void Group::broadcast(const std::vector<at::Tensor>& tensors, int root, int64_t buffer_bytes) {
  impl_->guarded("broadcast", [&] {
    at::NoGradGuard no_grad;
    c10d::broadcast_coalesced(impl_->process_group, tensors, static_cast<size_t>(buffer_bytes), root);
  });
}

void Group::barrier() {
  impl_->guarded("barrier", [&] { impl_->process_group->barrier()->wait(impl_->timeout); });
}

std::vector<std::string> Group::all_gather_text(std::string_view key, const std::string& value) {
  return impl_->guarded("store exchange", [&] {
    const std::string prefix = str("lowrank/", key, "/");
    impl_->store->set(prefix + std::to_string(rank()), std::vector<uint8_t>(value.begin(), value.end()));
    std::vector<std::string> out;
    for (int r = 0; r < size(); ++r) {
      const std::vector<uint8_t> bytes = impl_->store->get(prefix + std::to_string(r));
      out.emplace_back(bytes.begin(), bytes.end());
    }
    return out;
  });
}

#else  // built without c10d

bool available() {
  return false;
}

struct Group::Impl {
  World world;
};

std::unique_ptr<Group> Group::join(const World&, std::chrono::milliseconds) {
  throw Unsupported(
      "data-parallel training is not in this build (configure with -DLOWRANK_DIST=ON; it needs the Gloo "
      "headers, Debian package libgloo-dev)");
}
int Group::rank() const {
  return impl_->world.rank;
}
int Group::size() const {
  return impl_->world.world_size;
}
void Group::all_reduce_sum(std::vector<at::Tensor>&) {
  throw Unsupported("data-parallel training is not built");
}
double Group::all_reduce_mean(double) {
  throw Unsupported("data-parallel training is not built");
}
void Group::broadcast(const std::vector<at::Tensor>&, int, int64_t) {
  throw Unsupported("data-parallel training is not built");
}
void Group::barrier() {
  throw Unsupported("data-parallel training is not built");
}
std::vector<std::string> Group::all_gather_text(std::string_view, const std::string&) {
  throw Unsupported("data-parallel training is not built");
}

#endif

void Group::fail(std::string_view operation, const std::exception& error) const {
#ifdef LOWRANK_WITH_DIST
  impl_->fail(operation, error);
#else
  throw IoError(str("rank ", rank(), ": ", operation, " failed: ", error.what()));
#endif
}

Group::Group(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Group::~Group() = default;
const World& Group::world() const {
  return impl_->world;
}
void Group::set_context(std::string context) {
#ifdef LOWRANK_WITH_DIST
  impl_->context = std::move(context);
#else
  (void)context;
#endif
}

}  // namespace lowrank::dist
