// GEMM cases: Gemm::run (cuBLASLt, or the skinny kernel for m = 1) against cpu::gemm,
// in the model's real shapes, with row strides, f32 and act-typed outputs. "_decode" cases force
// the decode GEMM (gemm_decode.cu) on for 2 ≤ m ≤ 64; gemm_decode_repeat cases check that it is
// bit-identical from run to run, across other products in between and inside a CUDA graph.
// "_tuned" cases run Gemm::tune first (cuBLASLt's candidates timed over three weight buffers,
// the fastest made the product's choice if clearly faster; it must find at least two to choose
// from, which these shapes get) and then check the product it chose.
#include <cmath>
#include <memory>
#include <stdexcept>

#include "core/cuda/stream.h"
#include "ops/cpu/ops.h"
#include "ops/cuda/gemm.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

struct GemmShape {
    const char* name;
    int64_t m, n, k, lda_pad;  // lda = k + lda_pad
    bool f32_out, small_m_kernel;
    bool decode_kernel = false;  // force the decode GEMM on (and fail if it is not taken)
    bool tuned = false;          // Gemm::tune before the product (cuBLASLt only)
    int64_t prefetch = -2;       // the m = 1 kernel's prefetch budget (-1 all; -2 the default)
};

void add_case(const GemmShape& s, DType act) {
    OpCase c;
    c.name = std::string("gemm/") + s.name + "_m" + std::to_string(s.m) +
             (s.f32_out ? "_f32out" : "") + (s.small_m_kernel ? "" : "_cublaslt") +
             (s.decode_kernel ? "_decode" : "") + (s.tuned ? "_tuned" : "") +
             (s.prefetch == -2 ? "" : "_prefetch" + std::to_string(s.prefetch)) + "/" +
             std::string(dtype_name(act));
    c.tol = default_tolerance(act);
    c.run = [s, act] {
        std::mt19937 rng(static_cast<uint32_t>(s.m * 1000003 + s.n * 31 + s.k));
        const int64_t lda = s.k + s.lda_pad;
        const float scale = 1.0f / std::sqrt(static_cast<float>(s.k));
        const std::vector<float> a = rounded(act, normal(rng, static_cast<size_t>(s.m * lda)));
        const std::vector<float> w =
            rounded(act, normal(rng, static_cast<size_t>(s.n * s.k), 0.0f, scale));
        std::vector<float> expected(static_cast<size_t>(s.m * s.n));
        cpu::gemm(a.data(), lda, w.data(), nullptr, expected.data(), s.m, s.n, s.k);
        const DType y_dtype = s.f32_out ? DType::kF32 : act;
        if (!s.f32_out) expected = rounded(act, expected);
        auto da = upload_as(act, a), dw = upload_as(act, w);
        cuda::DeviceBuffer dy(static_cast<size_t>(s.m * s.n) * dtype_size(y_dtype));
        auto gemm = cuda::Gemm::create();
        if (!gemm) throw std::runtime_error(gemm.status().message());
        gemm->set_small_m_kernel(s.small_m_kernel);
        if (s.prefetch != -2) gemm->set_prefetch_bytes(s.prefetch);
        gemm->set_decode_kernel(s.decode_kernel);
        if (s.decode_kernel &&
            !gemm->uses_decode_kernel(da.data(), lda, dw.data(), y_dtype, s.m, s.n, s.k, act))
            throw std::runtime_error("the product does not take the decode GEMM");
        if (s.tuned) {
            // Timing passes over three buffers (two of them scratch copies of w).
            auto w1 = upload_as(act, w), w2 = upload_as(act, w);
            const std::vector<const void*> weights{w1.data(), dw.data(), w2.data()};
            if (gemm->tune(da.data(), lda, weights, dy.data(), s.n, y_dtype, s.m, s.n, s.k, act,
                           nullptr) < 0)
                throw std::runtime_error("Gemm::tune found fewer than two candidates");
        }
        gemm->run(da.data(), lda, dw.data(), dy.data(), s.n, y_dtype, s.m, s.n, s.k, act, nullptr);
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
        return std::vector<Output>{
            {"y", expected, download_as_f32(y_dtype, dy.data(), static_cast<size_t>(s.m * s.n))}};
    };
    register_case(std::move(c));
}

