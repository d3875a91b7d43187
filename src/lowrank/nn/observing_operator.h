// A slot's base wrapped so that its inputs can be watched while it keeps computing the same
// thing: calibration passes (compress/calibration.cpp's statistics, LoRAM's SparseGPT Hessians)
// install one in a slot, run forward passes, and put the base back (RestoreBases); Mamba's
// Lyapunov analysis (mix/mamba_lyapunov.h) records each layer's mixer input the same way.
#pragma once

#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "lowrank/nn/linear_slot.h"

namespace lowrank::nn {

// A wrapped base that answers every query as the wrapped operator does; subclasses change forward()
// (what they watch or alter on the way in).
class ForwardingOperator : public BaseOperator {
 public:
  explicit ForwardingOperator(std::shared_ptr<const BaseOperator> inner) : inner_(std::move(inner)) {}
  std::string_view kind() const override { return inner_->kind(); }
  int64_t in_features() const override { return inner_->in_features(); }
  int64_t out_features() const override { return inner_->out_features(); }
  NamedTensors tensors() const override { return inner_->tensors(); }
  at::Tensor dense_weight() const override { return inner_->dense_weight(); }
  at::Tensor bias() const override { return inner_->bias(); }
  at::Tensor forward(const at::Tensor& x) const override { return inner_->forward(x); }

 protected:
  const BaseOperator& inner() const { return *inner_; }

 private:
  std::shared_ptr<const BaseOperator> inner_;
};

// Every query goes to the wrapped operator; observe(x) sees each input (detached) first.
class ObservingOperator : public ForwardingOperator {
 public:
  using ForwardingOperator::ForwardingOperator;
  at::Tensor forward(const at::Tensor& x) const final {
    observe(x.detach());
    return inner().forward(x);
  }

 protected:
  virtual void observe(const at::Tensor& x) const = 0;
};

// Puts the slots' original bases back whatever happens: add() each slot with the base that
// replace_base() returned when the observer went in.
class RestoreBases {
 public:
  RestoreBases() = default;
  RestoreBases(const RestoreBases&) = delete;
  RestoreBases& operator=(const RestoreBases&) = delete;
  void add(LinearSlot* slot, std::shared_ptr<const BaseOperator> base) {
    saved_.emplace_back(slot, std::move(base));
  }
  ~RestoreBases() {
    for (auto& [slot, base] : saved_) slot->replace_base(base);
  }

 private:
  std::vector<std::pair<LinearSlot*, std::shared_ptr<const BaseOperator>>> saved_;
};

}  // namespace lowrank::nn
