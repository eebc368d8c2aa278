// Elementwise steps of the ICNN map and of its analytic backward (DESIGN.md op 2): what the
// CPU loops and CUDA kernels fuse around the GEMMs. One header for both.
#pragma once

#include "common/host_device.h"
#include "math/softplus.h"

namespace ivae::math {

template <typename T>
struct IcnnLayerForward {
  T a;   // pre-activation a_k = (GEMM result) + b_k
  T z;   // σ(a_k)
  T d1;  // σ'(a_k)
};

template <typename T>
IVAE_HD IcnnLayerForward<T> icnn_layer_forward(T gemm_out, T bias) {
  const T a = gemm_out + bias;
  const SoftplusParts<T> s = softplus_parts(a);
  return {a, s.value, s.d1};
}

// Reverse step through z_k = σ(a_k) and its tangent ż_k = σ'(a_k) ȧ_k, given the adjoints
// z̄_k and ż̄_k: ǡ_k = ż̄_k σ'(a_k),  ā_k = ż̄_k ȧ_k σ''(a_k) + z̄_k σ'(a_k).
template <typename T>
struct IcnnLayerAdjoint {
  T adot_bar;
  T a_bar;
};

template <typename T>
IVAE_HD IcnnLayerAdjoint<T> icnn_layer_adjoint(T zdot_bar, T z_bar, T adot, T d1, T d2) {
  return {zdot_bar * d1, zdot_bar * adot * d2 + z_bar * d1};
}

}  // namespace ivae::math
