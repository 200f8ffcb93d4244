// paste_masks_in_image on CPU (detectron2's accurate grid_sample variant; math in paste_masks.h).
//
// Two output modes. `zeroed` false: the output is uninitialised and the kernel writes every byte itself:
// rows are split across threads over the flattened [N * image_height] range; each row outside its box's
// pixel range is cleared with memset, and inside it only the box's column range is sampled; large outputs
// are first advised onto transparent huge pages (common/memory.h), as page faults otherwise dominate.
// `zeroed` true: the output is known to read as zeros (a fresh anonymous mapping, see paste_masks.py), so
// only the rows and columns inside each box's pixel range are written; the pages holding nothing but zeros
// are never touched (never faulted in or zeroed), which is most of a large image. The box rows are split
// evenly across threads.
//
// Sampling positions of columns and rows are computed once per mask, and each thread copies the mask it
// is sampling into a zero-bordered buffer (one mask at a time), so neighbour reads need no bounds tests (reading the zero border gives exactly the
// 0 that grid_sample's zero padding reads). The neighbour values of a box's columns are gathered once per
// pair of mask rows (RowValues) and shared by the image rows sampling that pair, so the per-row loop is
// contiguous loads and the blend (8 pixels at a time with AVX2).
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define DETCORE_PASTE_AVX2 1
#endif

#include "common/buffer.h"
#include "common/memory.h"
#include "common/ops.h"
#include "common/parallel.h"
#include "paste_masks/paste_masks.h"

namespace detcore {
namespace {

using paste::AxisSample;

// Masks are copied into buffers with a border of kPad zeros on every side: sampling indices lie in
// [-1, size] (lower neighbour) or are the far-away marker -2 (axis_sample), so lo + kPad and lo + kPad + 1
// always index the padded buffer.
constexpr int64_t kPad = 2;

// Everything the row loop needs, precomputed per mask: pixel ranges and the sampling
// positions of every column (padded index, weight of the upper neighbour `w`, of the lower one `e`) and
// row (padded row offset and weight of the lower row) inside the ranges.
template <typename T>
struct PastePlan {
  const T* masks;
  int64_t mh, mw;
  int64_t pw, plane;  // padded row length and size
  int64_t img_h, img_w;
  bool binary;
  T threshold;
  uint8_t* out;
  std::vector<int64_t> x_lo, x_hi, y_lo, y_hi, col_offset, row_offset;
  std::vector<int32_t> col_idx;
  std::vector<T> col_w, col_e;
  std::vector<int64_t> row_start;
  std::vector<T> row_frac;
};

#if defined(__GNUC__)
#define DETCORE_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define DETCORE_ALWAYS_INLINE inline
#endif

// The four neighbour values of every column of a box for one pair of mask rows: consecutive image rows
// mostly sample the same pair (a 28-row mask stretched over a 200-pixel box), so they are gathered once per
// pair and each row then reads them contiguously.
template <typename T>
struct RowValues {
  int64_t mask = -1;     // mask held in `padded`
  int64_t row_key = -1;  // padded row offset of the cached pair
  std::vector<T> padded;  // the mask with a border of kPad zeros
  std::vector<T> nw, ne, sw, se;
};

#ifdef DETCORE_PASTE_AVX2
// The column loop of sample_row for float with AVX2 and FMA, 8 pixels at a time: the same operations in
// the same order per pixel (vfmadd is the exactly rounded fmaf; products, comparisons and the truncating
// conversion are IEEE), so the bytes are identical to the scalar loop's.
__attribute__((target("avx2,fma"))) void blend_row_avx2(const float* nw, const float* ne, const float* sw,
                                                         const float* se, float n, float s, const float* cw,
                                                         const float* ce, int64_t x, int64_t x1, bool binary,
                                                         float threshold, uint8_t* row) {
  const __m256 nv = _mm256_set1_ps(n), sv = _mm256_set1_ps(s);
  const __m256 thr = _mm256_set1_ps(threshold), k255 = _mm256_set1_ps(255.0f);
  // Soft values convert only inside (-2^31, 2^31) (output_value); NaN fails both ordered comparisons.
  const __m256 lo = _mm256_set1_ps(-2147483648.0f), hi = _mm256_set1_ps(2147483648.0f);
  const __m256i one = _mm256_set1_epi32(1), low_byte = _mm256_set1_epi32(0xFF);
  for (; x + 8 <= x1; x += 8) {
    const __m256 w = _mm256_loadu_ps(cw + x), e = _mm256_loadu_ps(ce + x);
    __m256 acc = _mm256_mul_ps(_mm256_loadu_ps(nw + x), _mm256_mul_ps(sv, e));
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(ne + x), _mm256_mul_ps(sv, w), acc);
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(sw + x), _mm256_mul_ps(nv, e), acc);
    acc = _mm256_fmadd_ps(_mm256_loadu_ps(se + x), _mm256_mul_ps(nv, w), acc);
    __m256i v;
    if (binary) {
      v = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(acc, thr, _CMP_GE_OQ)), one);
    } else {
      const __m256 scaled = _mm256_mul_ps(acc, k255);
      const __m256 ok = _mm256_and_ps(_mm256_cmp_ps(scaled, lo, _CMP_GT_OQ), _mm256_cmp_ps(scaled, hi, _CMP_LT_OQ));
      v = _mm256_and_si256(_mm256_and_si256(_mm256_cvttps_epi32(scaled), _mm256_castps_si256(ok)), low_byte);
    }
    const __m128i words = _mm_packus_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(row + x), _mm_packus_epi16(words, words));
  }
  for (; x < x1; ++x) {
    float acc = nw[x] * (s * ce[x]);
    acc = paste::fused_madd(ne[x], s * cw[x], acc);
    acc = paste::fused_madd(sw[x], n * ce[x], acc);
    acc = paste::fused_madd(se[x], n * cw[x], acc);
    row[x] = paste::output_value<float>(acc, binary, threshold);
  }
}
#endif

