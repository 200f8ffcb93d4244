// Deformable convolution v1/v2 (torchvision.ops.deform_conv2d semantics), CPU kernels over raw buffers.
//
// The convolution is im2col + GEMM. These kernels do the sampling parts; the GEMMs run in Python with torch
// (detcore/ops/deform_conv.py) on the column buffer that Python allocates and these kernels fill:
//   im2col         columns[b, c * KK + k, ho * Wo + wo] = mask * bilinear(input[b, c], y, x)
//   col2im         grad_input[b, c] += scatter of grad_columns with the same bilinear weights
//   grad_offset_mask  per sampling point: sum over the channels of its offset group
// where KK = kh * kw, k = i * kw + j, and (y, x) is the sampling point of deform_conv.h.
//
// Layouts (contiguous): input [B, C, H, W]; offset [B, 2 * G * KK, Ho, Wo] with (dy, dx) pairs;
// mask [B, G * KK, Ho, Wo] (ignored when use_mask is false); columns [B, C * KK, Ho * Wo].
// Bilinear weights of one output row are computed once and reused for every channel of the offset group.
// Parallelism: im2col and grad_offset_mask over (b, group, k, ho) rows, each writing its own outputs;
// col2im over (b, c) planes, so each thread owns whole grad_input planes (no atomics, no races).
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "common/buffer.h"
#include "common/ops.h"
#include "common/parallel.h"
#include "deform_conv/deform_conv.h"

namespace detcore {
namespace {

using deform::SamplePoint;

struct Geometry {
  int64_t batch, channels, height, width, out_h, out_w, kh, kw;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;  // groups = offset groups
  bool use_mask;

  int64_t kk() const { return kh * kw; }
  int64_t out_len() const { return out_h * out_w; }
  int64_t plane() const { return height * width; }
  int64_t channels_per_group() const { return channels / groups; }
};

Geometry make_geometry(const std::vector<int64_t>& v, bool use_mask) {
  if (v.size() != 15)
    throw std::invalid_argument("deform_conv: geometry must have 15 entries (batch, channels, height, width, "
                                "out_h, out_w, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, "
                                "offset_groups), got " +
                                std::to_string(v.size()));
  Geometry g{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], v[8], v[9], v[10], v[11], v[12], v[13], v[14], use_mask};
  if (g.groups <= 0 || g.channels % g.groups != 0)
    throw std::invalid_argument("deform_conv: channels must be divisible by offset_groups");
  return g;
}

// Sampling points of output row ho for kernel tap k of offset group grp in image b; mask values into row_mask.
template <typename T>
void build_row(const Geometry& g, const T* offset, const T* mask, int64_t b, int64_t grp, int64_t k, int64_t ho,
               SamplePoint<T>* row, T* row_mask) {
  const int64_t kk = g.kk(), len = g.out_len();
  const int64_t i = k / g.kw, j = k % g.kw;
  const T* off_y = offset + ((b * g.groups + grp) * 2 * kk + 2 * k) * len + ho * g.out_w;
  const T* off_x = off_y + len;
  const T base_y = static_cast<T>(ho * g.stride_h - g.pad_h + i * g.dil_h);
  const int64_t base_x = j * g.dil_w - g.pad_w;
  for (int64_t wo = 0; wo < g.out_w; ++wo) {
    const T y = base_y + off_y[wo];
    const T x = static_cast<T>(wo * g.stride_w + base_x) + off_x[wo];
    deform::make_sample_point<T>(y, x, g.height, g.width, row[wo]);
  }
  if (g.use_mask) {
    const T* m = mask + ((b * g.groups + grp) * kk + k) * len + ho * g.out_w;
    std::copy(m, m + g.out_w, row_mask);
  } else {
    std::fill(row_mask, row_mask + g.out_w, T(1));
  }
}

template <typename T>
void im2col(const Geometry& g, const T* input, const T* offset, const T* mask, T* columns, int threads) {
  const int64_t kk = g.kk(), len = g.out_len(), cpg = g.channels_per_group(), plane = g.plane();
  const int64_t rows = g.batch * g.groups * kk * g.out_h;
  parallel_for(0, rows, 1, threads, [&](int64_t begin, int64_t end) {
    std::vector<SamplePoint<T>> row(g.out_w);
    std::vector<T> row_mask(g.out_w), weights(4 * g.out_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t ho = r % g.out_h;
      int64_t t = r / g.out_h;
      const int64_t k = t % kk;
      t /= kk;
      const int64_t grp = t % g.groups, b = t / g.groups;
      build_row<T>(g, offset, mask, b, grp, k, ho, row.data(), row_mask.data());
      for (int64_t wo = 0; wo < g.out_w; ++wo) deform::bilinear_weights<T>(row[wo], row_mask[wo], &weights[4 * wo]);
      for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
        const T* src = input + (b * g.channels + c) * plane;
        T* dst = columns + ((b * g.channels + c) * kk + k) * len + ho * g.out_w;
        for (int64_t wo = 0; wo < g.out_w; ++wo) {
          const SamplePoint<T>& p = row[wo];
          if (p.inside == T(0)) {
            dst[wo] = T(0);
            continue;
          }
          T v[4];
          deform::corner_values<T>(src, p, v);
          const T* w = &weights[4 * wo];
          dst[wo] = (w[0] * v[0] + w[1] * v[1]) + (w[2] * v[2] + w[3] * v[3]);
        }
      }
    }
  });
}

