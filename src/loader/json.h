// JSON parsing for files written by Python: accepts the non-standard literals NaN, Infinity and
// -Infinity (json.dumps writes them) and transformers' {"__float__": "Infinity"} encoding.
#pragma once

#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "duality/status.h"

namespace duality {

// Parses `text`; `source` (a file name) prefixes every error. Duplicate keys in an object are
// an error, so a file cannot say two things about one field.
Result<nlohmann::json> parse_json(const std::string& text, const std::string& source);

// Reads a file and parses it as above.
Result<nlohmann::json> read_json_file(const std::string& path);

// Reads a number that may be written as a plain number, a Python literal handled by parse_json,
// or {"__float__": "Infinity" | "-Infinity" | "NaN"}. nullopt when `v` is none of those.
std::optional<double> json_number(const nlohmann::json& v);

// `v` for an error message, never long and never recursive: a number, boolean or null as JSON,
// a string as JSON cut to 64 characters, an array or object by its kind and size ("an array of 3
// elements"). (dump() of a value nested 100,000 deep overflows the stack.)
std::string json_brief(const nlohmann::json& v);

}  // namespace duality
