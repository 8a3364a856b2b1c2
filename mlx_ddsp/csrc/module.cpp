// Python bindings of mlx_ddsp's CPU kernels (built and loaded by mlx_ddsp/kernels.py).
#include <nanobind/nanobind.h>
#include <nanobind/stl/variant.h>
#include <nanobind/stl/vector.h>

#include "cpu_primitive.h"

namespace nb = nanobind;
using namespace mlx_ddsp;

NB_MODULE(_kernels, m) {
  m.doc() = "mlx_ddsp's CPU kernels as MLX operations (float32, row-major)";
  m.def("gru_forward", &gru_forward, nb::arg("x"), nb::arg("bhn"), nb::arg("wh"), nb::arg("h0"), nb::kw_only(),
        nb::arg("stream") = nb::none(),
        "[states (B, T, H), pre (B, T, 3H)]: GRU states and the gates' pre-activations [x_r + h Wr, x_z + h Wz, "
        "bhn + h Wn] from input projections x (B, T, 3H), bhn (H), Wh (3H, H), h0 (B, H).");
  m.def("gru_backward", &gru_backward, nb::arg("pre"), nb::arg("x"), nb::arg("previous"), nb::arg("cotangent"),
        nb::arg("wh"), nb::kw_only(), nb::arg("stream") = nb::none(),
        "[d_pre (B, T, 3H), d_xn (B, T, H), d_h0 (B, H)]: gradients of gru_forward's states.");
  m.def("layer_norm_leaky_relu", &layer_norm_leaky_relu, nb::arg("x"), nb::arg("weight"), nb::arg("bias"),
        nb::arg("eps"), nb::arg("slope"), nb::kw_only(), nb::arg("stream") = nb::none(),
        "[out, normed, inv_std]: leaky_relu(layer_norm(x) * weight + bias) over the last axis, the normalised x "
        "and 1 / std per row (..., 1).");
  m.def("layer_norm_leaky_relu_backward", &layer_norm_leaky_relu_backward, nb::arg("cotangent"), nb::arg("out"),
        nb::arg("normed"), nb::arg("inv_std"), nb::arg("weight"), nb::arg("slope"), nb::kw_only(),
        nb::arg("stream") = nb::none(), "[d_x, d_weight, d_bias] of layer_norm_leaky_relu's out.");
  m.def("harmonic_bank", &harmonic_bank, nb::arg("sin_theta"), nb::arg("cos_theta"), nb::arg("start"),
        nb::arg("end"), nb::kw_only(), nb::arg("stream") = nb::none(),
        "(B, S, hop): sum_k a_k sin(k theta) from sin and cos of theta (B, S, hop) and the amplitudes of harmonics "
        "1..K at each segment's start and one hop after its end, start and end (B, S, K).");
  m.def("harmonic_bank_amplitude_grads", &harmonic_bank_amplitude_grads, nb::arg("cotangent"), nb::arg("sin_theta"),
        nb::arg("cos_theta"), nb::arg("n_harmonics"), nb::kw_only(), nb::arg("stream") = nb::none(),
        "[d_start, d_end] (B, S, K) of harmonic_bank.");
  m.def("harmonic_bank_phase_grad", &harmonic_bank_phase_grad, nb::arg("cotangent"), nb::arg("cos_theta"),
        nb::arg("start"), nb::arg("end"), nb::kw_only(), nb::arg("stream") = nb::none(),
        "(B, S, hop): gradient of harmonic_bank with respect to the phase in cycles (theta = 2 pi phase).");
  m.def("linear_recurrence", &linear_recurrence, nb::arg("keep"), nb::arg("input"), nb::arg("h0"), nb::kw_only(),
        nb::arg("stream") = nb::none(), "(B, T, H) states h_t = keep_t * h_{t-1} + input_t from h0 (B, H).");
  m.def("linear_recurrence_backward", &linear_recurrence_backward, nb::arg("keep"), nb::arg("cotangent"),
        nb::kw_only(), nb::arg("stream") = nb::none(),
        "[d_input (B, T, H), d_h0 (B, H)] of linear_recurrence's states; d_keep = d_input * h_{t-1}.");
}
