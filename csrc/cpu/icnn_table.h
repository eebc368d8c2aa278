// The CPU table of the ICNN map's fused elementwise steps (defined in cpu/icnn_map.cpp), also
// used by the Brenier log-determinant, whose forward pass is the map's.
#pragma once

#include "ops/icnn_map.h"

namespace ivae::cpu {

extern const icnn::Elementwise kCpuElementwise;

}  // namespace ivae::cpu
