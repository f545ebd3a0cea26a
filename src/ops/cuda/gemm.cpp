#include "ops/cuda/gemm.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/env.h"
#include "ops/cuda/gemm_decode.h"
#include "ops/cuda/gemm_small_m.h"

namespace duality::cuda {
namespace {

cudaDataType_t cuda_type(DType t) {
    switch (t) {
        case DType::kF32:
            return CUDA_R_32F;
        case DType::kF16:
            return CUDA_R_16F;
        case DType::kBF16:
            return CUDA_R_16BF;
        default:
            fail("Gemm: not a float dtype", "cuda_type", __FILE__, __LINE__);
    }
}

// The largest power of two (up to 256) dividing v.
int pow2_dividing(uint64_t v) {
    int a = 256;
    while (a > 1 && v % static_cast<uint64_t>(a)) a /= 2;
    return a;
}

// The same of an address: cuBLASLt picks kernels by it.
int alignment(const void* p) {
    return pow2_dividing(reinterpret_cast<uintptr_t>(p));
}

// Gemm::tune replaces cuBLASLt's first choice only by a candidate at least 3% faster, and only
// for products of at most kTuneMaxM rows (decode batches) in f16/bf16.
constexpr float kTuneMargin = 0.97f;
constexpr int64_t kTuneMaxM = 256;

template <typename T>
T algo_config(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attr) {
    T v{};
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof v, &written) !=
        CUBLAS_STATUS_SUCCESS)
        return T{};
    return v;
}

// "id 66 tile 157 split 1 stages 35 cluster 4": an algorithm in the tuning log.
std::string describe(const cublasLtMatmulAlgo_t& algo) {
    return "id " + std::to_string(algo_config<int32_t>(algo, CUBLASLT_ALGO_CONFIG_ID)) + " tile " +
           std::to_string(algo_config<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_TILE_ID)) + " split " +
           std::to_string(algo_config<int32_t>(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM)) +
           " stages " +
           std::to_string(algo_config<uint32_t>(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID)) +
           " cluster " +
           std::to_string(algo_config<uint16_t>(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID));
}

// The next power of two >= m: the m of an algorithm search.
int64_t m_bucket(int64_t m) {
    int64_t b = 1;
    while (b < m) b *= 2;
    return b;
}

}  // namespace

struct Gemm::Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t w = nullptr, a = nullptr, y = nullptr;
    cublasLtMatmulAlgo_t algo[Gemm::kMaxAlgos]{};  // the heuristic's candidates, best first
    int n_algo = 0;
    ~Plan() {
        if (op) cublasLtMatmulDescDestroy(op);
        if (w) cublasLtMatrixLayoutDestroy(w);
        if (a) cublasLtMatrixLayoutDestroy(a);
        if (y) cublasLtMatrixLayoutDestroy(y);
    }
};

int64_t prefetch_budget_from_env(int64_t fallback) {
    const char* env = std::getenv("DUALITY_GEMM_PREFETCH_MB");
    if (!env) return fallback;
    const std::string_view v(env);
    if (v == "all") return -1;
    int64_t mib = -1;
    const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), mib);
    if (ec == std::errc{} && end == v.data() + v.size() && mib >= 0 && mib <= (int64_t{1} << 20))
        return mib << 20;
    std::fprintf(stderr,
                 "duality: DUALITY_GEMM_PREFETCH_MB=\"%s\" is not a number of MiB (0 to 1048576) "
                 "or \"all\"; using %lld MiB\n",
                 env, static_cast<long long>(fallback >> 20));
    return fallback;
}

Gemm::Gemm() = default;

Result<Gemm> Gemm::create(size_t workspace_bytes, int candidates) {
    Gemm g;
    g.candidates_ = std::clamp(candidates, 1, kMaxAlgos);
    if (cublasLtCreate(&g.handle_) != CUBLAS_STATUS_SUCCESS)
        return Status{StatusCode::kInternal, "cannot create a cuBLASLt handle"};
    DUALITY_ASSIGN_OR_RETURN(g.workspace_,
                             DeviceBuffer::allocate(workspace_bytes, "the cuBLASLt workspace"));
    DUALITY_ASSIGN_OR_RETURN(
        g.decode_sync_, DeviceBuffer::allocate(kGemmDecodeSyncBytes, "the decode GEMM counters"));
    DUALITY_CUDA_CHECK(cudaMemset(g.decode_sync_.data(), 0, g.decode_sync_.bytes()));
    DUALITY_CUDA_CHECK(cudaDeviceSynchronize());  // zero before any stream's first use
    // tune() prints its timings when DUALITY_GEMM_TUNE_LOG is set (to anything but 0).
    g.log_ = std::getenv("DUALITY_GEMM_TUNE_LOG") && !env_is("DUALITY_GEMM_TUNE_LOG", "0");
    if (env_is("DUALITY_DECODE_GEMM", "0")) g.decode_ = DecodeKernel::kOff;
    if (env_is("DUALITY_DECODE_GEMM", "1")) g.decode_ = DecodeKernel::kOn;
    g.prefetch_bytes_ = prefetch_budget_from_env(kSmallMPrefetchBytes);
    return g;
}

