#include "cpu/aggregate_log_q_tiles.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/cpu_clones.h"

namespace ivae::cpu {
namespace {

using math::ExpFamily;
using math::LogSumExp;

constexpr int kRows = 4;         // codes sharing each load of a component (the loops name 0..3)
constexpr int64_t kTile = 128;   // components per tile: the tile buffers stay in L1

// Merges the logsumexp of v[0..n) into acc: the tile's max, then one exp per value.
template <typename T>
IVAE_CLONE_INLINE void merge_tile(const T* __restrict__ v, int64_t n, LogSumExp<T>& acc) {
  T m = -INFINITY;
#pragma omp simd reduction(max : m)
  for (int64_t j = 0; j < n; ++j) m = v[j] > m ? v[j] : m;
  if (!(m > -INFINITY)) {  // every value -inf (an empty contribution) or NaN (keep it)
    for (int64_t j = 0; j < n; ++j) {
      if (v[j] != v[j]) acc.sum = v[j];
    }
    return;
  }
  T s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < n; ++j) s += math::simd_exp_bounded(v[j] - m);
  math::lse_merge(acc, m, s);
}

template <ExpFamily F, bool kMarginals, typename T>
IVAE_CLONE_INLINE void forward_group(const ComponentTable<T>& tab, const T* z, int64_t j_begin,
                                     int64_t j_end, LogSumExp<T>* joint, LogSumExp<T>* marginals) {
  const int64_t d = tab.dim, N = tab.components;
  alignas(64) T total[kRows][kTile];
  alignas(64) T value[kRows][kTile];
  for (int64_t jt = j_begin; jt < j_end; jt += kTile) {
    const int64_t n = std::min(kTile, j_end - jt);
    for (int r = 0; r < kRows; ++r) std::fill(total[r], total[r] + n, T(0));
    for (int64_t k = 0; k < d; ++k) {
      const T* __restrict__ loc = tab.loc + k * N + jt;
      const T* __restrict__ inv = tab.inv_scale + k * N + jt;
      const T* __restrict__ off = tab.offset + k * N + jt;
      const T z0 = z[k], z1 = z[d + k], z2 = z[2 * d + k], z3 = z[3 * d + k];
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        const T l = loc[j], s = inv[j], o = off[j];
        const T v0 = math::component_log_density<F>(z0, l, s, o);
        const T v1 = math::component_log_density<F>(z1, l, s, o);
        const T v2 = math::component_log_density<F>(z2, l, s, o);
        const T v3 = math::component_log_density<F>(z3, l, s, o);
        total[0][j] += v0;
        total[1][j] += v1;
        total[2][j] += v2;
        total[3][j] += v3;
        if constexpr (kMarginals) {
          value[0][j] = v0;
          value[1][j] = v1;
          value[2][j] = v2;
          value[3][j] = v3;
        }
      }
      if constexpr (kMarginals) {
        for (int r = 0; r < kRows; ++r) merge_tile(value[r], n, marginals[r * d + k]);
      }
    }
    for (int r = 0; r < kRows; ++r) merge_tile(total[r], n, joint[r]);
  }
}

template <ExpFamily F, bool kMarginals, typename T>
IVAE_CLONE_INLINE void forward_block(const ComponentTable<T>& tab, const AggregateForwardBlock<T>& b) {
  const int64_t d = tab.dim;
  int64_t r = 0;
  for (; r + kRows <= b.rows; r += kRows) {
    forward_group<F, kMarginals>(tab, b.z + r * d, b.j_begin, b.j_end, b.joint + r,
                                 kMarginals ? b.marginals + r * d : nullptr);
  }
  if (r == b.rows) return;
  // The last rows, padded to a full group with copies of the last row (results dropped).
  std::vector<T> z(kRows * d);
  std::vector<LogSumExp<T>> joint(kRows), marginals(kMarginals ? kRows * d : 0);
  for (int p = 0; p < kRows; ++p) {
    const int64_t src = std::min(r + p, b.rows - 1);
    std::copy(b.z + src * d, b.z + (src + 1) * d, z.data() + p * d);
    joint[p] = b.joint[src];
    if (kMarginals) std::copy(b.marginals + src * d, b.marginals + (src + 1) * d, marginals.data() + p * d);
  }
  forward_group<F, kMarginals>(tab, z.data(), b.j_begin, b.j_end, joint.data(), marginals.data());
  for (int64_t p = 0; r + p < b.rows; ++p) {
    b.joint[r + p] = joint[p];
    if (kMarginals) std::copy(marginals.data() + p * d, marginals.data() + (p + 1) * d, b.marginals + (r + p) * d);
  }
}

