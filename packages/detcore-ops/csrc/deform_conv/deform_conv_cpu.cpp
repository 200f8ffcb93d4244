// Deformable convolution v1/v2 (torchvision.ops.deform_conv2d semantics), CPU kernels over raw buffers.
//
// The convolution is im2col + GEMM. These kernels do the sampling parts; the GEMMs run in Python with torch
// (detcore/ops/deform_conv.py) on the column buffer that Python allocates and these kernels fill:
//   im2col            columns[b, c * KK + k, (ho - row_begin) * Wo + wo] = mask * bilinear(input[b, c], y, x)
//   col2im            grad_input[b, c] += scatter of grad_columns with the same bilinear weights
//   grad_offset_mask  per sampling point: sums over the channels of its offset group
// where KK = kh * kw, k = i * kw + j, and (y, x) is the sampling point of deform_conv.h.
//
// Layouts (contiguous): input [B, C, H, W]; offset [B, 2 * G * KK, Ho, Wo] with (dy, dx) pairs;
// mask [B, G * KK, Ho, Wo] (ignored when use_mask is false); columns [B, C * KK, R * Wo] for the output rows
// [row_begin, row_begin + R) (a tile; Python keeps the buffer small enough to stay in cache).
// Bilinear weights of one output row are computed once and reused for every channel of the offset group.
// Parallelism (dynamic chunks, see parallel_for_dynamic): im2col and grad_offset_mask over (b, group, k, ho)
// rows, each writing its own outputs; col2im over (b, c) planes, so each chunk owns whole grad_input planes
// (no atomics, no races).
#include <algorithm>
#include <atomic>
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

// parallel_for with dynamic scheduling: workers take chunks of `chunk` items from a shared counter, so when
// one thread is descheduled (a busy machine) the others take over its share instead of waiting for it at
// the join. f(b, e) must accept any sub-range; chunks are handed out in increasing order.
template <typename F>
void parallel_for_dynamic(int64_t begin, int64_t end, int64_t chunk, int num_threads, F&& f) {
  chunk = std::max<int64_t>(chunk, 1);
  const int64_t chunks = (end - begin + chunk - 1) / chunk;
  if (chunks <= 0) return;
  const int threads = static_cast<int>(std::min<int64_t>(std::max(num_threads, 1), chunks));
  std::atomic<int64_t> next{0};
  parallel_for(0, threads, 1, threads, [&](int64_t, int64_t) {
    for (int64_t c = next.fetch_add(1); c < chunks; c = next.fetch_add(1)) {
      const int64_t b = begin + c * chunk;
      f(b, std::min(end, b + chunk));
    }
  });
}

// About 16 chunks per thread, but at least `min_chunk` items each.
inline int64_t chunk_size(int64_t items, int threads, int64_t min_chunk) {
  return std::max<int64_t>(min_chunk, items / (16 * static_cast<int64_t>(std::max(threads, 1))));
}

struct Geometry {
  int64_t batch, channels, height, width, out_h, out_w, kh, kw;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups;  // groups = offset groups
  int64_t row_begin, row_count;  // the output rows [row_begin, row_begin + row_count) held in the columns
  bool use_mask;

  int64_t kk() const { return kh * kw; }
  int64_t out_len() const { return out_h * out_w; }
  int64_t tile_len() const { return row_count * out_w; }  // columns per image and kernel row
  int64_t plane() const { return height * width; }
  int64_t channels_per_group() const { return channels / groups; }
};

