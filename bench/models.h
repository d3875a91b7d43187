// Model shapes the benchmarks share.
#pragma once

#include "lowrank/core/json.h"

namespace lowrank::bench {

// The `small` pretraining preset's shape (train/pretrain.cpp): 6 layers, hidden 256, MLP 768,
// 8 heads, vocab 8192, tied embeddings; a config.json for nn::Model::random.
inline Json small_preset_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", 8192},
          {"hidden_size", 256},
          {"intermediate_size", 768},
          {"num_hidden_layers", 6},
          {"num_attention_heads", 8},
          {"num_key_value_heads", 8},
          {"max_position_embeddings", 1024},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", true}};
}

}  // namespace lowrank::bench
