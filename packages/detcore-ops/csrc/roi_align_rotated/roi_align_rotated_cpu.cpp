// ROIAlignRotated (detectron2 semantics), CPU forward and backward.
//
// A roi (batch, cx, cy, w, h, angle degrees counter-clockwise) is sampled on the grid of the axis-aligned
// box of size w x h centred at the origin, rotated by the angle and translated to the (cx, cy) - 0.5
// centre. There is no "legacy" mode: the -0.5 shift always applies, and rois are not enlarged to 1x1 (a
// zero-size roi with adaptive sampling has no samples and pools to 0). Negative sizes are an error, as in
// detectron2.
//
// Samples of a bin are merged into per-pixel weights (roi_engine.h) and evaluated by the shared NHWC
// engine. A roi with angle 0 has separable sampling and takes the per-axis path of roi_align.
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/buffer.h"
#include "common/ops.h"
#include "roi_align/roi_align.h"
#include "roi_align/roi_engine.h"

namespace detcore {
namespace {

using roi_engine::AxisScratch;
using roi_engine::AxisWeights;
using roi_engine::Box;
using roi_engine::RoiTaps;

constexpr double kPi = 3.14159265358979323846;

template <typename T>
struct RotatedBuilder {
  const T* rois;
  T scale;
  int H, W, PH, PW, sampling_ratio;

  struct Scratch {
    AxisScratch<T> ys, xs;
    std::vector<AxisWeights<T>> rows, cols;
    std::vector<roi_math::BilinearSample<T>> samples;
    std::vector<T> dense;
    std::vector<unsigned char> touched;
    // Rotated sample offsets of the roi (fast path): yy * cos, yy * sin of every sample row and xx * sin,
    // xx * cos of every sample column, for all bins.
    std::vector<T> y_cos, y_sin, x_sin, x_cos;
  };

  struct Params {
    T center_h, center_w, roi_h, roi_w, cos_t, sin_t, start_h, start_w, bin_h, bin_w, count;
    int64_t grid_h, grid_w;
  };

  Params params(int64_t k) const {
    const T* r = rois + k * 6;
    Params p;
    p.center_w = r[1] * scale - T(0.5);
    p.center_h = r[2] * scale - T(0.5);
    p.roi_w = r[3] * scale;
    p.roi_h = r[4] * scale;
    const T theta = static_cast<T>(static_cast<double>(r[5]) * kPi / 180.0);
    p.cos_t = std::cos(theta);
    p.sin_t = std::sin(theta);
    p.bin_h = p.roi_h / static_cast<T>(PH);
    p.bin_w = p.roi_w / static_cast<T>(PW);
    p.grid_h = roi_math::sampling_grid(p.roi_h, PH, sampling_ratio);
    p.grid_w = roi_math::sampling_grid(p.roi_w, PW, sampling_ratio);
    p.count = roi_math::sample_count<T>(p.grid_h, p.grid_w);
    p.start_h = static_cast<T>(-static_cast<double>(p.roi_h) / 2.0);
    p.start_w = static_cast<T>(-static_cast<double>(p.roi_w) / 2.0);
    return p;
  }

  Box estimate(int64_t k) const {
    const Params p = params(k);
    if (p.grid_h <= 0 || p.grid_w <= 0) return Box{};
    double y0 = std::numeric_limits<double>::infinity(), y1 = -y0, x0 = y0, x1 = -y0;
    for (int a = 0; a < 2; ++a) {
      for (int b = 0; b < 2; ++b) {
        const double yy = (a ? 0.5 : -0.5) * p.roi_h, xx = (b ? 0.5 : -0.5) * p.roi_w;
        const double y = yy * p.cos_t - xx * p.sin_t + p.center_h, x = yy * p.sin_t + xx * p.cos_t + p.center_w;
        y0 = std::min(y0, y);
        y1 = std::max(y1, y);
        x0 = std::min(x0, x);
        x1 = std::max(x1, x);
      }
    }
    return roi_engine::clip_box<T>(y0, y1, x0, x1, H, W);
  }

