// Parameters for the contract suites that run every method of a registry (PEFT's table of test
// cases): the registered names, read from the registry itself so that a method added there is
// tested without touching the suite, and gtest names for them.
#pragma once

#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "lowrank/core/registry.h"

namespace lowrank::testing {

// Every name `registry` holds, sorted.
template <typename Factory>
std::vector<std::string> registered_names(const Registry<Factory>& registry) {
  std::vector<std::string> names;
  for (const MethodInfo& info : registry.list()) names.push_back(info.name);
  return names;
}

// A test name for a method name ('-' is not allowed in gtest names).
inline std::string method_test_name(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  for (char& c : name)
    if (c == '-') c = '_';
  return name;
}

}  // namespace lowrank::testing
