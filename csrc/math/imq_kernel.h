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

// One scale's terms added to k and (kWeight) w: v = C/(C + r), v²/C. No branches: the loops
// that call these vectorise over pairs.
template <bool kWeight, typename T>
IVAE_HD void imq_add_scale(T r, T scale, T inv_scale, T& k, T& w) {
  const T v = scale / (scale + r);
  k += v;
  if constexpr (kWeight) w += (v * inv_scale) * v;
}

// Two scales with one division (divisions bound the loops): with a = C_s + r and b = C_t + r,
// q = 1/(a b) gives 1/a = q b and 1/b = q a. Valid only for the scales imq_pairable accepts and
// r <= imq_pair_cap (see imq_value_weight_paired): then a b neither underflows nor overflows.
template <bool kWeight, typename T>
IVAE_HD void imq_add_scale_pair(T r, T scale_a, T inv_a, T scale_b, T inv_b, T& k, T& w) {
  const T a = scale_a + r, b = scale_b + r;
  const T q = T(1) / (a * b);
  const T va = scale_a * (q * b), vb = scale_b * (q * a);
  k += va + vb;
  if constexpr (kWeight) w += (va * inv_a) * va + (vb * inv_b) * vb;
}

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

// Whether every scale lies in the paired evaluator's range for T.
template <typename T>
inline bool imq_pairable(const double* scales, int count) {
  for (int c = 0; c < count; ++c) {
    if (!(scales[c] >= ImqPairLimits<T>::kMinScale && scales[c] <= ImqPairLimits<T>::kMaxScale)) return false;
  }
  return true;
}

// Pairs further apart than the cap (r > cap: kernel <= S C_max / cap, 1e-11 of its maximum or
// less in float32) count as 0 in the paired evaluator; the pair terms see r capped so that the
// products stay finite. False for NaN: it propagates.
template <typename T>
IVAE_HD bool imq_beyond_pair_cap(T r) {
  return r > static_cast<T>(ImqPairLimits<T>::kCap);
}
template <typename T>
IVAE_HD T imq_pair_capped(T r) {
  const T cap = static_cast<T>(ImqPairLimits<T>::kCap);
  return r > cap ? cap : r;
}

// k(r) and, with kWeight, w(r) of one pair, one division per scale (the CUDA kernels' form).
template <bool kWeight, typename T>
IVAE_HD void imq_value_weight(T r, const ImqScales<T>& s, T& k, T& w) {
  T value = 0, weight = 0;
  for (int c = 0; c < s.count; ++c) imq_add_scale<kWeight>(r, s.scale[c], s.inv_scale[c], value, weight);
  k = value;
  if constexpr (kWeight) w = weight;
}

// The same with one division per two scales, for imq_pairable scales.
template <bool kWeight, typename T>
IVAE_HD void imq_value_weight_paired(T r, const ImqScales<T>& s, T& k, T& w) {
  const T rc = imq_pair_capped(r);
  T value = 0, weight = 0;
  int c = 0;
  for (; c + 1 < s.count; c += 2) {
    imq_add_scale_pair<kWeight>(rc, s.scale[c], s.inv_scale[c], s.scale[c + 1], s.inv_scale[c + 1], value, weight);
  }
  if (c < s.count) imq_add_scale<kWeight>(rc, s.scale[c], s.inv_scale[c], value, weight);
  const bool far = imq_beyond_pair_cap(r);
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
