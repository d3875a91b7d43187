// Calibration statistics through a recording wrapper around each slot's base operator.
#include "lowrank/compress/calibration.h"

#include <memory>
#include <optional>
#include <set>
#include <utility>

#include <ATen/ATen.h>

#include "lowrank/core/error.h"
#include "lowrank/core/progress.h"
#include "lowrank/nn/observing_operator.h"

namespace lowrank::compress {

namespace {

// One input's contribution to the statistics. Slots that read the same tensor (q, k, v; gate, up)
// get it computed once: the last input is kept (alive, so its memory cannot be reused by another
// input while it is the key) with its increments, and a recorder seeing the same tensor again
// (same memory, shape, strides and version) adds those.
struct InputIncrement {
  at::Tensor x;
  int64_t version = -1;
  at::Tensor absmax, abs_sum, sum, gram, kept;
  int64_t tokens = 0;

  bool same_input(const at::Tensor& t) const {
    return x.defined() && t.data_ptr() == x.data_ptr() && t.sizes() == x.sizes() &&
           t.strides() == x.strides() && t._version() == version;
  }
};

// Forwards to the wrapped base and adds the input's statistics to `stats` on the way. Only used
// while calibrate() runs, one forward at a time.
class RecordingOperator final : public nn::ObservingOperator {
 public:
  RecordingOperator(std::shared_ptr<const nn::BaseOperator> inner, SlotStatistics* stats, bool gram,
                    InputIncrement* last, int64_t keep = 0, int64_t stride = 1)
      : ObservingOperator(std::move(inner)),
        stats_(stats),
        gram_(gram),
        last_(last),
        keep_(keep),
        stride_(stride) {}

 private:
  void observe(const at::Tensor& x) const override {
    at::NoGradGuard no_grad;
    InputIncrement& inc = *last_;
    if (!inc.same_input(x)) {
      const at::Tensor x2 = x.reshape({-1, x.size(-1)}).to(at::kCPU);
      const at::Tensor a = x2.abs();
      inc.x = x;
      inc.version = x._version();
      inc.absmax = std::get<0>(a.max(0)).to(at::kFloat);
      inc.abs_sum = a.sum(0, false, at::kDouble);
      inc.sum = x2.sum(0, false, at::kDouble);
      const at::Tensor xd = x2.to(at::kDouble);
      inc.gram = gram_ ? at::matmul(xd.t(), xd) : at::Tensor();
      inc.tokens = x2.size(0);
      inc.kept = keep_ > 0 ? x2.slice(0, 0, x2.size(0), stride_).to(at::kFloat) : at::Tensor();
    }
    SlotStatistics& s = *stats_;
    if (!s.absmax.defined()) {
      s.absmax = inc.absmax.clone();
      s.abs_sum = inc.abs_sum.clone();
      s.sum = inc.sum.clone();
    } else {
      s.absmax = at::maximum(s.absmax, inc.absmax);
      s.abs_sum += inc.abs_sum;
      s.sum += inc.sum;
    }
    if (gram_) {
      if (s.gram.defined())
        s.gram += inc.gram;
      else
        s.gram = inc.gram.clone();
    }
    s.tokens += inc.tokens;
    if (keep_ > 0 && (!s.inputs.defined() || s.inputs.size(0) < keep_)) {
      const at::Tensor all = s.inputs.defined() ? at::cat({s.inputs, inc.kept}) : inc.kept.clone();
      s.inputs = all.narrow(0, 0, std::min(keep_, all.size(0))).contiguous();
    }
  }

  SlotStatistics* stats_;
  bool gram_;
  InputIncrement* last_;
  int64_t keep_, stride_;
};

// Stops recording gradients on the weights whatever happens.
class ReleaseGrads {
 public:
  void add(at::Tensor w) { weights_.push_back(std::move(w)); }
  ~ReleaseGrads() {
    for (at::Tensor& w : weights_) {
      w.mutable_grad() = at::Tensor();
      w.requires_grad_(false);
    }
  }

