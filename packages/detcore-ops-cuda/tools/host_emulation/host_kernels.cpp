// Host emulation of detcore.ops_cuda._C (a development aid, not shipped): the same element functions from
// ../../csrc/*.cuh run sequentially on CPU buffers, with the same Python-facing signatures, so the Python glue
// (detcore/ops_cuda/kernels.py) and the kernel math can be checked on a machine without a GPU. Not emulated:
// launch configuration, shared memory, atomics, streams. Build and run: see check.py.
#include <pybind11/pybind11.h>
#include <vector>
#include "box_iou.cuh"
#include "deform_conv.cuh"
#include "nms_mask.cuh"
#include "ops_cuda.h"
#include "paste_masks.cuh"
#include "roi.cuh"
#include "rotated.cuh"

namespace py = pybind11;
using namespace detcore_cuda;
template <typename T> T* P(uptr a) { return reinterpret_cast<T*>(a); }
template <typename Fn> void disp(int dtype, Fn&& fn) { if (dtype == 0) fn(float{}); else fn(double{}); }
template <typename T> struct Adder { T* base; void operator()(int64_t i, T v) const { base[i] += v; } };

void nms_mask_h(uptr boxes, uptr idxs, int64_t n, double thr, int dtype, uptr mask, uptr, bool rotated) {
  const int64_t cb = (n + 63) / 64;
  disp(dtype, [&](auto z) {
    using T = decltype(z);
    const T* b = P<const T>(boxes); const int64_t* id = P<const int64_t>(idxs);
    auto* mk = P<unsigned long long>(mask);
    const int D = rotated ? 5 : 4;
    const T tg = threshold_gt<T>(thr), tge = threshold_ge<T>(thr);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t blk = i / 64; blk < cb; ++blk) {
        unsigned long long bits = 0;
        for (int k = 0; k < 64; ++k) {
          int64_t j = blk * 64 + k;
          if (j >= n || j <= i) continue;
          if (id && id[i] != id[j]) { if (rotated && 0.0 >= thr) bits |= 1ULL << k; continue; }
          bool s = rotated ? rotated_iou(b + i * D, b + j * D) >= tge
                           : nms_overlap(b + i * D, box_area(b + i * D), b + j * D, box_area(b + j * D)) > tg;
          if (s) bits |= 1ULL << k;
        }
        mk[i * cb + blk] = bits;
      }
  });
}
void nms_reduce_h(uptr mask, int64_t n, uptr keep, uptr, uptr) {
  const int64_t cb = (n + 63) / 64;
  auto* mk = P<const unsigned long long>(mask); auto* kp = P<uint8_t>(keep);
  std::vector<unsigned long long> removed(cb, 0);
  for (int64_t i = 0; i < n; ++i) {
    if ((removed[i / 64] >> (i % 64)) & 1) continue;
    kp[i] = 1;
    for (int64_t j = i / 64; j < cb; ++j) removed[j] |= mk[i * cb + j];
  }
}
void box_iou_h(uptr a, uptr b, int64_t n, int64_t m, int dtype, uptr out, uptr, bool rotated) {
  disp(dtype, [&](auto z) {
    using T = decltype(z);
    for (int64_t i = 0; i < n; ++i) for (int64_t j = 0; j < m; ++j)
      P<T>(out)[i * m + j] = rotated ? rotated_iou(P<const T>(a) + i * 5, P<const T>(b) + j * 5)
                                     : pair_iou(P<const T>(a) + i * 4, P<const T>(b) + j * 4);
  });
}

