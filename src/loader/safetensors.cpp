#include "loader/safetensors.h"

#include <algorithm>
#include <cstring>

#include "core/mapped_file.h"
#include "core/tensor.h"
#include "loader/json.h"

namespace duality {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the format's own limit is 100 MB

bool parse_dtype(const std::string& s, DType* out) {
    static const std::pair<const char*, DType> kTable[] = {
        {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
        {"I32", DType::kI32}, {"I64", DType::kI64}, {"U8", DType::kU8},
    };
    for (const auto& [name, dtype] : kTable) {
        if (s == name) {
            *out = dtype;
            return true;
        }
    }
    return false;
}

}  // namespace

Result<std::vector<std::pair<std::string, RawTensor>>> parse_safetensors(
    const uint8_t* data, size_t size, const std::string& source) {
    if (size < 8) {
        return corrupt(source + ": " + std::to_string(size) +
                       " bytes is too short for a safetensors header (need at least 8)");
    }
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | data[i];
    if (header_len > kMaxHeaderBytes) {
        return corrupt(source + ": header length " + std::to_string(header_len) +
                       " exceeds the 100 MB limit (not a safetensors file?)");
    }
    if (header_len > size - 8) {
        return corrupt(source + ": header length " + std::to_string(header_len) +
                       " runs past the end of the file (" + std::to_string(size) + " bytes)");
    }
    const std::string header_text(reinterpret_cast<const char*>(data + 8), header_len);
    DUALITY_ASSIGN_OR_RETURN(nlohmann::json header, parse_json(header_text, source + " header"));
    if (!header.is_object()) return corrupt(source + ": header is not a JSON object");

    const uint8_t* body = data + 8 + header_len;
    const uint64_t body_size = size - 8 - header_len;
    std::vector<std::pair<std::string, RawTensor>> out;
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& [name, entry] : header.items()) {
        if (name == "__metadata__") continue;
        const std::string where = source + ": tensor \"" + name + "\"";
        if (!entry.is_object()) return corrupt(where + ": entry is not an object");
        if (!entry.contains("dtype") || !entry["dtype"].is_string())
            return corrupt(where + ": missing or non-string \"dtype\"");
        if (!entry.contains("shape") || !entry["shape"].is_array())
            return corrupt(where + ": missing or non-array \"shape\"");
        if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
            entry["data_offsets"].size() != 2)
            return corrupt(where + ": \"data_offsets\" must be an array of two integers");

        RawTensor t;
        t.file = source;
        const std::string& dtype = entry["dtype"].get_ref<const std::string&>();
        if (!parse_dtype(dtype, &t.dtype))
            return unsupported(where + ": dtype " + dtype + " is not supported");
        uint64_t numel = 1;
        for (const auto& d : entry["shape"]) {
            if (!d.is_number_unsigned()) return corrupt(where + ": shape entries must be >= 0");
            const uint64_t dim = d.get<uint64_t>();
            if (dim > (1ull << 40) || (dim && numel > (1ull << 50) / dim))
                return corrupt(where + ": shape dimension " + std::to_string(dim) +
                               " makes the tensor too large");
            numel *= dim;
            t.shape.push_back(static_cast<int64_t>(dim));
        }
        const auto& offs = entry["data_offsets"];
        if (!offs[0].is_number_unsigned() || !offs[1].is_number_unsigned())
            return corrupt(where + ": data_offsets must be non-negative integers");
        const uint64_t begin = offs[0].get<uint64_t>(), end = offs[1].get<uint64_t>();
        if (begin > end || end > body_size) {
            return corrupt(where + ": data_offsets [" + std::to_string(begin) + ", " +
                           std::to_string(end) + "] lie outside the " + std::to_string(body_size) +
                           "-byte data section");
        }
        const uint64_t expected = numel * dtype_size(t.dtype);
        if (end - begin != expected) {
            return corrupt(where + ": " + std::to_string(end - begin) + " bytes stored but " +
                           dtype + " " + shape_str(t.shape) + " needs " + std::to_string(expected));
        }
        t.data = body + begin;
        t.nbytes = expected;
        ranges.emplace_back(begin, end);
        out.emplace_back(name, std::move(t));
    }
    std::sort(ranges.begin(), ranges.end());
    for (size_t i = 1; i < ranges.size(); ++i) {
        if (ranges[i].first < ranges[i - 1].second)
            return corrupt(source + ": two tensors overlap at byte " +
                           std::to_string(ranges[i].first) + " of the data section");
    }
    return out;
}

Status add_safetensors_file(const std::filesystem::path& path, TensorStore& store) {
    DUALITY_ASSIGN_OR_RETURN(auto file, MappedFile::open(path));
    DUALITY_ASSIGN_OR_RETURN(auto tensors,
                             parse_safetensors(file->data(), file->size(), path.string()));
    for (auto& [name, t] : tensors) DUALITY_RETURN_IF_ERROR(store.add(name, std::move(t)));
    store.keep_alive(std::move(file));
    return Status::ok();
}

}  // namespace duality
