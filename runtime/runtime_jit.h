/*
 * runtime_jit.h -- NVRTC compilation of generated kernel source to a cubin.
 */
#ifndef DOP_RUNTIME_JIT_H
#define DOP_RUNTIME_JIT_H

#include <stddef.h>

#include "runtime_driver.h"

#define RUNTIME_JIT_MAX_ENTRIES 5 /* the entry points of all sketches (kernels_codegen.h), as test_space_compile asks */

typedef struct runtime_jit_entry_info {
    char name[32];
    int registers;   /* -1 when ptxas did not report it */
    int stack_bytes;
    int spill_stores;
    int spill_loads;
} runtime_jit_entry_info;

typedef struct runtime_cubin {
    void *data;   /* malloc'd cubin image */
    size_t size;
    char *log;    /* malloc'd NVRTC log (ptxas -v report), may be "" */
    int num_entries;
    runtime_jit_entry_info entries[RUNTIME_JIT_MAX_ENTRIES];
    double seconds;
} runtime_cubin;

/*
 * Compiles src for sm_<cc_major><cc_minor> into a cubin. entry_names lists
 * the kernels whose resource usage is read from the ptxas report. Returns 0,
 * or -1 with a reason (including the head of the compile log) in why.
 */
int runtime_jit_compile(const runtime_nvrtc *nv, const char *src, int cc_major, int cc_minor,
                        const char *const *entry_names, int num_entries, runtime_cubin *out, char *why,
                        size_t why_len);

void runtime_cubin_free(runtime_cubin *c);

/* Reads one entry's resource usage from a ptxas -v report; 0 if found. */
int runtime_jit_parse_usage(const char *log, const char *entry, runtime_jit_entry_info *out);

#endif
