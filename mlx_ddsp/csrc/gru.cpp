// The GRU's sequential loop as two MLX primitives for the CPU: forward states and the backward recursion.
//
// MLX runs a recurrent loop as one small (B, H) @ (H, 3H) matrix product per frame; on the CPU each goes through
// BLAS, which re-packs the (3H, H) recurrent matrix on every call and costs ~0.3 ms at H = 512, and every frame
// adds several op dispatches. Here each thread packs its share of the matrix once into contiguous panels (which
// stay in its cache) and runs all frames, with one barrier per frame: ~60 us per frame at B = 4, H = 512 on two
// cores. Built and loaded at first use by mlx_ddsp/kernels.py; equations as mlx.nn.GRU's (see models.py).
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "cpu_primitive.h"

namespace mlx_ddsp {

namespace {

// ---- elementwise math (vectorisable: no libm calls) ----

inline float exp_approx(float x) {  // relative error < 2e-7
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  float n = std::nearbyint(x * 1.44269504088896341f);
  float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t bits = static_cast<int32_t>(n + 127.0f) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }

inline float tanh_approx(float x) { return 2.0f / (1.0f + exp_approx(-2.0f * x)) - 1.0f; }

struct Gates {
  float r, z, n;
};

// r = sigmoid(x_r + h Wr), z = sigmoid(x_z + h Wz), n = tanh(x_n + r * (bhn + h Wn)), from pre = those sums
inline Gates gru_gates(float pre_r, float pre_z, float hn, float x_n) {
  float r = sigmoid(pre_r);
  return {r, sigmoid(pre_z), tanh_approx(x_n + r * hn)};
}

// ---- small-batch matrix product against packed panels ----

constexpr int NB = 4 * VL;  // output columns per panel (4 registers)
constexpr int BB = 4;       // batch rows per pass (4 x 4 accumulator registers)

// Columns [n0, n1) of m (K, ldm), as consecutive zero-padded (K, NB) panels. Returns the packed floats.
std::vector<float> pack_columns(const float* m, size_t ldm, int K, int n0, int n1) {
  std::vector<float> packed((size_t)((n1 - n0 + NB - 1) / NB) * K * NB, 0.0f);
  float* p = packed.data();
  for (int n = n0; n < n1; n += NB, p += (size_t)K * NB)
    for (int k = 0; k < K; ++k) std::memcpy(p + (size_t)k * NB, m + k * ldm + n, std::min(NB, n1 - n) * sizeof(float));
  return packed;
}

// c[b][n0 + j] = sum_k a[b][k] * panel[k][j] for b < BB, j < width (<= NB)
inline void panel_product(const float* const* a, const float* panel, int K, float* const* c, int n0, int width) {
  vec acc[BB][4] = {};
  for (int k = 0; k < K; ++k) {
    const float* pk = panel + (size_t)k * NB;
    vec m0 = load(pk), m1 = load(pk + VL), m2 = load(pk + 2 * VL), m3 = load(pk + 3 * VL);
    for (int b = 0; b < BB; ++b) {
      float s = a[b][k];
      acc[b][0] += s * m0;
      acc[b][1] += s * m1;
      acc[b][2] += s * m2;
      acc[b][3] += s * m3;
    }
  }
  for (int b = 0; b < BB; ++b) std::memcpy(c[b] + n0, acc[b], width * sizeof(float));
}

// c (rows, ldc), columns [n0, n1) = a (rows, K; row stride lda) @ the columns that pack_columns packed.
// zeros: K floats; scratch: n1 floats (targets of the padding rows).
void packed_product(const float* a, size_t lda, int rows, int K, const float* packed, float* c, size_t ldc, int n0,
                    int n1, const float* zeros, float* scratch) {
  for (int b0 = 0; b0 < rows; b0 += BB) {
    const float* ar[BB];
    float* cr[BB];
    for (int b = 0; b < BB; ++b) {
      ar[b] = b0 + b < rows ? a + (size_t)(b0 + b) * lda : zeros;
      cr[b] = b0 + b < rows ? c + (size_t)(b0 + b) * ldc : scratch;
    }
    const float* panel = packed;
    for (int n = n0; n < n1; n += NB, panel += (size_t)K * NB) panel_product(ar, panel, K, cr, n, std::min(NB, n1 - n));
  }
}

// ---- threads ----

struct Barrier {  // spins briefly, then yields
  explicit Barrier(int n) : n(n) {}
  void wait() {
    int gen = generation.load(std::memory_order_acquire);
    if (waiting.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      waiting.store(0, std::memory_order_relaxed);
      generation.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation.load(std::memory_order_acquire) == gen; ++spins)
      if (spins > 2000) std::this_thread::yield();
  }
  std::atomic<int> waiting{0}, generation{0};
  int n;
};

// ---- the two loops ----

// One frame of one sequence, units [0, n) of a thread's share: the gates' pre-activations p_* from the input
// projections x_* and the recurrent products g_* (h_{t-1} Wr, h_{t-1} Wz, h_{t-1} Wn), then h_t into `out`.
void forward_frame(const float* __restrict x_r, const float* __restrict x_z, const float* __restrict x_n,
                   const float* __restrict g_r, const float* __restrict g_z, const float* __restrict g_n,
                   const float* __restrict bhn, const float* __restrict h_prev, float* __restrict p_r,
                   float* __restrict p_z, float* __restrict p_hn, float* __restrict out, int n) {
  for (int u = 0; u < n; ++u) {
    p_r[u] = x_r[u] + g_r[u];
    p_z[u] = x_z[u] + g_z[u];
    p_hn[u] = bhn[u] + g_n[u];
    Gates s = gru_gates(p_r[u], p_z[u], p_hn[u], x_n[u]);
    out[u] = s.n + s.z * (h_prev[u] - s.n);
  }
}

// x: (B, T, 3H) input projections [x_r, x_z, x_n] with their biases; bhn: (H); wh: (3H, H); h0: (B, H).
// states: (B, T, H), h_t = (1 - z) n + z h_{t-1}; pre: (B, T, 3H) the gates' pre-activations, as gru_gates takes them.
void gru_forward_loop(const float* x, const float* bhn, const float* wh, const float* h0, float* states, float* pre,
                      int B, int T, int H) {
  int nt = thread_count(H, NB);
  std::vector<float> hh((size_t)B * 3 * H), zeros(H, 0.0f), scratch((size_t)nt * 3 * H);
  std::vector<float> wt((size_t)H * 3 * H);  // Wh^T (H, 3H): output columns contiguous
  for (int j = 0; j < 3 * H; ++j)
    for (int i = 0; i < H; ++i) wt[(size_t)i * 3 * H + j] = wh[(size_t)j * H + i];
  size_t row_stride = (size_t)T * H;  // between sequences in `states`
  Barrier barrier(nt);
  run_shares(nt, H, NB, [&](int i, int u0, int u1) {  // thread i owns units [u0, u1)
    std::vector<float> packed[3];
    for (int g = 0; g < 3; ++g) packed[g] = pack_columns(wt.data(), 3 * H, H, g * H + u0, g * H + u1);
    float* scr = scratch.data() + (size_t)i * 3 * H;
    for (int t = 0; t < T; ++t) {
      const float* h_prev = t ? states + (size_t)(t - 1) * H : h0;
      size_t lda = t ? row_stride : H;
      for (int g = 0; g < 3; ++g)
        packed_product(h_prev, lda, B, H, packed[g].data(), hh.data(), 3 * H, g * H + u0, g * H + u1, zeros.data(),
                       scr);
      for (int b = 0; b < B; ++b) {
        const float* xt = x + ((size_t)b * T + t) * 3 * H + u0;
        const float* g = hh.data() + (size_t)b * 3 * H + u0;
        float* p = pre + ((size_t)b * T + t) * 3 * H + u0;
        forward_frame(xt, xt + H, xt + 2 * H, g, g + H, g + 2 * H, bhn + u0, h_prev + b * lda + u0, p, p + H,
                      p + 2 * H, states + b * row_stride + (size_t)t * H + u0, u1 - u0);
      }
      barrier.wait();  // h_t complete before any thread multiplies it
    }
  });
}

// One frame of one sequence, units [0, n): from the gates' pre-activations p_* (as gru_gates takes them), x_n,
// h_{t-1} and d_h = dL/dh_t, the gradients of p_* and x_n, and the part of dL/dh_{t-1} that is not through Wh.
void backward_frame(const float* __restrict p_r, const float* __restrict p_z, const float* __restrict p_hn,
                    const float* __restrict x_n, const float* __restrict previous, const float* __restrict d_h,
                    float* __restrict d_r, float* __restrict d_z, float* __restrict d_hn, float* __restrict d_xn,
                    float* __restrict carried, int n) {
  for (int u = 0; u < n; ++u) {
    Gates s = gru_gates(p_r[u], p_z[u], p_hn[u], x_n[u]);
    float d_n = d_h[u] * (1.0f - s.z) * (1.0f - s.n * s.n);
    d_r[u] = d_n * p_hn[u] * s.r * (1.0f - s.r);
    d_z[u] = d_h[u] * (previous[u] - s.n) * s.z * (1.0f - s.z);
    d_hn[u] = d_n * s.r;
    d_xn[u] = d_n;
    carried[u] = d_h[u] * s.z;
  }
}

// Gradients of gru_forward_loop's states. pre: (B, T, 3H) [pre_r, pre_z, hn] as in gru_gates; x: (B, T, 3H);
// previous: (B, T, H) h_{t-1}; cotangent: (B, T, H); wh: (3H, H). Outputs d_pre (B, T, 3H) (gradients of pre),
// d_xn (B, T, H) (of x_n) and d_h0 (B, H).
void gru_backward_loop(const float* pre, const float* x, const float* previous, const float* cotangent,
                       const float* wh, float* d_pre, float* d_xn, float* d_h0, int B, int T, int H) {
  int nt = thread_count(H, NB);
  std::vector<float> d_h((size_t)B * H), carried((size_t)B * H, 0.0f), product((size_t)B * H, 0.0f),
      zeros(3 * H, 0.0f), scratch((size_t)nt * H);
  Barrier barrier(nt);
  run_shares(nt, H, NB, [&](int i, int u0, int u1) {  // thread i owns units [u0, u1)
    std::vector<float> packed = pack_columns(wh, H, 3 * H, u0, u1);
    float* scr = scratch.data() + (size_t)i * H;
    for (int t = T - 1; t >= 0; --t) {
      for (int b = 0; b < B; ++b) {
        size_t row = (size_t)b * T + t, at = (size_t)b * H + u0;
        for (int u = u0; u < u1; ++u)  // dL/dh_t: from this frame's output and from frame t + 1
          d_h[(size_t)b * H + u] = cotangent[row * H + u] + carried[(size_t)b * H + u] + product[(size_t)b * H + u];
        const float* p = pre + row * 3 * H + u0;
        float* d_p = d_pre + row * 3 * H + u0;
        backward_frame(p, p + H, p + 2 * H, x + row * 3 * H + 2 * H + u0, previous + row * H + u0, d_h.data() + at,
                       d_p, d_p + H, d_p + 2 * H, d_xn + row * H + u0, carried.data() + at, u1 - u0);
      }
      barrier.wait();  // every unit's gradient of pre_t is in: product = d_pre_t @ Wh
      packed_product(d_pre + (size_t)t * 3 * H, (size_t)T * 3 * H, B, 3 * H, packed.data(), product.data(), H, u0,
                     u1, zeros.data(), scr);
    }
    for (int b = 0; b < B; ++b)
      for (int u = u0; u < u1; ++u)
        d_h0[(size_t)b * H + u] = carried[(size_t)b * H + u] + product[(size_t)b * H + u];
  });
}

}  // namespace

std::vector<mx::array> gru_forward(const mx::array& x, const mx::array& bhn, const mx::array& wh, const mx::array& h0,
                                   mx::StreamOrDevice s) {
  int B = x.shape(0), T = x.shape(1), H = h0.shape(1);
  auto fn = [=](const std::vector<const float*>& in, const std::vector<float*>& out) {
    gru_forward_loop(in[0], in[1], in[2], in[3], out[0], out[1], B, T, H);
  };
  return cpu_primitive("GruForwardLoop", fn, {{B, T, H}, {B, T, 3 * H}}, {x, bhn, wh, h0}, s);
}

std::vector<mx::array> gru_backward(const mx::array& pre, const mx::array& x, const mx::array& previous,
                                    const mx::array& cotangent, const mx::array& wh, mx::StreamOrDevice s) {
  int B = x.shape(0), T = x.shape(1), H = previous.shape(2);
  auto fn = [=](const std::vector<const float*>& in, const std::vector<float*>& out) {
    gru_backward_loop(in[0], in[1], in[2], in[3], in[4], out[0], out[1], out[2], B, T, H);
  };
  return cpu_primitive("GruBackwardLoop", fn, {{B, T, 3 * H}, {B, T, H}, {B, H}}, {pre, x, previous, cotangent, wh}, s);
}

}  // namespace mlx_ddsp