Gemm::Gemm(Gemm&& o) noexcept
    : handle_(o.handle_),
      workspace_(std::move(o.workspace_)),
      decode_sync_(std::move(o.decode_sync_)),
      plans_(std::move(o.plans_)),
      algos_(std::move(o.algos_)),
      small_m_(o.small_m_),
      decode_(o.decode_),
      prefetch_bytes_(o.prefetch_bytes_),
      algo_index_(o.algo_index_),
      candidates_(o.candidates_),
      log_(o.log_) {
    o.handle_ = nullptr;
}

Gemm& Gemm::operator=(Gemm&& o) noexcept {
    if (this != &o) {
        plans_.clear();
        if (handle_) cublasLtDestroy(handle_);
        handle_ = o.handle_;
        o.handle_ = nullptr;
        workspace_ = std::move(o.workspace_);
        decode_sync_ = std::move(o.decode_sync_);
        plans_ = std::move(o.plans_);
        algos_ = std::move(o.algos_);
        small_m_ = o.small_m_;
        decode_ = o.decode_;
        prefetch_bytes_ = o.prefetch_bytes_;
        algo_index_ = o.algo_index_;
        candidates_ = o.candidates_;
        log_ = o.log_;
    }
    return *this;
}

Gemm::~Gemm() {
    plans_.clear();
    if (handle_) cublasLtDestroy(handle_);
}

Gemm::Key Gemm::key(const void* a, int64_t lda, const void* w, const void* y, int64_t ldy,
                    DType y_dtype, int64_t m, int64_t n, int64_t k, DType act, int splits) {
    int align_a = alignment(a), align_w = alignment(w), align_y = alignment(y);
    if (splits > 1) {  // what every batch of the split-k call has (its slices start further on)
        const uint64_t slice = static_cast<uint64_t>(k / splits) * dtype_size(act);
        align_a = std::min(align_a, pow2_dividing(slice));
        align_w = std::min(align_w, pow2_dividing(slice));
        align_y =
            std::min(align_y, pow2_dividing(static_cast<uint64_t>(m * ldy) * dtype_size(y_dtype)));
    }
    return Key{
        m,       n,       k,       lda,   ldy, static_cast<int>(act), static_cast<int>(y_dtype),
        align_a, align_w, align_y, splits};
}

int Gemm::algo_count(const void* a, int64_t lda, const void* w, const void* y, int64_t ldy,
                     DType y_dtype, int64_t m, int64_t n, int64_t k, DType act) {
    return plan(key(a, lda, w, y, ldy, y_dtype, m, n, k, act)).n_algo;
}

std::vector<cublasLtMatmulAlgo_t> Gemm::search(cublasLtMatmulDesc_t op, cublasLtMatrixLayout_t w,
                                               cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t y,
                                               int align_a, int align_w, int align_y) {
    cublasLtMatmulPreference_t pref = nullptr;
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
    const uint64_t ws = workspace_.bytes();
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const uint32_t al_w = static_cast<uint32_t>(align_w), al_a = static_cast<uint32_t>(align_a),
                   al_y = static_cast<uint32_t>(align_y);
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &al_w, sizeof al_w));
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &al_a, sizeof al_a));
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &al_y, sizeof al_y));
    DUALITY_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
        pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &al_y, sizeof al_y));
    cublasLtMatmulHeuristicResult_t result[kMaxAlgos]{};
    int found = 0;
    // A failed search proposes nothing: the caller searches the exact shape or reports it.
    if (cublasLtMatmulAlgoGetHeuristic(handle_, op, w, a, y, y, pref, candidates_, result,
                                       &found) != CUBLAS_STATUS_SUCCESS)
        found = 0;
    cublasLtMatmulPreferenceDestroy(pref);
    std::vector<cublasLtMatmulAlgo_t> algos;
    for (int i = 0; i < found; ++i) algos.push_back(result[i].algo);
    return algos;
}

