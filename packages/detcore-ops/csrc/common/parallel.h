// parallel_for over [begin, end) split into at most `num_threads` contiguous chunks.
// The thread count comes from Python (torch.get_num_threads()), so detcore honours torch's setting.
// Work smaller than `grain` items runs inline on the calling thread.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace detcore {

template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, int num_threads, F&& f) {
  const int64_t n = end - begin;
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(std::max(num_threads, 1), (n + grain - 1) / grain);
  if (chunks <= 1) {
    f(begin, end);
    return;
  }
  const int64_t step = (n + chunks - 1) / chunks;
  std::vector<std::thread> workers;
  std::vector<std::exception_ptr> errors(chunks);
  workers.reserve(chunks - 1);
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t b = begin + c * step;
    const int64_t e = std::min(end, b + step);
    if (b >= e) break;
    workers.emplace_back([&, c, b, e] {
      try {
        f(b, e);
      } catch (...) {
        errors[c] = std::current_exception();
      }
    });
  }
  try {
    f(begin, std::min(end, begin + step));
  } catch (...) {
    errors[0] = std::current_exception();
  }
  for (auto& w : workers) w.join();
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

}  // namespace detcore
