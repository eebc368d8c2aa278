// Per-pair math of imq_mmd (DESIGN.md op 5): the inverse multiquadric kernel summed over scales,
// as a function of the squared distance r, and the weight its gradient needs. One header for the
// CPU loops (cpu/imq_mmd_tiles.cpp) and the CUDA kernels (cuda/imq_mmd.cuh).
//
//   k(r) = Σ_s C_s / (C_s + r)          w(r) = -dk/dr = Σ_s C_s / (C_s + r)²
//
// so that ∂k(a, b)/∂a = -2 (a - b) w(‖a - b‖²). One division per scale: v_s = C_s / (C_s + r),
// and w = Σ v_s² / C_s with the reciprocals 1/C_s precomputed. Every r in [0, inf] is exact to
// rounding (r = inf gives k = w = 0); NaN stays NaN.
#pragma once

#include "common/host_device.h"

namespace ivae::math {

// The scales as the kernels read them: C_s and 1/C_s, `count` of each.
template <typename T>
struct ImqScales {
  int count;
  const T* scale;      // C_s
  const T* inv_scale;  // 1 / C_s
};

// k(r) and, with kWeight, w(r). No branches: the loops that call it vectorise over pairs.
template <bool kWeight, typename T>
IVAE_HD void imq_value_weight(T r, const ImqScales<T>& s, T& k, T& w) {
  T value = 0, weight = 0;
  for (int c = 0; c < s.count; ++c) {
    const T v = s.scale[c] / (s.scale[c] + r);
    value += v;
    if constexpr (kWeight) weight += (v * s.inv_scale[c]) * v;
  }
  k = value;
  if constexpr (kWeight) w = weight;
}

// The estimator's weight of one unordered pair {i, j} of the pooled samples z = [x; y] when the
// sum runs over i < j only: within x 2/(n(n-1)), within y 2/(m(m-1)), across -2/(nm), so that
// MMD² = Σ_{i<j} pair_weight · k(z_i, z_j).
struct ImqPairWeights {
  double xx, yy, xy;
};

IVAE_HD ImqPairWeights imq_pair_weights(long long n, long long m) {
  const double dn = static_cast<double>(n), dm = static_cast<double>(m);
  return {2.0 / (dn * (dn - 1.0)), 2.0 / (dm * (dm - 1.0)), -2.0 / (dn * dm)};
}

}  // namespace ivae::math
