// CPU kernel of ops.jitter: a per-image roll, out[b, c, y, x] = src[b, c, (y - dy) mod H, (x - dx) mod W].
//
// Each output row is the source row (y - dy) mod H rotated by dx: two memcpy calls of the wrapped
// segments, so the plain copy is bit-exact for every dtype. OpenMP over the B*C*H rows.
#include <cstring>

#include "cpu_common.h"
#include "kernels.h"

namespace fastdream {
namespace {

// dst[x] = cast((src[(x - sx) mod W] - mean) / std) for one row, sx in [0, W).
template <typename Store>
inline void normalize_row(const float* src, int64_t width, int64_t sx, float mean, float std,
                          Store store) {
  for (int64_t x = 0; x < sx; ++x) store(x, (src[width - sx + x] - mean) / std);
  for (int64_t x = sx; x < width; ++x) store(x, (src[x - sx] - mean) / std);
}

}  // namespace

void jitter_cpu(const JitterParams& p) {
  const int64_t C = p.channels, H = p.height, W = p.width;
  const int64_t rows = p.batch * C * H;
  const int64_t src_elem = dtype_bytes(p.src_dtype), dst_elem = dtype_bytes(p.dst_dtype);
  const char* src = static_cast<const char*>(p.src);
  char* dst = static_cast<char*>(p.dst);
  const int threads = cpu::thread_count(p.num_threads);
  (void)threads;  // unused without OpenMP

#pragma omp parallel for schedule(static) num_threads(threads) if (rows * W > cpu::kParallelGrain)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t y = row % H;
    const int64_t plane = row / H;  // b * C + c
    const int64_t b = plane / C, c = plane % C;
    const int64_t ys = cpu::wrap(y - static_cast<int64_t>(p.shifts[2 * b]), H);
    const int64_t sx = cpu::wrap(static_cast<int64_t>(p.shifts[2 * b + 1]), W);
    const char* s = src + ((plane * H + ys) * W) * src_elem;
    char* d = dst + row * W * dst_elem;
    if (!p.normalize) {
      // d[sx:W] = s[0:W-sx], d[0:sx] = s[W-sx:W]
      std::memcpy(d + sx * dst_elem, s, (W - sx) * dst_elem);
      std::memcpy(d, s + (W - sx) * src_elem, sx * dst_elem);
      continue;
    }
    const float* sf = reinterpret_cast<const float*>(s);
    const float mean = p.mean[c], std = p.std[c];
    if (p.dst_dtype == kFloat32) {
      float* df = reinterpret_cast<float*>(d);
      normalize_row(sf, W, sx, mean, std, [df](int64_t x, float v) { df[x] = v; });
    } else if (p.dst_dtype == kBFloat16) {
      uint16_t* dh = reinterpret_cast<uint16_t*>(d);
      normalize_row(sf, W, sx, mean, std, [dh](int64_t x, float v) { dh[x] = cpu::float_to_bf16(v); });
    } else {
      uint16_t* dh = reinterpret_cast<uint16_t*>(d);
      normalize_row(sf, W, sx, mean, std, [dh](int64_t x, float v) { dh[x] = cpu::float_to_fp16(v); });
    }
  }
}

}  // namespace fastdream