// Samples columns [x_lo, x_hi) of image row y of mask i (y inside the mask's row range) into `row`. The
// arithmetic is paste::bilinear's, with every neighbour read from the zero-padded mask.
template <typename T, bool Avx2 = false>
DETCORE_ALWAYS_INLINE void sample_row(const PastePlan<T>& p, int64_t i, int64_t y, uint8_t* row,
                                      RowValues<T>& cache) {
  const int64_t j = p.row_offset[i] + (y - p.y_lo[i]);
  const int64_t x0 = p.x_lo[i], x1 = p.x_hi[i];
  const int64_t base = p.col_offset[i] - x0;
  if (cache.mask != i) {  // rows of a mask are consecutive: each thread pads each of its masks once
    cache.padded.assign(static_cast<size_t>(p.plane), T(0));
    for (int64_t r = 0; r < p.mh; ++r)
      std::memcpy(cache.padded.data() + (r + kPad) * p.pw + kPad, p.masks + (i * p.mh + r) * p.mw,
                  sizeof(T) * p.mw);
    cache.mask = i;
    cache.row_key = -1;
  }
  const int64_t key = p.row_start[j];
  if (cache.row_key != key) {
    const T* m0 = cache.padded.data() + key;
    const T* m1 = m0 + p.pw;
    const int32_t* idx = p.col_idx.data() + p.col_offset[i];
    const size_t width = static_cast<size_t>(x1 - x0);
    if (cache.nw.size() < width) {
      cache.nw.resize(width);
      cache.ne.resize(width);
      cache.sw.resize(width);
      cache.se.resize(width);
    }
    for (size_t k = 0; k < width; ++k) {
      const int32_t c = idx[k];
      cache.nw[k] = m0[c];
      cache.ne[k] = m0[c + 1];
      cache.sw[k] = m1[c];
      cache.se[k] = m1[c + 1];
    }
    cache.row_key = key;
  }
  const T *nw = cache.nw.data() - x0, *ne = cache.ne.data() - x0;
  const T *sw = cache.sw.data() - x0, *se = cache.se.data() - x0;
  const T n = p.row_frac[j], s = T(1) - p.row_frac[j];
  const T* cw = p.col_w.data() + base;
  const T* ce = p.col_e.data() + base;
  const bool binary = p.binary;
  const T threshold = p.threshold;
#ifdef DETCORE_PASTE_AVX2
  if constexpr (Avx2 && std::is_same_v<T, float>) {
    blend_row_avx2(nw, ne, sw, se, n, s, cw, ce, x0, x1, binary, threshold, row);
    return;
  }
#endif
  for (int64_t x = x0; x < x1; ++x) {
    const T w = cw[x], e = ce[x];
    T acc = nw[x] * (s * e);
    acc = paste::fused_madd(ne[x], s * w, acc);
    acc = paste::fused_madd(sw[x], n * e, acc);
    acc = paste::fused_madd(se[x], n * w, acc);
    row[x] = paste::output_value<T>(acc, binary, threshold);
  }
}

