#include "cpu/imq_mmd_tiles.h"

#include <algorithm>

#include "cpu/cpu_clones.h"

namespace ivae::cpu {
namespace {

// Which of the estimator's three sums the pair (i, j) belongs to, and whether its gradients are wanted.
struct TileKind {
  double weight;
  bool grad;
};

template <typename T>
IVAE_CLONE_INLINE TileKind tile_kind(const ImqProblem<T>& p, int64_t i, int64_t j, bool want_grad) {
  const bool xi = i < p.n, xj = j < p.n;
  if (xi && xj) return {p.weights.xx, want_grad && p.grad_x};
  if (!xi && !xj) return {p.weights.yy, want_grad && p.grad_y};
  return {p.weights.xy, want_grad && (p.grad_x || p.grad_y)};
}

// Kernel passes run over the row's columns rounded up to kLanes (distance 0 in the padding, results
// unused): no scalar remainder iterations, which would divide one pair at a time.
constexpr int64_t kLanes = 16;
IVAE_CLONE_INLINE int64_t padded(int64_t cols) { return (cols + kLanes - 1) / kLanes * kLanes; }
static_assert(kImqPerDimTile % kLanes == 0 && kImqJointTile % kLanes == 0, "tiles hold whole lane groups");

// End of the column tile starting at j0: kTile columns, cut at the x/y boundary.
IVAE_CLONE_INLINE int64_t tile_end(int64_t j0, int64_t tile, int64_t n, int64_t N) {
  return std::min(j0 + tile, j0 < n ? n : N);
}

// k[e] and (kWeight) w[e] of the squared distances r[e], e < cols: the loop over scales outside,
// the pairs inside, so the pair loops are innermost and vectorise (the per-pair math is
// math/imq_kernel.h's, as the CUDA kernels run it).
template <bool kWeight, bool kPaired, typename T>
IVAE_CLONE_INLINE void kernel_of(const T* __restrict__ r, int64_t cols, const math::ImqScales<T>& s, T* __restrict__ k,
                                 T* __restrict__ w) {
  std::fill(k, k + cols, T(0));
  if constexpr (kWeight) std::fill(w, w + cols, T(0));
  int c = 0;
  if constexpr (kPaired) {
    for (; c + 1 < s.count; c += 2) {
      const T ca = s.scale[c], la = s.inv_scale[c], cb = s.scale[c + 1], lb = s.inv_scale[c + 1];
#pragma omp simd
      for (int64_t e = 0; e < cols; ++e) {
        T ke = k[e], we = kWeight ? w[e] : T(0);
        math::imq_add_scale_pair<kWeight>(math::imq_pair_capped(r[e]), ca, la, cb, lb, ke, we);
        k[e] = ke;
        if constexpr (kWeight) w[e] = we;
      }
    }
  }
  for (; c < s.count; ++c) {  // every scale, or the one left over by the pairs
    const T cc = s.scale[c], lc = s.inv_scale[c];
#pragma omp simd
    for (int64_t e = 0; e < cols; ++e) {
      T ke = k[e], we = kWeight ? w[e] : T(0);
      math::imq_add_scale<kWeight>(kPaired ? math::imq_pair_capped(r[e]) : r[e], cc, lc, ke, we);
      k[e] = ke;
      if constexpr (kWeight) w[e] = we;
    }
  }
  if constexpr (kPaired) {
#pragma omp simd
    for (int64_t e = 0; e < cols; ++e) {
      const bool far = math::imq_beyond_pair_cap(r[e]);
      k[e] = far ? T(0) : k[e];
      if constexpr (kWeight) w[e] = far ? T(0) : w[e];
    }
  }
}

// One tile of one dimension: rows [i0, i1), columns [j0, j1), pairs with j > i.
template <bool kGrad, bool kPaired, typename T>
IVAE_CLONE_INLINE void per_dim_tile(const T* __restrict__ col, const math::ImqScales<T>& s, int64_t i0, int64_t i1,
                                    int64_t j0, int64_t j1, double weight, double& value, double* grad_acc) {
  alignas(64) T tile_grad[kImqPerDimTile];  // the columns' shares, summed over the tile's rows
  alignas(64) T diff[kImqPerDimTile], dist[kImqPerDimTile], kv[kImqPerDimTile], wv[kImqPerDimTile];
  if constexpr (kGrad) std::fill(tile_grad, tile_grad + (j1 - j0), T(0));
  double tile_value = 0;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t js = std::max(j0, i + 1);
    if (js >= j1) break;  // later rows start further right
    const int64_t cols = j1 - js;
    const T zi = col[i];
    const T* __restrict__ cj = col + js;
#pragma omp simd
    for (int64_t e = 0; e < cols; ++e) {
      diff[e] = zi - cj[e];
      dist[e] = diff[e] * diff[e];
    }
    const int64_t lanes = padded(cols);
    std::fill(dist + cols, dist + lanes, T(0));
    kernel_of<kGrad, kPaired>(dist, lanes, s, kv, wv);
    T row_value = 0, row_grad = 0;
    T* __restrict__ tg = tile_grad + (js - j0);
#pragma omp simd reduction(+ : row_value, row_grad)
    for (int64_t e = 0; e < cols; ++e) {
      row_value += kv[e];
      if constexpr (kGrad) {
        const T wd = wv[e] * diff[e];
        row_grad += wd;
        tg[e] -= wd;
      }
    }
    tile_value += static_cast<double>(row_value);
    if constexpr (kGrad) grad_acc[i] += weight * static_cast<double>(row_grad);
  }
  if constexpr (kGrad) {
    for (int64_t j = j0; j < j1; ++j) grad_acc[j] += weight * static_cast<double>(tile_grad[j - j0]);
  }
  value += weight * tile_value;
}

template <bool kPaired, typename T>
IVAE_CLONE_INLINE void per_dim_rows(const ImqProblem<T>& p, int64_t d, int64_t i0, int64_t i1, double* value,
                                    double* grad_acc) {
  const T* col = p.zt + d * p.N;
  for (int64_t j0 = i0; j0 < p.N;) {
    const int64_t j1 = tile_end(j0, kImqPerDimTile, p.n, p.N);
    const TileKind kind = tile_kind(p, i0, j0, grad_acc != nullptr);
    if (kind.grad) {
      per_dim_tile<true, kPaired>(col, p.scales, i0, i1, j0, j1, kind.weight, *value, grad_acc);
    } else {
      per_dim_tile<false, kPaired>(col, p.scales, i0, i1, j0, j1, kind.weight, *value, nullptr);
    }
    j0 = j1;
  }
}

// One tile of the joint distance: per row, the squared distances to the tile's columns (summed
// over d in order), the kernel, then per d the weighted differences; the columns' shares are
// summed in `tile_grad` [D, kImqJointTile] and added to grad_acc once per tile.
template <bool kGrad, bool kPaired, typename T>
IVAE_CLONE_INLINE void joint_tile(const ImqProblem<T>& p, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                                  double weight, double& value, double* grad_acc, T* __restrict__ tile_grad) {
  const int64_t D = p.dim, N = p.N;
  alignas(64) T dist[kImqJointTile];
  alignas(64) T wt[kImqJointTile];
  alignas(64) T kv[kImqJointTile];
  if constexpr (kGrad) std::fill(tile_grad, tile_grad + D * kImqJointTile, T(0));
  double tile_value = 0;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t js = std::max(j0, i + 1);
    if (js >= j1) break;
    const int64_t cols = j1 - js;
    const T* zi = p.z + i * D;
    std::fill(dist, dist + cols, T(0));
    for (int64_t d = 0; d < D; ++d) {
      const T a = zi[d];
      const T* __restrict__ col = p.zt + d * N + js;
#pragma omp simd
      for (int64_t c = 0; c < cols; ++c) {
        const T diff = a - col[c];
        dist[c] += diff * diff;
      }
    }
    const int64_t lanes = padded(cols);
    std::fill(dist + cols, dist + lanes, T(0));
    kernel_of<kGrad, kPaired>(dist, lanes, p.scales, kv, wt);
    T row_value = 0;
#pragma omp simd reduction(+ : row_value)
    for (int64_t c = 0; c < cols; ++c) row_value += kv[c];
    tile_value += static_cast<double>(row_value);
    if constexpr (kGrad) {
      double* gi = grad_acc + i * D;
      for (int64_t d = 0; d < D; ++d) {
        const T a = zi[d];
        const T* __restrict__ col = p.zt + d * N + js;
        T* __restrict__ gcol = tile_grad + d * kImqJointTile + (js - j0);
        T row_grad = 0;
#pragma omp simd reduction(+ : row_grad)
        for (int64_t c = 0; c < cols; ++c) {
          const T wd = wt[c] * (a - col[c]);
          row_grad += wd;
          gcol[c] -= wd;
        }
        gi[d] += weight * static_cast<double>(row_grad);
      }
    }
  }
  if constexpr (kGrad) {
    for (int64_t j = j0; j < j1; ++j) {
      double* gj = grad_acc + j * D;
      for (int64_t d = 0; d < D; ++d) gj[d] += weight * static_cast<double>(tile_grad[d * kImqJointTile + (j - j0)]);
    }
  }
  value += weight * tile_value;
}

