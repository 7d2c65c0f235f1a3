/*
 * fake_cuda.h -- a fake CUDA driver for the CPU tests, installed with
 * runtime_driver_install(). Device memory is host memory, launches are
 * recorded instead of run, and every module must be a cubin (an EM_CUDA ELF
 * image) for the exact architecture of the device whose context is current
 * in the calling thread.
 *
 * Thread-safe like the real driver: dop loads modules from worker threads
 * (the generic kernels at context creation, the background compiler), so
 * the bookkeeping is under one mutex and the context stack is per thread.
 * Up to FK_MAX_DEV devices, each with its own attributes and primary
 * context (fk_set_devices). Include it in one file of a test program.
 *
 * Also here: a private temporary directory for cache files (fk_tmpdir_*).
 */
#ifndef DOP_TESTS_FAKE_CUDA_H
#define DOP_TESTS_FAKE_CUDA_H

#include <dirent.h>
#include <elf.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime_driver.h"
#include "runtime_internal.h"

#ifndef EM_CUDA
#define EM_CUDA 190
#endif

/* The fakes have cuda.h's prototypes; many ignore parameters. */
#pragma GCC diagnostic ignored "-Wunused-parameter"

#define FK_MAX_LAUNCH 16
#define FK_MAX_DEV 4
#define FK_MAX_MODULES 1024
#define FK_PRIMARY_BASE 0xC0C0u
#define FK_PRIMARY(d) ((CUcontext)(uintptr_t)(FK_PRIMARY_BASE + (unsigned)(d)))
#define FK_STREAM ((dop_stream)(uintptr_t)0x5150)
#define FK_MODULE_OF(f) ((CUmodule)((uintptr_t)(f) & ~(uintptr_t)0xffu))
#define FK_UNUSED __attribute__((unused))
enum { FK_SHRINK = 1, FK_EXPAND = 2, FK_FUSED = 3, FK_COUNTER = 4, FK_CLUSTER = 5 };

typedef struct fk_launch {
    int kind; /* FK_SHRINK, FK_EXPAND, FK_FUSED, FK_COUNTER or FK_CLUSTER */
    CUmodule module;
    unsigned grid[3], block[3], smem;
    unsigned cluster; /* cluster size along x (cuLaunchKernelEx), 0 for cuLaunchKernel */
    int pdl;          /* launched with programmatic stream serialization (cuLaunchKernelEx) */
    CUstream stream;
    dop_kparams kp; /* copy of the argument block */
} fk_launch;

typedef struct fk_device {
    char name[64];
    int cc_major, cc_minor, sm_count, l2_bytes, smem_optin;
} fk_device;

typedef struct fk_module {
    CUmodule handle;
    int dev, sm, live;
} fk_module;

static pthread_mutex_t g_fk_mu = PTHREAD_MUTEX_INITIALIZER;

static struct {
    /* knobs, reset by fk_reset() */
    CUresult init_result, alloc_result, launch_result, module_result;
    int ndev;
    fk_device dev[FK_MAX_DEV];
    CUstreamCaptureStatus capture;
    /* records of the calls, reset by fk_reset() (run() of the tests resets the launch records) */
    int nlaunch, nmemset, nupload;
    fk_launch launch[FK_MAX_LAUNCH];
    CUdeviceptr memset_dst;
    size_t memset_n;
    CUstream upload_stream;
    /* state that lives across tests */
    int pushed;                /* pushes minus pops over all threads */
    int retained[FK_MAX_DEV];  /* primary context references per device */
    int live_allocs, live_modules;
    int loads[FK_MAX_DEV];     /* modules loaded per device, ever */
    int bad_images;            /* images that were not cubins (refused) */
    int wrong_arch;            /* cubins for another architecture than the current device's (refused) */
    int bad_calls;             /* calls without a current context, or on unknown or unloaded handles */
    int nmodules;
    fk_module modules[FK_MAX_MODULES];
} g_fk;

