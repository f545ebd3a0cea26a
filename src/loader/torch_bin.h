// `pytorch_model.bin` as written by torch.save (>= 1.6): a zip archive holding `data.pkl` (read
// by the restricted unpickler in torch_pickle.h) and one `data/<key>` entry per storage.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>

#include "loader/tensor_store.h"

namespace duality {

// Reads an in-memory archive and adds its tensors (copied out of the archive) to `store`.
Status add_torch_bin(const uint8_t* data, size_t size, const std::string& source,
                     TensorStore& store);

Status add_torch_bin_file(const std::filesystem::path& path, TensorStore& store);

}  // namespace duality
