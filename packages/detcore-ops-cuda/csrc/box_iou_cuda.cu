// Pairwise IoU of axis-aligned boxes: out[i, j] = IoU(boxes1[i], boxes2[j]), 0 where they do not intersect.
#include "box_iou.cuh"
#include "ops_cuda.h"

namespace detcore_cuda {
namespace {

constexpr int kTile = 32;

// Block (32 x 8 threads) computes a 32 x 32 tile; the tile's boxes are staged in shared memory and
// threadIdx.x runs along j so writes are coalesced.
template <typename T>
__global__ void box_iou_kernel(const T* __restrict__ a, const T* __restrict__ b, int64_t n, int64_t m,
                               T* __restrict__ out) {
  __shared__ T sa[kTile * 4];
  __shared__ T sb[kTile * 4];
  const int64_t i0 = static_cast<int64_t>(blockIdx.y) * kTile;
  const int64_t j0 = static_cast<int64_t>(blockIdx.x) * kTile;
  const int t = threadIdx.y * blockDim.x + threadIdx.x;
  for (int k = t; k < kTile * 4; k += blockDim.x * blockDim.y) {
    const int64_t row = k / 4;
    sa[k] = i0 + row < n ? a[i0 * 4 + k] : T(0);
    sb[k] = j0 + row < m ? b[j0 * 4 + k] : T(0);
  }
  __syncthreads();
  const int64_t j = j0 + threadIdx.x;
  if (j >= m) return;
  for (int r = threadIdx.y; r < kTile; r += blockDim.y) {
    const int64_t i = i0 + r;
    if (i >= n) break;
    out[i * m + j] = pair_iou(sa + r * 4, sb + threadIdx.x * 4);
  }
}

}  // namespace

void box_iou(uptr boxes1, uptr boxes2, int64_t n, int64_t m, int dtype, uptr out, uptr stream) {
  if (n <= 0 || m <= 0) return;
  const int64_t gy = (n + kTile - 1) / kTile;
  if (gy > 65535) throw std::invalid_argument("box_iou: boxes1 has too many boxes for one launch");
  const dim3 grid(static_cast<unsigned int>((m + kTile - 1) / kTile), static_cast<unsigned int>(gy));
  const dim3 block(kTile, 8);
  dispatch_floating(dtype, "box_iou", [&](auto zero) {
    using T = decltype(zero);
    box_iou_kernel<T><<<grid, block, 0, as_stream(stream)>>>(ptr<const T>(boxes1), ptr<const T>(boxes2), n, m,
                                                              ptr<T>(out));
  });
  check_launch("box_iou");
}

}  // namespace detcore_cuda
