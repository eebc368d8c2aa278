// The ICNN map and its analytic backward on the CPU, for one thread's rows, as register-tiled
// GEMMs with the elementwise steps fused into their epilogues (cpu/tile_gemm.h; math:
// math/icnn.h, DESIGN.md op 2). Torch-free. The rows are processed in sub-blocks whose
// temporaries stay in the core's cache; nothing but the op's outputs leaves it.
#pragma once

#include <array>
#include <cstdint>
#include <vector>

namespace ivae::cpu {

// The parameters repacked once per call as the tiles read them: B operands with column counts
// padded to tile::kColumnAlign (hp = padded H, dp = padded d), zeros in the padding.
template <typename T>
struct IcnnPacked {
  int64_t dim = 0, hidden = 0, layers = 0, hp = 0, dp = 0;
  std::vector<T> A_t;   // [K][d][hp]    A_kᵀ   (x A_kᵀ, ḡ A_kᵀ)
  std::vector<T> A_n;   // [K][H][dp]    A_k    (Σ_k g_k A_k, Σ_k ā_k A_k)
  std::vector<T> W_t;   // [K-1][H][hp]  W_kᵀ   (z W_kᵀ, ż W_kᵀ)
  std::vector<T> W_n;   // [K-1][H][hp]  W_k    (g W_k, ā W_k)
  std::vector<T> bias;  // [K][hp]
  std::vector<T> w;     // [hp]
  T alpha = 0;
};

// A [K, H, d], b [K, H], W [K-1, H, H], w [H], all contiguous.
IcnnPacked<float> pack_icnn(int64_t dim, int64_t hidden, int64_t layers, const float* A, const float* b,
                            const float* W, const float* w, float alpha);
IcnnPacked<double> pack_icnn(int64_t dim, int64_t hidden, int64_t layers, const double* A, const double* b,
                             const double* W, const double* w, double alpha);

// Forward for `rows` rows: x [rows, d] -> psi [rows], grad [rows, d], and the saved pre-activations
// a_k and reverse-sweep vectors s_k, layer k's rows at saved_a + k * layer_stride (row stride H).
void icnn_tiled_forward(const IcnnPacked<float>& p, int64_t rows, const float* x, float* psi, float* grad,
                        float* saved_a, float* saved_s, int64_t layer_stride);
void icnn_tiled_forward(const IcnnPacked<double>& p, int64_t rows, const double* x, double* psi, double* grad,
                        double* saved_a, double* saved_s, int64_t layer_stride);

// One thread's parameter gradients, summed over its rows (padded as IcnnPacked: W [K-1][H][hp],
// A [K][H][dp], b [K][hp], w [hp]). Sized by icnn_partial_for.
template <typename T>
struct IcnnPartial {
  std::vector<T> W, A, b, w;
  T alpha = 0;
};

template <typename T>
IcnnPartial<T> icnn_partial_for(const IcnnPacked<T>& p) {
  IcnnPartial<T> g;
  g.W.assign((p.layers - 1) * p.hidden * p.hp, T(0));
  g.A.assign(p.layers * p.hidden * p.dp, T(0));
  g.b.assign(p.layers * p.hp, T(0));
  g.w.assign(p.hp, T(0));
  return g;
}

// Backward for `rows` rows from ψ̄ [rows] and ḡ [rows, d]: x̄ [rows, d] (if mask[0]; else x_bar may
// be null) and the parameter gradients mask[1..5] says, added into `partial`.
void icnn_tiled_backward(const IcnnPacked<float>& p, int64_t rows, const float* x, const float* psi_bar,
                         const float* grad_bar, const float* saved_a, const float* saved_s, int64_t layer_stride,
                         std::array<bool, 6> mask, float* x_bar, IcnnPartial<float>& partial);
void icnn_tiled_backward(const IcnnPacked<double>& p, int64_t rows, const double* x, const double* psi_bar,
                         const double* grad_bar, const double* saved_a, const double* saved_s,
                         int64_t layer_stride, std::array<bool, 6> mask, double* x_bar,
                         IcnnPartial<double>& partial);

}  // namespace ivae::cpu
