// The byte-level BPE tokenizer: loading and saving Hugging Face `tokenizer.json`, and the
// encode / decode pipelines of `tokenizers` (tokenizer/mod.rs: encode_single_sequence,
// post_process, decode; serialization.rs for the file; processors/template.rs, roberta.rs,
// bert.rs, sequence.rs; decoders/byte_level.rs). References: Sennrich et al., 2016 (BPE);
// Radford et al., 2019 (byte-level BPE, GPT-2).
#include "lowrank/data/tokenizer.h"

#include <algorithm>

#include "lowrank/core/error.h"
#include "lowrank/core/file.h"
#include "lowrank/core/log.h"
#include "lowrank/data/tokenizer_internal.h"

namespace lowrank::data {

using detail::AddedToken;
using detail::TokenizerImpl;

namespace {

// ---- Components -------------------------------------------------------------------------------

// NFC, or nothing; a Sequence of those. Anything else is Unsupported.
detail::NormalizerKind parse_normalizer(const Json& spec, std::string_view what) {
  if (spec.is_null()) return detail::NormalizerKind::kNone;
  LR_CHECK(spec.is_object(), Corruption, what, ": normalizer must be an object or null");
  const auto type = json_get_or<std::string>(spec, "type", "", what);
  if (type == "NFC") return detail::NormalizerKind::kNfc;
  if (type == "Sequence") {
    const auto it = spec.find("normalizers");
    LR_CHECK(it != spec.end() && it->is_array(), Corruption, what, ": normalizer Sequence needs a list");
    auto kind = detail::NormalizerKind::kNone;
    for (const auto& member : *it)
      if (parse_normalizer(member, what) == detail::NormalizerKind::kNfc) kind = detail::NormalizerKind::kNfc;
    return kind;
  }
  throw Unsupported(str(what, ": normalizer \"", type, "\" is not supported (NFC or null)"));
}

detail::DecoderKind parse_decoder(const Json& spec, std::string_view what) {
  if (spec.is_null()) return detail::DecoderKind::kNone;
  LR_CHECK(spec.is_object(), Corruption, what, ": decoder must be an object or null");
  const auto type = json_get_or<std::string>(spec, "type", "", what);
  if (type == "ByteLevel") return detail::DecoderKind::kByteLevel;
  if (type == "Sequence") {
    const auto it = spec.find("decoders");
    if (it != spec.end() && it->is_array() && it->size() == 1) return parse_decoder((*it)[0], what);
  }
  throw Unsupported(str(what, ": decoder \"", type, "\" is not supported (ByteLevel or null)"));
}

int32_t checked_id(const Json& value, std::string_view what, std::string_view field) {
  LR_CHECK(
      value.is_number_integer() && value.get<int64_t>() >= 0 && value.get<int64_t>() < (int64_t{1} << 31),
      Corruption, what, ": ", field, " must be a token id, not ", value.dump());
  return value.get<int32_t>();
}

// Appends the processor's effect on a single sequence: prefix + A + suffix.
void parse_post_processor(const Json& spec, std::string_view what, detail::PostProcessor& out) {
  if (spec.is_null()) return;
  LR_CHECK(spec.is_object(), Corruption, what, ": post_processor must be an object or null");
  const auto type = json_get_or<std::string>(spec, "type", "", what);
  std::vector<int32_t> prefix, suffix;
  if (type == "ByteLevel") {
    return;  // offsets only
  } else if (type == "Sequence") {
    const auto it = spec.find("processors");
    LR_CHECK(it != spec.end() && it->is_array(), Corruption, what, ": post_processor Sequence needs a list");
    for (const auto& member : *it) parse_post_processor(member, what, out);
    return;
  } else if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* key : {"cls", "sep"}) {
      const auto it = spec.find(key);
      LR_CHECK(it != spec.end() && it->is_array() && it->size() == 2, Corruption, what, ": post_processor ",
               type, ".", key, " must be [token, id]");
      (std::string_view(key) == "cls" ? prefix : suffix).push_back(checked_id((*it)[1], what, key));
    }
  } else if (type == "TemplateProcessing") {
    const auto single = spec.find("single");
    LR_CHECK(single != spec.end() && single->is_array(), Corruption, what,
             ": post_processor TemplateProcessing needs a \"single\" template");
    const auto specials = spec.find("special_tokens");
    bool seen_sequence = false;
    for (const auto& piece : *single) {
      LR_CHECK(piece.is_object() && piece.size() == 1, Corruption, what, ": template piece ", piece.dump(),
               " must be {\"Sequence\": ...} or {\"SpecialToken\": ...}");
      const std::string kind = piece.begin().key();
      const Json& body = piece.begin().value();
      if (kind == "Sequence") {
        LR_CHECK(!seen_sequence, Unsupported, what,
                 ": a single template with two sequences is not supported");
        seen_sequence = true;
      } else if (kind == "SpecialToken") {
        const auto name = json_get<std::string>(body, "id", what);
        LR_CHECK(specials != spec.end() && specials->contains(name), Corruption, what, ": template token \"",
                 name, "\" is missing from special_tokens");
        const auto& ids = (*specials)[name]["ids"];
        LR_CHECK(ids.is_array(), Corruption, what, ": special_tokens[\"", name, "\"].ids must be a list");
        for (const auto& id : ids) (seen_sequence ? suffix : prefix).push_back(checked_id(id, what, name));
      } else {
        throw Corruption(str(what, ": unknown template piece \"", kind, "\""));
      }
    }
  } else {
    throw Unsupported(str(what, ": post_processor \"", type,
                          "\" is not supported (TemplateProcessing, RobertaProcessing, BertProcessing, "
                          "ByteLevel, Sequence, or null)"));
  }
  // Applied after the processors before it: they sit inside this one's tokens.
  out.prefix.insert(out.prefix.begin(), prefix.begin(), prefix.end());
  out.suffix.insert(out.suffix.end(), suffix.begin(), suffix.end());
}

