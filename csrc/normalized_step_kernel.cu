// CUDA kernels and launcher of ops.normalized_step_:
//   img[b] = clip(img[b] + s_b * roll(grad[b], (-dy_b, -dx_b)), lo_c, hi_c),
//   s_b = step_size / mean|grad[b]| (step_scale.h; 0 for an all-zero gradient).
//
// Two launches per group of images on the caller's stream (images_per_group: as many as keep their
// gradients in half the L2 between the passes), no host synchronisation:
//  1. abs_sum_kernel, grid (parts, images): each block sums |grad| over a grid-stride slice of its
//     image in double and writes one partial to workspace[b * parts + blockIdx.x]. An image is C*H*W
//     contiguous values in both NCHW and NHWC, so this pass ignores the layout and loads 4-wide.
//  2. grid (blocks_x, images): each block first adds its image's `parts` partials in a fixed order
//     (deterministic, the same in every block) and forms s_b (step_scale.h, step_image below), then
//     applies the fused unroll + step + clip:
//     - NCHW gradient, step_kernel: one thread per VEC consecutive values of a row of one channel,
//       4-wide on img (and on grad where the shift keeps it aligned) when W and the pointers allow it;
//     - NHWC gradient (channels_last models, the usual case), step_nhwc_kernel: one thread per pixel,
//       all C channels: it reads the pixel's C contiguous gradient values and writes one float to each
//       of img's C planes, so neighbouring threads read neighbouring gradient bytes and write
//       neighbouring floats of each plane (walking NCHW order instead, each thread would read one
//       value every C, and each gradient sector would be fetched C times once past the L2).
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

// What a block needs of image b: its pointers, its shifts wrapped into [0, H) x [0, W), and s_b, the
// same in every thread of the block: pass 1's `parts` partials of the image added in a fixed order
// (each thread its strided share in order, then the block's fixed tree).
template <typename G, typename index_t>
struct StepImage {
  float* img;
  const G* grad;
  index_t dy, dx;
  float scale;
};

template <typename G, typename index_t>
__device__ __forceinline__ StepImage<G, index_t> step_image(const StepParams& p, int64_t b, int parts,
                                                            double* shared, float* scale_shared) {
  const int64_t per_image = p.channels * p.height * p.width;
  double sum = 0.0;
  for (int k = threadIdx.x; k < parts; k += blockDim.x) sum += p.workspace[b * parts + k];
  sum = block_sum(sum, shared);
  if (threadIdx.x == 0) *scale_shared = step_scale(sum, per_image, p.step_size);
  __syncthreads();
  return {p.img + b * per_image, static_cast<const G*>(p.grad) + b * per_image,
          static_cast<index_t>(cuda::wrap64(p.shifts[2 * b], p.height)),
          static_cast<index_t>(cuda::wrap64(p.shifts[2 * b + 1], p.width)), *scale_shared};
}

