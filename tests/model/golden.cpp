#include "model/golden.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>

#include "loader/safetensors.h"
#include "test_util.h"

namespace duality::test {

std::vector<std::string> golden_cases() {
    std::vector<std::string> out;
    for (const auto& e : std::filesystem::directory_iterator(golden_dir())) {
        if (e.is_directory() && std::filesystem::exists(e.path() / "golden.safetensors"))
            out.push_back(e.path().filename().string());
    }
    std::sort(out.begin(), out.end());
    return out;
}

Golden load_golden(const std::string& case_name) {
    Golden g;
    Status s = add_safetensors_file(golden_dir() / case_name / "golden.safetensors", g.store);
    if (!s.is_ok()) throw std::runtime_error(s.message());
    return g;
}

namespace {
template <typename T>
std::vector<T> read(const TensorStore& store, const std::string& name, DType dtype) {
    const RawTensor* t = store.find(name);
    if (!t || t->dtype != dtype) throw std::runtime_error("golden tensor missing: " + name);
    std::vector<T> v(t->nbytes / sizeof(T));
    std::memcpy(v.data(), t->data, t->nbytes);
    return v;
}
}  // namespace

std::vector<float> Golden::f32(const std::string& name) const {
    return read<float>(store, name, DType::kF32);
}
std::vector<int32_t> Golden::i32(const std::string& name) const {
    return read<int32_t>(store, name, DType::kI32);
}
std::vector<int64_t> Golden::shape(const std::string& name) const {
    const RawTensor* t = store.find(name);
    if (!t) throw std::runtime_error("golden tensor missing: " + name);
    return t->shape;
}

}  // namespace duality::test