Gemm::Plan& Gemm::plan(const Key& key) {
    auto it = plans_.find(key);
    if (it != plans_.end()) return *it->second;
    const auto [m, n, k, lda, ldy, act_i, y_i, align_a, align_w, align_y, splits] = key;
    const DType act = static_cast<DType>(act_i), y_dtype = static_cast<DType>(y_i);
    auto p = std::make_unique<Plan>();
    // Column-major view: yᵀ {n, m} = op(w) {n, k} · aᵀ {k, m}, with w stored as {k, n}, ld k.
    DUALITY_CUBLAS_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    const cublasOperation_t trans = CUBLAS_OP_T, no_trans = CUBLAS_OP_N;
    DUALITY_CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans, sizeof trans));
    DUALITY_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB,
                                                        &no_trans, sizeof no_trans));
    // Split-k (run_split_k): batch s of the strided batch is the k slice [s·ks, (s + 1)·ks) of
    // a and w, and the part {rows, n} at s·rows·ldy of y.
    const int64_t ks = k / splits;
    auto batched = [&](cublasLtMatrixLayout_t l, int64_t stride) {
        if (splits == 1) return;
        const int32_t count = splits;
        DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT,
                                                              &count, sizeof count));
        DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutSetAttribute(
            l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof stride));
    };
    auto layouts = [&](int64_t rows, cublasLtMatrixLayout_t* la, cublasLtMatrixLayout_t* ly) {
        DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(
            la, cuda_type(act), static_cast<uint64_t>(ks), static_cast<uint64_t>(rows), lda));
        DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(
            ly, cuda_type(y_dtype), static_cast<uint64_t>(n), static_cast<uint64_t>(rows), ldy));
        batched(*la, ks);
        batched(*ly, rows * ldy);
    };
    DUALITY_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(
        &p->w, cuda_type(act), static_cast<uint64_t>(ks), static_cast<uint64_t>(n), k));
    batched(p->w, ks);
    layouts(m, &p->a, &p->y);

    // The algorithms of this shape's bucket (m rounded up to a power of two), searched once per
    // bucket; those cuBLASLt accepts for the exact m serve this plan.
    Key bucket = key;
    std::get<0>(bucket) = m_bucket(m);
    auto found = algos_.find(bucket);
    if (found == algos_.end()) {
        cublasLtMatrixLayout_t a_b = nullptr, y_b = nullptr;
        layouts(std::get<0>(bucket), &a_b, &y_b);
        found =
            algos_.emplace(bucket, search(p->op, p->w, a_b, y_b, align_a, align_w, align_y)).first;
        cublasLtMatrixLayoutDestroy(a_b);
        cublasLtMatrixLayoutDestroy(y_b);
    }
    for (const cublasLtMatmulAlgo_t& algo : found->second) {
        cublasLtMatmulHeuristicResult_t check{};
        if (cublasLtMatmulAlgoCheck(handle_, p->op, p->w, p->a, p->y, p->y, &algo, &check) ==
                CUBLAS_STATUS_SUCCESS &&
            check.workspaceSize <= workspace_.bytes() && p->n_algo < kMaxAlgos)
            p->algo[p->n_algo++] = algo;
    }
    if (p->n_algo == 0)  // none fits this m: search for it exactly
        for (const cublasLtMatmulAlgo_t& algo :
             search(p->op, p->w, p->a, p->y, align_a, align_w, align_y))
            p->algo[p->n_algo++] = algo;
    if (p->n_algo == 0)
        fail("cuBLASLt found no algorithm",
             ("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k))
                 .c_str(),
             __FILE__, __LINE__);
    return *plans_.emplace(key, std::move(p)).first->second;
}

namespace {

// Where the decode GEMM beat cuBLASLt on an H200 (2026-12-01, bf16, `duality bench`): products
// with at most 16 rows and n ≤ 4096 (out_proj-like shapes). The 2.7b out_proj took 9.6-9.9 µs
// against cuBLASLt's 11.6-15 µs at m = 2, 8 and 16, and whole decode steps at batch 8 went from
// 3.33 to 3.23 ms (2.7b) and from 0.581 to 0.494 ms (130m). It lost on the 2.7b in_proj (n 10576:
// 17.5-19.2 against 15.7-17.8 µs) and at m = 64 (2.7b in_proj 36 against 19 µs; 130m steps at
// batch 64: 1.254 against 1.180 ms, although its ops alone were faster). Between 17 and 32 rows
// the op and step timings disagreed, so cuBLASLt keeps them.
bool decode_kernel_pays(int64_t m, int64_t n, int64_t /*k*/) {
    return m <= 16 && n <= 4096;
}

}  // namespace