template <typename G, typename index_t, int VEC>
__global__ void __launch_bounds__(kThreads) step_kernel(const StepParams p, int parts) {
  __shared__ double shared[kThreads / 32];
  __shared__ float scale_shared;
  const cuda::ImageWalk<index_t, VEC> walk(p.channels, p.height, p.width);
  const index_t H = walk.H, W = walk.W;
  const bool grad_vec_ok = cuda::aligned(p.grad, VEC * sizeof(G));
  for (int64_t b = blockIdx.y; b < p.batch; b += gridDim.y) {
    const auto [img, grad, dy, dx, scale] = step_image<G, index_t>(p, b, parts, shared, &scale_shared);
    for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < walk.vectors; i += gridDim.x * blockDim.x) {
      index_t c, y, x0;
      walk.locate(i, c, y, x0);
      index_t ys = y + dy;
      if (ys >= H) ys -= H;
      index_t xs = x0 + dx;
      if (xs >= W) xs -= W;
      float g[VEC];
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

template <typename G, typename index_t>
__global__ void __launch_bounds__(kThreads) step_nhwc_kernel(const StepParams p, int parts) {
  __shared__ double shared[kThreads / 32];
  __shared__ float scale_shared;
  const index_t C = static_cast<index_t>(p.channels), H = static_cast<index_t>(p.height),
                W = static_cast<index_t>(p.width);
  const index_t pixels = H * W;
  for (int64_t b = blockIdx.y; b < p.batch; b += gridDim.y) {
    const auto [img, grad, dy, dx, scale] = step_image<G, index_t>(p, b, parts, shared, &scale_shared);
    for (index_t i = blockIdx.x * blockDim.x + threadIdx.x; i < pixels; i += gridDim.x * blockDim.x) {
      const index_t y = i / W, x = i - y * W;
      index_t ys = y + dy;
      if (ys >= H) ys -= H;
      index_t xs = x + dx;
      if (xs >= W) xs -= W;
      const G* g = grad + (ys * W + xs) * C;  // the pixel's C channels, contiguous
      float* out = img + i;                   // channel c at out[c * pixels]
      for (index_t c = 0; c < C; ++c) {
        const float lo = p.lo[p.bounds_per_channel ? c : 0];
        const float hi = p.hi[p.bounds_per_channel ? c : 0];
        const float v = out[c * pixels];
        out[c * pixels] = clip(__fadd_rn(v, __fmul_rn(cuda::to_float(g[c]), scale)), lo, hi);
      }
    }
    __syncthreads();  // scale_shared is rewritten for the next image
  }
}

// Pass 1 then pass 2 over the images of `p` (a group of the caller's batch, see launch).
template <typename G>
cudaError_t launch_passes(const StepParams& p, int parts, cudaStream_t stream, int device) {
  const int64_t per_image = p.channels * p.height * p.width;
  const G* grad = static_cast<const G*>(p.grad);

  const dim3 reduce_grid(parts, cuda::grid_images(p.batch));
  if (per_image % 4 == 0 && cuda::aligned(grad, 4 * sizeof(G)))
    abs_sum_kernel<G, 4><<<reduce_grid, kThreads, 0, stream>>>(grad, p.workspace, per_image, p.batch);
  else
    abs_sum_kernel<G, 1><<<reduce_grid, kThreads, 0, stream>>>(grad, p.workspace, per_image, p.batch);
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) return e;

  const bool small = per_image < (int64_t{1} << 30);
  if (p.grad_channels_last) {
    const dim3 grid(cuda::blocks_per_image(p.height * p.width, p.batch, device), cuda::grid_images(p.batch));
    if (small) step_nhwc_kernel<G, int32_t><<<grid, kThreads, 0, stream>>>(p, parts);
    else step_nhwc_kernel<G, int64_t><<<grid, kThreads, 0, stream>>>(p, parts);
    return cudaGetLastError();
  }
  const bool vec = p.width % 4 == 0 && cuda::aligned(p.img, 16);
  const dim3 grid(cuda::blocks_per_image(per_image / (vec ? 4 : 1), p.batch, device), cuda::grid_images(p.batch));
#define FASTDREAM_STEP_LAUNCH(INDEX, VEC) step_kernel<G, INDEX, VEC><<<grid, kThreads, 0, stream>>>(p, parts)
  if (small) { if (vec) FASTDREAM_STEP_LAUNCH(int32_t, 4); else FASTDREAM_STEP_LAUNCH(int32_t, 1); }
  else { if (vec) FASTDREAM_STEP_LAUNCH(int64_t, 4); else FASTDREAM_STEP_LAUNCH(int64_t, 1); }
#undef FASTDREAM_STEP_LAUNCH
  return cudaGetLastError();
}

// Images per pair of passes. Pass 2 reads again the gradient pass 1 has just read: where a group of
// images' gradients fits in half the L2 (the other half for img streaming through pass 2), that
// second read comes from the L2 and the step moves 12 bytes per float32 element from memory, not 16.
// The whole batch at once where even one image does not fit (grouping would gain nothing).
int64_t images_per_group(int64_t batch, int64_t grad_bytes_per_image, int device) {
  int l2 = 0;
  if (cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device) != cudaSuccess || l2 <= 0) return batch;
  const int64_t fit = (static_cast<int64_t>(l2) / 2) / grad_bytes_per_image;
  return fit < 1 || fit >= batch ? batch : fit;
}

template <typename G>
cudaError_t launch(const StepParams& p, cudaStream_t stream, int device) {
  const int64_t per_image = p.channels * p.height * p.width;
  const int parts = static_cast<int>(parts_for(per_image));
  const int64_t group = images_per_group(p.batch, per_image * static_cast<int64_t>(sizeof(G)), device);
  for (int64_t b0 = 0; b0 < p.batch; b0 += group) {
    StepParams q = p;  // images b0 .. b0 + q.batch - 1: their pointers, shifts and partial sums
    q.batch = group < p.batch - b0 ? group : p.batch - b0;
    q.img = p.img + b0 * per_image;
    q.grad = static_cast<const G*>(p.grad) + b0 * per_image;
    q.shifts = p.shifts + 2 * b0;
    q.workspace = p.workspace + b0 * parts;
    const cudaError_t e = launch_passes<G>(q, parts, stream, device);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
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
