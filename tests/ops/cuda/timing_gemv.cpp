// How close the batch-1 products come to what HBM allows: the 2.7b's and the 130m's in_proj and
// out_proj as the decode step runs them (gemm_small_m and gemv_fused, m = 1), against a plain read
// stream of the same bytes. The 2.7b's batch-1 step is about 75% of its weight + state bound on an
// H100 (issue 4 asks for 85%), and in_proj's two products are most of a layer's bytes, so this
// says how much of the gap the products themselves leave: each alone, [xBC | dt] and z side by
// side on two streams (the model's early fork), the whole product in one launch, with and without
// the L2 prefetch before the wait, with rows by bulk copy; [xBC | dt] also in the conv form the
// model runs (the conv on its xBC columns), alone, before z and beside it. Every call reads the
// next of enough copies of the weights that no call finds its own in L2 (kCopiesBytes); calls
// follow each other on one stream (two for the pair) with PDL, as a step's products do. Prints µs
// per call, GB/s and the fraction of the rate of a read stream of in_proj's bytes, and checks the
// values the last calls wrote. Also: the rate of a 1 GiB read stream (the ceiling for this access
// pattern), and the LM head against a read stream of its bytes. Disabled by default (a benchmark,
// not a test of speed); run it on a GPU with
//   duality_tests --gtest_also_run_disabled_tests --gtest_filter='GemvTiming.*'
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <vector>

#include "core/cuda/check.h"
#include "core/cuda/device_buffer.h"
#include "core/cuda/stream.h"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/ops.h"
#include "ops/cuda/stream_kernels.h"
#include "ops/cuda/timing_util.h"