DUALITY_OP_CASES(gemm) {
    // in_proj and out_proj of mamba2-130m and -2.7b, the 2.7b LM head (f32 logits), a tiny model.
    const GemmShape shapes[] = {
        {"in_proj_130m", 1, 3352, 768, 0, false, true},
        {"in_proj_130m", 5, 3352, 768, 0, false, true},
        {"in_proj_130m", 8, 3352, 768, 0, false, true},
        {"in_proj_130m", 64, 3352, 768, 0, false, true},
        {"in_proj_130m", 300, 3352, 768, 0, false, true},
        {"out_proj_2.7b", 1, 2560, 5120, 0, false, true},
        {"out_proj_2.7b", 3, 2560, 5120, 0, false, false},
        {"out_proj_2.7b", 257, 2560, 5120, 0, false, true},
        {"lm_head_2.7b", 1, 50288, 2560, 0, true, true},
        {"lm_head_2.7b", 7, 50288, 2560, 0, true, true},
        {"strided_a", 4, 96, 64, 40, false, true},
        {"tiny", 2, 40, 24, 0, false, true},
        // m = 1: a last block of fewer than 8 rows, and the prefetch budget (all of w, none,
        // 16 bytes per block, and 1 MiB: whole rows for some blocks, part of one for others).
        {"ragged_n", 1, 1003, 128, 8, false, true},
        // m = 1: rows of 6 steps a lane (bf16; 12 f32): a whole group of four and a partial one;
        // and rows that end inside a step (1000 = 3 · 256 + 232 bf16
        // elements).
        {"out_proj_130m", 1, 768, 1536, 0, false, true},
        {"odd_k", 1, 77, 1000, 0, false, true},
        {"out_proj_2.7b", 1, 2560, 5120, 0, false, true, false, false, -1},
        {"out_proj_2.7b", 1, 2560, 5120, 0, false, true, false, false, 0},
        {"out_proj_2.7b", 1, 2560, 5120, 0, false, true, false, false, 16 * 320},
        {"ragged_n", 1, 1003, 128, 8, false, true, false, false, 1 << 20},
    };
    for (const GemmShape& s : shapes)
        for (DType act : {DType::kF32, DType::kF16, DType::kBF16}) add_case(s, act);

    // The decode GEMM (f16/bf16 only): the model's shapes at decode batch sizes (one, two, four
    // and eight n8 tiles of m, partly filled), strided a, and a ragged n whose last tile is
    // partial and whose rows are ldy = n = 1003 elements apart.
    const GemmShape decode_shapes[] = {
        {"in_proj_130m", 0, 3352, 768, 0, false, true, true},
        {"in_proj_2.7b", 0, 10576, 2560, 0, false, true, true},
        {"out_proj_2.7b", 0, 2560, 5120, 0, false, true, true},
        {"lm_head_2.7b", 0, 50288, 2560, 0, true, true, true},
    };
    for (GemmShape s : decode_shapes)
        for (int64_t m : {2, 5, 16, 33, 64}) {
            s.m = m;
            for (DType act : {DType::kF16, DType::kBF16}) add_case(s, act);
        }
    // Tuned: the model's decode-bucket products (Gemm::tune at load).
    const GemmShape tuned_shapes[] = {
        {"in_proj_2.7b", 64, 10576, 2560, 0, false, true, false, true},
        {"out_proj_2.7b", 64, 2560, 5120, 0, false, true, false, true},
        {"lm_head_2.7b", 8, 50288, 2560, 0, true, true, false, true},
    };
    for (const GemmShape& s : tuned_shapes)
        for (DType act : {DType::kF16, DType::kBF16}) add_case(s, act);
    for (DType act : {DType::kF16, DType::kBF16}) {
        add_case({"strided_a", 4, 96, 64, 40, false, true, true}, act);
        add_case({"ragged_n", 7, 1003, 128, 8, false, true, true}, act);
        add_case({"ragged_n", 40, 1003, 128, 8, true, true, true}, act);
    }
}

