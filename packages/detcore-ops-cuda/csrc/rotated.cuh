// IoU of rotated boxes (x_ctr, y_ctr, w, h, angle in degrees, counter-clockwise), detectron2's algorithm:
// the intersection polygon is the convex hull of the edge-edge intersections and the corners of each box
// inside the other; its area by the shoelace formula. Host and device.
#pragma once
#include <cmath>

#include "common.cuh"

namespace detcore_cuda {
namespace rotated {

template <typename T>
struct Point {
  T x, y;
};

template <typename T>
DETCORE_HD Point<T> sub(const Point<T>& a, const Point<T>& b) {
  return {a.x - b.x, a.y - b.y};
}

template <typename T>
DETCORE_HD T dot(const Point<T>& a, const Point<T>& b) {
  return a.x * b.x + a.y * b.y;
}

template <typename T>
DETCORE_HD T cross(const Point<T>& a, const Point<T>& b) {
  return a.x * b.y - b.x * a.y;
}

// Corners of a box centred at (cx, cy).
template <typename T>
DETCORE_HD void corners(T cx, T cy, T w, T h, T angle_deg, Point<T> (&pts)[4]) {
  const double theta = static_cast<double>(angle_deg) * 0.01745329251994329577;  // pi / 180
  const T c = static_cast<T>(cos(theta)) * T(0.5);
  const T s = static_cast<T>(sin(theta)) * T(0.5);
  pts[0].x = cx + s * h + c * w;
  pts[0].y = cy + c * h - s * w;
  pts[1].x = cx - s * h + c * w;
  pts[1].y = cy - c * h - s * w;
  pts[2].x = 2 * cx - pts[0].x;
  pts[2].y = 2 * cy - pts[0].y;
  pts[3].x = 2 * cx - pts[1].x;
  pts[3].y = 2 * cy - pts[1].y;
}

// Candidate vertices of the intersection polygon (duplicates allowed); returns their number (<= 24).
template <typename T>
DETCORE_HD int intersection_points(const Point<T> (&p1)[4], const Point<T> (&p2)[4], Point<T> (&out)[24]) {
  Point<T> v1[4], v2[4];
  for (int i = 0; i < 4; ++i) {
    v1[i] = sub(p1[(i + 1) % 4], p1[i]);
    v2[i] = sub(p2[(i + 1) % 4], p2[i]);
  }
  // Relaxed comparisons: an extra (near-duplicate) vertex is harmless, a missed one is not.
  const T eps = T(1e-5);
  int num = 0;
  for (int i = 0; i < 4; ++i) {
    for (int j = 0; j < 4; ++j) {
      const T det = cross(v2[j], v1[i]);
      if (fabs(det) <= T(1e-14)) continue;  // parallel edges
      const Point<T> d = sub(p2[j], p1[i]);
      const T t1 = cross(v2[j], d) / det;
      const T t2 = cross(v1[i], d) / det;
      if (t1 > -eps && t1 < T(1) + eps && t2 > -eps && t2 < T(1) + eps)
        out[num++] = {p1[i].x + v1[i].x * t1, p1[i].y + v1[i].y * t1};
    }
  }
  // Corners of box 1 inside box 2, then corners of box 2 inside box 1.
  for (int pass = 0; pass < 2; ++pass) {
    const Point<T>(&inner)[4] = pass == 0 ? p1 : p2;
    const Point<T>(&outer)[4] = pass == 0 ? p2 : p1;
    const Point<T>(&vo)[4] = pass == 0 ? v2 : v1;
    const Point<T>& ab = vo[0];
    const Point<T>& da = vo[3];
    const T ab_ab = dot(ab, ab);
    const T ad_ad = dot(da, da);
    for (int i = 0; i < 4; ++i) {
      const Point<T> ap = sub(inner[i], outer[0]);
      const T ap_ab = dot(ap, ab);
      const T ap_ad = -dot(ap, da);
      if (ap_ab > -eps && ap_ad > -eps && ap_ab < ab_ab + eps && ap_ad < ad_ad + eps) out[num++] = inner[i];
    }
  }
  return num;
}

// Graham scan of p[0, num); the hull (shifted so its lowest point is the origin) goes to q; returns its size.
template <typename T>
DETCORE_HD int convex_hull(const Point<T> (&p)[24], int num, Point<T> (&q)[24]) {
  int t = 0;  // lowest point (then leftmost)
  for (int i = 1; i < num; ++i)
    if (p[i].y < p[t].y || (p[i].y == p[t].y && p[i].x < p[t].x)) t = i;
  const Point<T> start = p[t];
  for (int i = 0; i < num; ++i) q[i] = sub(p[i], start);
  const Point<T> tmp = q[0];
  q[0] = q[t];
  q[t] = tmp;
  // Sort by angle (cross product), ties by distance to the origin: a selection-style sort, as on GPU.
  T dist[24];
  for (int i = 0; i < num; ++i) dist[i] = dot(q[i], q[i]);
  for (int i = 1; i < num - 1; ++i) {
    for (int j = i + 1; j < num; ++j) {
      const T c = cross(q[i], q[j]);
      if (c < T(-1e-6) || (fabs(c) < T(1e-6) && dist[i] > dist[j])) {
        const Point<T> qt = q[i];
        q[i] = q[j];
        q[j] = qt;
        const T dt = dist[i];
        dist[i] = dist[j];
        dist[j] = dt;
      }
    }
  }
  int k = 1;  // first point not at the origin
  for (; k < num; ++k)
    if (dist[k] > T(1e-8)) break;
  if (k == num) {
    q[0] = p[t];
    return 1;
  }
  q[1] = q[k];
  int m = 2;
  for (int i = k + 1; i < num; ++i) {
    while (m > 1) {
      const Point<T> q1 = sub(q[i], q[m - 2]);
      const Point<T> q2 = sub(q[m - 1], q[m - 2]);
      // Compare the two products directly (an FMA in cross() could make a zero non-zero).
      if (q1.x * q2.y >= q2.x * q1.y)
        --m;
      else
        break;
    }
    q[m++] = q[i];
  }
  return m;
}

template <typename T>
DETCORE_HD T polygon_area(const Point<T> (&q)[24], int m) {
  if (m <= 2) return T(0);
  T area = 0;
  for (int i = 1; i < m - 1; ++i) area += fabs(cross(sub(q[i], q[0]), sub(q[i + 1], q[0])));
  return area / T(2);
}

}  // namespace rotated

// IoU of two rotated boxes [5]; 0 if either has area below 1e-14.
template <typename T>
DETCORE_HD T rotated_iou(const T* a, const T* b) {
  using rotated::Point;
  // Centre the pair at the origin for precision.
  const double shift_x = (static_cast<double>(a[0]) + static_cast<double>(b[0])) / 2.0;
  const double shift_y = (static_cast<double>(a[1]) + static_cast<double>(b[1])) / 2.0;
  const T area_a = a[2] * a[3];
  const T area_b = b[2] * b[3];
  if (area_a < T(1e-14) || area_b < T(1e-14)) return T(0);
  Point<T> pa[4], pb[4];
  rotated::corners<T>(static_cast<T>(a[0] - shift_x), static_cast<T>(a[1] - shift_y), a[2], a[3], a[4], pa);
  rotated::corners<T>(static_cast<T>(b[0] - shift_x), static_cast<T>(b[1] - shift_y), b[2], b[3], b[4], pb);
  Point<T> pts[24], hull[24];
  const int num = rotated::intersection_points(pa, pb, pts);
  if (num <= 2) return T(0);
  const int m = rotated::convex_hull(pts, num, hull);
  const T inter = rotated::polygon_area(hull, m);
  return inter / (area_a + area_b - inter);
}

}  // namespace detcore_cuda
