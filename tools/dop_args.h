/*
 * dop_args.h -- what the tools and benchmarks share on their command lines:
 * the model presets (the linear layers of a model, as dop calls them) and
 * list parsing.
 */
#ifndef DOP_TOOLS_ARGS_H
#define DOP_TOOLS_ARGS_H

#include <stddef.h>

#include "dop.h"
#include "search_record.h"

typedef struct dop_model_shape {
    char name[24]; /* "qkv", "o", "gate_up", "down", or "shape" for --shape */
    int d_in, num_slices, d_out[DOP_MAX_SLICES];
} dop_model_shape;

/*
 * The linear layers of a preset: llama-2-7b, llama-3-8b, mistral-7b (q/k/v as
 * 3 slices, o, gate/up as 2 slices, down), or "grid" (the one-slice shapes of
 * WORKLOADS.md's kernel grid). Returns how many were written, -1 for an
 * unknown name or too small an array.
 */
int dop_model_shapes(const char *model, dop_model_shape *out, int max);
/* "DIN:DOUT[,DOUT...]" -> *out; 0, or -1 on bad text. */
int dop_parse_shape(const char *text, dop_model_shape *out);
/* "1,8,32" -> out[]; the count (>= 1), or -1 on bad text (empty, non-positive, junk). */
int dop_parse_ints(const char *text, int *out, int max);
/* "distinct,mixed" -> runtime_workload values; the count, or -1 naming the bad one in *bad. */
int dop_parse_layouts(const char *text, int *out, int max, const char **bad);

/*
 * Reads a JSON-lines file of tuning records into *recs (malloc'd, *n of them):
 * the lines search_record_parse accepts; blank lines are skipped; *bad counts
 * the others, the first `report` of which are printed to stderr as
 * "path:line: why" (then how many more). Returns 0; -1 when the file cannot
 * be opened (errno set, nothing printed); -2 when memory runs out (nothing
 * kept). On failure *recs is NULL and *n 0.
 */
int dop_read_records(const char *path, size_t report, search_record **recs, size_t *n, size_t *bad);

#endif
