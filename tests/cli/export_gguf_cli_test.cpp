// `lowrank export --gguf` end to end on the bundled tiny Llama and its PEFT LoRA: the file read
// back with core/gguf holds llama.cpp's metadata, the tokenizer's vocabulary and merges, and the HF
// weights in llama.cpp's layout (q/k rows permuted as convert_hf_to_gguf.py's LlamaModel.permute,
// recomputed here by index); the LoRA holds lora_A as is and lora_B permuted for q/k; a compressed
// model is exported densified and says so; `inspect` lists a GGUF; bad input exits 1, naming it, with
// no file left behind. (Byte equality against the gguf package and greedy decoding in llama.cpp are
// the scripted tests in tests/interop_gguf.)
#include <gtest/gtest.h>

#include <filesystem>

#include "lowrank/compress/gguf_export.h"
#include "lowrank/core/file.h"
#include "lowrank/core/gguf.h"
#include "lowrank/core/json.h"
#include "lowrank/core/safetensors.h"
#include "lowrank/data/tokenizer.h"
#include "lowrank/nn/model.h"
#include "tests/testing.h"

namespace lowrank {
namespace {

namespace fs = std::filesystem;
using testing::run_command;

std::string lowrank() {
  return testing::lowrank_binary().string() + " --threads 2 --quiet ";
}

struct Read {
  std::vector<std::byte> bytes;
  gguf::Header header;
  const gguf::Value& key(const std::string& k) const {
    const gguf::Value* v = header.find(k);
    if (v == nullptr) throw std::runtime_error("no key " + k);
    return *v;
  }
  const gguf::TensorInfo* tensor(const std::string& name) const {
    for (const gguf::TensorInfo& t : header.tensors)
      if (t.name == name) return &t;
    return nullptr;
  }
  // The tensor as float32 in PyTorch order (ne reversed).
  at::Tensor values(const std::string& name) const {
    const gguf::TensorInfo* t = tensor(name);
    if (t == nullptr) throw std::runtime_error("no tensor " + name);
    std::vector<float> v =
        gguf::decode(gguf::tensor_bytes(bytes, header, *t), t->element_count(), t->type, name);
    std::vector<int64_t> shape(t->dims.rbegin(), t->dims.rend());
    return at::tensor(v).reshape(shape);
  }
};

Read read_gguf(const fs::path& path) {
  Read r;
  const MappedFile f = MappedFile::open(path);
  r.bytes.assign(f.bytes().begin(), f.bytes().end());
  r.header = gguf::parse(r.bytes, path.string());
  return r;
}

// Row h·d + 2i + j of llama.cpp's q/k is row h·d + j·d/2 + i of transformers' (d = head size):
// convert_hf_to_gguf.py's permute, written as an index map.
at::Tensor llama_cpp_rows(const at::Tensor& w, int64_t heads) {
  const int64_t d = w.size(0) / heads;
  std::vector<int64_t> src;
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < d / 2; ++i)
      for (int64_t j = 0; j < 2; ++j) src.push_back(h * d + j * (d / 2) + i);
  return w.index_select(0, at::tensor(src));
}

const std::map<std::string, std::string> kModules = {
    {"self_attn.q_proj", "attn_q"},      {"self_attn.k_proj", "attn_k"}, {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"}, {"mlp.gate_proj", "ffn_gate"},  {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"}};

TEST(ExportGgufCliTest, F32ModelHoldsLlamaCppsMetadataVocabularyAndLayout) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path out = dir / "model.gguf";
  auto r =
      run_command(lowrank() + "--json export --gguf --model " + model.string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Json report = parse_json(r.out, "export output");
  EXPECT_EQ(report["architecture"], "llama");
  EXPECT_EQ(report["pre_tokenizer"], "gpt-2");
  EXPECT_EQ(report["densified_slots"], 0);
  const Read g = read_gguf(out);
  EXPECT_EQ(g.key("general.architecture").text, "llama");
  EXPECT_EQ(g.key("general.type").text, "model");
  EXPECT_EQ(g.key("general.file_type").uint, 0u);
  EXPECT_EQ(g.key("llama.block_count").uint, 2u);
  EXPECT_EQ(g.key("llama.context_length").uint, 256u);
  EXPECT_EQ(g.key("llama.embedding_length").uint, 64u);
  EXPECT_EQ(g.key("llama.feed_forward_length").uint, 176u);
  EXPECT_EQ(g.key("llama.attention.head_count").uint, 4u);
  EXPECT_EQ(g.key("llama.attention.head_count_kv").uint, 2u);
  EXPECT_EQ(g.key("llama.attention.key_length").uint, 16u);
  EXPECT_EQ(g.key("llama.rope.dimension_count").uint, 16u);
  EXPECT_EQ(g.key("llama.vocab_size").uint, 512u);
  EXPECT_EQ(g.key("llama.rope.freq_base").real, 10000.0);
  EXPECT_EQ(g.key("llama.attention.layer_norm_rms_epsilon").real, static_cast<double>(1e-5f));
  EXPECT_EQ(g.header.find("llama.rope.scaling.type"), nullptr);

  // Tokenizer: every id's token string as tokenizer.json stores it, its merges as "a b".
  const Json tok = read_json_file(model / "tokenizer.json");
  EXPECT_EQ(g.key("tokenizer.ggml.model").text, "gpt2");
  EXPECT_EQ(g.key("tokenizer.ggml.pre").text, "gpt-2");
  const auto& tokens = g.key("tokenizer.ggml.tokens").items;
  ASSERT_EQ(tokens.size(), 512u);
  for (const auto& [text, id] : tok["model"]["vocab"].items())
    EXPECT_EQ(tokens.at(id.get<size_t>()).text, text);
  const auto& types = g.key("tokenizer.ggml.token_type").items;
  EXPECT_EQ(types.at(1).sint, 3);    // <s>: an added special token is CONTROL
  EXPECT_EQ(types.at(300).sint, 1);  // NORMAL
  const auto& merges = g.key("tokenizer.ggml.merges").items;
  ASSERT_EQ(merges.size(), tok["model"]["merges"].size());
  const Json& m0 = tok["model"]["merges"][0];
  EXPECT_EQ(merges[0].text, m0.is_string() ? m0.get<std::string>()
                                           : m0[0].get<std::string>() + " " + m0[1].get<std::string>());
  EXPECT_EQ(g.key("tokenizer.ggml.bos_token_id").uint, 1u);
  EXPECT_EQ(g.key("tokenizer.ggml.eos_token_id").uint, 2u);
  EXPECT_EQ(g.header.find("tokenizer.ggml.unknown_token_id"), nullptr);  // model.unk_token is null

  // Weights: every HF tensor under its GGUF name, q/k rows in llama.cpp's order, F32 bit for bit.
  const SafetensorsFile st = SafetensorsFile::open(model / "model.safetensors");
  EXPECT_EQ(g.header.tensors.size(), st.tensors().size());
  EXPECT_TRUE(at::equal(g.values("token_embd.weight"), st.load("model.embed_tokens.weight")));
  EXPECT_TRUE(at::equal(g.values("output.weight"), st.load("lm_head.weight")));
  EXPECT_TRUE(at::equal(g.values("output_norm.weight"), st.load("model.norm.weight")));
  for (int layer = 0; layer < 2; ++layer) {
    const std::string hf = str("model.layers.", layer, "."), gg = str("blk.", layer, ".");
    EXPECT_TRUE(at::equal(g.values(gg + "attn_norm.weight"), st.load(hf + "input_layernorm.weight")));
    EXPECT_TRUE(at::equal(g.values(gg + "ffn_norm.weight"), st.load(hf + "post_attention_layernorm.weight")));
    for (const auto& [module, name] : kModules) {
      at::Tensor want = st.load(hf + module + ".weight");
      if (name == "attn_q") want = llama_cpp_rows(want, 4);
      if (name == "attn_k") want = llama_cpp_rows(want, 2);
      EXPECT_TRUE(at::equal(g.values(gg + name + ".weight"), want)) << gg + name;
      EXPECT_EQ(g.tensor(gg + name + ".weight")->type, gguf::TensorType::kF32);
    }
  }

  // `lowrank inspect` reads it.
  auto i = run_command(lowrank() + "--json inspect " + out.string());
  ASSERT_EQ(i.exit_code, 0) << i.out;
  const Json listing = parse_json(i.out, "inspect output");
  EXPECT_EQ(listing["format"], "gguf");
  EXPECT_EQ(listing["metadata"]["tokenizer.ggml.pre"], "gpt-2");
  EXPECT_EQ(listing["totals"]["tensors"], 2 * 9 + 3);
  EXPECT_EQ(listing["tensors"][2]["name"], "blk.0.attn_q.weight");
  EXPECT_EQ(listing["tensors"][3]["shape"],
            Json::array({32, 64}));  // PyTorch order: k is [kv heads × 16, 64]
  auto h = run_command(lowrank() + "inspect " + out.string());
  EXPECT_NE(h.out.find("blk.0.attn_q.weight"), std::string::npos) << h.out;
}

// A copy of the tiny Llama with feed-forward 128 (rows of 64 and 128: whole 32-element blocks).
fs::path block_model(const fs::path& dir) {
  const fs::path src = testing::tiny_hf_model(dir / "src");
  Json config = read_json_file(src / "config.json");
  config["intermediate_size"] = 128;
  nn::Model m = nn::Model::random(nn::ModelConfig::from_json(config, "config"), 29);
  const fs::path model = dir / "blocks";
  m.save(model);
  fs::copy_file(src / "tokenizer.json", model / "tokenizer.json");
  return model;
}

TEST(ExportGgufCliTest, Q8AndQ4ExportsQuantiseEveryWeightAndKeepNormsF32) {
  testing::TempDir dir;
  const fs::path model = block_model(dir.path());
  const SafetensorsFile st = SafetensorsFile::open(model / "model.safetensors");
  for (const std::string type : {"q8_0", "q4_0", "f16", "bf16"}) {
    SCOPED_TRACE(type);
    const fs::path out = dir / (type + ".gguf");
    auto r = run_command(lowrank() + "export --gguf --type " + type + " --model " + model.string() +
                         " --out " + out.string());
    ASSERT_EQ(r.exit_code, 0) << r.out;
    const Read g = read_gguf(out);
    const gguf::TensorType want = gguf::tensor_type_from_name(type, "type");
    EXPECT_EQ(g.tensor("blk.1.ffn_down.weight")->type, want);
    EXPECT_EQ(g.tensor("blk.1.ffn_norm.weight")->type, gguf::TensorType::kF32);
    EXPECT_EQ(g.tensor("output_norm.weight")->type, gguf::TensorType::kF32);
    // Dequantised within half a step of each block's scale of the weight (q8: max/127, q4: max/8).
    const at::Tensor w = st.load("model.layers.1.mlp.down_proj.weight");
    const at::Tensor got = g.values("blk.1.ffn_down.weight");
    const double step = w.abs().max().item<double>() / (type == "q4_0" ? 8 : type == "q8_0" ? 127 : 256);
    EXPECT_LE(testing::max_abs_diff(got, w), step) << type;
  }
}

TEST(ExportGgufCliTest, AdapterHoldsLoraAAndPermutedLoraB) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  const fs::path adapter = testing::fixture("hf/llama-tiny/adapter-lora");
  const fs::path out = dir / "lora.gguf";
  auto r = run_command(lowrank() + "--json export --gguf --model " + model.string() + " --adapter " +
                       adapter.string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const Read g = read_gguf(out);
  EXPECT_EQ(g.key("general.type").text, "adapter");
  EXPECT_EQ(g.key("general.architecture").text, "llama");
  EXPECT_EQ(g.key("adapter.type").text, "lora");
  EXPECT_EQ(g.key("adapter.lora.alpha").real, 16.0);
  EXPECT_EQ(g.key("adapter.lora.alpha").type, gguf::ValueType::kF32);
  const SafetensorsFile st = SafetensorsFile::open(adapter / "adapter_model.safetensors");
  EXPECT_EQ(g.header.tensors.size(), 2u * 7 * 2);
  for (int layer = 0; layer < 2; ++layer)
    for (const auto& [module, name] : kModules) {
      const std::string peft = str("base_model.model.model.layers.", layer, ".", module);
      const std::string gg = str("blk.", layer, ".", name, ".weight");
      at::Tensor b = st.load(peft + ".lora_B.weight");
      if (name == "attn_q") b = llama_cpp_rows(b, 4);
      if (name == "attn_k") b = llama_cpp_rows(b, 2);
      EXPECT_TRUE(at::equal(g.values(gg + ".lora_a"), st.load(peft + ".lora_A.weight"))) << gg;
      EXPECT_TRUE(at::equal(g.values(gg + ".lora_b"), b)) << gg;
      EXPECT_EQ(g.tensor(gg + ".lora_a")->dims, (std::vector<uint64_t>{name == "ffn_down" ? 176u : 64u, 8u}));
    }
}

TEST(ExportGgufCliTest, CompressedModelIsExportedDensifiedAndSaysSo) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  auto c = run_command(lowrank() + "compress --model " + model.string() + " --method svd --ratio 0.3 --out " +
                       (dir / "c").string() + " 2>&1");
  ASSERT_EQ(c.exit_code, 0) << c.out;
  auto d = run_command(lowrank() + "export --dense --model " + (dir / "c").string() + " --out " +
                       (dir / "d").string());
  ASSERT_EQ(d.exit_code, 0) << d.out;
  const fs::path out = dir / "c.gguf";
  auto r =
      run_command(lowrank() + "export --gguf --model " + (dir / "c").string() + " --out " + out.string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("densified 14 compressed slot(s) (svd)"), std::string::npos) << r.out;
  const Read g = read_gguf(out);
  const SafetensorsFile dense = SafetensorsFile::open(dir / "d" / "model.safetensors");
  EXPECT_TRUE(at::equal(g.values("blk.1.attn_k.weight"),
                        llama_cpp_rows(dense.load("model.layers.1.self_attn.k_proj.weight"), 2)));
  EXPECT_TRUE(at::equal(g.values("blk.0.ffn_up.weight"), dense.load("model.layers.0.mlp.up_proj.weight")));
}

