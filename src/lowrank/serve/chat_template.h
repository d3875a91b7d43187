// Chat templates: how the messages of a /v1/chat/completions request become one prompt. Jinja
// templates (the model's tokenizer_config.json chat_template) are not run; three fixed templates
// cover the common models, and the model's own is recognised by its markers (docs/serving.md).
#pragma once

#include <filesystem>
#include <span>
#include <string>
#include <string_view>

namespace lowrank::serve {

// How chat messages become one prompt. kPlain is the documented default ("<role>: <content>\n" per
// message, then "assistant:"); kChatml (Qwen2, ...) and kLlama3 are the two common templates,
// chosen when the model's tokenizer_config.json ships one of them.
enum class ChatTemplate { kPlain, kChatml, kLlama3 };
// "plain", "chatml", "llama3".
std::string_view chat_template_name(ChatTemplate chat_template);
// Parses a name; "auto" is not one (see detect_chat_template). Throws InvalidArgument.
ChatTemplate parse_chat_template(std::string_view name);
// kChatml / kLlama3 when `model_dir`/tokenizer_config.json's chat_template uses their markers,
// else kPlain.
ChatTemplate detect_chat_template(const std::filesystem::path& model_dir);

struct ChatMessage {
  std::string role;  // system, user or assistant ("developer" reads as system)
  std::string content;
};
// The prompt text of `messages`, ending where the assistant's reply begins.
std::string apply_chat_template(std::span<const ChatMessage> messages, ChatTemplate chat_template);

}  // namespace lowrank::serve
