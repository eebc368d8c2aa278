// Torch-free CPU loops of imq_mmd over one row block of the pooled samples z = [x; y] (N = n + m
// rows): every pair (i, j) with i in the block and j > i, in column tiles that never straddle the
// x/y boundary (so one tile has one pair weight). Each entry point is compiled per x86-64 level
// (cpu_clones.h). Math: math/imq_kernel.h.
#pragma once

#include <cstdint>

#include "math/imq_kernel.h"

namespace ivae::cpu {

// Column tile edges (and row block sizes): per_dim tiles hold one dimension's values, joint
// tiles D rows of them plus their gradient sums, so they are narrower.
constexpr int64_t kImqPerDimTile = 128;
constexpr int64_t kImqJointTile = 64;

template <typename T>
struct ImqProblem {
  int64_t n;    // rows of x; rows [n, N) of z are y's
  int64_t N;    // n + m
  int64_t dim;  // D
  const T* z;   // [N, D] (read by the joint loops)
  const T* zt;  // [D, N] (z transposed: the inner loops run over samples)
  math::ImqScales<T> scales;
  math::ImqPairWeights weights;
  bool grad_x, grad_y;  // gradients wanted; a tile computes its pairs' gradients if either end wants them
};

// The pairs (i, j), i in [i0, i1) (inside x or inside y), j > i, of dimension d (per_dim):
// adds Σ pair_weight · k to *value and, when grad_acc [N] is not null, Σ pair_weight · w · (z_i - z_j)
// to grad_acc[i] and its negative to grad_acc[j] (the caller multiplies by -2). Sums in double;
// float32 pairs are summed in float over at most one tile (128 terms) first.
void imq_per_dim_rows(const ImqProblem<float>& p, int64_t d, int64_t i0, int64_t i1, double* value, double* grad_acc);
void imq_per_dim_rows(const ImqProblem<double>& p, int64_t d, int64_t i0, int64_t i1, double* value, double* grad_acc);

// The same for the joint distance ‖z_i - z_j‖²; grad_acc is [N, D] (row-major) or null;
// scratch holds D * kImqJointTile values of T.
void imq_joint_rows(const ImqProblem<float>& p, int64_t i0, int64_t i1, double* value, double* grad_acc, float* scratch);
void imq_joint_rows(const ImqProblem<double>& p, int64_t i0, int64_t i1, double* value, double* grad_acc,
                    double* scratch);

}  // namespace ivae::cpu