template <typename T>
void col2im(const Geometry& g, const T* grad_columns, const T* offset, const T* mask, T* grad_input, int threads) {
  const int64_t kk = g.kk(), len = g.out_len(), cpg = g.channels_per_group(), plane = g.plane();
  const int64_t planes = g.batch * g.channels;
  parallel_for(0, planes, 1, threads, [&](int64_t begin, int64_t end) {
    std::vector<SamplePoint<T>> row(g.out_w);
    std::vector<T> row_mask(g.out_w), weights(4 * g.out_w);
    int64_t q = begin;
    while (q < end) {
      // Planes [q, q + n) share image b and offset group grp.
      const int64_t b = q / g.channels, c0 = q % g.channels, grp = c0 / cpg;
      const int64_t c1 = std::min((grp + 1) * cpg, c0 + (end - q));
      for (int64_t k = 0; k < kk; ++k) {
        for (int64_t ho = 0; ho < g.out_h; ++ho) {
          build_row<T>(g, offset, mask, b, grp, k, ho, row.data(), row_mask.data());
          for (int64_t wo = 0; wo < g.out_w; ++wo)
            deform::bilinear_weights<T>(row[wo], row_mask[wo], &weights[4 * wo]);
          for (int64_t c = c0; c < c1; ++c) {
            T* dst = grad_input + (b * g.channels + c) * plane;
            const T* src = grad_columns + ((b * g.channels + c) * kk + k) * len + ho * g.out_w;
            for (int64_t wo = 0; wo < g.out_w; ++wo) {
              const SamplePoint<T>& p = row[wo];
              const T* w = &weights[4 * wo];
              const T gv = src[wo];
              // Zero weights (invalid neighbour, outside point, or exact integer coordinate) are skipped,
              // as torchvision's col2im skips neighbours at distance >= 1.
              for (int n = 0; n < 4; ++n)
                if (w[n] != T(0)) dst[p.idx[n]] += w[n] * gv;
            }
          }
        }
      }
      q += c1 - c0;
    }
  });
}

template <typename T>
void grad_offset_mask(const Geometry& g, const T* grad_columns, const T* input, const T* offset, const T* mask,
                      T* grad_offset, T* grad_mask, int threads) {
  const int64_t kk = g.kk(), len = g.out_len(), cpg = g.channels_per_group(), plane = g.plane();
  const int64_t rows = g.batch * g.groups * kk * g.out_h;
  parallel_for(0, rows, 1, threads, [&](int64_t begin, int64_t end) {
    std::vector<SamplePoint<T>> row(g.out_w);
    std::vector<T> row_mask(g.out_w), gy(g.out_w), gx(g.out_w), gm(g.out_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t ho = r % g.out_h;
      int64_t t = r / g.out_h;
      const int64_t k = t % kk;
      t /= kk;
      const int64_t grp = t % g.groups, b = t / g.groups;
      build_row<T>(g, offset, mask, b, grp, k, ho, row.data(), row_mask.data());
      std::fill(gy.begin(), gy.end(), T(0));
      std::fill(gx.begin(), gx.end(), T(0));
      std::fill(gm.begin(), gm.end(), T(0));
      for (int64_t c = grp * cpg; c < (grp + 1) * cpg; ++c) {
        const T* src = input + (b * g.channels + c) * plane;
        const T* gcol = grad_columns + ((b * g.channels + c) * kk + k) * len + ho * g.out_w;
        for (int64_t wo = 0; wo < g.out_w; ++wo) {
          const SamplePoint<T>& p = row[wo];
          T v[4], dy, dx;
          deform::corner_values<T>(src, p, v);
          deform::coordinate_grads<T>(p, v, dy, dx);
          const T cg = gcol[wo];
          gy[wo] += cg * dy;
          gx[wo] += cg * dx;
          if (g.use_mask) gm[wo] += cg * deform::bilinear_from_corners<T>(p, v);
        }
      }
      T* out_y = grad_offset + ((b * g.groups + grp) * 2 * kk + 2 * k) * len + ho * g.out_w;
      T* out_x = out_y + len;
      for (int64_t wo = 0; wo < g.out_w; ++wo) {
        out_y[wo] = row_mask[wo] * gy[wo];
        out_x[wo] = row_mask[wo] * gx[wo];
      }
      if (g.use_mask) {
        T* out_m = grad_mask + ((b * g.groups + grp) * kk + k) * len + ho * g.out_w;
        std::copy(gm.begin(), gm.end(), out_m);
      }
    }
  });
}