// The fixture tokenizers were written by Hugging Face `tokenizers` in the GPT-2, Llama 3 and Qwen2
// styles (tests/fixtures/tokenizers/make_fixtures.py): llama.cpp's names for them.
TEST(ExportGgufCliTest, PreTokenizerIsReadOffTheTokenizersDefinition) {
  auto pre = [](const std::string& f) {
    return compress::gguf_pre_tokenizer(read_json_file(testing::fixture(f)), f);
  };
  EXPECT_EQ(pre("tokenizers/gpt2-trained/tokenizer.json"), "gpt-2");
  EXPECT_EQ(pre("hf/bpe-gpt2style/tokenizer.json"), "gpt-2");
  EXPECT_EQ(pre("tokenizers/llama3-style/tokenizer.json"), "llama-bpe");
  EXPECT_EQ(pre("tokenizers/qwen2-style/tokenizer.json"), "qwen2");
  // llama.cpp's own spelling of the Llama 3 regex (llama-vocab.cpp) is the same pre-tokenizer.
  Json t = read_json_file(testing::fixture("tokenizers/llama3-style/tokenizer.json"));
  std::string& regex = t["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"].get_ref<std::string&>();
  regex.replace(0, std::string("(?i:'s|'t|'re|'ve|'m|'ll|'d)").size(),
                "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])");
  EXPECT_EQ(compress::gguf_pre_tokenizer(t, "expanded"), "llama-bpe");
  regex += "|x";
  EXPECT_NE(
      testing::error_of([&] { compress::gguf_pre_tokenizer(t, "edited"); }).find("edited: pre-tokenizer"),
      std::string::npos);
}

