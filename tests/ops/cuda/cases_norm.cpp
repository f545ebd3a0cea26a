// Op-test cases: cuda::add_rms_norm, cuda::gated_rms_norm and cuda::add_bias against their CPU
// twins (add_bias against its one-line definition). Shapes cover the warp-per-row (dim <= 1024)
// and block-per-row kernels at every register depth and the looping block, the 4-wide and scalar
// paths (dims, strides not multiples of 4), the model shapes (130m, 2.7b, Codestral) and n_group 1
// and 8.
#include <algorithm>
#include <string>

#include "ops/cpu/ops.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

constexpr float kEps = 1e-5f;

std::string num(int64_t v) {
    return std::to_string(v);
}

// ---- add_rms_norm ----------------------------------------------------------------------------
void add_rms_norm_case(int64_t rows, int64_t dim, bool first, DType act) {
    const std::string name =
        "add_rms_norm/r" + num(rows) + "_d" + num(dim) + (first ? "_first/" : "/") + dt_name(act);
    register_case({name, default_tolerance(act), [=] {
                       std::mt19937 rng(static_cast<uint32_t>(rows * 1000 + dim + first));
                       const size_t n = static_cast<size_t>(rows * dim);
                       const std::vector<float> h = rounded(act, normal(rng, n));
                       const std::vector<float> res0 = normal(rng, n, 0.0f, 2.0f);
                       const std::vector<float> w =
                           normal(rng, static_cast<size_t>(dim), 1.0f, 0.2f);
                       std::vector<float> res = res0, out(n);
                       cpu::add_rms_norm(h.data(), res.data(), w.data(), kEps, out.data(), rows,
                                         dim, first, kCpuThreads);

                       cuda::DeviceBuffer d_h = upload_as(act, h), d_res = upload_f32(res0),
                                          d_w = upload_f32(w);
                       cuda::DeviceBuffer d_out(n * dtype_size(act));
                       cuda::add_rms_norm(d_h.data(), d_res.as<float>(), d_w.as<float>(), kEps,
                                          d_out.data(), rows, dim, first, act, nullptr);
                       DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
                       return std::vector<Output>{
                           {"out", out, download_as_f32(act, d_out.data(), n)},
                           {"residual", res, download_as_f32(DType::kF32, d_res.data(), n)}};
                   }});
}

// add_rms_norm with `first` and token ids (the model's first layer): h is an embedding table of
// `vocab` rows and row r reads row ids[r] (repeats, the first and the last row of the table),
// against the CPU gather followed by cpu::add_rms_norm.
void add_rms_norm_gather_case(int64_t rows, int64_t dim, int64_t vocab, DType act) {
    const std::string name = "add_rms_norm/r" + num(rows) + "_d" + num(dim) + "_gather" +
                             num(vocab) + "/" + dt_name(act);
    register_case(
        {name, default_tolerance(act), [=] {
             std::mt19937 rng(static_cast<uint32_t>(rows * 7 + dim + vocab));
             const std::vector<float> table =
                 rounded(act, normal(rng, static_cast<size_t>(vocab * dim)));
             // Row 0 reads the table's last row, row 1 its first, the last row repeats row 1.
             std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
             std::vector<int32_t> ids;
             for (int64_t r = 0; r < rows; ++r)
                 ids.push_back(r == 0          ? static_cast<int32_t>(vocab - 1)
                               : r == 1        ? 0
                               : r + 1 == rows ? 0
                                               : pick(rng));
             const size_t n = static_cast<size_t>(rows * dim);
             std::vector<float> h(n);
             for (int64_t r = 0; r < rows; ++r)
                 std::copy_n(table.begin() + ids[static_cast<size_t>(r)] * dim, dim,
                             h.begin() + r * dim);
             const std::vector<float> w = normal(rng, static_cast<size_t>(dim), 1.0f, 0.2f);
             std::vector<float> res(n), out(n);
             cpu::add_rms_norm(h.data(), res.data(), w.data(), kEps, out.data(), rows, dim, true,
                               kCpuThreads);

             cuda::DeviceBuffer d_table = upload_as(act, table), d_ids = upload_i32(ids),
                                d_w = upload_f32(w);
             cuda::DeviceBuffer d_res(n * 4), d_out(n * dtype_size(act));
             cuda::add_rms_norm(d_table.data(), d_res.as<float>(), d_w.as<float>(), kEps,
                                d_out.data(), rows, dim, true, act, nullptr, {}, {},
                                d_ids.as<int32_t>());
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{
                 {"out", out, download_as_f32(act, d_out.data(), n)},
                 {"residual", res, download_as_f32(DType::kF32, d_res.data(), n)}};
         }});
}

