// CPU kernel of ops.normalized_step_:
//   img[b] = clip(img[b] + s_b * roll(grad[b], (-dy_b, -dx_b)), lo_c, hi_c),
//   s_b = step_size / mean|grad[b]| (step_scale.h; 0 for an all-zero gradient).
//
// Pass 1 sums |grad| per image in double over fixed-size chunks (OpenMP over chunks, then the chunk
// sums of each image are added in order, so the result does not depend on the thread count).
// Pass 2 (OpenMP over rows) reads the unrolled gradient as two wrapped row segments and updates img.
// s_b is step_scale.h's; the float32 update follows the reference (torch) order exactly.
#include <cmath>
#include <vector>

#include "cpu_common.h"
#include "kernels.h"
#include "step_scale.h"

namespace fastdream {
namespace {

struct Bf16 { uint16_t bits; };
struct Fp16 { uint16_t bits; };

inline float load(const float* p, int64_t i) { return p[i]; }
inline float load(const Bf16* p, int64_t i) { return cpu::bf16_to_float(p[i].bits); }
inline float load(const Fp16* p, int64_t i) { return cpu::fp16_to_float(p[i].bits); }

constexpr int64_t kChunk = 16384;  // elements per partial |grad| sum

// clip like torch.minimum(torch.maximum(v, lo), hi): NaN propagates
inline float clip(float v, float lo, float hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

template <typename G>
void abs_sums(const G* grad, int64_t batch, int64_t per_image, int threads, double* sums) {
  const int64_t chunks = (per_image + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(batch * chunks));
  (void)threads;
#pragma omp parallel for schedule(static) num_threads(threads) if (batch * per_image > cpu::kParallelGrain)
  for (int64_t k = 0; k < batch * chunks; ++k) {
    const int64_t b = k / chunks, chunk = k % chunks;
    const int64_t begin = chunk * kChunk;
    const int64_t end = begin + kChunk < per_image ? begin + kChunk : per_image;
    const G* g = grad + b * per_image;
    // 8 independent accumulators: lets the compiler vectorise without reassociating one sum
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = begin;
    for (; i + 8 <= end; i += 8)
      for (int j = 0; j < 8; ++j) acc[j] += static_cast<double>(std::fabs(load(g, i + j)));
    for (; i < end; ++i) acc[0] += static_cast<double>(std::fabs(load(g, i)));
    partial[static_cast<size_t>(k)] =
        ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  }
  for (int64_t b = 0; b < batch; ++b) {
    double s = 0;
    for (int64_t chunk = 0; chunk < chunks; ++chunk) s += partial[static_cast<size_t>(b * chunks + chunk)];
    sums[b] = s;
  }
}

template <typename G>
void step(const StepParams& p) {
  const int64_t B = p.batch, C = p.channels, H = p.height, W = p.width;
  const int64_t per_image = C * H * W;
  const G* grad = static_cast<const G*>(p.grad);
  const int threads = cpu::thread_count(p.num_threads);
  (void)threads;

  std::vector<double> sums(static_cast<size_t>(B));
  abs_sums(grad, B, per_image, threads, sums.data());
  std::vector<float> scale(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) scale[static_cast<size_t>(b)] = step_scale(sums[b], per_image, p.step_size);

  const bool cl = p.grad_channels_last != 0;
  // NCHW: one task per (b, c, y) row; NHWC: one task per (b, y) row with all channels, so the
  // gradient row (W * C values) is read from cache rather than once per channel from memory.
  const int64_t tasks = cl ? B * H : B * C * H;
#pragma omp parallel for schedule(static) num_threads(threads) if (B * per_image > cpu::kParallelGrain)
  for (int64_t t = 0; t < tasks; ++t) {
    const int64_t y = t % H;
    const int64_t b = cl ? t / H : t / (C * H);
    const int64_t c_begin = cl ? 0 : (t / H) % C;
    const int64_t c_end = cl ? C : c_begin + 1;
    const int64_t ys = cpu::wrap(y + static_cast<int64_t>(p.shifts[2 * b]), H);
    const int64_t sx = cpu::wrap(static_cast<int64_t>(p.shifts[2 * b + 1]), W);
    const float s = scale[static_cast<size_t>(b)];
    for (int64_t c = c_begin; c < c_end; ++c) {
      const float lo = p.lo[p.bounds_per_channel ? c : 0];
      const float hi = p.hi[p.bounds_per_channel ? c : 0];
      float* out = p.img + ((b * C + c) * H + y) * W;
      // unrolled[x] = grad[ys, (x + sx) mod W]: x < W - sx reads sx + x, the rest x - (W - sx)
      if (!cl) {
        const G* g = grad + ((b * C + c) * H + ys) * W;
        for (int64_t x = 0; x < W - sx; ++x) out[x] = clip(out[x] + load(g, x + sx) * s, lo, hi);
        for (int64_t x = W - sx; x < W; ++x) out[x] = clip(out[x] + load(g, x + sx - W) * s, lo, hi);
      } else {
        const G* g = grad + (b * H + ys) * W * C + c;
        for (int64_t x = 0; x < W - sx; ++x) out[x] = clip(out[x] + load(g, (x + sx) * C) * s, lo, hi);
        for (int64_t x = W - sx; x < W; ++x)
          out[x] = clip(out[x] + load(g, (x + sx - W) * C) * s, lo, hi);
      }
    }
  }
}

}  // namespace

void normalized_step_cpu(const StepParams& p) {
  switch (p.grad_dtype) {
    case kBFloat16: step<Bf16>(p); break;
    case kFloat16: step<Fp16>(p); break;
    default: step<float>(p); break;
  }
}

}  // namespace fastdream
