// The one pybind11 module, fastdream._C. It takes raw addresses (ints from tensor.data_ptr()), sizes,
// plain values and a CUDA stream handle, fills the params structs and calls the kernels with the GIL
// released. It links neither libtorch nor Python-side torch: fastdream/ops.py checks every argument
// first; the checks here only guard against calls that bypass the wrapper.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "params.h"

#ifndef FASTDREAM_CUDA_ARCHS
#define FASTDREAM_CUDA_ARCHS ""
#endif

namespace py = pybind11;

namespace fastdream {
namespace {

template <typename T>
T* address(uintptr_t value, const char* name) {
  if (value == 0) throw std::invalid_argument(std::string("fastdream._C: null pointer for ") + name);
  return reinterpret_cast<T*>(value);
}

void check_shape(int64_t batch, int64_t channels, int64_t height, int64_t width) {
  if (batch <= 0 || channels <= 0 || height <= 0 || width <= 0)
    throw std::invalid_argument("fastdream._C: sizes must be positive (empty tensors return early in fastdream.ops)");
}

void check_dtype(int32_t dtype, const char* name) {
  if (dtype != kFloat32 && dtype != kBFloat16 && dtype != kFloat16)
    throw std::invalid_argument(std::string("fastdream._C: unknown dtype code for ") + name);
}

// Copies a per-channel list into a fixed array; returns whether it is per-channel (len > 1).
bool fill_channels(const std::vector<float>& values, int64_t channels, float* out, const char* name) {
  if (values.empty() || (values.size() != 1 && static_cast<int64_t>(values.size()) != channels) ||
      values.size() > static_cast<size_t>(kMaxChannels))
    throw std::invalid_argument(std::string("fastdream._C: ") + name + " needs 1 or C <= " +
                                std::to_string(kMaxChannels) + " values");
  for (size_t i = 0; i < values.size(); ++i) out[i] = values[i];
  return values.size() > 1;
}

JitterParams jitter_params(uintptr_t src, uintptr_t out, uintptr_t shifts, int64_t batch, int64_t channels,
                           int64_t height, int64_t width, int32_t dtype, int32_t num_threads) {
  check_shape(batch, channels, height, width);
  check_dtype(dtype, "src");
  JitterParams p;
  p.src = address<const void>(src, "src");
  p.dst = address<void>(out, "out");
  p.shifts = address<const int32_t>(shifts, "shifts");
  p.batch = batch, p.channels = channels, p.height = height, p.width = width;
  p.dtype = dtype, p.num_threads = num_threads;
  return p;
}

StepParams step_params(uintptr_t img, uintptr_t grad, uintptr_t shifts, int64_t batch, int64_t channels,
                       int64_t height, int64_t width, int32_t grad_dtype, bool grad_channels_last,
                       double step_size, const std::vector<float>& lo, const std::vector<float>& hi,
                       int32_t num_threads) {
  check_shape(batch, channels, height, width);
  check_dtype(grad_dtype, "grad");
  StepParams p;
  p.img = address<float>(img, "img");
  p.grad = address<const void>(grad, "grad");
  p.shifts = address<const int32_t>(shifts, "shifts");
  p.batch = batch, p.channels = channels, p.height = height, p.width = width;
  p.grad_dtype = grad_dtype, p.grad_channels_last = grad_channels_last ? 1 : 0;
  p.step_size = step_size, p.num_threads = num_threads;
  const bool lo_pc = fill_channels(lo, channels, p.lo, "lo");
  const bool hi_pc = fill_channels(hi, channels, p.hi, "hi");
  p.bounds_per_channel = (lo_pc || hi_pc) ? 1 : 0;
  for (int64_t c = 1; p.bounds_per_channel && c < channels; ++c) {  // broadcast a single value
    if (!lo_pc) p.lo[c] = p.lo[0];
    if (!hi_pc) p.hi[c] = p.hi[0];
  }
  return p;
}

}  // namespace
}  // namespace fastdream