namespace duality::optest {
namespace {

constexpr int kIters = 64, kWarmup = 8;
// Copies of each weight: at least this many bytes in all, 2.5 times an H100's or H200's L2.
constexpr double kCopiesBytes = 128e6;
constexpr DType kAct = DType::kBF16;

// A model's product shapes: in_proj {d_in_proj, d_model}, out_proj {d_model, d_inner}.
struct Shape {
    const char* name;
    int64_t d_model, d_inner, d_in_proj, n_head;
};

// Copies of a {rows, cols} bf16 weight, kCopiesBytes or more in all (at least 2), every element
// 0.01 (the values do not matter).
std::vector<cuda::DeviceBuffer> weights(int64_t rows, int64_t cols) {
    const std::vector<__nv_bfloat16> host(static_cast<size_t>(rows * cols),
                                          __float2bfloat16(0.01f));
    const double bytes = static_cast<double>(host.size() * sizeof(__nv_bfloat16));
    const int copies = std::max(2, static_cast<int>(std::ceil(kCopiesBytes / bytes)));
    std::vector<cuda::DeviceBuffer> w;
    for (int l = 0; l < copies; ++l) {
        w.emplace_back(host.size() * sizeof(__nv_bfloat16));
        DUALITY_CUDA_CHECK(
            cudaMemcpy(w.back().data(), host.data(), w.back().bytes(), cudaMemcpyHostToDevice));
    }
    return w;
}

// Milliseconds per call of f(i) on `s` (timing_util.h), after kWarmup calls.
double time_on(cudaStream_t s, const std::function<void(int)>& f) {
    return time_ms(f, kIters, kWarmup, s);
}

void time_shape(const Shape& sh, int sms) {
    const int64_t D = sh.d_model, E = sh.d_inner, n_in = sh.d_in_proj, n_xbc = n_in - E;
    const auto in_proj = weights(n_in, D), out_proj = weights(D, E);
    const std::vector<__nv_bfloat16> ones(static_cast<size_t>(E), __float2bfloat16(1.0f));
    cuda::DeviceBuffer u(ones.size() * 2), g(ones.size() * 2), y(static_cast<size_t>(n_in) * 2);
    // out_proj's outputs: the plain product's {D}, the residual form's residual (f32, zero),
    // next-norm weight (f32, one), u and partial sums.
    cuda::DeviceBuffer g_out(static_cast<size_t>(D) * 2), res(static_cast<size_t>(D) * 4),
        w_next(static_cast<size_t>(D) * 4), u_next(static_cast<size_t>(D) * 2),
        out_parts(static_cast<size_t>(D) * 4);
    DUALITY_CUDA_CHECK(cudaMemset(res.data(), 0, res.bytes()));
    const std::vector<float> one(static_cast<size_t>(D), 1.0f);
    DUALITY_CUDA_CHECK(
        cudaMemcpy(w_next.data(), one.data(), w_next.bytes(), cudaMemcpyHostToDevice));
    DUALITY_CUDA_CHECK(cudaMemcpy(u.data(), ones.data(), u.bytes(), cudaMemcpyHostToDevice));
    DUALITY_CUDA_CHECK(cudaMemcpy(g.data(), ones.data(), g.bytes(), cudaMemcpyHostToDevice));
    // The input scale of the fused forms: D parts summing to D (scale about 1).
    const int64_t n_part = cuda::gemv_fused_parts(D);
    const std::vector<float> parts(static_cast<size_t>(n_part), static_cast<float>(D) / n_part);
    cuda::DeviceBuffer ssq(parts.size() * 4), sums(static_cast<size_t>(sms) * 8 * 4);
    DUALITY_CUDA_CHECK(cudaMemcpy(ssq.data(), parts.data(), ssq.bytes(), cudaMemcpyHostToDevice));
    const RowScale scale{ssq.as<float>(), n_part, static_cast<float>(D), 1e-5f};
    cuda::Stream s1, s2;
    cuda::Event fork, join;

    const double in_bytes = static_cast<double>(n_in * D * 2), out_bytes = double(D * E * 2);
    const auto w_in = [&](int i) {
        return in_proj[static_cast<size_t>(i) % in_proj.size()].data();
    };
    const auto w_out = [&](int i) {
        return out_proj[static_cast<size_t>(i) % out_proj.size()].data();
    };
    // Row r of in_proj ([z | xBC | dt]): the weights of column r on.
    const auto rows_at = [&](int i, int64_t r) {
        return static_cast<const char*>(w_in(i)) + r * D * 2;
    };
    const auto product = [&](const void* w, int64_t n, int64_t k, void* out, int64_t prefetch,
                             cudaStream_t s) {
        cuda::gemm_small_m(u.data(), k, w, out, n, kAct, 1, n, k, kAct, prefetch, s);
    };
    const auto fused = [&](const void* w, int64_t n, bool bulk, void* out, cudaStream_t s) {
        cuda::GemvFused f;
        f.in_scale = scale;
        f.y = out;
        f.bulk = bulk;
        cuda::gemv_fused(u.data(), w, n, D, kAct, cuda::kSmallMPrefetchBytes, f, s);
    };

    double stream_rate = 0;  // bytes per ms of the read stream of in_proj's bytes
    std::printf("\n%s: in_proj %.1f MB {%lld, %lld}, out_proj %.1f MB {%lld, %lld}\n", sh.name,
                in_bytes / 1e6, static_cast<long long>(n_in), static_cast<long long>(D),
                out_bytes / 1e6, static_cast<long long>(D), static_cast<long long>(E));
    const auto report = [&](const char* what, double ms, double bytes) {
        std::printf("  %-52s %8.2f us %7.0f GB/s", what, 1e3 * ms, bytes / (ms * 1e-3) / 1e9);
        if (stream_rate > 0)
            std::printf("  %5.1f%% of the read stream's rate", 100 * bytes / ms / stream_rate);
        std::printf("\n");
    };
    for (int in_flight : {4, 8}) {
        const double ms = time_on(s1.get(), [&](int i) {
            read_stream(static_cast<const float*>(w_in(i)), n_in * D / 8, in_flight, sms,
                        sums.as<float>(), s1.get());
        });
        report(in_flight == 4 ? "read stream, in_proj's bytes (4 float4 in flight)"
                              : "read stream, in_proj's bytes (8 float4 in flight)",
               ms, in_bytes);
        stream_rate = std::max(stream_rate, in_bytes / ms);
    }
    report("read stream, out_proj's bytes (4 float4 in flight)",
           time_on(s1.get(),
                   [&](int i) {
                       read_stream(static_cast<const float*>(w_out(i)), D * E / 8, 4, sms,
                                   sums.as<float>(), s1.get());
                   }),
           out_bytes);
    const cudaStream_t a = s1.get(), b = s2.get();
    report("in_proj whole, gemm_small_m, no prefetch",
           time_on(a, [&](int i) { product(w_in(i), n_in, D, y.data(), 0, a); }), in_bytes);
    report(
        "in_proj whole, gemm_small_m, 8 MB prefetch",
        time_on(a,
                [&](int i) { product(w_in(i), n_in, D, y.data(), cuda::kSmallMPrefetchBytes, a); }),
        in_bytes);
    report("in_proj whole, gemv_fused (scaled)",
           time_on(a, [&](int i) { fused(w_in(i), n_in, false, y.data(), a); }), in_bytes);
    if (cuda::gemv_fused_bulk_supported(D, kAct))
        report("in_proj whole, gemv_fused, rows by bulk copy",
               time_on(a, [&](int i) { fused(w_in(i), n_in, true, y.data(), a); }), in_bytes);
    char* y_xbc = y.as<char>() + E * 2;
    report("[xBC | dt] alone, gemv_fused store form",
           time_on(a, [&](int i) { fused(rows_at(i, E), n_xbc, false, y_xbc, a); }),
           double(n_xbc * D * 2));
    report("z alone, gemv_fused", time_on(a, [&](int i) { fused(w_in(i), E, false, y.data(), a); }),
           double(E * D * 2));
    // z's product on the second stream beside [xBC | dt]'s, joined back (the model's early fork).
    const auto pair = [&](int i) {
        fork.order(a, b);
        fused(w_in(i), E, false, y.data(), b);
        fused(rows_at(i, E), n_xbc, false, y_xbc, a);
        join.order(b, a);
    };
    report("[xBC | dt] and z side by side (two streams)", time_on(a, pair), in_bytes);
    // [xBC | dt] as the model's batch-1 step runs it: the conv form (GemvFused::kConv, the
    // width-4 conv on its xBC columns into conv_out and the slot's window), alone, then z after it
    // on the same stream, and z beside it (the early fork).
    const int64_t channels = n_xbc - sh.n_head;
    const std::vector<float> taps(static_cast<size_t>(channels * 4), 0.25f);
    cuda::DeviceBuffer conv_w(taps.size() * 4), window(static_cast<size_t>(3 * channels) * 4),
        conv_out(static_cast<size_t>(channels) * 2), slot(4);
    DUALITY_CUDA_CHECK(
        cudaMemcpy(conv_w.data(), taps.data(), conv_w.bytes(), cudaMemcpyHostToDevice));
    DUALITY_CUDA_CHECK(cudaMemset(window.data(), 0, window.bytes()));
    DUALITY_CUDA_CHECK(cudaMemset(slot.data(), 0, slot.bytes()));
    const auto conv_form = [&](int i, cudaStream_t s) {
        cuda::GemvFused f;
        f.epilogue = cuda::GemvFused::kConv;
        f.in_scale = scale;
        f.y = y_xbc;
        f.conv_begin = 0;
        f.conv.batch.slots = slot.as<int32_t>();
        f.conv.channels = channels;
        f.conv.width = 4;
        f.conv.weight = conv_w.as<float>();
        f.conv.state = window.as<float>();
        f.conv.state_slot_stride = 3 * channels;
        f.conv.out = conv_out.data();
        cuda::gemv_fused(u.data(), rows_at(i, E), n_xbc, D, kAct, cuda::kSmallMPrefetchBytes, f, s);
    };
    report("[xBC | dt] alone, conv form (the model's)", time_on(a, [&](int i) { conv_form(i, a); }),
           double(n_xbc * D * 2));
    report("[xBC | dt] conv form, then z (one stream)",
           time_on(a,
                   [&](int i) {
                       conv_form(i, a);
                       fused(w_in(i), E, false, y.data(), a);
                   }),
           in_bytes);
    report("[xBC | dt] conv form and z side by side",
           time_on(a,
                   [&](int i) {
                       fork.order(a, b);
                       fused(w_in(i), E, false, y.data(), b);
                       conv_form(i, a);
                       join.order(b, a);
                   }),
           in_bytes);
    report("out_proj, gemm_small_m, 8 MB prefetch",
           time_on(
               a, [&](int i) { product(w_out(i), D, E, y.data(), cuda::kSmallMPrefetchBytes, a); }),
           out_bytes);
    // out_proj as the model runs it: the residual epilogue (into the next norm).
    const auto residual = [&](const void* w, cudaStream_t s) {
        cuda::GemvFused f;
        f.epilogue = cuda::GemvFused::kResidual;
        f.residual = res.as<float>();
        f.w_next = w_next.as<float>();
        f.u = u_next.data();
        f.out_parts = out_parts.as<float>();
        cuda::gemv_fused(g.data(), w, D, E, kAct, cuda::kSmallMPrefetchBytes, f, s);
    };
    report("out_proj, gemv_fused + residual", time_on(a, [&](int i) { residual(w_out(i), a); }),
           out_bytes);
    report("in_proj pair, then out_proj (a layer's products)",
           time_on(a,
                   [&](int i) {
                       pair(i);
                       residual(w_out(i), a);
                   }),
           in_bytes + out_bytes);
    // The LM head as the step ends with it: f32 logits scaled by the final norm (kStore, y_f32),
    // against a read stream of its bytes.
    {
        constexpr int64_t kVocab = 50288;  // the presets' padded vocabulary
        const auto head = weights(kVocab, D);
        const double head_bytes = static_cast<double>(kVocab * D * 2);
        const auto w_head = [&](int i) {
            return head[static_cast<size_t>(i) % head.size()].data();
        };
        cuda::DeviceBuffer logits(static_cast<size_t>(kVocab) * 4);
        report("read stream, the LM head's bytes (4 float4 in flight)",
               time_on(a,
                       [&](int i) {
                           read_stream(static_cast<const float*>(w_head(i)), kVocab * D / 8, 4, sms,
                                       sums.as<float>(), a);
                       }),
               head_bytes);
        report("LM head, gemv_fused (scaled, f32 logits)",
               time_on(a,
                       [&](int i) {
                           cuda::GemvFused f;
                           f.in_scale = scale;
                           f.y = logits.data();
                           f.y_f32 = true;
                           cuda::gemv_fused(u.data(), w_head(i), kVocab, D, kAct,
                                            cuda::kSmallMPrefetchBytes, f, a);
                       }),
               head_bytes);
        // Every logit is D · bf16(0.01) times the input scale (f32 out, f32 accumulation).
        DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
        std::vector<float> got(static_cast<size_t>(kVocab));
        DUALITY_CUDA_CHECK(
            cudaMemcpy(got.data(), logits.data(), got.size() * 4, cudaMemcpyDeviceToHost));
        const double want =
            D * __bfloat162float(__float2bfloat16(0.01f)) / std::sqrt(1.0 + scale.eps);
        for (int64_t c = 0; c < kVocab; ++c)
            ASSERT_NEAR(got[static_cast<size_t>(c)], want, 1e-3 * want)
                << sh.name << " LM head, logit " << c;
    }
    // Last: out_proj's plain product, whose output the check below reads.
    time_on(a,
            [&](int i) { product(w_out(i), D, E, g_out.data(), cuda::kSmallMPrefetchBytes, a); });
    DUALITY_CUDA_CHECK(cudaDeviceSynchronize());

    // What the last timed calls left: every weight is bf16(0.01) and every input 1, so each of the
    // pair's outputs is k · bf16(0.01) times the input scale, and each of out_proj's (no scale)
    // k · bf16(0.01); within bf16's rounding of the outputs.
    const double w01 = __bfloat162float(__float2bfloat16(0.01f));
    const auto expect_all = [&](const cuda::DeviceBuffer& out, int64_t n, double want,
                                const char* what) {
        std::vector<__nv_bfloat16> got(static_cast<size_t>(n));
        DUALITY_CUDA_CHECK(
            cudaMemcpy(got.data(), out.data(), got.size() * 2, cudaMemcpyDeviceToHost));
        for (int64_t c = 0; c < n; ++c)
            ASSERT_NEAR(__bfloat162float(got[static_cast<size_t>(c)]), want, 8e-3 * want)
                << sh.name << " " << what << ", column " << c;
    };
    const double in_proj_value = D * w01 / std::sqrt(1.0 + scale.eps);  // every column's
    expect_all(y, n_in, in_proj_value, "in_proj pair");
    expect_all(g_out, D, E * w01, "out_proj");
    // The conv form's outputs: after the first calls the slot's window holds x = bf16(the
    // product) only, so each channel is silu(4 · 0.25 · x).
    const double x = __bfloat162float(__float2bfloat16(static_cast<float>(in_proj_value)));
    expect_all(conv_out, channels, x / (1.0 + std::exp(-x)), "[xBC | dt] conv form");
}

TEST(GemvTiming, DISABLED_Batch1Products) {
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
    int dev = 0, sms = 0;
    DUALITY_CUDA_CHECK(cudaGetDevice(&dev));
    DUALITY_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    cudaDeviceProp prop{};
    DUALITY_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    std::printf("%s, %d SMs\n", prop.name, sms);
    {
        // The read rate of a long stream (1 GiB, no kernel boundaries to speak of): what HBM gives
        // this access pattern at best, against which the products' rates below can be read.
        const int64_t bytes = int64_t{1} << 30;
        cuda::DeviceBuffer big(static_cast<size_t>(bytes)), sums(static_cast<size_t>(sms) * 8 * 4);
        DUALITY_CUDA_CHECK(cudaMemset(big.data(), 0, big.bytes()));
        cuda::Stream s;
        for (int in_flight : {4, 8}) {
            const double ms = time_ms(
                [&](int) {
                    read_stream(big.as<float>(), bytes / 16, in_flight, sms, sums.as<float>(),
                                s.get());
                },
                8, 2, s.get());
            std::printf("read stream of 1 GiB (%d float4 in flight): %.1f us, %.0f GB/s\n",
                        in_flight, 1e3 * ms, static_cast<double>(bytes) / (ms * 1e-3) / 1e9);
        }
    }
    time_shape({"mamba2-2.7b", 2560, 5120, 10576, 80}, sms);
    time_shape({"mamba2-130m", 768, 1536, 3352, 24}, sms);
}

}  // namespace
}  // namespace duality::optest