// Writes every byte of output rows [begin, end) of the flattened [N * img_h] range.
template <typename T, bool Avx2>
DETCORE_ALWAYS_INLINE void paste_rows_impl(const PastePlan<T>& p, int64_t begin, int64_t end) {
  RowValues<T> cache;
  for (int64_t r = begin; r < end; ++r) {
    const int64_t i = r / p.img_h, y = r % p.img_h;
    uint8_t* row = p.out + r * p.img_w;
    if (y < p.y_lo[i] || y >= p.y_hi[i]) {
      std::memset(row, 0, p.img_w);
      continue;
    }
    std::memset(row, 0, p.x_lo[i]);
    sample_row<T, Avx2>(p, i, y, row, cache);
    std::memset(row + p.x_hi[i], 0, p.img_w - p.x_hi[i]);
  }
}

// Writes only the box rows [begin, end) of the concatenated per-mask row ranges (the rest reads as 0).
template <typename T, bool Avx2>
DETCORE_ALWAYS_INLINE void paste_box_rows_impl(const PastePlan<T>& p, int64_t begin, int64_t end) {
  RowValues<T> cache;
  int64_t i = std::upper_bound(p.row_offset.begin(), p.row_offset.end(), begin) - p.row_offset.begin() - 1;
  for (int64_t j = begin; j < end; ++j) {
    while (j >= p.row_offset[i + 1]) ++i;
    const int64_t y = p.y_lo[i] + (j - p.row_offset[i]);
    sample_row<T, Avx2>(p, i, y, p.out + (i * p.img_h + y) * p.img_w, cache);
  }
}

template <typename T, bool Zeroed>
void paste_generic(const PastePlan<T>& p, int64_t begin, int64_t end) {
  if (Zeroed)
    paste_box_rows_impl<T, false>(p, begin, end);
  else
    paste_rows_impl<T, false>(p, begin, end);
}

#ifdef DETCORE_PASTE_AVX2
// Same code built for CPUs with AVX2 and FMA, chosen at run time: fmaf/fma become one instruction instead
// of a libm call (results are identical, fma is exactly rounded either way), and float rows take
// sample_row_avx2.
template <typename T, bool Zeroed>
__attribute__((target("avx2,fma"))) void paste_avx2(const PastePlan<T>& p, int64_t begin, int64_t end) {
  if (Zeroed)
    paste_box_rows_impl<T, true>(p, begin, end);
  else
    paste_rows_impl<T, true>(p, begin, end);
}
inline bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

template <typename T, bool Zeroed>
void paste_range(const PastePlan<T>& p, int64_t begin, int64_t end) {
#ifdef DETCORE_PASTE_AVX2
  if (cpu_has_avx2_fma()) return paste_avx2<T, Zeroed>(p, begin, end);
#endif
  paste_generic<T, Zeroed>(p, begin, end);
}

