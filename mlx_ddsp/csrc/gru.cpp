// The GRU's sequential loop as two MLX primitives for the CPU: forward states and the backward recursion.
//
// MLX runs a recurrent loop as one small (B, H) @ (H, 3H) matrix product per frame; on the CPU each goes through
// BLAS, which re-packs the (3H, H) recurrent matrix on every call and costs ~0.3 ms at H = 512, and every frame
// adds several op dispatches. Here each thread packs its share of the matrix once into contiguous panels (which
// stay in its cache) and runs all frames, with one barrier per frame: ~60 us per frame at B = 4, H = 512 on two
// cores. Built and loaded at first use by mlx_ddsp/kernels.py; equations as mlx.nn.GRU's (see models.py).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include <nanobind/nanobind.h>
#include <nanobind/stl/tuple.h>
#include <nanobind/stl/variant.h>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

namespace mx = mlx::core;
namespace nb = nanobind;

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

#if defined(__AVX512F__)
constexpr int VL = 16;  // floats per SIMD register
#else
constexpr int VL = 8;
#endif
typedef float vec __attribute__((vector_size(VL * sizeof(float))));
constexpr int NB = 4 * VL;  // output columns per panel (4 registers)
constexpr int BB = 4;       // batch rows per pass (4 x 4 accumulator registers)

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

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

