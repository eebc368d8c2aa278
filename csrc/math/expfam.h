// Per-element KL(q || p) for factorized exponential families in location / log-scale form, and
// its gradient. One header for the CPU and CUDA kernels; formulas in ../shared/DESIGN.md, op 1.
#pragma once

#include "common/host_device.h"
#include "math/fast_exp.h"

namespace ivae::math {

enum class ExpFamily : int { Gaussian = 0, Laplace = 1 };

// dKL/d(q_loc, q_log_scale, p_loc, p_log_scale), each already multiplied by the upstream grad.
template <typename T>
struct KlGrad {
  T q_loc, q_log_scale, p_loc, p_log_scale;
};

// x e^-l with e^-l taken in two halves: e^-l alone underflows (simd_exp: to 0 below l ~ 707.5 in
// double, 86.5 in float) where its product with a huge x (|mq - mp| ~ 1e308) is an ordinary number.
template <typename T>
IVAE_HD T times_exp_neg(T x, T l) {
  const T half = simd_exp(T(-0.5) * l);
  return (x * half) * half;
}

// Gaussian: KL = (expm1(t) - t)/2 + z^2/2, t = 2 (lq - lp), z = (mq - mp) e^-lp.
// expm1(t) - t is the stable form of var_ratio - 1 - log(var_ratio).
template <typename T>
IVAE_HD T gaussian_kl(T mq, T lq, T mp, T lp) {
  const T t = T(2) * (lq - lp);
  const T z = times_exp_neg(mq - mp, lp);
  return T(0.5) * (simd_expm1(t) - t) + T(0.5) * (z * z);
}

template <typename T>
IVAE_HD KlGrad<T> gaussian_kl_grad(T mq, T lq, T mp, T lp, T g) {
  const T inv_scale_p = simd_exp(-lp);
  const T z = times_exp_neg(mq - mp, lp);
  const T em1 = simd_expm1(T(2) * (lq - lp));
  const T d_loc = g * (z * inv_scale_p);
  return {d_loc, g * em1, -d_loc, -g * (em1 + z * z)};
}

// Laplace: KL = lp - lq + |D|/bp + (bq/bp) e^(-|D|/bq) - 1, D = mq - mp; u = |D|/bq, v = |D|/bp,
// w = lq - lp - u (so (bq/bp) e^-u = e^w). Near q = p (w >= -1): (v - u) + expm1(w) - w, which keeps
// the small differences. Far from it (w < -1): v + (lp - lq) + expm1(w), where u cancels exactly: in
// the first form a huge u (or u = inf, e^-lq overflowing) would swallow lp - lq or give inf - inf.
template <typename T>
IVAE_HD T laplace_kl(T mq, T lq, T mp, T lp) {
  const T diff = mq - mp;
  const T dist = diff < T(0) ? -diff : diff;
  const T u = times_exp_neg(dist, lq);
  const T v = times_exp_neg(dist, lp);
  const T w = (lq - lp) - u;
  const T em1 = simd_expm1(w);
  return w < T(-1) ? v + (lp - lq) + em1 : (v - u) + (em1 - w);
}

template <typename T>
IVAE_HD KlGrad<T> laplace_kl_grad(T mq, T lq, T mp, T lp, T g) {
  const T diff = mq - mp;
  const T dist = diff < T(0) ? -diff : diff;
  const T sign = diff > T(0) ? T(1) : (diff < T(0) ? T(-1) : T(0));  // subgradient 0 at D = 0
  const T inv_scale_p = simd_exp(-lp);
  const T u = times_exp_neg(dist, lq);
  const T v = times_exp_neg(dist, lp);
  const T em1 = simd_expm1((lq - lp) - u);
  const T ratio = em1 + T(1);  // (bq/bp) e^-u
  // (1/bp − e^-u/bp) and e^w·u written so that u = inf (e^-lq overflowing) gives their limits, not NaN
  const T d_loc = g * sign * (inv_scale_p * -simd_expm1(-u));
  const T ratio_u = ratio == T(0) ? T(0) : ratio * u;
  return {d_loc, g * (em1 + ratio_u), -d_loc, -g * (em1 + v)};
}

template <ExpFamily F, typename T>
IVAE_HD T expfam_kl_value(T mq, T lq, T mp, T lp) {
  if constexpr (F == ExpFamily::Gaussian) {
    return gaussian_kl(mq, lq, mp, lp);
  } else {
    return laplace_kl(mq, lq, mp, lp);
  }
}

template <ExpFamily F, typename T>
IVAE_HD KlGrad<T> expfam_kl_grad(T mq, T lq, T mp, T lp, T g) {
  if constexpr (F == ExpFamily::Gaussian) {
    return gaussian_kl_grad(mq, lq, mp, lp, g);
  } else {
    return laplace_kl_grad(mq, lq, mp, lp, g);
  }
}

}  // namespace ivae::math
