// The safetensors format: an 8-byte little-endian header length, a JSON header mapping names to
// {dtype, shape, data_offsets}, then the data. Every field is validated against the file size.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "loader/tensor_store.h"

namespace duality {

// Parses an in-memory safetensors image. The returned tensors point into `data`.
// `source` names the file in error messages.
Result<std::vector<std::pair<std::string, RawTensor>>> parse_safetensors(const uint8_t* data,
                                                                        size_t size,
                                                                        const std::string& source);

// Maps `path` and adds its tensors to `store`.
Status add_safetensors_file(const std::filesystem::path& path, TensorStore& store);

}  // namespace duality
