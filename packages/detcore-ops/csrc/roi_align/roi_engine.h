// CPU engine shared by roi_align and roi_align_rotated.
//
// A "builder" turns roi k into taps: for every output bin, a list of (row, col, weight) pixels whose
// weighted sum is the bin's value. Taps merge all samples of a bin (the same pixel is touched by up to
// four samples and appears once) and include the 1/count averaging, so a bin costs one multiply-add per
// distinct pixel and channel. Weights depend only on the roi, never on the channel, so they are computed
// once per roi and the channel loop runs innermost over a channels-last (NHWC) copy of the pixels the roi
// touches: contiguous, vectorised, with the accumulators of a channel block held in registers.
//
// Pixels reach NHWC in one of three ways, chosen per image: the input already is channels-last; the rois
// of the image cover more pixels (counted with multiplicity) than the image has, so the whole image is
// transposed once; or each roi copies (transposes) just its bounding box.
//
// Forward parallelises over rois (each output element is written by one thread). Backward parallelises
// over channel blocks: each thread owns grad_input[:, its channels], so scattering needs no atomics.
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/parallel.h"
#include "roi_align/roi_align.h"

namespace detcore {
namespace roi_engine {

template <typename T>
struct Tap {
  int32_t r;
  int32_t c;
  T w;
};

// Taps of one roi: bins concatenated, bin b in [bin_begin[b], bin_begin[b + 1]).
template <typename T>
struct RoiTaps {
  std::vector<Tap<T>> taps;
  std::vector<int64_t> bin_begin;
  int r0 = 0, r1 = 0, c0 = 0, c1 = 0;  // bounding box of the taps, half-open