// One code row's share of a component pair: its weight (joint and/or marginal softmax weight
// times the upstream gradients) times the derivatives of log q.
template <ExpFamily F, bool kJoint, bool kMarginals, typename T>
IVAE_CLONE_INLINE void pair_adjoint(T z, T l, T s, T o, T joint_weight, T grad_marginal, T shift,
                                    T& grad_z, T& grad_loc, T& grad_log_scale) {
  const math::ComponentValueGrad<T> c = math::component_log_density_grad<F>(z, l, s, o);
  T w = kJoint ? joint_weight : T(0);
  if constexpr (kMarginals) w += grad_marginal * math::simd_exp_bounded(c.value - shift);
  const T wz = math::weighted(w, c.d_z);
  grad_z += wz;
  grad_loc -= wz;
  grad_log_scale += math::weighted(w, c.d_log_scale);
}

// Rows' pointers for one group of kRows codes (all non-null; zeros where no gradient flows).
template <typename T>
struct GroupRows {
  const T* z;                 // [kRows, d]
  const T* log_qz;            // [kRows]
  const T* grad_log_qz;       // [kRows] (kJoint)
  const T* log_qz_marginals;  // [kRows, d] (kMarginals)
  const T* grad_marginals;    // [kRows, d] (kMarginals)
  T* grad_z;                  // [kRows, d]
};

