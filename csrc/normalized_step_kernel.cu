// CUDA kernels and launcher of ops.normalized_step_:
//   img[b] = clip(img[b] + s_b * roll(grad[b], (-dy_b, -dx_b)), lo_c, hi_c),
//   s_b = step_size / mean|grad[b]| (step_scale.h; 0 for an all-zero gradient).
//
// Two launches on the caller's stream, no host synchronisation:
//  1. abs_sum_kernel, grid (parts, images): each block sums |grad| over a grid-stride slice of its
//     image in double and writes one partial to workspace[b * parts + blockIdx.x]. An image is C*H*W
//     contiguous values in both NCHW and NHWC, so this pass ignores the layout and loads 4-wide.
//  2. step_kernel, grid (blocks_x, images): each block first adds its image's `parts` partials in a
//     fixed order (deterministic, the same in every block), forms s_b (step_scale.h),
//     then applies the fused unroll + step + clip, 4-wide on img when W and the pointers allow it.
#include "cuda_common.cuh"
#include "kernels.h"
#include "step_scale.h"

namespace fastdream {
namespace {

using cuda::kThreads;
using cuda::Vec;

// Partial sums per image: about one per 2048 values, at most 1024 (depends on the shape only, so the
// wrapper can size the workspace without asking the device).
int64_t parts_for(int64_t per_image) {
  int64_t parts = (per_image + 2047) / 2048;
  if (parts > 1024) parts = 1024;
  return parts < 1 ? 1 : parts;
}

// Sum of v over the block, valid in thread 0. `shared` holds kThreads / 32 doubles.
__device__ __forceinline__ double block_sum(double v, double* shared) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  v = threadIdx.x < kThreads / 32 ? shared[threadIdx.x] : 0.0;
  if (warp == 0) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  }
  __syncthreads();  // shared may be reused right after
  return v;
}

template <typename G, int VEC>
__device__ __forceinline__ void load_vec(const G* p, float (&out)[VEC]) {
  const Vec<G, VEC> v = *reinterpret_cast<const Vec<G, VEC>*>(p);
#pragma unroll
  for (int k = 0; k < VEC; ++k) out[k] = cuda::to_float(v.v[k]);
}

template <typename G, int VEC>
__global__ void __launch_bounds__(kThreads)
    abs_sum_kernel(const G* __restrict__ grad, double* __restrict__ partials, int64_t per_image, int64_t batch) {
  __shared__ double shared[kThreads / 32];
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x * VEC;
  for (int64_t b = blockIdx.y; b < batch; b += gridDim.y) {
    const G* g = grad + b * per_image;
    double acc = 0.0;
    for (int64_t i = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * VEC; i < per_image;
         i += stride) {
      float v[VEC];
      load_vec<G, VEC>(g + i, v);
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc += fabs(static_cast<double>(v[k]));
    }
    acc = block_sum(acc, shared);
    if (threadIdx.x == 0) partials[b * gridDim.x + blockIdx.x] = acc;
  }
}

