/* dop_args.c -- model presets and list parsing for the tools (dop_args.h). */
#define _GNU_SOURCE
#include "dop_args.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime_check.h"

int dop_model_shapes(const char *model, dop_model_shape *out, int max)
{
    static const struct {
        const char *name;
        int hidden, kv, inter;
    } presets[] = {{"llama-2-7b", 4096, 4096, 11008}, {"llama-3-8b", 4096, 1024, 14336}, {"mistral-7b", 4096, 1024, 14336}};
    if (!strcmp(model, "grid")) {
        if (max < 3)
            return -1;
        out[0] = (dop_model_shape){"grid", 4096, 1, {4096}};
        out[1] = (dop_model_shape){"grid", 4096, 1, {11008}};
        out[2] = (dop_model_shape){"grid", 11008, 1, {4096}};
        return 3;
    }
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; ++i) {
        if (strcmp(presets[i].name, model))
            continue;
        if (max < 4)
            return -1;
        int h = presets[i].hidden, kv = presets[i].kv, f = presets[i].inter;
        out[0] = (dop_model_shape){"qkv", h, 3, {h, kv, kv}};
        out[1] = (dop_model_shape){"o", h, 1, {h}};
        out[2] = (dop_model_shape){"gate_up", h, 2, {f, f}};
        out[3] = (dop_model_shape){"down", f, 1, {h}};
        return 4;
    }
    return -1;
}

int dop_parse_shape(const char *s, dop_model_shape *out)
{
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "shape");
    char *end;
    long din = strtol(s, &end, 10);
    if (din <= 0 || din > (1 << 24) || *end != ':')
        return -1;
    out->d_in = (int)din;
    s = end + 1;
    while (*s) {
        if (out->num_slices == DOP_MAX_SLICES)
            return -1;
        long d = strtol(s, &end, 10);
        if (end == s || d <= 0 || d > (1 << 24) || (*end && *end != ','))
            return -1;
        out->d_out[out->num_slices++] = (int)d;
        s = *end ? end + 1 : end;
    }
    return out->num_slices ? 0 : -1;
}

int dop_parse_ints(const char *s, int *out, int max)
{
    int n = 0;
    while (s && *s) {
        if (n == max)
            return -1;
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v <= 0 || v > (1 << 30) || (*end && *end != ','))
            return -1;
        out[n++] = (int)v;
        s = *end ? end + 1 : end;
    }
    return n ? n : -1;
}

int dop_parse_layouts(const char *s, int *out, int max, const char **bad)
{
    static char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    int n = 0;
    char *save = NULL;
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        int w = runtime_workload_parse(t);
        if (w < 0 || n == max) {
            *bad = t;
            return -1;
        }
        out[n++] = w;
    }
    if (!n)
        *bad = s;
    return n ? n : -1;
}

int dop_read_records(const char *path, size_t report, search_record **recs, size_t *n, size_t *bad)
{
    *recs = NULL;
    *n = *bad = 0;
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    search_record *r = NULL;
    size_t cap = 0, lines = 0;
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    int rc = 0;
    while ((len = getline(&line, &lcap, f)) >= 0) {
        lines++;
        size_t l = (size_t)len;
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r'))
            --l;
        if (l == 0) /* blank lines are not records and not errors */
            continue;
        if (*n == cap) {
            size_t nc = cap ? 2 * cap : 1024;
            search_record *nr = realloc(r, nc * sizeof *nr);
            if (!nr) {
                rc = -2;
                break;
            }
            r = nr;
            cap = nc;
        }
        char why[256];
        if (search_record_parse(line, l, &r[*n], why, sizeof why) != 0) {
            if ((*bad)++ < report)
                fprintf(stderr, "%s:%zu: %s\n", path, lines, why);
            continue;
        }
        (*n)++;
    }
    free(line);
    fclose(f);
    if (rc) {
        free(r);
        *n = 0;
        return rc;
    }
    if (report && *bad > report)
        fprintf(stderr, "%s: %zu more bad lines\n", path, *bad - report);
    *recs = r;
    return 0;
}
