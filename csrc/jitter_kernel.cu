// CUDA kernel and launcher of ops.jitter: out[b, c, y, x] = src[b, c, (y - dy) mod H, (x - dx) mod W].
//
// Grid (blocks_x, images): blockIdx.y walks the images (grid-stride), so each block reduces its
// image's shifts once; blockIdx.x / threadIdx.x grid-stride over the image's C*H*W/VEC vectors.
// Stores are VEC-wide when W and the pointers allow it; loads are VEC-wide too when the horizontal
// shift keeps the source aligned (dx mod VEC == 0), otherwise VEC scalar loads with wrap-around.
// The copy moves raw bits (bit-exact for every dtype): float32 as uint32, bf16/fp16 as uint16.
#include "cuda_common.cuh"
#include "kernels.h"

namespace fastdream {
namespace {

using cuda::kThreads;
using cuda::Vec;

template <typename T, typename index_t, int VEC>
__global__ void __launch_bounds__(kThreads) jitter_kernel(const JitterParams p) {
  const cuda::ImageWalk<index_t, VEC> walk(p.channels, p.height, p.width);
  const index_t H = walk.H, W = walk.W;
  const int64_t per_image = p.channels * p.height * p.width;
  for (int64_t b = blockIdx.y; b < p.batch; b += gridDim.y) {
    const index_t dy = static_cast<index_t>(cuda::wrap64(p.shifts[2 * b], p.height));
    const index_t dx = static_cast<index_t>(cuda::wrap64(p.shifts[2 * b + 1], p.width));
    const T* src = static_cast<const T*>(p.src) + b * per_image;
    T* dst = static_cast<T*>(p.dst) + b * per_image;
    for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < walk.vectors; i += gridDim.x * blockDim.x) {
      index_t c, y, x0;
      walk.locate(i, c, y, x0);
      index_t ys = y - dy;
      if (ys < 0) ys += H;
      index_t xs = x0 - dx;
      if (xs < 0) xs += W;
      const T* srow = src + (c * H + ys) * W;
      Vec<T, VEC> out;
      if (VEC > 1 && xs % VEC == 0) {
        out = *reinterpret_cast<const Vec<T, VEC>*>(srow + xs);
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          out.v[k] = srow[xs];
          if (++xs == W) xs = 0;
        }
      }
      *reinterpret_cast<Vec<T, VEC>*>(dst + (c * H + y) * W + x0) = out;
    }
  }
}

template <typename T, int VEC>
cudaError_t launch(const JitterParams& p, cudaStream_t stream, int device) {
  const int64_t per_image = p.channels * p.height * p.width;
  const dim3 grid(cuda::blocks_per_image(per_image / VEC, p.batch, device), cuda::grid_images(p.batch));
  // 32-bit index math when every per-image index (and y - dy, x - dx) fits comfortably
  if (per_image < (int64_t{1} << 30))
    jitter_kernel<T, int32_t, VEC><<<grid, kThreads, 0, stream>>>(p);
  else
    jitter_kernel<T, int64_t, VEC><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// VEC = 16 bytes of elements when W and both pointers allow it.
template <typename T>
cudaError_t dispatch_vec(const JitterParams& p, cudaStream_t stream, int device) {
  constexpr int kVec = 16 / sizeof(T);
  if (p.width % kVec == 0 && cuda::aligned(p.src, kVec * sizeof(T)) && cuda::aligned(p.dst, kVec * sizeof(T)))
    return launch<T, kVec>(p, stream, device);
  return launch<T, 1>(p, stream, device);
}

}  // namespace

const char* jitter_cuda(const JitterParams& p, void* stream_handle, int device) {
  cuda::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return cuda::error_text(guard.error());
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  const cudaError_t e = dtype_bytes(p.dtype) == 4 ? dispatch_vec<uint32_t>(p, stream, device)
                                                  : dispatch_vec<uint16_t>(p, stream, device);
  return cuda::error_text(e);
}

int cuda_runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : CUDART_VERSION;
}

}  // namespace fastdream
