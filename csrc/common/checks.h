// Argument checks shared by every op: messages name the op, the argument and what was expected.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace ivae {

inline void check_floating(const char* op, const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.defined(), op, ": ", name, " must be a defined tensor");
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), op, ": ", name,
                   " must be a floating-point tensor, got dtype ", t.scalar_type());
}

// `t` must share `ref`'s dtype and device (no silent casts or copies across devices).
inline void check_same_dtype_device(const char* op, const char* ref_name, const at::Tensor& ref,
                                    const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), op, ": ", ref_name, " and ", name,
                   " must have the same dtype, got ", ref.scalar_type(), " and ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), op, ": ", ref_name, " and ", name,
                    " must be on the same device, got ", ref.device(), " and ", t.device());
}

}  // namespace ivae
