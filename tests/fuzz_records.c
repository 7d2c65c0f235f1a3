/*
 * fuzz_records.c -- libFuzzer target for the tuning-record parser
 * (search/search_record.c).
 *
 * The input is one line. search_record_parse must never read outside it nor
 * crash; when it refuses, it says why and leaves the record zeroed; when it
 * accepts, the record must pass search_record_check, write back, and the
 * written line must parse to the same record and write to the same bytes
 * (nothing unchecked slipped through).
 *
 * Built with -fsanitize=fuzzer,address,undefined when DOP_FUZZ=ON (clang;
 * tools/fuzz.sh, which seeds the corpus with `test_records --write-seeds`).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "search_record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(void)
{
    __builtin_trap();
}

static int same(const search_record *a, const search_record *b)
{
    if (memcmp(&a->task, &b->task, sizeof a->task) || memcmp(&a->sched, &b->sched, sizeof a->sched) ||
        strcmp(a->target.name, b->target.name) || a->target.cc_major != b->target.cc_major ||
        a->target.cc_minor != b->target.cc_minor || a->target.sm_count != b->target.sm_count ||
        a->target.l2_bytes != b->target.l2_bytes || a->target.smem_per_block != b->target.smem_per_block ||
        a->ncosts != b->ncosts || a->error_no != b->error_no || a->all_cost_s != b->all_cost_s ||
        a->timestamp != b->timestamp || a->compiled != b->compiled || a->ran != b->ran || a->matched != b->matched ||
        a->spills != b->spills || memcmp(a->registers, b->registers, sizeof a->registers) ||
        memcmp(a->spill_bytes, b->spill_bytes, sizeof a->spill_bytes) || a->max_error != b->max_error ||
        a->version != b->version)
        return 0;
    for (int i = 0; i < SEARCH_RECORD_MAX_COSTS; ++i)
        if (a->costs_us[i] != b->costs_us[i])
            return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an exact-size copy, so a read past the end is caught */
    char *line = malloc(size ? size : 1);
    if (!line)
        return 0;
    if (size)
        memcpy(line, data, size);
    search_record r;
    char why[256];
    why[0] = '\0';
    if (search_record_parse(line, size, &r, why, sizeof why) != 0) {
        search_record zero;
        memset(&zero, 0, sizeof zero);
        if (!why[0] || memcmp(&r, &zero, sizeof r) != 0)
            fail(); /* every refusal says why, and leaves nothing half-filled */
        free(line);
        return 0;
    }
    if (!search_record_check(&r, NULL, 0))
        fail();
    static char out[SEARCH_RECORD_LINE_MAX], again[SEARCH_RECORD_LINE_MAX];
    int n = search_record_write(&r, out, sizeof out);
    if (n <= 0)
        fail();
    search_record back;
    if (search_record_parse(out, (size_t)n, &back, why, sizeof why) != 0 || !same(&r, &back))
        fail();
    if (search_record_write(&back, again, sizeof again) != n || memcmp(out, again, (size_t)n) != 0)
        fail();
    free(line);
    return 0;
}
