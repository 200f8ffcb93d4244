// ROIAlign (torchvision.ops.roi_align semantics), CPU forward and backward.
//
// Axis-aligned rois have separable sampling: a sample's validity and bilinear weights along y depend only
// on its y coordinate, so the merged weight of pixel (r, c) in a bin is Wy[r] * Wx[c] / count, where Wy
// and Wx sum the per-axis weights of the bin's sample rows and columns. The taps are built from those
// per-axis lists and evaluated by the shared NHWC engine (roi_engine.h).
#include <algorithm>
#include <cstdint>
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

template <typename T>
struct AlignBuilder {
  const T* rois;
  T scale;
  int H, W, PH, PW, sampling_ratio;
  bool aligned;

  struct Scratch {
    AxisScratch<T> ys, xs;
    std::vector<AxisWeights<T>> rows, cols;
  };

  struct Params {
    T start_h, start_w, roi_h, roi_w, bin_h, bin_w, count;
    int64_t grid_h, grid_w;
  };

  Params params(int64_t k) const {
    const T* r = rois + k * 5;
    const T offset = aligned ? T(0.5) : T(0);
    Params p;
    p.start_w = r[1] * scale - offset;
    p.start_h = r[2] * scale - offset;
    const T end_w = r[3] * scale - offset;
    const T end_h = r[4] * scale - offset;
    p.roi_w = end_w - p.start_w;
    p.roi_h = end_h - p.start_h;
    if (!aligned) {  // legacy mode forces malformed rois to be at least 1x1
      p.roi_w = std::max(p.roi_w, T(1));
      p.roi_h = std::max(p.roi_h, T(1));
    }
    p.bin_h = p.roi_h / static_cast<T>(PH);
    p.bin_w = p.roi_w / static_cast<T>(PW);
    p.grid_h = roi_math::sampling_grid(p.roi_h, PH, sampling_ratio);
    p.grid_w = roi_math::sampling_grid(p.roi_w, PW, sampling_ratio);
    p.count = roi_math::sample_count<T>(p.grid_h, p.grid_w);
    return p;
  }

  Box estimate(int64_t k) const {
    const Params p = params(k);
    if (p.grid_h <= 0 || p.grid_w <= 0) return Box{};
    const double y0 = p.start_h, y1 = static_cast<double>(p.start_h) + p.roi_h;
    const double x0 = p.start_w, x1 = static_cast<double>(p.start_w) + p.roi_w;
    return roi_engine::clip_box<T>(std::min(y0, y1), std::max(y0, y1), std::min(x0, x1), std::max(x0, x1), H, W);
  }

  void build(int64_t k, Scratch& s, RoiTaps<T>& out) const {
    out.reset();
    const Params p = params(k);
    const bool any = p.grid_h > 0 && p.grid_w > 0;
    if (any) {
      s.rows.resize(PH);
      s.cols.resize(PW);
      for (int ph = 0; ph < PH; ++ph)
        roi_engine::axis_weights(H, p.start_h, ph, p.bin_h, p.grid_h, T(1), T(0), s.ys, s.rows[ph]);
      for (int pw = 0; pw < PW; ++pw)
        roi_engine::axis_weights(W, p.start_w, pw, p.bin_w, p.grid_w, T(1), T(0), s.xs, s.cols[pw]);
    }
    for (int ph = 0; ph < PH; ++ph) {
      for (int pw = 0; pw < PW; ++pw) {
        if (any) {
          const AxisWeights<T>& ry = s.rows[ph];
          const AxisWeights<T>& cx = s.cols[pw];
          for (size_t i = 0; i < ry.idx.size(); ++i)
            for (size_t j = 0; j < cx.idx.size(); ++j) out.add(ry.idx[i], cx.idx[j], ry.w[i] * cx.w[j] / p.count);
        }
        out.end_bin();
      }
    }
  }
};

void roi_align_forward_entry(std::uintptr_t input, bool channels_last, std::uintptr_t rois, int64_t K, int64_t N,
                             int C, int H, int W, int PH, int PW, double spatial_scale, int sampling_ratio,
                             bool aligned, int dtype, std::uintptr_t output, int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "roi_align", [&](auto zero) {
    using T = decltype(zero);
    const AlignBuilder<T> builder{ptr<const T>(rois), static_cast<T>(spatial_scale), H, W, PH, PW, sampling_ratio,
                                  aligned};
    roi_engine::forward(ptr<const T>(input), channels_last, ptr<const T>(rois), K, 5, N, C, H, W,
                        static_cast<int64_t>(PH) * PW, builder, ptr<T>(output), num_threads);
  });
}

void roi_align_backward_entry(std::uintptr_t grad, std::uintptr_t rois, int64_t K, int64_t N, int C, int H, int W,
                              int PH, int PW, double spatial_scale, int sampling_ratio, bool aligned, int dtype,
                              std::uintptr_t grad_input, int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "_roi_align_backward", [&](auto zero) {
    using T = decltype(zero);
    const AlignBuilder<T> builder{ptr<const T>(rois), static_cast<T>(spatial_scale), H, W, PH, PW, sampling_ratio,
                                  aligned};
    roi_engine::backward(ptr<const T>(grad), ptr<const T>(rois), K, 5, N, C, H, W, static_cast<int64_t>(PH) * PW,
                         builder, ptr<T>(grad_input), num_threads);
  });
}

}  // namespace

void register_roi_align(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("roi_align_forward", &roi_align_forward_entry, "input"_a, "channels_last"_a, "rois"_a, "K"_a, "N"_a, "C"_a,
        "H"_a, "W"_a, "pooled_height"_a, "pooled_width"_a, "spatial_scale"_a, "sampling_ratio"_a, "aligned"_a,
        "dtype"_a, "output"_a, "num_threads"_a,
        "ROIAlign forward: input [N,C,H,W] (NCHW, or NHWC memory when channels_last), rois [K,5] contiguous, "
        "writes output [K,C,PH,PW]. Raises ValueError for a batch index outside [0, N) or a non-finite roi.");
  m.def("roi_align_backward", &roi_align_backward_entry, "grad"_a, "rois"_a, "K"_a, "N"_a, "C"_a, "H"_a, "W"_a,
        "pooled_height"_a, "pooled_width"_a, "spatial_scale"_a, "sampling_ratio"_a, "aligned"_a, "dtype"_a,
        "grad_input"_a, "num_threads"_a,
        "ROIAlign backward: grad [K,C,PH,PW] contiguous; writes grad_input [N,C,H,W] (every element).");
}

}  // namespace detcore
