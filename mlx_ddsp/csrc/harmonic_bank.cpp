// The oscillator bank of synth.harmonic_bank for the CPU: sum_k a_k[n] sin(k theta[n]) over segments of `hop`
// samples, the amplitudes interpolated linearly from start_k to end_k across a segment, by Clenshaw's recurrence.
//
// With MLX ops every harmonic is a pass over the whole (B, S, hop) array (100 passes forward, 100 more for each
// gradient); here each segment's samples stay in registers while all K harmonics are summed, so only the inputs
// and outputs go through memory. Segments are split across threads.
#include <cmath>

#include "cpu_primitive.h"

namespace mlx_ddsp {

namespace {

constexpr float TWO_PI = 6.283185307179586f;

// One segment's samples in SIMD registers' worth of floats, padded with zeros to whole registers.
struct Segment {
  explicit Segment(int hop) : hop(hop), n_vec((hop + VL - 1) / VL), weight(n_vec), a(n_vec), b(n_vec), c(n_vec) {
    for (int j = 0; j < n_vec * VL; ++j) weight[j / VL][j % VL] = j < hop ? static_cast<float>(j) / hop : 0.0f;
  }
  void load_into(std::vector<vec>& dst, const float* src) {  // hop floats -> dst, zero padded
    for (int v = 0; v < n_vec; ++v) {
      dst[v] = vec{};
      for (int l = 0; l < VL && v * VL + l < hop; ++l) dst[v][l] = src[v * VL + l];
    }
  }
  void store(float* dst, const std::vector<vec>& src) const {
    for (int j = 0; j < hop; ++j) dst[j] = src[j / VL][j % VL];
  }
  int hop, n_vec;
  std::vector<vec> weight, a, b, c;  // interpolation weights j / hop, and three working rows
};

// Clenshaw's recurrence b_k = coef_k + 2 cos(theta) b_{k+1} - b_{k+2}, k = K..1, coef_k = scale_k (start_k +
// weight (end_k - start_k)), scale_k = k if scale_by_k else 1. On return seg.a = b_1, seg.b = b_2; seg.c holds
// 2 cos(theta) on entry.
void clenshaw(Segment& seg, const float* start, const float* end, int K, bool scale_by_k) {
  for (int v = 0; v < seg.n_vec; ++v) seg.a[v] = seg.b[v] = vec{};
  for (int k = K; k >= 1; --k) {
    float scale = scale_by_k ? static_cast<float>(k) : 1.0f;
    float s = scale * start[k - 1], d = scale * (end[k - 1] - start[k - 1]);
    for (int v = 0; v < seg.n_vec; ++v) {
      vec next = s + seg.weight[v] * d + seg.c[v] * seg.a[v] - seg.b[v];
      seg.b[v] = seg.a[v];
      seg.a[v] = next;
    }
  }
}

template <class Fn>
void for_segments(int n_segments, int hop, const Fn& fn) {
  run_shares(thread_count(n_segments, 16), n_segments, 1, [&](int, int s0, int s1) {
    Segment seg(hop);
    for (int s = s0; s < s1; ++s) fn(seg, s);
  });
}

}  // namespace

mx::array harmonic_bank(const mx::array& sin_theta, const mx::array& cos_theta, const mx::array& start,
                        const mx::array& end, mx::StreamOrDevice s) {
  int hop = sin_theta.shape(-1), n_segments = static_cast<int>(sin_theta.size() / hop), K = start.shape(-1);
  auto fn = [=](const std::vector<const float*>& in, const std::vector<float*>& out) {
    for_segments(n_segments, hop, [&](Segment& seg, int s) {
      std::vector<vec> sine(seg.n_vec);
      seg.load_into(seg.c, in[1] + (size_t)s * hop);
      for (auto& v : seg.c) v *= 2.0f;
      clenshaw(seg, in[2] + (size_t)s * K, in[3] + (size_t)s * K, K, false);
      seg.load_into(sine, in[0] + (size_t)s * hop);
      for (int v = 0; v < seg.n_vec; ++v) seg.a[v] *= sine[v];
      seg.store(out[0] + (size_t)s * hop, seg.a);
    });
  };
  return cpu_primitive("HarmonicBank", fn, {sin_theta.shape()}, {sin_theta, cos_theta, start, end}, s)[0];
}

std::vector<mx::array> harmonic_bank_amplitude_grads(const mx::array& cotangent, const mx::array& sin_theta,
                                                     const mx::array& cos_theta, int K, mx::StreamOrDevice s) {
  int hop = sin_theta.shape(-1), n_segments = static_cast<int>(sin_theta.size() / hop);
  auto fn = [=](const std::vector<const float*>& in, const std::vector<float*>& out) {
    for_segments(n_segments, hop, [&](Segment& seg, int s) {
      std::vector<vec> to_start(seg.n_vec), to_end(seg.n_vec), previous(seg.n_vec, vec{}), current(seg.n_vec);
      seg.load_into(to_end, in[0] + (size_t)s * hop);
      seg.load_into(current, in[1] + (size_t)s * hop);  // sin(1 theta)
      seg.load_into(seg.c, in[2] + (size_t)s * hop);
      for (int v = 0; v < seg.n_vec; ++v) {
        seg.c[v] *= 2.0f;
        to_start[v] = to_end[v] * (1.0f - seg.weight[v]);
        to_end[v] *= seg.weight[v];
      }
      float* grad_start = out[0] + (size_t)s * K;
      float* grad_end = out[1] + (size_t)s * K;
      for (int k = 0; k < K; ++k) {  // sin((k + 1) theta) = 2 cos(theta) sin(k theta) - sin((k - 1) theta)
        vec sum_start = {}, sum_end = {};
        for (int v = 0; v < seg.n_vec; ++v) {
          sum_start += to_start[v] * current[v];
          sum_end += to_end[v] * current[v];
          vec next = seg.c[v] * current[v] - previous[v];
          previous[v] = current[v];
          current[v] = next;
        }
        grad_start[k] = horizontal_sum(sum_start);
        grad_end[k] = horizontal_sum(sum_end);
      }
    });
  };
  mx::Shape shape = sin_theta.shape();
  shape.back() = K;
  return cpu_primitive("HarmonicBankAmplitudeGrads", fn, {shape, shape}, {cotangent, sin_theta, cos_theta}, s);
}

mx::array harmonic_bank_phase_grad(const mx::array& cotangent, const mx::array& cos_theta, const mx::array& start,
                                   const mx::array& end, mx::StreamOrDevice s) {
  int hop = cos_theta.shape(-1), n_segments = static_cast<int>(cos_theta.size() / hop), K = start.shape(-1);
  auto fn = [=](const std::vector<const float*>& in, const std::vector<float*>& out) {
    for_segments(n_segments, hop, [&](Segment& seg, int s) {  // 2 pi sum_k k a_k cos(k theta) = 2 pi (cos b1 - b2)
      std::vector<vec> cosine(seg.n_vec), cot(seg.n_vec);
      seg.load_into(cosine, in[1] + (size_t)s * hop);
      for (int v = 0; v < seg.n_vec; ++v) seg.c[v] = 2.0f * cosine[v];
      clenshaw(seg, in[2] + (size_t)s * K, in[3] + (size_t)s * K, K, true);
      seg.load_into(cot, in[0] + (size_t)s * hop);
      for (int v = 0; v < seg.n_vec; ++v) seg.a[v] = TWO_PI * cot[v] * (cosine[v] * seg.a[v] - seg.b[v]);
      seg.store(out[0] + (size_t)s * hop, seg.a);
    });
  };
  return cpu_primitive("HarmonicBankPhaseGrad", fn, {cos_theta.shape()}, {cotangent, cos_theta, start, end}, s)[0];
}

}  // namespace mlx_ddsp
