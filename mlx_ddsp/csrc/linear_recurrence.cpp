// The minGRU's linear recurrence h_t = keep_t * h_{t-1} + input_t for the CPU, forward and backward.
//
// With MLX operations each frame is a few op dispatches on (B, H) arrays; here every block of units runs through
// all frames at once, blocks split across threads.
#include "cpu_primitive.h"

namespace mlx_ddsp {

namespace {

constexpr int BLOCK = 64;  // units per work item

// Units [u0, u0 + n) of one sequence through all T frames (rows of stride H), forward in time.
void forward_block(const float* __restrict keep, const float* __restrict input, const float* __restrict h0,
                   float* __restrict states, int T, int H, int n) {
  float h[BLOCK];
  for (int u = 0; u < n; ++u) h[u] = h0[u];
  for (int t = 0; t < T; ++t) {
    size_t at = (size_t)t * H;
    for (int u = 0; u < n; ++u) {
      h[u] = keep[at + u] * h[u] + input[at + u];
      states[at + u] = h[u];
    }
  }
}

// The transposed recursion, backward in time: d_input_t = cotangent_t + keep_{t+1} d_input_{t+1}; d_h0 =
// keep_1 d_input_1.
void backward_block(const float* __restrict keep, const float* __restrict cotangent, float* __restrict d_input,
                    float* __restrict d_h0, int T, int H, int n) {
  float carried[BLOCK] = {};
  for (int t = T - 1; t >= 0; --t) {
    size_t at = (size_t)t * H;
    for (int u = 0; u < n; ++u) {
      carried[u] += cotangent[at + u];
      d_input[at + u] = carried[u];
      carried[u] *= keep[at + u];
    }
  }
  for (int u = 0; u < n; ++u) d_h0[u] = carried[u];
}

// fn(b, u0, n) for every block of units of every sequence, blocks split across threads
template <class Fn>
void for_blocks(int B, int H, const Fn& fn) {
  int per_row = (H + BLOCK - 1) / BLOCK, items = B * per_row;
  run_shares(thread_count(items, 1), items, 1, [&](int, int i0, int i1) {
    for (int item = i0; item < i1; ++item) {
      int b = item / per_row, u0 = item % per_row * BLOCK;
      fn(b, u0, std::min(BLOCK, H - u0));
    }
  });
}

}  // namespace

mx::array linear_recurrence(const mx::array& keep, const mx::array& input, const mx::array& h0,
                            mx::StreamOrDevice s) {
  int B = keep.shape(0), T = keep.shape(1), H = keep.shape(2);
  auto fn = [=](const std::vector<const float*>& in, const std::vector<float*>& out) {
    for_blocks(B, H, [&](int b, int u0, int n) {
      size_t row = (size_t)b * T * H + u0;
      forward_block(in[0] + row, in[1] + row, in[2] + (size_t)b * H + u0, out[0] + row, T, H, n);
    });
  };
  return cpu_primitive("LinearRecurrence", fn, {keep.shape()}, {keep, input, h0}, s)[0];
}

std::vector<mx::array> linear_recurrence_backward(const mx::array& keep, const mx::array& cotangent,
                                                  mx::StreamOrDevice s) {
  int B = keep.shape(0), T = keep.shape(1), H = keep.shape(2);
  auto fn = [=](const std::vector<const float*>& in, const std::vector<float*>& out) {
    for_blocks(B, H, [&](int b, int u0, int n) {
      size_t row = (size_t)b * T * H + u0;
      backward_block(in[0] + row, in[1] + row, out[0] + row, out[1] + (size_t)b * H + u0, T, H, n);
    });
  };
  return cpu_primitive("LinearRecurrenceBackward", fn, {keep.shape(), {B, H}}, {keep, cotangent}, s);
}

}  // namespace mlx_ddsp
