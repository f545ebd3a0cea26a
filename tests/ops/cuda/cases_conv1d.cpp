// Op-test cases: cuda::conv1d against cpu::conv1d_causal run per sequence on host copies of each
// slot's state. Checked: `out` and the whole state pool after the call, so the states of the
// batch's slots (with non-zero initial states and shuffled slot maps with gaps) and the
// untouched other slots are both verified.
//
// Shapes: single sequences of L in {1, 2, 3, 4, 7, 255, 1000, 4096, 8192, 16384} (L < W-1 builds
// the new state from the old one), varlen packs (5 and 37 sequences of 1..300 tokens, one with
// empty sequences, and 4 long ones: 16403 tokens), decode batches (n_seq 1, 8, 64, 256 of one
// token), channels 1792 (130m), 5376 (2.7b) and 10240 (Codestral), width 4 (and 2, 3); x rows come
// from a wider buffer (zxbcdt) as in the model; a channel count and stride that are not multiples
// of 4 take the scalar path. Cases
// `_from<c>` run the op in two parts (outputs of channels c.., then the state update alone).
//
// Tolerance: the new state is a copy of raw (already rounded) inputs, exact on both sides; out
// differs by f32 summation order (FMA) and the output rounding: default_tolerance(act).
#include <cstdio>

#include "ops/cpu/ops.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

struct ConvShape {
    std::string tag;  // name part
    int64_t channels, width;
    std::vector<int32_t> lens;  // per sequence
    int64_t n_slots;            // slots in the pool (>= n_seq)
    int64_t x_extra = 40;       // x_stride = channels + x_extra
    int64_t x_offset = 8;       // x starts x_offset elements into its row (as in zxbcdt)
    // > 0: the op in two parts as the model runs it beside ssd_fused's SsdConv: the outputs of
    // channels [out_begin, channels) only, then the state update alone. Expected: those outputs,
    // the other channels' outputs untouched (zero), the same states.
    int64_t out_begin = 0;
};

