// Precompiled header: the heavy, stable includes every lowrank target uses.
#pragma once

#include <ATen/ATen.h>
#include <torch/types.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>