// add_rms_norm with a RowScale (h's rows scaled by rsqrt(Σ ssq / count + eps) first), n_part
// partial sums per row as ssd_fused's gate leaves them.
void add_rms_norm_scaled_case(int64_t rows, int64_t dim, int64_t n_part, DType act,
                              bool first = false) {
    const std::string name = "add_rms_norm/r" + num(rows) + "_d" + num(dim) + "_scaled" +
                             num(n_part) + (first ? "_first/" : "/") + dt_name(act);
    register_case({name, default_tolerance(act), [=] {
                       std::mt19937 rng(static_cast<uint32_t>(rows * 31 + dim + n_part + first));
                       const size_t n = static_cast<size_t>(rows * dim);
                       const std::vector<float> h = rounded(act, normal(rng, n, 0.0f, 8.0f));
                       const std::vector<float> res0 = normal(rng, n, 0.0f, 2.0f);
                       const std::vector<float> w =
                           normal(rng, static_cast<size_t>(dim), 1.0f, 0.2f);
                       // Sums of squares of 64 channels each: around 64 · 16.
                       const std::vector<float> ssq =
                           uniform(rng, static_cast<size_t>(rows * n_part), 100.0f, 2000.0f);
                       const RowScale sc{nullptr, n_part, 64.0f * static_cast<float>(n_part), kEps};
                       RowScale cpu_sc = sc;
                       cpu_sc.ssq = ssq.data();
                       std::vector<float> res = res0, out(n);
                       cpu::add_rms_norm(h.data(), res.data(), w.data(), kEps, out.data(), rows,
                                         dim, first, kCpuThreads, cpu_sc);

                       cuda::DeviceBuffer d_h = upload_as(act, h), d_res = upload_f32(res0),
                                          d_w = upload_f32(w), d_ssq = upload_f32(ssq);
                       cuda::DeviceBuffer d_out(n * dtype_size(act));
                       RowScale dev_sc = sc;
                       dev_sc.ssq = d_ssq.as<float>();
                       cuda::add_rms_norm(d_h.data(), d_res.as<float>(), d_w.as<float>(), kEps,
                                          d_out.data(), rows, dim, first, act, nullptr, dev_sc);
                       DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
                       return std::vector<Output>{
                           {"out", out, download_as_f32(act, d_out.data(), n)},
                           {"residual", res, download_as_f32(DType::kF32, d_res.data(), n)}};
                   }});
}

// add_rms_norm with h as the f32 sum of n_parts parts (a split-k product, cuda::HParts), parts
// `pad` rows more than rows·dim apart; the CPU twin adds the parts first.
void add_rms_norm_parts_case(int64_t rows, int64_t dim, int n_parts, int64_t pad, DType act) {
    const std::string name = "add_rms_norm/r" + num(rows) + "_d" + num(dim) + "_parts" +
                             num(n_parts) + (pad ? "_pad" + num(pad) : "") + "/" + dt_name(act);
    register_case(
        {name, default_tolerance(act), [=] {
             std::mt19937 rng(static_cast<uint32_t>(rows * 17 + dim + n_parts * 5 + pad));
             const size_t n = static_cast<size_t>(rows * dim);
             const size_t stride = static_cast<size_t>((rows + pad) * dim);
             const std::vector<float> parts = normal(rng, stride * static_cast<size_t>(n_parts));
             const std::vector<float> res0 = normal(rng, n, 0.0f, 2.0f);
             const std::vector<float> w = normal(rng, static_cast<size_t>(dim), 1.0f, 0.2f);
             std::vector<float> h(n, 0.0f);
             for (int q = 0; q < n_parts; ++q)
                 for (size_t i = 0; i < n; ++i) h[i] += parts[q * stride + i];
             std::vector<float> res = res0, out(n);
             cpu::add_rms_norm(h.data(), res.data(), w.data(), kEps, out.data(), rows, dim, false,
                               kCpuThreads);

             cuda::DeviceBuffer d_parts = upload_f32(parts), d_res = upload_f32(res0),
                                d_w = upload_f32(w);
             cuda::DeviceBuffer d_out(n * dtype_size(act));
             const cuda::HParts hp{d_parts.as<float>(), n_parts, static_cast<int64_t>(stride)};
             cuda::add_rms_norm(nullptr, d_res.as<float>(), d_w.as<float>(), kEps, d_out.data(),
                                rows, dim, false, act, nullptr, RowScale{}, hp);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{
                 {"out", out, download_as_f32(act, d_out.data(), n)},
                 {"residual", res, download_as_f32(DType::kF32, d_res.data(), n)}};
         }});
}

