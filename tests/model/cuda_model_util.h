// Shared by the whole-model CUDA tests (test_cuda_model*.cpp): comparisons of logits, the CUDA
// load options, environment switches for a scope, the bundled model in bf16, prompts and greedy
// pieces for batched steps.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <initializer_list>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "duality/model.h"
#include "duality/tokenizer.h"
#include "model/golden.h"
#include "test_util.h"

namespace duality::cuda_test {

#define REQUIRE_GPU() \
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device"

inline int64_t argmax(const float* row, int64_t n) {
    return std::max_element(row, row + n) - row;
}

inline double max_abs(const std::vector<float>& v) {
    double m = 0;
    for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
    return m;
}

inline double max_err(const std::vector<float>& a, const std::vector<float>& b) {
    double e = 0;
    for (size_t i = 0; i < a.size(); ++i)
        e = std::max(e, static_cast<double>(std::fabs(a[i] - b[i])));
    return e;
}

inline double rel_l2(const std::vector<float>& a, const std::vector<float>& ref) {
    double d = 0, r = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        d += (a[i] - ref[i]) * static_cast<double>(a[i] - ref[i]);
        r += ref[i] * static_cast<double>(ref[i]);
    }
    return std::sqrt(d / std::max(r, 1e-30));
}

inline LoadOptions cuda_options(DType dtype, int n_slots = 4) {
    LoadOptions o;
    o.device = Device::kCuda;
    o.dtype = dtype;
    o.n_slots = n_slots;
    return o;
}

// Sets environment variables for its lifetime and restores what was there before.
class ScopedEnv {
  public:
    ScopedEnv(std::initializer_list<std::pair<const char*, const char*>> vars) {
        for (const auto& [name, value] : vars) {
            const char* old = std::getenv(name);
            saved_.push_back({name, old != nullptr, old ? old : ""});
            setenv(name, value, 1);
        }
    }
    ~ScopedEnv() {
        for (const Saved& s : saved_) {
            if (s.had)
                setenv(s.name.c_str(), s.value.c_str(), 1);
            else
                unsetenv(s.name.c_str());
        }
    }
    ScopedEnv(const ScopedEnv&) = delete;
    ScopedEnv& operator=(const ScopedEnv&) = delete;

  private:
    struct Saved {
        std::string name;
        bool had;
        std::string value;
    };
    std::vector<Saved> saved_;
};

// The logits of one step of sequences 0..n_seq-1 (sequence s in slot s, fed pieces[s]); empty,
// with a test failure, if the step fails.
inline std::vector<float> step_logits(Model& m, int n_seq,
                                      const std::vector<std::vector<int32_t>>& pieces) {
    std::vector<SeqInput> batch;
    for (int s = 0; s < n_seq; ++s) batch.push_back({s, pieces[static_cast<size_t>(s)]});
    auto l = m.step(batch);
    EXPECT_TRUE(l.is_ok()) << l.status().message();
    return l.is_ok() ? *l : std::vector<float>{};
}

// The bundled model with options o, loaded with GEMM tuning off (so that models loaded side by
// side pick the same GEMM algorithms) and with `vars` set; load_bundled_bf16: in bf16 for n_slots
// sequences.
inline auto load_bundled(const LoadOptions& o,
                         std::initializer_list<std::pair<const char*, const char*>> vars) {
    ScopedEnv tune({{"DUALITY_GEMM_TUNE", "0"}});
    ScopedEnv env(vars);
    return Model::load(test::bundled_model_dir(), o);
}
inline auto load_bundled_bf16(int n_slots,
                              std::initializer_list<std::pair<const char*, const char*>> vars) {
    return load_bundled(cuda_options(DType::kBF16, n_slots), vars);
}

// n prompts, prompt s of base + grow·s tokens, its token i = (s·a + i·b) mod vocab.
inline std::vector<std::vector<int32_t>> prompts(int n, int base, int grow, int a, int b,
                                                 int64_t vocab) {
    std::vector<std::vector<int32_t>> tokens(static_cast<size_t>(n));
    for (int s = 0; s < n; ++s)
        for (int i = 0; i < base + grow * s; ++i)
            tokens[static_cast<size_t>(s)].push_back(static_cast<int32_t>((s * a + i * b) % vocab));
    return tokens;
}

// n one-token pieces: for each of the first n_seq sequences its greedy token from a step's
// logits {n_seq, vocab} (the others empty).
inline std::vector<std::vector<int32_t>> greedy_pieces(const std::vector<float>& logits, int n_seq,
                                                       int n, int64_t vocab) {
    std::vector<std::vector<int32_t>> next(static_cast<size_t>(n));
    for (int s = 0; s < n_seq; ++s)
        next[static_cast<size_t>(s)] = {
            static_cast<int32_t>(argmax(logits.data() + static_cast<int64_t>(s) * vocab, vocab))};
    return next;
}

}  // namespace duality::cuda_test