 private:
  std::vector<at::Tensor> weights_;
};

}  // namespace

at::Tensor SlotStatistics::fisher_importance() const {
  LR_CHECK(fisher.defined() && fisher_batches > 0, InvalidArgument, "no Fisher statistics were collected");
  return at::sqrt(fisher / static_cast<double>(fisher_batches));
}

CalibrationStatistics calibrate(nn::Model& model, const at::Tensor& tokens,
                                const CalibrationOptions& options) {
  LR_CHECK(options.samples >= 1, InvalidArgument, "calibration samples must be >= 1, got ", options.samples);
  LR_CHECK(options.seq_len >= 2, InvalidArgument, "calibration sequence length must be >= 2, got ",
           options.seq_len);
  LR_CHECK(options.batch_size >= 1, InvalidArgument, "calibration batch size must be >= 1, got ",
           options.batch_size);
  LR_CHECK(tokens.dim() == 1 && tokens.scalar_type() == at::kLong, InvalidArgument,
           "calibration tokens must be a 1-D int64 tensor");
  const int64_t n = tokens.size(0);
  LR_CHECK(n >= options.seq_len + 1, InvalidArgument, "calibration data holds ", n, " tokens; --seq-len ",
           options.seq_len, " needs at least ", options.seq_len + 1);

  std::set<std::string> wanted(options.slots.begin(), options.slots.end());
  std::vector<nn::LinearSlot*> slots;
  for (nn::LinearSlot* s : model.slots()) {
    const bool take = wanted.empty() ? s->name() != "lm_head" : wanted.erase(s->name()) > 0;
    if (take) slots.push_back(s);
  }
  LR_CHECK(wanted.empty(), InvalidArgument, "calibration: the model has no slot \"", *wanted.begin(), "\"");

  CalibrationStatistics stats;
  InputIncrement last_input;  // outlives the recorders (RestoreBases below drops them first)
  nn::RestoreBases restore;
  ReleaseGrads release;
  std::vector<at::Tensor> weights;  // the dense weights whose gradients feed the Fisher diagonal
  for (nn::LinearSlot* s : slots) {
    SlotStatistics& st = stats[s->name()];
    if (options.fisher) {
      const auto* dense = dynamic_cast<const nn::DenseOperator*>(&s->base());
      LR_CHECK(dense != nullptr, Unsupported, "calibration: Fisher statistics need dense weights; slot ",
               s->name(), " holds a ", s->base().kind(), " operator");
      at::Tensor w = dense->weight();
      w.requires_grad_(true);
      release.add(w);
      weights.push_back(w);
      st.fisher = at::zeros({w.size(1)}, at::kDouble);
    } else {
      weights.emplace_back();
    }
    std::shared_ptr<const nn::BaseOperator> base = s->base_ptr();
    s->replace_base(std::make_shared<RecordingOperator>(
        base, &st, options.gram, &last_input, options.keep_inputs,
        std::max<int64_t>(1, options.samples * options.seq_len / std::max<int64_t>(options.keep_inputs, 1))));
    restore.add(s, std::move(base));
  }

  // Windows spread evenly over the data (deterministic).
  const int64_t span = options.seq_len + 1;
  std::vector<int64_t> starts;
  for (int64_t i = 0; i < options.samples; ++i)
    starts.push_back(options.samples == 1 ? 0 : i * (n - span) / (options.samples - 1));

  std::optional<ProgressBar> bar;
  if (options.progress) bar.emplace(options.samples, options.fisher ? "calibrate (fisher)" : "calibrate");
  for (int64_t b = 0; b < options.samples; b += options.batch_size) {
    const int64_t count = std::min(options.batch_size, options.samples - b);
    std::vector<at::Tensor> rows;
    for (int64_t i = 0; i < count; ++i) rows.push_back(tokens.narrow(0, starts[b + i], span));
    const at::Tensor batch = at::stack(rows).to(model.device());
    const at::Tensor input = batch.narrow(1, 0, options.seq_len);
    if (!options.fisher) {
      at::NoGradGuard guard;  // not inference mode: InputIncrement compares version counters
      model.forward(input);
    } else {
      const at::Tensor logits = model.forward(input);
      const at::Tensor labels = batch.narrow(1, 1, options.seq_len);
      // Half-precision logits are widened for the loss; float64 models keep their precision.
      const at::Tensor flat = logits.reshape({-1, logits.size(-1)});
      const at::Tensor loss = at::cross_entropy_loss(
          flat.scalar_type() == at::kDouble ? flat : flat.to(at::kFloat), labels.reshape({-1}));
      loss.backward();
      at::NoGradGuard no_grad;
      for (size_t k = 0; k < slots.size(); ++k) {
        at::Tensor& w = weights[k];
        SlotStatistics& st = stats[slots[k]->name()];
        st.fisher += w.grad().to(at::kDouble).square().mean(0);
        st.fisher_batches += 1;
        w.mutable_grad() = at::Tensor();
      }
    }
    if (bar) bar->advance(count);
  }
  if (bar) bar->finish();
  return stats;
}

}  // namespace lowrank::compress
