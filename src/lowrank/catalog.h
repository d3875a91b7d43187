// Every method family the library offers, for `lowrank methods` and the docs. Each family's
// own registry is the single source; this function only gathers them.
#pragma once

#include <string>
#include <vector>

#include "lowrank/core/registry.h"

namespace lowrank {

struct MethodFamily {
  std::string name;         // "adapt", "optim", ...
  std::string description;  // one line
  std::vector<MethodInfo> methods;
};

std::vector<MethodFamily> method_families();

}  // namespace lowrank
