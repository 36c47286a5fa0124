// Helpers shared by the CPU kernels: index wrapping, the OpenMP thread count, and tiny exact
// converters between float and the two 16-bit float formats (CUDA code uses cuda_bf16.h /
// cuda_fp16.h instead). Conversions to float are exact; conversions from float round to nearest
// even, like torch's .to(dtype), with NaN kept NaN.
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

inline uint16_t float_to_bf16(float f) {
  const uint32_t u = float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet nan
  const uint32_t rounding = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>((u + rounding) >> 16);
}

inline uint16_t float_to_fp16(float f) {
  const uint32_t u = float_bits(f);
  const uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  const uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);  // nan
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520: inf
  if (a >= 0x38800000u) {  // normal half (|f| >= 2^-14)
    const uint32_t rounded = a + 0xfffu + ((a >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((rounded - 0x38000000u) >> 13));
  }
  // subnormal half or zero: add 0.5 so the hardware rounds the mantissa to nearest even at 2^-24
  const float r = bits_float(a) + 0.5f;
  return static_cast<uint16_t>(sign | (float_bits(r) - 0x3f000000u));
}

}  // namespace cpu
}  // namespace fastdream
