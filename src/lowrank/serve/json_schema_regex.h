// JSON schema → regular expression, for structured output (token_constraint.h). The rules are
// outlines' `build_regex_from_schema` (dottxt-ai/outlines-core at a5e0010, src/json_schema/parsing.rs and
// src/json_schema/types.rs; Willard & Louf, 2023, arXiv:2307.09702), the step vLLM's outlines
// backend compiles a `json_schema` response format with:
//   - a schema is dispatched on its first present keyword in outlines' order: {} (any value),
//     properties, anyOf, oneOf, prefixItems, enum, const, $ref, type;
//   - whitespace: outlines' default WHITESPACE = `[ ]?` (at most one space) between tokens, which
//     outlines imposes because free whitespace lets small models loop on newlines
//     (dottxt-ai/outlines#484); a request may give its own (vLLM's guided_whitespace_pattern);
//   - string: "([^"\\\x00-\x1F\x7F-\x9F]|\\["\\/bfnrt])*" (no \u escapes), with minLength /
//     maxLength as a counted repetition of one character, `pattern` (its ^…$ stripped) between
//     the quotes; integer (-)?(0|[1-9][0-9]*); number with an optional fraction and exponent;
//     boolean, null;
//   - object with properties: the properties in order, each `ws "name" ws : ws value`; required
//     ones always present, optional ones as optional groups with the commas placed around the
//     last required one; with no required property, any in-order subset. No other properties
//     are generated (additionalProperties false or absent: the output is valid either way);
//   - object without properties: `{ ws "key" ws : ws value (ws , ws …)* ws }`, the value the
//     additionalProperties schema or, when absent/true, any of string, number, boolean, null and
//     (while depth > 0) object and array of depth − 1; depth starts at 2 (outlines' default);
//   - array: `\[ ws ((item)(, ws (item)){minItems−1,maxItems−1})? ws \]` (the "?" only when
//     minItems is 0), items the `items` schema or any value as for objects;
//   - enum / const: each value as its JSON text (regex-escaped); arrays and objects with the
//     whitespace pattern between elements;
//   - anyOf and oneOf: the alternation (oneOf's exclusivity is not enforced, as in outlines);
//   - type as a list: the alternation of each type;
//   - $ref to "#/$defs/…" (or any local JSON pointer), at most 3 nested references (outlines'
//     max_recursion_depth); an optional property whose schema runs past the limit is left out.
// json_object (OpenAI's JSON mode): the schema {"type": "object"}: any object, containers nested
// at most 3 deep (the object, objects/arrays inside it, and theirs, whose values are scalars).
// Deviations, each making the compiler stricter, never the output wrong:
//   - keywords outlines ignores but whose constraint the regex would not enforce are refused
//     (minimum, maximum, multipleOf, uniqueItems, patternProperties, not, if/then/else, allOf,
//     format, dependencies, ...), with an error naming the keyword and where it is;
//   - a required property missing from `properties`, or one that runs past the $ref limit, is an
//     error (outlines drops it and so generates an object the schema rejects);
//   - `pattern` together with minLength/maxLength is refused (outlines silently drops the pattern);
//   - property names are JSON-escaped before regex escaping (outlines regex-escapes the raw name).
// Property order: the request's JSON parser keeps object keys sorted, so `properties` are
// generated in sorted key order (outlines keeps the document's order).
#pragma once

#include <string>
#include <string_view>

#include "lowrank/core/json.h"

namespace lowrank::serve {

// outlines-core's default whitespace between JSON tokens.
inline constexpr std::string_view kJsonWhitespace = "[ ]?";
// The most nested $ref a schema may follow (outlines-core's max_recursion_depth).
inline constexpr int kMaxRefDepth = 3;

// The regex of the JSON texts `schema` accepts (as above). Throws RegexError (regex_automaton.h)
// whose message starts with `where` (the request field, e.g. "response_format.json_schema.schema")
// and names the unsupported construct and its JSON pointer.
std::string json_schema_regex(const Json& schema, std::string_view where,
                              std::string_view whitespace = kJsonWhitespace);

// The regex of OpenAI's JSON mode (response_format {"type": "json_object"}).
std::string json_object_regex(std::string_view whitespace = kJsonWhitespace);

}  // namespace lowrank::serve
