/*
 * runtime_jit.c -- NVRTC: source -> cubin for an exact architecture.
 *
 * The cubin (SASS, not PTX) is what is loaded and cached: no driver-side JIT
 * at load time, and the key of a cubin can name the exact arch it runs on.
 * ptxas runs with -v so registers, stack and spills of every entry point are
 * known without a GPU (a schedule that spills is marked as such).
 */
#define _POSIX_C_SOURCE 200809L
#include "runtime_jit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int runtime_jit_parse_usage(const char *log, const char *entry, runtime_jit_entry_info *out)
{
    char key[96];
    snprintf(out->name, sizeof out->name, "%s", entry);
    out->registers = out->stack_bytes = out->spill_stores = out->spill_loads = -1;
    snprintf(key, sizeof key, "Function properties for %s\n", entry);
    const char *p = log ? strstr(log, key) : NULL;
    if (!p)
        return -1;
    p += strlen(key);
    while (*p && (*p < '0' || *p > '9')) /* "ptxas         .     0 bytes stack frame, ..." */
        ++p;
    if (sscanf(p, "%d bytes stack frame, %d bytes spill stores, %d bytes spill loads", &out->stack_bytes,
               &out->spill_stores, &out->spill_loads) != 3)
        return -1;
    const char *u = strstr(p, "Used ");
    if (!u || sscanf(u, "Used %d registers", &out->registers) != 1)
        return -1;
    return 0;
}

void runtime_cubin_free(runtime_cubin *c)
{
    if (!c)
        return;
    free(c->data);
    free(c->log);
    memset(c, 0, sizeof *c);
}

int runtime_jit_compile(const runtime_nvrtc *nv, const char *src, int cc_major, int cc_minor,
                        const char *const *entry_names, int num_entries, runtime_cubin *out, char *why,
                        size_t why_len)
{
    memset(out, 0, sizeof *out);
    if (!nv || !src || cc_major < 8 || num_entries < 0 || num_entries > RUNTIME_JIT_MAX_ENTRIES) {
        snprintf(why, why_len, "invalid JIT request (arch sm_%d%d)", cc_major, cc_minor);
        return -1;
    }
    double t0 = now_seconds();
    char arch[64];
    snprintf(arch, sizeof arch, "--gpu-architecture=sm_%d%d", cc_major, cc_minor);
    const char *opts[] = {arch, "--std=c++17", "--ptxas-options=-v"};
    nvrtcProgram prog;
    nvrtcResult r = nv->fn_nvrtcCreateProgram(&prog, src, "dop_lora.cu", 0, NULL, NULL);
    if (r != NVRTC_SUCCESS) {
        snprintf(why, why_len, "nvrtcCreateProgram: %s", nv->fn_nvrtcGetErrorString(r));
        return -1;
    }
    nvrtcResult cr = nv->fn_nvrtcCompileProgram(prog, (int)(sizeof opts / sizeof opts[0]), opts);
    size_t log_size = 0;
    if (nv->fn_nvrtcGetProgramLogSize(prog, &log_size) != NVRTC_SUCCESS)
        log_size = 0;
    char *log = malloc(log_size + 1);
    if (!log) {
        nv->fn_nvrtcDestroyProgram(&prog);
        snprintf(why, why_len, "out of host memory for the NVRTC log");
        return -1;
    }
    log[0] = '\0';
    if (log_size && nv->fn_nvrtcGetProgramLog(prog, log) != NVRTC_SUCCESS)
        log[0] = '\0';
    log[log_size] = '\0';
    if (cr != NVRTC_SUCCESS) {
        snprintf(why, why_len, "NVRTC failed for sm_%d%d (%s): %.700s", cc_major, cc_minor,
                 nv->fn_nvrtcGetErrorString(cr), log);
        free(log);
        nv->fn_nvrtcDestroyProgram(&prog);
        return -1;
    }
    size_t size = 0;
    if (nv->fn_nvrtcGetCUBINSize(prog, &size) != NVRTC_SUCCESS || size == 0) {
        snprintf(why, why_len, "NVRTC produced no cubin for sm_%d%d", cc_major, cc_minor);
        free(log);
        nv->fn_nvrtcDestroyProgram(&prog);
        return -1;
    }
    void *data = malloc(size);
    if (!data || nv->fn_nvrtcGetCUBIN(prog, data) != NVRTC_SUCCESS) {
        snprintf(why, why_len, data ? "nvrtcGetCUBIN failed" : "out of host memory for the cubin");
        free(data);
        free(log);
        nv->fn_nvrtcDestroyProgram(&prog);
        return -1;
    }
    nv->fn_nvrtcDestroyProgram(&prog);
    out->data = data;
    out->size = size;
    out->log = log;
    out->num_entries = num_entries;
    for (int i = 0; i < num_entries; ++i)
        runtime_jit_parse_usage(log, entry_names[i], &out->entries[i]);
    out->seconds = now_seconds() - t0;
    return 0;
}