template <typename T, typename G>
void paste_masks_cpu(const T* masks, const G* boxes, int64_t n, int64_t mh, int64_t mw, int64_t img_h,
                     int64_t img_w, double threshold, uint8_t* out, bool zeroed, int num_threads) {
  if (n == 0 || img_h == 0 || img_w == 0) return;
  PastePlan<T> p;
  p.masks = masks;
  p.mh = mh;
  p.mw = mw;
  p.pw = mw + 2 * kPad;
  p.plane = (mh + 2 * kPad) * p.pw;
  p.img_h = img_h;
  p.img_w = img_w;
  p.binary = threshold >= 0;
  p.threshold = static_cast<T>(threshold);
  p.out = out;
  p.x_lo.resize(n);
  p.x_hi.resize(n);
  p.y_lo.resize(n);
  p.y_hi.resize(n);
  p.col_offset.assign(n + 1, 0);
  p.row_offset.assign(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    const G* b = boxes + 4 * i;
    paste::pixel_range<G>(b[0], b[2], img_w, &p.x_lo[i], &p.x_hi[i]);
    paste::pixel_range<G>(b[1], b[3], img_h, &p.y_lo[i], &p.y_hi[i]);
    if (p.x_hi[i] <= p.x_lo[i] || p.y_hi[i] <= p.y_lo[i]) p.x_hi[i] = p.x_lo[i] = p.y_hi[i] = p.y_lo[i] = 0;
    p.col_offset[i + 1] = p.col_offset[i] + (p.x_hi[i] - p.x_lo[i]);
    p.row_offset[i + 1] = p.row_offset[i] + (p.y_hi[i] - p.y_lo[i]);
  }
  p.col_idx.resize(p.col_offset[n]);
  p.col_w.resize(p.col_offset[n]);
  p.col_e.resize(p.col_offset[n]);
  p.row_start.resize(p.row_offset[n]);
  p.row_frac.resize(p.row_offset[n]);
  parallel_for(0, n, 8, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const G* b = boxes + 4 * i;
      for (int64_t x = p.x_lo[i], c = p.col_offset[i]; x < p.x_hi[i]; ++x, ++c) {
        const AxisSample<T> a = paste::axis_sample<T, G>(x, b[0], b[2], mw);
        p.col_idx[c] = static_cast<int32_t>(a.lo + kPad);
        p.col_w[c] = a.frac;
        p.col_e[c] = T(1) - a.frac;
      }
      for (int64_t y = p.y_lo[i], r = p.row_offset[i]; y < p.y_hi[i]; ++y, ++r) {
        const AxisSample<T> a = paste::axis_sample<T, G>(y, b[1], b[3], mh);
        p.row_start[r] = (a.lo + kPad) * p.pw;
        p.row_frac[r] = a.frac;
      }
      if (zeroed && p.y_hi[i] > p.y_lo[i] && img_w - (p.x_hi[i] - p.x_lo[i]) < 4096) {
        // The box's rows span one contiguous byte range in which no page-sized gap is left unwritten
        // between consecutive rows, so every page of it is written: fault it in with one call.
        const int64_t first = (i * img_h + p.y_lo[i]) * img_w + p.x_lo[i];
        const int64_t last = (i * img_h + p.y_hi[i] - 1) * img_w + p.x_hi[i];
        populate_for_write(out + first, static_cast<std::size_t>(last - first));
      }
    }
  });
  if (zeroed) {
    parallel_for(0, p.row_offset[n], 64, num_threads,
                 [&](int64_t begin, int64_t end) { paste_range<T, true>(p, begin, end); });
    return;
  }
  advise_huge_pages(out, static_cast<std::size_t>(n * img_h * img_w));
  parallel_for(0, n * img_h, 64, num_threads,
               [&](int64_t begin, int64_t end) { paste_range<T, false>(p, begin, end); });
}

void paste_masks_entry(std::uintptr_t masks, int mask_dtype, std::uintptr_t boxes, int box_dtype, int64_t n,
                       int64_t mask_h, int64_t mask_w, int64_t img_h, int64_t img_w, double threshold,
                       std::uintptr_t out, bool zeroed, int num_threads) {
  pybind11::gil_scoped_release release;
  dispatch_floating(mask_dtype, "paste_masks_in_image", [&](auto mask_zero) {
    using T = decltype(mask_zero);
    dispatch_floating(box_dtype, "paste_masks_in_image", [&](auto box_zero) {
      using G = decltype(box_zero);
      paste_masks_cpu<T, G>(ptr<const T>(masks), ptr<const G>(boxes), n, mask_h, mask_w, img_h, img_w, threshold,
                            ptr<uint8_t>(out), zeroed, num_threads);
    });
  });
}

}  // namespace

void register_paste_masks(pybind11::module_& m) {
  using namespace pybind11::literals;
  m.def("paste_masks_in_image", &paste_masks_entry, "masks"_a, "mask_dtype"_a, "boxes"_a, "box_dtype"_a, "n"_a,
        "mask_h"_a, "mask_w"_a, "img_h"_a, "img_w"_a, "threshold"_a, "out"_a, "zeroed"_a, "num_threads"_a,
        "Pastes masks [n, mask_h, mask_w] into boxes [n, 4] (XYXY) of an img_h x img_w image into out "
        "[n, img_h, img_w] (uint8): mask >= threshold when threshold >= 0, else soft * 255. Writes every byte "
        "of out, or only the sampled box pixels when zeroed (out already reads as zeros).");
}

}  // namespace detcore
