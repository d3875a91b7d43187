// Shared by the API-edge tests (openai_api_test.cpp, adapter_root_test.cpp): what an ApiError
// names.
#pragma once

#include <string>

#include "lowrank/serve/openai_api.h"

namespace lowrank::serve::testing_support {

// The param of the ApiError `fn` throws ("(no error)" when it does not throw), and its status.
template <typename Fn>
std::string param_of(Fn&& fn, int* status = nullptr) {
  try {
    fn();
  } catch (const ApiError& e) {
    if (status) *status = e.status();
    return e.param();
  }
  return "(no error)";
}

}  // namespace lowrank::serve::testing_support
