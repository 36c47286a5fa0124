// Helpers shared by the CPU kernels: index wrapping, the OpenMP thread count, and tiny exact
// converters from the two 16-bit float formats to float (CUDA code uses cuda_bf16.h / cuda_fp16.h
// instead).
#pragma once

#include <cstdint>
#include <cstring>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace fastdream {
namespace cpu {

// v mod n in [0, n), for any sign of v (n > 0).
inline int64_t wrap(int64_t v, int64_t n) {
  const int64_t r = v % n;
  return r < 0 ? r + n : r;
}

// The OpenMP team size for a kernel: the caller's request (torch.get_num_threads()), else the default.
inline int thread_count(int32_t requested) {
  if (requested > 0) return requested;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// Below this many elements a kernel runs on one thread (a parallel region costs a few microseconds).
constexpr int64_t kParallelGrain = 32768;

inline uint32_t float_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float bf16_to_float(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// Branch-free (so loops over it vectorise): the half's exponent and mantissa are moved into a float
// whose exponent is 224 too large, then scaled by 2^-112 (exact; inf and NaN stay inf and NaN).
// Zero and subnormal halves instead become 0.5 + m * 2^-24 (the float ulp at 0.5) minus 0.5.
inline float fp16_to_float(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;  // exponent and mantissa, sign shifted out
  const float normal = bits_float((two_w >> 4) + (224u << 23)) * 0x1.0p-112f;
  const float subnormal = bits_float((two_w >> 17) | (126u << 23)) - 0.5f;
  return bits_float(sign | float_bits(two_w < (1u << 27) ? subnormal : normal));
}

}  // namespace cpu
}  // namespace fastdream
