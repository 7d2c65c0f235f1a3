/*
 * runtime_driver.c -- dlopen() of libcuda and libnvrtc (see runtime_driver.h).
 */
#define _GNU_SOURCE
#include "runtime_driver.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef CUresult (*get_proc_v2_fn)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*get_proc_v1_fn)(const char *, void **, int, cuuint64_t);

static runtime_driver g_driver;
static const runtime_driver *g_driver_ok;
static char g_driver_why[256];
static pthread_once_t g_driver_once = PTHREAD_ONCE_INIT;
static const runtime_driver *g_fake;

static runtime_nvrtc g_nvrtc;
static const runtime_nvrtc *g_nvrtc_ok;
static char g_nvrtc_why[512];
static pthread_once_t g_nvrtc_once = PTHREAD_ONCE_INIT;

static void driver_load_once(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_driver_why, sizeof g_driver_why, "the CUDA driver (libcuda.so.1) could not be loaded: %s",
                 e ? e : "unknown error");
        return;
    }
    get_proc_v2_fn gp2 = (get_proc_v2_fn)dlsym(h, "cuGetProcAddress_v2");
    get_proc_v1_fn gp1 = gp2 ? NULL : (get_proc_v1_fn)dlsym(h, "cuGetProcAddress");
    CUresult (*drv_version)(int *) = (CUresult(*)(int *))dlsym(h, "cuDriverGetVersion");
    if (!gp2 && !gp1) {
        snprintf(g_driver_why, sizeof g_driver_why, "libcuda.so.1 has no cuGetProcAddress (driver older than CUDA 11.3)");
        return;
    }
    int version = 12000;
    if (drv_version && drv_version(&version) == CUDA_SUCCESS && version < 12000) {
        snprintf(g_driver_why, sizeof g_driver_why, "CUDA driver %d.%d is too old: dop needs 12.0 or newer",
                 version / 1000, version % 1000 / 10);
        return;
    }
    /* Ask for the ABI of CUDA 12.0: the prototypes dop calls have not changed since. */
    version = 12000;
#define LOAD(NAME)                                                                                                 \
    {                                                                                                              \
        void *fn = NULL;                                                                                           \
        CUdriverProcAddressQueryResult q = CU_GET_PROC_ADDRESS_SUCCESS;                                           \
        CUresult r = gp2 ? gp2(#NAME, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &q)                               \
                         : gp1(#NAME, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT);                                  \
        if (r != CUDA_SUCCESS || !fn || q != CU_GET_PROC_ADDRESS_SUCCESS) {                                        \
            snprintf(g_driver_why, sizeof g_driver_why, "the CUDA driver has no entry point %s", #NAME);           \
            return;                                                                                                \
        }                                                                                                          \
        memcpy(&g_driver.fn_##NAME, &fn, sizeof fn);                                                              \
    }
    RUNTIME_DRIVER_FUNCS(LOAD)
#undef LOAD
    g_driver_ok = &g_driver;
}

const runtime_driver *runtime_driver_load(char *why, size_t why_len)
{
    if (g_fake)
        return g_fake;
    pthread_once(&g_driver_once, driver_load_once);
    if (!g_driver_ok && why)
        snprintf(why, why_len, "%s", g_driver_why);
    return g_driver_ok;
}

void runtime_driver_install(const runtime_driver *fake)
{
    g_fake = fake;
}

static void nvrtc_load_once(void)
{
    static const char *const names[] = {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
                                        "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so.12"};
    void *h = NULL;
    const char *env = getenv("DOP_NVRTC_PATH");
    char tried[256] = "";
    if (env && *env) {
        h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
        snprintf(tried, sizeof tried, "%s", env);
    }
    for (size_t i = 0; !h && i < sizeof names / sizeof names[0]; ++i)
        h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(g_nvrtc_why, sizeof g_nvrtc_why,
                 "NVRTC could not be loaded (tried %s%slibnvrtc.so.13, .12, /usr/local/cuda/lib64; set DOP_NVRTC_PATH): %s",
                 tried, *tried ? ", " : "", e ? e : "unknown error");
        return;
    }
#define LOAD(NAME)                                                                                                 \
    {                                                                                                              \
        void *fn = dlsym(h, #NAME);                                                                                \
        if (!fn) {                                                                                                 \
            snprintf(g_nvrtc_why, sizeof g_nvrtc_why, "NVRTC has no entry point %s", #NAME);                       \
            return;                                                                                                \
        }                                                                                                          \
        memcpy(&g_nvrtc.fn_##NAME, &fn, sizeof fn);                                                               \
    }
    RUNTIME_NVRTC_FUNCS(LOAD)
#undef LOAD
    if (g_nvrtc.fn_nvrtcVersion(&g_nvrtc.major, &g_nvrtc.minor) != NVRTC_SUCCESS) {
        snprintf(g_nvrtc_why, sizeof g_nvrtc_why, "nvrtcVersion failed");
        return;
    }
    g_nvrtc_ok = &g_nvrtc;
}

const runtime_nvrtc *runtime_nvrtc_load(char *why, size_t why_len)
{
    pthread_once(&g_nvrtc_once, nvrtc_load_once);
    if (!g_nvrtc_ok && why)
        snprintf(why, why_len, "%s", g_nvrtc_why);
    return g_nvrtc_ok;
}

void runtime_cu_describe(const runtime_driver *drv, CUresult r, char *buf, size_t len)
{
    const char *name = NULL, *str = NULL;
    if (drv) {
        if (drv->fn_cuGetErrorName(r, &name) != CUDA_SUCCESS)
            name = NULL;
        if (drv->fn_cuGetErrorString(r, &str) != CUDA_SUCCESS)
            str = NULL;
    }
    if (name)
        snprintf(buf, len, "%s (%d): %s", name, (int)r, str ? str : "");
    else
        snprintf(buf, len, "CUresult %d", (int)r);
}
