/*
 * dop_cache_cmd.c -- `dop cache ...`: look at and maintain the persistent
 * cache (cache/cache.h). Every subcommand takes `--path FILE` to pick a cache
 * file other than the default one.
 *
 *   dop cache path                         print the cache file's path
 *   dop cache ls [--db NAME]               one line per entry: db, hash, tag, sizes, age, status
 *   dop cache stats                        entries and bytes per database, file and map size
 *   dop cache export FILE                  compacted copy of the cache into a new FILE
 *   dop cache import FILE                  add FILE's valid records (newer wins)
 *   dop cache merge A B -o C               new cache C with the valid records of A and B
 *   dop cache verify [--repair]            check every record; --repair drops corrupt ones
 *   dop cache prune [--older-than DAYS] [--keep-tag TAG]...
 *                                          drop old records, records of other GPUs, corrupt ones
 *
 * Exit status: 0 done (verify: no corrupt record left), 1 failed or corrupt
 * records found, 2 bad usage. Read-only commands open the cache read-only.
 */
#define _POSIX_C_SOURCE 200809L
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cache.h"
#include "dop_cache_cmd.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: dop cache <command> [--path FILE] [options]\n"
               "  path                                   print the cache file's path\n"
               "  ls [--db NAME]                         list entries (db, hash, tag, key and value bytes, age)\n"
               "  stats                                  entries and bytes per database, file and map size\n"
               "  export FILE                            write a compacted copy to a new FILE\n"
               "  import FILE                            add the valid records of FILE (newer wins)\n"
               "  merge A B -o C                         new cache C with the valid records of A and B\n"
               "  verify [--repair]                      check every record; --repair drops corrupt ones\n"
               "  prune [--older-than DAYS] [--keep-tag TAG]...\n"
               "                                         drop records older than DAYS, records whose tag\n"
               "                                         (GPU) is not a kept one, and corrupt records\n"
               "databases: cubins schedules records costmodel. Default file: $DOP_CACHE_DIR/cache.mdb,\n"
               "else $XDG_CACHE_HOME/dop/cache.mdb, else ~/.cache/dop/cache.mdb.\n");
}

static const char *human(uint64_t n, char *buf, size_t len)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        ++u;
    }
    if (u == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.1f %s", v, unit[u]);
    return buf;
}

static const char *age_str(uint64_t created, uint64_t now, char *buf, size_t len)
{
    if (created > now) {
        snprintf(buf, len, "future");
        return buf;
    }
    uint64_t a = now - created;
    if (a < 120)
        snprintf(buf, len, "%llus", (unsigned long long)a);
    else if (a < 7200)
        snprintf(buf, len, "%llum", (unsigned long long)(a / 60));
    else if (a < 2 * 86400)
        snprintf(buf, len, "%lluh", (unsigned long long)(a / 3600));
    else
        snprintf(buf, len, "%llud", (unsigned long long)(a / 86400));
    return buf;
}

static void hex(const unsigned char *p, size_t n, char *out)
{
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; ++i) {
        out[2 * i] = d[p[i] >> 4];
        out[2 * i + 1] = d[p[i] & 15];
    }
    out[2 * n] = 0;
}

/* Opens the cache; prints why not. *missing is set when there is no file. */
static int open_store(const char *path, unsigned flags, cache_store **s, int *missing)
{
    char why[512];
    cache_status st = cache_open(path, flags, s, why, sizeof why);
    if (missing)
        *missing = st == CACHE_ERR_NOTFOUND;
    if (st == CACHE_OK)
        return 1;
    if (st == CACHE_ERR_NOTFOUND && missing) {
        printf("no cache yet: %s\n", why);
        return 0;
    }
    fprintf(stderr, "dop cache: %s (%s)\n", why, cache_status_string(st));
    return 0;
}

typedef struct ls_ctx {
    uint64_t now, n, corrupt;
} ls_ctx;