/* The context stack is per thread, as in the driver. */
static _Thread_local CUcontext fk_stack[16];
static _Thread_local int fk_depth;

#define FK_LOCK() pthread_mutex_lock(&g_fk_mu)
#define FK_UNLOCK() pthread_mutex_unlock(&g_fk_mu)

/* Device d with compute capability major.minor; the other attributes follow
 * the part (an H200 for sm_90, an A100 for sm_80, ...). */
static FK_UNUSED void fk_set_device(int d, int major, int minor)
{
    fk_device *v = &g_fk.dev[d];
    v->cc_major = major, v->cc_minor = minor;
    if (major >= 9)
        snprintf(v->name, sizeof v->name, "Fake H200"), v->sm_count = 132, v->l2_bytes = 60 << 20,
            v->smem_optin = 227 << 10;
    else
        snprintf(v->name, sizeof v->name, "Fake A100"), v->sm_count = 108, v->l2_bytes = 40 << 20,
            v->smem_optin = 163 << 10;
}

/* Knobs and records back to defaults: one device, sm_90. */
static FK_UNUSED void fk_reset(void)
{
    FK_LOCK();
    g_fk.init_result = g_fk.alloc_result = g_fk.launch_result = g_fk.module_result = CUDA_SUCCESS;
    g_fk.ndev = 1;
    for (int d = 0; d < FK_MAX_DEV; ++d)
        fk_set_device(d, 9, 0);
    g_fk.capture = CU_STREAM_CAPTURE_STATUS_NONE;
    g_fk.nlaunch = g_fk.nmemset = g_fk.nupload = 0, g_fk.upload_stream = NULL;
    FK_UNLOCK();
}

/* The device of the calling thread's current context, or -1 (counted as a bad call). Under the lock. */
static int fk_current_dev_locked(void)
{
    if (fk_depth == 0) {
        g_fk.bad_calls++;
        return -1;
    }
    uintptr_t c = (uintptr_t)fk_stack[fk_depth - 1];
    int d = (int)(c - FK_PRIMARY_BASE);
    if (c < FK_PRIMARY_BASE || d >= g_fk.ndev || g_fk.retained[d] <= 0) {
        g_fk.bad_calls++;
        return -1;
    }
    return d;
}

static fk_module *fk_module_find_locked(CUmodule m)
{
    for (int i = 0; i < g_fk.nmodules; ++i)
        if (g_fk.modules[i].handle == m)
            return &g_fk.modules[i];
    return NULL;
}

/* The SM number a cubin is for (90 for sm_90), or -1 if image is not a cubin. */
static int fk_cubin_sm(const void *image)
{
    const unsigned char *p = image;
    if (!p || memcmp(p, ELFMAG, SELFMAG) != 0) /* look at the rest only after the magic */
        return -1;
    Elf64_Ehdr h;
    memcpy(&h, p, sizeof h);
    if (h.e_ident[EI_CLASS] != ELFCLASS64 || h.e_machine != EM_CUDA)
        return -1;
    /* CUDA ELF ABI 8 and later keep the SM in bits 8..15 of e_flags, older ones in bits 0..7 */
    return h.e_ident[EI_ABIVERSION] >= 8 ? (int)((h.e_flags >> 8) & 0xffu) : (int)(h.e_flags & 0xffu);
}

#define FK_OK(NAME, ...) static CUresult fk_##NAME(__VA_ARGS__) { return CUDA_SUCCESS; }
#define FK_SET(NAME, PARAMS, ...) static CUresult fk_##NAME PARAMS { FK_LOCK(); __VA_ARGS__; FK_UNLOCK(); return CUDA_SUCCESS; }
/* Same, in a current context (CUDA_ERROR_INVALID_CONTEXT otherwise). */
#define FK_CTX(NAME, PARAMS, ...)                                                                                  \
    static CUresult fk_##NAME PARAMS                                                                               \
    {                                                                                                              \
        FK_LOCK();                                                                                                 \
        if (fk_current_dev_locked() < 0) {                                                                         \
            FK_UNLOCK();                                                                                           \
            return CUDA_ERROR_INVALID_CONTEXT;                                                                     \
        }                                                                                                          \
        __VA_ARGS__;                                                                                               \
        FK_UNLOCK();                                                                                               \
        return CUDA_SUCCESS;                                                                                       \
    }
