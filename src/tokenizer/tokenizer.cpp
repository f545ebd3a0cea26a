// Loading a Hugging Face tokenizer.json into Tokenizer::Impl, and the Tokenizer accessors.
#include <algorithm>
#include <system_error>

#include <nlohmann/json.hpp>

#include "core/read_file.h"
#include "duality/tokenizer.h"
#include "loader/json.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/tokenizer_impl.h"

namespace duality {
namespace {

using json = nlohmann::json;
using Impl = Tokenizer::Impl;

constexpr int64_t kMaxId = int64_t{1} << 26;  // far above any real vocabulary

// Errors read "<file>: <field>: <what>".
struct Where {
    const std::string& source;
    Status corrupt_at(const std::string& field, const std::string& what) const {
        return corrupt(source + ": " + field + ": " + what);
    }
    Status unsupported_at(const std::string& field, const std::string& what) const {
        return unsupported(source + ": " + field + ": " + what);
    }
};

std::string json_quote(const std::string& s) {
    return json(s).dump();
}

Result<std::string> type_of(const json& j, const std::string& field, const Where& w) {
    if (!j.is_object()) return w.corrupt_at(field, "expected an object, got " + json_brief(j));
    auto it = j.find("type");
    if (it == j.end() || !it->is_string()) return w.corrupt_at(field, "missing string \"type\"");
    return it->get<std::string>();
}

// An optional boolean member; `fallback` when absent or null.
Result<bool> get_bool(const json& obj, const char* key, bool fallback, const std::string& field,
                      const Where& w) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_boolean()) return w.corrupt_at(field + "." + key, "expected true or false");
    return it->get<bool>();
}

Result<int32_t> get_id(const json& v, const std::string& field, const Where& w) {
    if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= kMaxId)
        return w.corrupt_at(field,
                            "expected a token id (an integer in [0, 2^26)), got " + json_brief(v));
    return static_cast<int32_t>(v.get<int64_t>());
}

Status parse_normalizer(const json& root, Impl* t, const Where& w) {
    auto it = root.find("normalizer");
    if (it == root.end() || it->is_null()) return Status::ok();
    DUALITY_ASSIGN_OR_RETURN(std::string type, type_of(*it, "normalizer", w));
    if (type != "NFC")
        return w.unsupported_at("normalizer",
                                "type " + json_quote(type) + " is not supported (NFC or null)");
    t->nfc = true;
    return Status::ok();
}

Status parse_pre_tokenizer(const json& root, Impl* t, const Where& w) {
    auto it = root.find("pre_tokenizer");
    if (it == root.end() || it->is_null())
        return w.unsupported_at("pre_tokenizer", "null is not supported (only ByteLevel)");
    DUALITY_ASSIGN_OR_RETURN(std::string type, type_of(*it, "pre_tokenizer", w));
    if (type != "ByteLevel")
        return w.unsupported_at("pre_tokenizer",
                                "type " + json_quote(type) + " is not supported (only ByteLevel)");
    DUALITY_ASSIGN_OR_RETURN(t->add_prefix_space,
                             get_bool(*it, "add_prefix_space", true, "pre_tokenizer", w));
    DUALITY_ASSIGN_OR_RETURN(t->use_regex, get_bool(*it, "use_regex", true, "pre_tokenizer", w));
    return Status::ok();
}

Status parse_decoder_and_post_processor(const json& root, const Where& w) {
    auto dec = root.find("decoder");
    if (dec == root.end() || dec->is_null())
        return w.unsupported_at("decoder", "null is not supported (only ByteLevel)");
    DUALITY_ASSIGN_OR_RETURN(std::string type, type_of(*dec, "decoder", w));
    if (type != "ByteLevel")
        return w.unsupported_at("decoder",
                                "type " + json_quote(type) + " is not supported (only ByteLevel)");
    auto post = root.find("post_processor");
    if (post != root.end() && !post->is_null()) {
        DUALITY_ASSIGN_OR_RETURN(std::string ptype, type_of(*post, "post_processor", w));
        // ByteLevel only adjusts offsets; anything else would add tokens around the text.
        if (ptype != "ByteLevel")
            return w.unsupported_at("post_processor", "type " + json_quote(ptype) +
                                                          " is not supported (ByteLevel or null)");
    }
    return Status::ok();
}