PYBIND11_MODULE(_C, m) {
  using namespace fastdream;
  m.doc() = "fastdream compiled kernels (CPU always; CUDA when built with nvcc). Use fastdream.ops, "
            "which checks the arguments; these functions take raw addresses.";
  // fastdream/_extension.py refuses a module whose API_VERSION is not its own (a stale build in a
  // source tree whose wrapper calls the kernels differently); bump it with any change of a signature
  // or of what a kernel computes.
  m.attr("API_VERSION") = 2;
  m.attr("MAX_CHANNELS") = kMaxChannels;
  m.attr("DTYPE_FLOAT32") = static_cast<int>(kFloat32);
  m.attr("DTYPE_BFLOAT16") = static_cast<int>(kBFloat16);
  m.attr("DTYPE_FLOAT16") = static_cast<int>(kFloat16);

  m.def(
      "jitter_cpu",
      [](uintptr_t src, uintptr_t out, uintptr_t shifts, int64_t batch, int64_t channels, int64_t height,
         int64_t width, int32_t dtype, int32_t num_threads) {
        const JitterParams p = jitter_params(src, out, shifts, batch, channels, height, width, dtype, num_threads);
        py::gil_scoped_release release;
        jitter_cpu(p);
      },
      py::arg("src"), py::arg("out"), py::arg("shifts"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("dtype"), py::arg("num_threads") = 0);

  m.def(
      "normalized_step_cpu",
      [](uintptr_t img, uintptr_t grad, uintptr_t shifts, int64_t batch, int64_t channels, int64_t height,
         int64_t width, int32_t grad_dtype, bool grad_channels_last, double step_size,
         const std::vector<float>& lo, const std::vector<float>& hi, int32_t num_threads) {
        const StepParams p = step_params(img, grad, shifts, batch, channels, height, width, grad_dtype,
                                         grad_channels_last, step_size, lo, hi, num_threads);
        py::gil_scoped_release release;
        normalized_step_cpu(p);
      },
      py::arg("img"), py::arg("grad"), py::arg("shifts"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("grad_dtype"), py::arg("grad_channels_last"),
      py::arg("step_size"), py::arg("lo"), py::arg("hi"), py::arg("num_threads") = 0);

#ifdef FASTDREAM_WITH_CUDA
  m.def("cuda_compiled", []() { return true; });
  m.def("cuda_version", []() { return cuda_runtime_version(); }, "CUDA runtime version of the build, e.g. 13000");
  m.def("step_workspace_size", &step_workspace_size, py::arg("batch"), py::arg("channels"), py::arg("height"),
        py::arg("width"), "Number of float64 values normalized_step_cuda needs in `workspace` (device memory).");
  m.def(
      "jitter_cuda",
      [](uintptr_t src, uintptr_t out, uintptr_t shifts, int64_t batch, int64_t channels, int64_t height,
         int64_t width, int32_t dtype, uintptr_t stream, int device) {
        const JitterParams p = jitter_params(src, out, shifts, batch, channels, height, width, dtype, 0);
        const char* error;
        {
          py::gil_scoped_release release;
          error = jitter_cuda(p, reinterpret_cast<void*>(stream), device);
        }
        if (error) throw std::runtime_error(std::string("fastdream._C.jitter_cuda: CUDA error: ") + error);
      },
      py::arg("src"), py::arg("out"), py::arg("shifts"), py::arg("batch"), py::arg("channels"),
      py::arg("height"), py::arg("width"), py::arg("dtype"), py::arg("stream"), py::arg("device"));
  m.def(
      "normalized_step_cuda",
      [](uintptr_t img, uintptr_t grad, uintptr_t shifts, uintptr_t workspace, int64_t batch, int64_t channels,
         int64_t height, int64_t width, int32_t grad_dtype, bool grad_channels_last, double step_size,
         const std::vector<float>& lo, const std::vector<float>& hi, uintptr_t stream, int device) {
        StepParams p = step_params(img, grad, shifts, batch, channels, height, width, grad_dtype,
                                   grad_channels_last, step_size, lo, hi, 0);
        p.workspace = address<double>(workspace, "workspace");
        const char* error;
        {
          py::gil_scoped_release release;
          error = normalized_step_cuda(p, reinterpret_cast<void*>(stream), device);
        }
        if (error) throw std::runtime_error(std::string("fastdream._C.normalized_step_cuda: CUDA error: ") + error);
      },
      py::arg("img"), py::arg("grad"), py::arg("shifts"), py::arg("workspace"), py::arg("batch"),
      py::arg("channels"), py::arg("height"), py::arg("width"), py::arg("grad_dtype"),
      py::arg("grad_channels_last"), py::arg("step_size"), py::arg("lo"), py::arg("hi"),
      py::arg("stream"), py::arg("device"));
#else
  m.def("cuda_compiled", []() { return false; });
  m.def("cuda_version", []() { return 0; });
#endif
  m.attr("CUDA_ARCHS") = FASTDREAM_CUDA_ARCHS;
}