  void build(int64_t k, Scratch& s, RoiTaps<T>& out) const {
    out.reset();
    const Params p = params(k);
    const bool any = p.grid_h > 0 && p.grid_w > 0;
    if (any && p.sin_t == T(0)) {
      // y = yy * cos + cy and x = xx * cos + cx exactly (the sin terms are +-0): separable.
      s.rows.resize(PH);
      s.cols.resize(PW);
      for (int ph = 0; ph < PH; ++ph)
        roi_engine::axis_weights(H, p.start_h, ph, p.bin_h, p.grid_h, p.cos_t, p.center_h, s.ys, s.rows[ph]);
      for (int pw = 0; pw < PW; ++pw)
        roi_engine::axis_weights(W, p.start_w, pw, p.bin_w, p.grid_w, p.cos_t, p.center_w, s.xs, s.cols[pw]);
      for (int ph = 0; ph < PH; ++ph) {
        for (int pw = 0; pw < PW; ++pw) {
          const AxisWeights<T>& ry = s.rows[ph];
          const AxisWeights<T>& cx = s.cols[pw];
          for (size_t i = 0; i < ry.idx.size(); ++i)
            for (size_t j = 0; j < cx.idx.size(); ++j) out.add(ry.idx[i], cx.idx[j], ry.w[i] * cx.w[j] / p.count);
          out.end_bin();
        }
      }
      return;
    }
    // The direct path keeps one bin's samples in scratch: bounded to 2^16 samples per bin (larger rois
    // take add_rotated_bin, which keeps only the valid ones).
    if (any && p.grid_h <= roi_engine::kDirectGrid && p.grid_w <= roi_engine::kDirectGrid &&
        p.grid_h * p.grid_w <= (int64_t{1} << 16)) {
      build_direct(p, s, out);
      return;
    }
    for (int ph = 0; ph < PH; ++ph) {
      for (int pw = 0; pw < PW; ++pw) {
        if (any) add_rotated_bin(p, ph, pw, s, out);
        out.end_bin();
      }
    }
  }

  // Every sample of every bin tested (grids of at most 2^16 samples per bin). The same values as
  // add_rotated_bin: y = yy * cos - xx * sin + cy is evaluated with the same roundings (products, then
  // the difference, then the sum), but the products and the sample coordinates are computed once per roi
  // rather than once per sample.
  void build_direct(const Params& p, Scratch& s, RoiTaps<T>& out) const {
    const int64_t gh = p.grid_h, gw = p.grid_w;
    s.y_cos.resize(PH * gh);
    s.y_sin.resize(PH * gh);
    s.x_sin.resize(PW * gw);
    s.x_cos.resize(PW * gw);
    for (int ph = 0; ph < PH; ++ph) {
      for (int64_t iy = 0; iy < gh; ++iy) {
        const T yy = roi_math::bin_sample(p.start_h, ph, p.bin_h, iy, gh);
        s.y_cos[ph * gh + iy] = yy * p.cos_t;
        s.y_sin[ph * gh + iy] = yy * p.sin_t;
      }
    }
    for (int pw = 0; pw < PW; ++pw) {
      for (int64_t ix = 0; ix < gw; ++ix) {
        const T xx = roi_math::bin_sample(p.start_w, pw, p.bin_w, ix, gw);
        s.x_sin[pw * gw + ix] = xx * p.sin_t;
        s.x_cos[pw * gw + ix] = xx * p.cos_t;
      }
    }
    s.samples.resize(gh * gw);
    out.taps.reserve(static_cast<size_t>(PH) * PW * (gh + 2) * (gw + 2));
    for (int ph = 0; ph < PH; ++ph) {
      const T* yc = s.y_cos.data() + ph * gh;
      const T* ysn = s.y_sin.data() + ph * gh;
      for (int pw = 0; pw < PW; ++pw) {
        const T* xs = s.x_sin.data() + pw * gw;
        const T* xc = s.x_cos.data() + pw * gw;
        int r0 = INT_MAX, r1 = INT_MIN, c0 = INT_MAX, c1 = INT_MIN;
        roi_math::BilinearSample<T>* smp = s.samples.data();
        int64_t m = 0;
        for (int64_t iy = 0; iy < gh; ++iy) {
          for (int64_t ix = 0; ix < gw; ++ix) {
            const T y = yc[iy] - xs[ix] + p.center_h;
            const T x = ysn[iy] + xc[ix] + p.center_w;
            roi_math::BilinearSample<T>& b = smp[m];
            if (!roi_math::bilinear_sample(H, W, y, x, b)) continue;
            ++m;
            r0 = std::min(r0, b.y_low);
            r1 = std::max(r1, b.y_high + 1);
            c0 = std::min(c0, b.x_low);
            c1 = std::max(c1, b.x_high + 1);
          }
        }
        if (m > 0) add_dense(p, smp, m, r0, r1, c0, c1, s, out);
        out.end_bin();
      }
    }
  }