Status parse_vocab(const json& model, Impl* t, const Where& w) {
    auto it = model.find("vocab");
    if (it == model.end() || !it->is_object())
        return w.corrupt_at("model.vocab", "missing, or not an object of token -> id");
    t->vocab.reserve(it->size());
    std::vector<bool> seen;
    for (const auto& [token, id_json] : it->items()) {
        if (!id_json.is_number_unsigned() || id_json.get<uint64_t>() >= kMaxId)
            DUALITY_RETURN_IF_ERROR(
                get_id(id_json, "model.vocab[" + json_quote(token) + "]", w).status());
        const auto id = static_cast<int32_t>(id_json.get<uint64_t>());
        if (id >= static_cast<int32_t>(seen.size())) {
            seen.resize(id + 1);
            t->spelling.resize(id + 1);
        }
        if (seen[id]) {
            return w.corrupt_at("model.vocab", "tokens " + json_quote(t->spelling[id]) + " and " +
                                                   json_quote(token) + " share id " +
                                                   std::to_string(id));
        }
        seen[id] = true;
        t->vocab.emplace(token, id);
        t->spelling[id] = token;
    }
    return Status::ok();
}

// One merge: "left right" (the classic format) or ["left", "right"] (tokenizers >= 0.20).
Status parse_merges(const json& model, Impl* t, const Where& w) {
    auto it = model.find("merges");
    if (it == model.end() || !it->is_array())
        return w.corrupt_at("model.merges", "missing, or not an array");
    int32_t rank = 0;
    for (size_t i = 0; i < it->size(); ++i) {
        const json& m = (*it)[i];
        const std::string field = "model.merges[" + std::to_string(i) + "]";
        std::string left, right;
        if (m.is_string()) {
            const std::string& line = m.get_ref<const std::string&>();
            if (line.rfind("#version", 0) == 0) continue;
            const size_t space = line.find(' ');
            if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos)
                return w.corrupt_at(
                    field,
                    "expected \"left right\" (two tokens and one space), got " + json_quote(line));
            left = line.substr(0, space);
            right = line.substr(space + 1);
        } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
            left = m[0].get<std::string>();
            right = m[1].get<std::string>();
        } else {
            return w.corrupt_at(
                field, "expected \"left right\" or [\"left\", \"right\"], got " + json_brief(m));
        }
        const auto l = t->vocab.find(left), r = t->vocab.find(right),
                   merged = t->vocab.find(left + right);
        if (l == t->vocab.end())
            return w.corrupt_at(field, json_quote(left) + " is not in model.vocab");
        if (r == t->vocab.end())
            return w.corrupt_at(field, json_quote(right) + " is not in model.vocab");
        if (merged == t->vocab.end())
            return w.corrupt_at(
                field, "the merged token " + json_quote(left + right) + " is not in model.vocab");
        t->bpe.add_merge(l->second, r->second, merged->second, rank++);
    }
    return Status::ok();
}

Status parse_model(const json& root, Impl* t, const Where& w) {
    auto it = root.find("model");
    if (it == root.end() || !it->is_object())
        return w.corrupt_at("model", "missing, or not an object");
    const json& model = *it;
    auto type = model.find("type");
    if (type != model.end() && !(type->is_string() && type->get<std::string>() == "BPE"))
        return w.unsupported_at("model.type", json_brief(*type) + " is not supported (only BPE)");
    auto dropout = model.find("dropout");
    if (dropout != model.end() && !dropout->is_null() &&
        !(dropout->is_number() && dropout->get<double>() == 0.0))
        return w.unsupported_at("model.dropout", "BPE dropout is not supported");
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
        auto f = model.find(key);
        if (f != model.end() && !f->is_null() && !(f->is_string() && f->get<std::string>().empty()))
            return w.unsupported_at(std::string("model.") + key,
                                    json_brief(*f) + " is not supported");
    }
    DUALITY_ASSIGN_OR_RETURN(bool byte_fallback,
                             get_bool(model, "byte_fallback", false, "model", w));
    if (byte_fallback) return w.unsupported_at("model.byte_fallback", "true is not supported");
    DUALITY_ASSIGN_OR_RETURN(t->fuse_unk, get_bool(model, "fuse_unk", false, "model", w));
    DUALITY_ASSIGN_OR_RETURN(t->ignore_merges, get_bool(model, "ignore_merges", false, "model", w));

    DUALITY_RETURN_IF_ERROR(parse_vocab(model, t, w));
    DUALITY_RETURN_IF_ERROR(parse_merges(model, t, w));

    auto unk = model.find("unk_token");
    if (unk != model.end() && !unk->is_null()) {
        if (!unk->is_string()) return w.corrupt_at("model.unk_token", "expected a string or null");
        auto u = t->vocab.find(unk->get<std::string>());
        if (u == t->vocab.end())
            return w.corrupt_at("model.unk_token", json_brief(*unk) + " is not in model.vocab");
        t->unk_id = u->second;
    }
    for (int b = 0; b < 256; ++b) {
        auto v = t->vocab.find(byte_level::spell_byte(static_cast<uint8_t>(b)));
        t->byte_id[b] = v == t->vocab.end() ? -1 : v->second;
    }
    return Status::ok();
}

