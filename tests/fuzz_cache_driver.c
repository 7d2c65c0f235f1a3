/*
 * fuzz_cache_driver.c -- runs the fuzz target of fuzz_cache_record.c without
 * libFuzzer, so every build exercises the decoders (the CPU test
 * test_cache_fuzz), and writes the seed corpus for tools/fuzz.sh.
 *
 *   test_cache_fuzz                      seeds, ~1000 mutations of them, random inputs
 *   test_cache_fuzz FILE...              also replays these inputs (a corpus, a crash)
 *   test_cache_fuzz --write-seeds DIR    writes the seeds into DIR and exits
 *
 * Seeds: valid records of several shapes (empty and full tags, keys, values;
 * a record of a newer format version), and the head of a real cache file
 * made in a temporary directory (whole and cut short). Mutations: bit flips,
 * random bytes, cuts, insertions, and big numbers written over the length
 * fields. The random generator is fixed (DOP_FUZZ_SEED overrides it).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct buf {
    size_t len;
    uint8_t *p;
} buf;

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    uint64_t x = rng_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return rng_state = x;
}

static buf seeds[32];
static int nseeds;

static void add_seed(uint8_t selector, const void *p, size_t n)
{
    uint8_t *b = malloc(n + 1);
    if (!b)
        exit(1);
    b[0] = selector;
    if (n)
        memcpy(b + 1, p, n);
    seeds[nseeds].p = b;
    seeds[nseeds++].len = n + 1;
}

static void add_record(cache_db db, const char *tag, size_t key_len, size_t value_len, unsigned version)
{
    uint8_t *key = malloc(key_len + 1), *val = malloc(value_len + 1);
    for (size_t i = 0; i < key_len; ++i)
        key[i] = (uint8_t)rnd();
    for (size_t i = 0; i < value_len; ++i)
        val[i] = (uint8_t)rnd();
    size_t n = cache_record_size(strlen(tag), key_len, value_len);
    uint8_t *rec = malloc(n);
    if (!key || !val || !rec || cache_record_encode(rec, n, db, 1700000000u + (uint64_t)key_len, tag, key, key_len,
                                                     val, value_len, NULL, 0) != CACHE_OK) {
        fprintf(stderr, "encode failed\n");
        exit(1);
    }
    if (version != CACHE_RECORD_VERSION) { /* a newer format: same checksum rule */
        rec[4] = (uint8_t)version;
        rec[5] = (uint8_t)(version >> 8);
        XXH3_state_t st;
        XXH3_64bits_reset(&st);
        XXH3_64bits_update(&st, rec, 32);
        XXH3_64bits_update(&st, rec + 40, n - 40);
        uint64_t sum = XXH3_64bits_digest(&st);
        for (int i = 0; i < 8; ++i)
            rec[32 + i] = (uint8_t)(sum >> (8 * i));
    }
    add_seed(0, rec, n);
    free(key);
    free(val);
    free(rec);
}

static void add_meta_seeds(void)
{
    char dir[] = "/tmp/dop-fuzz-XXXXXX";
    if (!mkdtemp(dir))
        return;
    char path[256], why[256];
    snprintf(path, sizeof path, "%s/cache.mdb", dir);
    cache_store *s;
    if (cache_open(path, CACHE_CREATE, &s, why, sizeof why) != CACHE_OK) {
        fprintf(stderr, "fuzz driver: %s\n", why);
        exit(1);
    }
    for (int i = 0; i < 50; ++i) {
        char v[3000];
        memset(v, i, sizeof v);
        cache_put(s, (cache_db)(i % CACHE_DB_COUNT), &i, sizeof i, "sm_90", v, sizeof v, why, sizeof why);
    }
    cache_close(s);
    FILE *f = fopen(path, "rb");
    if (f) {
        uint8_t *head = malloc(8 + 128 * 1024);
        size_t n = fread(head + 8, 1, 128 * 1024, f);
        fseek(f, 0, SEEK_END);
        uint64_t size = (uint64_t)ftell(f);
        fclose(f);
        for (int i = 0; i < 8; ++i)
            head[i] = (uint8_t)(size >> (8 * i));
        add_seed(1, head, 8 + n);
        uint64_t cut = size / 3; /* the same head, a file cut short */
        for (int i = 0; i < 8; ++i)
            head[i] = (uint8_t)(cut >> (8 * i));
        add_seed(1, head, 8 + (n < cut ? n : (size_t)cut));
        free(head);
    }
    char lock[300];
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(path);
    unlink(lock);
    rmdir(dir);
}

