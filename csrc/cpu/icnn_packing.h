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
// the path CUDA takes) on the CPU instead of the tiles, for comparisons.
inline bool aten_path_requested() {
  const char* path = std::getenv("IVAE_ICNN_CPU_PATH");
  return path != nullptr && std::string(path) == "aten";
}

}  // namespace ivae::cpu
