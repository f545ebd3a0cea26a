// Shared pieces of the op-test cases for the element-wise, norm, conv, dt and decode kernels:
// the three activation dtypes, device VarlenBatch descriptions and slot maps.
#pragma once

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/cuda/device_buffer.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/registry.h"

namespace duality::optest {

inline constexpr DType kActs[] = {DType::kF32, DType::kF16, DType::kBF16};

inline std::string dt_name(DType dt) {
    return std::string(dtype_name(dt));
}

// Threads for the CPU twins.
inline constexpr int kCpuThreads = 4;

// A packed batch on the device (cu_seqlens and slots only; no SSD chunking).
struct DeviceBatch {
    cuda::DeviceBuffer cu, slot_buf;
    cuda::VarlenBatch batch;
    std::vector<int32_t> cu_host, slots;
};

inline DeviceBatch make_batch(const std::vector<int32_t>& lens, std::vector<int32_t> slots) {
    DeviceBatch b;
    b.cu_host.assign(1, 0);
    for (int32_t l : lens) b.cu_host.push_back(b.cu_host.back() + l);
    b.slots = std::move(slots);
    b.cu = upload_i32(b.cu_host);
    b.slot_buf = upload_i32(b.slots);
    b.batch.n_seq = static_cast<int64_t>(lens.size());
    b.batch.n_tokens = b.cu_host.back();
    b.batch.cu_seqlens = b.cu.as<int32_t>();
    b.batch.slots = b.slot_buf.as<int32_t>();
    return b;
}

// n_seq distinct slots out of [0, n_slots), in a shuffled order (so neither the identity nor
// monotonic), from `rng`.
inline std::vector<int32_t> shuffled_slots(std::mt19937& rng, int64_t n_seq, int64_t n_slots) {
    std::vector<int32_t> all(static_cast<size_t>(n_slots));
    std::iota(all.begin(), all.end(), 0);
    std::shuffle(all.begin(), all.end(), rng);
    all.resize(static_cast<size_t>(n_seq));
    return all;
}

// Tolerance that is at least as loose as both.
inline Tolerance loosest(Tolerance a, Tolerance b) {
    return {std::max(a.max_rel_l2, b.max_rel_l2), std::max(a.atol, b.atol),
            std::max(a.rtol, b.rtol)};
}

// decode_stack's shape fields (the tests' dt clamp [0.001, 0.5], eps 1e-5); pointers unset.
inline cuda::DecodeStackArgs stack_shape(int64_t n_layer, int64_t d_model, int64_t n_head,
                                         int64_t head_dim, int64_t d_state, int64_t n_group,
                                         int64_t d_conv, int64_t vocab_rows) {
    cuda::DecodeStackArgs a;
    a.n_layer = n_layer;
    a.d_model = d_model;
    a.d_inner = n_head * head_dim;
    a.n_head = n_head;
    a.head_dim = head_dim;
    a.d_state = d_state;
    a.n_group = n_group;
    a.d_conv = d_conv;
    a.vocab_rows = vocab_rows;
    a.eps = 1e-5f;
    a.dt_min = 0.001f;
    a.dt_max = 0.5f;
    return a;
}

}  // namespace duality::optest
