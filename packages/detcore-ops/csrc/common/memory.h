// Memory helpers for kernels that fill large, freshly allocated outputs.
#pragma once
#include <cstddef>
#include <cstdint>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace detcore {

// Asks Linux to back the 2 MiB-aligned interior of [data, data + bytes) with transparent huge pages before
// it is first written. A 100 MB output otherwise takes ~25,000 page faults, which cost more than writing it.
// Only a hint: no effect elsewhere, for small buffers, or when THP is disabled; errors are ignored.
inline void advise_huge_pages(void* data, std::size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr std::uintptr_t kHuge = std::uintptr_t(1) << 21;
  if (bytes < 4 * kHuge) return;
  const std::uintptr_t begin = (reinterpret_cast<std::uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// Asks Linux (5.14+) to fault in the pages of [data, data + bytes) for writing in one call, which is cheaper
// than taking one page fault per page when they are first written. Only a hint: errors (an older kernel)
// are ignored.
inline void populate_for_write(void* data, std::size_t bytes) {
#if defined(__linux__)
  constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE, absent from older headers
  constexpr std::uintptr_t kPage = 4096;
  if (bytes == 0) return;
  const std::uintptr_t begin = reinterpret_cast<std::uintptr_t>(data) & ~(kPage - 1);
  const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(data) + bytes;
  madvise(reinterpret_cast<void*>(begin), end - begin, kPopulateWrite);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace detcore
