// Softplus and its derivatives, σ(a) = log(1 + e^a), evaluated stably and branch-free so CPU
// loops vectorise (see fast_exp.h). One header for the CPU and CUDA kernels.
#pragma once

#include "common/host_device.h"
#include "math/fast_exp.h"

namespace ivae::math {

// log(1 + y) for y in [0, 1]: 2 atanh(s) with s = y / (2 + y) <= 1/3, by its odd series in s
// (16 terms in double, 7 in float: truncation below half an ulp). No cancellation for small y.
IVAE_HD double log1p_unit(double y) {
  const double s = y / (2.0 + y);
  const double s2 = s * s;
  double p = 1.0 / 33.0;
  p = p * s2 + 1.0 / 31.0;
  p = p * s2 + 1.0 / 29.0;
  p = p * s2 + 1.0 / 27.0;
  p = p * s2 + 1.0 / 25.0;
  p = p * s2 + 1.0 / 23.0;
  p = p * s2 + 1.0 / 21.0;
  p = p * s2 + 1.0 / 19.0;
  p = p * s2 + 1.0 / 17.0;
  p = p * s2 + 1.0 / 15.0;
  p = p * s2 + 1.0 / 13.0;
  p = p * s2 + 1.0 / 11.0;
  p = p * s2 + 1.0 / 9.0;
  p = p * s2 + 1.0 / 7.0;
  p = p * s2 + 1.0 / 5.0;
  p = p * s2 + 1.0 / 3.0;
  return 2.0 * s * (1.0 + s2 * p);
}

IVAE_HD float log1p_unit(float y) {
  const float s = y / (2.0f + y);
  const float s2 = s * s;
  float p = 1.0f / 15.0f;
  p = p * s2 + 1.0f / 13.0f;
  p = p * s2 + 1.0f / 11.0f;
  p = p * s2 + 1.0f / 9.0f;
  p = p * s2 + 1.0f / 7.0f;
  p = p * s2 + 1.0f / 5.0f;
  p = p * s2 + 1.0f / 3.0f;
  return 2.0f * s * (1.0f + s2 * p);
}

template <typename T>
struct SoftplusParts {
  T value;  // σ(a) = max(a, 0) + log1p(e^-|a|)
  T d1;     // σ'(a) = sigmoid(a)
  T d2;     // σ''(a) = σ'(1 - σ') = e^-|a| / (1 + e^-|a|)^2
};

template <typename T>
IVAE_HD SoftplusParts<T> softplus_parts(T a) {
  const T abs_a = a < T(0) ? -a : a;
  const T e = simd_exp(-abs_a);  // in (0, 1]: nothing overflows
  const T inv = T(1) / (T(1) + e);
  SoftplusParts<T> out;
  out.value = (a > T(0) ? a : T(0)) + log1p_unit(e);
  out.d1 = a >= T(0) ? inv : e * inv;
  out.d2 = e * inv * inv;
  return out;
}

// σ'''(a) = σ''(a) (1 - 2 σ'(a)).
template <typename T>
IVAE_HD T softplus_d3(const SoftplusParts<T>& s) {
  return s.d2 * (T(1) - T(2) * s.d1);
}

}  // namespace ivae::math
