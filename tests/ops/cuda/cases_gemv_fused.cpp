// Op-test cases: cuda::gemv_fused (the batch-1 product with its neighbours folded in) against the
// CPU ops it replaces, composed: cpu::gemm, the RowScale factor, cpu::add_rms_norm and
// cpu::conv1d_causal. Inputs are rounded to the dtypes the kernel reads, so both sides see the
// same values (docs/numerics.md).
//
// - store: y = rsqrt(Σ parts / count + eps) · (a · wᵀ), act or f32 out (the LM head, z). Shapes:
//   the 2.7b z and LM head, the 130m LM head rows, a ragged n, a row of more partial sums than
//   the kernel stages in shared memory (kSmemParts; the rest are read after the loop).
// - residual: out_proj's epilogue, with and without an input scale (the decode gate's). Checked:
//   the new residual against cpu::add_rms_norm's (with the scale as its RowScale), the next
//   norm's output, u · rsqrt(Σ parts / n + eps) (what the next product sees), against
//   add_rms_norm's out, and the partial sums against sums of r² over each 8 columns. Shapes: the
//   2.7b and 130m out_proj, and n = 1003 (a last block of 3 columns, whose other warps recompute
//   column 1002 and must store nothing: residual and u have sentinels past their end).
// - conv: the [xBC | dt] product with a width-4 conv on its xBC columns, on slot 2 of a pool of 4
//   (the others must stay as they were), with and without an input scale; and the whole
//   [z | xBC | dt] product (the conv's columns after z's). Checked: the conv output, the whole
//   state pool and the z and dt columns.
//
// Tolerance: default_tolerance(act); the conv's new state holds x rounded to act on both sides
// (the product's summation order may move a rounding by one ulp, inside the bf16/f16 rows).
#include <cmath>
#include <numeric>

#include "ops/cpu/ops.h"
#include "ops/cuda/gemm_small_m.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

constexpr float kEps = 1e-5f;

// Partial sums of r² over each 8 columns, as the residual epilogue leaves them.
std::vector<float> block_ssq(const std::vector<float>& r) {
    std::vector<float> p(
        static_cast<size_t>(cuda::gemv_fused_parts(static_cast<int64_t>(r.size()))));
    for (size_t i = 0; i < r.size(); ++i) p[i / 8] += r[i] * r[i];
    return p;
}

float scale_of(const std::vector<float>& parts, float count) {
    const double sum = std::accumulate(parts.begin(), parts.end(), 0.0);
    return 1.0f / std::sqrt(static_cast<float>(sum) / count + kEps);
}

// a {k} and w {n, k} rounded to act; y = a · wᵀ in f32 on the CPU.
struct Product {
    std::vector<float> a, w, y;
    cuda::DeviceBuffer da, dw;
    Product(std::mt19937& rng, DType act, int64_t n, int64_t k, float a_std = 1.0f) {
        a = rounded(act, normal(rng, static_cast<size_t>(k), 0.0f, a_std));
        w = rounded(act, normal(rng, static_cast<size_t>(n * k), 0.0f,
                                1.0f / std::sqrt(static_cast<float>(k))));
        y.resize(static_cast<size_t>(n));
        cpu::gemm(a.data(), k, w.data(), nullptr, y.data(), 1, n, k);
        da = upload_as(act, a);
        dw = upload_as(act, w);
    }
};

// "gemv_fused/<form>_<tag>_n<n>_k<k><suffix>/<dtype>"
std::string case_name(const char* form, const char* tag, int64_t n, int64_t k, const char* suffix,
                      DType act) {
    return std::string("gemv_fused/") + form + "_" + tag + "_n" + std::to_string(n) + "_k" +
           std::to_string(k) + suffix + "/" + dt_name(act);
}

