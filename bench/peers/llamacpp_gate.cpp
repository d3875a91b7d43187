// llama.cpp's side of the correctness gate in bench/peers/llamacpp.py: a GGUF model run on token
// ids given explicitly (llama.cpp never tokenises), so that both engines see the same input.
// Built by scripts/setup-llamacpp against the static llama library of the vendored llama.cpp tree
// (not part of lowrank's own build).
//
//   lowrank-llama-gate MODEL.gguf greedy IDS.bin N_NEW THREADS
//       IDS.bin: int32 prompt ids. Prefills the prompt, then N_NEW greedy steps (argmax of the
//       float logits, no sampler); prints the new ids, comma-separated, on stdout.
//   lowrank-llama-gate MODEL.gguf logits IDS.bin SEQ THREADS OUT.bin
//       IDS.bin: int32 ids, rows of SEQ tokens. Each row is run teacher-forced from an empty KV
//       cache; the float32 logits of every position, [rows, SEQ, vocab], go to OUT.bin.
// The KV cache is f32 (as lowrank's float32 cache), flash attention off.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "llama.h"

namespace {

[[noreturn]] void fail(const std::string& message) {
  std::fprintf(stderr, "lowrank-llama-gate: %s\n", message.c_str());
  std::exit(1);
}

std::vector<llama_token> read_ids(const std::string& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) fail("cannot read " + path);
  const std::streamsize bytes = in.tellg();
  if (bytes <= 0 || bytes % 4) fail(path + ": not a non-empty int32 array");
  std::vector<llama_token> ids(static_cast<size_t>(bytes / 4));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(ids.data()), bytes);
  return ids;
}

void quiet_log(ggml_log_level level, const char* text, void*) {
  if (level == GGML_LOG_LEVEL_ERROR) std::fputs(text, stderr);
}

// Decodes tokens [0, n) at positions pos0.. in one batch; logits for every position when `all`.
void decode(llama_context* ctx, llama_batch& batch, const llama_token* tokens, int n, int pos0, bool all) {
  batch.n_tokens = n;
  for (int i = 0; i < n; ++i) {
    batch.token[i] = tokens[i];
    batch.pos[i] = pos0 + i;
    batch.n_seq_id[i] = 1;
    batch.seq_id[i][0] = 0;
    batch.logits[i] = all || i == n - 1;
  }
  if (const int rc = llama_decode(ctx, batch)) fail("llama_decode returned " + std::to_string(rc));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) fail("usage: MODEL.gguf (greedy IDS.bin N_NEW | logits IDS.bin SEQ) THREADS [OUT.bin]");
  const std::string model_path = argv[1], mode = argv[2];
  const std::vector<llama_token> ids = read_ids(argv[3]);
  const int count = std::atoi(argv[4]), threads = std::atoi(argv[5]);
  if (mode != "greedy" && mode != "logits") fail("unknown mode " + mode + " (greedy or logits)");
  if (mode == "logits" && argc < 7) fail("logits needs OUT.bin");
  if (count <= 0 || threads <= 0) fail("N_NEW / SEQ and THREADS must be positive");
  const int seq = mode == "greedy" ? static_cast<int>(ids.size()) : count;
  if (ids.size() % static_cast<size_t>(seq)) fail("the ids are not whole rows of SEQ tokens");

  llama_log_set(quiet_log, nullptr);
  llama_backend_init();
  llama_model_params mparams = llama_model_default_params();
  mparams.n_gpu_layers = 0;
  llama_model* model = llama_model_load_from_file(model_path.c_str(), mparams);
  if (!model) fail("cannot load " + model_path);
  const int vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

  const int ctx_len = mode == "greedy" ? seq + count : seq;
  llama_context_params cparams = llama_context_default_params();
  cparams.n_ctx = static_cast<uint32_t>(ctx_len);
  cparams.n_batch = cparams.n_ubatch = static_cast<uint32_t>(seq);
  cparams.n_seq_max = 1;
  cparams.n_threads = cparams.n_threads_batch = threads;
  cparams.type_k = cparams.type_v = GGML_TYPE_F32;
  cparams.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
  cparams.no_perf = true;
  llama_context* ctx = llama_init_from_model(model, cparams);
  if (!ctx) fail("cannot create a context for " + model_path);
  llama_batch batch = llama_batch_init(seq, 0, 1);

  if (mode == "greedy") {
    decode(ctx, batch, ids.data(), seq, 0, false);
    std::string out;
    for (int step = 0; step < count; ++step) {
      const float* logits = llama_get_logits_ith(ctx, -1);
      llama_token best = 0;
      for (int v = 1; v < vocab; ++v)
        if (logits[v] > logits[best]) best = v;
      out += (step ? "," : "") + std::to_string(best);
      if (step + 1 < count) decode(ctx, batch, &best, 1, seq + step, false);
    }
    std::printf("%s\n", out.c_str());
  } else {
    const std::string out_path = argv[6], tmp = out_path + ".tmp";
    std::ofstream out(tmp, std::ios::binary);
    if (!out) fail("cannot write " + tmp);
    for (size_t row = 0; row < ids.size() / static_cast<size_t>(seq); ++row) {
      llama_memory_clear(llama_get_memory(ctx), true);
      decode(ctx, batch, ids.data() + row * static_cast<size_t>(seq), seq, 0, true);
      for (int i = 0; i < seq; ++i)
        out.write(reinterpret_cast<const char*>(llama_get_logits_ith(ctx, i)),
                  static_cast<std::streamsize>(sizeof(float)) * vocab);
    }
    out.close();
    if (!out || std::rename(tmp.c_str(), out_path.c_str())) fail("cannot write " + out_path);
  }
  llama_batch_free(batch);
  llama_free(ctx);
  llama_model_free(model);
  return 0;
}