Status parse_added_tokens(const json& root, Impl* t, const Where& w) {
    auto it = root.find("added_tokens");
    if (it == root.end() || it->is_null()) return Status::ok();
    if (!it->is_array()) return w.corrupt_at("added_tokens", "expected an array");
    for (size_t i = 0; i < it->size(); ++i) {
        const json& e = (*it)[i];
        const std::string field = "added_tokens[" + std::to_string(i) + "]";
        if (!e.is_object()) return w.corrupt_at(field, "expected an object");
        auto id = e.find("id");
        auto content = e.find("content");
        if (id == e.end()) return w.corrupt_at(field, "missing \"id\"");
        if (content == e.end() || !content->is_string())
            return w.corrupt_at(field, "missing string \"content\"");
        AddedToken tok;
        DUALITY_ASSIGN_OR_RETURN(tok.id, get_id(*id, field + ".id", w));
        tok.content = content->get<std::string>();
        DUALITY_ASSIGN_OR_RETURN(tok.special, get_bool(e, "special", false, field, w));
        DUALITY_ASSIGN_OR_RETURN(tok.single_word, get_bool(e, "single_word", false, field, w));
        DUALITY_ASSIGN_OR_RETURN(tok.lstrip, get_bool(e, "lstrip", false, field, w));
        DUALITY_ASSIGN_OR_RETURN(tok.rstrip, get_bool(e, "rstrip", false, field, w));
        // Hugging Face's default: special tokens match the raw text, others the normalized text.
        DUALITY_ASSIGN_OR_RETURN(tok.normalized, get_bool(e, "normalized", !tok.special, field, w));
        if (tok.content.empty()) continue;  // Hugging Face ignores these too
        t->added.push_back(std::move(tok));
    }
    // Special tokens take part in matching before the others, as in Hugging Face.
    for (const bool special : {true, false}) {
        for (const AddedToken& tok : t->added) {
            if (tok.special != special) continue;
            t->added_by_content.emplace(tok.content, tok.id);
            if (!tok.normalized) {
                t->raw_matcher.add(tok.content, tok);
            } else if (t->nfc) {
                std::string pattern;
                nfc_append(tok.content, &pattern);
                t->normalized_matcher.add(pattern, tok);
            } else {
                t->normalized_matcher.add(tok.content, tok);
            }
        }
    }
    return Status::ok();
}

// Sizes the id tables and precomputes every id's decoded bytes.
void build_id_tables(Impl* t) {
    int64_t size = static_cast<int64_t>(t->spelling.size());
    for (const AddedToken& tok : t->added) size = std::max<int64_t>(size, int64_t{tok.id} + 1);
    t->vocab_size = static_cast<int32_t>(size);
    t->spelling.resize(size);
    t->flags.assign(size, 0);
    for (const auto& [token, id] : t->vocab) t->flags[id] |= Impl::kAssigned;
    for (const AddedToken& tok : t->added) {
        t->spelling[tok.id] = tok.content;
        t->flags[tok.id] |= Impl::kAssigned | (tok.special ? Impl::kSpecial : 0);
    }
    t->bytes_offset.assign(size + 1, 0);
    for (int64_t id = 0; id < size; ++id) {
        t->bytes_offset[id] = static_cast<uint32_t>(t->bytes_arena.size());
        // The ByteLevel decoder: characters of the alphabet become their bytes; a token with
        // any other character (e.g. an added token of plain spaces) stands for its own UTF-8.
        if (!byte_level::unspell(t->spelling[id], &t->bytes_arena))
            t->bytes_arena += t->spelling[id];
    }
    t->bytes_offset[size] = static_cast<uint32_t>(t->bytes_arena.size());
    for (const char* name : {"<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>"}) {
        for (const AddedToken& tok : t->added) {
            if (tok.special && tok.content == name && !t->eos) t->eos = tok.id;
        }
    }
}

}  // namespace

