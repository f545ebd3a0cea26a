// Op-test cases: cuda::embedding against cpu::embedding. A gather copies values, so the
// comparison is exact (zero tolerance). Shapes cover every copy width (16-byte rows down to
// 2-byte units: odd dims and a table offset by one element).
#include <algorithm>
#include <cstdio>

#include "ops/cpu/ops.h"
#include "ops/cuda/kern_util.h"
#include "ops/cuda/registry.h"

namespace duality::optest {
namespace {

void add_case(int64_t vocab, int64_t dim, int64_t rows, int64_t table_offset, DType act) {
    char name[128];
    std::snprintf(name, sizeof name, "embedding/v%lld_d%lld_r%lld_off%lld/%s",
                  static_cast<long long>(vocab), static_cast<long long>(dim),
                  static_cast<long long>(rows), static_cast<long long>(table_offset),
                  dt_name(act).c_str());
    register_case(
        {name, Tolerance{0.0, 0.0, 0.0}, [=] {
             std::mt19937 rng(static_cast<uint32_t>(vocab * 31 + dim * 7 + rows));
             // The table lives `table_offset` elements into its buffer.
             const std::vector<float> buf =
                 rounded(act, normal(rng, static_cast<size_t>((vocab * dim) + table_offset)));
             std::uniform_int_distribution<int32_t> pick(0, static_cast<int32_t>(vocab - 1));
             std::vector<int32_t> ids;
             for (int64_t r = 0; r < rows; ++r)  // the last table row last
                 ids.push_back(r + 1 < rows ? pick(rng) : static_cast<int32_t>(vocab - 1));
             const float* table = buf.data() + table_offset;
             std::vector<float> expected(static_cast<size_t>(rows * dim));
             cpu::embedding(ids.data(), rows, table, dim, expected.data());

             cuda::DeviceBuffer d_table = upload_as(act, buf);
             cuda::DeviceBuffer d_ids = upload_i32(ids);
             cuda::DeviceBuffer d_out(static_cast<size_t>(rows * dim) * dtype_size(act));
             const char* t = d_table.as<char>() + table_offset * dtype_size(act);
             cuda::embedding(d_ids.as<int32_t>(), rows, t, dim, d_out.data(), act, nullptr);
             DUALITY_CUDA_CHECK(cudaDeviceSynchronize());
             return std::vector<Output>{
                 {"out", expected,
                  download_as_f32(act, d_out.data(), static_cast<size_t>(rows * dim))}};
         }});
}

DUALITY_OP_CASES(embedding) {
    for (DType act : kActs) {
        add_case(1000, 768, 37, 0, act);  // 130m d_model
        add_case(50, 2560, 300, 0, act);  // 2.7b d_model, repeated ids
        add_case(64, 4096, 5, 0, act);    // codestral d_model
        add_case(100, 13, 9, 0, act);     // odd dim: narrowest copies
        add_case(100, 6, 9, 0, act);      // 12- or 24-byte rows
        add_case(300, 768, 17, 1, act);   // misaligned table
    }
}

}  // namespace
}  // namespace duality::optest