TEST(ExportGgufCliTest, BadInputExitsOneNamingItAndLeavesNoFile) {
  testing::TempDir dir;
  const fs::path model = testing::tiny_hf_model(dir.path());
  auto refuse = [&](const std::string& args, const std::string& needle) {
    const fs::path out = dir / "out" / "x.gguf";
    fs::create_directories(out.parent_path());
    auto r = run_command(lowrank() + "export " + args + " --out " + out.string() + " 2>&1");
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
    EXPECT_TRUE(fs::is_empty(out.parent_path())) << args;
  };
  const std::string m = " --model " + model.string();
  // A block that does not divide a row: the feed-forward of 176.
  refuse("--gguf --type q8_0" + m,
         "tensor \"blk.0.ffn_down.weight\" has rows of 176 elements, not a multiple of the Q8_0 block of 32");
  refuse("--gguf --type q4_0 --adapter " + testing::fixture("hf/llama-tiny/adapter-lora").string() + m,
         "tensor \"blk.0.ffn_down.weight.lora_a\" has rows of 176 elements");
  refuse("--gguf --type q5_k" + m, "--type: unknown GGUF tensor type \"q5_k\"");
  refuse("--gguf --dense" + m, "exactly one of --dense, --gguf and --deploy");
  refuse("--gguf --dtype bfloat16" + m, "--dtype belongs to --dense");

  // A pre-tokenizer llama.cpp does not have (byte-level BPE, another split regex).
  auto variant = [&](const std::string& name, auto edit_config, auto edit_tokenizer) {
    const fs::path v = dir / name;
    fs::create_directories(v);
    for (const char* f : {"model.safetensors", "generation_config.json"}) fs::copy_file(model / f, v / f);
    Json config = read_json_file(model / "config.json");
    edit_config(config);
    write_json_file(v / "config.json", config);
    Json tok = read_json_file(model / "tokenizer.json");
    edit_tokenizer(tok);
    write_json_file(v / "tokenizer.json", tok);
    return " --model " + v.string();
  };
  auto same = [](Json&) {};
  refuse("--gguf" + variant("digits", same,
                            [](Json& t) {
                              t["pre_tokenizer"] = Json::parse(R"({"type":"Sequence","pretokenizers":[
                                {"type":"Split","pattern":{"Regex":"\\p{N}{1,2}| ?\\p{L}+"},"behavior":"Isolated","invert":false},
                                {"type":"ByteLevel","add_prefix_space":false,"trim_offsets":true,"use_regex":false}]})");
                            }),
         "is none of llama.cpp's gpt-2, llama-bpe or qwen2");
  refuse("--gguf" + variant("prefix", same, [](Json& t) { t["pre_tokenizer"]["add_prefix_space"] = true; }),
         "pre-tokenizer {\"add_prefix_space\":true");
  refuse("--gguf" + variant(
                        "heads", [](Json& c) { c["num_key_value_heads"] = 3; }, same),
         "num_key_value_heads");
  refuse("--gguf" + variant(
                        "mixer",
                        [](Json& c) {
                          c["model_type"] = "lowrank_mixer";
                          c["architectures"] = Json::array({"LowrankMixerForCausalLM"});
                          c["layer_mixers"] = Json::array({"attention", "fnet"});
                        },
                        same),
         "\"fnet\"");  // unknown here; registered by mix/, then refused by the GGUF export
  refuse("--gguf" + variant(
                        "gelu", [](Json& c) { c["hidden_act"] = "gelu"; }, same),
         "hidden_act \"gelu\"");
}

}  // namespace
}  // namespace lowrank