bool Gemm::uses_decode_kernel(const void* a, int64_t lda, const void* w, DType y_dtype, int64_t m,
                              int64_t n, int64_t k, DType act) const {
    if (decode_ == DecodeKernel::kOff ||
        (decode_ == DecodeKernel::kAuto && !decode_kernel_pays(m, n, k)))
        return false;
    if (m < 2) return false;  // m = 1: the skinny kernel or cuBLASLt
    const std::optional<size_t> scratch = gemm_decode_workspace(a, lda, w, y_dtype, m, n, k, act);
    return scratch && *scratch <= workspace_.bytes();
}

void Gemm::run(const void* a, int64_t lda, const void* w, void* y, int64_t ldy, DType y_dtype,
               int64_t m, int64_t n, int64_t k, DType act, cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    if (small_m_ && gemm_small_m_supports(a, lda, w, y_dtype, m, k, act)) {
        gemm_small_m(a, lda, w, y, ldy, y_dtype, m, n, k, act, prefetch_bytes_, stream);
        return;
    }
    if (uses_decode_kernel(a, lda, w, y_dtype, m, n, k, act)) {
        // The partial tiles share cuBLASLt's workspace: both run in stream order.
        gemm_decode(a, lda, w, y, ldy, y_dtype, m, n, k, act, workspace_.data(), workspace_.bytes(),
                    decode_sync_.as<uint32_t>(), stream);
        return;
    }
    const Plan& p = plan(key(a, lda, w, y, ldy, y_dtype, m, n, k, act));
    const float alpha = 1.0f, beta = 0.0f;
    const int i = std::min(algo_index_, p.n_algo - 1);
    DUALITY_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.w, a, p.a, &beta, y, p.y, y,
                                        p.y, &p.algo[i], workspace_.data(), workspace_.bytes(),
                                        stream));
}

int Gemm::tune(const void* a, int64_t lda, std::span<const void* const> weights, void* y,
               int64_t ldy, DType y_dtype, int64_t m, int64_t n, int64_t k, DType act,
               cudaStream_t stream) {
    // f32 is the reference mode: its results should not depend on a timing.
    if (weights.empty() || m == 0 || n == 0 || m > kTuneMaxM || act == DType::kF32) return -1;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    DUALITY_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
    if (capturing != cudaStreamCaptureStatusNone) return -1;  // no timing inside a graph
    const void* w0 = weights[0];
    if ((small_m_ && gemm_small_m_supports(a, lda, w0, y_dtype, m, k, act)) ||
        uses_decode_kernel(a, lda, w0, y_dtype, m, n, k, act))
        return -1;
    return tune_key(key(a, lda, w0, y, ldy, y_dtype, m, n, k, act), a, weights, y, stream);
}

bool Gemm::split_k_supported(const void* a, int64_t lda, const void* w, int64_t k, int splits,
                             DType act) {
    return (act == DType::kF16 || act == DType::kBF16) && splits >= 1 &&
           k % (8 * static_cast<int64_t>(splits)) == 0 && lda % 8 == 0 && alignment(a) >= 16 &&
           alignment(w) >= 16;
}

void Gemm::run_split_k(const void* a, int64_t lda, const void* w, float* y_parts, int64_t m,
                       int64_t n, int64_t k, int splits, DType act, cudaStream_t stream) {
    if (m == 0 || n == 0) return;
    if (!split_k_supported(a, lda, w, k, splits, act))
        fail("Gemm::run_split_k: unsupported product (see split_k_supported)",
             ("k=" + std::to_string(k) + " splits=" + std::to_string(splits)).c_str(), __FILE__,
             __LINE__);
    const Plan& p = plan(key(a, lda, w, y_parts, n, DType::kF32, m, n, k, act, splits));
    const float alpha = 1.0f, beta = 0.0f;
    const int i = std::min(algo_index_, p.n_algo - 1);
    DUALITY_CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.w, a, p.a, &beta, y_parts, p.y,
                                        y_parts, p.y, &p.algo[i], workspace_.data(),
                                        workspace_.bytes(), stream));
}

int Gemm::tune_split_k(const void* a, int64_t lda, std::span<const void* const> weights,
                       float* y_parts, int64_t m, int64_t n, int64_t k, int splits, DType act,
                       cudaStream_t stream) {
    if (weights.empty() || m == 0 || n == 0 || m > kTuneMaxM ||
        !split_k_supported(a, lda, weights[0], k, splits, act))
        return -1;
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    DUALITY_CUDA_CHECK(cudaStreamIsCapturing(stream, &capturing));
    if (capturing != cudaStreamCaptureStatusNone) return -1;
    return tune_key(key(a, lda, weights[0], y_parts, n, DType::kF32, m, n, k, act, splits), a,
                    weights, y_parts, stream);
}