// clip like torch.minimum(torch.maximum(v, lo), hi): NaN propagates
__device__ __forceinline__ float clip(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

template <typename G, bool kChannelsLast, typename index_t, int VEC>
__global__ void __launch_bounds__(kThreads) step_kernel(const StepParams p, int parts) {
  __shared__ double shared[kThreads / 32];
  __shared__ float scale_shared;
  const cuda::ImageWalk<index_t, VEC> walk(p.channels, p.height, p.width);
  const index_t C = walk.C, H = walk.H, W = walk.W;
  const int64_t per_image = p.channels * p.height * p.width;
  const bool grad_vec_ok = cuda::aligned(p.grad, VEC * sizeof(G));
  for (int64_t b = blockIdx.y; b < p.batch; b += gridDim.y) {
    // finish the reduction of pass 1 in a fixed order
    double sum = 0.0;
    for (int k = threadIdx.x; k < parts; k += blockDim.x) sum += p.workspace[b * parts + k];
    sum = block_sum(sum, shared);
    if (threadIdx.x == 0) scale_shared = step_scale(sum, per_image, p.step_size);
    __syncthreads();
    const float scale = scale_shared;
    const index_t dy = static_cast<index_t>(cuda::wrap64(p.shifts[2 * b], p.height));
    const index_t dx = static_cast<index_t>(cuda::wrap64(p.shifts[2 * b + 1], p.width));
    float* img = p.img + b * per_image;
    const G* grad = static_cast<const G*>(p.grad) + b * per_image;
    for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < walk.vectors; i += gridDim.x * blockDim.x) {
      index_t c, y, x0;
      walk.locate(i, c, y, x0);
      index_t ys = y + dy;
      if (ys >= H) ys -= H;
      index_t xs = x0 + dx;
      if (xs >= W) xs -= W;
      float g[VEC];
      if constexpr (!kChannelsLast) {
        const G* grow = grad + (c * H + ys) * W;
        if (VEC > 1 && grad_vec_ok && xs % VEC == 0) {
          load_vec<G, VEC>(grow + xs, g);
        } else {
#pragma unroll
          for (int k = 0; k < VEC; ++k) {
            g[k] = cuda::to_float(grow[xs]);
            if (++xs == W) xs = 0;
          }
        }
      } else {
        const G* grow = grad + ys * W * C + c;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          g[k] = cuda::to_float(grow[xs * C]);
          if (++xs == W) xs = 0;
        }
      }
      const float lo = p.lo[p.bounds_per_channel ? c : 0];
      const float hi = p.hi[p.bounds_per_channel ? c : 0];
      Vec<float, VEC>* out = reinterpret_cast<Vec<float, VEC>*>(img + (c * H + y) * W + x0);
      Vec<float, VEC> v = *out;
#pragma unroll
      for (int k = 0; k < VEC; ++k) v.v[k] = clip(__fadd_rn(v.v[k], __fmul_rn(g[k], scale)), lo, hi);
      *out = v;
    }
    __syncthreads();  // scale_shared is rewritten for the next image
  }
}

template <typename G>
cudaError_t launch(const StepParams& p, cudaStream_t stream, int device) {
  const int64_t per_image = p.channels * p.height * p.width;
  const int parts = static_cast<int>(parts_for(per_image));
  const G* grad = static_cast<const G*>(p.grad);

  const dim3 reduce_grid(parts, cuda::grid_images(p.batch));
  if (per_image % 4 == 0 && cuda::aligned(grad, 4 * sizeof(G)))
    abs_sum_kernel<G, 4><<<reduce_grid, kThreads, 0, stream>>>(grad, p.workspace, per_image, p.batch);
  else
    abs_sum_kernel<G, 1><<<reduce_grid, kThreads, 0, stream>>>(grad, p.workspace, per_image, p.batch);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;

  const bool vec = p.width % 4 == 0 && cuda::aligned(p.img, 16);
  const bool small = per_image < (int64_t{1} << 30);
  const dim3 grid(cuda::blocks_per_image(per_image / (vec ? 4 : 1), p.batch, device), cuda::grid_images(p.batch));
#define FASTDREAM_STEP_LAUNCH(CL, INDEX, VEC) step_kernel<G, CL, INDEX, VEC><<<grid, kThreads, 0, stream>>>(p, parts)
  if (p.grad_channels_last) {
    if (small) { if (vec) FASTDREAM_STEP_LAUNCH(true, int32_t, 4); else FASTDREAM_STEP_LAUNCH(true, int32_t, 1); }
    else { if (vec) FASTDREAM_STEP_LAUNCH(true, int64_t, 4); else FASTDREAM_STEP_LAUNCH(true, int64_t, 1); }
  } else {
    if (small) { if (vec) FASTDREAM_STEP_LAUNCH(false, int32_t, 4); else FASTDREAM_STEP_LAUNCH(false, int32_t, 1); }
    else { if (vec) FASTDREAM_STEP_LAUNCH(false, int64_t, 4); else FASTDREAM_STEP_LAUNCH(false, int64_t, 1); }
  }
#undef FASTDREAM_STEP_LAUNCH
  return cudaGetLastError();
}

}  // namespace

int64_t step_workspace_size(int64_t batch, int64_t channels, int64_t height, int64_t width) {
  return batch * parts_for(channels * height * width);
}

const char* normalized_step_cuda(const StepParams& p, void* stream_handle, int device) {
  cuda::DeviceGuard guard(device);
  if (guard.error() != cudaSuccess) return cuda::error_text(guard.error());
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
  cudaError_t e;
  switch (p.grad_dtype) {
    case kBFloat16: e = launch<__nv_bfloat16>(p, stream, device); break;
    case kFloat16: e = launch<__half>(p, stream, device); break;
    default: e = launch<float>(p, stream, device); break;
  }
  return cuda::error_text(e);
}

}  // namespace fastdream
