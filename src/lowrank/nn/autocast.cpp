// Autocast scopes; see autocast.h.
#include "lowrank/nn/autocast.h"

#include <ATen/autocast_mode.h>

#include "lowrank/core/error.h"

namespace lowrank::nn {

at::ScalarType autocast_dtype(std::string_view autocast) {
  if (autocast.empty()) return at::kFloat;
  if (autocast == "bf16") return at::kBFloat16;
  if (autocast == "fp16") return at::kHalf;
  throw InvalidArgument(str("autocast \"", autocast, "\" is not bf16 or fp16 (or empty: off)"));
}

void check_autocast_device(std::string_view autocast, const at::Device& device) {
  autocast_dtype(autocast);
  LR_CHECK(autocast.empty() || device.is_cpu() || device.is_cuda(), InvalidArgument, "autocast ", autocast,
           " runs on cpu or cuda, not on ", device.str());
}

AutocastScope::AutocastScope(at::DeviceType device_type, at::ScalarType dtype) : device_type_(device_type) {
  if (dtype == at::kFloat) return;
  on_ = true;
  was_enabled_ = at::autocast::is_autocast_enabled(device_type_);
  was_dtype_ = at::autocast::get_autocast_dtype(device_type_);
  at::autocast::set_autocast_enabled(device_type_, true);
  at::autocast::set_autocast_dtype(device_type_, dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!on_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_type_, was_enabled_);
  at::autocast::set_autocast_dtype(device_type_, was_dtype_);
}

}  // namespace lowrank::nn