// Reads bos_token / eos_token of a tokenizer_config.json beside the tokenizer.
void read_tokenizer_config(const std::filesystem::path& path, const Tokenizer& tokenizer,
                           std::optional<int32_t>& bos, std::optional<int32_t>& eos) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) return;
  Json config;
  try {
    config = read_json_file(path);
  } catch (const Error& e) {
    log::warn("ignoring ", path.string(), ": ", e.what());
    return;
  }
  auto lookup = [&](const char* key) -> std::optional<int32_t> {
    auto it = config.find(key);
    if (it == config.end()) return std::nullopt;
    std::string content;
    if (it->is_string())
      content = it->get<std::string>();
    else if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
      content = (*it)["content"].get<std::string>();
    else
      return std::nullopt;
    return tokenizer.token_to_id(content);
  };
  if (auto id = lookup("bos_token")) bos = id;
  if (auto id = lookup("eos_token")) eos = id;
}

// ---- JSON output ------------------------------------------------------------------------------

// `value` with object keys in `tokenizers`' order: "type" first, then the rest.
OrderedJson ordered(const Json& value) {
  if (value.is_object()) {
    OrderedJson out = OrderedJson::object();
    if (auto it = value.find("type"); it != value.end()) out["type"] = ordered(*it);
    for (const auto& [key, member] : value.items())
      if (key != "type") out[key] = ordered(member);
    return out;
  }
  if (value.is_array()) {
    OrderedJson out = OrderedJson::array();
    for (const auto& member : value) out.push_back(ordered(member));
    return out;
  }
  return OrderedJson(value);
}

// Pretty-prints `value` as a member nested `depth` levels deep.
std::string nested_dump(const OrderedJson& value, int depth) {
  std::string text = value.dump(2);
  const std::string pad(static_cast<std::size_t>(2 * depth), ' ');
  std::string out;
  out.reserve(text.size() + 64);
  for (char c : text) {
    out += c;
    if (c == '\n') out += pad;
  }
  return out;
}

}  // namespace

// ---- Loading ----------------------------------------------------------------------------------

Tokenizer Tokenizer::from_json(const Json& spec, std::string_view what) {
  return build(spec, what, {});
}

