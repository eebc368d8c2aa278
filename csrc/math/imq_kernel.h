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
  bool paired;         // imq_pairable: the loops may use imq_value_weight_paired
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

// The same with one division per two scales (divisions bound the loop): with a = C_s + r and
// b = C_t + r, q = 1/(a b) gives 1/a = q b and 1/b = q a. Valid only for the scales
// imq_pairable accepts: then a b neither underflows nor overflows for r <= imq_pair_cap<T>, and
// pairs further apart (r > cap, kernel <= S C_max / cap, 1e-11 of its maximum or less) count as 0.
template <typename T>
struct ImqPairLimits;
template <>
struct ImqPairLimits<float> {
  static constexpr double kMinScale = 1e-12, kMaxScale = 1e4, kCap = 1e15;
};
template <>
struct ImqPairLimits<double> {
  static constexpr double kMinScale = 1e-100, kMaxScale = 1e50, kCap = 1e100;
};

template <typename T>
inline bool imq_pairable(const double* scales, int count) {
  for (int c = 0; c < count; ++c) {
    if (!(scales[c] >= ImqPairLimits<T>::kMinScale && scales[c] <= ImqPairLimits<T>::kMaxScale)) return false;
  }
  return true;
}

template <bool kWeight, typename T>
IVAE_HD void imq_value_weight_paired(T r, const ImqScales<T>& s, T& k, T& w) {
  const T cap = static_cast<T>(ImqPairLimits<T>::kCap);
  const bool far = r > cap;  // false for NaN: it propagates
  const T rc = far ? cap : r;
  T value = 0, weight = 0;
  int c = 0;
  for (; c + 1 < s.count; c += 2) {
    const T a = s.scale[c] + rc, b = s.scale[c + 1] + rc;
    const T q = T(1) / (a * b);
    const T va = s.scale[c] * (q * b), vb = s.scale[c + 1] * (q * a);
    value += va + vb;
    if constexpr (kWeight) weight += (va * s.inv_scale[c]) * va + (vb * s.inv_scale[c + 1]) * vb;
  }
  if (c < s.count) {  // an odd count: the last scale alone
    const T v = s.scale[c] / (s.scale[c] + rc);
    value += v;
    if constexpr (kWeight) weight += (v * s.inv_scale[c]) * v;
  }
  k = far ? T(0) : value;
  if constexpr (kWeight) w = far ? T(0) : weight;
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
