// Helpers shared by the CUDA kernels: element loads/stores with conversion, vector types, the launch
// geometry and error plumbing. Included only by .cu files.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fastdream {
namespace cuda {

constexpr int kThreads = 256;

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }

// v mod n in [0, n) for any sign of v (n > 0), on 64-bit values (once per block, not per element).
__device__ __forceinline__ int64_t wrap64(int64_t v, int64_t n) {
  const int64_t r = v % n;
  return r < 0 ? r + n : r;
}

// The C*H*(W/VEC) vectors of one image: vector i is channel c, row y, columns x0 .. x0 + VEC - 1.
template <typename index_t, int VEC>
struct ImageWalk {
  index_t C, H, W, wv, vectors;
  __device__ ImageWalk(int64_t channels, int64_t height, int64_t width)
      : C(static_cast<index_t>(channels)), H(static_cast<index_t>(height)), W(static_cast<index_t>(width)),
        wv(W / VEC), vectors(C * H * (W / VEC)) {}
  __device__ __forceinline__ void locate(index_t i, index_t& c, index_t& y, index_t& x0) const {
    const index_t row = i / wv;
    x0 = (i - row * wv) * VEC;
    y = row % H;
    c = row / H;
  }
};

__host__ __device__ __forceinline__ bool aligned(const void* p, int bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

// Blocks per image for a grid of (blocks_x, images): enough to fill the device about 8 blocks deep,
// never more than the work needs.
inline unsigned blocks_per_image(int64_t work_items, int64_t images, int device) {
  int sms = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess || sms <= 0)
    sms = 80;
  const int64_t needed = (work_items + kThreads - 1) / kThreads;
  const int64_t images_in_grid = images < 65535 ? images : 65535;
  int64_t target = (static_cast<int64_t>(sms) * 8 + images_in_grid - 1) / images_in_grid;
  if (target < 1) target = 1;
  int64_t blocks = needed < target ? needed : target;
  if (blocks > 65535) blocks = 65535;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks);
}

inline unsigned grid_images(int64_t images) { return static_cast<unsigned>(images < 65535 ? images : 65535); }

// Makes `device` current for the duration of a launch (always set: this module's static CUDA runtime
// and torch's share the driver's per-thread context, so ask rather than assume) and restores the
// caller's device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    error_ = cudaSetDevice(device);
    device_ = device;
  }
  ~DeviceGuard() {
    if (previous_ >= 0 && previous_ != device_) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
  cudaError_t error() const { return error_; }

 private:
  int previous_ = -1;
  int device_ = -1;
  cudaError_t error_ = cudaSuccess;
};

inline const char* error_text(cudaError_t e) { return e == cudaSuccess ? nullptr : cudaGetErrorString(e); }

}  // namespace cuda
}  // namespace fastdream
