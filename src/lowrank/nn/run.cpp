// Entry points of the model verbs; see run.h.
#include "lowrank/nn/run.h"

#include <c10/core/InferenceMode.h>

#include <string>

#include "lowrank/core/error.h"
#include "lowrank/core/safetensors.h"

namespace lowrank::nn {

at::ScalarType parse_dtype(std::string_view name) {
  if (name == "float32" || name == "f32" || name == "fp32") return at::kFloat;
  if (name == "bfloat16" || name == "bf16") return at::kBFloat16;
  if (name == "float16" || name == "f16" || name == "fp16" || name == "half") return at::kHalf;
  if (name == "float64" || name == "f64" || name == "fp64") return at::kDouble;
  throw InvalidArgument(str("dtype \"", name, "\" is not one of float32, bfloat16, float16, float64"));
}

std::string dtype_name(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return "float32";
    case at::kBFloat16:
      return "bfloat16";
    case at::kHalf:
      return "float16";
    case at::kDouble:
      return "float64";
    default:
      throw Unsupported(
          str("model dtype ", c10::toString(dtype), " (supported: float32, bfloat16, float16, float64)"));
  }
}

at::Device parse_device(std::string_view name) {
  std::optional<at::Device> device;
  try {
    device = at::Device(std::string(name));
  } catch (const c10::Error&) {
    throw InvalidArgument(str("device \"", name, "\" is not cpu, cuda or cuda:N"));
  }
  LR_CHECK(device->is_cpu() || device->is_cuda(), InvalidArgument, "device \"", name,
           "\" is not cpu, cuda or cuda:N");
  if (device->is_cuda())
    LR_CHECK(at::hasCUDA(), Unsupported, "device \"", name, "\": this build or machine has no CUDA");
  return *device;
}

std::vector<int64_t> run_logits(const LogitsRequest& request) {
  return run_logits(Model::load(request.model, request.load), request.input, request.output);
}

std::vector<int64_t> run_logits(const Model& model, const std::filesystem::path& input_path,
                                const std::filesystem::path& output) {
  const SafetensorsFile input = SafetensorsFile::open(input_path);
  const std::string what = input_path.string();
  const TensorInfo* info = input.find("input_ids");
  LR_CHECK(info != nullptr, NotFound, what, ": no tensor \"input_ids\"");
  LR_CHECK(info->dtype == Dtype::kI64 && info->shape.size() == 2, InvalidArgument, what,
           ": \"input_ids\" must be I64 [batch, seq], got ", dtype_name(info->dtype), " ",
           ::lowrank::str(at::IntArrayRef(info->shape)));
  ForwardOptions options;
  if (const TensorInfo* mask = input.find("attention_mask")) {
    LR_CHECK(mask->shape == info->shape, InvalidArgument, what, ": \"attention_mask\" shape ",
             ::lowrank::str(at::IntArrayRef(mask->shape)), " differs from input_ids ",
             ::lowrank::str(at::IntArrayRef(info->shape)));
    options.attention_mask = input.load("attention_mask").to(at::kLong);
  }
  const at::Tensor ids = input.load("input_ids");
  at::Tensor logits;
  {
    c10::InferenceMode inference;
    logits = model.forward(ids, options).to(at::kCPU).to(at::kFloat).contiguous();
  }
  const NamedTensor out{"logits", logits};
  save_safetensors(output, std::span<const NamedTensor>(&out, 1), {{"format", "pt"}});
  return logits.sizes().vec();
}

}  // namespace lowrank::nn
