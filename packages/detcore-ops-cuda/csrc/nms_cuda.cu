// Greedy NMS on the GPU: a 64-wide IoU bitmask (nms_mask.cuh) reduced greedily by one block.
// Boxes arrive sorted by decreasing score (ties by index); batched NMS passes the category of each box
// and only same-category pairs get a bit, which is exactly per-category NMS for any coordinate range.
#include "box_iou.cuh"
#include "nms_mask.cuh"
#include "ops_cuda.h"

namespace detcore_cuda {
namespace {

template <typename T>
struct AxisAlignedPolicy {
  T threshold;  // suppress when overlap > threshold
  bool cross_class;  // always false: detcore's batched_nms is exact per category
  __device__ T prepare(const T* a) const { return box_area(a); }
  __device__ bool suppress(const T* a, T area_a, const T* b) const {
    return nms_overlap(a, area_a, b, box_area(b)) > threshold;
  }
};

// One block: walk the boxes in order; a box not yet removed is kept and removes what its mask row marks.
__global__ void nms_reduce_kernel(const unsigned long long* __restrict__ mask, int64_t n, int64_t col_blocks,
                                  bool use_shared, unsigned long long* scratch, uint8_t* __restrict__ keep) {
  extern __shared__ unsigned long long shared_removed[];
  unsigned long long* removed = use_shared ? shared_removed : scratch;
  for (int64_t j = threadIdx.x; j < col_blocks; j += blockDim.x) removed[j] = 0;
  __syncthreads();
  for (int64_t nb = 0; nb < col_blocks; ++nb) {
    unsigned long long removed_here = removed[nb];
    __syncthreads();
    const int64_t base = nb * kNmsBlock;
    for (int b = 0; b < kNmsBlock; ++b) {
      const int64_t i = base + b;
      if (i >= n) break;
      if (!((removed_here >> b) & 1ULL)) {
        if (threadIdx.x == 0) keep[i] = 1;
        const unsigned long long* row = mask + i * col_blocks;
        for (int64_t j = nb + threadIdx.x; j < col_blocks; j += blockDim.x) removed[j] |= row[j];
        __syncthreads();
        removed_here = removed[nb];
        __syncthreads();
      }
    }
  }
}

}  // namespace

void nms_mask(uptr boxes, uptr idxs, int64_t n, double iou_threshold, int dtype, uptr mask, uptr stream) {
  dispatch_floating(dtype, "nms", [&](auto zero) {
    using T = decltype(zero);
    launch_nms_mask<T, 4>(ptr<const T>(boxes), ptr<const int64_t>(idxs), n,
                          AxisAlignedPolicy<T>{threshold_gt<T>(iou_threshold), false}, ptr<unsigned long long>(mask),
                          as_stream(stream), "nms");
  });
}

void nms_reduce(uptr mask, int64_t n, uptr keep, uptr scratch, uptr stream) {
  if (n <= 0) return;
  const int64_t col_blocks = (n + kNmsBlock - 1) / kNmsBlock;
  const size_t shared_bytes = static_cast<size_t>(col_blocks) * sizeof(unsigned long long);
  const bool use_shared = shared_bytes <= 48 * 1024;
  nms_reduce_kernel<<<1, 256, use_shared ? shared_bytes : 0, as_stream(stream)>>>(
      ptr<const unsigned long long>(mask), n, col_blocks, use_shared, ptr<unsigned long long>(scratch),
      ptr<uint8_t>(keep));
  check_launch("nms_reduce");
}

}  // namespace detcore_cuda
