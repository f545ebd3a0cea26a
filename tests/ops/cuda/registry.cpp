#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {
std::vector<OpCase>& storage() {
    static std::vector<OpCase> all;
    return all;
}
}  // namespace

Tolerance default_tolerance(DType act) {
    switch (act) {
        case DType::kF32: return {1e-5, 1e-4, 1e-4};
        case DType::kF16: return {5e-4, 1e-2, 5e-3};
        case DType::kBF16: return {3e-3, 5e-2, 2e-2};
        default: return {};
    }
}

void register_case(OpCase c) { storage().push_back(std::move(c)); }
const std::vector<OpCase>& cases() { return storage(); }

}  // namespace duality::optest