Result<Tokenizer> Tokenizer::from_json(std::string_view json_text, const std::string& source) {
    if (json_text.empty()) return corrupt(source + ": file is empty (expected tokenizer.json)");
    DUALITY_ASSIGN_OR_RETURN(json root, parse_json(std::string(json_text), source));
    const Where w{source};
    if (!root.is_object()) return corrupt(source + ": expected a JSON object at the top level");
    auto impl = std::make_shared<Impl>();
    impl->source = source;
    DUALITY_RETURN_IF_ERROR(parse_normalizer(root, impl.get(), w));
    DUALITY_RETURN_IF_ERROR(parse_pre_tokenizer(root, impl.get(), w));
    DUALITY_RETURN_IF_ERROR(parse_decoder_and_post_processor(root, w));
    DUALITY_RETURN_IF_ERROR(parse_model(root, impl.get(), w));
    DUALITY_RETURN_IF_ERROR(parse_added_tokens(root, impl.get(), w));
    build_id_tables(impl.get());
    auto pre = PreTokenizer::create();
    if (!pre) return pre.status().with_context(source);
    impl->pretokenizer = std::move(pre).value();
    return Tokenizer(std::move(impl));
}

Result<Tokenizer> Tokenizer::load(const std::filesystem::path& path) {
    std::error_code ec;
    std::filesystem::path file = path;
    if (std::filesystem::is_directory(path, ec)) file = path / "tokenizer.json";
    auto text = read_file(file);
    if (!text) {
        if (text.status().code() == StatusCode::kNotFound)
            return not_found(file.string() + ": no such file (expected a tokenizer.json file or " +
                             "a model folder that contains one)");
        return text.status();
    }
    return from_json(*text, file.string());
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
    return encode(text, EncodeOptions{});
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& options) const {
    std::vector<int32_t> ids;
    ids.reserve(text.size() / 4 + 4);
    impl_->encode(text, options, &ids);
    return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
    std::string out;
    for (const int32_t id : ids) {
        if (skip_special_tokens && is_special(id)) continue;
        out += impl_->bytes_of(id);
    }
    return out;
}

std::string_view Tokenizer::token_bytes(int32_t id) const {
    return impl_->bytes_of(id);
}

int32_t Tokenizer::vocab_size() const {
    return impl_->vocab_size;
}

Status Tokenizer::check_fits_model(int64_t model_vocab) const {
    if (impl_->vocab_size <= model_vocab) return Status::ok();
    return invalid_argument(
        impl_->source + ": the tokenizer has ids up to " + std::to_string(impl_->vocab_size - 1) +
        " but the model's vocabulary has " + std::to_string(model_vocab) + " rows (ids 0 to " +
        std::to_string(model_vocab - 1) + "): a tokenizer of another model?");
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
    if (auto it = impl_->added_by_content.find(token); it != impl_->added_by_content.end())
        return it->second;
    if (auto it = impl_->vocab.find(token); it != impl_->vocab.end()) return it->second;
    return std::nullopt;
}

std::string Tokenizer::id_to_token(int32_t id) const {
    return impl_->assigned(id) ? impl_->spelling[id] : std::string();
}

bool Tokenizer::is_special(int32_t id) const {
    return impl_->assigned(id) && (impl_->flags[id] & Impl::kSpecial);
}

std::optional<int32_t> Tokenizer::eos_id() const {
    return impl_->eos;
}

const std::vector<AddedToken>& Tokenizer::added_tokens() const {
    return impl_->added;
}

const std::string& Tokenizer::source() const {
    return impl_->source;
}

}  // namespace duality