// ---- gated_rms_norm --------------------------------------------------------------------------
void gated_case(int64_t rows, int64_t dim, int64_t group_size, int64_t z_stride, DType act) {
    const std::string name = "gated_rms_norm/r" + num(rows) + "_d" + num(dim) + "_gs" +
                             num(group_size) + "_zs" + num(z_stride) + "/" + dt_name(act);
    register_case(
        {name, default_tolerance(act), [=] {
             std::mt19937 rng(static_cast<uint32_t>(rows * 7 + dim * 3 + group_size));
             const size_t n = static_cast<size_t>(rows * dim);
             const std::vector<float> y = rounded(act, normal(rng, n));
             // z lives in a wider buffer (zxbcdt in the model): rows z_stride apart.
             const std::vector<float> z =
                 rounded(act, normal(rng, static_cast<size_t>(rows * z_stride), 0.0f, 2.0f));
             const std::vector<float> w = normal(rng, static_cast<size_t>(dim), 1.0f, 0.2f);
             std::vector<float> out(n);
             cpu::gated_rms_norm(y.data(), z.data(), z_stride, w.data(), kEps, out.data(), rows,
                                 dim, group_size, kCpuThreads);

             cuda::DeviceBuffer d_y = upload_as(act, y), d_z = upload_as(act, z),
                                d_w = upload_f32(w);
             cuda::DeviceBuffer d_out(n * dtype_size(act));
             cuda::gated_rms_norm(d_y.data(), d_z.data(), z_stride, d_w.as<float>(), kEps,
                                  d_out.data(), rows, dim, group_size, act, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{{"out", out, download_as_f32(act, d_out.data(), n)}};
         }});
}

// ---- add_bias --------------------------------------------------------------------------------
void add_bias_case(int64_t rows, int64_t n, int64_t ld, DType act) {
    const std::string name =
        "add_bias/r" + num(rows) + "_n" + num(n) + "_ld" + num(ld) + "/" + dt_name(act);
    register_case(
        {name, default_tolerance(act), [=] {
             std::mt19937 rng(static_cast<uint32_t>(rows + n * 5 + ld));
             const size_t total = static_cast<size_t>(rows * ld);
             const std::vector<float> y0 = rounded(act, normal(rng, total));
             const std::vector<float> bias = normal(rng, static_cast<size_t>(n));
             // Columns past n (up to ld) must stay as they were.
             std::vector<float> expected = y0;
             for (int64_t r = 0; r < rows; ++r)
                 for (int64_t c = 0; c < n; ++c)
                     expected[static_cast<size_t>(r * ld + c)] += bias[static_cast<size_t>(c)];

             cuda::DeviceBuffer d_y = upload_as(act, y0), d_b = upload_f32(bias);
             cuda::add_bias(d_y.data(), ld, d_b.as<float>(), rows, n, act, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{{"y", expected, download_as_f32(act, d_y.data(), total)}};
         }});
}

DUALITY_OP_CASES(norm) {
    for (DType act : kActs) {
        // add_rms_norm: warp path (dim <= 1024), block path, scalar (dim % 4 != 0) paths.
        for (bool first : {false, true}) {
            add_rms_norm_case(1, 768, first, act);   // 130m decode
            add_rms_norm_case(37, 768, first, act);  // 130m prefill
            add_rms_norm_case(5, 2560, first, act);  // 2.7b
            add_rms_norm_case(3, 4096, first, act);  // codestral
        }
        add_rms_norm_case(9, 256, false, act);  // the bundled 17m model
        // The first layer's embedding gather: 130m decode and prefill, 2.7b (block team), the
        // bundled model, scalar.
        add_rms_norm_gather_case(1, 768, 1000, act);
        add_rms_norm_gather_case(37, 768, 50, act);
        add_rms_norm_gather_case(5, 2560, 300, act);
        add_rms_norm_gather_case(9, 256, 20, act);
        add_rms_norm_gather_case(6, 770, 11, act);
        add_rms_norm_case(6, 770, false, act);     // warp, scalar
        add_rms_norm_case(4, 1030, false, act);    // block, scalar
        add_rms_norm_case(2, 8192, false, act);    // wide block
        add_rms_norm_case(300, 1024, false, act);  // many rows, widest warp path
        // Every register depth K of the block and warp teams (norm.cu, team_shape), and the loop.
        add_rms_norm_case(3, 384, false, act);    // warp, K = 4
        add_rms_norm_case(2, 12288, false, act);  // block, K = 4
        add_rms_norm_case(2, 20480, false, act);  // block, K = 8
        add_rms_norm_case(1, 40000, false, act);  // block loop (K = 0)
        add_rms_norm_case(2, 40001, false, act);  // block loop, scalar
        // With a RowScale: 2.7b (80 heads of partial sums, block team), 130m (24, warp team),
        // the bundled model (8), the block loop.
        add_rms_norm_scaled_case(37, 2560, 80, act);
        add_rms_norm_scaled_case(300, 768, 24, act);
        add_rms_norm_scaled_case(9, 256, 8, act);
        add_rms_norm_scaled_case(3, 40000, 5, act);
        add_rms_norm_scaled_case(5, 1030, 33, act);        // block team, scalar
        add_rms_norm_scaled_case(5, 2560, 80, act, true);  // `first` ignores the scale
        // The decode gate's partials (head_dim / 16 per head): 2.7b 320 (all loaded with the
        // row), 130m 96; and a loop-team row with 400 (80 past those, read in a loop).
        add_rms_norm_scaled_case(64, 2560, 320, act);
        add_rms_norm_scaled_case(7, 768, 96, act);
        add_rms_norm_scaled_case(2, 40000, 400, act);
        // h as split-k parts (out_proj at decode batches of 17+ rows): 2.7b at 64 and 33 rows
        // (block team), 130m (warp team), parts further apart than rows·dim, scalar, the loop.
        add_rms_norm_parts_case(64, 2560, 2, 0, act);
        add_rms_norm_parts_case(33, 2560, 4, 0, act);
        add_rms_norm_parts_case(32, 768, 2, 0, act);
        add_rms_norm_parts_case(17, 2560, 3, 15, act);
        add_rms_norm_parts_case(5, 1030, 2, 0, act);
        add_rms_norm_parts_case(2, 40000, 2, 1, act);
        add_rms_norm_parts_case(3, 256, 1, 0, act);

        // gated_rms_norm: z rows in a wider buffer as in zxbcdt (2·E + 2GN + H).
        gated_case(3, 1536, 1536, 3352, act);     // 130m, G = 1
        gated_case(4, 5120, 5120, 10576, act);    // 2.7b, G = 1
        gated_case(2, 8192, 1024, 18560, act);    // codestral, G = 8
        gated_case(1, 8192, 8192, 8192, act);     // G = 1 at 8192, decode
        gated_case(7, 512, 64, 1100, act);        // G = 8, small groups
        gated_case(33, 1536, 1536, 1536, act);    // dense z
        gated_case(3, 200, 25, 211, act);         // scalar path (odd group, stride)
        gated_case(3, 1032, 516, 1036, act);      // V = 4 where 16-bit types take V = 8
        gated_case(2, 20480, 20480, 20480, act);  // block, K = 8 (16-bit: V = 8, K = 4)
        gated_case(1, 40000, 40000, 40000, act);  // block loop K = 0 (16-bit: V = 8, K = 8)
        gated_case(1, 40004, 40004, 40004, act);  // block loop K = 0 at V = 4
        gated_case(1, 65600, 65600, 65600, act);  // block loop K = 0 (16-bit: at V = 8)

        // add_bias
        add_bias_case(5, 3352, 3352, act);
        add_bias_case(3, 768, 800, act);
        add_bias_case(4, 13, 20, act);  // scalar path
    }
}

}  // namespace
}  // namespace duality::optest
