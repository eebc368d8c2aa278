// The CUDA table of the ICNN map's fused elementwise steps (defined in cuda/icnn_map.cu), also
// used by the Brenier log-determinant, whose forward pass is the map's.
#pragma once

#include "ops/icnn_map.h"

namespace ivae::cuda::icnn {

extern const ivae::icnn::Elementwise kCudaElementwise;

}  // namespace ivae::cuda::icnn
