// CUDA kernel and launcher of ops.jitter: out[b, c, y, x] = f(src[b, c, (y - dy) mod H, (x - dx) mod W]).
//
// Grid (blocks_x, images): blockIdx.y walks the images (grid-stride), so each block reduces its
// image's shifts once; blockIdx.x / threadIdx.x grid-stride over the image's C*H*W/VEC vectors.
// Stores are VEC-wide when W and the pointers allow it; loads are VEC-wide too when the horizontal
// shift keeps the source aligned (dx mod VEC == 0), otherwise VEC scalar loads with wrap-around.
// The plain copy moves raw bits (bit-exact for every dtype); the normalising variant computes
// (v - mean_c) / std_c in IEEE float32 (no fast-math) and rounds to the output dtype to nearest even.
#include "cuda_common.cuh"
#include "kernels.h"

namespace fastdream {
namespace {

using cuda::kThreads;
using cuda::Vec;

template <typename Src, typename Dst, bool kNormalize, typename index_t, int VEC>
__global__ void __launch_bounds__(kThreads) jitter_kernel(const JitterParams p) {
  const cuda::ImageWalk<index_t, VEC> walk(p.channels, p.height, p.width);
  const index_t H = walk.H, W = walk.W;
  const int64_t per_image = p.channels * p.height * p.width;
  for (int64_t b = blockIdx.y; b < p.batch; b += gridDim.y) {
    const index_t dy = static_cast<index_t>(cuda::wrap64(p.shifts[2 * b], p.height));
    const index_t dx = static_cast<index_t>(cuda::wrap64(p.shifts[2 * b + 1], p.width));
    const Src* src = static_cast<const Src*>(p.src) + b * per_image;
    Dst* dst = static_cast<Dst*>(p.dst) + b * per_image;
    for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < walk.vectors; i += gridDim.x * blockDim.x) {
      index_t c, y, x0;
      walk.locate(i, c, y, x0);
      index_t ys = y - dy;
      if (ys < 0) ys += H;
      index_t xs = x0 - dx;
      if (xs < 0) xs += W;
      const Src* srow = src + (c * H + ys) * W;
      Src in[VEC];
      if (VEC > 1 && xs % VEC == 0) {
        const Vec<Src, VEC> v = *reinterpret_cast<const Vec<Src, VEC>*>(srow + xs);
#pragma unroll
        for (int k = 0; k < VEC; ++k) in[k] = v.v[k];
      } else {
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          in[k] = srow[xs];
          if (++xs == W) xs = 0;
        }
      }
      Vec<Dst, VEC> out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        if constexpr (kNormalize) {
          out.v[k] = cuda::from_float<Dst>(__fdiv_rn(__fsub_rn(in[k], p.mean[c]), p.std[c]));
        } else {
          out.v[k] = in[k];
        }
      }
      *reinterpret_cast<Vec<Dst, VEC>*>(dst + (c * H + y) * W + x0) = out;
    }
  }
}

template <typename Src, typename Dst, bool kNormalize, int VEC>
cudaError_t launch(const JitterParams& p, cudaStream_t stream, int device) {
  const int64_t per_image = p.channels * p.height * p.width;
  const dim3 grid(cuda::blocks_per_image(per_image / VEC, p.batch, device), cuda::grid_images(p.batch));
  // 32-bit index math when every per-image index (and y - dy, x - dx) fits comfortably
  if (per_image < (int64_t{1} << 30))
    jitter_kernel<Src, Dst, kNormalize, int32_t, VEC><<<grid, kThreads, 0, stream>>>(p);
  else
    jitter_kernel<Src, Dst, kNormalize, int64_t, VEC><<<grid, kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// VEC = 16 bytes of the wider of the two element types when W and both pointers allow it.
template <typename Src, typename Dst, bool kNormalize>
cudaError_t dispatch_vec(const JitterParams& p, cudaStream_t stream, int device) {
  constexpr int kVec = 16 / (sizeof(Src) > sizeof(Dst) ? sizeof(Src) : sizeof(Dst));
  if (p.width % kVec == 0 && cuda::aligned(p.src, kVec * sizeof(Src)) &&
      cuda::aligned(p.dst, kVec * sizeof(Dst)))
    return launch<Src, Dst, kNormalize, kVec>(p, stream, device);
  return launch<Src, Dst, kNormalize, 1>(p, stream, device);
}

}  // namespace

const char* jitter_cuda(const JitterParams& p, void* stream_handle, int device) {
  cuda::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return cuda::error_text(guard.error());
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  cudaError_t e;
  if (!p.normalize) {
    e = dtype_bytes(p.src_dtype) == 4 ? dispatch_vec<uint32_t, uint32_t, false>(p, stream, device)
                                      : dispatch_vec<uint16_t, uint16_t, false>(p, stream, device);
  } else if (p.dst_dtype == kBFloat16) {
    e = dispatch_vec<float, __nv_bfloat16, true>(p, stream, device);
  } else if (p.dst_dtype == kFloat16) {
    e = dispatch_vec<float, __half, true>(p, stream, device);
  } else {
    e = dispatch_vec<float, float, true>(p, stream, device);
  }
  return cuda::error_text(e);
}

int cuda_runtime_version() {
  int v = 0;
  return cudaRuntimeGetVersion(&v) == cudaSuccess ? v : CUDART_VERSION;
}

}  // namespace fastdream
