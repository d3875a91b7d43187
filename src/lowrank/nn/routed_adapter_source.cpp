// The thread's routed adapter source; see routed_adapter_source.h.
#include "lowrank/nn/routed_adapter_source.h"

namespace lowrank::nn {
namespace {
thread_local const RoutedAdapterSource* current_source = nullptr;
}  // namespace

RoutedAdapterScope::RoutedAdapterScope(const RoutedAdapterSource& source) : previous_(current_source) {
  current_source = &source;
}

RoutedAdapterScope::~RoutedAdapterScope() {
  current_source = previous_;
}

const RoutedAdapterSource* RoutedAdapterScope::current() {
  return current_source;
}

}  // namespace lowrank::nn
