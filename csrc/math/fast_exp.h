// exp and expm1 written as straight-line arithmetic (no libm call, no branch), so that compilers
// vectorise the loops that call them, and accurate to a few ulp over the whole range.
// Method: x = k ln2 + r with |r| <= ln2/2 (Cody-Waite split of ln2); expm1(r) by its Taylor
// series (degree 13 for double, 7 for float: truncation below half an ulp);
// exp(x) = 2^k (1 + expm1(r)), expm1(x) = 2^k expm1(r) + (2^k - 1).
// Range: NaN propagates; exp underflows to 0 a little early (below about -707.5 in double and
// -86.5 in float, where the result is under 2^-1020 resp. 2^-124) and overflows to +inf where the
// true value does.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/host_device.h"

namespace ivae::math {

template <typename T>
struct ExpTraits;

template <>
struct ExpTraits<double> {
  using Bits = uint64_t;
  static constexpr int kMantissaBits = 52;
  static constexpr Bits kBias = 1023;
  static constexpr double kLog2e = 1.4426950408889634;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;  // trailing zeros: k*kLn2Hi exact
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;
  static constexpr double kShifter = 6755399441055744.0;  // 1.5 * 2^52: adding it rounds to int
  static constexpr double kMinArg = -707.5;  // keeps 2^(k-1) a normal number
  static constexpr double kMaxArg = 710.0;   // e^710 is already +inf; keeps k <= 1024
  static constexpr double kMaxK = 1024.0;    // 2^k itself overflows: expm1 = exp - 1 there
};

template <>
struct ExpTraits<float> {
  using Bits = uint32_t;
  static constexpr int kMantissaBits = 23;
  static constexpr Bits kBias = 127;
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;
  static constexpr float kLn2Lo = -2.12194440e-4f;
  static constexpr float kShifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr float kMinArg = -86.5f;
  static constexpr float kMaxArg = 89.0f;
  static constexpr float kMaxK = 128.0f;
};

template <typename To, typename From>
IVAE_HD To bit_cast_value(From from) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast_value: sizes differ");
  To to;
  memcpy(&to, &from, sizeof(To));
  return to;
}

// expm1(r) for |r| <= ln2/2 by Horner's rule on the Taylor series.
IVAE_HD double expm1_reduced(double r) {
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  return r + (r * r) * p;
}

IVAE_HD float expm1_reduced(float r) {
  float p = 1.0f / 5040.0f;  // 1/7!
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  return r + (r * r) * p;
}

// Both exp(x) and expm1(x) share the reduction; callers pick what they need and the compiler
// drops the rest.
template <typename T>
struct ExpParts {
  T exp;
  T expm1;
};

template <typename T>
IVAE_HD ExpParts<T> exp_parts(T x) {
  using Tr = ExpTraits<T>;
  using Bits = typename Tr::Bits;
  const T xc = x < Tr::kMinArg ? T(Tr::kMinArg) : (x > Tr::kMaxArg ? T(Tr::kMaxArg) : x);  // NaN passes
  const T shifted = xc * Tr::kLog2e + Tr::kShifter;
  const T k = shifted - Tr::kShifter;
  const T r = (xc - k * Tr::kLn2Hi) - k * Tr::kLn2Lo;
  const T p = expm1_reduced(r);
  // The low bits of `shifted` hold k; build 2^(k-1) (always normal here) from them.
  const Bits k_bits = bit_cast_value<Bits>(shifted) - bit_cast_value<Bits>(T(Tr::kShifter));
  const T half_scale = bit_cast_value<T>((k_bits + Tr::kBias - 1) << Tr::kMantissaBits);
  const T scale = T(2) * half_scale;  // 2^k; +inf only when k == kMaxK
  ExpParts<T> out;
  out.exp = x < Tr::kMinArg ? T(0) : T(2) * (half_scale * (T(1) + p));
  const T expm1_scaled = scale * p + (scale - T(1));
  out.expm1 = k >= T(Tr::kMaxK) ? out.exp - T(1) : expm1_scaled;
  return out;
}

template <typename T>
IVAE_HD T simd_exp(T x) {
  return exp_parts(x).exp;
}

template <typename T>
IVAE_HD T simd_expm1(T x) {
  return exp_parts(x).expm1;
}

// e^x for the exponent of a softmax weight or a logsumexp term (x <= 0 up to rounding): the
// reduction of exp_parts without its overflow and expm1 cases, a few operations fewer in the
// loops that take one exp per pair and dimension. 0 below kMinArg; NaN propagates; x above
// kMaxArg - 1 is taken as kMaxArg - 1 (a large finite value, never inf or garbage).
template <typename T>
IVAE_HD T simd_exp_bounded(T x) {
  using Tr = ExpTraits<T>;
  using Bits = typename Tr::Bits;
  const bool underflow = x < Tr::kMinArg;
  const T high = T(Tr::kMaxArg - 1);
  const T xc = underflow ? T(Tr::kMinArg) : (x > high ? high : x);  // NaN passes
  const T shifted = xc * Tr::kLog2e + Tr::kShifter;
  const T k = shifted - Tr::kShifter;
  const T r = (xc - k * Tr::kLn2Hi) - k * Tr::kLn2Lo;
  const Bits k_bits = bit_cast_value<Bits>(shifted) - bit_cast_value<Bits>(T(Tr::kShifter));
  const T scale = bit_cast_value<T>((k_bits + Tr::kBias) << Tr::kMantissaBits);  // 2^k, a normal number here
  return underflow ? T(0) : scale + scale * expm1_reduced(r);
}

}  // namespace ivae::math
