// Access to the reference fixtures in tests/golden (made by scripts/make_goldens.py).
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "loader/tensor_store.h"

namespace duality::test {

// The case directories under tests/golden.
std::vector<std::string> golden_cases();

// golden.safetensors of one case, kept open.
struct Golden {
    TensorStore store;
    std::vector<float> f32(const std::string& name) const;   // must exist and be F32
    std::vector<int32_t> i32(const std::string& name) const; // must exist and be I32
    std::vector<int64_t> shape(const std::string& name) const;
    bool has(const std::string& name) const { return store.find(name) != nullptr; }
};
Golden load_golden(const std::string& case_name);

}  // namespace duality::test
