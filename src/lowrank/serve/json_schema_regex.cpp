// JSON schema → regex after outlines-core's parsing.rs; see json_schema_regex.h for the rules.
#include "lowrank/serve/json_schema_regex.h"

#include <algorithm>
#include <array>
#include <cstdint>
#include <optional>

#include "lowrank/serve/regex_automaton.h"

namespace lowrank::serve {
namespace {

constexpr std::string_view kStringInner = R"(([^"\\\x00-\x1F\x7F-\x9F]|\\["\\/bfnrt]))";
constexpr std::string_view kInteger = R"((-)?(0|[1-9][0-9]*))";
constexpr std::string_view kNumber = R"(((-)?(0|[1-9][0-9]*))(\.[0-9]+)?([eE][+-][0-9]+)?)";
constexpr std::string_view kBoolean = "(true|false)";
constexpr std::string_view kNull = "null";

// Keywords that only annotate, or that the rules read (json_schema_regex.h); any other keyword
// would constrain the value in a way the regex does not, and is refused.
constexpr std::array<std::string_view, 28> kKnownKeywords = {
    "$schema",     "$id",         "$comment",  "title",
    "description", "default",     "examples",  "$defs",
    "definitions", "readOnly",    "writeOnly", "deprecated",
    "type",        "properties",  "required",  "additionalProperties",
    "items",       "prefixItems", "minItems",  "maxItems",
    "minLength",   "maxLength",   "pattern",   "enum",
    "const",       "anyOf",       "oneOf",     "$ref"};

class SchemaCompiler {
 public:
  SchemaCompiler(const Json& root, std::string_view where, std::string_view ws)
      : root_(root), where_(where), ws_(ws) {}

  std::string compile(const Json& schema, const std::string& path) {
    if (!schema.is_object()) fail(path, str("a schema must be an object, got ", schema.type_name()));
    for (const auto& [key, value] : schema.items())
      if (std::find(kKnownKeywords.begin(), kKnownKeywords.end(), key) == kKnownKeywords.end() &&
          key != "depth")
        fail(path, str("unsupported keyword '", key, "'"));
    if (schema.empty()) return any_value(path, 2);
    if (schema.contains("properties")) return properties(schema, path);
    if (schema.contains("anyOf")) return alternatives(schema, "anyOf", path);
    if (schema.contains("oneOf")) return alternatives(schema, "oneOf", path);
    if (schema.contains("prefixItems")) return prefix_items(schema, path);
    if (schema.contains("enum")) {
      const Json& values = schema["enum"];
      if (!values.is_array() || values.empty()) fail(path + "/enum", "'enum' must be a non-empty array");
      std::string out = "(";
      for (size_t i = 0; i < values.size(); ++i) out += (i ? "|" : "") + constant(values[i]);
      return out + ")";
    }
    if (schema.contains("const")) return constant(schema["const"]);
    if (schema.contains("$ref")) return reference(schema, path);
    if (schema.contains("type")) return typed(schema, path);
    fail(path, "a schema needs one of type, properties, enum, const, anyOf, oneOf, prefixItems, $ref");
  }

  // Set while compiling a schema that ran past the $ref limit (an optional property drops it).
  struct RefLimit {};

 private:
  [[noreturn]] void fail(const std::string& path, const std::string& what) const {
    throw RegexError(str(where_, path.empty() ? "" : " at ", path, ": ", what));
  }

  std::string any_value(const std::string& path, int64_t depth) {
    // outlines' empty schema: each type in turn, containers of the given depth.
    std::string out;
    for (std::string_view t : {"boolean", "null", "number", "integer", "string", "array", "object"}) {
      Json s = {{"type", t}};
      if (t == "array" || t == "object") s["depth"] = depth;
      out += (out.empty() ? "(" : "|(") + compile(s, path) + ")";
    }
    return out;
  }

  // The values outlines allows where no schema is given (object values, array items).
  std::string untyped_value(const Json& schema, const std::string& path, bool with_integer) {
    std::vector<Json> types = {
        {{"type", "string"}}, {{"type", "number"}}, {{"type", "boolean"}}, {{"type", "null"}}};
    if (with_integer) types.insert(types.begin() + 2, Json{{"type", "integer"}});
    const int64_t depth = json_get_or<int64_t>(schema, "depth", 2, "depth");
    if (depth > 0) {
      types.push_back({{"type", "object"}, {"depth", depth - 1}});
      types.push_back({{"type", "array"}, {"depth", depth - 1}});
    }
    std::string out = "(";
    for (size_t i = 0; i < types.size(); ++i) out += (i ? "|" : "") + compile(types[i], path);
    return out + ")";
  }

  std::string properties(const Json& schema, const std::string& path) {
    const Json& props = schema["properties"];
    if (!props.is_object()) fail(path + "/properties", "'properties' must be an object");
    std::vector<std::string> required;
    if (schema.contains("required")) {
      if (!schema["required"].is_array()) fail(path + "/required", "'required' must be an array of names");
      for (const Json& r : schema["required"]) {
        if (!r.is_string()) fail(path + "/required", "'required' must be an array of names");
        if (!props.contains(r.get<std::string>()))
          fail(path + "/required",
               str("required property '", r.get<std::string>(), "' is not in 'properties'"));
        required.push_back(r.get<std::string>());
      }
    }
    // Each property's `ws "name" ws : ws value`; an optional one past the $ref limit is left out.
    std::vector<std::pair<std::string, bool>> parts;  // sub-regex, required
    for (const auto& [name, sub] : props.items()) {
      const bool is_required = std::find(required.begin(), required.end(), name) != required.end();
      std::string value;
      try {
        value = compile(sub, path + "/properties/" + name);
      } catch (const RefLimit&) {
        if (is_required) fail(path + "/properties/" + name, str("$ref nested deeper than ", kMaxRefDepth));
        continue;
      }
      parts.emplace_back(
          str(ws_, "\"", regex_escape(Json(name).dump().substr(1, Json(name).dump().size() - 2)), "\"", ws_,
              ":", ws_, value),
          is_required);
    }
    std::string out = R"(\{)";
    ptrdiff_t last_required = -1;
    for (size_t i = 0; i < parts.size(); ++i)
      if (parts[i].second) last_required = static_cast<ptrdiff_t>(i);
    if (last_required >= 0) {
      for (size_t i = 0; i < parts.size(); ++i) {
        std::string sub = parts[i].first;
        if (static_cast<ptrdiff_t>(i) < last_required)
          sub += str(ws_, ",");
        else if (static_cast<ptrdiff_t>(i) > last_required)
          sub = str(ws_, ",", sub);
        out += parts[i].second ? sub : "(" + sub + ")?";
      }
    } else {
      std::vector<std::string> alternatives;
      for (size_t i = 0; i < parts.size(); ++i) {
        std::string pattern;
        for (size_t k = 0; k < i; ++k) pattern += "(" + parts[k].first + str(ws_, ",)?");
        alternatives.push_back(pattern + parts[i].first);
      }
      std::string joined;
      for (size_t i = 0; i < alternatives.size(); ++i) joined += (i ? "|" : "") + alternatives[i];
      if (!alternatives.empty()) out += "(" + joined + ")?";
    }
    return out + str(ws_, R"(\})");
  }

  std::string alternatives(const Json& schema, const char* key, const std::string& path) {
    const Json& list = schema[key];
    if (!list.is_array() || list.empty())
      fail(path + "/" + key, str("'", key, "' must be a non-empty array"));
    std::string out = "(";
    for (size_t i = 0; i < list.size(); ++i)
      out += (i ? "|" : "") + str("(?:", compile(list[i], str(path, "/", key, "/", i)), ")");
    return out + ")";
  }

  std::string prefix_items(const Json& schema, const std::string& path) {
    const Json& items = schema["prefixItems"];
    if (!items.is_array()) fail(path + "/prefixItems", "'prefixItems' must be an array");
    std::string inner;
    for (size_t i = 0; i < items.size(); ++i)
      inner += (i ? str(ws_, ",", ws_) : "") + compile(items[i], str(path, "/prefixItems/", i));
    return str(R"(\[)", ws_, inner, ws_, R"(\])");
  }

  std::string constant(const Json& value) {
    if (value.is_array()) {
      std::string inner;
      for (size_t i = 0; i < value.size(); ++i) inner += (i ? str(ws_, ",", ws_) : "") + constant(value[i]);
      return str(R"(\[)", ws_, inner, ws_, R"(\])");
    }
    if (value.is_object()) {
      std::string inner;
      bool first = true;
      for (const auto& [key, v] : value.items()) {
        inner += (first ? "" : str(ws_, ",", ws_)) + regex_escape(Json(key).dump()) + str(ws_, ":", ws_) +
                 constant(v);
        first = false;
      }
      return str(R"(\{)", ws_, inner, ws_, R"(\})");
    }
    return regex_escape(value.dump());
  }

  std::string reference(const Json& schema, const std::string& path) {
    const Json& ref = schema["$ref"];
    if (!ref.is_string()) fail(path + "/$ref", "'$ref' must be a string");
    const std::string target = ref.get<std::string>();
    if (target.empty() || target[0] != '#')
      fail(path + "/$ref", str("only local references (\"#/...\") are supported, got \"", target, "\""));
    if (depth_ >= kMaxRefDepth) throw RefLimit{};
    const Json* node = &root_;
    try {
      node = &root_.at(Json::json_pointer(target.substr(1)));
    } catch (const std::exception&) {
      fail(path + "/$ref", str("reference \"", target, "\" names nothing in the schema"));
    }
    ++depth_;
    std::string out = compile(*node, target.substr(1));
    --depth_;
    return out;
  }

  std::string typed(const Json& schema, const std::string& path) {
    const Json& type = schema["type"];
    if (type.is_string()) return of_type(type.get<std::string>(), schema, path);
    if (!type.is_array() || type.empty())
      fail(path + "/type", "'type' must be a string or a non-empty array");
    std::string out = "(";
    for (size_t i = 0; i < type.size(); ++i) {
      if (!type[i].is_string()) fail(path + "/type", "'type' must be a string or an array of strings");
      out += (i ? "|" : "") + str("(?:", of_type(type[i].get<std::string>(), schema, path), ")");
    }
    return out + ")";
  }

  std::optional<int64_t> count(const Json& schema, const char* key, const std::string& path) {
    if (!schema.contains(key)) return std::nullopt;
    const Json& v = schema[key];
    if (!v.is_number_integer() || v.get<int64_t>() < 0)
      fail(path + "/" + key, str("'", key, "' must be a non-negative integer"));
    return v.get<int64_t>();
  }

  std::string of_type(const std::string& type, const Json& schema, const std::string& path) {
    if (type == "string") return string_type(schema, path);
    if (type == "integer") return std::string(kInteger);
    if (type == "number") return std::string(kNumber);
    if (type == "boolean") return std::string(kBoolean);
    if (type == "null") return std::string(kNull);
    if (type == "array") return array_type(schema, path);
    if (type == "object") return object_type(schema, path);
    fail(path + "/type", str("unsupported type '", type, "'"));
  }

  std::string string_type(const Json& schema, const std::string& path) {
    const auto min = count(schema, "minLength", path);
    const auto max = count(schema, "maxLength", path);
    if (min || max) {
      if (schema.contains("pattern"))
        fail(path + "/pattern", "'pattern' together with minLength/maxLength is not supported");
      if (min && max && *min > *max) fail(path + "/maxLength", "'maxLength' is below 'minLength'");
      return str("\"", kStringInner, "{", min.value_or(0), ",", max ? std::to_string(*max) : "", "}\"");
    }
    if (schema.contains("pattern")) {
      if (!schema["pattern"].is_string()) fail(path + "/pattern", "'pattern' must be a string");
      std::string p = schema["pattern"].get<std::string>();
      if (p.size() >= 2 && p.front() == '^' && p.back() == '$') p = p.substr(1, p.size() - 2);
      return str("(\"", p, "\")");
    }
    return str("\"", kStringInner, "*\"");
  }

  // Repetitions of the elements after the first: {min−1, max−1} (outlines' get_num_items_pattern);
  // none when max is 0 (only the empty container).
  static std::optional<std::string> repeats(std::optional<int64_t> min, std::optional<int64_t> max) {
    const int64_t lo = std::max<int64_t>(min.value_or(0) - 1, 0);
    if (!max) return str("{", lo, ",}");
    if (*max < 1) return std::nullopt;
    return str("{", lo, ",", *max - 1, "}");
  }

  std::string array_type(const Json& schema, const std::string& path) {
    const auto min = count(schema, "minItems", path);
    const auto max = count(schema, "maxItems", path);
    if (min && max && *min > *max) fail(path + "/maxItems", "'maxItems' is below 'minItems'");
    const auto rep = repeats(min, max);
    if (!rep) return str(R"(\[)", ws_, R"(\])");
    const char* allow_empty = min.value_or(0) == 0 ? "?" : "";
    std::string item;
    if (schema.contains("items")) {
      if (!schema["items"].is_object()) fail(path + "/items", "'items' must be a schema object");
      item = compile(schema["items"], path + "/items");
    } else {
      item = untyped_value(schema, path, true);
    }
    return str(R"(\[)", ws_, "((", item, ")(,", ws_, "(", item, "))", *rep, ")", allow_empty, ws_, R"(\])");
  }

  std::string object_type(const Json& schema, const std::string& path) {
    std::string value;
    const Json* extra = schema.contains("additionalProperties") ? &schema["additionalProperties"] : nullptr;
    if (extra && extra->is_boolean() && !extra->get<bool>()) return str(R"(\{)", ws_, R"(\})");
    if (!extra || extra->is_boolean())
      value = untyped_value(schema, path, false);
    else
      value = compile(*extra, path + "/additionalProperties");
    const std::string key_value = str("\"", kStringInner, "*\"", ws_, ":", ws_, value);
    return str(R"(\{)", ws_, "(", key_value, "(", ws_, ",", ws_, key_value, "){0,})?", ws_, R"(\})");
  }

  const Json& root_;
  std::string_view where_;
  std::string ws_;
  int depth_ = 0;
};

}  // namespace

std::string json_schema_regex(const Json& schema, std::string_view where, std::string_view whitespace) {
  SchemaCompiler compiler(schema, where, whitespace);
  try {
    return compiler.compile(schema, "");
  } catch (const SchemaCompiler::RefLimit&) {
    throw RegexError(str(where, ": $ref nested deeper than ", kMaxRefDepth));
  }
}

std::string json_object_regex(std::string_view whitespace) {
  return json_schema_regex(Json{{"type", "object"}}, "response_format", whitespace);
}

}  // namespace lowrank::serve