template <ExpFamily F, bool kJoint, bool kMarginals, typename T>
IVAE_CLONE_INLINE void backward_group(const ComponentTable<T>& tab, const GroupRows<T>& g, int64_t j_begin,
                                      int64_t j_end, T log_n, T* grad_loc_t, T* grad_log_scale_t,
                                      T* discard /*[2, kTile]*/) {
  const int64_t d = tab.dim, N = tab.components;
  alignas(64) T weight[kRows][kTile];  // grad_log_qz_r times the softmax weight of (r, j)
  for (int64_t jt = j_begin; jt < j_end; jt += kTile) {
    const int64_t n = std::min(kTile, j_end - jt);
    if constexpr (kJoint) {
      for (int r = 0; r < kRows; ++r) std::fill(weight[r], weight[r] + n, T(0));
      for (int64_t k = 0; k < d; ++k) {
        const T* __restrict__ loc = tab.loc + k * N + jt;
        const T* __restrict__ inv = tab.inv_scale + k * N + jt;
        const T* __restrict__ off = tab.offset + k * N + jt;
        const T z0 = g.z[k], z1 = g.z[d + k], z2 = g.z[2 * d + k], z3 = g.z[3 * d + k];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) {
          const T l = loc[j], s = inv[j], o = off[j];
          weight[0][j] += math::component_log_density<F>(z0, l, s, o);
          weight[1][j] += math::component_log_density<F>(z1, l, s, o);
          weight[2][j] += math::component_log_density<F>(z2, l, s, o);
          weight[3][j] += math::component_log_density<F>(z3, l, s, o);
        }
      }
      for (int r = 0; r < kRows; ++r) {
        const T shift = log_n + g.log_qz[r];
        const T upstream = g.grad_log_qz[r];
        T* __restrict__ w = weight[r];
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) w[j] = upstream * math::simd_exp_bounded(w[j] - shift);
      }
    }
    for (int64_t k = 0; k < d; ++k) {
      const T* __restrict__ loc = tab.loc + k * N + jt;
      const T* __restrict__ inv = tab.inv_scale + k * N + jt;
      const T* __restrict__ off = tab.offset + k * N + jt;
      T* __restrict__ gl = grad_loc_t != nullptr ? grad_loc_t + k * N + jt : discard;
      T* __restrict__ gs = grad_log_scale_t != nullptr ? grad_log_scale_t + k * N + jt : discard + kTile;
      const T z0 = g.z[k], z1 = g.z[d + k], z2 = g.z[2 * d + k], z3 = g.z[3 * d + k];
      T gm0 = 0, gm1 = 0, gm2 = 0, gm3 = 0, sh0 = 0, sh1 = 0, sh2 = 0, sh3 = 0;
      if constexpr (kMarginals) {
        gm0 = g.grad_marginals[k], gm1 = g.grad_marginals[d + k];
        gm2 = g.grad_marginals[2 * d + k], gm3 = g.grad_marginals[3 * d + k];
        sh0 = log_n + g.log_qz_marginals[k], sh1 = log_n + g.log_qz_marginals[d + k];
        sh2 = log_n + g.log_qz_marginals[2 * d + k], sh3 = log_n + g.log_qz_marginals[3 * d + k];
      }
      T a0 = 0, a1 = 0, a2 = 0, a3 = 0;
#pragma omp simd reduction(+ : a0, a1, a2, a3)
      for (int64_t j = 0; j < n; ++j) {
        const T l = loc[j], s = inv[j], o = off[j];
        T acc_loc = 0, acc_log_scale = 0;
        pair_adjoint<F, kJoint, kMarginals>(z0, l, s, o, weight[0][j], gm0, sh0, a0, acc_loc, acc_log_scale);
        pair_adjoint<F, kJoint, kMarginals>(z1, l, s, o, weight[1][j], gm1, sh1, a1, acc_loc, acc_log_scale);
        pair_adjoint<F, kJoint, kMarginals>(z2, l, s, o, weight[2][j], gm2, sh2, a2, acc_loc, acc_log_scale);
        pair_adjoint<F, kJoint, kMarginals>(z3, l, s, o, weight[3][j], gm3, sh3, a3, acc_loc, acc_log_scale);
        gl[j] += acc_loc;
        gs[j] += acc_log_scale;
      }
      g.grad_z[k] += a0;
      g.grad_z[d + k] += a1;
      g.grad_z[2 * d + k] += a2;
      g.grad_z[3 * d + k] += a3;
    }
  }
}