void conv_case(const ConvShape& sh, DType act, uint32_t seed) {
    const std::string name =
        "conv1d/" + sh.tag + "_c" + std::to_string(sh.channels) + "_w" + std::to_string(sh.width) +
        (sh.out_begin > 0 ? "_from" + std::to_string(sh.out_begin) : "") + "/" + dt_name(act);
    register_case(
        {name, default_tolerance(act), [=] {
             std::mt19937 rng(seed);
             const int64_t C = sh.channels, W = sh.width;
             const int64_t n_seq = static_cast<int64_t>(sh.lens.size());
             const int64_t x_stride = C + sh.x_extra;
             const int64_t slot_stride = (W - 1) * C + 8;  // padded slots
             DeviceBatch b = make_batch(sh.lens, shuffled_slots(rng, n_seq, sh.n_slots));
             const int64_t T = b.batch.n_tokens;

             // x: rows x_stride apart, starting x_offset elements into the buffer.
             const std::vector<float> xbuf =
                 rounded(act, normal(rng, static_cast<size_t>(T * x_stride + sh.x_offset + C)));
             const std::vector<float> weight = normal(rng, static_cast<size_t>(C * W), 0.0f, 0.5f);
             const std::vector<float> bias = normal(rng, static_cast<size_t>(C), 0.0f, 0.2f);
             const std::vector<float> pool0 =
                 normal(rng, static_cast<size_t>(sh.n_slots * slot_stride));

             // CPU: each sequence on its slot's state, in the host pool copy.
             std::vector<float> pool = pool0, out(static_cast<size_t>(T * C));
             for (int64_t s = 0; s < n_seq; ++s) {
                 const int64_t t0 = b.cu_host[static_cast<size_t>(s)];
                 Conv1dParams p;
                 p.seqlen = b.cu_host[static_cast<size_t>(s) + 1] - t0;
                 p.channels = C;
                 p.width = W;
                 p.x = xbuf.data() + sh.x_offset + t0 * x_stride;
                 p.x_stride = x_stride;
                 p.weight = weight.data();
                 p.bias = bias.data();
                 p.state = pool.data() + b.slots[static_cast<size_t>(s)] * slot_stride;
                 p.out = out.data() + t0 * C;
                 cpu::conv1d_causal(p, kCpuThreads);
             }

             cuda::DeviceBuffer d_x = upload_as(act, xbuf), d_w = upload_f32(weight),
                                d_b = upload_f32(bias), d_pool = upload_f32(pool0);
             cuda::DeviceBuffer d_out(static_cast<size_t>(T * C) * dtype_size(act));
             DUALITY_CUDA_CHECK(cudaMemset(d_out.data(), 0, d_out.bytes()));
             cuda::Conv1dArgs a;
             a.batch = b.batch;
             a.channels = C;
             a.width = W;
             a.x = d_x.as<char>() + sh.x_offset * static_cast<int64_t>(dtype_size(act));
             a.x_stride = x_stride;
             a.weight = d_w.as<float>();
             a.bias = d_b.as<float>();
             a.state = d_pool.as<float>();
             a.state_slot_stride = slot_stride;
             a.out = d_out.data();
             if (sh.out_begin > 0) {
                 a.out_begin = sh.out_begin;
                 a.state_update = false;
                 cuda::conv1d(a, act, nullptr);
                 a.outputs = false;
                 a.state_update = true;
                 for (int64_t t = 0; t < T; ++t)
                     std::fill_n(out.begin() + t * C, sh.out_begin, 0.0f);
             }
             cuda::conv1d(a, act, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{
                 {"out", out, download_as_f32(act, d_out.data(), out.size())},
                 {"state_pool", pool, download_as_f32(DType::kF32, d_pool.data(), pool.size())}};
         }});
}

std::vector<int32_t> random_lens(std::mt19937& rng, int n, int lo, int hi) {
    std::uniform_int_distribution<int32_t> d(lo, hi);
    std::vector<int32_t> v(static_cast<size_t>(n));
    for (auto& l : v) l = d(rng);
    return v;
}

DUALITY_OP_CASES(conv1d) {
    std::mt19937 rng(1234);
    std::vector<ConvShape> shapes;
    // Single sequences (slot 2 of 4... shuffled), tile path except L = 1 (the decode path).
    for (int32_t L : {1, 2, 3, 4, 7, 255, 1000, 4096})
        shapes.push_back({"single_L" + std::to_string(L), 1792, 4, {L}, 4});
    shapes.push_back({"single_L8192", 1792, 4, {8192}, 2});
    shapes.push_back({"single_L4096", 5376, 4, {4096}, 2});
    shapes.push_back({"single_L1000", 10240, 4, {1000}, 3});
    // Tiles of 32 tokens at V = 8 (16-bit activations: 4 groups of rows a thread; the shorter cases
    // above take 8-token tiles there; f32, V = 4, takes 64-token tiles), one with sequence starts
    // inside tiles.
    shapes.push_back({"single_L16384", 5376, 4, {16384}, 2});
    shapes.push_back({"varlen4_long", 5376, 4, {5000, 3, 9000, 2400}, 6});
    shapes.push_back({"single_L2", 10240, 4, {2}, 3});
    // Varlen packs with short sequences among them.
    std::vector<int32_t> lens37;
    {
        std::vector<int32_t> l5 = random_lens(rng, 5, 1, 300);
        l5[1] = 1;
        l5[3] = 2;
        shapes.push_back({"varlen5", 1792, 4, l5, 11});
        shapes.push_back({"varlen5", 5376, 4, l5, 7});
        std::vector<int32_t> l37 = random_lens(rng, 37, 1, 300);
        l37[0] = 3;
        l37[5] = 1;
        l37[6] = 2;
        l37[36] = 1;
        shapes.push_back({"varlen37", 1792, 4, l37, 80});
        lens37 = l37;
        shapes.push_back({"varlen37", 10240, 4, l37, 40});
        // Empty sequences (first, middle, last) between non-empty ones.
        shapes.push_back({"varlen_empty", 1792, 4, {0, 5, 0, 0, 17, 1, 0}, 9});
    }
    // Decode: one token per sequence.
    for (int n : {1, 8, 64, 256}) {
        const std::vector<int32_t> ones(static_cast<size_t>(n), 1);
        shapes.push_back({"decode" + std::to_string(n), 1792, 4, ones, n + 3});
        shapes.push_back({"decode" + std::to_string(n), 10240, 4, ones, n + 2});
    }
    shapes.push_back({"decode64", 5376, 4, std::vector<int32_t>(64, 1), 70});
    // Other widths; the scalar path (channels and stride not multiples of 4, x misaligned).
    shapes.push_back({"varlen5_w2", 1792, 2, {7, 1, 40, 2, 3}, 6});
    shapes.push_back({"varlen5_w3", 1792, 3, {7, 1, 40, 2, 3}, 6});
    shapes.push_back({"varlen5_odd", 1794, 4, {7, 1, 40, 2, 3}, 6, 41, 1});
    // V = 4 where 16-bit prefill takes V = 8 (channels and stride multiples of 4, not 8).
    shapes.push_back({"varlen5_v4", 1796, 4, {7, 1, 40, 2, 300}, 6, 40, 4});
    shapes.push_back({"decode8_odd", 1794, 4, std::vector<int32_t>(8, 1), 9, 41, 1});

    // In two parts (SsdConv's B and C channels, then the states): a pack, one token per sequence
    // (which must not take the decode kernel), a single sequence.
    shapes.push_back({"varlen37", 5376, 4, lens37, 40, 40, 8, 5120});
    shapes.push_back({"decode8", 1792, 4, std::vector<int32_t>(8, 1), 11, 40, 8, 1536});
    shapes.push_back({"single_L300", 1792, 4, {300}, 3, 40, 8, 1536});

    uint32_t seed = 100;
    for (const ConvShape& sh : shapes)
        for (DType act : kActs) conv_case(sh, act, seed++);
}

}  // namespace
}  // namespace duality::optest