  // Merges samples (in order) into per-pixel weights over their pixel box [r0, r1) x [c0, c1) and appends
  // the touched pixels, row by row, as taps.
  void add_dense(const Params& p, const roi_math::BilinearSample<T>* smp, int64_t m, int r0, int r1, int c0,
                 int c1, Scratch& s, RoiTaps<T>& out) const {
    const int64_t w = c1 - c0, n = static_cast<int64_t>(r1 - r0) * w;
    s.dense.assign(n, T(0));
    s.touched.assign(n, 0);
    for (int64_t q = 0; q < m; ++q) {
      const roi_math::BilinearSample<T>& b = smp[q];
      const int64_t a = (b.y_low - r0) * w, bb = (b.y_high - r0) * w;
      const int64_t xl = b.x_low - c0, xh = b.x_high - c0;
      s.dense[a + xl] += b.w1;
      s.dense[a + xh] += b.w2;
      s.dense[bb + xl] += b.w3;
      s.dense[bb + xh] += b.w4;
      s.touched[a + xl] = s.touched[a + xh] = s.touched[bb + xl] = s.touched[bb + xh] = 1;
    }
    int64_t touched = 0;
    for (int64_t i = 0; i < n; ++i) touched += s.touched[i];
    // Every row and column of the box holds a touched pixel (the box is the samples' neighbour box).
    roi_engine::Tap<T>* tap = out.append(static_cast<size_t>(touched), r0, r1, c0, c1);
    for (int r = r0; r < r1; ++r) {
      const T* d = s.dense.data() + (r - r0) * w;
      const unsigned char* t = s.touched.data() + (r - r0) * w;
      for (int64_t c = 0; c < w; ++c) {
        if (!t[c]) continue;
        tap->r = r;
        tap->c = c0 + static_cast<int>(c);
        tap->w = d[c] / p.count;
        ++tap;
      }
    }
  }

  // Candidate sample indices of one bin along y (all of them unless the grid is huge).
  void row_range(const Params& p, int ph, int64_t& i0, int64_t& i1) const {
    i0 = 0;
    i1 = p.grid_h;
    if (p.grid_h <= roi_engine::kDirectGrid) return;
    // yy of the map corners in the roi frame bounds the yy of any valid sample.
    double lo = std::numeric_limits<double>::infinity(), hi = -lo;
    for (double Y : {-1.0, static_cast<double>(H)}) {
      for (double X : {-1.0, static_cast<double>(W)}) {
        const double yy = (Y - p.center_h) * p.cos_t + (X - p.center_w) * p.sin_t;
        lo = std::min(lo, yy);
        hi = std::max(hi, yy);
      }
    }
    roi_engine::candidate_range(static_cast<double>(p.start_h) + ph * static_cast<double>(p.bin_h),
                                static_cast<double>(p.bin_h) / p.grid_h, p.grid_h, lo, hi,
                                std::numeric_limits<T>::epsilon(), i0, i1);
  }

  // Candidate sample indices along x for a sample row at yy.
  void col_range(const Params& p, int pw, T yy, int64_t& i0, int64_t& i1) const {
    i0 = 0;
    i1 = p.grid_w;
    if (p.grid_w <= roi_engine::kDirectGrid) return;
    double lo = -std::numeric_limits<double>::infinity(), hi = -lo;
    const double c = p.cos_t, s = p.sin_t, y = yy;
    auto clamp_by = [&](double coef, double a, double b) {  // coef * xx in [a, b]
      if (std::fabs(coef) < 1e-12) return;
      double u = a / coef, v = b / coef;
      if (u > v) std::swap(u, v);
      lo = std::max(lo, u);
      hi = std::min(hi, v);
    };
    clamp_by(-s, -1.0 - y * c - p.center_h, H - y * c - p.center_h);  // y = yy c - xx s + cy in [-1, H]
    clamp_by(c, -1.0 - y * s - p.center_w, W - y * s - p.center_w);   // x = yy s + xx c + cx in [-1, W]
    if (!(lo <= hi)) {
      i0 = i1 = 0;
      return;
    }
    roi_engine::candidate_range(static_cast<double>(p.start_w) + pw * static_cast<double>(p.bin_w),
                                static_cast<double>(p.bin_w) / p.grid_w, p.grid_w, lo, hi,
                                std::numeric_limits<T>::epsilon(), i0, i1);
  }

