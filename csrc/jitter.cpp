// CPU kernel of ops.jitter: a per-image roll, out[b, c, y, x] = src[b, c, (y - dy) mod H, (x - dx) mod W].
//
// Each output row is the source row (y - dy) mod H rotated by dx: two memcpy calls of the wrapped
// segments, so the copy is bit-exact for every dtype. OpenMP over the B*C*H rows.
#include <cstring>

#include "cpu_common.h"
#include "kernels.h"

namespace fastdream {

void jitter_cpu(const JitterParams& p) {
  const int64_t C = p.channels, H = p.height, W = p.width;
  const int64_t rows = p.batch * C * H;
  const int64_t elem = dtype_bytes(p.dtype);
  const char* src = static_cast<const char*>(p.src);
  char* dst = static_cast<char*>(p.dst);
  const int threads = cpu::thread_count(p.num_threads);
  (void)threads;  // unused without OpenMP

#pragma omp parallel for schedule(static) num_threads(threads) if (rows * W > cpu::kParallelGrain)
  for (int64_t row = 0; row < rows; ++row) {
    const int64_t y = row % H;
    const int64_t plane = row / H;  // b * C + c
    const int64_t b = plane / C;
    const int64_t ys = cpu::wrap(y - static_cast<int64_t>(p.shifts[2 * b]), H);
    const int64_t sx = cpu::wrap(static_cast<int64_t>(p.shifts[2 * b + 1]), W);
    const char* s = src + ((plane * H + ys) * W) * elem;
    char* d = dst + row * W * elem;
    // d[sx:W] = s[0:W-sx], d[0:sx] = s[W-sx:W]
    std::memcpy(d + sx * elem, s, (W - sx) * elem);
    std::memcpy(d, s + (W - sx) * elem, sx * elem);
  }
}

}  // namespace fastdream