static int ls_one(void *user, const cache_entry *e)
{
    ls_ctx *c = user;
    char h[2 * CACHE_HASH_LEN + 1], vb[32], age[32];
    hex(e->hash, 8, h);
    c->n++;
    if (e->status != CACHE_OK) {
        c->corrupt++;
        printf("%-10s %-16s %-24s %6s %10s %7s %s: %s\n", cache_db_name(e->db), h, "-", "-",
               human(e->stored_len, vb, sizeof vb), "-", e->status == CACHE_CORRUPT ? "CORRUPT" : "newer", e->why);
        return 0;
    }
    char tag[CACHE_TAG_MAX + 1];
    memcpy(tag, e->rec.tag, e->rec.tag_len);
    tag[e->rec.tag_len] = 0;
    printf("%-10s %-16s %-24s %6zu %10s %7s ok\n", cache_db_name(e->db), h, e->rec.tag_len ? tag : "-",
           e->rec.key_len, human(e->rec.value_len, vb, sizeof vb), age_str(e->rec.created, c->now, age, sizeof age));
    return 0;
}

static int cmd_ls(const char *path, int argc, char **argv)
{
    cache_db db = CACHE_DB_ALL;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--db") && i + 1 < argc) {
            db = cache_db_from_name(argv[++i]);
            if (db == CACHE_DB_ALL) {
                fprintf(stderr, "dop cache ls: no database '%s' (cubins schedules records costmodel)\n", argv[i]);
                return 2;
            }
        } else {
            fprintf(stderr, "dop cache ls: unexpected '%s'\n", argv[i]);
            return 2;
        }
    }
    cache_store *s;
    int missing;
    if (!open_store(path, CACHE_READONLY, &s, &missing))
        return missing ? 0 : 1;
    ls_ctx c = {(uint64_t)time(NULL), 0, 0};
    printf("%-10s %-16s %-24s %6s %10s %7s %s\n", "DB", "HASH", "TAG", "KEY", "VALUE", "AGE", "STATUS");
    char why[512];
    cache_status st = cache_foreach(s, db, ls_one, &c, why, sizeof why);
    cache_close(s);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop cache ls: %s\n", why);
        return 1;
    }
    printf("%llu entries", (unsigned long long)c.n);
    if (c.corrupt)
        printf(", %llu corrupt or unreadable (dop cache verify --repair drops them)", (unsigned long long)c.corrupt);
    printf("\n");
    return 0;
}

static int cmd_stats(const char *path)
{
    cache_store *s;
    int missing;
    if (!open_store(path, CACHE_READONLY, &s, &missing))
        return missing ? 0 : 1;
    cache_stats st;
    char why[512], a[32], b[32], c[32];
    cache_status rc = cache_get_stats(s, &st, why, sizeof why);
    if (rc != CACHE_OK) {
        fprintf(stderr, "dop cache stats: %s\n", why);
        cache_close(s);
        return 1;
    }
    printf("path      %s\n", cache_path(s));
    printf("file      %s (in use %s, map %s, page %u bytes)\n", human(st.file_bytes, a, sizeof a),
           human(st.used_bytes, b, sizeof b), human(st.map_bytes, c, sizeof c), st.page_size);
    if (st.nolock)
        printf("mode      read-only, without locks (shipped or read-only cache)\n");
    else
        printf("readers   %u of %u slots used\n", st.readers_used, st.readers_max);
    printf("%-10s %10s %12s\n", "database", "entries", "bytes");
    uint64_t te = 0, tb = 0;
    for (int db = 0; db < CACHE_DB_COUNT; ++db) {
        printf("%-10s %10llu %12s\n", cache_db_name((cache_db)db), (unsigned long long)st.entries[db],
               human(st.bytes[db], a, sizeof a));
        te += st.entries[db];
        tb += st.bytes[db];
    }
    printf("%-10s %10llu %12s\n", "total", (unsigned long long)te, human(tb, a, sizeof a));
    cache_close(s);
    return 0;
}

