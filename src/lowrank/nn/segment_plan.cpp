// Segments of a routed batch and the gathered kernel's share of them; see segment_plan.h.
#include "lowrank/nn/segment_plan.h"

#include "lowrank/ops/lora_gather.h"

namespace lowrank::nn {

std::vector<Segment> plan_segments(std::span<const int64_t> row_adapter, size_t adapters) {
  const auto rows = static_cast<int64_t>(row_adapter.size());
  std::vector<Segment> segments;
  for (int64_t start = 0; start < rows;) {
    const int64_t id = row_adapter[static_cast<size_t>(start)];
    int64_t end = start + 1;
    while (end < rows && row_adapter[static_cast<size_t>(end)] == id) ++end;
    if (id >= 0 && static_cast<size_t>(id) < adapters)
      segments.push_back({start, end - start, static_cast<size_t>(id)});
    start = end;
  }
  return segments;
}

std::vector<Segment> gather_short_segments(std::vector<Segment> segments, const SegmentForms& forms,
                                           const at::Tensor& x, std::span<at::Tensor> ys) {
  // Segments of a few tokens (decode rows, one adapter each when many adapters are in use) run
  // through the gathered kernel: one parallel loop over all of them instead of two library calls
  // per segment per slot. Longer segments keep the GEMM pair. On a CUDA device the same tasks go
  // to the CUDA twin (one launch for the whole batch).
  const int64_t gather_max_tokens = ops::lora_gather_max_tokens();
  const bool gather_device = x.device().is_cpu() || (x.device().is_cuda() && ops::lora_gather_cuda_built());
  const int64_t rows = x.size(0);
  if (at::GradMode::is_enabled() || gather_max_tokens <= 0 || !gather_device ||
      x.scalar_type() != at::kFloat || !x.is_contiguous() || rows <= 0)
    return segments;
  const int64_t in = x.size(-1);
  const int64_t tokens_per_row = x.numel() / (rows * in);
  auto gatherable = [&](const at::Tensor& t) {
    return t.device() == x.device() && t.scalar_type() == at::kFloat && t.is_contiguous();
  };
  std::vector<ops::LoraGatherTask> tasks;
  std::vector<Segment> rest;
  for (const Segment& s : segments) {
    bool gather = s.length * tokens_per_row <= gather_max_tokens;
    for (size_t i = 0; gather && i < forms.slots(); ++i) {
      const auto& form = forms.at(s.adapter, i);
      gather = !form || (gatherable(form->a) && gatherable(form->b) && gatherable(ys[i]));
    }
    if (!gather) {
      rest.push_back(s);
      continue;
    }
    for (size_t i = 0; i < forms.slots(); ++i) {
      const auto& form = forms.at(s.adapter, i);
      if (!form) continue;
      const int64_t out = ys[i].size(-1);
      ops::LoraGatherTask task;
      task.x = x.const_data_ptr<float>() + s.start * tokens_per_row * in;
      task.y = ys[i].mutable_data_ptr<float>() + s.start * tokens_per_row * out;
      task.a = form->a.const_data_ptr<float>();
      task.b = form->b.const_data_ptr<float>();
      task.tokens = s.length * tokens_per_row;
      task.in = in;
      task.out = out;
      task.rank = form->a.size(0);
      task.scale = static_cast<float>(form->scale);
      tasks.push_back(task);
    }
  }
  if (x.device().is_cuda())
    ops::lora_gather_cuda(tasks, x.device().index());
  else
    ops::lora_gather(tasks);
  return rest;
}

}  // namespace lowrank::nn
