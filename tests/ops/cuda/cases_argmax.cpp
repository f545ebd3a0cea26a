// argmax_rows (greedy decoding on the GPU) against sampling::argmax: random rows, rows with
// many exact ties (the lowest id wins), -inf entries, and padded rows (ld > vocab); each id in
// both of its outputs.
#include <limits>

#include "duality/sampling.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

void add_case(const char* name, int64_t rows, int64_t vocab, int64_t ld, bool ties) {
    OpCase c;
    c.name = std::string("argmax_rows/") + name;
    c.tol = {0.0, 0.0, 0.0};  // ids must be identical
    c.run = [=] {
        std::mt19937 rng(static_cast<uint32_t>(rows * 7919 + vocab));
        std::vector<float> logits = normal(rng, static_cast<size_t>(rows * ld), 0.0f, 3.0f);
        for (int64_t r = 0; r < rows; ++r) {
            float* row = logits.data() + r * ld;
            if (ties)  // a few distinct values: the maximum occurs many times
                for (int64_t i = 0; i < vocab; ++i)
                    row[i] = static_cast<float>(static_cast<int>(row[i]));
            row[r % vocab] = -std::numeric_limits<float>::infinity();
            for (int64_t i = vocab; i < ld; ++i) row[i] = 1e30f;  // padding must never win
        }
        std::vector<float> expected(static_cast<size_t>(rows));
        for (int64_t r = 0; r < rows; ++r)
            expected[static_cast<size_t>(r)] = static_cast<float>(sampling::argmax(
                std::span<const float>(logits.data() + r * ld, static_cast<size_t>(vocab))));
        cuda::DeviceBuffer d_logits = upload_f32(logits);
        cuda::DeviceBuffer d_ids(static_cast<size_t>(rows) * 4),
            d_also(static_cast<size_t>(rows) * 4);
        cuda::argmax_rows(d_logits.as<float>(), ld, rows, vocab, d_ids.as<int32_t>(), nullptr,
                          d_also.as<int32_t>());
        std::vector<int32_t> ids = cuda::to_host<int32_t>(d_ids.data(), static_cast<size_t>(rows));
        std::vector<int32_t> also =
            cuda::to_host<int32_t>(d_also.data(), static_cast<size_t>(rows));
        std::vector<float> actual(ids.begin(), ids.end()), actual_also(also.begin(), also.end());
        // (ids_also: the second copy a device-fed decode loop asks for.)
        return std::vector<Output>{{"ids", expected, actual}, {"ids_also", expected, actual_also}};
    };
    register_case(std::move(c));
}

DUALITY_OP_CASES(argmax_rows) {
    add_case("rows1_vocab50277_ld50288", 1, 50277, 50288, false);
    add_case("rows64_vocab50277_ld50288", 64, 50277, 50288, false);
    add_case("rows64_ties", 64, 50277, 50288, true);
    add_case("rows3_vocab7", 3, 7, 8, true);
    add_case("rows5_vocab50281_ld50283", 5, 50281, 50283, true);  // scalar rows (ld % 4 != 0)
    add_case("rows2_vocab8195_ld8196", 2, 8195, 8196, true);      // float4 rows with a tail
}

}  // namespace
}  // namespace duality::optest
