// Sampling cases: cuda::sample against sampling::argmax / sampling::sample_row, token for token
// (ids compared as floats with tolerance 0). Padded columns [vocab, ld) hold 1e30 so that a
// kernel reading past vocab would pick them.
#include <algorithm>
#include <cmath>
#include <iterator>

#include "duality/sampling.h"
#include "ops/cuda/op_util.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

enum class Dist {
    kFlat,       // N(0, 1): thousands of candidates, exercises the windows after window 0
    kPeaked,     // N(0, 4): LM-like, the survivors fit in window 0
    kTies,       // N(0, 2) rounded to 0.5: many exact ties everywhere
    kTopTies,    // integers 0..3: thousands of tokens tie for the max
    kSignedZero  // all zeros, -0.0 first; a few -inf
};

std::vector<float> make_row(std::mt19937& rng, Dist dist, int64_t vocab, int64_t ld) {
    std::vector<float> row(static_cast<size_t>(ld), 1e30f);
    std::normal_distribution<float> n1(0.0f, 1.0f), n2(0.0f, 2.0f), n4(0.0f, 4.0f);
    std::uniform_int_distribution<int> u4(0, 3), any(0, static_cast<int>(vocab) - 1);
    for (int64_t i = 0; i < vocab; ++i) {
        float& v = row[static_cast<size_t>(i)];
        switch (dist) {
            case Dist::kFlat:
                v = n1(rng);
                break;
            case Dist::kPeaked:
                v = n4(rng);
                break;
            case Dist::kTies:
                v = std::round(n2(rng) * 2.0f) / 2.0f;
                break;
            case Dist::kTopTies:
                v = static_cast<float>(u4(rng));
                break;
            case Dist::kSignedZero:
                v = 0.0f;
                break;
        }
    }
    if (dist == Dist::kSignedZero) {
        row[0] = -0.0f;
        for (int j = 0; j < 5; ++j) row[static_cast<size_t>(any(rng))] = -INFINITY;
        row[0] = -0.0f;
    }
    return row;
}

// Runs cuda::sample on rows {rows, ld} with one DeviceSampling per row.
std::vector<float> gpu_sample(const std::vector<float>& logits, int64_t ld, int64_t vocab,
                              const std::vector<cuda::DeviceSampling>& params) {
    const auto rows = static_cast<int64_t>(params.size());
    auto d_logits = upload_f32(logits);
    auto d_params = cuda::to_device(std::span<const cuda::DeviceSampling>(params));
    cuda::DeviceBuffer d_ids(static_cast<size_t>(rows) * sizeof(int32_t));
    cuda::DeviceBuffer ws(cuda::sample_workspace_bytes(rows, vocab));
    cuda::sample(d_logits.as<float>(), ld, rows, vocab, d_params.as<cuda::DeviceSampling>(),
                 d_ids.as<int32_t>(), ws.data(), nullptr);
    DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
    const auto ids = cuda::to_host<int32_t>(d_ids.data(), static_cast<size_t>(rows));
    return std::vector<float>(ids.begin(), ids.end());
}

struct SampleCase {
    const char* name;
    Dist dist;
    int64_t vocab, ld, rows;
    bool greedy;      // temperature 0 on every row
    int fixed_top_k;  // > 0: every row uses this top_k at temperature 1, no top-p/min-p
    int rounds;       // fresh (seed, step) pairs per round
};

