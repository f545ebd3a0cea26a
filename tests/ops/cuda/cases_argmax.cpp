// argmax_rows (greedy decoding on the GPU) against sampling::argmax: random rows, rows with
// many exact ties (the lowest id wins), -inf entries, and padded rows (ld > vocab); each id in
// both of its outputs.
// argmax_from_key after gemv_fused's LM head with GemvFused::argmax_key (a greedy batch-1 step):
// the id against argmax_rows's rules over the logits the same product stored (so the same values
// on both sides): equal largest logits in one block and in two (the lowest id wins), a larger one
// in the first column past argmax_vocab (which must not count), all logits negative, and NaN,
// -inf and +inf logits; the case also checks that its logits put the winner where it meant to,
// and the key must be 0 again.
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

// argmax_rows's rules (argmax.cu), written out: the largest value from -FLT_MAX up, the lowest id
// among equal ones, -inf and NaN never chosen, 0 when nothing counts. (sampling::argmax, the CPU
// twin of finite logits, treats NaN differently.)
int32_t kernel_argmax(const std::vector<float>& v, int64_t vocab) {
    float best = -std::numeric_limits<float>::max();
    int64_t id = -1;
    for (int64_t i = 0; i < vocab; ++i) {
        const float x = v[static_cast<size_t>(i)];
        if (x > best || (x == best && id < 0)) best = x, id = i;
    }
    return id < 0 ? 0 : static_cast<int32_t>(id);
}

// What a key case's logits hold besides random values (columns r0 < r1 < r2 of one or two blocks):
// kTie: the largest logit at r0, r0 + 3 (the same block) and r0 + 17 (another), and a larger one
// at column `vocab` (not counted, in a block whose other columns count) where vocab < n;
// kNegative: every logit negative, the largest (closest to 0) at those three columns;
// kSpecial: NaN at r0, -inf at r0 + 3, +inf at r0 + 17 (which must win), zeros elsewhere in them.
enum class KeyLogits { kTie, kNegative, kSpecial };

// n columns of k, `vocab` of them counted.
void key_case(const char* name, int64_t n, int64_t k, int64_t vocab, KeyLogits kind, DType act) {
    OpCase c;
    c.name = std::string("argmax_from_key/") + name + "/" + dt_name(act);
    c.tol = {0.0, 0.0, 0.0};  // ids must be identical
    c.run = [=] {
        std::mt19937 rng(static_cast<uint32_t>(n * 31 + k + vocab + static_cast<int>(kind)));
        std::vector<float> a = normal(rng, static_cast<size_t>(k));
        a[0] = 1.0f;
        a = rounded(act, a);
        const float sk = std::sqrt(static_cast<float>(k));
        std::vector<float> w = normal(rng, static_cast<size_t>(n * k), 0.0f, 1.0f / sk);
        const auto row = [&](int64_t r) { return w.data() + r * k; };
        const int64_t r0 = n / 3;
        const int64_t rows[3] = {r0, r0 + 3, r0 + 17};
        if (kind == KeyLogits::kNegative)  // logit of row r: -c_r · |a|² / √k, c_r in [2, 3)
            for (int64_t r = 0; r < n; ++r) {
                const float cr = std::uniform_real_distribution<float>(2.0f, 3.0f)(rng);
                for (int64_t i = 0; i < k; ++i) row(r)[i] = -cr * a[static_cast<size_t>(i)] / sk;
            }
        for (int64_t q = 0; q < 3; ++q)
            for (int64_t i = 0; i < k; ++i) {
                const float ai = a[static_cast<size_t>(i)];
                float& x = row(rows[q])[i];
                switch (kind) {
                    case KeyLogits::kTie:
                        x = 4.0f * ai / sk;
                        break;
                    case KeyLogits::kNegative:
                        x = -1.0f * ai / sk;
                        break;
                    case KeyLogits::kSpecial:
                        x = i > 0 ? 0.0f
                            : q == 0
                                ? std::numeric_limits<float>::quiet_NaN()
                                : (q == 1 ? -1.0f : 1.0f) * std::numeric_limits<float>::infinity();
                        break;
                }
            }
        if (kind == KeyLogits::kTie && vocab < n)
            for (int64_t i = 0; i < k; ++i) row(vocab)[i] = 8.0f * a[static_cast<size_t>(i)] / sk;
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
        // The reference: the same rules over the logits this product stored.
        const std::vector<float> logits = download_as_f32(DType::kF32, dy.data(), size_t(n));
        const float expected = static_cast<float>(kernel_argmax(logits, vocab));
        const float meant = static_cast<float>(kind == KeyLogits::kSpecial ? rows[2] : rows[0]);
        const auto id = cuda::to_host<int32_t>(dids.data(), 1);
        const auto also = cuda::to_host<int32_t>(dalso.data(), 1);
        const auto key = cuda::to_host<unsigned long long>(dkey.data(), 1);
        return std::vector<Output>{{"id", {expected}, {static_cast<float>(id[0])}},
                                   {"ids_also", {expected}, {static_cast<float>(also[0])}},
                                   {"the_column_meant", {meant}, {expected}},
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
        key_case("head_130m_vocab50277", 50288, 768, 50277, KeyLogits::kTie, act);
        key_case("ragged_vocab1003", 1003, 128, 1003, KeyLogits::kTie, act);  // all counted
        key_case("negative_vocab1000", 1003, 128, 1000, KeyLogits::kNegative, act);
        key_case("inf_nan_vocab1003", 1003, 128, 1003, KeyLogits::kSpecial, act);
    }
}

}  // namespace
}  // namespace duality::optest
