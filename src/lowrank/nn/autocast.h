// Autocast: the forward passes of a model in bfloat16 or float16 on its device (CPU or CUDA) while
// the weights stay float32. This is PyTorch's torch.autocast: the thread-local state of ATen's
// autocast dispatch keys. Inside the scope, the device's lower-precision ops (linear, matmul,
// convolutions) run in the chosen dtype, and the rest keep theirs. Casts of the float32 weights
// are cached for the scope. Training (train/trainer.h, with train/loss_scaler.h for fp16) and
// evaluation (`lowrank eval --autocast`) open one around each forward pass.
#pragma once

#include <string_view>

#include <ATen/ATen.h>

namespace lowrank::nn {

// "" (off), "bf16" or "fp16" → at::kFloat (off), at::kBFloat16 or at::kHalf. Throws
// InvalidArgument naming the value otherwise.
at::ScalarType autocast_dtype(std::string_view autocast);

// Throws InvalidArgument when `device` cannot autocast (CPU and CUDA can, to both types), naming
// the mode and the device.
void check_autocast_device(std::string_view autocast, const at::Device& device);

// Autocast of `device_type`'s ops to `dtype` while the object lives (at::kFloat: inert); restores
// the previous state and drops the cast cache on exit.
class AutocastScope {
 public:
  AutocastScope(at::DeviceType device_type, at::ScalarType dtype);
  ~AutocastScope();
  AutocastScope(const AutocastScope&) = delete;
  AutocastScope& operator=(const AutocastScope&) = delete;

 private:
  at::DeviceType device_type_;
  bool on_ = false;
  bool was_enabled_ = false;
  at::ScalarType was_dtype_ = at::kFloat;
};

}  // namespace lowrank::nn