Geometry make_geometry(const std::vector<int64_t>& v, bool use_mask) {
  if (v.size() != 17)
    throw std::invalid_argument("deform_conv: geometry must have 17 entries (batch, channels, height, width, "
                                "out_h, out_w, kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, "
                                "offset_groups, row_begin, row_count), got " +
                                std::to_string(v.size()));
  Geometry g{v[0],  v[1],  v[2],  v[3],  v[4],  v[5],  v[6],  v[7],    v[8],
             v[9], v[10], v[11], v[12], v[13], v[14], v[15], v[16], use_mask};
  if (g.groups <= 0 || g.channels % g.groups != 0)
    throw std::invalid_argument("deform_conv: channels must be divisible by offset_groups");
  if (g.row_begin < 0 || g.row_count < 0 || g.row_begin + g.row_count > g.out_h)
    throw std::invalid_argument("deform_conv: output rows [row_begin, row_begin + row_count) must lie in [0, out_h)");
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

// Gather table of one output row for im2col. An interior point (all four neighbours in the plane) is its
// top-left neighbour's flat index `base` plus four mask-scaled weights, and runs branch-free (the neighbours
// are base, base + 1, base + W, base + W + 1). Other points get base 0 and weight 0 in that pass and are
// recomputed exactly afterwards, so an inf/NaN at plane[0] cannot leak into them.
template <typename T>
struct GatherRow {
  std::vector<int64_t> base;    // [out_w]
  std::vector<T> w;             // [4][out_w]
  std::vector<int64_t> border;  // points that are not interior

  explicit GatherRow(int64_t out_w) : base(out_w), w(4 * out_w) { border.reserve(out_w); }

  void build(const SamplePoint<T>* row, const T* row_mask, int64_t out_w) {
    border.clear();
    for (int64_t wo = 0; wo < out_w; ++wo) {
      const SamplePoint<T>& p = row[wo];
      const bool interior = p.inside != T(0) && p.valid[0] != T(0) && p.valid[1] != T(0) && p.valid[2] != T(0) &&
                            p.valid[3] != T(0);
      T wt[4];
      deform::bilinear_weights<T>(p, row_mask[wo], wt);
      base[wo] = interior ? p.idx[0] : 0;
      for (int c = 0; c < 4; ++c) w[c * out_w + wo] = interior ? wt[c] : T(0);
      if (!interior) border.push_back(wo);
    }
  }
};

template <typename T>
void im2col(const Geometry& g, const T* input, const T* offset, const T* mask, T* columns, int threads) {
  const int64_t kk = g.kk(), cpg = g.channels_per_group(), plane = g.plane();
  const int64_t out_w = g.out_w, width = g.width, tile = g.tile_len();
  // With fewer than 2 rows or columns no point is interior (and base + W + 1 could leave the plane).
  const bool fast = g.height >= 2 && g.width >= 2;
  const int64_t rows = g.batch * g.groups * kk * g.row_count;
  parallel_for_dynamic(0, rows, chunk_size(rows, threads, 1), threads, [&](int64_t begin, int64_t end) {
    std::vector<SamplePoint<T>> row(out_w);
    std::vector<T> row_mask(out_w);
    GatherRow<T> table(out_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t ho = g.row_begin + r % g.row_count;
      int64_t t = r / g.row_count;
      const int64_t k = t % kk;
      t /= kk;
      const int64_t grp = t % g.groups, b = t / g.groups;
      build_row<T>(g, offset, mask, b, grp, k, ho, row.data(), row_mask.data());
      table.build(row.data(), row_mask.data(), out_w);
      const int64_t* __restrict__ base = table.base.data();
      const T *__restrict__ w0 = table.w.data(), *__restrict__ w1 = w0 + out_w;
      const T *__restrict__ w2 = w1 + out_w, *__restrict__ w3 = w2 + out_w;
      const int64_t c0 = grp * cpg;
      const T* src0 = input + (b * g.channels + c0) * plane;
      T* dst0 = columns + ((b * g.channels + c0) * kk + k) * tile + (ho - g.row_begin) * out_w;
      const int64_t dst_stride = kk * tile;
      if (fast) {
        // Point-major: the point's index and weights stay in registers while the channel loop runs; each
        // channel's plane and column row are separate streams that stay in L1 across consecutive points.
        for (int64_t wo = 0; wo < out_w; ++wo) {
          const T a0 = w0[wo], a1 = w1[wo], a2 = w2[wo], a3 = w3[wo];
          const T* s = src0 + base[wo];
          T* d = dst0 + wo;
          for (int64_t c = 0; c < cpg; ++c, s += plane, d += dst_stride)
            *d = (a0 * s[0] + a1 * s[1]) + (a2 * s[width] + a3 * s[width + 1]);
        }
      }
      const bool all_border = !fast;
      for (int64_t c = 0; c < cpg; ++c) {
        const T* src = src0 + c * plane;
        T* dst = dst0 + c * dst_stride;
        auto exact = [&](int64_t wo) {
          const SamplePoint<T>& p = row[wo];
          T v[4];
          deform::corner_values<T>(src, p, v);
          dst[wo] = row_mask[wo] * deform::bilinear_from_corners<T>(p, v);
        };
        if (all_border) {
          for (int64_t wo = 0; wo < out_w; ++wo) exact(wo);
        } else {
          for (const int64_t wo : table.border) exact(wo);
        }
      }
    }
  });
}

template <typename T>
void col2im(const Geometry& g, const T* grad_columns, const T* offset, const T* mask, T* grad_input, int threads) {
  const int64_t kk = g.kk(), tile = g.tile_len(), cpg = g.channels_per_group(), plane = g.plane();
  const int64_t out_w = g.out_w, width = g.width, col_stride = kk * tile;
  const bool fast = g.height >= 2 && g.width >= 2;
  const int64_t planes = g.batch * g.channels;
  // Chunks of whole planes: each thread owns the planes of the chunks it takes. Every chunk recomputes the
  // sampling points of all output rows, so chunks are few and large (two per thread).
  const int64_t plane_chunk = (planes + 2 * threads - 1) / (2 * static_cast<int64_t>(std::max(threads, 1)));
  parallel_for_dynamic(0, planes, plane_chunk, threads, [&](int64_t begin, int64_t end) {
    std::vector<SamplePoint<T>> row(out_w);
    std::vector<T> row_mask(out_w);
    GatherRow<T> table(out_w);
    int64_t q = begin;
    while (q < end) {
      // Planes [q, q + (c1 - c0)) share image b and offset group grp; this thread owns them.
      const int64_t b = q / g.channels, c0 = q % g.channels, grp = c0 / cpg;
      const int64_t c1 = std::min((grp + 1) * cpg, c0 + (end - q));
      T* plane0 = grad_input + (b * g.channels + c0) * plane;
      for (int64_t k = 0; k < kk; ++k) {
        for (int64_t ho = g.row_begin; ho < g.row_begin + g.row_count; ++ho) {
          build_row<T>(g, offset, mask, b, grp, k, ho, row.data(), row_mask.data());
          table.build(row.data(), row_mask.data(), out_w);
          const T* gcol0 = grad_columns + ((b * g.channels + c0) * kk + k) * tile + (ho - g.row_begin) * out_w;
          if (fast) {
            // Interior points, point-major: weights in registers, one read-modify-write stream per plane.
            // (A zero weight here, at an integer coordinate, adds 0 * grad: it differs from torchvision's skip
            // only for a non-finite grad.)
            const int64_t* base = table.base.data();
            const T *w0 = table.w.data(), *w1 = w0 + out_w, *w2 = w1 + out_w, *w3 = w2 + out_w;
            for (int64_t wo = 0; wo < out_w; ++wo) {
              if (w0[wo] == T(0) && w1[wo] == T(0) && w2[wo] == T(0) && w3[wo] == T(0)) continue;
              const T a0 = w0[wo], a1 = w1[wo], a2 = w2[wo], a3 = w3[wo];
              T* d = plane0 + base[wo];
              const T* gc = gcol0 + wo;
              for (int64_t c = c0; c < c1; ++c, d += plane, gc += col_stride) {
                const T gv = *gc;
                d[0] += a0 * gv;
                d[1] += a1 * gv;
                d[width] += a2 * gv;
                d[width + 1] += a3 * gv;
              }
            }
          }
          // Border points (every point when no point can be interior): only neighbours with a non-zero
          // weight receive gradient, as torchvision's col2im skips neighbours at distance >= 1.
          auto scatter = [&](int64_t wo) {
            const SamplePoint<T>& p = row[wo];
            T w[4];
            deform::bilinear_weights<T>(p, row_mask[wo], w);
            T* d = plane0;
            const T* gc = gcol0 + wo;
            for (int64_t c = c0; c < c1; ++c, d += plane, gc += col_stride)
              for (int n = 0; n < 4; ++n)
                if (w[n] != T(0)) d[p.idx[n]] += w[n] * *gc;
          };
          if (fast) {
            for (const int64_t wo : table.border) scatter(wo);
          } else {
            for (int64_t wo = 0; wo < out_w; ++wo) scatter(wo);
          }
        }
      }
      q += c1 - c0;
    }
  });
}

// grad_offset and grad_mask of one sampling point only need S[n] = sum over the group's channels of
// grad_column * neighbour n (the value, d/dy and d/dx are linear in the neighbours), so the channel loop is
// four multiply-adds per channel and the bilinear algebra runs once per point.
template <typename T>
void grad_offset_mask(const Geometry& g, const T* grad_columns, const T* input, const T* offset, const T* mask,
                      T* grad_offset, T* grad_mask, int threads) {
  const int64_t kk = g.kk(), len = g.out_len(), tile = g.tile_len(), cpg = g.channels_per_group();
  const int64_t plane = g.plane(), out_w = g.out_w, width = g.width, col_stride = kk * tile;
  const int64_t rows = g.batch * g.groups * kk * g.row_count;
  parallel_for_dynamic(0, rows, chunk_size(rows, threads, 1), threads, [&](int64_t begin, int64_t end) {
    std::vector<SamplePoint<T>> row(out_w);
    std::vector<T> row_mask(out_w);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t ho = g.row_begin + r % g.row_count;
      int64_t t = r / g.row_count;
      const int64_t k = t % kk;
      t /= kk;
      const int64_t grp = t % g.groups, b = t / g.groups;
      build_row<T>(g, offset, mask, b, grp, k, ho, row.data(), row_mask.data());
      const int64_t c0 = grp * cpg;
      const T* src0 = input + (b * g.channels + c0) * plane;
      const T* gcol0 = grad_columns + ((b * g.channels + c0) * kk + k) * tile + (ho - g.row_begin) * out_w;
      T* out_y = grad_offset + ((b * g.groups + grp) * 2 * kk + 2 * k) * len + ho * out_w;
      T* out_x = out_y + len;
      T* out_m = g.use_mask ? grad_mask + ((b * g.groups + grp) * kk + k) * len + ho * out_w : nullptr;
      for (int64_t wo = 0; wo < out_w; ++wo) {
        const SamplePoint<T>& p = row[wo];
        T sum[4] = {T(0), T(0), T(0), T(0)};
        const bool all_valid = p.valid[0] != T(0) && p.valid[1] != T(0) && p.valid[2] != T(0) && p.valid[3] != T(0);
        const bool any_valid = p.valid[0] != T(0) || p.valid[1] != T(0) || p.valid[2] != T(0) || p.valid[3] != T(0);
        const T* gc = gcol0 + wo;
        if (all_valid) {
          const T* s = src0 + p.idx[0];
          for (int64_t c = 0; c < cpg; ++c, s += plane, gc += col_stride) {
            const T gv = *gc;
            sum[0] += gv * s[0];
            sum[1] += gv * s[1];
            sum[2] += gv * s[width];
            sum[3] += gv * s[width + 1];
          }
        } else if (any_valid) {
          const T* s = src0;
          for (int64_t c = 0; c < cpg; ++c, s += plane, gc += col_stride) {
            T v[4];
            deform::corner_values<T>(s, p, v);
            const T gv = *gc;
            for (int n = 0; n < 4; ++n) sum[n] += gv * v[n];
          }
        }
        T dy, dx;
        deform::coordinate_grads<T>(p, sum, dy, dx);
        out_y[wo] = row_mask[wo] * dy;
        out_x[wo] = row_mask[wo] * dx;
        if (out_m != nullptr) out_m[wo] = deform::bilinear_from_corners<T>(p, sum);
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