template <ExpFamily F, bool kJoint, bool kMarginals, typename T>
IVAE_CLONE_INLINE void backward_block(const ComponentTable<T>& tab, const AggregateBackwardBlock<T>& b) {
  const int64_t d = tab.dim;
  std::vector<T> discard(2 * kTile);
  // Padded copies for a last partial group, and a grad_z sink when none is wanted.
  std::vector<T> z(kRows * d), log_qz(kRows), grad_log_qz(kRows, T(0)), log_qm(kRows * d),
      grad_marginals(kRows * d, T(0)), grad_z(kRows * d, T(0));
  for (int64_t r = 0; r < b.rows; r += kRows) {
    GroupRows<T> g;
    const bool full = r + kRows <= b.rows;
    if (full) {
      g = {b.z + r * d, b.log_qz + r,
           kJoint ? b.grad_log_qz + r : nullptr,
           kMarginals ? b.log_qz_marginals + r * d : nullptr,
           kMarginals ? b.grad_marginals + r * d : nullptr,
           b.grad_z != nullptr ? b.grad_z + r * d : grad_z.data()};
    } else {
      // Copies of the last row with zero upstream gradients: they add nothing.
      for (int p = 0; p < kRows; ++p) {
        const int64_t src = std::min(r + p, b.rows - 1);
        const bool real = r + p < b.rows;
        std::copy(b.z + src * d, b.z + (src + 1) * d, z.data() + p * d);
        log_qz[p] = b.log_qz[src];
        if (kJoint) grad_log_qz[p] = real ? b.grad_log_qz[src] : T(0);
        if (kMarginals) {
          std::copy(b.log_qz_marginals + src * d, b.log_qz_marginals + (src + 1) * d, log_qm.data() + p * d);
          for (int64_t k = 0; k < d; ++k) grad_marginals[p * d + k] = real ? b.grad_marginals[src * d + k] : T(0);
        }
        if (b.grad_z != nullptr && real) std::copy(b.grad_z + src * d, b.grad_z + (src + 1) * d, grad_z.data() + p * d);
      }
      g = {z.data(), log_qz.data(), grad_log_qz.data(), log_qm.data(), grad_marginals.data(), grad_z.data()};
    }
    backward_group<F, kJoint, kMarginals>(tab, g, b.j_begin, b.j_end, b.log_components, b.grad_loc_t,
                                          b.grad_log_scale_t, discard.data());
    if (!full && b.grad_z != nullptr) {
      std::copy(grad_z.data(), grad_z.data() + (b.rows - r) * d, b.grad_z + r * d);
    }
  }
}

template <typename T>
IVAE_CLONE_INLINE void forward_dispatch(ExpFamily family, const ComponentTable<T>& tab,
                                        const AggregateForwardBlock<T>& b) {
  const bool marginals = b.marginals != nullptr;
  if (family == ExpFamily::Gaussian) {
    marginals ? forward_block<ExpFamily::Gaussian, true>(tab, b) : forward_block<ExpFamily::Gaussian, false>(tab, b);
  } else {
    marginals ? forward_block<ExpFamily::Laplace, true>(tab, b) : forward_block<ExpFamily::Laplace, false>(tab, b);
  }
}

template <ExpFamily F, typename T>
IVAE_CLONE_INLINE void backward_family(const ComponentTable<T>& tab, const AggregateBackwardBlock<T>& b) {
  const bool joint = b.grad_log_qz != nullptr, marginals = b.grad_marginals != nullptr;
  if (joint && marginals) {
    backward_block<F, true, true>(tab, b);
  } else if (joint) {
    backward_block<F, true, false>(tab, b);
  } else if (marginals) {
    backward_block<F, false, true>(tab, b);
  }
}

template <typename T>
IVAE_CLONE_INLINE void backward_dispatch(ExpFamily family, const ComponentTable<T>& tab,
                                         const AggregateBackwardBlock<T>& b) {
  if (family == ExpFamily::Gaussian) {
    backward_family<ExpFamily::Gaussian>(tab, b);
  } else {
    backward_family<ExpFamily::Laplace>(tab, b);
  }
}

}  // namespace

IVAE_CPU_CLONES void aggregate_log_q_forward_block(ExpFamily family, const ComponentTable<float>& table,
                                                   const AggregateForwardBlock<float>& block) {
  forward_dispatch(family, table, block);
}
IVAE_CPU_CLONES void aggregate_log_q_forward_block(ExpFamily family, const ComponentTable<double>& table,
                                                   const AggregateForwardBlock<double>& block) {
  forward_dispatch(family, table, block);
}
IVAE_CPU_CLONES void aggregate_log_q_backward_block(ExpFamily family, const ComponentTable<float>& table,
                                                    const AggregateBackwardBlock<float>& block) {
  backward_dispatch(family, table, block);
}
IVAE_CPU_CLONES void aggregate_log_q_backward_block(ExpFamily family, const ComponentTable<double>& table,
                                                    const AggregateBackwardBlock<double>& block) {
  backward_dispatch(family, table, block);
}

}  // namespace ivae::cpu
