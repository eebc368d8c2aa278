// Per-pair math of aggregate_log_q (DESIGN.md op 4): the log-density of one posterior component
// q(z_k | x_j) in the form the kernels stream, its derivatives, and the (max, sum) pair of an
// online logsumexp. One header for the CPU and CUDA kernels.
//
// A component is stored as (loc, inv_scale = e^-ℓ, offset = -ℓ - log_norm), so that
//   log q(z | loc, ℓ) = offset - ½ r²   (Gaussian, log_norm = ½ log 2π)
//                     = offset - |r|    (Laplace,  log_norm = log 2),   r = (z - loc) e^-ℓ.
#pragma once

#include <cmath>

#include "common/host_device.h"
#include "math/expfam.h"
#include "math/fast_exp.h"

namespace ivae::math {

// log of the family's normalising constant at unit scale.
template <ExpFamily F>
IVAE_HD double component_log_norm() {
  if constexpr (F == ExpFamily::Gaussian) {
    return 0.91893853320467274178;  // ½ log 2π
  } else {
    return 0.69314718055994530942;  // log 2
  }
}

template <ExpFamily F, typename T>
IVAE_HD T component_log_density(T z, T loc, T inv_scale, T offset) {
  const T r = (z - loc) * inv_scale;
  if constexpr (F == ExpFamily::Gaussian) {
    return offset - T(0.5) * (r * r);
  } else {
    return offset - (r < T(0) ? -r : r);
  }
}

// log q of one component with ∂ log q / ∂z (= -∂/∂loc) and ∂ log q / ∂ℓ.
template <typename T>
struct ComponentValueGrad {
  T value;
  T d_z;
  T d_log_scale;
};

template <ExpFamily F, typename T>
IVAE_HD ComponentValueGrad<T> component_log_density_grad(T z, T loc, T inv_scale, T offset) {
  const T r = (z - loc) * inv_scale;
  if constexpr (F == ExpFamily::Gaussian) {
    return {offset - T(0.5) * (r * r), -r * inv_scale, r * r - T(1)};
  } else {
    // subgradient 0 at z = loc, as torch's abs
    const T sign = r > T(0) ? T(1) : (r < T(0) ? T(-1) : T(0));
    const T abs_r = sign * r;
    return {offset - abs_r, -sign * inv_scale, abs_r - T(1)};
  }
}

// weight · derivative, 0 for a zero weight: a component whose softmax weight underflowed to 0
// contributes nothing, also where its derivative overflowed ((z - loc)/σ² = inf: 0·inf = NaN).
// A NaN weight still gives NaN.
template <typename T>
IVAE_HD T weighted(T weight, T derivative) {
  return weight == T(0) ? T(0) : weight * derivative;
}

// Online logsumexp over a stream of values: the value is max + log(sum), sum = Σ e^(v - max).
// An empty stream is (-inf, 0). NaN in the stream makes the sum NaN.
template <typename T>
struct LogSumExp {
  T max;
  T sum;
};

// Merges a part (its own max and sum) into `acc`. Two -inf maxima stay (-inf, 0) instead of
// producing e^(-inf + inf).
template <typename T>
IVAE_HD void lse_merge(LogSumExp<T>& acc, T part_max, T part_sum) {
  const T new_max = part_max > acc.max ? part_max : acc.max;
  if (!(new_max > -INFINITY)) {  // both empty (or NaN: keep it visible in the sum)
    acc.sum = acc.sum + part_sum;
    acc.max = new_max;
    return;
  }
  acc.sum = acc.sum * simd_exp_bounded(acc.max - new_max) + part_sum * simd_exp_bounded(part_max - new_max);
  acc.max = new_max;
}

}  // namespace ivae::math
