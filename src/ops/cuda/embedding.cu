// Embedding gather: out[r, :] = table[ids[r], :] for rows r of a {rows, dim} output.
//
// A byte copy: the row is moved in the widest unit (16, 8, 4 or 2 bytes) that divides the row's
// size and both base pointers' alignment. Grid: one block per output row (grid-stride over rows
// beyond 2^31 - 1); the block's threads stride over the row's units.
// Limits: any dim and rows; ids must lie in [0, vocab) (not checked); act is any float dtype
// (also used with kF32 to gather residual rows).
#include "core/cuda/check.h"
#include "core/cuda/pdl.cuh"
#include "ops/cuda/dtype.cuh"
#include "ops/cuda/ops.h"

namespace duality::cuda {
namespace {

template <typename U>
__global__ void gather_rows_kernel(const int32_t* __restrict__ ids, int64_t rows,
                                   const U* __restrict__ table,  // {vocab, units}
                                   int64_t units,                // units per row
                                   U* __restrict__ out) {        // {rows, units}
    pdl::wait();  // before any global access: see core/cuda/pdl.cuh
    pdl::allow_next();
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        const U* src = table + static_cast<int64_t>(ids[r]) * units;
        U* dst = out + r * units;
        for (int64_t i = threadIdx.x; i < units; i += blockDim.x) dst[i] = src[i];
    }
}

template <typename U>
void launch_gather(const int32_t* ids, int64_t rows, const void* table, int64_t row_bytes,
                   void* out, cudaStream_t stream) {
    const int64_t units = row_bytes / static_cast<int64_t>(sizeof(U));
    int threads = 32;
    while (threads < 256 && threads < units) threads *= 2;
    const unsigned blocks = static_cast<unsigned>(rows < 2147483647 ? rows : 2147483647);
    pdl::launch(gather_rows_kernel<U>, blocks, threads, 0, stream, ids, rows,
                static_cast<const U*>(table), units, static_cast<U*>(out));
    DUALITY_CUDA_LAUNCH_CHECK();
}

}  // namespace

void embedding(const int32_t* ids, int64_t rows, const void* table, int64_t dim, void* out,
               DType act, cudaStream_t stream) {
    if (rows <= 0 || dim <= 0) return;
    if (!dtype_is_float(act)) dtype::bad_dtype("embedding", act);
    const int64_t row_bytes = dim * static_cast<int64_t>(dtype_size(act));
    auto fits = [&](size_t u) {
        return row_bytes % static_cast<int64_t>(u) == 0 && dtype::is_aligned(table, u) &&
               dtype::is_aligned(out, u);
    };
    if (fits(16))
        launch_gather<uint4>(ids, rows, table, row_bytes, out, stream);
    else if (fits(8))
        launch_gather<uint2>(ids, rows, table, row_bytes, out, stream);
    else if (fits(4))
        launch_gather<uint32_t>(ids, rows, table, row_bytes, out, stream);
    else
        launch_gather<uint16_t>(ids, rows, table, row_bytes, out, stream);
}

}  // namespace duality::cuda
