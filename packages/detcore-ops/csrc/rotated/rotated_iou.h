// IoU of two rotated rectangles (x_ctr, y_ctr, w, h, angle in degrees, counter-clockwise), shared by the CPU
// and CUDA kernels. The arithmetic follows detectron2's box_iou_rotated_utils.h step by step (same epsilons,
// same operation order, same convex hull), so results match detectron2's to the last bit in practice and
// threshold decisions in rotated NMS agree.
//
// rotated_aabb() gives a conservative axis-aligned bound used to skip pairs whose IoU is exactly 0: it is
// grown by more than every tolerance detectron2's intersection test applies (1e-5 relative on edge
// parameters, 1e-5 absolute on squared projections), so a pair whose bounds are disjoint can produce no
// intersection point and has IoU 0 in the exact routine too.
#pragma once
#include <cmath>

#ifndef DETCORE_HOST_DEVICE
#ifdef __CUDACC__
#define DETCORE_HOST_DEVICE __host__ __device__
#else
#define DETCORE_HOST_DEVICE
#endif
#endif

namespace detcore {
namespace rotated {

template <typename T>
struct RotatedBox {
  T x_ctr, y_ctr, w, h, a;
};

template <typename T>
struct Point {
  T x, y;
  DETCORE_HOST_DEVICE inline Point(const T& px = 0, const T& py = 0) : x(px), y(py) {}
  DETCORE_HOST_DEVICE inline Point operator+(const Point& p) const { return Point(x + p.x, y + p.y); }
  DETCORE_HOST_DEVICE inline Point& operator+=(const Point& p) {
    x += p.x;
    y += p.y;
    return *this;
  }
  DETCORE_HOST_DEVICE inline Point operator-(const Point& p) const { return Point(x - p.x, y - p.y); }
  DETCORE_HOST_DEVICE inline Point operator*(const T coeff) const { return Point(x * coeff, y * coeff); }
};

template <typename T>
DETCORE_HOST_DEVICE inline T dot_2d(const Point<T>& A, const Point<T>& B) {
  return A.x * B.x + A.y * B.y;
}

template <typename T>
DETCORE_HOST_DEVICE inline T cross_2d(const Point<T>& A, const Point<T>& B) {
  return A.x * B.y - B.x * A.y;
}

template <typename T>
DETCORE_HOST_DEVICE inline void get_rotated_vertices(const RotatedBox<T>& box, Point<T> (&pts)[4]) {
  // M_PI / 180 as detectron2 spells it
  const double theta = box.a * 0.01745329251;
  const T cos_half = (T)cos(theta) * 0.5f;
  const T sin_half = (T)sin(theta) * 0.5f;
  // y: top --> down; x: left --> right
  pts[0].x = box.x_ctr + sin_half * box.h + cos_half * box.w;
  pts[0].y = box.y_ctr + cos_half * box.h - sin_half * box.w;
  pts[1].x = box.x_ctr - sin_half * box.h + cos_half * box.w;
  pts[1].y = box.y_ctr - cos_half * box.h - sin_half * box.w;
  pts[2].x = 2 * box.x_ctr - pts[0].x;
  pts[2].y = 2 * box.y_ctr - pts[0].y;
  pts[3].x = 2 * box.x_ctr - pts[1].x;
  pts[3].y = 2 * box.y_ctr - pts[1].y;
}

template <typename T>
DETCORE_HOST_DEVICE inline int get_intersection_points(const Point<T> (&pts1)[4], const Point<T> (&pts2)[4],
                                                       Point<T> (&intersections)[24]) {
  // A line from p1 to p2 is p1 + (p2 - p1) * t, t in [0, 1]
  Point<T> vec1[4], vec2[4];
  for (int i = 0; i < 4; i++) {
    vec1[i] = pts1[(i + 1) % 4] - pts1[i];
    vec2[i] = pts2[(i + 1) % 4] - pts2[i];
  }
  // Extra (duplicate) points are harmless, a missed one is not: comparisons are relaxed by EPS.
  const double EPS = 1e-5;
  int num = 0;
  for (int i = 0; i < 4; i++) {
    for (int j = 0; j < 4; j++) {
      const T det = cross_2d<T>(vec2[j], vec1[i]);
      if (fabs(det) <= 1e-14) continue;  // parallel lines
      const Point<T> vec12 = pts2[j] - pts1[i];
      const T t1 = cross_2d<T>(vec2[j], vec12) / det;
      const T t2 = cross_2d<T>(vec1[i], vec12) / det;
      if (t1 > -EPS && t1 < 1.0f + EPS && t2 > -EPS && t2 < 1.0f + EPS) {
        intersections[num++] = pts1[i] + vec1[i] * t1;
      }
    }
  }
  // Vertices of rect1 inside rect2: P is inside ABCD iff its projections on AB and AD lie within them.
  {
    const Point<T>& AB = vec2[0];
    const Point<T>& DA = vec2[3];
    const T ABdotAB = dot_2d<T>(AB, AB);
    const T ADdotAD = dot_2d<T>(DA, DA);
    for (int i = 0; i < 4; i++) {
      const Point<T> AP = pts1[i] - pts2[0];
      const T APdotAB = dot_2d<T>(AP, AB);
      const T APdotAD = -dot_2d<T>(AP, DA);
      if ((APdotAB > -EPS) && (APdotAD > -EPS) && (APdotAB < ABdotAB + EPS) && (APdotAD < ADdotAD + EPS)) {
        intersections[num++] = pts1[i];
      }
    }
  }
  // Vertices of rect2 inside rect1.
  {
    const Point<T>& AB = vec1[0];
    const Point<T>& DA = vec1[3];
    const T ABdotAB = dot_2d<T>(AB, AB);
    const T ADdotAD = dot_2d<T>(DA, DA);
    for (int i = 0; i < 4; i++) {
      const Point<T> AP = pts2[i] - pts1[0];
      const T APdotAB = dot_2d<T>(AP, AB);
      const T APdotAD = -dot_2d<T>(AP, DA);
      if ((APdotAB > -EPS) && (APdotAD > -EPS) && (APdotAB < ABdotAB + EPS) && (APdotAD < ADdotAD + EPS)) {
        intersections[num++] = pts2[i];
      }
    }
  }
  return num;
}

// Graham scan over p[0, num_in); writes the hull (shifted so the lowest point is the origin) to q.
template <typename T>
DETCORE_HOST_DEVICE inline int convex_hull_graham(const Point<T> (&p)[24], const int num_in, Point<T> (&q)[24]) {
  // Lowest y (then lowest x) is the start point.
  int t = 0;
  for (int i = 1; i < num_in; i++) {
    if (p[i].y < p[t].y || (p[i].y == p[t].y && p[i].x < p[t].x)) t = i;
  }
  const Point<T> start = p[t];
  for (int i = 0; i < num_in; i++) q[i] = p[i] - start;
  Point<T> tmp = q[0];
  q[0] = q[t];
  q[t] = tmp;
  // Sort points 1..num_in-1 by angle (cross product), ties by distance to the origin.
  T dist[24];
  for (int i = 0; i < num_in; i++) dist[i] = dot_2d<T>(q[i], q[i]);
  for (int i = 1; i < num_in - 1; i++) {
    for (int j = i + 1; j < num_in; j++) {
      const T cross = cross_2d<T>(q[i], q[j]);
      if ((cross < -1e-6) || (fabs(cross) < 1e-6 && dist[i] > dist[j])) {
        const Point<T> q_tmp = q[i];
        q[i] = q[j];
        q[j] = q_tmp;
        const T dist_tmp = dist[i];
        dist[i] = dist[j];
        dist[j] = dist_tmp;
      }
    }
  }
  for (int i = 0; i < num_in; i++) dist[i] = dot_2d<T>(q[i], q[i]);
  // At least two distinct points on the stack.
  int k;
  for (k = 1; k < num_in; k++) {
    if (dist[k] > 1e-8) break;
  }
  if (k == num_in) {
    q[0] = p[t];
    return 1;
  }
  q[1] = q[k];
  int m = 2;
  for (int i = k + 1; i < num_in; i++) {
    while (m > 1) {
      const Point<T> q1 = q[i] - q[m - 2], q2 = q[m - 1] - q[m - 2];
      // Compare the two rounded products directly (a fused cross product may be nonzero for q1 == q2).
      if (q1.x * q2.y >= q2.x * q1.y)
        m--;
      else
        break;
    }
    q[m++] = q[i];
  }
  return m;
}

template <typename T>
DETCORE_HOST_DEVICE inline T polygon_area(const Point<T> (&q)[24], const int m) {
  if (m <= 2) return 0;
  T area = 0;
  for (int i = 1; i < m - 1; i++) area += fabs(cross_2d<T>(q[i] - q[0], q[i + 1] - q[0]));
  return area / 2.0;
}

template <typename T>
DETCORE_HOST_DEVICE inline T rotated_boxes_intersection(const RotatedBox<T>& box1, const RotatedBox<T>& box2) {
  // Up to 4 * 4 + 4 + 4 = 24 points (with duplicates).
  Point<T> intersect_pts[24], ordered_pts[24];
  Point<T> pts1[4];
  Point<T> pts2[4];
  get_rotated_vertices<T>(box1, pts1);
  get_rotated_vertices<T>(box2, pts2);
  const int num = get_intersection_points<T>(pts1, pts2, intersect_pts);
  if (num <= 2) return 0.0;
  const int num_convex = convex_hull_graham<T>(intersect_pts, num, ordered_pts);
  return polygon_area<T>(ordered_pts, num_convex);
}

// IoU of two rotated boxes given as 5 values each. Boxes with area < 1e-14 have IoU 0 with everything.
template <typename T>
DETCORE_HOST_DEVICE inline T single_box_iou_rotated(const T* box1_raw, const T* box2_raw) {
  // Shift both centres by their midpoint (computed in double) for precision.
  RotatedBox<T> box1, box2;
  const double center_shift_x = (box1_raw[0] + box2_raw[0]) / 2.0;
  const double center_shift_y = (box1_raw[1] + box2_raw[1]) / 2.0;
  box1.x_ctr = box1_raw[0] - center_shift_x;
  box1.y_ctr = box1_raw[1] - center_shift_y;
  box1.w = box1_raw[2];
  box1.h = box1_raw[3];
  box1.a = box1_raw[4];
  box2.x_ctr = box2_raw[0] - center_shift_x;
  box2.y_ctr = box2_raw[1] - center_shift_y;
  box2.w = box2_raw[2];
  box2.h = box2_raw[3];
  box2.a = box2_raw[4];
  const T area1 = box1.w * box1.h;
  const T area2 = box2.w * box2.h;
  if (area1 < 1e-14 || area2 < 1e-14) return 0.f;
  const T intersection = rotated_boxes_intersection<T>(box1, box2);
  return intersection / (area1 + area2 - intersection);
}

// Conservative axis-aligned bound of a rotated box, in double: [x0, x1] x [y0, y1]. `empty` is true when the
// box has area < 1e-14 (IoU 0 with everything) and false for non-finite input (never prunable then).
struct Bound {
  double x0, y0, x1, y1;
  bool empty;
};

// Growth of a box (x, y, w, h, a) that covers detectron2's tolerances: it relaxes edge parameters by 1e-5
// (a length of 1e-5 * edge) and squared projections by 1e-5 (a length of 1e-5 / edge); 10x both, plus
// float rounding of the vertices.
template <typename T>
DETCORE_HOST_DEVICE inline double rotated_margin(const T* b) {
  const double w = fabs((double)b[2]), h = fabs((double)b[3]);
  const double mn = w < h ? w : h;
  return 1e-4 * (w + h) + (mn > 0 ? 1e-4 / mn : 0.0) + 1e-6 * (fabs((double)b[0]) + fabs((double)b[1])) + 1e-9;
}

template <typename T>
DETCORE_HOST_DEVICE inline Bound rotated_aabb(const T* b) {
  Bound r;
  const T area = b[2] * b[3];
  r.empty = area < 1e-14;
  const double theta = b[4] * 0.01745329251;
  const double c = fabs(cos(theta)), s = fabs(sin(theta));
  const double w = fabs((double)b[2]), h = fabs((double)b[3]);
  const double hx = 0.5 * (w * c + h * s), hy = 0.5 * (w * s + h * c);
  const double margin = rotated_margin<T>(b);
  r.x0 = b[0] - hx - margin;
  r.x1 = b[0] + hx + margin;
  r.y0 = b[1] - hy - margin;
  r.y1 = b[1] + hy + margin;
  return r;
}

// The same box as an oriented frame in double, for an exact separating-axis test: unit axes u (along w)
// and v (along h) as detectron2 places the vertices, half sizes, and the same conservative margin as
// rotated_aabb. Two frames separated along one of their four axes by more than both margins have IoU 0.
struct Frame {
  double cx, cy, ux, uy, vx, vy, hw, hh, margin, area, grown_area;
};

template <typename T>
DETCORE_HOST_DEVICE inline Frame rotated_frame(const T* b) {
  Frame f;
  const double theta = b[4] * 0.01745329251;
  const double c = cos(theta), s = sin(theta);
  const double w = fabs((double)b[2]), h = fabs((double)b[3]);
  f.cx = b[0];
  f.cy = b[1];
  f.ux = c;
  f.uy = -s;
  f.vx = s;
  f.vy = c;
  f.hw = 0.5 * w;
  f.hh = 0.5 * h;
  f.margin = rotated_margin<T>(b);
  f.area = w * h;
  f.grown_area = (w + 2 * f.margin) * (h + 2 * f.margin);
  return f;
}

DETCORE_HOST_DEVICE inline bool frames_separated(const Frame& a, const Frame& b) {
  const double dx = b.cx - a.cx, dy = b.cy - a.cy, tol = a.margin + b.margin;
  const double axes[4][2] = {{a.ux, a.uy}, {a.vx, a.vy}, {b.ux, b.uy}, {b.vx, b.vy}};
  for (int k = 0; k < 4; ++k) {
    const double nx = axes[k][0], ny = axes[k][1];
    const double ra = a.hw * fabs(a.ux * nx + a.uy * ny) + a.hh * fabs(a.vx * nx + a.vy * ny);
    const double rb = b.hw * fabs(b.ux * nx + b.uy * ny) + b.hh * fabs(b.vx * nx + b.vy * ny);
    if (fabs(dx * nx + dy * ny) > ra + rb + tol) return true;
  }
  return false;
}

// An upper bound of the IoU detectron2's routine can return for two non-empty boxes: the intersection is
// at most the smaller grown area (the margin exceeds every tolerance and rounding error).
DETCORE_HOST_DEVICE inline double iou_upper_bound(const Frame& a, const Frame& b) {
  const double inter = a.grown_area < b.grown_area ? a.grown_area : b.grown_area;
  const double denom = a.area + b.area - inter;
  return denom > 0 ? inter / denom : 1e300;
}

}  // namespace rotated
}  // namespace detcore
