// The results of `duality bench` and their two renderings: a table for people, JSON for machines.
// Every throughput figure is shown beside its roofline fraction (spec section 10): prefill FLOP/s
// over the dense bf16 peak, decode tokens/s over the HBM bound, ops the larger of the two.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "duality/model.h"
#include "ops/op_bench.h"

namespace duality::cli {

struct PrefillResult {
    int64_t batch = 0, seq_len = 0;
    double seconds = 0;   // one step() of batch × seq_len tokens
    double flops = 0;     // useful FLOPs of that step (engine/roofline.h)
    std::string skipped;  // non-empty: not run, and why
};

struct DecodeResult {
    int64_t batch = 0;
    int steps = 0;
    double seconds = 0;         // all timed steps
    double bytes_per_step = 0;  // weights + batch × state (engine/roofline.h)
    std::string skipped;
};

struct BenchReport {
    std::string model;  // preset name or folder
    bool random_weights = false;
    std::string backend;  // "cpu" or "cuda"
    std::string dtype, state_dtype;
    std::optional<double> bytes_per_s, flops_per_s;  // peaks; nullopt: n/a
    std::string peak_source;                         // "table", "flags", "table+flags" or "" (none)
    int n_slots = 0;
    // The model's device, memory and the paths its passes take (--ops: the name only).
    DeviceInfo info;
    std::vector<PrefillResult> prefill;
    std::vector<DecodeResult> decode;
    std::vector<OpBenchRow> ops;
};

std::string render_table(const BenchReport& r);
std::string render_json(const BenchReport& r);

}  // namespace duality::cli
