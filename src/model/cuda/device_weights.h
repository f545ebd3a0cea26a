// The model's weights on the GPU: the big matrices (embedding, in_proj, out_proj, LM head) in the
// compute dtype, every per-channel vector in f32, all in one allocation.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "core/cuda/device_buffer.h"
#include "duality/config.h"
#include "model/weights.h"
#include "ops/cuda/ops.h"

namespace duality::cuda {

// DeviceLayer (one layer's pointers into the block): ops/cuda/ops.h.

struct DeviceWeights {
    DeviceBuffer block;
    const void* embedding = nullptr;  // {vocab_padded, d_model} act
    const void* head = nullptr;       // {vocab_padded, d_model} act (= embedding when tied)
    const float* norm_f = nullptr;    // {d_model}
    std::vector<DeviceLayer> layers;
};

// Converts host f32 weights to `act` on the GPU.
Result<DeviceWeights> upload_weights(const ModelConfig& c, const ModelWeights& w, DType act,
                                     cudaStream_t stream);

// Draws the weights of random_weights(c, seed) on the GPU (identical values up to the rounding
// to `act`), without building them on the host.
Result<DeviceWeights> random_device_weights(const ModelConfig& c, uint64_t seed, DType act,
                                            cudaStream_t stream);

}  // namespace duality::cuda
