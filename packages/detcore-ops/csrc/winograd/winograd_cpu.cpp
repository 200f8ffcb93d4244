// Winograd F(4x4, 3x3) transforms for 3x3, stride-1, pad-1 convolutions of channels-last float32 maps.
//
// The convolution is split in three steps (Lavin & Gray 2016, points 0, +-1, +-2, inf):
//   1. input transform (here):  V[p][t][c]  = (B^T d_t B)[p] for every 6x6 input tile d_t (stride 4),
//   2. 36 matrix products (torch): M[p] = V[p] @ U[p], U[p] = (G w G^T)[p] the transformed weights,
//   3. output transform (here): y_t = A^T M_t A (4x4 outputs per tile) + bias, optional ReLU.
// Maps are NHWC (torch.channels_last memory). Tiles are numbered (n, ty, tx) row-major with
// th = ceil(H / 4) by tw = ceil(W / 4) tiles per image; a call transforms tiles [t0, t1) into rows
// [0, t1 - t0) of V / from rows of M, so Python can process a map in chunks that stay in cache.
// Pixels outside the image read as zeros (the convolution's zero padding); outputs outside it are not written.
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>

#include "common/ops.h"
#include "common/parallel.h"

namespace detcore {
namespace {

constexpr int64_t kBlock = 32;  // channels handled together (the inner, vectorised loop)
alignas(64) const float kZeros[kBlock] = {};

struct Geometry {
  int64_t H, W, th, tw;
  void tile(int64_t t, int64_t& n, int64_t& ty, int64_t& tx) const {
    n = t / (th * tw);
    const int64_t r = t - n * th * tw;
    ty = r / tw;
    tx = r - ty * tw;
  }
};

// B^T applied to the six values d0..d5 of one column (or row) of a tile, for cb channels. The pointers
// never alias (restrict), which lets the compiler vectorise the channel loop without run-time checks.
#define DETCORE_R __restrict__
inline void input_1d(const float* DETCORE_R d0, const float* DETCORE_R d1, const float* DETCORE_R d2,
                     const float* DETCORE_R d3, const float* DETCORE_R d4, const float* DETCORE_R d5,
                     float* DETCORE_R o0, float* DETCORE_R o1, float* DETCORE_R o2, float* DETCORE_R o3,
                     float* DETCORE_R o4, float* DETCORE_R o5, int64_t cb) {
  for (int64_t c = 0; c < cb; ++c) {
    o0[c] = 4.f * d0[c] - 5.f * d2[c] + d4[c];
    o1[c] = (d4[c] + d3[c]) - 4.f * (d1[c] + d2[c]);
    o2[c] = (d4[c] - d3[c]) + 4.f * (d1[c] - d2[c]);
    o3[c] = (d4[c] - d2[c]) + 2.f * (d3[c] - d1[c]);
    o4[c] = (d4[c] - d2[c]) - 2.f * (d3[c] - d1[c]);
    o5[c] = 4.f * d1[c] - 5.f * d3[c] + d5[c];
  }
}

inline void input_tiles(const float* x, int64_t C, const Geometry& g, int64_t t0, int64_t begin, int64_t end,
                        float* v, int64_t plane) {
  alignas(64) float tmp[6][6][kBlock];
  const float* src[6][6];
  for (int64_t t = begin; t < end; ++t) {
    int64_t n, ty, tx;
    g.tile(t, n, ty, tx);
    const int64_t y0 = ty * 4 - 1, x0 = tx * 4 - 1;
    float* vt = v + (t - t0) * C;
    for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const int64_t cb = std::min(kBlock, C - c0);
      for (int i = 0; i < 6; ++i)
        for (int j = 0; j < 6; ++j) {
          const int64_t yy = y0 + i, xx = x0 + j;
          src[i][j] = (yy >= 0 && yy < g.H && xx >= 0 && xx < g.W) ? x + ((n * g.H + yy) * g.W + xx) * C + c0
                                                                     : kZeros;
        }
      for (int j = 0; j < 6; ++j) {  // columns: tmp[a][j] = sum_i BT[a][i] d[i][j]
        input_1d(src[0][j], src[1][j], src[2][j], src[3][j], src[4][j], src[5][j], tmp[0][j], tmp[1][j],
                 tmp[2][j], tmp[3][j], tmp[4][j], tmp[5][j], cb);
      }
      for (int a = 0; a < 6; ++a) {  // rows: V[a][b] = sum_j tmp[a][j] BT[b][j]
        float* va = vt + a * 6 * plane + c0;
        input_1d(tmp[a][0], tmp[a][1], tmp[a][2], tmp[a][3], tmp[a][4], tmp[a][5], va, va + plane,
                 va + 2 * plane, va + 3 * plane, va + 4 * plane, va + 5 * plane, cb);
      }
    }
  }
}

// A^T applied to six values m0..m5, giving four.
inline void output_1d(const float* DETCORE_R m0, const float* DETCORE_R m1, const float* DETCORE_R m2,
                      const float* DETCORE_R m3, const float* DETCORE_R m4, const float* DETCORE_R m5,
                      float* DETCORE_R o0, float* DETCORE_R o1, float* DETCORE_R o2, float* DETCORE_R o3,
                      int64_t cb) {
  for (int64_t c = 0; c < cb; ++c) {
    const float p12 = m1[c] + m2[c], d12 = m1[c] - m2[c], p34 = m3[c] + m4[c], d34 = m3[c] - m4[c];
    o0[c] = m0[c] + p12 + p34;
    o1[c] = d12 + 2.f * d34;
    o2[c] = p12 + 4.f * p34;
    o3[c] = d12 + 8.f * d34 + m5[c];
  }
}

inline void output_tiles(const float* m, int64_t C, const Geometry& g, int64_t t0, int64_t begin, int64_t end,
                         int64_t plane, const float* bias, bool relu, float* y) {
  alignas(64) float tmp[4][6][kBlock];
  alignas(64) float res[4][4][kBlock];
  for (int64_t t = begin; t < end; ++t) {
    int64_t n, ty, tx;
    g.tile(t, n, ty, tx);
    const int64_t oy0 = ty * 4, ox0 = tx * 4;
    const float* mt = m + (t - t0) * C;
    for (int64_t c0 = 0; c0 < C; c0 += kBlock) {
      const int64_t cb = std::min(kBlock, C - c0);
      for (int b = 0; b < 6; ++b) {  // columns: tmp[r][b] = sum_a AT[r][a] M[a][b]
        const float* mb = mt + b * plane + c0;
        output_1d(mb, mb + 6 * plane, mb + 12 * plane, mb + 18 * plane, mb + 24 * plane, mb + 30 * plane,
                  tmp[0][b], tmp[1][b], tmp[2][b], tmp[3][b], cb);
      }
      for (int r = 0; r < 4; ++r) {  // rows: res[r][s] = sum_b tmp[r][b] AT[s][b]
        output_1d(tmp[r][0], tmp[r][1], tmp[r][2], tmp[r][3], tmp[r][4], tmp[r][5], res[r][0], res[r][1],
                  res[r][2], res[r][3], cb);
      }
      for (int r = 0; r < 4; ++r) {
        const int64_t oy = oy0 + r;
        if (oy >= g.H) break;
        for (int s = 0; s < 4; ++s) {
          const int64_t ox = ox0 + s;
          if (ox >= g.W) break;
          float* out = y + ((n * g.H + oy) * g.W + ox) * C + c0;
          const float* val = res[r][s];
          if (bias != nullptr) {
            const float* bb = bias + c0;
            if (relu)
              for (int64_t c = 0; c < cb; ++c) out[c] = std::max(val[c] + bb[c], 0.f);
            else
              for (int64_t c = 0; c < cb; ++c) out[c] = val[c] + bb[c];
          } else if (relu) {
            for (int64_t c = 0; c < cb; ++c) out[c] = std::max(val[c], 0.f);
          } else {
            for (int64_t c = 0; c < cb; ++c) out[c] = val[c];
          }
        }
      }
    }
  }
}

// The same code compiled for AVX2 + FMA (chosen at run time); the generic build is the fallback.
__attribute__((target("avx2,fma"), flatten)) void input_tiles_avx2(const float* x, int64_t C, const Geometry& g,
                                                                   int64_t t0, int64_t begin, int64_t end,
                                                                   float* v, int64_t plane) {
  input_tiles(x, C, g, t0, begin, end, v, plane);
}
__attribute__((target("avx2,fma"), flatten)) void output_tiles_avx2(const float* m, int64_t C, const Geometry& g,
                                                                    int64_t t0, int64_t begin, int64_t end,
                                                                    int64_t plane, const float* bias, bool relu,
                                                                    float* y) {
  output_tiles(m, C, g, t0, begin, end, plane, bias, relu, y);
}
__attribute__((flatten)) void input_tiles_generic(const float* x, int64_t C, const Geometry& g, int64_t t0,
                                                  int64_t begin, int64_t end, float* v, int64_t plane) {
  input_tiles(x, C, g, t0, begin, end, v, plane);
}
__attribute__((flatten)) void output_tiles_generic(const float* m, int64_t C, const Geometry& g, int64_t t0,
                                                   int64_t begin, int64_t end, int64_t plane, const float* bias,
                                                   bool relu, float* y) {
  output_tiles(m, C, g, t0, begin, end, plane, bias, relu, y);
}

bool has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}