Tokenizer Tokenizer::build(const Json& spec, std::string_view what, const std::filesystem::path& config) {
  LR_CHECK(spec.is_object(), Corruption, what, ": a tokenizer.json must hold a JSON object");
  auto impl = std::make_shared<TokenizerImpl>();
  impl->what = std::string(what);

  for (const char* key : {"truncation", "padding"}) {
    auto it = spec.find(key);
    LR_CHECK(it == spec.end() || it->is_null(), Unsupported, what, ": \"", key,
             "\" is not supported (set it to null; lowrank truncates and pads outside the tokenizer)");
  }
  const auto model_it = spec.find("model");
  LR_CHECK(model_it != spec.end(), Corruption, what, ": missing \"model\"");
  impl->model = detail::BpeModel::from_json(*model_it, what);
  impl->normalizer = parse_normalizer(spec.value("normalizer", Json()), what);
  impl->pre_tokenizer = detail::PreTokenizer::from_json(spec.value("pre_tokenizer", Json()), what);
  parse_post_processor(spec.value("post_processor", Json()), what, impl->post_processor);
  impl->decoder = parse_decoder(spec.value("decoder", Json()), what);

  int64_t bound = impl->model->id_bound();
  if (auto added = spec.find("added_tokens"); added != spec.end() && !added->is_null()) {
    LR_CHECK(added->is_array(), Corruption, what, ": \"added_tokens\" must be a list");
    for (const auto& entry : *added) {
      LR_CHECK(entry.is_object(), Corruption, what, ": added token ", entry.dump(), " must be an object");
      AddedToken token;
      token.content = json_get<std::string>(entry, "content", what);
      token.id = checked_id(entry.value("id", Json()), what, str("added token \"", token.content, "\" id"));
      token.special = json_get_or<bool>(entry, "special", false, what);
      token.single_word = json_get_or<bool>(entry, "single_word", false, what);
      token.lstrip = json_get_or<bool>(entry, "lstrip", false, what);
      token.rstrip = json_get_or<bool>(entry, "rstrip", false, what);
      token.normalized = json_get_or<bool>(entry, "normalized", !token.special, what);
      // As `tokenizers`: a token the model already has keeps the model's id.
      if (auto model_id = impl->model->token_to_id(token.content); model_id && *model_id != token.id) {
        log::warn(what, ": added token \"", token.content, "\" has id ", token.id, " but the model gives it ",
                  *model_id, "; using ", *model_id);
        token.id = *model_id;
      }
      if (const std::string* other = impl->model->id_to_token(token.id); other && *other != token.content)
        throw Corruption(str(what, ": added token \"", token.content, "\" has id ", token.id,
                             ", which model.vocab gives to \"", *other, "\""));
      if (const AddedToken* other = impl->added.find_id(token.id); other && other->content != token.content)
        throw Corruption(str(what, ": added tokens \"", other->content, "\" and \"", token.content,
                             "\" share id ", token.id));
      bound = std::max<int64_t>(bound, int64_t{token.id} + 1);
      impl->added.add(std::move(token));
    }
  }
  impl->added.build(impl->normalizer == detail::NormalizerKind::kNfc);
  impl->vocab_size = bound;

  impl->spec = spec;
  impl->spec["model"].erase("vocab");
  impl->spec["model"].erase("merges");

  Tokenizer tokenizer(impl);
  // Well-known names; tokenizer_config.json (when given) overrides them.
  for (const char* name : {"<|begin_of_text|>", "<s>", "<|startoftext|>", "<bos>", "[BOS]"}) {
    const AddedToken* t = impl->added.find_content(name);
    if (t != nullptr && t->special) {
      impl->bos = t->id;
      break;
    }
  }
  for (const char* name : {"<|end_of_text|>", "</s>", "<|endoftext|>", "<eos>", "[EOS]"}) {
    const AddedToken* t = impl->added.find_content(name);
    if (t != nullptr && t->special) {
      impl->eos = t->id;
      break;
    }
  }
  if (!config.empty()) read_tokenizer_config(config, tokenizer, impl->bos, impl->eos);
  return tokenizer;
}

Tokenizer Tokenizer::load(const std::filesystem::path& path) {
  std::error_code ec;
  const std::filesystem::path file =
      std::filesystem::is_directory(path, ec) ? path / "tokenizer.json" : std::filesystem::path(path);
  LR_CHECK(std::filesystem::exists(file, ec), NotFound, "tokenizer file not found: ", file.string());
  return build(read_json_file(file), file.string(), file.parent_path() / "tokenizer_config.json");
}