  void reset() {
    taps.clear();
    bin_begin.assign(1, 0);
    r0 = c0 = INT_MAX;
    r1 = c1 = INT_MIN;
  }
  void add(int r, int c, T w) {
    // Fields stored one by one: a Tap built on the stack and copied is read back with a wider load than
    // it was written with, which stalls store forwarding on every tap.
    Tap<T>& t = taps.emplace_back();
    t.r = r;
    t.c = c;
    t.w = w;
    r0 = std::min(r0, r);
    r1 = std::max(r1, r + 1);
    c0 = std::min(c0, c);
    c1 = std::max(c1, c + 1);
  }
  // Appends `n` taps for the caller to fill, all inside the pixel box [br0, br1) x [bc0, bc1).
  Tap<T>* append(size_t n, int br0, int br1, int bc0, int bc1) {
    const size_t old = taps.size();
    taps.resize(old + n);
    r0 = std::min(r0, br0);
    r1 = std::max(r1, br1);
    c0 = std::min(c0, bc0);
    c1 = std::max(c1, bc1);
    return taps.data() + old;
  }
  void end_bin() { bin_begin.push_back(static_cast<int64_t>(taps.size())); }
  bool empty() const { return taps.empty(); }
};

// Half-open pixel box, used to estimate how much of an image the rois touch.
struct Box {
  int64_t r0 = 0, r1 = 0, c0 = 0, c1 = 0;
  int64_t area() const { return std::max<int64_t>(0, r1 - r0) * std::max<int64_t>(0, c1 - c0); }
};

// The pixel box touched by samples whose coordinates lie in [y0, y1] x [x0, x1] (clipped to the map).
template <typename T>
inline Box clip_box(double y0, double y1, double x0, double x1, int H, int W) {
  Box b;
  if (!(y1 >= -1 && y0 <= H && x1 >= -1 && x0 <= W)) return b;
  auto lo = [](double v, int n) { return static_cast<int64_t>(std::min<double>(std::max(v, 0.0), n - 1)); };
  b.r0 = lo(std::floor(y0), H);
  b.r1 = lo(std::floor(y1) + 1, H) + 1;
  b.c0 = lo(std::floor(x0), W);
  b.c1 = lo(std::floor(x1) + 1, W) + 1;
  return b;
}

// Indices i in [0, grid) whose sample coordinate a + (i + 0.5) * s can lie in [lo, hi]: a superset with a
// margin for rounding (every candidate is then tested exactly). Used when a roi has so many samples per
// bin that testing them all would not finish (absurdly large rois); normal rois test every sample.
inline void candidate_range(double a, double s, int64_t grid, double lo, double hi, double eps, int64_t& i0,
                            int64_t& i1) {
  i0 = 0;
  i1 = grid;
  if (!(std::isfinite(a) && std::isfinite(s) && std::isfinite(lo) && std::isfinite(hi))) return;
  if (s == 0) return;
  const double slack = 8 * eps * (std::fabs(a) + std::fabs(s) * static_cast<double>(grid) + std::fabs(lo) + std::fabs(hi));
  double f0 = (lo - slack - a) / s - 0.5, f1 = (hi + slack - a) / s - 0.5;
  if (f0 > f1) std::swap(f0, f1);
  const double g = static_cast<double>(grid);
  f0 = std::max(std::floor(f0) - 2, 0.0);
  f1 = std::min(std::ceil(f1) + 3, g);
  if (f1 <= f0) {
    i0 = i1 = 0;
    return;
  }
  i0 = static_cast<int64_t>(f0);
  i1 = static_cast<int64_t>(f1);
}

constexpr int64_t kDirectGrid = 4096;  // bins with at most this many samples per axis test them all

// Merged weights along one axis for one bin. Sample i sits at (bin_sample(start, p, bin, i, grid)) * mult
// + add; the result lists touched pixel indices (increasing) and their summed weights.
template <typename T>
struct AxisScratch {
  std::vector<T> dense;
  std::vector<unsigned char> touched;
  void ensure(int size) {
    if (static_cast<int>(dense.size()) < size) {
      dense.assign(size, T(0));
      touched.assign(size, 0);
    }
  }
};

template <typename T>
struct AxisWeights {
  std::vector<int> idx;
  std::vector<T> w;
};

template <typename T>
void axis_weights(int size, T start, int p, T bin, int64_t grid, T mult, T add, AxisScratch<T>& scratch,
                  AxisWeights<T>& out) {
  out.idx.clear();
  out.w.clear();
  if (grid <= 0) return;
  scratch.ensure(size);
  int64_t i0 = 0, i1 = grid;
  if (grid > kDirectGrid) {
    const double a = (static_cast<double>(start) + p * static_cast<double>(bin)) * mult + add;
    const double s = static_cast<double>(bin) / static_cast<double>(grid) * mult;
    candidate_range(a, s, grid, -1.0, size, std::numeric_limits<T>::epsilon(), i0, i1);
  }
  int lo = INT_MAX, hi = INT_MIN;
  for (int64_t i = i0; i < i1; ++i) {
    const T c = roi_math::bin_sample(start, p, bin, i, grid) * mult + add;
    int l, h;
    T wl, wh;
    if (!roi_math::axis_taps(size, c, l, h, wl, wh)) continue;
    scratch.dense[l] += wl;
    scratch.dense[h] += wh;
    scratch.touched[l] = scratch.touched[h] = 1;
    lo = std::min(lo, l);
    hi = std::max(hi, h);
  }
  for (int k = lo; k <= hi; ++k) {
    if (scratch.touched[k]) {
      out.idx.push_back(k);
      out.w.push_back(scratch.dense[k]);
    }
    scratch.dense[k] = T(0);
    scratch.touched[k] = 0;
  }
}

// Per-thread working memory of the forward/backward loops.
template <typename T>
struct Worker {
  RoiTaps<T> taps;
  std::vector<int64_t> pos;  // tap pixel offsets into the NHWC base
  std::vector<T> weight;
  std::vector<T> region;     // NHWC copy of the roi's bounding box (region mode)
  std::vector<T> grad;       // [bins, channel block] gradient of one roi (backward)
};

// A channels-last scratch image of at least `n` elements, owned by the calling thread and kept between
// calls (a fresh 100 MB buffer would page-fault on every call). Shared by the roi ops' forward and
// backward passes, which never run nested on one thread. Resolve it in the calling thread, never inside a
// parallel_for worker (thread_local).
template <typename T>
T* nhwc_scratch(size_t n) {
  static thread_local std::vector<T> buffer;
  if (buffer.size() < n) {
    buffer = std::vector<T>();
    buffer.resize(n);
  }
  return buffer.data();
}

// Roi k's batch index, validated by the caller.
template <typename T>
inline int batch_of(const T* rois, int64_t k, int roi_cols) {
  return static_cast<int>(rois[k * roi_cols]);
}

// Checks batch indices (finite, truncating into [0, N)) and that every coordinate is finite; throws
// std::invalid_argument (ValueError in Python) naming the first bad row.
template <typename T>
void validate_rois(const T* rois, int64_t K, int roi_cols, int64_t N) {
  for (int64_t k = 0; k < K; ++k) {
    const T* r = rois + k * roi_cols;
    for (int j = 0; j < roi_cols; ++j) {
      if (!std::isfinite(static_cast<double>(r[j])))
        throw std::invalid_argument("rois must be finite, got " + std::to_string(static_cast<double>(r[j])) +
                                    " in row " + std::to_string(k));
    }
    const double b = std::trunc(static_cast<double>(r[0]));
    if (!(b >= 0 && b < static_cast<double>(N)))
      throw std::invalid_argument("rois[:, 0] (batch index) must be in [0, " + std::to_string(N) + "), got " +
                                  std::to_string(static_cast<double>(r[0])) + " in row " + std::to_string(k));
  }
}

// Rois grouped by image (stable), and per image whether its rois touch more pixels than it has.
struct Plan {
  std::vector<int64_t> order;       // roi indices sorted by image
  std::vector<int64_t> image_begin;  // image b's rois are order[image_begin[b] .. image_begin[b + 1])
  std::vector<unsigned char> whole;  // transpose the whole image once (1) or per roi box (0)
};

template <typename T, typename Builder>
Plan make_plan(const T* rois, int64_t K, int roi_cols, int64_t N, int H, int W, const Builder& builder) {
  Plan plan;
  plan.image_begin.assign(N + 1, 0);
  std::vector<int64_t> area(N, 0);
  for (int64_t k = 0; k < K; ++k) {
    const int b = batch_of(rois, k, roi_cols);
    plan.image_begin[b + 1] += 1;
    area[b] += builder.estimate(k).area();
  }
  for (int64_t b = 0; b < N; ++b) plan.image_begin[b + 1] += plan.image_begin[b];
  plan.order.resize(K);
  std::vector<int64_t> fill(plan.image_begin.begin(), plan.image_begin.end() - 1);
  std::vector<int64_t> top(K);
  for (int64_t k = 0; k < K; ++k) {
    plan.order[fill[batch_of(rois, k, roi_cols)]++] = k;
    top[k] = builder.estimate(k).r0;
  }
  // Within an image, rois run from top to bottom, so overlapping rois reuse pixels still in cache.
  for (int64_t b = 0; b < N; ++b)
    std::stable_sort(plan.order.begin() + plan.image_begin[b], plan.order.begin() + plan.image_begin[b + 1],
                     [&](int64_t a, int64_t c) { return top[a] < top[c]; });
  plan.whole.resize(N);
  for (int64_t b = 0; b < N; ++b) plan.whole[b] = area[b] > static_cast<int64_t>(H) * W;
  return plan;
}

// dst[((r - r0) * (c1 - c0) + (c - c0)) * C + ch] = img[ch][r][c] for rows [r0, r1), cols [c0, c1).
// Tiles of 16 channels x 16 pixels keep both the reads (16 channel rows) and the writes (16 pixels) to a
// few cache lines and pages at a time.
template <typename T>
void gather_nhwc(const T* img, int C, int H, int W, int r0, int r1, int c0, int c1, T* dst) {
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int Rw = c1 - c0;
  constexpr int kTile = 16;
  T tile[kTile][kTile];
  for (int r = r0; r < r1; ++r) {
    T* drow = dst + static_cast<int64_t>(r - r0) * Rw * C;
    const T* srow = img + static_cast<int64_t>(r) * W + c0;
    for (int ch0 = 0; ch0 < C; ch0 += kTile) {
      const int nc = std::min(kTile, C - ch0);
      for (int x0 = 0; x0 < Rw; x0 += kTile) {
        const int nx = std::min(kTile, Rw - x0);
        if (nx == kTile && nc == kTile) {
          for (int i = 0; i < kTile; ++i) {
            const T* s = srow + (ch0 + i) * HW + x0;
            for (int j = 0; j < kTile; ++j) tile[j][i] = s[j];
          }
          for (int j = 0; j < kTile; ++j) {
            T* d = drow + static_cast<int64_t>(x0 + j) * C + ch0;
            for (int i = 0; i < kTile; ++i) d[i] = tile[j][i];
          }
        } else {
          for (int i = 0; i < nc; ++i) {
            const T* s = srow + (ch0 + i) * HW + x0;
            for (int j = 0; j < nx; ++j) drow[static_cast<int64_t>(x0 + j) * C + ch0 + i] = s[j];
          }
        }
      }
    }
  }
}

// img[ch0 + j][r][c] += src[((r - r0) * (c1 - c0) + (c - c0)) * Cb + j] for j in [0, Cb) (= when Assign).
template <typename T, bool Assign = false>
void scatter_add_nchw(const T* src, int Cb, int ch0, int H, int W, int r0, int r1, int c0, int c1, T* img) {
  const int64_t HW = static_cast<int64_t>(H) * W;
  const int64_t Rw = c1 - c0;
  constexpr int kBlock = 16;
  for (int j0 = 0; j0 < Cb; j0 += kBlock) {
    const int j1 = std::min(Cb, j0 + kBlock);
    for (int r = r0; r < r1; ++r) {
      const T* srow = src + static_cast<int64_t>(r - r0) * Rw * Cb;
      for (int j = j0; j < j1; ++j) {
        T* drow = img + (ch0 + j) * HW + static_cast<int64_t>(r) * W + c0;
        if (Assign) {
          for (int64_t c = 0; c < Rw; ++c) drow[c] = srow[c * Cb + j];
        } else {
          for (int64_t c = 0; c < Rw; ++c) drow[c] += srow[c * Cb + j];
        }
      }
    }
  }
}

// Fixed-width vectors (GCC/Clang vector extensions, unaligned, may alias T). 16-byte vectors are native
// on every x86-64 (SSE2) and aarch64 (NEON) target; on x86-64 the hot loops are compiled a second time for
// AVX2+FMA with 32-byte vectors and picked at run time (wheels cannot assume AVX2).
template <typename T, int Bytes>
struct Vec {
  typedef T type __attribute__((vector_size(Bytes), aligned(sizeof(T)), may_alias));
  static constexpr int lanes = Bytes / static_cast<int>(sizeof(T));
};

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DETCORE_ROI_AVX2 1
#define DETCORE_AVX2_TARGET __attribute__((target("avx2,fma")))
inline bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// out[ch * P] = sum_t w[t] * base[pos[t] * C + ch] for ch in [0, C).
template <typename T, int Bytes>
__attribute__((always_inline)) inline void bin_forward_impl(const int64_t* pos, const T* w, int64_t n,
                                                             const T* base, int C, T* out, int64_t P) {
  using V = typename Vec<T, Bytes>::type;
  constexpr int L = Vec<T, Bytes>::lanes;
  constexpr int B = 4 * L;
  int c0 = 0;
  for (; c0 + B <= C; c0 += B) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
    for (int64_t t = 0; t < n; ++t) {
      const V* src = reinterpret_cast<const V*>(base + pos[t] * C + c0);
      const V wt = V{} + w[t];
      a0 += wt * src[0];
      a1 += wt * src[1];
      a2 += wt * src[2];
      a3 += wt * src[3];
    }
    T* o = out + static_cast<int64_t>(c0) * P;
    for (int j = 0; j < L; ++j) {
      o[j * P] = a0[j];
      o[(L + j) * P] = a1[j];
      o[(2 * L + j) * P] = a2[j];
      o[(3 * L + j) * P] = a3[j];
    }
  }
  for (; c0 + L <= C; c0 += L) {
    V a0 = {};
    for (int64_t t = 0; t < n; ++t) a0 += (V{} + w[t]) * *reinterpret_cast<const V*>(base + pos[t] * C + c0);
    for (int j = 0; j < L; ++j) out[static_cast<int64_t>(c0 + j) * P] = a0[j];
  }
  for (; c0 < C; ++c0) {
    T a = T(0);
    for (int64_t t = 0; t < n; ++t) a += w[t] * base[pos[t] * C + c0];
    out[static_cast<int64_t>(c0) * P] = a;
  }
}

// d[j] += w * g[j] for j in [0, n).
template <typename T, int Bytes>
__attribute__((always_inline)) inline void axpy_impl(T* d, T w, const T* g, int n) {
  using V = typename Vec<T, Bytes>::type;
  constexpr int L = Vec<T, Bytes>::lanes;
  const V wv = V{} + w;
  int j = 0;
  for (; j + L <= n; j += L) *reinterpret_cast<V*>(d + j) += wv * *reinterpret_cast<const V*>(g + j);
  for (; j < n; ++j) d[j] += w * g[j];
}

template <typename T>
void bin_forward_base(const int64_t* pos, const T* w, int64_t n, const T* base, int C, T* out, int64_t P) {
  bin_forward_impl<T, 16>(pos, w, n, base, C, out, P);
}
template <typename T>
void axpy_base(T* d, T w, const T* g, int n) {
  axpy_impl<T, 16>(d, w, g, n);
}
#ifdef DETCORE_ROI_AVX2
template <typename T>
DETCORE_AVX2_TARGET void bin_forward_avx2(const int64_t* pos, const T* w, int64_t n, const T* base, int C, T* out,
                                          int64_t P) {
  bin_forward_impl<T, 32>(pos, w, n, base, C, out, P);
}
template <typename T>
DETCORE_AVX2_TARGET void axpy_avx2(T* d, T w, const T* g, int n) {
  axpy_impl<T, 32>(d, w, g, n);
}
#endif

template <typename T>
inline void bin_forward(const int64_t* pos, const T* w, int64_t n, const T* base, int C, T* out, int64_t P) {
#ifdef DETCORE_ROI_AVX2
  if (cpu_has_avx2()) return bin_forward_avx2(pos, w, n, base, C, out, P);
#endif
  bin_forward_base(pos, w, n, base, C, out, P);
}

template <typename T>
inline void axpy(T* d, T w, const T* g, int n) {
#ifdef DETCORE_ROI_AVX2
  if (cpu_has_avx2()) return axpy_avx2(d, w, g, n);
#endif
  axpy_base(d, w, g, n);
}

// Forward: output [K, C, P] (P = pooled_height * pooled_width). `input` is NCHW, or NHWC when
// channels_last.
template <typename T, typename Builder>
void forward(const T* input, bool channels_last, const T* rois, int64_t K, int roi_cols, int64_t N, int C,
             int H, int W, int64_t P, const Builder& builder, T* output, int num_threads) {
  validate_rois(rois, K, roi_cols, N);
  const int64_t HW = static_cast<int64_t>(H) * W;
  if (HW == 0 || C == 0) {  // no pixels: every sample is outside the map
    std::fill(output, output + K * C * P, T(0));
    return;
  }
  const Plan plan = make_plan(rois, K, roi_cols, N, H, W, builder);
  T* whole_image = nullptr;
  for (int64_t b = 0; b < N; ++b)
    if (!channels_last && plan.whole[b] && plan.image_begin[b] < plan.image_begin[b + 1])
      whole_image = nhwc_scratch<T>(static_cast<size_t>(HW) * C);
  for (int64_t b = 0; b < N; ++b) {
    const int64_t first = plan.image_begin[b], last = plan.image_begin[b + 1];
    if (first == last) continue;
    const T* base = nullptr;
    if (channels_last) {
      base = input + b * HW * C;
    } else if (plan.whole[b]) {
      const T* img = input + b * HW * C;
      T* dst = whole_image;
      parallel_for(0, H, 8, num_threads, [&](int64_t r0, int64_t r1) {
        gather_nhwc(img, C, H, W, static_cast<int>(r0), static_cast<int>(r1), 0, W, dst + r0 * W * C);
      });
      base = dst;
    }
    const T* img = input + b * HW * C;
    parallel_for(first, last, 4, num_threads, [&](int64_t i0, int64_t i1) {
      Worker<T> wk;
      typename Builder::Scratch scratch;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t k = plan.order[i];
        T* out = output + k * C * P;
        builder.build(k, scratch, wk.taps);
        if (wk.taps.empty()) {
          std::fill(out, out + C * P, T(0));
          continue;
        }
        const T* src = base;
        int64_t row = W, r_off = 0, c_off = 0;
        if (src == nullptr) {
          const RoiTaps<T>& t = wk.taps;
          wk.region.resize(static_cast<size_t>(t.r1 - t.r0) * (t.c1 - t.c0) * C);
          gather_nhwc(img, C, H, W, t.r0, t.r1, t.c0, t.c1, wk.region.data());
          src = wk.region.data();
          row = t.c1 - t.c0;
          r_off = t.r0;
          c_off = t.c0;
        }
        const auto& taps = wk.taps.taps;
        wk.pos.resize(taps.size());
        wk.weight.resize(taps.size());
        for (size_t t = 0; t < taps.size(); ++t) {
          wk.pos[t] = (taps[t].r - r_off) * row + (taps[t].c - c_off);
          wk.weight[t] = taps[t].w;
        }
        for (int64_t bin = 0; bin < P; ++bin) {
          const int64_t tb = wk.taps.bin_begin[bin], te = wk.taps.bin_begin[bin + 1];
          if (tb == te) {
            for (int ch = 0; ch < C; ++ch) out[ch * P + bin] = T(0);
            continue;
          }
          bin_forward(wk.pos.data() + tb, wk.weight.data() + tb, te - tb, src, C, out + bin, P);
        }
      }
    });
  }
}

