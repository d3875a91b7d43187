// `lowrank export --gguf`: a model directory (plain or compressed) or a PEFT LoRA adapter as a GGUF
// file that llama.cpp and Ollama load unchanged.
//
// What is written follows llama.cpp's own converters (ggml-org/llama.cpp, the commit vendored by
// llama-cpp-python 0.3.36):
// - convert_hf_to_gguf.py with conversion/base.py (TextModel.set_gguf_parameters,
//   prepare_tensors, get_vocab_base, _set_vocab_gpt2), conversion/llama.py (LlamaModel: the q/k
//   row permutation `permute(w, n_head, n_head_kv)` for RoPE, rope_freqs.weight for llama3 RoPE)
//   and conversion/qwen.py (Qwen2Model: no permutation, llama.cpp runs qwen2 with NeoX RoPE);
// - convert_lora_to_gguf.py: general.type = adapter, adapter.type = lora, adapter.lora.alpha (f32),
//   per target `<gguf name>.lora_a` = PEFT's lora_A [r, in] (ggml ne {in, r}) and `.lora_b` =
//   lora_B [out, r] (ne {r, out}). Its LoraTorchTensor applies the base tensor's reshapes and
//   swapaxes to lora_B alone (reshape keeps the row size of A, permute with dims[-1] == -1 acts on B),
//   so for q/k the Llama permutation moves lora_B's rows and leaves lora_A as it is.
// - gguf-py's SpecialVocab for the bos/eos/unk/pad ids.
// Deviations, each on purpose: tokenizer.ggml.pre comes from the tokenizer's own pre-tokenizer
// definition instead of a hash of probe-text ids (a pre-tokenizer llama.cpp lacks is refused by
// name); a tensor whose rows a quantisation block does not divide is refused instead of falling
// back to F16; q4_0 is offered (the converter leaves it to llama-quantize, same block format);
// tokenizer.ggml.add_bos_token / add_eos_token say what the tokenizer's post-processor really adds.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

#include "lowrank/core/gguf.h"
#include "lowrank/core/json.h"

namespace lowrank::compress {

struct GgufExportOptions {
  std::filesystem::path model;    // HF model directory (plain or compressed); for an adapter, its base
  std::filesystem::path adapter;  // PEFT LoRA directory: write the adapter instead of the model
  std::filesystem::path out;      // the .gguf file (written atomically)
  gguf::TensorType type = gguf::TensorType::kF32;  // of the 2-D weights; norms and biases stay F32
};

struct GgufExportResult {
  std::filesystem::path out;
  std::string kind;           // "model" | "adapter"
  std::string architecture;   // "llama" | "qwen2"
  std::string pre_tokenizer;  // models only
  std::string type;           // "F32", "Q8_0", ...
  int64_t tensors = 0;
  int64_t densified_slots = 0;  // compressed slots written as dense weights
  std::string compression;      // lowrank_config.json's method ("" for a plain model)
  OrderedJson to_json() const;
};

// Writes the GGUF file. Every check (architecture and mixers, hidden activation, head counts,
// sliding windows, RoPE type, tokenizer, adapter config, block size against every row) runs before
// the file is created; an error leaves nothing behind. Throws Unsupported naming what GGUF or
// llama.cpp cannot express, InvalidArgument for a bad option, NotFound for a missing file.
GgufExportResult export_gguf(const GgufExportOptions& options);

// The tokenizer.ggml.pre name llama.cpp uses for this tokenizer.json's pre-tokenizer ("gpt-2",
// "llama-bpe" or "qwen2"); Unsupported naming the pre-tokenizer (and `what`) otherwise.
std::string gguf_pre_tokenizer(const Json& tokenizer, std::string_view what);

// `lowrank inspect FILE.gguf`: {"path", "format": "gguf", "version", "alignment", "metadata": {key:
// value, arrays in full}, "totals": {"tensors", "params", "bytes"}, "dtypes": {type: {"tensors",
// "params", "bytes"}}, "tensors": [{"name", "dtype", "shape" (PyTorch order: ne reversed), "params",
// "bytes", "offset"}]}. Throws as gguf::parse, naming the file.
OrderedJson inspect_gguf(const std::filesystem::path& path);
// The same for people: arrays longer than a few items are summarised.
std::string format_gguf_inspect(const OrderedJson& report);

}  // namespace lowrank::compress