// ---- Encoding and decoding --------------------------------------------------------------------

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const std::size_t bad = detail::find_invalid_utf8(text);
  LR_CHECK(bad == std::string_view::npos, InvalidArgument, "text to encode is not valid UTF-8 (byte ", bad,
           " of ", text.size(), ")");
  const TokenizerImpl& t = *impl_;
  std::vector<int32_t> ids;
  if (add_special_tokens) ids = t.post_processor.prefix;
  std::vector<std::string> words;
  auto encode_plain = [&](std::string_view piece) {
    words.clear();
    if (t.pre_tokenizer.empty())
      words.emplace_back(piece);
    else
      t.pre_tokenizer.run(piece, words);
    for (const auto& word : words) t.model->encode_word(word, ids);
  };
  // 1. Added tokens matched on the raw text; 2. the normalizer; 3. added tokens matched on the
  // normalized text.
  std::string normalized;
  for (const auto& outer : t.added.split(text, false)) {
    if (outer.id) {
      ids.push_back(*outer.id);
      continue;
    }
    std::string_view piece = text.substr(outer.begin, outer.end - outer.begin);
    if (t.normalizer == detail::NormalizerKind::kNfc) {
      normalized = detail::nfc(piece);
      piece = normalized;
    }
    for (const auto& inner : t.added.split(piece, true)) {
      if (inner.id)
        ids.push_back(*inner.id);
      else
        encode_plain(piece.substr(inner.begin, inner.end - inner.begin));
    }
  }
  if (add_special_tokens)
    ids.insert(ids.end(), t.post_processor.suffix.begin(), t.post_processor.suffix.end());
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  const TokenizerImpl& t = *impl_;
  std::vector<const std::string*> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    const std::string* token = nullptr;
    if (const AddedToken* added = t.added.find_id(id)) token = &added->content;
    if (token == nullptr) token = t.model->id_to_token(id);
    LR_CHECK(token != nullptr, InvalidArgument, "token id ", id, " is not in the vocabulary of ", t.what,
             " (ids are in [0, ", t.vocab_size, "))");
    if (skip_special_tokens && t.added.is_special_content(*token)) continue;
    tokens.push_back(token);
  }
  std::string out;
  if (t.decoder == detail::DecoderKind::kNone) {
    for (std::size_t k = 0; k < tokens.size(); ++k) out += (k ? " " : "") + *tokens[k];
    return out;
  }
  // ByteLevel: characters back to bytes; a token with a character outside the alphabet (an
  // added token such as "<|eot id|>" with a space) contributes its own bytes.
  std::string bytes;
  for (const std::string* token : tokens)
    if (!detail::from_byte_level(*token, bytes)) bytes += *token;
  return detail::utf8_lossy(bytes);
}

int64_t Tokenizer::vocab_size() const {
  return impl_->vocab_size;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const AddedToken* added = impl_->added.find_content(token)) return added->id;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const AddedToken* added = impl_->added.find_id(id)) return added->content;
  const std::string* token = impl_->model->id_to_token(id);
  LR_CHECK(token != nullptr, InvalidArgument, "token id ", id, " is not in the vocabulary of ", impl_->what);
  return *token;
}

bool Tokenizer::is_special(int32_t id) const {
  const AddedToken* added = impl_->added.find_id(id);
  return added != nullptr && added->special;
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->bos;
}
std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->eos;
}

// ---- Saving -----------------------------------------------------------------------------------

std::string Tokenizer::to_json_string() const {
  const TokenizerImpl& t = *impl_;
  std::string out = "{\n";
  auto member = [&](std::string_view key, const std::string& value, bool last = false) {
    out += "  " + Json(std::string(key)).dump() + ": " + value + (last ? "\n" : ",\n");
  };
  member("version", "\"1.0\"");
  member("truncation", "null");
  member("padding", "null");

  std::vector<const AddedToken*> added;
  for (const auto& token : t.added.tokens()) added.push_back(&token);
  std::sort(added.begin(), added.end(), [](const auto* a, const auto* b) { return a->id < b->id; });
  OrderedJson added_json = OrderedJson::array();
  for (const auto* token : added) added_json.push_back(detail::added_token_json(*token));
  member("added_tokens", nested_dump(added_json, 1));
  for (const char* key : {"normalizer", "pre_tokenizer", "post_processor", "decoder"})
    member(key, nested_dump(ordered(t.spec.value(key, Json())), 1));

  // The model: its scalar fields in `tokenizers`' order, then vocab and merges.
  const Json& model = t.spec["model"];
  OrderedJson head = OrderedJson::object();
  head["type"] = "BPE";
  for (const char* key : {"dropout", "unk_token", "continuing_subword_prefix", "end_of_word_suffix",
                          "fuse_unk", "byte_fallback", "ignore_merges"})
    if (model.contains(key)) head[key] = ordered(model[key]);
  for (const auto& [key, value] : model.items())
    if (!head.contains(key)) head[key] = ordered(value);
  std::string model_text = "{\n";
  for (const auto& [key, value] : head.items())
    model_text += "    " + OrderedJson(key).dump() + ": " + nested_dump(value, 2) + ",\n";
  model_text += "    \"vocab\": ";
  t.model->append_vocab_json(model_text, "    ");
  model_text += ",\n    \"merges\": ";
  t.model->append_merges_json(model_text, "    ");
  model_text += "\n  }";
  member("model", model_text, true);
  out += "}\n";
  return out;
}

void Tokenizer::save(const std::filesystem::path& path) const {
  std::error_code ec;
  const std::filesystem::path file =
      std::filesystem::is_directory(path, ec) ? path / "tokenizer.json" : std::filesystem::path(path);
  write_file_atomic(file, to_json_string());
}

}  // namespace lowrank::data
