// Plain parameter structs shared by the CPU kernels, the CUDA kernels and the bindings.
//
// No Python, no torch, no CUDA types here: every field is a raw pointer, a size or a scalar, so the
// same struct is filled by the pybind11 bindings and passed by value to a CUDA kernel.
#pragma once

#include <cstdint>

namespace fastdream {

// Per-channel arrays (the clip bounds) travel by value inside the params struct so a
// launch needs no host-to-device copy (and stays legal inside CUDA graph capture). Per-channel values
// are therefore limited to this many channels; a single value broadcast over all channels has no limit.
constexpr int kMaxChannels = 64;

// Element types understood by the kernels (the wrapper maps torch dtypes onto these).
enum DType : int32_t {
  kFloat32 = 0,
  kBFloat16 = 1,
  kFloat16 = 2,
};

inline int dtype_bytes(int32_t dtype) { return dtype == kFloat32 ? 4 : 2; }

// out[b, c, y, x] = src[b, c, (y - dy_b) mod H, (x - dx_b) mod W], a bit-exact copy of any of the
// three dtypes (src and dst of one dtype). src and dst are contiguous NCHW and do not overlap;
// shifts is int32 [B, 2] = (dy, dx), contiguous, on the same device as src.
struct JitterParams {
  const void* src = nullptr;
  void* dst = nullptr;
  const int32_t* shifts = nullptr;
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  int32_t dtype = kFloat32;
  int32_t num_threads = 0;  // CPU only: OpenMP threads (0 = OpenMP default)
};

// img[b] = clip(img[b] + s_b * roll(grad[b], (-dy_b, -dx_b)), lo_c, hi_c)
//   s_b = step_scale(sum|grad[b]|, C*H*W, step_size) (step_scale.h: step_size / mean|grad[b]| in double,
//   0 for an all-zero gradient, rounded to float32); the update and the clip in float32.
// img is float32 contiguous NCHW, updated in place; grad is float32/bfloat16/float16, NCHW
// contiguous or (grad_channels_last != 0) NHWC contiguous, and does not overlap img.
struct StepParams {
  float* img = nullptr;
  const void* grad = nullptr;
  const int32_t* shifts = nullptr;
  double* workspace = nullptr;  // CUDA only: step_workspace_size() doubles on the device
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  int32_t grad_dtype = kFloat32;
  int32_t grad_channels_last = 0;
  int32_t bounds_per_channel = 0;  // 0: lo[0], hi[0] for every channel
  int32_t num_threads = 0;         // CPU only
  double step_size = 0.0;
  float lo[kMaxChannels] = {};
  float hi[kMaxChannels] = {};
};

}  // namespace fastdream
