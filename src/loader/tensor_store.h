// The raw tensors of a checkpoint, by name, as stored on disk (any dtype, mmapped or read).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "duality/status.h"
#include "duality/types.h"

namespace duality {

// One stored tensor: contiguous row-major bytes that the store keeps alive.
struct RawTensor {
    DType dtype = DType::kF32;
    std::vector<int64_t> shape;
    const uint8_t* data = nullptr;
    size_t nbytes = 0;
    std::string file;  // where it came from, for error messages
};

class TensorStore {
public:
    // Adds a tensor; a name seen before is an error naming both files.
    Status add(const std::string& name, RawTensor tensor);
    // Keeps a mapping or buffer alive for as long as the store lives.
    void keep_alive(std::shared_ptr<const void> owner) { owners_.push_back(std::move(owner)); }

    const RawTensor* find(const std::string& name) const;
    const std::map<std::string, RawTensor>& tensors() const { return tensors_; }

private:
    std::map<std::string, RawTensor> tensors_;
    std::vector<std::shared_ptr<const void>> owners_;
};

// Maps a checkpoint folder's weights: `model.safetensors`, sharded safetensors with
// `model.safetensors.index.json`, `pytorch_model.bin`, or sharded .bin with its index.
Result<TensorStore> load_tensor_store(const std::filesystem::path& dir);

}  // namespace duality