static int cmd_export(const char *path, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: dop cache export FILE\n");
        return 2;
    }
    cache_store *s;
    if (!open_store(path, CACHE_READONLY, &s, NULL))
        return 1;
    char why[512];
    cache_status st = cache_export(s, argv[1], why, sizeof why);
    cache_close(s);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop cache export: %s (%s)\n", why, cache_status_string(st));
        return 1;
    }
    printf("exported a compacted copy to %s\n", argv[1]);
    return 0;
}

static void print_import(const char *what, const cache_import_report *r)
{
    printf("%s: %llu records read, %llu stored, %llu kept (the target's were as new), %llu corrupt skipped, "
           "%llu of a newer format skipped\n",
           what, (unsigned long long)r->scanned, (unsigned long long)r->imported, (unsigned long long)r->kept,
           (unsigned long long)r->corrupt, (unsigned long long)r->newer);
}

static int cmd_import(const char *path, int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: dop cache import FILE\n");
        return 2;
    }
    cache_store *s;
    if (!open_store(path, CACHE_CREATE, &s, NULL))
        return 1;
    cache_import_report r;
    char why[512];
    cache_status st = cache_import(s, argv[1], &r, why, sizeof why);
    cache_close(s);
    if (st == CACHE_OK || r.scanned)
        print_import("import", &r);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop cache import: %s (%s)\n", why, cache_status_string(st));
        return 1;
    }
    return 0;
}

static int cmd_merge(int argc, char **argv)
{
    const char *in[2] = {NULL, NULL}, *out = NULL;
    int nin = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "-o") && i + 1 < argc)
            out = argv[++i];
        else if (argv[i][0] != '-' && nin < 2)
            in[nin++] = argv[i];
        else {
            fprintf(stderr, "usage: dop cache merge A B -o C\n");
            return 2;
        }
    }
    if (nin != 2 || !out) {
        fprintf(stderr, "usage: dop cache merge A B -o C\n");
        return 2;
    }
    cache_import_report r;
    char why[512];
    cache_status st = cache_merge(in[0], in[1], out, &r, why, sizeof why);
    if (st == CACHE_OK || r.scanned)
        print_import("merge", &r);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop cache merge: %s (%s)\n", why, cache_status_string(st));
        return 1;
    }
    printf("wrote %s\n", out);
    return 0;
}

static void print_bad(void *user, cache_db db, const unsigned char hash[CACHE_HASH_LEN], const char *why)
{
    (void)user;
    char h[2 * CACHE_HASH_LEN + 1];
    hex(hash, CACHE_HASH_LEN, h);
    printf("corrupt  %-10s %s  %s\n", cache_db_name(db), h, why);
}

static int cmd_verify(const char *path, int argc, char **argv)
{
    int repair = 0;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--repair"))
            repair = 1;
        else {
            fprintf(stderr, "usage: dop cache verify [--repair]\n");
            return 2;
        }
    }
    cache_store *s;
    int missing;
    if (!open_store(path, repair ? 0 : CACHE_READONLY, &s, &missing))
        return missing ? 0 : 1;
    cache_verify_report r;
    char why[512];
    cache_status st = cache_verify(s, repair, &r, print_bad, NULL, why, sizeof why);
    cache_close(s);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop cache verify: %s (%s)\n", why, cache_status_string(st));
        return 1;
    }
    printf("verify: %llu records, %llu ok, %llu corrupt", (unsigned long long)r.records, (unsigned long long)r.ok,
           (unsigned long long)r.corrupt);
    if (repair)
        printf(", %llu dropped", (unsigned long long)r.dropped);
    if (r.newer)
        printf(", %llu of a newer format (left alone)", (unsigned long long)r.newer);
    printf("\n");
    if (r.corrupt > r.dropped) {
        if (!repair)
            printf("run `dop cache verify --repair` to drop the corrupt records\n");
        return 1;
    }
    return 0;
}