// Backward: grad_input [N, C, H, W] = d(output)/d(input)^T grad [K, C, P]. Every element of grad_input is
// written (it need not be initialised).
template <typename T, typename Builder>
void backward(const T* grad, const T* rois, int64_t K, int roi_cols, int64_t N, int C, int H, int W, int64_t P,
              const Builder& builder, T* grad_input, int num_threads) {
  validate_rois(rois, K, roi_cols, N);
  const int64_t HW = static_cast<int64_t>(H) * W;
  if (K == 0 || C == 0 || HW == 0) {
    std::fill(grad_input, grad_input + N * C * HW, T(0));
    return;
  }
  const Plan plan = make_plan(rois, K, roi_cols, N, H, W, builder);
  const int blocks = std::max(1, std::min(num_threads, C));
  // NHWC gradient of a whole image for images in "whole" mode, one slice per channel block.
  bool any_whole = false;
  for (int64_t b = 0; b < N; ++b) any_whole |= plan.whole[b] && plan.image_begin[b] < plan.image_begin[b + 1];
  T* const image_grad_base = any_whole ? nhwc_scratch<T>(static_cast<size_t>(HW) * C) : nullptr;
  parallel_for(0, blocks, 1, blocks, [&](int64_t blk0, int64_t blk1) {
    for (int64_t blk = blk0; blk < blk1; ++blk) {
      const int ch0 = static_cast<int>(blk * C / blocks), ch1 = static_cast<int>((blk + 1) * C / blocks);
      const int Cb = ch1 - ch0;
      if (Cb <= 0) continue;
      Worker<T> wk;
      typename Builder::Scratch scratch;
      T* image_grad = any_whole ? image_grad_base + static_cast<int64_t>(ch0) * HW : nullptr;
      for (int64_t b = 0; b < N; ++b) {
        const int64_t first = plan.image_begin[b], last = plan.image_begin[b + 1];
        T* gimg = grad_input + b * HW * C;
        const bool whole = plan.whole[b] && first < last;
        if (whole)
          std::fill(image_grad, image_grad + HW * Cb, T(0));
        else
          std::fill(gimg + ch0 * HW, gimg + ch1 * HW, T(0));
        for (int64_t i = first; i < last; ++i) {
          const int64_t k = plan.order[i];
          builder.build(k, scratch, wk.taps);
          if (wk.taps.empty()) continue;
          const RoiTaps<T>& t = wk.taps;
          T* dst;
          int64_t row = W, r_off = 0, c_off = 0;
          if (whole) {
            dst = image_grad;
          } else {
            row = t.c1 - t.c0;
            r_off = t.r0;
            c_off = t.c0;
            wk.region.assign(static_cast<size_t>(t.r1 - t.r0) * row * Cb, T(0));
            dst = wk.region.data();
          }
          // This roi's gradient, transposed to [bin][channel].
          wk.grad.resize(static_cast<size_t>(P) * Cb);
          const T* g = grad + (k * C + ch0) * P;
          for (int j = 0; j < Cb; ++j)
            for (int64_t bin = 0; bin < P; ++bin) wk.grad[bin * Cb + j] = g[j * P + bin];
          for (int64_t bin = 0; bin < P; ++bin) {
            const T* gb = wk.grad.data() + bin * Cb;
            for (int64_t q = t.bin_begin[bin]; q < t.bin_begin[bin + 1]; ++q) {
              const Tap<T>& tap = t.taps[q];
              T* d = dst + ((tap.r - r_off) * row + (tap.c - c_off)) * Cb;
              const T w = tap.w;
              axpy(d, w, gb, Cb);
            }
          }
          if (!whole) scatter_add_nchw(dst, Cb, ch0, H, W, t.r0, t.r1, t.c0, t.c1, gimg);
        }
        if (whole) scatter_add_nchw<T, true>(image_grad, Cb, ch0, H, W, 0, H, 0, W, gimg);
      }
    }
  });
}

}  // namespace roi_engine
}  // namespace detcore