#define HOST(p) ((void *)(uintptr_t)(p))

static CUresult fk_cuInit(unsigned f)
{
    FK_LOCK();
    CUresult r = g_fk.init_result;
    FK_UNLOCK();
    return r;
}
FK_SET(cuDriverGetVersion, (int *v), *v = 13000)
FK_SET(cuGetErrorString, (CUresult r, const char **s), *s = "fake error")
FK_SET(cuDeviceGetCount, (int *n), *n = g_fk.ndev)
static CUresult fk_cuDeviceGet(CUdevice *d, int i)
{
    FK_LOCK();
    int n = g_fk.ndev;
    FK_UNLOCK();
    *d = i;
    return i >= 0 && i < n ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}
FK_SET(cuDeviceGetName, (char *name, int len, CUdevice d), snprintf(name, (size_t)len, "%s", g_fk.dev[d].name))
FK_SET(cuGetErrorName, (CUresult r, const char **s),
       *s = r == CUDA_ERROR_OUT_OF_MEMORY      ? "CUDA_ERROR_OUT_OF_MEMORY"
            : r == CUDA_ERROR_NO_DEVICE        ? "CUDA_ERROR_NO_DEVICE"
            : r == CUDA_ERROR_LAUNCH_FAILED    ? "CUDA_ERROR_LAUNCH_FAILED"
            : r == CUDA_ERROR_INVALID_IMAGE    ? "CUDA_ERROR_INVALID_IMAGE"
            : r == CUDA_ERROR_NO_BINARY_FOR_GPU ? "CUDA_ERROR_NO_BINARY_FOR_GPU"
                                               : "CUDA_ERROR_OTHER")
FK_SET(cuDeviceGetAttribute, (int *v, CUdevice_attribute a, CUdevice d),
       *v = a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR           ? g_fk.dev[d].cc_major
            : a == CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR         ? g_fk.dev[d].cc_minor
            : a == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT             ? g_fk.dev[d].sm_count
            : a == CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE                    ? g_fk.dev[d].l2_bytes
            : a == CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN ? g_fk.dev[d].smem_optin
                                                                        : 0)
