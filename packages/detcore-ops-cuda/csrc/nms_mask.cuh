// The 64-wide IoU bitmask kernel shared by axis-aligned and rotated NMS (device only), and the
// threshold conversions that keep comparisons in the box dtype while equal to a comparison against the
// double threshold.
#pragma once
#include <cmath>
#include <limits>

#include "common.cuh"

namespace detcore_cuda {

constexpr int kNmsBlock = 64;

// The largest T not above t: for every T value x, (x > t) == (x > threshold_gt<T>(t)).
template <typename T>
inline T threshold_gt(double t) {
  T v = static_cast<T>(t);
  if (static_cast<double>(v) > t) v = std::nextafter(v, -std::numeric_limits<T>::infinity());
  return v;
}

// The smallest T not below t: for every T value x, (x >= t) == (x >= threshold_ge<T>(t)).
template <typename T>
inline T threshold_ge(double t) {
  T v = static_cast<T>(t);
  if (static_cast<double>(v) < t) v = std::nextafter(v, std::numeric_limits<T>::infinity());
  return v;
}

#ifdef __CUDACC__
// Block (x = column block, y = row block) of 64 threads; thread r of a row block compares box
// 64 * by + r with the boxes of column block bx that come after it. Policy::suppress(a, prep, b) decides
// for boxes of the same category; boxes of different categories suppress each other iff
// Policy::cross_class (their IoU counts as 0).
template <typename T, int D, typename Policy>
__global__ void nms_mask_kernel(const T* __restrict__ boxes, const int64_t* __restrict__ idxs, int64_t n,
                                int64_t col_blocks, Policy policy, unsigned long long* __restrict__ mask) {
  const int64_t row_block = blockIdx.y;
  const int64_t col_block = blockIdx.x;
  if (row_block > col_block) return;  // only j > i matters
  const int row_size = static_cast<int>(min_<int64_t>(n - row_block * kNmsBlock, kNmsBlock));
  const int col_size = static_cast<int>(min_<int64_t>(n - col_block * kNmsBlock, kNmsBlock));
  __shared__ T cols[kNmsBlock * D];
  __shared__ int64_t col_idx[kNmsBlock];
  const int tid = threadIdx.x;
  if (tid < col_size) {
    const int64_t j = col_block * kNmsBlock + tid;
#pragma unroll
    for (int d = 0; d < D; ++d) cols[tid * D + d] = boxes[j * D + d];
    col_idx[tid] = idxs != nullptr ? idxs[j] : 0;
  }
  __syncthreads();
  if (tid < row_size) {
    const int64_t i = row_block * kNmsBlock + tid;
    T row[D];
#pragma unroll
    for (int d = 0; d < D; ++d) row[d] = boxes[i * D + d];
    const int64_t cls = idxs != nullptr ? idxs[i] : 0;
    const auto prep = policy.prepare(row);
    unsigned long long bits = 0;
    const int start = row_block == col_block ? tid + 1 : 0;
    for (int k = start; k < col_size; ++k) {
      if (col_idx[k] != cls ? policy.cross_class : policy.suppress(row, prep, cols + k * D)) bits |= 1ULL << k;
    }
    mask[i * col_blocks + col_block] = bits;
  }
}

template <typename T, int D, typename Policy>
void launch_nms_mask(const T* boxes, const int64_t* idxs, int64_t n, Policy policy, unsigned long long* mask,
                     cudaStream_t stream, const char* op) {
  if (n <= 0) return;
  const int64_t col_blocks = (n + kNmsBlock - 1) / kNmsBlock;
  if (col_blocks > 65535)
    throw std::invalid_argument(std::string(op) + ": too many boxes for one launch (" + std::to_string(n) +
                                "; at most " + std::to_string(65535 * kNmsBlock) + ")");
  const dim3 grid(static_cast<unsigned int>(col_blocks), static_cast<unsigned int>(col_blocks));
  nms_mask_kernel<T, D, Policy><<<grid, kNmsBlock, 0, stream>>>(boxes, idxs, n, col_blocks, policy, mask);
  check_launch(op);
}
#endif  // __CUDACC__

}  // namespace detcore_cuda
