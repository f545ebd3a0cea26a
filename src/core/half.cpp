#include "core/half.h"

#include "core/check.h"

namespace duality {
namespace {
uint16_t load_u16(const unsigned char* p) {
    uint16_t v;
    std::memcpy(&v, p, sizeof v);
    return v;
}
}  // namespace

void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t n) {
    switch (src_dtype) {
        case DType::kF32: std::memcpy(dst, src, n * sizeof(float)); return;
        case DType::kBF16: {
            // Checkpoint data need not be 2-byte aligned: read through memcpy.
            const auto* s = static_cast<const unsigned char*>(src);
            for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_f32(load_u16(s + 2 * i));
            return;
        }
        case DType::kF16: {
            const auto* s = static_cast<const unsigned char*>(src);
            for (size_t i = 0; i < n; ++i) dst[i] = f16_to_f32(load_u16(s + 2 * i));
            return;
        }
        default: DUALITY_ASSERT(false && "convert_to_f32: not a float dtype");
    }
}

void round_to_dtype(DType dt, float* x, size_t n) {
    switch (dt) {
        case DType::kF32: return;
        case DType::kBF16:
            for (size_t i = 0; i < n; ++i) x[i] = bf16_to_f32(f32_to_bf16(x[i]));
            return;
        case DType::kF16:
            for (size_t i = 0; i < n; ++i) x[i] = f16_to_f32(f32_to_f16(x[i]));
            return;
        default: DUALITY_ASSERT(false && "round_to_dtype: not a float dtype");
    }
}

}  // namespace duality