// c (rows, ldc), columns [n0, n1) = a (rows, K) @ the columns that pack_columns packed. zeros: K floats;
// scratch: n1 floats (targets of the padding rows).
void packed_product(const float* a, int rows, int K, const float* packed, float* c, size_t ldc, int n0, int n1,
                    const float* zeros, float* scratch) {
  for (int b0 = 0; b0 < rows; b0 += BB) {
    const float* ar[BB];
    float* cr[BB];
    for (int b = 0; b < BB; ++b) {
      ar[b] = b0 + b < rows ? a + (size_t)(b0 + b) * K : zeros;
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

int thread_count(int H) {
  int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::max(1, std::min({cores, 4, H / NB}));
}

// fn(i, u0, u1) on n threads, thread i owning the hidden units [u0, u1) (whole panels)
void parallel_units(int n, int H, const std::function<void(int, int, int)>& fn) {
  int panels = (H + NB - 1) / NB;
  auto run = [&](int i) { fn(i, std::min(H, panels * i / n * NB), std::min(H, panels * (i + 1) / n * NB)); };
  std::vector<std::thread> workers;
  for (int i = 1; i < n; ++i) workers.emplace_back(run, i);
  run(0);
  for (auto& w : workers) w.join();
}

// ---- the two loops ----

// x: (B, T, 3H) input projections [x_r, x_z, x_n] with their biases; bhn: (H); wh: (3H, H); h0: (B, H).
// states: (B, T, H), h_t = (1 - z) n + z h_{t-1}.
void gru_forward_loop(const float* x, const float* bhn, const float* wh, const float* h0, float* states, int B, int T,
                      int H) {
  int nt = thread_count(H);
  std::vector<float> h(2 * (size_t)B * H), hh((size_t)B * 3 * H), zeros(H, 0.0f), scratch((size_t)nt * 3 * H);
  std::copy(h0, h0 + (size_t)B * H, h.begin());
  std::vector<float> wt((size_t)H * 3 * H);  // Wh^T (H, 3H): output columns contiguous
  for (int j = 0; j < 3 * H; ++j)
    for (int i = 0; i < H; ++i) wt[(size_t)i * 3 * H + j] = wh[(size_t)j * H + i];
  Barrier barrier(nt);
  parallel_units(nt, H, [&](int i, int u0, int u1) {
    std::vector<float> packed[3];
    for (int g = 0; g < 3; ++g) packed[g] = pack_columns(wt.data(), 3 * H, H, g * H + u0, g * H + u1);
    float* scr = scratch.data() + (size_t)i * 3 * H;
    for (int t = 0; t < T; ++t) {
      const float* h_prev = h.data() + (t % 2) * (size_t)B * H;
      float* h_next = h.data() + ((t + 1) % 2) * (size_t)B * H;
      for (int g = 0; g < 3; ++g)
        packed_product(h_prev, B, H, packed[g].data(), hh.data(), 3 * H, g * H + u0, g * H + u1, zeros.data(), scr);
      for (int b = 0; b < B; ++b) {
        const float* xt = x + ((size_t)b * T + t) * 3 * H;
        const float* g = hh.data() + (size_t)b * 3 * H;
        float* out = states + ((size_t)b * T + t) * H;
        for (int u = u0; u < u1; ++u) {
          Gates s = gru_gates(xt[u] + g[u], xt[H + u] + g[H + u], bhn[u] + g[2 * H + u], xt[2 * H + u]);
          float value = s.n + s.z * (h_prev[(size_t)b * H + u] - s.n);
          h_next[(size_t)b * H + u] = value;
          out[u] = value;
        }
      }
      barrier.wait();
    }
  });
}

// Gradients of gru_forward_loop's states. pre: (B, T, 3H) [pre_r, pre_z, hn] as in gru_gates; x: (B, T, 3H);
// previous: (B, T, H) h_{t-1}; cotangent: (B, T, H); wh: (3H, H). Outputs d_pre (B, T, 3H) (gradients of pre),
// d_xn (B, T, H) (of x_n) and d_h0 (B, H).
void gru_backward_loop(const float* pre, const float* x, const float* previous, const float* cotangent,
                       const float* wh, float* d_pre, float* d_xn, float* d_h0, int B, int T, int H) {
  int nt = thread_count(H);
  std::vector<float> shared(2 * (size_t)B * 3 * H), d_hidden((size_t)B * H, 0.0f), carried((size_t)B * H),
      product((size_t)B * H), zeros(3 * H, 0.0f), scratch((size_t)nt * H);
  Barrier barrier(nt);
  parallel_units(nt, H, [&](int i, int u0, int u1) {
    std::vector<float> packed = pack_columns(wh, H, 3 * H, u0, u1);
    float* scr = scratch.data() + (size_t)i * H;
    for (int t = T - 1; t >= 0; --t) {
      float* d_pre_t = shared.data() + (t % 2) * (size_t)B * 3 * H;
      for (int b = 0; b < B; ++b) {
        size_t row = (size_t)b * T + t;
        const float* p = pre + row * 3 * H;
        float* d_p = d_pre + row * 3 * H;
        float* d_p_t = d_pre_t + (size_t)b * 3 * H;
        for (int u = u0; u < u1; ++u) {
          Gates s = gru_gates(p[u], p[H + u], p[2 * H + u], x[row * 3 * H + 2 * H + u]);
          float d_h = d_hidden[(size_t)b * H + u] + cotangent[row * H + u];
          float d_n = d_h * (1.0f - s.z) * (1.0f - s.n * s.n);
          float d_r = d_n * p[2 * H + u] * s.r * (1.0f - s.r);
          float d_z = d_h * (previous[row * H + u] - s.n) * s.z * (1.0f - s.z);
          d_p[u] = d_p_t[u] = d_r;
          d_p[H + u] = d_p_t[H + u] = d_z;
          d_p[2 * H + u] = d_p_t[2 * H + u] = d_n * s.r;
          d_xn[row * H + u] = d_n;
          carried[(size_t)b * H + u] = d_h * s.z;
        }
      }
      barrier.wait();  // every unit's d_pre_t is in: d_hidden = d_pre_t @ Wh + carried
      packed_product(d_pre_t, B, 3 * H, packed.data(), product.data(), H, u0, u1, zeros.data(), scr);
      for (int b = 0; b < B; ++b)
        for (int u = u0; u < u1; ++u)
          d_hidden[(size_t)b * H + u] = carried[(size_t)b * H + u] + product[(size_t)b * H + u];
    }
    for (int b = 0; b < B; ++b)
      std::copy(d_hidden.begin() + (size_t)b * H + u0, d_hidden.begin() + (size_t)b * H + u1, d_h0 + (size_t)b * H + u0);
  });
}

// ---- MLX primitives ----

template <class Loop>
class CpuLoop : public mx::Primitive {
 public:
  CpuLoop(mx::Stream stream, const char* name, Loop loop) : mx::Primitive(stream), name_(name), loop_(loop) {}

  void eval_cpu(const std::vector<mx::array>& inputs, std::vector<mx::array>& outputs) override {
    auto& encoder = mx::cpu::get_command_encoder(stream());
    std::vector<const float*> in;
    std::vector<float*> out;
    for (auto& a : inputs) {
      encoder.set_input_array(a);
      in.push_back(a.data<float>());
    }
    for (auto& a : outputs) {
      a.set_data(mx::allocator::malloc(a.nbytes()));
      encoder.set_output_array(a);
      out.push_back(a.data<float>());
    }
    int B = inputs[0].shape(0), T = inputs[0].shape(1), H = inputs[0].shape(2) / 3;
    encoder.dispatch([loop = loop_, in = std::move(in), out = std::move(out), B, T, H]() { loop(in, out, B, T, H); });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string(name_) + " runs on the CPU only");
  }

  const char* name() const override { return name_; }

 private:
  const char* name_;
  Loop loop_;
};

template <class Loop>
std::vector<mx::array> cpu_loop(const char* name, Loop loop, std::vector<mx::Shape> shapes,
                                 std::vector<mx::array> inputs, mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  for (auto& a : inputs) a = mx::contiguous(mx::astype(a, mx::float32, stream), false, stream);
  return mx::array::make_arrays(std::move(shapes), std::vector<mx::Dtype>(shapes.size(), mx::float32),
                                std::make_shared<CpuLoop<Loop>>(stream, name, loop), std::move(inputs));
}

mx::array gru_forward(const mx::array& x, const mx::array& bhn, const mx::array& wh, const mx::array& h0,
                      mx::StreamOrDevice s) {
  auto loop = [](const std::vector<const float*>& in, const std::vector<float*>& out, int B, int T, int H) {
    gru_forward_loop(in[0], in[1], in[2], in[3], out[0], B, T, H);
  };
  int B = x.shape(0), T = x.shape(1), H = h0.shape(1);
  return cpu_loop("GruForwardLoop", loop, {{B, T, H}}, {x, bhn, wh, h0}, s)[0];
}

std::tuple<mx::array, mx::array, mx::array> gru_backward(const mx::array& pre, const mx::array& x,
                                                         const mx::array& previous, const mx::array& cotangent,
                                                         const mx::array& wh, mx::StreamOrDevice s) {
  auto loop = [](const std::vector<const float*>& in, const std::vector<float*>& out, int B, int T, int H) {
    gru_backward_loop(in[0], in[1], in[2], in[3], in[4], out[0], out[1], out[2], B, T, H);
  };
  int B = x.shape(0), T = x.shape(1), H = previous.shape(2);
  auto outs = cpu_loop("GruBackwardLoop", loop, {{B, T, 3 * H}, {B, T, H}, {B, H}}, {pre, x, previous, cotangent, wh}, s);
  return {outs[0], outs[1], outs[2]};
}

}  // namespace

NB_MODULE(_gru, m) {
  m.doc() = "mlx_ddsp's GRU loops for MLX's CPU backend (built by mlx_ddsp/kernels.py)";
  m.def("gru_forward", &gru_forward, nb::arg("x"), nb::arg("bhn"), nb::arg("wh"), nb::arg("h0"), nb::kw_only(),
        nb::arg("stream") = nb::none(),
        "States (B, T, H) from input projections x (B, T, 3H), bhn (H), Wh (3H, H), h0 (B, H).");
  m.def("gru_backward", &gru_backward, nb::arg("pre"), nb::arg("x"), nb::arg("previous"), nb::arg("cotangent"),
        nb::arg("wh"), nb::kw_only(), nb::arg("stream") = nb::none(),
        "(d_pre (B, T, 3H), d_xn (B, T, H), d_h0 (B, H)) of gru_forward's states.");
}