// Gemm::run_split_k: splits f32 parts {splits, m, n} of y = a · wᵀ, each checked against the CPU
// product of its k slice, and their sum against the whole product; `tuned`: tune_split_k first.
void add_split_case(const char* name, int64_t m, int64_t n, int64_t k, int splits, bool tuned,
                    DType act) {
    OpCase c;
    c.name = std::string("gemm_split/") + name + "_m" + std::to_string(m) + "_s" +
             std::to_string(splits) + (tuned ? "_tuned" : "") + "/" + std::string(dtype_name(act));
    // f32 outputs of 16-bit operands: the act rows of the policy would allow the output's
    // rounding, which these do not have; the f32-accumulation differences stay far inside them.
    c.tol = default_tolerance(act);
    c.run = [=] {
        std::mt19937 rng(static_cast<uint32_t>(m * 131 + n * 7 + k + splits));
        const float scale = 1.0f / std::sqrt(static_cast<float>(k));
        const std::vector<float> a = rounded(act, normal(rng, static_cast<size_t>(m * k)));
        const std::vector<float> w =
            rounded(act, normal(rng, static_cast<size_t>(n * k), 0.0f, scale));
        const int64_t ks = k / splits;
        std::vector<float> whole(static_cast<size_t>(m * n)), parts;
        cpu::gemm(a.data(), k, w.data(), nullptr, whole.data(), m, n, k);
        for (int q = 0; q < splits; ++q) {
            std::vector<float> aq(static_cast<size_t>(m * ks)), wq(static_cast<size_t>(n * ks)),
                yq(static_cast<size_t>(m * n));
            for (int64_t r = 0; r < m; ++r)
                for (int64_t j = 0; j < ks; ++j)
                    aq[static_cast<size_t>(r * ks + j)] =
                        a[static_cast<size_t>(r * k + q * ks + j)];
            for (int64_t r = 0; r < n; ++r)
                for (int64_t j = 0; j < ks; ++j)
                    wq[static_cast<size_t>(r * ks + j)] =
                        w[static_cast<size_t>(r * k + q * ks + j)];
            cpu::gemm(aq.data(), ks, wq.data(), nullptr, yq.data(), m, n, ks);
            parts.insert(parts.end(), yq.begin(), yq.end());
        }
        auto da = upload_as(act, a), dw = upload_as(act, w);
        const size_t n_out = static_cast<size_t>(splits * m * n);
        cuda::DeviceBuffer dy(n_out * 4);
        auto gemm = cuda::Gemm::create();
        if (!gemm) throw std::runtime_error(gemm.status().message());
        if (!cuda::Gemm::split_k_supported(da.data(), k, dw.data(), k, splits, act))
            throw std::runtime_error("split_k_supported refuses the product");
        if (tuned) {
            auto w1 = upload_as(act, w), w2 = upload_as(act, w);
            const std::vector<const void*> weights{w1.data(), dw.data(), w2.data()};
            if (gemm->tune_split_k(da.data(), k, weights, dy.as<float>(), m, n, k, splits, act,
                                   nullptr) < 0)
                throw std::runtime_error("Gemm::tune_split_k found fewer than two candidates");
        }
        gemm->run_split_k(da.data(), k, dw.data(), dy.as<float>(), m, n, k, splits, act, nullptr);
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
        const std::vector<float> got = download_as_f32(DType::kF32, dy.data(), n_out);
        std::vector<float> sum(static_cast<size_t>(m * n), 0.0f);
        for (int q = 0; q < splits; ++q)
            for (size_t i = 0; i < sum.size(); ++i) sum[i] += got[q * sum.size() + i];
        return std::vector<Output>{{"parts", parts, got}, {"sum", whole, sum}};
    };
    register_case(std::move(c));
}