template <bool kPaired, typename T>
IVAE_CLONE_INLINE void joint_rows(const ImqProblem<T>& p, int64_t i0, int64_t i1, double* value, double* grad_acc,
                                  T* scratch) {
  for (int64_t j0 = i0; j0 < p.N;) {
    const int64_t j1 = tile_end(j0, kImqJointTile, p.n, p.N);
    const TileKind kind = tile_kind(p, i0, j0, grad_acc != nullptr);
    if (kind.grad) {
      joint_tile<true, kPaired>(p, i0, i1, j0, j1, kind.weight, *value, grad_acc, scratch);
    } else {
      joint_tile<false, kPaired>(p, i0, i1, j0, j1, kind.weight, *value, nullptr, scratch);
    }
    j0 = j1;
  }
}

template <typename T>
IVAE_CLONE_INLINE void per_dim_dispatch(const ImqProblem<T>& p, int64_t d, int64_t i0, int64_t i1, double* value,
                                        double* grad_acc) {
  p.scales.paired ? per_dim_rows<true>(p, d, i0, i1, value, grad_acc)
                  : per_dim_rows<false>(p, d, i0, i1, value, grad_acc);
}

template <typename T>
IVAE_CLONE_INLINE void joint_dispatch(const ImqProblem<T>& p, int64_t i0, int64_t i1, double* value, double* grad_acc,
                                      T* scratch) {
  p.scales.paired ? joint_rows<true>(p, i0, i1, value, grad_acc, scratch)
                  : joint_rows<false>(p, i0, i1, value, grad_acc, scratch);
}

}  // namespace

IVAE_CPU_CLONES void imq_per_dim_rows(const ImqProblem<float>& p, int64_t d, int64_t i0, int64_t i1, double* value,
                                      double* grad_acc) {
  per_dim_dispatch(p, d, i0, i1, value, grad_acc);
}
IVAE_CPU_CLONES void imq_per_dim_rows(const ImqProblem<double>& p, int64_t d, int64_t i0, int64_t i1, double* value,
                                      double* grad_acc) {
  per_dim_dispatch(p, d, i0, i1, value, grad_acc);
}
IVAE_CPU_CLONES void imq_joint_rows(const ImqProblem<float>& p, int64_t i0, int64_t i1, double* value,
                                    double* grad_acc, float* scratch) {
  joint_dispatch(p, i0, i1, value, grad_acc, scratch);
}
IVAE_CPU_CLONES void imq_joint_rows(const ImqProblem<double>& p, int64_t i0, int64_t i1, double* value,
                                    double* grad_acc, double* scratch) {
  joint_dispatch(p, i0, i1, value, grad_acc, scratch);
}

}  // namespace ivae::cpu
