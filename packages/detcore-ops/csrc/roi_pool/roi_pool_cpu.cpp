// ROIPool (torchvision.ops.roi_pool semantics), CPU forward and backward.
//
// Roi corners are rounded to pixels (round half away from zero), malformed rois are forced to 1x1, and bin
// (ph, pw) covers rows [floor(ph * bin_h), ceil((ph + 1) * bin_h)) of the roi, clipped to the map. A bin
// takes the maximum over its pixels (first maximum in row-major order) and remembers where it was
// (argmax: index h * W + w within the channel plane; -1 and value 0 for an empty bin).
//
// The bin rectangles depend only on the roi, so they are computed once per roi. Forward reads the pixels
// channels-last (the whole image transposed once when the rois cover it more than once over, otherwise
// each roi's box; see roi_align/roi_engine.h) so the max and argmax run over contiguous channels, in
// parallel over rois. Backward runs over channel blocks (each thread owns grad_input[:, its channels]).
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "common/buffer.h"
#include "common/ops.h"
#include "common/parallel.h"
#include "roi_align/roi_engine.h"

namespace detcore {
namespace {

struct Bin {
  int h0, h1, w0, w1;
};

// Rounded roi coordinate as an int, kept in a range where the bin arithmetic cannot overflow.
template <typename T>
inline int64_t round_coord(T v, T scale) {
  const double r = std::round(static_cast<double>(v * scale));
  return static_cast<int64_t>(std::max(-1e9, std::min(1e9, r)));
}

template <typename T>
void roi_bins(const T* roi, T scale, int H, int W, int PH, int PW, std::vector<Bin>& bins) {
  const int64_t start_w = round_coord(roi[1], scale), start_h = round_coord(roi[2], scale);
  const int64_t end_w = round_coord(roi[3], scale), end_h = round_coord(roi[4], scale);
  const int64_t roi_w = std::max<int64_t>(end_w - start_w + 1, 1), roi_h = std::max<int64_t>(end_h - start_h + 1, 1);
  const T bin_h = static_cast<T>(roi_h) / static_cast<T>(PH);
  const T bin_w = static_cast<T>(roi_w) / static_cast<T>(PW);
  bins.resize(static_cast<size_t>(PH) * PW);
  auto clip = [](int64_t v, int64_t n) { return static_cast<int>(std::min(std::max<int64_t>(v, 0), n)); };
  for (int ph = 0; ph < PH; ++ph) {
    const int64_t hs = static_cast<int64_t>(std::floor(static_cast<T>(ph) * bin_h));
    const int64_t he = static_cast<int64_t>(std::ceil(static_cast<T>(ph + 1) * bin_h));
    for (int pw = 0; pw < PW; ++pw) {
      const int64_t ws = static_cast<int64_t>(std::floor(static_cast<T>(pw) * bin_w));
      const int64_t we = static_cast<int64_t>(std::ceil(static_cast<T>(pw + 1) * bin_w));
      bins[ph * PW + pw] = Bin{clip(hs + start_h, H), clip(he + start_h, H), clip(ws + start_w, W),
                               clip(we + start_w, W)};
    }
  }
}

template <typename T>
void validate(const T* rois, int64_t K, int64_t N) {
  for (int64_t k = 0; k < K; ++k) {
    for (int j = 0; j < 5; ++j)
      if (!std::isfinite(static_cast<double>(rois[k * 5 + j])))
        throw std::invalid_argument("rois must be finite, got " + std::to_string(static_cast<double>(rois[k * 5 + j])) +
                                    " in row " + std::to_string(k));
    const double b = std::trunc(static_cast<double>(rois[k * 5]));
    if (!(b >= 0 && b < static_cast<double>(N)))
      throw std::invalid_argument("rois[:, 0] (batch index) must be in [0, " + std::to_string(N) + "), got " +
                                  std::to_string(static_cast<double>(rois[k * 5])) + " in row " + std::to_string(k));
  }
}

// An index type as wide as T, so the argmax select vectorises together with the values.
template <typename T>
using Lane = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;

// Running max and first argmax over the bin's pixels (row-major) for all channels; pixels come from a
// channels-last base whose pixel (h, w) is at ((h - r_off) * row + (w - c_off)) * C. Strict ">" keeps the
// first maximum (and ignores NaN), as torchvision does.
template <typename T, int Bytes>
__attribute__((always_inline)) inline void bin_max_impl(const T* base, int64_t row, int r_off, int c_off,
                                                         const Bin& bin, int W, int C, T* best, Lane<T>* arg) {
  using V = typename roi_engine::Vec<T, Bytes>::type;
  using I = typename roi_engine::Vec<Lane<T>, Bytes>::type;
  constexpr int L = roi_engine::Vec<T, Bytes>::lanes;
  const bool empty = bin.h1 <= bin.h0 || bin.w1 <= bin.w0;
  const T init = empty ? T(0) : static_cast<T>(-FLT_MAX);
  int c0 = 0;
  for (; c0 + L <= C; c0 += L) {
    V b = V{} + init;
    I a = I{} - 1;
    for (int h = bin.h0; h < bin.h1; ++h) {
      for (int w = bin.w0; w < bin.w1; ++w) {
        const V v = *reinterpret_cast<const V*>(base + ((h - r_off) * row + (w - c_off)) * C + c0);
        const I m = reinterpret_cast<I>(v > b);
        const I idx = I{} + static_cast<Lane<T>>(static_cast<int64_t>(h) * W + w);
        b = reinterpret_cast<V>((reinterpret_cast<I>(v) & m) | (reinterpret_cast<I>(b) & ~m));
        a = (idx & m) | (a & ~m);
      }
    }
    *reinterpret_cast<V*>(best + c0) = b;
    *reinterpret_cast<I*>(arg + c0) = a;
  }
  for (; c0 < C; ++c0) {
    T b = init;
    Lane<T> a = -1;
    for (int h = bin.h0; h < bin.h1; ++h) {
      for (int w = bin.w0; w < bin.w1; ++w) {
        const T v = base[((h - r_off) * row + (w - c_off)) * C + c0];
        if (v > b) {
          b = v;
          a = static_cast<Lane<T>>(static_cast<int64_t>(h) * W + w);
        }
      }
    }
    best[c0] = b;
    arg[c0] = a;
  }
}

template <typename T>
void bin_max_base(const T* base, int64_t row, int r_off, int c_off, const Bin& bin, int W, int C, T* best,
                  Lane<T>* arg) {
  bin_max_impl<T, 16>(base, row, r_off, c_off, bin, W, C, best, arg);
}
#ifdef DETCORE_ROI_AVX2
template <typename T>
DETCORE_AVX2_TARGET void bin_max_avx2(const T* base, int64_t row, int r_off, int c_off, const Bin& bin, int W, int C,
                                      T* best, Lane<T>* arg) {
  bin_max_impl<T, 32>(base, row, r_off, c_off, bin, W, C, best, arg);
}
#endif

template <typename T>
void bin_max(const T* base, int64_t row, int r_off, int c_off, const Bin& bin, int W, int C, T* best, Lane<T>* arg) {
#ifdef DETCORE_ROI_AVX2
  if (roi_engine::cpu_has_avx2()) return bin_max_avx2(base, row, r_off, c_off, bin, W, C, best, arg);
#endif
  bin_max_base(base, row, r_off, c_off, bin, W, C, best, arg);
}

template <typename T>
void forward(const T* input, const T* rois, int64_t K, int64_t N, int C, int H, int W, int PH, int PW, T scale,
             T* output, int64_t* argmax, int num_threads) {
  validate(rois, K, N);
  const int64_t HW = static_cast<int64_t>(H) * W, P = static_cast<int64_t>(PH) * PW;
  if (K == 0 || C == 0) return;
  // Per image: its rois (top to bottom) and how many pixels they cover.
  std::vector<int64_t> begin(N + 1, 0), order(K), top(K), area(N, 0);
  {
    std::vector<Bin> bins;
    for (int64_t k = 0; k < K; ++k) {
      const T* roi = rois + k * 5;
      roi_bins(roi, scale, H, W, PH, PW, bins);
      int r0 = H, r1 = 0, c0 = W, c1 = 0;
      for (const Bin& bin : bins) {
        r0 = std::min(r0, bin.h0);
        r1 = std::max(r1, bin.h1);
        c0 = std::min(c0, bin.w0);
        c1 = std::max(c1, bin.w1);
      }
      top[k] = r0;
      const int64_t b = static_cast<int64_t>(roi[0]);
      begin[b + 1] += 1;
      area[b] += static_cast<int64_t>(std::max(0, r1 - r0)) * std::max(0, c1 - c0);
    }
  }
  for (int64_t b = 0; b < N; ++b) begin[b + 1] += begin[b];
  {
    std::vector<int64_t> fill(begin.begin(), begin.end() - 1);
    for (int64_t k = 0; k < K; ++k) order[fill[static_cast<int64_t>(rois[k * 5])]++] = k;
    for (int64_t b = 0; b < N; ++b)
      std::stable_sort(order.begin() + begin[b], order.begin() + begin[b + 1],
                       [&](int64_t a, int64_t c) { return top[a] < top[c]; });
  }
  bool any_whole = false;
  for (int64_t b = 0; b < N; ++b) any_whole |= area[b] > HW;
  T* const whole_image = any_whole ? roi_engine::nhwc_scratch<T>(static_cast<size_t>(HW) * C) : nullptr;
  for (int64_t b = 0; b < N; ++b) {
    if (begin[b] == begin[b + 1]) continue;
    const T* img = input + b * C * HW;
    const bool whole = area[b] > HW;
    if (whole) {
      parallel_for(0, H, 8, num_threads, [&](int64_t r0, int64_t r1) {
        roi_engine::gather_nhwc(img, C, H, W, static_cast<int>(r0), static_cast<int>(r1), 0, W,
                                whole_image + r0 * W * C);
      });
    }
    parallel_for(begin[b], begin[b + 1], 4, num_threads, [&](int64_t i0, int64_t i1) {
      std::vector<Bin> bins;
      std::vector<T> region, best(C);
      std::vector<Lane<T>> arg(C);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t k = order[i];
        roi_bins(rois + k * 5, scale, H, W, PH, PW, bins);
        const T* base = whole_image;
        int64_t row = W;
        int r_off = 0, c_off = 0;
        if (!whole) {
          int r0 = H, r1 = 0, c0 = W, c1 = 0;
          for (const Bin& bin : bins) {
            if (bin.h1 <= bin.h0 || bin.w1 <= bin.w0) continue;
            r0 = std::min(r0, bin.h0);
            r1 = std::max(r1, bin.h1);
            c0 = std::min(c0, bin.w0);
            c1 = std::max(c1, bin.w1);
          }
          if (r1 > r0 && c1 > c0) {
            region.resize(static_cast<size_t>(r1 - r0) * (c1 - c0) * C);
            roi_engine::gather_nhwc(img, C, H, W, r0, r1, c0, c1, region.data());
          }
          base = region.data();
          row = c1 - c0;
          r_off = r0;
          c_off = c0;
        }
        T* out = output + k * C * P;
        int64_t* am = argmax + k * C * P;
        for (int64_t p = 0; p < P; ++p) {
          bin_max(base, row, r_off, c_off, bins[p], W, C, best.data(), arg.data());
          for (int c = 0; c < C; ++c) {
            out[c * P + p] = best[c];
            am[c * P + p] = arg[c];
          }
        }
      }
    });
  }
}

template <typename T>
void backward(const T* grad, const T* rois, const int64_t* argmax, int64_t K, int64_t N, int C, int H, int W, int PH,
              int PW, T* grad_input, int num_threads) {
  validate(rois, K, N);
  const int64_t HW = static_cast<int64_t>(H) * W, P = static_cast<int64_t>(PH) * PW;
  for (int64_t i = 0; i < K * C * P; ++i)
    if (argmax[i] < -1 || argmax[i] >= HW)
      throw std::invalid_argument("argmax must hold -1 or indices in [0, H * W), got " + std::to_string(argmax[i]));
  const int blocks = std::max(1, std::min(num_threads, C));
  parallel_for(0, blocks, 1, blocks, [&](int64_t blk0, int64_t blk1) {
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int c0 = static_cast<int>(blk * C / blocks), c1 = static_cast<int>((blk + 1) * C / blocks);
      for (int64_t k = 0; k < K; ++k) {
        const int64_t b = static_cast<int64_t>(rois[k * 5]);
        for (int c = c0; c < c1; ++c) {
          T* plane = grad_input + (b * C + c) * HW;
          const T* g = grad + (k * C + c) * P;
          const int64_t* arg = argmax + (k * C + c) * P;
          for (int64_t p = 0; p < P; ++p)
            if (arg[p] >= 0) plane[arg[p]] += g[p];
        }
      }
    }
  });
}