PYBIND11_MODULE(host_kernels, m) {
  m.def("nms_mask", [](uptr b, uptr i, int64_t n, double t, int d, uptr mk, uptr s) { nms_mask_h(b, i, n, t, d, mk, s, false); });
  m.def("nms_rotated_mask", [](uptr b, uptr i, int64_t n, double t, int d, uptr mk, uptr s) { nms_mask_h(b, i, n, t, d, mk, s, true); });
  m.def("nms_reduce", &nms_reduce_h);
  m.def("box_iou", [](uptr a, uptr b, int64_t n, int64_t mm, int d, uptr o, uptr s) { box_iou_h(a, b, n, mm, d, o, s, false); });
  m.def("box_iou_rotated", [](uptr a, uptr b, int64_t n, int64_t mm, int d, uptr o, uptr s) { box_iou_h(a, b, n, mm, d, o, s, true); });
  m.def("roi_align_forward", [](uptr input, uptr rois, int64_t K, int64_t NB, int64_t C, int64_t H, int64_t W, double sc, int64_t PH, int64_t PW, int64_t sr, bool al, int d, uptr out, uptr) {
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t idx = 0; idx < K * C * PH * PW; ++idx) {
        int64_t pw = idx % PW, ph = (idx / PW) % PH, c = (idx / PW / PH) % C, n = idx / PW / PH / C;
        auto r = roi_align_box(P<const T>(rois) + n * 5, (T)sc, PH, PW, sr, al);
        if (r.batch < 0 || r.batch >= NB) { P<T>(out)[idx] = 0; continue; }
        P<T>(out)[idx] = roi_align_one(P<const T>(input) + (r.batch * C + c) * H * W, H, W, r, ph, pw);
      } });
  });
  m.def("roi_align_backward", [](uptr grad, uptr rois, int64_t K, int64_t NB, int64_t C, int64_t H, int64_t W, double sc, int64_t PH, int64_t PW, int64_t sr, bool al, int d, uptr gi, uptr) {
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t idx = 0; idx < K * C * PH * PW; ++idx) {
        int64_t pw = idx % PW, ph = (idx / PW) % PH, c = (idx / PW / PH) % C, n = idx / PW / PH / C;
        auto r = roi_align_box(P<const T>(rois) + n * 5, (T)sc, PH, PW, sr, al);
        if (r.batch < 0 || r.batch >= NB) continue;
        roi_align_backward_one(P<const T>(grad)[idx], H, W, r, ph, pw, Adder<T>{P<T>(gi) + (r.batch * C + c) * H * W});
      } });
  });
  m.def("roi_align_rotated_forward", [](uptr input, uptr rois, int64_t K, int64_t NB, int64_t C, int64_t H, int64_t W, double sc, int64_t PH, int64_t PW, int64_t sr, int d, uptr out, uptr) {
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t idx = 0; idx < K * C * PH * PW; ++idx) {
        int64_t pw = idx % PW, ph = (idx / PW) % PH, c = (idx / PW / PH) % C, n = idx / PW / PH / C;
        auto r = roi_rotated_box(P<const T>(rois) + n * 6, (T)sc, PH, PW, sr);
        if (r.batch < 0 || r.batch >= NB) { P<T>(out)[idx] = 0; continue; }
        P<T>(out)[idx] = roi_align_rotated_one(P<const T>(input) + (r.batch * C + c) * H * W, H, W, r, ph, pw);
      } });
  });
  m.def("roi_align_rotated_backward", [](uptr grad, uptr rois, int64_t K, int64_t NB, int64_t C, int64_t H, int64_t W, double sc, int64_t PH, int64_t PW, int64_t sr, int d, uptr gi, uptr) {
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t idx = 0; idx < K * C * PH * PW; ++idx) {
        int64_t pw = idx % PW, ph = (idx / PW) % PH, c = (idx / PW / PH) % C, n = idx / PW / PH / C;
        auto r = roi_rotated_box(P<const T>(rois) + n * 6, (T)sc, PH, PW, sr);
        if (r.batch < 0 || r.batch >= NB) continue;
        roi_align_rotated_backward_one(P<const T>(grad)[idx], H, W, r, ph, pw, Adder<T>{P<T>(gi) + (r.batch * C + c) * H * W});
      } });
  });
  m.def("roi_pool_forward", [](uptr input, uptr rois, int64_t K, int64_t NB, int64_t C, int64_t H, int64_t W, double sc, int64_t PH, int64_t PW, int d, uptr out, uptr am, uptr) {
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t idx = 0; idx < K * C * PH * PW; ++idx) {
        int64_t pw = idx % PW, ph = (idx / PW) % PH, c = (idx / PW / PH) % C, n = idx / PW / PH / C;
        const T* roi = P<const T>(rois) + n * 5; int64_t b = (int64_t)roi[0]; int64_t a = -1;
        if (b < 0 || b >= NB) { P<T>(out)[idx] = 0; P<int64_t>(am)[idx] = -1; continue; }
        P<T>(out)[idx] = roi_pool_one(P<const T>(input) + (b * C + c) * H * W, H, W, roi, (T)sc, PH, PW, ph, pw, a);
        P<int64_t>(am)[idx] = a;
      } });
  });
  m.def("roi_pool_backward", [](uptr grad, uptr rois, uptr am, int64_t K, int64_t NB, int64_t C, int64_t H, int64_t W, int64_t PH, int64_t PW, int d, uptr gi, uptr) {
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t idx = 0; idx < K * C * PH * PW; ++idx) {
        int64_t a = P<const int64_t>(am)[idx]; if (a < 0 || a >= H * W) continue;
        int64_t c = (idx / PW / PH) % C, n = idx / PW / PH / C;
        int64_t b = (int64_t)P<const T>(rois)[n * 5];
        if (b < 0 || b >= NB) continue;
        P<T>(gi)[(b * C + c) * H * W + a] += P<const T>(grad)[idx];
      } });
  });
  m.def("deform_im2col", [](uptr input, uptr offset, uptr mask, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t ph, int64_t pw, int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t oh, int64_t ow, int64_t og, bool um, int d, uptr cols, uptr) {
    DeformGeometry g{B, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, og, um};
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t i = 0; i < C * B * oh * ow; ++i) deform_im2col_element(i, P<const T>(input), P<const T>(offset), P<const T>(mask), g, P<T>(cols)); });
  });
  m.def("deform_col2im", [](uptr cols, uptr offset, uptr mask, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t ph, int64_t pw, int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t oh, int64_t ow, int64_t og, bool um, int d, uptr gi, uptr) {
    DeformGeometry g{B, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, og, um};
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t i = 0; i < C * kh * kw * B * oh * ow; ++i) deform_col2im_element(i, P<const T>(cols), P<const T>(offset), P<const T>(mask), g, Adder<T>{P<T>(gi)}); });
  });
  m.def("deform_col2im_coord", [](uptr cols, uptr input, uptr offset, uptr mask, int64_t B, int64_t C, int64_t H, int64_t W, int64_t kh, int64_t kw, int64_t ph, int64_t pw, int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t oh, int64_t ow, int64_t og, bool um, int d, uptr go, uptr gm, uptr) {
    DeformGeometry g{B, C, H, W, kh, kw, ph, pw, sh, sw, dh, dw, oh, ow, og, um};
    disp(d, [&](auto z) { using T = decltype(z);
      for (int64_t i = 0; i < B * 2 * og * kh * kw * oh * ow; ++i) deform_col2im_coord_element(i, P<const T>(cols), P<const T>(input), P<const T>(offset), P<const T>(mask), g, P<T>(go), P<T>(gm)); });
  });
  m.def("paste_masks", [](uptr masks, int md, uptr boxes, int bd, int64_t n, int64_t mh, int64_t mw, int64_t ih, int64_t iw, double thr, uptr out, uptr) {
    disp(md, [&](auto z) { using T = decltype(z); disp(bd, [&](auto zb) { using G = decltype(zb);
      for (int64_t idx = 0; idx < n * ih * iw; ++idx) {
        int64_t x = idx % iw, y = (idx / iw) % ih, k = idx / (iw * ih);
        P<uint8_t>(out)[idx] = paste_pixel<T, G>(P<const T>(masks) + k * mh * mw, mh, mw, P<const G>(boxes) + k * 4, ih, iw, y, x, thr >= 0, (T)thr);
      } }); });
  });
}