FK_SET(cuDevicePrimaryCtxRetain, (CUcontext *c, CUdevice d), *c = FK_PRIMARY(d), g_fk.retained[d]++)
FK_SET(cuDevicePrimaryCtxRelease, (CUdevice d), g_fk.retained[d]--)
static CUresult fk_cuCtxPushCurrent(CUcontext c)
{
    if (fk_depth >= 16)
        return CUDA_ERROR_INVALID_VALUE;
    fk_stack[fk_depth++] = c;
    FK_LOCK();
    g_fk.pushed++;
    FK_UNLOCK();
    return CUDA_SUCCESS;
}
static CUresult fk_cuCtxPopCurrent(CUcontext *c)
{
    if (fk_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    *c = fk_stack[--fk_depth];
    FK_LOCK();
    g_fk.pushed--;
    FK_UNLOCK();
    return CUDA_SUCCESS;
}
static CUresult fk_cuCtxGetCurrent(CUcontext *c)
{
    *c = fk_depth ? fk_stack[fk_depth - 1] : NULL;
    return CUDA_SUCCESS;
}
static CUresult fk_cuMemAlloc(CUdeviceptr *p, size_t n) /* host memory: the copies below are memcpy */
{
    FK_LOCK();
    CUresult r = fk_current_dev_locked() < 0 ? CUDA_ERROR_INVALID_CONTEXT : g_fk.alloc_result;
    size_t sz = (n + 256) / 256 * 256;
    void *m = r == CUDA_SUCCESS ? aligned_alloc(256, sz) : NULL;
    if (m) {
        memset(m, 0xEE, sz); /* uploads must overwrite this */
        g_fk.live_allocs++;
        *p = (CUdeviceptr)(uintptr_t)m;
    } else if (r == CUDA_SUCCESS) {
        r = CUDA_ERROR_OUT_OF_MEMORY;
    }
    FK_UNLOCK();
    return r;
}
FK_CTX(cuMemFree, (CUdeviceptr p), free(HOST(p)), g_fk.live_allocs--)
FK_CTX(cuMemcpyHtoD, (CUdeviceptr d, const void *s, size_t n), memcpy(HOST(d), s, n))
FK_CTX(cuMemcpyDtoH, (void *d, CUdeviceptr s, size_t n), memcpy(d, HOST(s), n))
FK_CTX(cuMemcpyDtoD, (CUdeviceptr d, CUdeviceptr s, size_t n), memmove(HOST(d), HOST(s), n))
FK_CTX(cuMemcpyHtoDAsync, (CUdeviceptr d, const void *s, size_t n, CUstream st), memcpy(HOST(d), s, n),
       g_fk.nupload++, g_fk.upload_stream = st)
FK_CTX(cuMemcpyDtoDAsync, (CUdeviceptr d, CUdeviceptr s, size_t n, CUstream st), memmove(HOST(d), HOST(s), n))
FK_CTX(cuMemsetD8, (CUdeviceptr d, unsigned char v, size_t n), memset(HOST(d), v, n))
FK_CTX(cuMemsetD16, (CUdeviceptr d, unsigned short v, size_t n),
       for (size_t i = 0; i < n; ++i) memcpy((char *)HOST(d) + 2 * i, &v, 2))
FK_CTX(cuMemsetD32Async, (CUdeviceptr d, unsigned v, size_t n, CUstream st),
       for (size_t i = 0; i < n; ++i) memcpy((char *)HOST(d) + 4 * i, &v, 4);
       g_fk.nmemset++, g_fk.memset_dst = d, g_fk.memset_n = n)

static CUresult fk_cuModuleLoadData(CUmodule *m, const void *image)
{
    FK_LOCK();
    int d = fk_current_dev_locked();
    CUresult r = d < 0 ? CUDA_ERROR_INVALID_CONTEXT : g_fk.module_result;
    if (r == CUDA_SUCCESS) {
        int sm = fk_cubin_sm(image);
        if (sm < 0) {
            g_fk.bad_images++;
            r = CUDA_ERROR_INVALID_IMAGE;
        } else if (sm != 10 * g_fk.dev[d].cc_major + g_fk.dev[d].cc_minor) {
            g_fk.wrong_arch++;
            r = CUDA_ERROR_NO_BINARY_FOR_GPU;
        } else if (g_fk.nmodules == FK_MAX_MODULES) {
            r = CUDA_ERROR_OUT_OF_MEMORY;
        } else {
            fk_module *mod = &g_fk.modules[g_fk.nmodules++];
            mod->handle = (CUmodule)(uintptr_t)(0x100000u + 0x100u * (unsigned)g_fk.nmodules);
            mod->dev = d, mod->sm = sm, mod->live = 1;
            g_fk.live_modules++;
            g_fk.loads[d]++;
            *m = mod->handle;
        }
    }
    FK_UNLOCK();
    return r;
}
static CUresult fk_cuModuleUnload(CUmodule m)
{
    FK_LOCK();
    int d = fk_current_dev_locked();
    fk_module *mod = fk_module_find_locked(m);
    CUresult r = CUDA_SUCCESS;
    if (d < 0) {
        r = CUDA_ERROR_INVALID_CONTEXT;
    } else if (!mod || !mod->live || mod->dev != d) {
        g_fk.bad_calls++;
        r = CUDA_ERROR_INVALID_HANDLE;
    } else {
        mod->live = 0;
        g_fk.live_modules--;
    }
    FK_UNLOCK();
    return r;
}
static CUresult fk_cuModuleGetFunction(CUfunction *f, CUmodule m, const char *name)
{
    int kind = !strcmp(name, KERNELS_ENTRY_SHRINK)   ? FK_SHRINK
               : !strcmp(name, KERNELS_ENTRY_EXPAND) ? FK_EXPAND
               : !strcmp(name, KERNELS_ENTRY_FUSED)  ? FK_FUSED
               : !strcmp(name, KERNELS_ENTRY_COUNTER) ? FK_COUNTER
               : !strcmp(name, KERNELS_ENTRY_CLUSTER) ? FK_CLUSTER
                                                     : 0;
    FK_LOCK();
    fk_module *mod = fk_module_find_locked(m);
    int ok = mod && mod->live;
    g_fk.bad_calls += !ok;
    FK_UNLOCK();
    if (!ok)
        return CUDA_ERROR_INVALID_HANDLE;
    *f = (CUfunction)((uintptr_t)m + (uintptr_t)kind); /* the entry point is in the low byte */
    return kind ? CUDA_SUCCESS : CUDA_ERROR_NOT_FOUND;
}
static CUresult fk_cuLaunchKernel(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                                  unsigned bz, unsigned smem, CUstream st, void **params, void **extra)
{
    FK_LOCK();
    int d = fk_current_dev_locked();
    fk_module *mod = fk_module_find_locked(FK_MODULE_OF(f));
    CUresult r = g_fk.launch_result;
    if (d < 0) {
        r = CUDA_ERROR_INVALID_CONTEXT;
    } else if (!mod || !mod->live || mod->dev != d) { /* a kernel of a module loaded in this context */
        g_fk.bad_calls++;
        r = CUDA_ERROR_INVALID_HANDLE;
    } else if (r == CUDA_SUCCESS && (g_fk.nlaunch >= FK_MAX_LAUNCH || !params || extra)) {
        r = CUDA_ERROR_INVALID_VALUE;
    } else if (r == CUDA_SUCCESS) {
        fk_launch *l = &g_fk.launch[g_fk.nlaunch++];
        *l = (fk_launch){(int)((uintptr_t)f & 0xffu), mod->handle, {gx, gy, gz}, {bx, by, bz}, smem, 0, 0, st, {0}};
        memcpy(&l->kp, params[0], sizeof l->kp);
    }
    FK_UNLOCK();
    return r;
}
/* Takes the cluster dimension (the grid's x a multiple of it) and programmatic stream
 * serialization (value 1) attributes, each at most once, at least one of them; anything
 * else is a bad call. */
static CUresult fk_cuLaunchKernelEx(const CUlaunchConfig *c, CUfunction f, void **params, void **extra)
{
    unsigned cl = 0;
    int pdl = 0, bad = !c || !c->numAttrs || !c->attrs;
    for (unsigned i = 0; !bad && i < c->numAttrs; ++i) {
        if (c->attrs[i].id == CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION && !cl)
            bad |= !(cl = c->attrs[i].value.clusterDim.x) || c->gridDimX % cl;
        else if (c->attrs[i].id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION && !pdl)
            bad |= (pdl = (int)c->attrs[i].value.programmaticStreamSerializationAllowed) != 1;
        else
            bad = 1;
    }
    if (bad) {
        FK_LOCK();
        g_fk.bad_calls++;
        FK_UNLOCK();
        return CUDA_ERROR_INVALID_VALUE;
    }
    CUresult r = fk_cuLaunchKernel(f, c->gridDimX, c->gridDimY, c->gridDimZ, c->blockDimX, c->blockDimY,
                                   c->blockDimZ, c->sharedMemBytes, c->hStream, params, extra);
    if (r == CUDA_SUCCESS) {
        FK_LOCK();
        g_fk.launch[g_fk.nlaunch - 1].cluster = cl;
        g_fk.launch[g_fk.nlaunch - 1].pdl = pdl;
        FK_UNLOCK();
    }
    return r;
}
FK_SET(cuStreamIsCapturing, (CUstream s, CUstreamCaptureStatus *c), *c = g_fk.capture)
FK_SET(cuFuncGetAttribute, (int *v, CUfunction_attribute a, CUfunction f), *v = 0)
FK_OK(cuFuncSetAttribute, CUfunction f, CUfunction_attribute a, int v)
FK_OK(cuStreamWaitEvent, CUstream s, CUevent e, unsigned flags)
FK_SET(cuOccupancyMaxActiveBlocksPerMultiprocessor, (int *n, CUfunction f, int threads, size_t smem), *n = 2)
FK_SET(cuStreamCreate, (CUstream *s, unsigned f), *s = (CUstream)FK_STREAM)
FK_SET(cuEventCreate, (CUevent *e, unsigned f), *e = NULL)
FK_SET(cuEventElapsedTime, (float *ms, CUevent a, CUevent b), *ms = 0.f)
FK_SET(cuStreamEndCapture, (CUstream s, CUgraph *g), *g = NULL)
FK_SET(cuGraphInstantiateWithFlags, (CUgraphExec *e, CUgraph g, unsigned long long f), *e = NULL)
FK_OK(cuCtxSynchronize, void)
FK_OK(cuStreamDestroy, CUstream s)
FK_OK(cuStreamSynchronize, CUstream s)
FK_OK(cuStreamBeginCapture, CUstream s, CUstreamCaptureMode m)
FK_OK(cuGraphLaunch, CUgraphExec e, CUstream s)
FK_OK(cuGraphExecDestroy, CUgraphExec e)
FK_OK(cuGraphDestroy, CUgraph g)
FK_OK(cuEventRecord, CUevent e, CUstream s)
FK_OK(cuEventSynchronize, CUevent e)
FK_OK(cuEventDestroy, CUevent e)

#define FK_MEMBER(NAME) .fn_##NAME = fk_##NAME,
static const runtime_driver g_fake = {RUNTIME_DRIVER_FUNCS(FK_MEMBER)};

/* A read of a counter (worker threads may be updating others). */
static FK_UNUSED int fk_get(const int *field)
{
    FK_LOCK();
    int v = *field;
    FK_UNLOCK();
    return v;
}

/* What is out of balance once every context is destroyed, or NULL: every
 * allocation freed, module unloaded, primary context released, push popped
 * (in every thread), every image a cubin of the right arch (bad_images_expected
 * non-cubin images were planted on purpose), no call outside a context. */
static FK_UNUSED const char *fk_unbalanced(int bad_images_expected)
{
    static char msg[256];
    FK_LOCK();
    int retained = 0;
    for (int d = 0; d < FK_MAX_DEV; ++d)
        retained |= g_fk.retained[d];
    snprintf(msg, sizeof msg,
             "allocs %d, modules %d, retained %d, pushed %d (this thread %d), non-cubins %d (expected %d), "
             "wrong arch %d, bad calls %d",
             g_fk.live_allocs, g_fk.live_modules, retained, g_fk.pushed, fk_depth, g_fk.bad_images,
             bad_images_expected, g_fk.wrong_arch, g_fk.bad_calls);
    int bad = g_fk.live_allocs || g_fk.live_modules || retained || g_fk.pushed || fk_depth ||
              g_fk.bad_images != bad_images_expected || g_fk.wrong_arch || g_fk.bad_calls;
    FK_UNLOCK();
    return bad ? msg : NULL;
}

/* ---- a private directory for cache files ---------------------------------------- */

/* Creates /tmp/dop-test-XXXXXX (or under $TMPDIR) into buf; 0 on success. */
static FK_UNUSED int fk_tmpdir_make(char *buf, size_t len)
{
    const char *t = getenv("TMPDIR");
    snprintf(buf, len, "%s/dop-test-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(buf) ? 0 : -1;
}

/* Removes the files of dir (no subdirectories are made there) and dir. */
static FK_UNUSED void fk_tmpdir_remove(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d)) != NULL) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

#endif
