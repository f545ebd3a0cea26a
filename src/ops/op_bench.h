// Per-op GPU timings in a model's real shapes, for `duality bench --ops`: the CUDA ops of one layer
// (ops/cuda/ops.h and the GEMM wrapper ops/cuda/gemm.h) on random data, each timed with CUDA
// events over many launches after a warm-up. Builds without CUDA return an "unsupported" Status.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "duality/config.h"
#include "duality/status.h"
#include "duality/types.h"

namespace duality {

struct OpBenchOptions {
    ModelConfig config;
    DType act = DType::kBF16;             // weights and activations
    DType state_dtype = DType::kF32;      // SSM state
    std::vector<int64_t> token_counts;    // prefill shapes: one sequence of T tokens
    std::vector<int64_t> decode_batches;  // decode shapes: B sequences of one token
    int warmup = 3, iters = 20;
    int gemm_algos = 0;  // > 0: also time the first N cuBLASLt candidates of each GEMM
    int device_index = 0;
    uint64_t seed = 0;
};

struct OpBenchRow {
    std::string op;       // in_proj, out_proj, conv1d, ssd_chunked, ssm_decode
    std::string shape;    // "T=8192" (prefill) or "B=64" (decode)
    double seconds = 0;   // per call
    double bytes = 0;     // the least HBM traffic of one call (every operand once)
    double flops = 0;     // useful FLOPs of one call
    std::string skipped;  // non-empty: not run, and why (e.g. out of GPU memory)
};

struct OpBenchResult {
    std::string device;  // CUDA device name
    std::vector<OpBenchRow> rows;
};

Result<OpBenchResult> run_op_bench(const OpBenchOptions& options);

}  // namespace duality
