// argmax_rows (greedy decoding on the GPU) against sampling::argmax: random rows, rows with
// many exact ties (the lowest id wins), -inf entries, and padded rows (ld > vocab); each id in
// both of its outputs.
// argmax_from_key after gemv_fused's LM head with GemvFused::argmax_key (a greedy batch-1 step):
// the id against sampling::argmax over the logits the same product stored (so the same values on
// both sides), with the largest logit at two columns in different blocks (the lower id wins) and
// a larger one in a column past argmax_vocab (which must not count); the key must be 0 again.
#include <cmath>
#include <limits>

#include "duality/sampling.h"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/kern_util.h"
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

// n columns of k, `vocab` of them counted; rows r0 < r1 (blocks apart) the same, scaled to hold
// the largest logit, and row n − 1 (past vocab) larger still.
void key_case(const char* name, int64_t n, int64_t k, int64_t vocab, DType act) {
    OpCase c;
    c.name = std::string("argmax_from_key/") + name + "/" + dt_name(act);
    c.tol = {0.0, 0.0, 0.0};  // ids must be identical
    c.run = [=] {
        std::mt19937 rng(static_cast<uint32_t>(n * 31 + k + vocab));
        const std::vector<float> a = rounded(act, normal(rng, static_cast<size_t>(k)));
        std::vector<float> w =
            normal(rng, static_cast<size_t>(n * k), 0.0f, 1.0f / std::sqrt(static_cast<float>(k)));
        const int64_t r0 = n / 3, r1 = n / 3 + 17;  // (blocks of 8 columns)
        for (int64_t i = 0; i < k; ++i) {
            const float big = 4.0f * a[static_cast<size_t>(i)] / std::sqrt(static_cast<float>(k));
            w[static_cast<size_t>(r0 * k + i)] = w[static_cast<size_t>(r1 * k + i)] = big;
            if (vocab < n) w[static_cast<size_t>((n - 1) * k + i)] = 2.0f * big;
        }
        w = rounded(act, w);
        const std::vector<float> parts = {1.0f, 2.0f, 3.0f, 4.0f};
        auto da = upload_as(act, a), dw = upload_as(act, w), dparts = upload_f32(parts);
        cuda::DeviceBuffer dy(static_cast<size_t>(n) * 4), dkey(8), dids(4), dalso(4);
        DUALITY_CUDA_CHECK(cudaMemset(dkey.data(), 0, 8));
        cuda::GemvFused f;
        f.in_scale = RowScale{dparts.as<float>(), 4, 8.0f, 1e-5f};
        f.y = dy.data();
        f.y_f32 = true;
        f.argmax_key = static_cast<unsigned long long*>(dkey.data());
        f.argmax_vocab = vocab;
        cuda::gemv_fused(da.data(), dw.data(), n, k, act, -1, f, nullptr);
        cuda::argmax_from_key(f.argmax_key, dids.as<int32_t>(), dalso.as<int32_t>(), nullptr);
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> logits = download_as_f32(DType::kF32, dy.data(), size_t(n));
        const float expected = static_cast<float>(
            sampling::argmax(std::span<const float>(logits.data(), static_cast<size_t>(vocab))));
        const auto id = cuda::to_host<int32_t>(dids.data(), 1);
        const auto also = cuda::to_host<int32_t>(dalso.data(), 1);
        const auto key = cuda::to_host<unsigned long long>(dkey.data(), 1);
        return std::vector<Output>{{"id", {expected}, {static_cast<float>(id[0])}},
                                   {"ids_also", {expected}, {static_cast<float>(also[0])}},
                                   {"tie_to_lowest", {static_cast<float>(r0)}, {expected}},
                                   {"key_reset", {0.0f}, {static_cast<float>(key[0])}}};
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
    for (DType act : {DType::kBF16, DType::kF16}) {
        key_case("head_130m_vocab50277", 50288, 768, 50277, act);
        key_case("ragged_vocab1003", 1003, 128, 1003, act);  // every column counted
    }
}

}  // namespace
}  // namespace duality::optest