static int cmd_prune(const char *path, int argc, char **argv)
{
    double days = 0;
    const char **keep = calloc((size_t)argc + 1, sizeof *keep);
    size_t nkeep = 0;
    if (!keep)
        return 1;
    for (int i = 1; i < argc; ++i) {
        char *end;
        if (!strcmp(argv[i], "--older-than") && i + 1 < argc) {
            days = strtod(argv[++i], &end);
            if (*end || !(days > 0)) {
                fprintf(stderr, "dop cache prune: --older-than wants a positive number of days, got '%s'\n", argv[i]);
                free(keep);
                return 2;
            }
        } else if (!strcmp(argv[i], "--keep-tag") && i + 1 < argc) {
            keep[nkeep++] = argv[++i];
        } else {
            fprintf(stderr, "usage: dop cache prune [--older-than DAYS] [--keep-tag TAG]...\n");
            free(keep);
            return 2;
        }
    }
    cache_store *s;
    if (!open_store(path, 0, &s, NULL)) {
        free(keep);
        return 1;
    }
    cache_prune_report r;
    char why[512];
    uint64_t max_age = days > 0 ? (uint64_t)(days * 86400.0 + 0.5) : 0;
    if (days > 0 && max_age == 0)
        max_age = 1;
    cache_status st = cache_prune(s, max_age, keep, nkeep, 0, &r, why, sizeof why);
    cache_close(s);
    free(keep);
    printf("prune: %llu records, %llu dropped as old, %llu for other tags, %llu corrupt, %llu kept\n",
           (unsigned long long)r.scanned, (unsigned long long)r.dropped_age, (unsigned long long)r.dropped_tag,
           (unsigned long long)r.dropped_corrupt, (unsigned long long)r.kept);
    if (st != CACHE_OK) {
        fprintf(stderr, "dop cache prune: %s (%s)\n", why, cache_status_string(st));
        return 1;
    }
    return 0;
}

int dop_cache_command(int argc, char **argv)
{
    /* Take --path FILE out wherever it is. */
    const char *path = NULL;
    char **args = calloc((size_t)argc + 1, sizeof *args);
    int n = 0;
    if (!args)
        return 1;
    for (int i = 0; i < argc; ++i) {
        if (!strcmp(argv[i], "--path") && i + 1 < argc)
            path = argv[++i];
        else
            args[n++] = argv[i];
    }
    int rc;
    const char *cmd = n > 0 ? args[0] : NULL;
    if (!cmd || !strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        usage(cmd ? stdout : stderr);
        rc = cmd ? 0 : 2;
    } else if (!strcmp(cmd, "path")) {
        char buf[PATH_MAX], why[256];
        if (path) {
            printf("%s\n", path);
            rc = 0;
        } else if (cache_default_path(buf, sizeof buf, why, sizeof why) == CACHE_OK) {
            printf("%s\n", buf);
            rc = 0;
        } else {
            fprintf(stderr, "dop cache path: %s\n", why);
            rc = 1;
        }
    } else if (!strcmp(cmd, "ls"))
        rc = cmd_ls(path, n, args);
    else if (!strcmp(cmd, "stats"))
        rc = n == 1 ? cmd_stats(path) : 2;
    else if (!strcmp(cmd, "export"))
        rc = cmd_export(path, n, args);
    else if (!strcmp(cmd, "import"))
        rc = cmd_import(path, n, args);
    else if (!strcmp(cmd, "merge"))
        rc = cmd_merge(n, args);
    else if (!strcmp(cmd, "verify"))
        rc = cmd_verify(path, n, args);
    else if (!strcmp(cmd, "prune"))
        rc = cmd_prune(path, n, args);
    else {
        fprintf(stderr, "dop cache: unknown command '%s'\n", cmd);
        usage(stderr);
        rc = 2;
    }
    fflush(stdout);
    free(args);
    return rc;
}