DUALITY_OP_CASES(gemm_split) {
    for (DType act : {DType::kF16, DType::kBF16}) {
        add_split_case("out_proj_2.7b", 64, 2560, 5120, 2, false, act);
        add_split_case("out_proj_2.7b", 64, 2560, 5120, 2, true, act);
        add_split_case("out_proj_2.7b", 33, 2560, 5120, 4, false, act);
        add_split_case("out_proj_130m", 32, 768, 1536, 2, true, act);
        add_split_case("tiny", 17, 40, 48, 3, false, act);
    }
}

// Runs y = a · wᵀ with the decode GEMM three ways: twice directly, with a product of another
// shape in between (its own split tiles and counters), and replayed twice from a CUDA graph;
// every result must equal the first bit for bit.
void add_decode_repeat_case(const char* name, int64_t m, int64_t n, int64_t k, DType act) {
    OpCase c;
    c.name = std::string("gemm_decode_repeat/") + name + "_m" + std::to_string(m) + "/" +
             std::string(dtype_name(act));
    c.tol = Tolerance{0.0, 0.0, 0.0};  // bit-identical
    c.run = [=] {
        std::mt19937 rng(static_cast<uint32_t>(m * 7919 + n * 17 + k));
        const float scale = 1.0f / std::sqrt(static_cast<float>(k));
        auto da = upload_as(act, rounded(act, normal(rng, static_cast<size_t>(m * k))));
        auto dw =
            upload_as(act, rounded(act, normal(rng, static_cast<size_t>(n * k), 0.0f, scale)));
        const int64_t n2 = 3352, k2 = 768;  // the product in between
        auto da2 = upload_as(act, rounded(act, normal(rng, static_cast<size_t>(m * k2))));
        auto dw2 = upload_as(act, normal(rng, static_cast<size_t>(n2 * k2), 0.0f, 0.03f));
        const size_t bytes = static_cast<size_t>(m * n) * dtype_size(act);
        cuda::DeviceBuffer y1(bytes), y2(bytes), y3(bytes), y_other(m * n2 * dtype_size(act));
        auto gemm = cuda::Gemm::create();
        if (!gemm) throw std::runtime_error(gemm.status().message());
        gemm->set_decode_kernel(true);
        if (!gemm->uses_decode_kernel(da.data(), k, dw.data(), act, m, n, k, act) ||
            !gemm->uses_decode_kernel(da2.data(), k2, dw2.data(), act, m, n2, k2, act))
            throw std::runtime_error("the products do not take the decode GEMM");
        cuda::Stream stream;
        const cudaStream_t s = stream.get();
        auto run = [&](cuda::DeviceBuffer& y) {
            gemm->run(da.data(), k, dw.data(), y.data(), n, act, m, n, k, act, s);
        };
        run(y1);
        gemm->run(da2.data(), k2, dw2.data(), y_other.data(), n2, act, m, n2, k2, act, s);
        run(y2);
        cuda::Graph g = cuda::Graph::capture(s, [&] { run(y3); });
        DUALITY_CUDA_CHECK(cudaMemsetAsync(y3.data(), 0, bytes, s));
        g.launch(s);
        g.launch(s);
        stream.sync();
        const auto get = [&](const cuda::DeviceBuffer& y) {
            return download_as_f32(act, y.data(), static_cast<size_t>(m * n));
        };
        const std::vector<float> first = get(y1);
        return std::vector<Output>{{"rerun", first, get(y2)}, {"graph", first, get(y3)}};
    };
    register_case(std::move(c));
}

DUALITY_OP_CASES(gemm_decode_repeat) {
    for (DType act : {DType::kF16, DType::kBF16}) {
        add_decode_repeat_case("out_proj_2.7b", 64, 2560, 5120, act);  // every tile split
        add_decode_repeat_case("in_proj_2.7b", 33, 10576, 2560, act);
    }
}

}  // namespace
}  // namespace duality::optest
