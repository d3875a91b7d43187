// The fixed chat templates; see chat_template.h.
#include "lowrank/serve/chat_template.h"

#include "lowrank/core/error.h"
#include "lowrank/core/json.h"

namespace lowrank::serve {

std::string_view chat_template_name(ChatTemplate chat_template) {
  switch (chat_template) {
    case ChatTemplate::kPlain:
      return "plain";
    case ChatTemplate::kChatml:
      return "chatml";
    case ChatTemplate::kLlama3:
      return "llama3";
  }
  return "plain";
}

ChatTemplate parse_chat_template(std::string_view name) {
  for (ChatTemplate t : {ChatTemplate::kPlain, ChatTemplate::kChatml, ChatTemplate::kLlama3})
    if (chat_template_name(t) == name) return t;
  throw InvalidArgument(str("chat template \"", name, "\": expected plain, chatml or llama3"));
}

ChatTemplate detect_chat_template(const std::filesystem::path& model_dir) {
  const std::filesystem::path config = model_dir / "tokenizer_config.json";
  if (!std::filesystem::is_regular_file(config)) return ChatTemplate::kPlain;
  const Json json = read_json_file(config);
  const auto it = json.find("chat_template");
  if (it == json.end() || !it->is_string()) return ChatTemplate::kPlain;
  const std::string text = it->get<std::string>();
  if (text.find("<|im_start|>") != std::string::npos) return ChatTemplate::kChatml;
  if (text.find("<|start_header_id|>") != std::string::npos) return ChatTemplate::kLlama3;
  return ChatTemplate::kPlain;
}

std::string apply_chat_template(std::span<const ChatMessage> messages, ChatTemplate chat_template) {
  std::string out;
  switch (chat_template) {
    case ChatTemplate::kPlain:
      for (const ChatMessage& m : messages) out += str(m.role, ": ", m.content, "\n");
      return out + "assistant:";
    case ChatTemplate::kChatml:
      for (const ChatMessage& m : messages)
        out += str("<|im_start|>", m.role, "\n", m.content, "<|im_end|>\n");
      return out + "<|im_start|>assistant\n";
    case ChatTemplate::kLlama3:
      out = "<|begin_of_text|>";
      for (const ChatMessage& m : messages)
        out += str("<|start_header_id|>", m.role, "<|end_header_id|>\n\n", m.content, "<|eot_id|>");
      return out + "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return out;
}

}  // namespace lowrank::serve
