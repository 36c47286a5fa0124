// Entry points of the kernels, called by bindings.cpp. Nothing here needs CUDA headers: the CUDA
// launchers take the stream as an opaque pointer and report errors as a C string (nullptr = success),
// so bindings.cpp compiles with the plain host compiler.
#pragma once

#include <cstdint>

#include "params.h"

namespace fastdream {

// CPU kernels (jitter.cpp, normalized_step.cpp). Preconditions are checked by the Python wrapper.
void jitter_cpu(const JitterParams& p);
void normalized_step_cpu(const StepParams& p);

#ifdef FASTDREAM_WITH_CUDA
// CUDA launchers (jitter_kernel.cu, normalized_step_kernel.cu). `stream` is a cudaStream_t, `device`
// the CUDA device index the pointers live on. Return nullptr on success, else the CUDA error text.
const char* jitter_cuda(const JitterParams& p, void* stream, int device);
const char* normalized_step_cuda(const StepParams& p, void* stream, int device);
// Number of doubles the normalized step needs in StepParams::workspace (device memory).
int64_t step_workspace_size(int64_t batch, int64_t channels, int64_t height, int64_t width);
int cuda_runtime_version();
#endif

}  // namespace fastdream
