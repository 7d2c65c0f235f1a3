/*
 * kernels_codegen.h -- turns a schedule into CUDA source for NVRTC.
 */
#ifndef DOP_KERNELS_CODEGEN_H
#define DOP_KERNELS_CODEGEN_H

#include <stddef.h>

#include "search_schedule.h"

typedef enum kernels_dtype { KERNELS_F16 = 1, KERNELS_BF16 = 2 } kernels_dtype;

/* Names of the entry points in every generated module. */
#define KERNELS_ENTRY_SHRINK "dop_shrink"
#define KERNELS_ENTRY_EXPAND "dop_expand"
#define KERNELS_ENTRY_FUSED "dop_fused"
#define KERNELS_ENTRY_COUNTER "dop_fused_counter"
#define KERNELS_ENTRY_CLUSTER "dop_cluster"

/*
 * The entry points the module of schedule s holds: a module is compiled for one
 * sketch, with only what that sketch launches (NVRTC time is about a third of
 * a module with all four). split: shrink and expand (which also serve the
 * shrink and expand ops); fused: fused; counter: the counter kernel; cluster:
 * the cluster kernel (sm_90+ only: it uses cluster barriers and distributed
 * shared memory). Writes
 * the names to names[0..] (2 suffice) and returns how many.
 */
int kernels_entries(const search_schedule *s, const char *names[2]);

/*
 * Writes the complete source for (schedule, dtype, max_rank) into a malloc'd,
 * NUL-terminated string (*out, length *out_len). The same inputs always give
 * the same bytes. Returns 0, or -1 if the schedule is illegal (reason in why)
 * or memory ran out (why says so).
 */
int kernels_codegen(const search_schedule *s, kernels_dtype dtype, int max_rank, char **out, size_t *out_len,
                    char *why, size_t why_len);

/* The embedded template text (kernels_lora.cu), for hashing into cache keys. */
const char *kernels_template_source(void);

#endif