void add_case(const SampleCase& s) {
    OpCase c;
    c.name = std::string("sample/") + s.name + "_V" + std::to_string(s.vocab) + "_ld" +
             std::to_string(s.ld) + "_r" + std::to_string(s.rows) + "/f32";
    c.tol = {0.0, 0.0, 0.0};
    c.run = [s] {
        std::mt19937 rng(static_cast<uint32_t>(s.vocab * 7919 + s.rows * 31 +
                                               static_cast<int>(s.dist) * 101 + s.fixed_top_k));
        std::mt19937_64 seeds(rng());
        std::uniform_real_distribution<float> temp(0.5f, 1.5f), top_p(0.5f, 1.0f),
            min_p(0.0f, 0.2f), coin(0.0f, 1.0f);
        const int top_ks[] = {0, 1, 5, 50, 0, 50, 300, 5000};
        std::vector<float> logits;
        for (int64_t r = 0; r < s.rows; ++r) {
            const auto row = make_row(rng, s.dist, s.vocab, s.ld);
            logits.insert(logits.end(), row.begin(), row.end());
        }
        std::vector<float> expected, actual;
        for (int round = 0; round < s.rounds; ++round) {
            std::vector<cuda::DeviceSampling> params(static_cast<size_t>(s.rows));
            for (int64_t r = 0; r < s.rows; ++r) {
                SamplingParams p;
                if (s.greedy) {
                    p.temperature = 0.0f;
                } else if (s.fixed_top_k > 0) {
                    p.top_k = s.fixed_top_k;
                } else {
                    p.temperature = temp(rng);
                    p.top_k = top_ks[rng() % std::size(top_ks)];
                    p.top_p = coin(rng) < 0.3f ? 1.0f : top_p(rng);
                    p.min_p = coin(rng) < 0.4f ? 0.0f : min_p(rng);
                }
                p.seed = seeds();
                const uint64_t step = seeds() % 100000;
                const std::span<const float> row(logits.data() + r * s.ld,
                                                 static_cast<size_t>(s.vocab));
                expected.push_back(static_cast<float>(
                    s.greedy ? sampling::argmax(row) : sampling::sample_row(row, p, step)));
                params[static_cast<size_t>(r)] = {p.temperature, p.top_k, p.top_p,
                                                  p.min_p,       p.seed,  step};
            }
            const auto ids = gpu_sample(logits, s.ld, s.vocab, params);
            actual.insert(actual.end(), ids.begin(), ids.end());
        }
        return std::vector<Output>{{"ids", expected, actual}};
    };
    register_case(std::move(c));
}

DUALITY_OP_CASES(sample) {
    const SampleCase cases[] = {
        // Greedy: the CPU argmax, lowest id on ties (-0.0 == +0.0 as on the CPU).
        {"greedy_peaked", Dist::kPeaked, 50277, 50288, 64, true, 0, 1},
        {"greedy_flat", Dist::kFlat, 50277, 50288, 64, true, 0, 1},
        {"greedy_top_ties", Dist::kTopTies, 50277, 50288, 64, true, 0, 1},
        {"greedy_signed_zero", Dist::kSignedZero, 1000, 1003, 8, true, 0, 1},
        {"greedy_tiny", Dist::kPeaked, 1, 1, 3, true, 0, 1},
        // top_k = 1 at temperature 1 is greedy as well (through the sampling path).
        {"top_k1_top_ties", Dist::kTopTies, 50277, 50288, 64, false, 1, 2},
        {"top_k1_ties", Dist::kTies, 50277, 50288, 64, false, 1, 2},
        {"top_k1_peaked", Dist::kPeaked, 50277, 50288, 64, false, 1, 2},
        // Random temperature / top-k / top-p / min-p against sample_row.
        {"random_peaked", Dist::kPeaked, 50277, 50288, 128, false, 0, 4},
        {"random_flat", Dist::kFlat, 50277, 50288, 64, false, 0, 2},
        {"random_ties", Dist::kTies, 50277, 50288, 64, false, 0, 3},
        {"random_top_ties", Dist::kTopTies, 50277, 50288, 32, false, 0, 2},
        {"random_peaked", Dist::kPeaked, 250, 256, 256, false, 0, 4},
        {"random_flat", Dist::kFlat, 250, 256, 256, false, 0, 4},
        {"random_ties", Dist::kTies, 4099, 4100, 128, false, 0, 4},
        {"random_peaked", Dist::kPeaked, 256000, 256000, 16, false, 0, 2},
        // Plain temperature sampling (no truncation) over the whole vocabulary.
        {"top_k_all_peaked", Dist::kPeaked, 50277, 50288, 64, false, 50277, 2},
        {"top_k_6000_flat", Dist::kFlat, 50277, 50288, 32, false, 6000, 2},
    };
    for (const SampleCase& s : cases) add_case(s);
}

}  // namespace
}  // namespace duality::optest