// tune()'s timing, for the product of key kk (its m, n, k, lda, ldy, dtypes and splits).
int Gemm::tune_key(const Key& kk, const void* a, std::span<const void* const> weights, void* y,
                   cudaStream_t stream) {
    const auto [m, n, k, lda, ldy, act_i, y_i, align_a, align_w, align_y, splits] = kk;
    const DType act = static_cast<DType>(act_i), y_dtype = static_cast<DType>(y_i);
    // Weights of another alignment would have another plan: only those of w0's are timed.
    std::vector<const void*> ws;
    for (const void* w : weights)
        if (key(a, lda, w, y, ldy, y_dtype, m, n, k, act, splits) == kk) ws.push_back(w);
    Plan& p = plan(kk);
    const int saved = candidates_;
    candidates_ = kMaxAlgos;
    std::vector<cublasLtMatmulAlgo_t> cands =
        search(p.op, p.w, p.a, p.y, align_a, align_w, align_y);
    candidates_ = saved;
    if (cands.size() < 2) return -1;

    const float alpha = 1.0f, beta = 0.0f;
    // One pass of candidate c over the weights; false (and the candidate dropped) if cuBLASLt
    // refuses to launch it.
    std::vector<bool> ok(cands.size(), true);
    auto pass = [&](size_t c) {
        for (const void* w : ws)
            if (cublasLtMatmul(handle_, p.op, &alpha, w, p.w, a, p.a, &beta, y, p.y, y, p.y,
                               &cands[c], workspace_.data(), workspace_.bytes(),
                               stream) != CUBLAS_STATUS_SUCCESS)
                ok[c] = false;
    };
    for (size_t c = 0; c < cands.size(); ++c) pass(c);  // warm-up: kernel loading, first touch
    if (!ok[0]) return -1;  // the heuristic's own choice fails: leave it to run() to report
    cudaEvent_t start = nullptr, stop = nullptr;
    DUALITY_CUDA_CHECK(cudaEventCreate(&start));
    DUALITY_CUDA_CHECK(cudaEventCreate(&stop));
    // The best of three passes per candidate, the candidates interleaved so that clock changes
    // during the timing favour none of them.
    std::vector<float> fastest(cands.size(), 0.0f);
    for (int rep = 0; rep < 3; ++rep) {
        for (size_t c = 0; c < cands.size(); ++c) {
            if (!ok[c]) continue;
            DUALITY_CUDA_CHECK(cudaEventRecord(start, stream));
            pass(c);
            DUALITY_CUDA_CHECK(cudaEventRecord(stop, stream));
            DUALITY_CUDA_CHECK(cudaEventSynchronize(stop));
            float ms = 0;
            DUALITY_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
            if (rep == 0 || ms < fastest[c]) fastest[c] = ms;
        }
    }
    DUALITY_CUDA_CHECK(cudaEventDestroy(start));
    DUALITY_CUDA_CHECK(cudaEventDestroy(stop));
    // The heuristic's first choice stays unless another is clearly faster (products that take
    // a few microseconds time alike, up to launch noise, and should not change with it).
    size_t best = 0;
    for (size_t c = 1; c < cands.size(); ++c)
        if (ok[c] && fastest[c] < fastest[best]) best = c;
    if (fastest[best] > kTuneMargin * fastest[0]) best = 0;
    if (log_) {
        std::fprintf(stderr, "gemm tune m=%lld n=%lld k=%lld splits %d (%zu weights): chose %zu\n",
                     static_cast<long long>(m), static_cast<long long>(n),
                     static_cast<long long>(k), splits, ws.size(), best);
        for (size_t c = 0; c < cands.size(); ++c)
            if (ok[c])
                std::fprintf(stderr, "  %zu %8.2f us  %s\n", c,
                             1e3 * fastest[c] / static_cast<double>(ws.size()),
                             describe(cands[c]).c_str());
    }
    // The choice first, the other usable candidates in the heuristic's order: for this plan,
    // and for the plans of other m of the bucket made from now on (those that cuBLASLt accepts
    // for their m).
    std::vector<cublasLtMatmulAlgo_t> order{cands[best]};
    for (size_t c = 0; c < cands.size(); ++c)
        if (ok[c] && c != best) order.push_back(cands[c]);
    p.n_algo = 0;
    for (const cublasLtMatmulAlgo_t& algo : order) p.algo[p.n_algo++] = algo;
    Key bucket = kk;
    std::get<0>(bucket) = m_bucket(m);
    algos_[bucket] = std::move(order);
    return static_cast<int>(best);
}

}  // namespace duality::cuda