void store_case(const char* tag, int64_t n, int64_t k, int64_t n_parts, bool f32_out, DType act,
                bool bulk = false) {
    const std::string suffix = std::string(f32_out ? "_f32out" : "") + (bulk ? "_bulk" : "");
    register_case(
        {case_name("store", tag, n, k, suffix.c_str(), act), default_tolerance(act), [=] {
             std::mt19937 rng(static_cast<uint32_t>(n * 7 + k + n_parts));
             Product p(rng, act, n, k);
             const std::vector<float> parts =
                 uniform(rng, static_cast<size_t>(n_parts), 0.0f, 4.0f);
             const float count = 2.0f * static_cast<float>(n_parts);
             const float s = scale_of(parts, count);
             std::vector<float> expected = p.y;
             for (float& v : expected) v *= s;
             const DType y_dtype = f32_out ? DType::kF32 : act;
             if (!f32_out) expected = rounded(act, expected);
             auto dparts = upload_f32(parts);
             cuda::DeviceBuffer dy(static_cast<size_t>(n) * dtype_size(y_dtype));
             cuda::GemvFused f;
             f.in_scale = RowScale{dparts.as<float>(), n_parts, count, kEps};
             f.y = dy.data();
             f.y_f32 = f32_out;
             f.bulk = bulk && cuda::gemv_fused_bulk_supported(k, act);
             cuda::gemv_fused(p.da.data(), p.dw.data(), n, k, act, -1, f, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{
                 {"y", expected, download_as_f32(y_dtype, dy.data(), static_cast<size_t>(n))}};
         }});
}

// scaled: a is the decode gate's v·w, its sums of v² (40 here) the input scale, as in
// add_rms_norm's RowScale.
void residual_case(const char* tag, int64_t n, int64_t k, bool scaled, DType act,
                   bool bulk = false) {
    const std::string suffix = std::string(scaled ? "_scaled" : "") + (bulk ? "_bulk" : "");
    register_case(
        {case_name("residual", tag, n, k, suffix.c_str(), act), default_tolerance(act), [=] {
             std::mt19937 rng(static_cast<uint32_t>(n * 13 + k + scaled));
             Product p(rng, act, n, k);
             const std::vector<float> r0 = normal(rng, static_cast<size_t>(n), 0.0f, 2.0f);
             const std::vector<float> w_next = uniform(rng, static_cast<size_t>(n), 0.5f, 1.5f);
             const std::vector<float> in_parts = uniform(rng, 40, 0.5f, 3.0f);
             const RowScale in_scale =
                 scaled ? RowScale{in_parts.data(), 40, 80.0f, kEps} : RowScale{};
             // CPU: residual += (scaled) y, then the next RMSNorm.
             std::vector<float> res = r0, normed(static_cast<size_t>(n));
             cpu::add_rms_norm(p.y.data(), res.data(), w_next.data(), kEps, normed.data(), 1, n,
                               false, 1, in_scale);
             auto din_parts = upload_f32(in_parts);
             // residual and u with kTail sentinels past their end: nothing may be stored there.
             constexpr size_t kTail = 16;
             std::vector<float> r0_tail = r0, tail(kTail, 7.0f);
             r0_tail.insert(r0_tail.end(), tail.begin(), tail.end());
             std::vector<float> u0(static_cast<size_t>(n) + kTail, 7.0f);
             auto dres = upload_f32(r0_tail);
             auto dw_next = upload_f32(w_next);
             auto du = upload_as(act, u0);
             const int64_t n_parts = cuda::gemv_fused_parts(n);
             cuda::DeviceBuffer dparts(static_cast<size_t>(n_parts) * 4);
             cuda::GemvFused f;
             f.epilogue = cuda::GemvFused::kResidual;
             f.residual = dres.as<float>();
             f.w_next = dw_next.as<float>();
             f.u = du.data();
             f.out_parts = dparts.as<float>();
             f.bulk = bulk && cuda::gemv_fused_bulk_supported(k, act);
             if (scaled) {
                 f.in_scale = RowScale{din_parts.as<float>(), 40, 80.0f, kEps};
             }
             cuda::gemv_fused(p.da.data(), p.dw.data(), n, k, act, -1, f, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             std::vector<float> got_res =
                 download_as_f32(DType::kF32, dres.data(), static_cast<size_t>(n) + kTail);
             const std::vector<float> got_parts =
                 download_as_f32(DType::kF32, dparts.data(), static_cast<size_t>(n_parts));
             std::vector<float> got_normed =
                 download_as_f32(act, du.data(), static_cast<size_t>(n) + kTail);
             std::vector<float> got_tails(got_res.end() - kTail, got_res.end());
             got_tails.insert(got_tails.end(), got_normed.end() - kTail, got_normed.end());
             got_res.resize(static_cast<size_t>(n));
             got_normed.resize(static_cast<size_t>(n));
             const float s = scale_of(got_parts, static_cast<float>(n));
             for (float& v : got_normed) v *= s;
             return std::vector<Output>{{"residual", res, got_res},
                                        {"normed", normed, got_normed},
                                        {"parts", block_ssq(res), got_parts},
                                        {"tails", std::vector<float>(2 * kTail, 7.0f), got_tails}};
         }});
}

void conv_case(const char* tag, int64_t lead, int64_t channels, int64_t n_head, int64_t k,
               bool scaled, DType act, bool bulk = false) {
    const int64_t n = lead + channels + n_head;  // [z | xBC | dt] columns, z's `lead` of them
    const std::string suffix = std::string(scaled ? "_scaled" : "") + (bulk ? "_bulk" : "");
    const std::string name = case_name("conv", tag, n, k, suffix.c_str(), act);
    register_case(
        {name, default_tolerance(act), [=] {
             std::mt19937 rng(static_cast<uint32_t>(n * 17 + k + scaled + lead));
             constexpr int64_t kSlots = 4, kSlot = 2, W = 4;
             const int64_t slot_stride = (W - 1) * channels + 8;
             Product p(rng, act, n, k);
             const std::vector<float> parts = uniform(rng, 40, 0.5f, 3.0f);
             const float s = scaled ? scale_of(parts, 80.0f) : 1.0f;
             const std::vector<float> weight =
                 normal(rng, static_cast<size_t>(channels * W), 0.0f, 0.5f);
             const std::vector<float> bias = normal(rng, static_cast<size_t>(channels), 0.0f, 0.2f);
             const std::vector<float> pool0 =
                 normal(rng, static_cast<size_t>(kSlots * slot_stride));
             // CPU: the product rounded to act (zxbcdt), then conv1d on the slot's state.
             std::vector<float> y = p.y;
             for (float& v : y) v *= s;
             y = rounded(act, y);
             std::vector<float> pool = pool0, out(static_cast<size_t>(channels));
             Conv1dParams cp;
             cp.seqlen = 1;
             cp.channels = channels;
             cp.width = W;
             cp.x = y.data() + lead;
             cp.x_stride = n;
             cp.weight = weight.data();
             cp.bias = bias.data();
             cp.state = pool.data() + kSlot * slot_stride;
             cp.out = out.data();
             cpu::conv1d_causal(cp, 1);
             out = rounded(act, out);
             // The columns outside the conv's range: z's and dt's, stored as the product.
             const auto plain = [&](const std::vector<float>& v) {
                 std::vector<float> cols(v.begin(), v.begin() + lead);
                 cols.insert(cols.end(), v.begin() + lead + channels, v.end());
                 return cols;
             };

             auto dparts = upload_f32(parts);
             auto dweight = upload_f32(weight);
             auto dbias = upload_f32(bias);
             auto dpool = upload_f32(pool0);
             const std::vector<int32_t> slot{static_cast<int32_t>(kSlot)};
             auto dslot = upload_i32(slot);
             cuda::DeviceBuffer dy(static_cast<size_t>(n) * dtype_size(act));
             cuda::DeviceBuffer dout(static_cast<size_t>(channels) * dtype_size(act));
             cuda::GemvFused f;
             f.epilogue = cuda::GemvFused::kConv;
             if (scaled) {
                 f.in_scale = RowScale{dparts.as<float>(), 40, 80.0f, kEps};
             }
             f.y = dy.data();
             f.conv_begin = lead;
             f.conv.batch.slots = dslot.as<int32_t>();
             f.conv.channels = channels;
             f.conv.width = W;
             f.conv.weight = dweight.as<float>();
             f.conv.bias = dbias.as<float>();
             f.conv.state = dpool.as<float>();
             f.conv.state_slot_stride = slot_stride;
             f.conv.out = dout.data();
             f.bulk = bulk && cuda::gemv_fused_bulk_supported(k, act);
             cuda::gemv_fused(p.da.data(), p.dw.data(), n, k, act, -1, f, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             const std::vector<float> got_y =
                 download_as_f32(act, dy.data(), static_cast<size_t>(n));
             return std::vector<Output>{
                 {"out", out, download_as_f32(act, dout.data(), static_cast<size_t>(channels))},
                 {"state_pool", pool,
                  download_as_f32(DType::kF32, dpool.data(),
                                  static_cast<size_t>(kSlots * slot_stride))},
                 {"z_dt_columns", plain(y), plain(got_y)}};
         }});
}

DUALITY_OP_CASES(gemv_fused) {
    for (DType act : {DType::kF16, DType::kBF16}) {
        store_case("z_2.7b", 5120, 2560, 320, false, act);
        store_case("lm_head_2.7b", 50288, 2560, 320, true, act);
        store_case("lm_head_130m", 50288, 768, 96, true, act);
        store_case("ragged", 1003, 128, 16, false, act);
        store_case("many_parts", 200, 256, 1000, true, act);  // parts past the lanes' registers
        for (bool scaled : {false, true}) {
            residual_case("out_proj_2.7b", 2560, 5120, scaled, act);
            residual_case("out_proj_130m", 768, 1536, scaled, act);
            residual_case("ragged", 1003, 128, scaled, act);
        }
        for (bool scaled : {false, true}) {
            conv_case("xbc_2.7b", 0, 5376, 80, 2560, scaled, act);
            conv_case("xbc_130m", 0, 1792, 24, 768, scaled, act);
            conv_case("whole_130m", 1536, 1792, 24, 768, scaled, act);  // z's columns first
        }
        conv_case("tiny", 0, 40, 8, 64, true, act);
        // Rows of w by bulk copies into shared memory (GemvFused::bulk; Hopper, else as above).
        store_case("lm_head_130m", 50288, 768, 96, true, act, true);
        store_case("ragged", 1003, 128, 16, false, act, true);
        store_case("z_2.7b", 5120, 2560, 320, false, act, true);
        store_case("k3072", 520, 3072, 16, false, act, true);  // 48 KiB of rows a block
        for (bool scaled : {false, true}) {
            residual_case("out_proj_130m", 768, 1536, scaled, act, true);
            residual_case("ragged", 1003, 128, scaled, act, true);
            conv_case("whole_130m", 1536, 1792, 24, 768, scaled, act, true);
        }
        conv_case("tiny", 0, 40, 8, 64, true, act, true);
    }
}

}  // namespace
}  // namespace duality::optest
