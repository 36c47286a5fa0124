// The per-image factor of the normalised step, one definition for the CPU and the CUDA kernels (and
// mirrored by fastdream/_reference.py::normalized_step_ref).
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define FASTDREAM_HOST_DEVICE __host__ __device__
#else
#define FASTDREAM_HOST_DEVICE
#endif

namespace fastdream {

// step_size / mean|grad| with mean = abs_sum / count, in double, then rounded to float32.
// Scale-free, as the seed's step_size * g / mean|g|: no absolute epsilon, so a model whose gradients
// are tiny (a randomly initialised GoogLeNet: mean|g| ~ 2.5e-16) dreams like the same model scaled up.
// The one guard: an all-zero gradient (mean 0; NaN too) gets 0, so the image does not move. The
// result is saturated at +-FLT_MAX: a gradient of subnormal floats (mean < step_size / FLT_MAX)
// then steps a little less, never by inf (inf * 0 would make NaN).
FASTDREAM_HOST_DEVICE inline float step_scale(double abs_sum, int64_t count, double step_size) {
  const double mean = abs_sum / static_cast<double>(count);
  if (!(mean > 0.0)) return 0.0f;
  constexpr double kFloatMax = 3.4028234663852886e38;  // FLT_MAX, exact in double
  double s = step_size / mean;
  s = s > kFloatMax ? kFloatMax : (s < -kFloatMax ? -kFloatMax : s);
  return static_cast<float>(s);
}

}  // namespace fastdream
