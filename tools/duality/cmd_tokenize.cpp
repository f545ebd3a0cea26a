// `duality tokenize`: text -> token ids with the model's tokenizer.json (and, with --decode,
// ids -> text). Plain output lists the ids, then each id with the text it stands for; --json
// prints one JSON array; --lines / --jsonl tokenize every input line on its own and print one
// JSON array per line (the form tests/tokenizer/compare_hf.py reads).
#include <algorithm>
#include <cctype>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/read_file.h"
#include "duality/tokenizer.h"
#include "tools/duality/commands.h"

namespace duality::cli {
namespace {

struct TokenizeOptions {
    std::string model, text, file;
    bool json = false, lines = false, jsonl = false, decode = false, no_special = false;
};

int fail(const std::string& message, int code = 1) {
    std::fprintf(stderr, "duality tokenize: %s\n", message.c_str());
    return code;
}

bool read_input(const TokenizeOptions& o, std::string* out, std::string* error) {
    if (o.file.empty()) {
        *out = o.text;
        return true;
    }
    if (o.file == "-") {
        std::ostringstream ss;
        ss << std::cin.rdbuf();
        *out = ss.str();
        return true;
    }
    auto text = read_file(o.file);
    if (!text) {
        *error = "--file " + text.status().message();
        return false;
    }
    *out = std::move(*text);
    return true;
}

// The lines of `text` without their '\n'; a final '\n' does not start another line.
std::vector<std::string_view> split_lines(std::string_view text) {
    std::vector<std::string_view> lines;
    size_t pos = 0;
    while (pos < text.size()) {
        const size_t nl = text.find('\n', pos);
        if (nl == std::string_view::npos) {
            lines.push_back(text.substr(pos));
            break;
        }
        lines.push_back(text.substr(pos, nl - pos));
        pos = nl + 1;
    }
    return lines;
}

void append_ids_json(const std::vector<int32_t>& ids, std::string* out) {
    out->push_back('[');
    for (size_t i = 0; i < ids.size(); ++i) {
        if (i) out->push_back(',');
        *out += std::to_string(ids[i]);
    }
    out->push_back(']');
}

// Bytes shown in double quotes: printable text as is, the rest as C escapes (\n, \xNN).
std::string escape(std::string_view bytes) {
    std::string out = "\"";
    for (const char ch : bytes) {
        const auto c = static_cast<unsigned char>(ch);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += ch;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c < 0x20 || c == 0x7F) {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02X", c);
            out += buf;
        } else {
            out += ch;
        }
    }
    return out + "\"";
}

// Ids written as a JSON array, or separated by commas and/or whitespace.
bool parse_ids(std::string_view text, std::vector<int32_t>* ids, std::string* error) {
    ids->clear();
    size_t i = 0;
    const auto skip = [&] {
        while (i < text.size() && (std::isspace(static_cast<unsigned char>(text[i])) ||
                                   text[i] == ',' || text[i] == '[' || text[i] == ']'))
            ++i;
    };
    skip();
    while (i < text.size()) {
        size_t j = i;
        while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
        const std::string item(text.substr(i, j - i));
        if (item.empty() || item.size() > 10 || std::stoll(item) > INT32_MAX) {
            const size_t end = std::min(text.size(), i + 20);
            *error = "expected token ids (e.g. [1,2,3] or 1 2 3), found \"" +
                     std::string(text.substr(i, end - i)) + "\"";
            return false;
        }
        ids->push_back(static_cast<int32_t>(std::stoll(item)));
        i = j;
        skip();
    }
    return true;
}

// The first of `ids` that the tokenizer has no token for ("" when all are known): the library
// skips those, as Hugging Face does, but a user asking to decode one has made a mistake.
std::string unknown_id(const Tokenizer& tok, const std::vector<int32_t>& ids) {
    for (int32_t id : ids)
        if (tok.id_to_token(id).empty())
            return "token id " + std::to_string(id) + " is not in the vocabulary (" +
                   std::to_string(tok.vocab_size()) + " ids)";
    return "";
}

int run_decode(const Tokenizer& tok, const TokenizeOptions& o, const std::string& input) {
    std::vector<int32_t> ids;
    std::string error;
    if (!o.lines && !o.jsonl) {
        if (!parse_ids(input, &ids, &error)) return fail(error);
        if (const std::string e = unknown_id(tok, ids); !e.empty()) return fail(e);
        const std::string text = tok.decode(ids);
        std::fwrite(text.data(), 1, text.size(), stdout);
        return 0;
    }
    std::string out;
    size_t line_no = 0;
    for (const std::string_view line : split_lines(input)) {
        ++line_no;
        if (!parse_ids(line, &ids, &error))
            return fail("line " + std::to_string(line_no) + ": " + error);
        if (const std::string e = unknown_id(tok, ids); !e.empty())
            return fail("line " + std::to_string(line_no) + ": " + e);
        out += nlohmann::json(tok.decode(ids))
                   .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        out += '\n';
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

// A --jsonl line: a JSON string, or an object with a string "text".
bool jsonl_text(std::string_view line, std::string* text) {
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    const nlohmann::json* v = &j;
    if (j.is_object()) {
        auto it = j.find("text");
        if (it == j.end()) return false;
        v = &*it;
    }
    if (!v->is_string()) return false;
    *text = v->get<std::string>();
    return true;
}

int run_encode(const Tokenizer& tok, const TokenizeOptions& o, const std::string& input) {
    EncodeOptions eo;
    eo.parse_special = !o.no_special;
    std::string out;
    if (o.lines || o.jsonl) {
        std::string text;
        size_t line_no = 0;
        for (const std::string_view line : split_lines(input)) {
            ++line_no;
            if (o.jsonl && !jsonl_text(line, &text)) {
                return fail("line " + std::to_string(line_no) +
                            ": --jsonl expects a JSON string or an object with a string \"text\"");
            }
            append_ids_json(tok.encode(o.jsonl ? std::string_view(text) : line, eo), &out);
            out += '\n';
        }
    } else {
        const std::vector<int32_t> ids = tok.encode(input, eo);
        if (o.json) {
            append_ids_json(ids, &out);
            out += '\n';
        } else {
            for (size_t i = 0; i < ids.size(); ++i) out += (i ? " " : "") + std::to_string(ids[i]);
            out += '\n';
            for (const int32_t id : ids) {
                char buf[16];
                std::snprintf(buf, sizeof(buf), "%7d  ", id);
                out += buf;
                out += escape(tok.token_bytes(id));
                out += '\n';
            }
        }
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
}

}  // namespace

Action add_tokenize_command(CLI::App& app) {
    auto opt = std::make_shared<TokenizeOptions>();
    CLI::App* cmd = app.add_subcommand("tokenize", "Turn text into token ids (or back: --decode)");
    cmd->add_option(
        "--model", opt->model,
        "Model folder with tokenizer.json, or the file itself (default: the bundled model)");
    CLI::Option* text = cmd->add_option("text", opt->text, "The text to tokenize");
    CLI::Option* file =
        cmd->add_option("--file", opt->file, "Read the text from a file (- = stdin)");
    text->excludes(file);
    cmd->add_flag("--json", opt->json, "Print one JSON array of ids");
    CLI::Option* lines = cmd->add_flag("--lines", opt->lines,
                                       "Tokenize each line separately; one JSON array per line");
    CLI::Option* jsonl = cmd->add_flag(
        "--jsonl", opt->jsonl,
        "Like --lines, but each line is a JSON string or an object with a \"text\" string");
    lines->excludes(jsonl);
    cmd->add_flag("--decode", opt->decode,
                  "Input is ids (JSON array or separated by commas/spaces); print the text. "
                  "With --lines/--jsonl: one array per line in, one JSON string per line out");
    cmd->add_flag("--no-special", opt->no_special,
                  "Do not recognize special tokens such as <|endoftext|> in the text");
    return [opt, text, file]() {
        if (opt->model.empty()) opt->model = default_model_dir();
        if (text->count() == 0 && file->count() == 0)
            return fail("give the text as an argument or with --file", 2);
        std::string input, error;
        if (!read_input(*opt, &input, &error)) return fail(error);
        auto tok = Tokenizer::load(opt->model);
        if (!tok) return fail("--model: " + tok.status().message());
        return opt->decode ? run_decode(*tok, *opt, input) : run_encode(*tok, *opt, input);
    };
}

}  // namespace duality::cli
