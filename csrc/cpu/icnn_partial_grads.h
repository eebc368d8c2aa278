// The tiled ICNN backwards' per-thread partial gradients (cpu/icnn_tiled.h's IcnnPartial), summed
// into the ops' gradient tensors: shared by icnn_map and brenier_logdet.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>

#include <array>
#include <vector>

#include "cpu/icnn_tiled.h"

namespace ivae::cpu {

// Sums the threads' partial gradients in block order (deterministic for a thread count) into
// the op's unpadded gradient tensors.
template <typename T>
inline void write_parameter_grads(const IcnnPacked<T>& p, const std::vector<IcnnPartial<T>>& parts,
                                  const std::array<bool, 6>& mask, at::Tensor& A_bar, at::Tensor& b_bar,
                                  at::Tensor& W_bar, at::Tensor& w_bar, at::Tensor& alpha_bar) {
  const int64_t K = p.layers, H = p.hidden, d = p.dim, hp = p.hp, dp = p.dp;
  const auto opts = A_bar.options();
  const auto total = [&](auto member, int64_t i) {
    T sum = 0;
    for (const IcnnPartial<T>& part : parts) sum += (part.*member)[i];
    return sum;
  };
  if (mask[1]) {
    A_bar = at::empty({K, H, d}, opts);
    T* out = A_bar.mutable_data_ptr<T>();
    for (int64_t kh = 0; kh < K * H; ++kh)
      for (int64_t j = 0; j < d; ++j) out[kh * d + j] = total(&IcnnPartial<T>::A, kh * dp + j);
  }
  if (mask[2]) {
    b_bar = at::empty({K, H}, opts);
    T* out = b_bar.mutable_data_ptr<T>();
    for (int64_t k = 0; k < K; ++k)
      for (int64_t h = 0; h < H; ++h) out[k * H + h] = total(&IcnnPartial<T>::b, k * hp + h);
  }
  if (mask[3]) {
    W_bar = at::empty({K - 1, H, H}, opts);
    T* out = W_bar.mutable_data_ptr<T>();
    for (int64_t ki = 0; ki < (K - 1) * H; ++ki)
      for (int64_t j = 0; j < H; ++j) out[ki * H + j] = total(&IcnnPartial<T>::W, ki * hp + j);
  }
  if (mask[4]) {
    w_bar = at::empty({H}, opts);
    T* out = w_bar.mutable_data_ptr<T>();
    for (int64_t h = 0; h < H; ++h) out[h] = total(&IcnnPartial<T>::w, h);
  }
  if (mask[5]) {
    T sum = 0;
    for (const IcnnPartial<T>& part : parts) sum += part.alpha;
    alpha_bar = at::empty({}, opts);
    *alpha_bar.mutable_data_ptr<T>() = sum;
  }
}

}  // namespace ivae::cpu
