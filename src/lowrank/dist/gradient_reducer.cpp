// DDP's Reducer over a Group; see gradient_reducer.h.
#include "lowrank/dist/gradient_reducer.h"

#include <algorithm>
#include <set>
#include <unordered_map>

#include "lowrank/core/error.h"

#ifdef LOWRANK_WITH_DIST
#include <torch/csrc/distributed/c10d/comm.hpp>
#include <torch/csrc/distributed/c10d/reducer.hpp>

#include "lowrank/dist/group_internal.h"
#endif

namespace lowrank::dist {

#ifdef LOWRANK_WITH_DIST

struct GradientReducer::Impl {
  Group* group = nullptr;
  std::vector<at::Tensor> params;
  std::shared_ptr<c10d::Reducer> reducer;
};

GradientReducer::GradientReducer(Group& group, std::vector<at::Tensor> params, std::vector<std::string> names,
                                 ReducerOptions options)
    : impl_(std::make_unique<Impl>()) {
  LR_CHECK(names.size() == params.size(), InvalidArgument, "GradientReducer: ", params.size(),
           " parameters but ", names.size(), " names");
  LR_CHECK(options.bucket_bytes > 0 && options.first_bucket_bytes > 0, InvalidArgument,
           "GradientReducer: bucket sizes must be positive");
  std::set<const void*> storages;
  for (size_t i = 0; i < params.size(); ++i) {
    LR_CHECK(params[i].requires_grad(), InvalidArgument, "GradientReducer: parameter ", names[i],
             " does not require a gradient");
    LR_CHECK(storages.insert(params[i].storage().data()).second, InvalidArgument,
             "GradientReducer: parameter ", names[i],
             " shares its storage with another (give tied tensors once)");
  }
  impl_->group = &group;
  impl_->params = params;
  group.broadcast(params);
  Group::Impl& g = group.impl();
  g.guarded("building the gradient buckets", [&] {
    auto [indices, limits] = c10d::compute_bucket_assignment_by_size(
        params, {static_cast<size_t>(options.first_bucket_bytes), static_cast<size_t>(options.bucket_bytes)},
        std::vector<bool>(params.size(), false));
    std::reverse(indices.begin(), indices.end());
    std::reverse(limits.begin(), limits.end());
    std::unordered_map<size_t, std::string> name_map;
    for (size_t i = 0; i < names.size(); ++i) name_map[i] = names[i];
    std::vector<int64_t> limit_list(limits.begin(), limits.end());
    impl_->reducer = std::make_shared<c10d::Reducer>(
        params, indices, g.process_group, std::vector<bool>(params.size(), false), options.bucket_bytes,
        /*find_unused_parameters=*/false, /*gradient_as_bucket_view=*/true, name_map,
        options.first_bucket_bytes, /*skip_all_reduce_unused_params=*/false, /*use_python_reducer=*/false,
        limit_list);
  });
}

GradientReducer::~GradientReducer() = default;

void GradientReducer::prepare_for_forward() {
  impl_->group->impl().guarded("rebuilding the gradient buckets", [&] {
    impl_->reducer->rebuild_buckets();
    impl_->reducer->prepare_for_forward();
  });
}

void GradientReducer::prepare_for_backward() {
  impl_->reducer->prepare_for_backward({});
}

ReducerStats GradientReducer::stats() const {
  // The Reducer's current buckets (rebuilt in gradient-ready order after the first step).
  ReducerStats s;
  for (const c10d::GradBucket& bucket : impl_->reducer->get_grad_buckets(/*return_zero_tensors=*/false)) {
    const at::Tensor& buffer = bucket.getBuffer();
    const int64_t bytes = buffer.numel() * static_cast<int64_t>(buffer.element_size());
    s.bucket_bytes.push_back(bytes);
    s.bytes += bytes;
  }
  s.buckets = static_cast<int64_t>(s.bucket_bytes.size());
  return s;
}

#else

struct GradientReducer::Impl {};

GradientReducer::GradientReducer(Group&, std::vector<at::Tensor>, std::vector<std::string>, ReducerOptions) {
  throw Unsupported("data-parallel training is not built");
}
GradientReducer::~GradientReducer() = default;
void GradientReducer::prepare_for_forward() {}
void GradientReducer::prepare_for_backward() {}
ReducerStats GradientReducer::stats() const {
  return {};
}

#endif

}  // namespace lowrank::dist