void forward_entry(std::uintptr_t input, std::uintptr_t rois, int64_t K, int64_t N, int C, int H, int W, int PH,
                   int PW, double spatial_scale, int dtype, std::uintptr_t output, std::uintptr_t argmax,
                   int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "roi_pool", [&](auto zero) {
    using T = decltype(zero);
    forward<T>(ptr<const T>(input), ptr<const T>(rois), K, N, C, H, W, PH, PW, static_cast<T>(spatial_scale),
               ptr<T>(output), ptr<int64_t>(argmax), num_threads);
  });
}

void backward_entry(std::uintptr_t grad, std::uintptr_t rois, std::uintptr_t argmax, int64_t K, int64_t N, int C,
                    int H, int W, int PH, int PW, int dtype, std::uintptr_t grad_input, int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "_roi_pool_backward", [&](auto zero) {
    using T = decltype(zero);
    backward<T>(ptr<const T>(grad), ptr<const T>(rois), ptr<const int64_t>(argmax), K, N, C, H, W, PH, PW,
                ptr<T>(grad_input), num_threads);
  });
}

}  // namespace

void register_roi_pool(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("roi_pool_forward", &forward_entry, "input"_a, "rois"_a, "K"_a, "N"_a, "C"_a, "H"_a, "W"_a, "pooled_height"_a,
        "pooled_width"_a, "spatial_scale"_a, "dtype"_a, "output"_a, "argmax"_a, "num_threads"_a,
        "ROIPool forward: input [N,C,H,W] contiguous, rois [K,5]; writes output [K,C,PH,PW] and argmax "
        "(int64, index within the channel plane or -1).");
  m.def("roi_pool_backward", &backward_entry, "grad"_a, "rois"_a, "argmax"_a, "K"_a, "N"_a, "C"_a, "H"_a, "W"_a,
        "pooled_height"_a, "pooled_width"_a, "dtype"_a, "grad_input"_a, "num_threads"_a,
        "ROIPool backward: adds grad [K,C,PH,PW] into grad_input [N,C,H,W] at argmax (zero it first).");
}

}  // namespace detcore
