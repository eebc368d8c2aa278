// Glue between the op bindings and the torch-free tiled kernels (cpu/icnn_tiled.h).
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdlib>
#include <string>

#include "common/icnn_args.h"
#include "cpu/icnn_tiled.h"

namespace ivae::cpu {

// The parameters of validated arguments, repacked for the tiles.
template <typename T>
IcnnPacked<T> pack_args(const IcnnArgs& a) {
  return pack_icnn(a.dim, a.hidden, a.layers, a.A.const_data_ptr<T>(), a.b.const_data_ptr<T>(),
                   a.W.const_data_ptr<T>(), a.w.const_data_ptr<T>(), a.alpha.item<T>());
}

// IVAE_ICNN_CPU_PATH=aten runs the ATen-GEMM sequence (ops/icnn_map.cpp, ops/brenier_logdet.cpp:
// the path CUDA takes) on the CPU instead of the tiles (brenier_logdet: only when asked).
inline bool aten_path_requested() {
  const char* path = std::getenv("IVAE_ICNN_CPU_PATH");
  return path != nullptr && std::string(path) == "aten";
}

// Widest H at which icnn_map takes the tiles by default. The tiles win while the H×H hidden
// weights stay next to the core; beyond that MKL's GEMMs (the ATen path) win. Measured at B = 100,
// d = 64, K = 2, one thread, training step vs the double-backprop reference (docs/LIDVAE.md):
// H = 64: tiles 1.89×, ATen 1.88×; H = 96: 1.52× vs 1.68×; H = 128: 1.25× vs 1.58×;
// H = 256: 0.82× vs 1.35× (and at B = 4096, K = 4: 0.81× vs 1.29×).
inline constexpr int64_t kIcnnTilesMaxHidden = 64;

// icnn_map's CPU path: IVAE_ICNN_CPU_PATH=aten or =tiles forces one; otherwise by the width H.
inline bool icnn_map_uses_aten_path(int64_t hidden) {
  const char* path = std::getenv("IVAE_ICNN_CPU_PATH");
  if (path != nullptr) {
    const std::string p(path);
    if (p == "aten") return true;
    if (p == "tiles") return false;
  }
  return hidden > kIcnnTilesMaxHidden;
}

}  // namespace ivae::cpu
