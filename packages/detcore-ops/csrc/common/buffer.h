// Raw-buffer conventions shared by every kernel. The Python side (detcore.ops) validates arguments,
// makes inputs contiguous, allocates outputs with torch and passes data pointers as integers.
// Nothing here knows about torch.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>

namespace detcore {

// dtype codes passed from Python (detcore/ops/_native.py keeps the same table).
enum DType : int { kFloat32 = 0, kFloat64 = 1 };

template <typename T>
inline T* ptr(std::uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// Calls fn.template operator()<scalar_t>() for the scalar type named by `dtype`.
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

}  // namespace detcore
