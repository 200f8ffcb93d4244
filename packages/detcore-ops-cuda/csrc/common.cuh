// Shared conventions of the CUDA kernels. The Python side (detcore.ops_cuda.kernels) validates nothing
// twice: it passes contiguous float32/float64 buffers as integer device pointers, sizes, a dtype code
// and the CUDA stream as an integer; outputs are allocated by torch. Nothing here knows about torch.
//
// Per-element math is written as DETCORE_HD functions in the *.cuh headers so that it also compiles as
// plain host C++ (used to check the math on machines without a GPU).
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

#ifdef __CUDACC__
#define DETCORE_HD __host__ __device__ __forceinline__
#else
#define DETCORE_HD inline
#endif

namespace detcore_cuda {

// dtype codes (the same table as detcore.ops._native.DTYPE_CODES).
enum DType : int { kFloat32 = 0, kFloat64 = 1 };

// NaN-propagating-like-std::min/max (std::min(a, b) == (b < a ? b : a)), so results equal the CPU kernels.
template <typename T>
DETCORE_HD T min_(T a, T b) {
  return b < a ? b : a;
}
template <typename T>
DETCORE_HD T max_(T a, T b) {
  return a < b ? b : a;
}

}  // namespace detcore_cuda

#ifdef __CUDACC__
#include <cuda_runtime.h>

namespace detcore_cuda {

template <typename T>
inline T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

inline cudaStream_t as_stream(std::uintptr_t stream) { return reinterpret_cast<cudaStream_t>(stream); }

// Raises (pybind11 turns std::runtime_error into RuntimeError) if the last launch failed.
inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("detcore CUDA kernel '") + op + "' failed: " + cudaGetErrorName(err) +
                             ": " + cudaGetErrorString(err));
}

// Calls fn(T{}) for the scalar type named by `dtype`.
template <typename Fn>
inline void dispatch_floating(int dtype, const char* op, Fn&& fn) {
  switch (dtype) {
    case kFloat32:
      fn(float{});
      break;
    case kFloat64:
      fn(double{});
      break;
    default:
      throw std::invalid_argument(std::string(op) + ": unsupported dtype code " + std::to_string(dtype) +
                                  " (expected 0=float32 or 1=float64)");
  }
}

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements.
inline unsigned int blocks_for(int64_t n, int threads = kThreads) {
  int64_t blocks = (n + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > (int64_t{1} << 20)) blocks = int64_t{1} << 20;
  return static_cast<unsigned int>(blocks);
}

}  // namespace detcore_cuda

#define DETCORE_KERNEL_LOOP(i, n)                                                              \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); \
       i += static_cast<int64_t>(blockDim.x) * gridDim.x)

#endif  // __CUDACC__
