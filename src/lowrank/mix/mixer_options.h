// Small helpers the mixers of mix/ share: refusing option keys a mixer does not take (the keys of
// its MethodInfo, so the help `lowrank methods` shows and the keys accepted never drift apart), and
// an initial value drawn from a generator seeded by the tensor's file name (so that a tensor several
// layers ask for under one name starts out equal everywhere, and a fresh model is reproducible).
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <ATen/ATen.h>

#include "lowrank/core/json.h"

namespace lowrank::mix {

using OptionHelp = std::vector<std::pair<std::string, std::string>>;

// Throws InvalidArgument when `options` is not a JSON object, or names a key outside `known`
// (naming the key and listing the known ones).
void check_option_keys(const std::string& mixer, const Json& options, const OptionHelp& known);

// U(-bound, bound) of `shape`, float32, from a CPU generator seeded by a hash of `name`.
at::Tensor uniform_by_name(const std::string& name, at::IntArrayRef shape, double bound);

}  // namespace lowrank::mix
