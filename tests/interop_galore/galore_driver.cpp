// Test driver for tests/interop_galore/galore_interop.py: runs lowrank's low-rank optimizer over
// weights and per-step gradients read from a safetensors file and writes the weights after every
// step, so that a script can run the same inputs through galore-torch and compare.
//
//   galore_driver <in.safetensors> <method> <options JSON> <out.safetensors>
// in:  "w.<name>" (the initial weights) and "g<k>.<name>" (step k's gradient), metadata "steps"
//      and "lr"; out: "w<k>.<name>" after step k. Exit status 1 with the message on error.
#include <iostream>
#include <string>
#include <vector>

#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/optim/methods.h"

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: galore_driver <in.safetensors> <method> <options JSON> <out.safetensors>\n";
    return 2;
  }
  try {
    const lowrank::SafetensorsFile in = lowrank::SafetensorsFile::open(argv[1]);
    const int64_t steps = std::stoll(in.metadata().at("steps"));
    const double lr = std::stod(in.metadata().at("lr"));
    lowrank::optim::NamedTensors params;
    for (const auto& info : in.tensors())
      if (info.name.rfind("w.", 0) == 0)
        params.emplace_back(info.name.substr(2), in.load(info.name).requires_grad_(true));
    lowrank::optim::LowRankAdam opt =
        lowrank::optim::make_optimizer(argv[2], params, lowrank::Json::parse(std::string(argv[3])));
    std::vector<lowrank::NamedTensor> out;
    for (int64_t k = 0; k < steps; ++k) {
      for (auto& [name, p] : params) p.mutable_grad() = in.load("g" + std::to_string(k) + "." + name);
      opt.step(lr);
      for (const auto& [name, p] : params)
        out.push_back({"w" + std::to_string(k) + "." + name, p.detach().clone()});
    }
    lowrank::save_safetensors(argv[4], out);
  } catch (const std::exception& e) {
    std::cerr << "galore_driver: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