Geometry geometry(int64_t h, int64_t w) { return Geometry{h, w, (h + 3) / 4, (w + 3) / 4}; }

void input_entry(std::uintptr_t x, int64_t n, int64_t h, int64_t w, int64_t c, int64_t t0, int64_t t1,
                 std::uintptr_t v, int num_threads) {
  pybind11::gil_scoped_release release;
  const Geometry g = geometry(h, w);
  const int64_t plane = (t1 - t0) * c;
  const bool avx2 = has_avx2_fma();
  parallel_for(t0, t1, 8, num_threads, [&](int64_t b, int64_t e) {
    if (avx2)
      input_tiles_avx2(reinterpret_cast<const float*>(x), c, g, t0, b, e, reinterpret_cast<float*>(v), plane);
    else
      input_tiles_generic(reinterpret_cast<const float*>(x), c, g, t0, b, e, reinterpret_cast<float*>(v), plane);
  });
}

void output_entry(std::uintptr_t m, int64_t n, int64_t h, int64_t w, int64_t c, int64_t t0, int64_t t1,
                  std::uintptr_t bias, bool relu, std::uintptr_t y, int num_threads) {
  pybind11::gil_scoped_release release;
  const Geometry g = geometry(h, w);
  const int64_t plane = (t1 - t0) * c;
  const bool avx2 = has_avx2_fma();
  const float* b = reinterpret_cast<const float*>(bias);
  parallel_for(t0, t1, 8, num_threads, [&](int64_t lo, int64_t hi) {
    if (avx2)
      output_tiles_avx2(reinterpret_cast<const float*>(m), c, g, t0, lo, hi, plane, b, relu,
                        reinterpret_cast<float*>(y));
    else
      output_tiles_generic(reinterpret_cast<const float*>(m), c, g, t0, lo, hi, plane, b, relu,
                           reinterpret_cast<float*>(y));
  });
}

}  // namespace

void register_winograd(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("winograd_f43_input", &input_entry, "x"_a, "n"_a, "h"_a, "w"_a, "c"_a, "t0"_a, "t1"_a, "v"_a,
        "num_threads"_a,
        "Winograd F(4x4,3x3) input transform of tiles [t0, t1) of the float32 NHWC map x[n,h,w,c] (zero "
        "padded by 1) into v[36, t1-t0, c].");
  m.def("winograd_f43_output", &output_entry, "m"_a, "n"_a, "h"_a, "w"_a, "c"_a, "t0"_a, "t1"_a, "bias"_a,
        "relu"_a, "y"_a, "num_threads"_a,
        "Winograd F(4x4,3x3) output transform of m[36, t1-t0, c] into the 4x4 output tiles [t0, t1) of the "
        "float32 NHWC map y[n,h,w,c], adding bias[c] (0: none) and applying ReLU if relu.");
}

}  // namespace detcore