  void add_rotated_bin(const Params& p, int ph, int pw, Scratch& s, RoiTaps<T>& out) const {
    s.samples.clear();
    int r0 = INT_MAX, r1 = INT_MIN, c0 = INT_MAX, c1 = INT_MIN;
    int64_t iy0, iy1;
    row_range(p, ph, iy0, iy1);
    for (int64_t iy = iy0; iy < iy1; ++iy) {
      const T yy = roi_math::bin_sample(p.start_h, ph, p.bin_h, iy, p.grid_h);
      int64_t ix0, ix1;
      col_range(p, pw, yy, ix0, ix1);
      for (int64_t ix = ix0; ix < ix1; ++ix) {
        const T xx = roi_math::bin_sample(p.start_w, pw, p.bin_w, ix, p.grid_w);
        const T y = yy * p.cos_t - xx * p.sin_t + p.center_h;
        const T x = yy * p.sin_t + xx * p.cos_t + p.center_w;
        roi_math::BilinearSample<T> b;
        if (!roi_math::bilinear_sample(H, W, y, x, b)) continue;
        s.samples.push_back(b);
        r0 = std::min(r0, b.y_low);
        r1 = std::max(r1, b.y_high + 1);
        c0 = std::min(c0, b.x_low);
        c1 = std::max(c1, b.x_high + 1);
      }
    }
    if (s.samples.empty()) return;
    const int64_t w = c1 - c0, n = static_cast<int64_t>(r1 - r0) * w;
    s.dense.assign(n, T(0));
    s.touched.assign(n, 0);
    for (const auto& b : s.samples) {
      const int64_t a = (b.y_low - r0) * w, bb = (b.y_high - r0) * w;
      const int64_t xl = b.x_low - c0, xh = b.x_high - c0;
      s.dense[a + xl] += b.w1;
      s.dense[a + xh] += b.w2;
      s.dense[bb + xl] += b.w3;
      s.dense[bb + xh] += b.w4;
      s.touched[a + xl] = s.touched[a + xh] = s.touched[bb + xl] = s.touched[bb + xh] = 1;
    }
    for (int64_t i = 0; i < n; ++i)
      if (s.touched[i]) out.add(r0 + static_cast<int>(i / w), c0 + static_cast<int>(i % w), s.dense[i] / p.count);
  }
};

// detectron2 refuses rois of negative size.
template <typename T>
void check_sizes(const T* rois, int64_t K) {
  for (int64_t k = 0; k < K; ++k) {
    const T w = rois[k * 6 + 3], h = rois[k * 6 + 4];
    if (w < 0 || h < 0)
      throw std::invalid_argument("rois must have non-negative width and height (columns 3 and 4), got " +
                                  std::to_string(static_cast<double>(w)) + " x " +
                                  std::to_string(static_cast<double>(h)) + " in row " + std::to_string(k));
  }
}

void forward_entry(std::uintptr_t input, bool channels_last, std::uintptr_t rois, int64_t K, int64_t N, int C, int H,
                   int W, int PH, int PW, double spatial_scale, int sampling_ratio, int dtype, std::uintptr_t output,
                   int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "roi_align_rotated", [&](auto zero) {
    using T = decltype(zero);
    check_sizes(ptr<const T>(rois), K);
    const RotatedBuilder<T> builder{ptr<const T>(rois), static_cast<T>(spatial_scale), H, W, PH, PW, sampling_ratio};
    roi_engine::forward(ptr<const T>(input), channels_last, ptr<const T>(rois), K, 6, N, C, H, W,
                        static_cast<int64_t>(PH) * PW, builder, ptr<T>(output), num_threads);
  });
}

void backward_entry(std::uintptr_t grad, std::uintptr_t rois, int64_t K, int64_t N, int C, int H, int W, int PH,
                    int PW, double spatial_scale, int sampling_ratio, int dtype, std::uintptr_t grad_input,
                    int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "_roi_align_rotated_backward", [&](auto zero) {
    using T = decltype(zero);
    check_sizes(ptr<const T>(rois), K);
    const RotatedBuilder<T> builder{ptr<const T>(rois), static_cast<T>(spatial_scale), H, W, PH, PW, sampling_ratio};
    roi_engine::backward(ptr<const T>(grad), ptr<const T>(rois), K, 6, N, C, H, W, static_cast<int64_t>(PH) * PW,
                         builder, ptr<T>(grad_input), num_threads);
  });
}

}  // namespace

void register_roi_align_rotated(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("roi_align_rotated_forward", &forward_entry, "input"_a, "channels_last"_a, "rois"_a, "K"_a, "N"_a, "C"_a,
        "H"_a, "W"_a, "pooled_height"_a, "pooled_width"_a, "spatial_scale"_a, "sampling_ratio"_a, "dtype"_a,
        "output"_a, "num_threads"_a,
        "ROIAlignRotated forward: input [N,C,H,W] (NCHW, or NHWC memory when channels_last), rois [K,6] "
        "(batch, cx, cy, w, h, angle degrees), writes output [K,C,PH,PW].");
  m.def("roi_align_rotated_backward", &backward_entry, "grad"_a, "rois"_a, "K"_a, "N"_a, "C"_a, "H"_a, "W"_a,
        "pooled_height"_a, "pooled_width"_a, "spatial_scale"_a, "sampling_ratio"_a, "dtype"_a, "grad_input"_a,
        "num_threads"_a, "ROIAlignRotated backward: writes grad_input [N,C,H,W] (every element).");
}

}  // namespace detcore
