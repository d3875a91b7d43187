// safetensors_copy IN OUT [IN OUT ...]: reads every tensor and the metadata of each safetensors
// file IN through lowrank::SafetensorsFile and writes them to OUT with lowrank::save_safetensors.
// The Python interop test (safetensors_python.py) checks that OUT is byte-identical to what the
// `safetensors` library wrote. Several pairs per run keep the test fast (libtorch loads once).
// Exit codes: 0 success, 1 error (message on stderr; later pairs are not copied), 2 usage.
#include <exception>
#include <iostream>
#include <vector>

#include "lowrank/core/safetensors.h"

int main(int argc, char** argv) {
  if (argc < 3 || argc % 2 != 1) {
    std::cerr << "usage: safetensors_copy IN OUT [IN OUT ...]\n";
    return 2;
  }
  try {
    for (int i = 1; i + 1 < argc; i += 2) {
      const lowrank::SafetensorsFile in = lowrank::SafetensorsFile::open(argv[i]);
      std::vector<lowrank::NamedTensor> tensors;
      for (const lowrank::TensorInfo& info : in.tensors()) tensors.push_back({info.name, in.load(info.name)});
      lowrank::save_safetensors(argv[i + 1], tensors, in.metadata());
    }
  } catch (const std::exception& e) {
    std::cerr << "safetensors_copy: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
