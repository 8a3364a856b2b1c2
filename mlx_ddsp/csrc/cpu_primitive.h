// Shared by mlx_ddsp's CPU kernels: an MLX primitive that runs a function on the CPU, and a thread helper.
#pragma once

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mlx/allocator.h"
#include "mlx/backend/cpu/encoder.h"
#include "mlx/mlx.h"
#include "mlx/primitives.h"

namespace mlx_ddsp {

namespace mx = mlx::core;

// Reads the float32 inputs, writes the float32 outputs (allocated, contiguous).
using CpuFunction = std::function<void(const std::vector<const float*>&, const std::vector<float*>&)>;

class CpuPrimitive : public mx::Primitive {
 public:
  CpuPrimitive(mx::Stream stream, const char* name, CpuFunction fn)
      : mx::Primitive(stream), name_(name), fn_(std::move(fn)) {}

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
    encoder.dispatch([fn = fn_, in = std::move(in), out = std::move(out)]() { fn(in, out); });
  }

  void eval_gpu(const std::vector<mx::array>&, std::vector<mx::array>&) override {
    throw std::runtime_error(std::string(name_) + " runs on the CPU only");
  }

  const char* name() const override { return name_; }

 private:
  const char* name_;
  CpuFunction fn_;
};

// Outputs of `fn` applied to `inputs` (made float32 and contiguous), as arrays of the given shapes.
inline std::vector<mx::array> cpu_primitive(const char* name, CpuFunction fn, std::vector<mx::Shape> shapes,
                                            std::vector<mx::array> inputs, mx::StreamOrDevice s) {
  auto stream = mx::to_stream(s);
  for (auto& a : inputs) a = mx::contiguous(mx::astype(a, mx::float32, stream), false, stream);
  std::vector<mx::Dtype> dtypes(shapes.size(), mx::float32);
  return mx::array::make_arrays(std::move(shapes), std::move(dtypes),
                                std::make_shared<CpuPrimitive>(stream, name, std::move(fn)), std::move(inputs));
}

// ---- SIMD ----

#if defined(__AVX512F__)
constexpr int VL = 16;  // floats per SIMD register
#else
constexpr int VL = 8;
#endif
typedef float vec __attribute__((vector_size(VL * sizeof(float))));

inline vec load(const float* p) {
  vec v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline float horizontal_sum(vec v) {
  float s = 0.0f;
  for (int i = 0; i < VL; ++i) s += v[i];
  return s;
}

// ---- threads ----

// Threads worth using for `work` independent pieces of at least `min_work` each (at most 4: beyond that the
// barriers of the GRU loops cost more than they save).
// At most 4 threads, and at most MLX_DDSP_THREADS when it is set (e.g. 1 per process for data-parallel ranks
// sharing one machine's cores).
inline long max_threads() {
  static const long limit = [] {
    long cores = std::max(1u, std::thread::hardware_concurrency());
    const char* set = std::getenv("MLX_DDSP_THREADS");
    long wanted = set ? std::atol(set) : 0;
    return std::min(4L, wanted > 0 ? std::min(wanted, cores) : cores);
  }();
  return limit;
}

inline int thread_count(long work, long min_work) {
  return static_cast<int>(std::max(1L, std::min(max_threads(), work / std::max(1L, min_work))));
}

// fn(i, begin, end) on n threads (the calling one included), thread i taking the i-th of n nearly equal parts of
// [0, size) in whole multiples of `granule` (the last part may be shorter).
inline void run_shares(int n, int size, int granule, const std::function<void(int, int, int)>& fn) {
  int granules = (size + granule - 1) / granule;
  auto run = [&](int i) {
    fn(i, std::min(size, granules * i / n * granule), std::min(size, granules * (i + 1) / n * granule));
  };
  std::vector<std::thread> workers;
  for (int i = 1; i < n; ++i) workers.emplace_back(run, i);
  run(0);
  for (auto& w : workers) w.join();
}

// ---- the kernels (gru.cpp, layer_norm.cpp, harmonic_bank.cpp, linear_recurrence.cpp) ----

std::vector<mx::array> gru_forward(const mx::array& x, const mx::array& bhn, const mx::array& wh, const mx::array& h0,
                                   mx::StreamOrDevice s);
std::vector<mx::array> gru_backward(const mx::array& pre, const mx::array& x, const mx::array& previous,
                                    const mx::array& cotangent, const mx::array& wh, mx::StreamOrDevice s);
std::vector<mx::array> layer_norm_leaky_relu(const mx::array& x, const mx::array& weight, const mx::array& bias,
                                             float eps, float slope, mx::StreamOrDevice s);
std::vector<mx::array> layer_norm_leaky_relu_backward(const mx::array& cotangent, const mx::array& out,
                                                      const mx::array& normed, const mx::array& inv_std,
                                                      const mx::array& weight, float slope, mx::StreamOrDevice s);

mx::array harmonic_bank(const mx::array& sin_theta, const mx::array& cos_theta, const mx::array& start,
                        const mx::array& end, mx::StreamOrDevice s);
std::vector<mx::array> harmonic_bank_amplitude_grads(const mx::array& cotangent, const mx::array& sin_theta,
                                                     const mx::array& cos_theta, int K, mx::StreamOrDevice s);
mx::array harmonic_bank_phase_grad(const mx::array& cotangent, const mx::array& cos_theta, const mx::array& start,
                                   const mx::array& end, mx::StreamOrDevice s);
mx::array linear_recurrence(const mx::array& keep, const mx::array& input, const mx::array& h0, mx::StreamOrDevice s);
std::vector<mx::array> linear_recurrence_backward(const mx::array& keep, const mx::array& cotangent,
                                                  mx::StreamOrDevice s);

}  // namespace mlx_ddsp