static void make_seeds(void)
{
    add_record(CACHE_DB_CUBINS, "", 0, 0, CACHE_RECORD_VERSION);
    add_record(CACHE_DB_CUBINS, "sm_90:132:50:227", 40, 300, CACHE_RECORD_VERSION);
    add_record(CACHE_DB_SCHEDULES, "h200", 120, 16, CACHE_RECORD_VERSION);
    add_record(CACHE_DB_RECORDS, "x", 1, 2000, CACHE_RECORD_VERSION);
    add_record(CACHE_DB_COSTMODEL, "0123456789012345678901234567890123456789012345678901234567890123", 64, 64,
               CACHE_RECORD_VERSION);
    add_record(CACHE_DB_CUBINS, "sm_80", 10, 10, 2);
    add_meta_seeds();
}

static uint64_t runs;

static void run(const uint8_t *p, size_t n)
{
    LLVMFuzzerTestOneInput(p, n);
    runs++;
}

static void mutate_and_run(const buf *s)
{
    size_t cap = s->len + 64;
    uint8_t *m = malloc(cap);
    if (!m)
        exit(1);
    memcpy(m, s->p, s->len);
    size_t n = s->len;
    int kind = (int)(rnd() % 6);
    switch (kind) {
    case 0: /* bit flips */
        for (int i = 0, k = 1 + (int)(rnd() % 8); i < k && n > 1; ++i) {
            size_t at = 1 + rnd() % (n - 1);
            m[at] ^= (uint8_t)(1u << (rnd() % 8));
        }
        break;
    case 1: /* random bytes */
        for (int i = 0, k = 1 + (int)(rnd() % 4); i < k && n > 1; ++i)
            m[1 + rnd() % (n - 1)] = (uint8_t)rnd();
        break;
    case 2: /* cut */
        n = 1 + (n > 1 ? rnd() % (n - 1) : 0);
        break;
    case 3: { /* insert */
        size_t k = 1 + rnd() % 32, at = 1 + (n > 1 ? rnd() % (n - 1) : 0);
        memmove(m + at + k, m + at, n - at);
        for (size_t i = 0; i < k; ++i)
            m[at + i] = (uint8_t)rnd();
        n += k;
        break;
    }
    case 4: /* big numbers over the header fields (records: lengths; metas: file size) */
        for (int i = 0; i < 2; ++i) {
            size_t at = 1 + (size_t)(rnd() % 24);
            uint64_t v = rnd() % 3 == 0 ? ~(uint64_t)0 : rnd() >> (rnd() % 64);
            for (int b = 0; b < 8 && at + (size_t)b < n; ++b)
                m[at + (size_t)b] = (uint8_t)(v >> (8 * b));
        }
        break;
    default: /* the other parser */
        m[0] ^= 1;
        break;
    }
    run(m, n);
    free(m);
}

static int write_seeds(const char *dir)
{
    mkdir(dir, 0777);
    for (int i = 0; i < nseeds; ++i) {
        char path[4096];
        snprintf(path, sizeof path, "%s/seed-%02d", dir, i);
        FILE *f = fopen(path, "wb");
        if (!f || fwrite(seeds[i].p, 1, seeds[i].len, f) != seeds[i].len) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
        fclose(f);
    }
    printf("wrote %d seeds into %s\n", nseeds, dir);
    return 0;
}

static void replay(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(n > 0 ? (size_t)n : 1);
    size_t got = p ? fread(p, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    fclose(f);
    run(p, got);
    free(p);
}

int main(int argc, char **argv)
{
    const char *seed_env = getenv("DOP_FUZZ_SEED");
    if (seed_env && *seed_env)
        rng_state = strtoull(seed_env, NULL, 0) | 1;
    make_seeds();
    if (argc == 3 && !strcmp(argv[1], "--write-seeds"))
        return write_seeds(argv[2]);
    for (int i = 1; i < argc; ++i)
        replay(argv[i]);
    for (int i = 0; i < nseeds; ++i)
        run(seeds[i].p, seeds[i].len);
    for (int round = 0; round < 1000; ++round)
        mutate_and_run(&seeds[rnd() % (uint64_t)nseeds]);
    for (int i = 0; i < 300; ++i) { /* random inputs, some with a valid magic */
        uint8_t r[200];
        size_t n = 1 + rnd() % sizeof r;
        for (size_t j = 0; j < n; ++j)
            r[j] = (uint8_t)rnd();
        if (n > 5 && (i & 1))
            memcpy(r + 1, CACHE_RECORD_MAGIC, 4);
        run(r, n);
    }
    printf("test_cache_fuzz: %llu inputs through the record and meta-page decoders, no failure\n",
           (unsigned long long)runs);
    for (int i = 0; i < nseeds; ++i)
        free(seeds[i].p);
    return 0;
}
