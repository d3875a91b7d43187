// The Gloo backend of a Group; see group_internal.h. ProcessGroupGloo.hpp includes Gloo's
// headers (Debian's libgloo-dev; libtorch carries the Gloo library itself). Only its
// constructor and static device factories are called: its inline members that touch Gloo
// objects (setTimeout, GlooStore) would need Gloo's own library.
#ifdef LOWRANK_WITH_DIST
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include "lowrank/dist/group_internal.h"

namespace lowrank::dist {

c10::intrusive_ptr<c10d::Backend> make_gloo_backend(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                                    int size, std::chrono::milliseconds timeout,
                                                    const std::string& host) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  const bool loopback = host == "127.0.0.1" || host == "localhost" || host == "::1";
  options->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                      : c10d::ProcessGroupGloo::createDefaultDevice());
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}

}  // namespace lowrank::dist
#endif