void im2col_entry(std::uintptr_t input, std::uintptr_t offset, std::uintptr_t mask, std::uintptr_t columns,
                  const std::vector<int64_t>& geometry, bool use_mask, int dtype, int num_threads) {
  const Geometry g = make_geometry(geometry, use_mask);
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "deform_conv_im2col", [&](auto zero) {
    using T = decltype(zero);
    im2col<T>(g, ptr<const T>(input), ptr<const T>(offset), ptr<const T>(mask), ptr<T>(columns), num_threads);
  });
}

void col2im_entry(std::uintptr_t grad_columns, std::uintptr_t offset, std::uintptr_t mask,
                  std::uintptr_t grad_input, const std::vector<int64_t>& geometry, bool use_mask, int dtype,
                  int num_threads) {
  const Geometry g = make_geometry(geometry, use_mask);
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "deform_conv_col2im", [&](auto zero) {
    using T = decltype(zero);
    col2im<T>(g, ptr<const T>(grad_columns), ptr<const T>(offset), ptr<const T>(mask), ptr<T>(grad_input),
              num_threads);
  });
}

void grad_offset_mask_entry(std::uintptr_t grad_columns, std::uintptr_t input, std::uintptr_t offset,
                            std::uintptr_t mask, std::uintptr_t grad_offset, std::uintptr_t grad_mask,
                            const std::vector<int64_t>& geometry, bool use_mask, int dtype, int num_threads) {
  const Geometry g = make_geometry(geometry, use_mask);
  pybind11::gil_scoped_release release;
  dispatch_floating(dtype, "deform_conv_grad_offset_mask", [&](auto zero) {
    using T = decltype(zero);
    grad_offset_mask<T>(g, ptr<const T>(grad_columns), ptr<const T>(input), ptr<const T>(offset),
                        ptr<const T>(mask), ptr<T>(grad_offset), ptr<T>(grad_mask), num_threads);
  });
}

}  // namespace

void register_deform_conv(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("deform_conv_im2col", &im2col_entry, "input"_a, "offset"_a, "mask"_a, "columns"_a, "geometry"_a,
        "use_mask"_a, "dtype"_a, "num_threads"_a,
        "Fills columns [B, C*kh*kw, Ho*Wo] with mask * bilinear samples of input [B, C, H, W] at the deformed "
        "points. geometry = (B, C, H, W, Ho, Wo, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, "
        "offset_groups).");
  m.def("deform_conv_col2im", &col2im_entry, "grad_columns"_a, "offset"_a, "mask"_a, "grad_input"_a,
        "geometry"_a, "use_mask"_a, "dtype"_a, "num_threads"_a,
        "Adds the scatter of grad_columns [B, C*kh*kw, Ho*Wo] into grad_input [B, C, H, W] (which the caller "
        "zero-fills).");
  m.def("deform_conv_grad_offset_mask", &grad_offset_mask_entry, "grad_columns"_a, "input"_a, "offset"_a,
        "mask"_a, "grad_offset"_a, "grad_mask"_a, "geometry"_a, "use_mask"_a, "dtype"_a, "num_threads"_a,
        "Writes grad_offset [B, 2*G*kh*kw, Ho, Wo] and (when use_mask) grad_mask [B, G*kh*kw, Ho, Wo].");
}

}  // namespace detcore
