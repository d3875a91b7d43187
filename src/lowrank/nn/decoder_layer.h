// One decoder layer of nn::Model (internal: model.cpp builds and runs it, decode_step.cpp runs its
// fused single-token twin). The equations are in model.h; the token mixer's contract in
// token_mixer.h.
#pragma once

#include <cstdint>
#include <memory>

#include <ATen/ATen.h>

#include "lowrank/nn/attention.h"
#include "lowrank/nn/linear_slot.h"
#include "lowrank/nn/token_mixer.h"

namespace lowrank::nn {

struct DecoderLayer {
  at::Tensor input_layernorm;           // [hidden]
  at::Tensor post_attention_layernorm;  // [hidden]
  std::unique_ptr<TokenMixer> mixer;
  // `mixer` when it is attention (what the fused decode step runs), else null.
  const Attention* attention = nullptr;
  LinearSlot gate_proj, up_proj, down_proj;
  int64_t window = 0;  // sliding window (0: full causal)
};

}  // namespace lowrank::nn
