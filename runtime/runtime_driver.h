/*
 * runtime_driver.h -- the CUDA driver API and NVRTC, loaded at run time.
 *
 * libdop never links libcuda: runtime_driver_load() dlopen()s libcuda.so.1,
 * fetches cuGetProcAddress with dlsym and every other entry point through it
 * (plain dlsym of e.g. "cuMemAlloc" returns the legacy 32-bit-pointer ABI).
 * NVRTC is loaded the same way (libnvrtc.so.13, .12, or DOP_NVRTC_PATH).
 * Tests install a fake table with runtime_driver_install() to inject errors.
 */
#ifndef DOP_RUNTIME_DRIVER_H
#define DOP_RUNTIME_DRIVER_H

#include <cuda.h>
#include <nvrtc.h>
#include <stddef.h>

/* Driver entry points used by dop; the types come from cuda.h's prototypes. */
#define RUNTIME_DRIVER_FUNCS(X)                                                                                    \
    X(cuInit)                                                                                                      \
    X(cuDriverGetVersion)                                                                                          \
    X(cuGetErrorName)                                                                                              \
    X(cuGetErrorString)                                                                                            \
    X(cuDeviceGetCount)                                                                                            \
    X(cuDeviceGet)                                                                                                 \
    X(cuDeviceGetName)                                                                                             \
    X(cuDeviceGetAttribute)                                                                                        \
    X(cuDevicePrimaryCtxRetain)                                                                                    \
    X(cuDevicePrimaryCtxRelease)                                                                                   \
    X(cuCtxPushCurrent)                                                                                            \
    X(cuCtxPopCurrent)                                                                                             \
    X(cuCtxGetCurrent)                                                                                             \
    X(cuCtxSynchronize)                                                                                            \
    X(cuMemAlloc)                                                                                                  \
    X(cuMemFree)                                                                                                   \
    X(cuMemcpyHtoD)                                                                                                \
    X(cuMemcpyDtoH)                                                                                                \
    X(cuMemcpyDtoD)                                                                                                \
    X(cuMemcpyHtoDAsync)                                                                                           \
    X(cuMemcpyDtoDAsync)                                                                                           \
    X(cuMemsetD8)                                                                                                  \
    X(cuMemsetD16)                                                                                                 \
    X(cuMemsetD32Async)                                                                                            \
    X(cuModuleLoadData)                                                                                            \
    X(cuModuleUnload)                                                                                              \
    X(cuModuleGetFunction)                                                                                         \
    X(cuFuncGetAttribute)                                                                                          \
    X(cuOccupancyMaxActiveBlocksPerMultiprocessor)                                                                 \
    X(cuLaunchKernel)                                                                                              \
    X(cuLaunchKernelEx)                                                                                            \
    X(cuFuncSetAttribute)                                                                                          \
    X(cuStreamCreate)                                                                                              \
    X(cuStreamDestroy)                                                                                             \
    X(cuStreamSynchronize)                                                                                         \
    X(cuStreamIsCapturing)                                                                                         \
    X(cuStreamWaitEvent)                                                                                           \
    X(cuStreamBeginCapture)                                                                                        \
    X(cuStreamEndCapture)                                                                                          \
    X(cuGraphInstantiateWithFlags)                                                                                        \
    X(cuGraphLaunch)                                                                                               \
    X(cuGraphExecDestroy)                                                                                          \
    X(cuGraphDestroy)                                                                                              \
    X(cuEventCreate)                                                                                               \
    X(cuEventRecord)                                                                                               \
    X(cuEventSynchronize)                                                                                          \
    X(cuEventElapsedTime)                                                                                          \
    X(cuEventDestroy)

#define RUNTIME_NVRTC_FUNCS(X)                                                                                     \
    X(nvrtcVersion)                                                                                                \
    X(nvrtcGetErrorString)                                                                                         \
    X(nvrtcCreateProgram)                                                                                          \
    X(nvrtcDestroyProgram)                                                                                         \
    X(nvrtcCompileProgram)                                                                                         \
    X(nvrtcGetProgramLogSize)                                                                                      \
    X(nvrtcGetProgramLog)                                                                                          \
    X(nvrtcGetCUBINSize)                                                                                           \
    X(nvrtcGetCUBIN)

/* NAME may be a macro of cuda.h (cuMemAlloc -> cuMemAlloc_v2): the member is
 * named by pasting, which does not expand it, the type by __typeof__, which does. */
#define RUNTIME_DECLARE_MEMBER(NAME) __typeof__(&NAME) fn_##NAME;

typedef struct runtime_driver {
    RUNTIME_DRIVER_FUNCS(RUNTIME_DECLARE_MEMBER)
} runtime_driver;

typedef struct runtime_nvrtc {
    RUNTIME_NVRTC_FUNCS(RUNTIME_DECLARE_MEMBER)
    int major, minor;
} runtime_nvrtc;

/*
 * Loads the driver once per process (thread-safe) and returns its table, or
 * NULL with a reason in why. A table installed with runtime_driver_install()
 * is returned instead when present.
 */
const runtime_driver *runtime_driver_load(char *why, size_t why_len);

/* Same for NVRTC. Works without a GPU or driver. */
const runtime_nvrtc *runtime_nvrtc_load(char *why, size_t why_len);

/* Test hook: replaces the driver table (NULL restores the real one). Not thread-safe. */
void runtime_driver_install(const runtime_driver *fake);

/* "CUDA_ERROR_OUT_OF_MEMORY: out of memory" for r, using the driver when loaded. */
void runtime_cu_describe(const runtime_driver *drv, CUresult r, char *buf, size_t len);

#endif
