// Model shapes the benchmarks share.
#pragma once

#include <cstdint>

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

// The serving benchmarks' random llama: hidden / 32 heads (as many KV heads), MLP 43/16 · hidden,
// untied embeddings; a config.json for nn::Model::random.
inline Json serving_llama_config(int64_t hidden, int64_t layers, int64_t vocab, int64_t context) {
  const int64_t heads = hidden / 32 > 1 ? hidden / 32 : 1;
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"vocab_size", vocab},
          {"hidden_size", hidden},
          {"intermediate_size", hidden * 43 / 16},
          {"num_hidden_layers", layers},
          {"num_attention_heads", heads},
          {"num_key_value_heads", heads},
          {"max_position_embeddings", context},
          {"rms_norm_eps", 1e-5},
          {"tie_word_embeddings", false}};
}

}  // namespace lowrank::bench
