/*
 * test_cache.c -- the persistent cache (cache/) and `dop cache` (tools/dop_cache_cmd.c).
 *
 * - records: encode/decode round trips; every single-bit flip, every cut and
 *   any trailing byte is refused; a newer format version is told apart from
 *   damage; bad arguments are refused;
 * - canonical keys: distinct fields give distinct bytes, -0.0/NaN are
 *   canonical, overflow is flagged and refused;
 * - default path ($DOP_CACHE_DIR, $XDG_CACHE_HOME, $HOME);
 * - put/get/delete on every database, tags, empty and big values, read-only
 *   stores;
 * - damaged records (through cache_test_put_raw: flipped bits, cut short,
 *   another key's record, wrong database, newer format) and a flipped byte in
 *   the data file: get says CACHE_CORRUPT, drops the record, a later put
 *   replaces it;
 * - damaged files (garbage, zeros, cut short, a foreign LMDB file, a
 *   directory, unreadable, missing): clear errors, and work goes on with
 *   another cache;
 * - the map grows without losing entries; it stops at map_max with
 *   CACHE_ERR_FULL; another process growing the map (MDB_MAP_RESIZED);
 * - export (compact), import, merge (newer wins, corrupt skipped), prune (age,
 *   tags, corrupt), verify (report, drop);
 * - one environment per file per process (refcount, other spellings of the
 *   path, read-only after read-write), fork (the child reopens), read-only
 *   shipped caches without a lock file, network file systems refused;
 * - cache_foreach's callback may write to the store;
 * - the CLI subcommands, exit codes and output.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <lmdb.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache.h"
#include "dop_cache_cmd.h"

/* ---- helpers -------------------------------------------------------------------- */

static char g_dir[512];
static char g_why[512];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static int setup_dir(void **state)
{
    (void)state;
    const char *t = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/dop-cache-test-XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(g_dir))
        return -1;
    return 0;
}

static int teardown_dir(void **state)
{
    (void)state;
    chmod(g_dir, 0700);
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static const char *in_dir(const char *name)
{
    static char buf[64][600];
    static int i;
    i = (i + 1) % 64;
    snprintf(buf[i], sizeof buf[i], "%s/%s", g_dir, name);
    return buf[i];
}

#define CHECK_OK(expr)                                                                                               \
    do {                                                                                                             \
        cache_status st_ = (expr);                                                                                   \
        if (st_ != CACHE_OK)                                                                                         \
            print_message("%s:%d: %s: %s\n", __FILE__, __LINE__, cache_status_string(st_), g_why);                  \
        assert_int_equal(st_, CACHE_OK);                                                                             \
    } while (0)

static cache_store *open_rw(const char *path)
{
    cache_store *s = NULL;
    CHECK_OK(cache_open(path, CACHE_CREATE, &s, g_why, sizeof g_why));
    return s;
}

static void fill(unsigned char *p, size_t n, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; ++i) {
        x = x * 1664525u + 1013904223u;
        p[i] = (unsigned char)(x >> 24);
    }
}

static void key_of(cache_key *k, int i)
{
    cache_key_init(k, "test", 1);
    cache_key_i64(k, i);
}

static void put_i(cache_store *s, cache_db db, int i, size_t len, const char *tag)
{
    cache_key k;
    key_of(&k, i);
    unsigned char *v = malloc(len + 1);
    assert_non_null(v);
    fill(v, len, (uint32_t)i);
    CHECK_OK(cache_put(s, db, k.buf, k.len, tag, v, len, g_why, sizeof g_why));
    free(v);
}

static cache_status get_i(cache_store *s, cache_db db, int i, size_t len)
{
    cache_key k;
    key_of(&k, i);
    void *v = NULL;
    size_t n = 0;
    cache_status st = cache_get(s, db, k.buf, k.len, &v, &n, NULL, g_why, sizeof g_why);
    if (st == CACHE_OK) {
        unsigned char *want = malloc(len + 1);
        assert_non_null(want);
        fill(want, len, (uint32_t)i);
        assert_int_equal(n, len);
        assert_memory_equal(v, want, len);
        free(want);
        free(v);
    } else {
        assert_null(v);
    }
    return st;
}

/* A valid record for key i, created at `created`. */
static unsigned char *record_i(cache_db db, int i, size_t len, const char *tag, uint64_t created, size_t *n)
{
    cache_key k;
    key_of(&k, i);
    unsigned char *v = malloc(len + 1);
    fill(v, len, (uint32_t)i);
    *n = cache_record_size(strlen(tag), k.len, len);
    unsigned char *r = malloc(*n);
    assert_non_null(r);
    CHECK_OK(cache_record_encode(r, *n, db, created, tag, k.buf, k.len, v, len, g_why, sizeof g_why));
    free(v);
    return r;
}

static void hash_i(int i, unsigned char h[CACHE_HASH_LEN])
{
    cache_key k;
    key_of(&k, i);
    cache_key_hash(k.buf, k.len, h);
}

static void put_raw_i(cache_store *s, cache_db db, int i, const void *bytes, size_t n)
{
    unsigned char h[CACHE_HASH_LEN];
    hash_i(i, h);
    CHECK_OK(cache_test_put_raw(s, db, h, bytes, n, g_why, sizeof g_why));
}

static void write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(p, 1, n, f), n);
    fclose(f);
}

static uint64_t now_s(void) { return (uint64_t)time(NULL); }

/* XXH3-64 the way records are summed (tests build their own newer-format records). */
static uint64_t test_checksum(const unsigned char *rec, size_t n)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, rec, 32);
    XXH3_64bits_update(&st, rec + 40, n - 40);
    return XXH3_64bits_digest(&st);
}


/* ---- records ----------------------------------------------------------------------- */

static void test_record_roundtrip(void **state)
{
    (void)state;
    const char *tags[] = {"", "sm_90:132:50:227",
                          "0123456789012345678901234567890123456789012345678901234567890123"};
    size_t sizes[] = {0, 1, 17, 4096, 100000};
    for (size_t t = 0; t < 3; ++t)
        for (size_t a = 0; a < 5; ++a)
            for (size_t b = 0; b < 5; ++b) {
                size_t kl = sizes[a] > 60000 ? 60000 : sizes[a], vl = sizes[b];
                unsigned char *key = malloc(kl + 1), *val = malloc(vl + 1);
                fill(key, kl, 7);
                fill(val, vl, 9);
                size_t n = cache_record_size(strlen(tags[t]), kl, vl);
                assert_int_equal(n, CACHE_RECORD_HEADER + strlen(tags[t]) + kl + vl);
                unsigned char *r = malloc(n);
                CHECK_OK(cache_record_encode(r, n, CACHE_DB_RECORDS, 12345, tags[t], key, kl, val, vl, g_why,
                                             sizeof g_why));
                assert_memory_equal(r, "DOPC", 4);
                cache_record rec;
                CHECK_OK(cache_record_decode(r, n, &rec, g_why, sizeof g_why));
                assert_int_equal(rec.version, CACHE_RECORD_VERSION);
                assert_int_equal(rec.db, CACHE_DB_RECORDS);
                assert_int_equal(rec.created, 12345);
                assert_int_equal(rec.tag_len, strlen(tags[t]));
                assert_memory_equal(rec.tag, tags[t], rec.tag_len);
                assert_int_equal(rec.key_len, kl);
                assert_int_equal(rec.value_len, vl);
                if (kl)
                    assert_memory_equal(rec.key, key, kl);
                if (vl)
                    assert_memory_equal(rec.value, val, vl);
                free(r);
                free(key);
                free(val);
            }
}

static void test_record_rejects_damage(void **state)
{
    (void)state;
    unsigned char key[10], val[50];
    fill(key, sizeof key, 1);
    fill(val, sizeof val, 2);
    size_t n = cache_record_size(3, sizeof key, sizeof val);
    unsigned char *r = malloc(n + 1), *m = malloc(n + 1);
    CHECK_OK(cache_record_encode(r, n, CACHE_DB_CUBINS, 99, "gpu", key, sizeof key, val, sizeof val, g_why,
                                 sizeof g_why));
    cache_record rec;
    for (size_t bit = 0; bit < n * 8; ++bit) {
        memcpy(m, r, n);
        m[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        g_why[0] = 0;
        cache_status st = cache_record_decode(m, n, &rec, g_why, sizeof g_why);
        if (st != CACHE_CORRUPT)
            print_message("bit %zu: %s\n", bit, cache_status_string(st));
        assert_int_equal(st, CACHE_CORRUPT);
        assert_true(g_why[0] != 0);
    }
    for (size_t cut = 0; cut < n; ++cut)
        assert_int_equal(cache_record_decode(r, cut, &rec, g_why, sizeof g_why), CACHE_CORRUPT);
    memcpy(m, r, n);
    m[n] = 0;
    assert_int_equal(cache_record_decode(m, n + 1, &rec, g_why, sizeof g_why), CACHE_CORRUPT);
    assert_non_null(strstr(g_why, "trailing"));
    assert_int_equal(cache_record_decode(NULL, 0, &rec, g_why, sizeof g_why), CACHE_CORRUPT);

    /* Bad arguments to encode. */
    assert_int_equal(cache_record_encode(m, n, CACHE_DB_COUNT, 0, "", key, 1, val, 1, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    assert_int_equal(cache_record_encode(m, n, CACHE_DB_CUBINS, 0, "a\nb", key, 1, val, 1, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    char longtag[CACHE_TAG_MAX + 2];
    memset(longtag, 'x', sizeof longtag - 1);
    longtag[sizeof longtag - 1] = 0;
    assert_int_equal(cache_record_encode(m, n, CACHE_DB_CUBINS, 0, longtag, key, 1, val, 1, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    assert_int_equal(cache_record_encode(m, 10, CACHE_DB_CUBINS, 0, "", key, 1, val, 1, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    assert_int_equal(cache_record_size(0, CACHE_KEY_LEN_MAX + 1, 0), 0);
    assert_int_equal(cache_record_size(0, 0, (size_t)CACHE_VALUE_MAX + 1), 0);
    free(r);
    free(m);
}

static void test_record_newer_version(void **state)
{
    (void)state;
    size_t n;
    unsigned char *r = record_i(CACHE_DB_CUBINS, 1, 100, "t", 5, &n);
    /* Version 2 with a checksum that verifies: not ours, not corrupt. */
    r[4] = 2;
    uint64_t sum = test_checksum(r, n);
    for (int i = 0; i < 8; ++i)
        r[32 + i] = (unsigned char)(sum >> (8 * i));
    cache_record rec;
    assert_int_equal(cache_record_decode(r, n, &rec, g_why, sizeof g_why), CACHE_ERR_UNSUPPORTED);
    assert_non_null(strstr(g_why, "newer"));
    r[n - 1] ^= 1; /* ... and damaged: corrupt */
    assert_int_equal(cache_record_decode(r, n, &rec, g_why, sizeof g_why), CACHE_CORRUPT);
    free(r);
}

static unsigned char *newer_record(int i, size_t *n)
{
    unsigned char *r = record_i(CACHE_DB_CUBINS, i, 64, "", now_s(), n);
    r[4] = 7;
    uint64_t sum = test_checksum(r, *n);
    for (int b = 0; b < 8; ++b)
        r[32 + b] = (unsigned char)(sum >> (8 * b));
    return r;
}

/* ---- keys ----------------------------------------------------------------------------- */

static void test_key_builder(void **state)
{
    (void)state;
    cache_key a, b;
    cache_key_init(&a, "cubin", 1);
    cache_key_str(&a, "ab");
    cache_key_str(&a, "c");
    cache_key_init(&b, "cubin", 1);
    cache_key_str(&b, "a");
    cache_key_str(&b, "bc");
    assert_false(a.len == b.len && memcmp(a.buf, b.buf, a.len) == 0);

    cache_key_init(&a, "cubin", 1);
    cache_key_init(&b, "cubin", 2); /* schema version matters */
    assert_memory_not_equal(a.buf, b.buf, a.len);

    cache_key_init(&a, "x", 1);
    cache_key_u64(&a, 5);
    cache_key_init(&b, "x", 1);
    cache_key_i64(&b, 5); /* types matter */
    assert_memory_not_equal(a.buf, b.buf, a.len);

    cache_key_init(&a, "x", 1);
    cache_key_f64(&a, 0.0);
    cache_key_f64(&a, NAN);
    cache_key_init(&b, "x", 1);
    cache_key_f64(&b, -0.0);
    cache_key_f64(&b, -NAN);
    assert_int_equal(a.len, b.len);
    assert_memory_equal(a.buf, b.buf, a.len);

    /* Exact bytes of a small key (the documented encoding). */
    cache_key_init(&a, "k", 0x01020304);
    cache_key_u64(&a, 0x1122);
    const unsigned char want[] = {'K', 1, 's', 1, 0, 0, 0, 'k', 4, 3, 2, 1, 'u', 0x22, 0x11, 0, 0, 0, 0, 0, 0};
    assert_int_equal(a.len, sizeof want);
    assert_memory_equal(a.buf, want, sizeof want);

    /* Hash: deterministic, 16 bytes, differs for different keys. */
    unsigned char h1[16], h2[16];
    cache_key_hash(a.buf, a.len, h1);
    cache_key_hash(a.buf, a.len, h2);
    assert_memory_equal(h1, h2, 16);
    cache_key_hash(a.buf, a.len - 1, h2);
    assert_memory_not_equal(h1, h2, 16);

    /* Overflow is flagged and refused by put/get. */
    static unsigned char big[CACHE_KEY_MAX];
    cache_key_init(&a, "x", 1);
    cache_key_bytes(&a, big, sizeof big);
    assert_true(a.overflow);
    assert_true(a.len <= CACHE_KEY_MAX);
}

static void test_default_path(void **state)
{
    (void)state;
    char buf[1024];
    char *old_d = getenv("DOP_CACHE_DIR") ? strdup(getenv("DOP_CACHE_DIR")) : NULL;
    char *old_x = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    char *old_h = getenv("HOME") ? strdup(getenv("HOME")) : NULL;
    setenv("DOP_CACHE_DIR", "/a/b", 1);
    setenv("XDG_CACHE_HOME", "/x", 1);
    setenv("HOME", "/h", 1);
    CHECK_OK(cache_default_path(buf, sizeof buf, g_why, sizeof g_why));
    assert_string_equal(buf, "/a/b/cache.mdb");
    unsetenv("DOP_CACHE_DIR");
    CHECK_OK(cache_default_path(buf, sizeof buf, g_why, sizeof g_why));
    assert_string_equal(buf, "/x/dop/cache.mdb");
    setenv("XDG_CACHE_HOME", "relative", 1); /* ignored: must be absolute */
    CHECK_OK(cache_default_path(buf, sizeof buf, g_why, sizeof g_why));
    assert_string_equal(buf, "/h/.cache/dop/cache.mdb");
    unsetenv("XDG_CACHE_HOME");
    CHECK_OK(cache_default_path(buf, sizeof buf, g_why, sizeof g_why));
    assert_string_equal(buf, "/h/.cache/dop/cache.mdb");
    assert_int_equal(cache_default_path(buf, 5, g_why, sizeof g_why), CACHE_ERR_INVALID);

    /* cache_open(NULL) uses it and creates the directories. */
    setenv("DOP_CACHE_DIR", in_dir("deep/er"), 1);
    cache_store *s;
    CHECK_OK(cache_open(NULL, CACHE_CREATE, &s, g_why, sizeof g_why));
    assert_string_equal(cache_path(s), in_dir("deep/er/cache.mdb"));
    struct stat sb;
    assert_int_equal(stat(in_dir("deep/er"), &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0700);
    cache_close(s);

    if (old_d)
        setenv("DOP_CACHE_DIR", old_d, 1);
    else
        unsetenv("DOP_CACHE_DIR");
    if (old_x)
        setenv("XDG_CACHE_HOME", old_x, 1);
    if (old_h)
        setenv("HOME", old_h, 1);
    free(old_d);
    free(old_x);
    free(old_h);
}

/* ---- put / get / delete ---------------------------------------------------------------- */

static void test_put_get_delete(void **state)
{
    (void)state;
    cache_store *s = open_rw(in_dir("c.mdb"));
    assert_false(cache_is_readonly(s));
    for (int db = 0; db < CACHE_DB_COUNT; ++db)
        assert_int_equal(get_i(s, (cache_db)db, 1, 10), CACHE_MISS);
    /* The same key in different databases holds different values. */
    for (int db = 0; db < CACHE_DB_COUNT; ++db)
        put_i(s, (cache_db)db, 1, 100 + (size_t)db, "sm_90");
    for (int db = 0; db < CACHE_DB_COUNT; ++db)
        assert_int_equal(get_i(s, (cache_db)db, 1, 100 + (size_t)db), CACHE_OK);

    /* Tag comes back; overwrite replaces. */
    cache_key k;
    key_of(&k, 2);
    CHECK_OK(cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "tagA", "one", 3, g_why, sizeof g_why));
    CHECK_OK(cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "tagB", "second", 6, g_why, sizeof g_why));
    void *v;
    size_t n;
    char tag[CACHE_TAG_MAX + 1];
    CHECK_OK(cache_get(s, CACHE_DB_CUBINS, k.buf, k.len, &v, &n, tag, g_why, sizeof g_why));
    assert_int_equal(n, 6);
    assert_memory_equal(v, "second", 6);
    assert_string_equal(tag, "tagB");
    free(v);

    /* Empty value: OK with a non-NULL buffer. Empty key works too. */
    CHECK_OK(cache_put(s, CACHE_DB_SCHEDULES, "", 0, NULL, NULL, 0, g_why, sizeof g_why));
    CHECK_OK(cache_get(s, CACHE_DB_SCHEDULES, "", 0, &v, &n, NULL, g_why, sizeof g_why));
    assert_non_null(v);
    assert_int_equal(n, 0);
    free(v);

    /* A big value (overflow pages). */
    put_i(s, CACHE_DB_CUBINS, 3, 5u << 20, "");
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 3, 5u << 20), CACHE_OK);

    /* Delete. */
    CHECK_OK(cache_delete(s, CACHE_DB_CUBINS, k.buf, k.len, g_why, sizeof g_why));
    assert_int_equal(cache_delete(s, CACHE_DB_CUBINS, k.buf, k.len, g_why, sizeof g_why), CACHE_MISS);
    assert_int_equal(cache_get(s, CACHE_DB_CUBINS, k.buf, k.len, &v, &n, NULL, g_why, sizeof g_why), CACHE_MISS);

    /* Bad arguments. */
    assert_int_equal(cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "bad\ttag", "x", 1, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    assert_int_equal(cache_put(s, (cache_db)9, k.buf, k.len, "", "x", 1, g_why, sizeof g_why), CACHE_ERR_INVALID);
    assert_int_equal(cache_put(s, CACHE_DB_CUBINS, NULL, 3, "", "x", 1, g_why, sizeof g_why), CACHE_ERR_INVALID);
    assert_int_equal(cache_put(NULL, CACHE_DB_CUBINS, k.buf, k.len, "", "x", 1, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    assert_int_equal(cache_get(s, CACHE_DB_CUBINS, k.buf, k.len, NULL, &n, NULL, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    static unsigned char bigkey[CACHE_KEY_LEN_MAX + 1];
    assert_int_equal(cache_put(s, CACHE_DB_CUBINS, bigkey, sizeof bigkey, "", "x", 1, g_why, sizeof g_why),
                     CACHE_ERR_INVALID);
    cache_store *bad;
    assert_int_equal(cache_open(in_dir("c.mdb"), 0x80, &bad, g_why, sizeof g_why), CACHE_ERR_INVALID);
    assert_null(bad);
    cache_close(NULL);

    /* A read-only store on the same file reads and refuses writes. */
    cache_store *ro;
    CHECK_OK(cache_open(in_dir("c.mdb"), CACHE_READONLY, &ro, g_why, sizeof g_why));
    assert_true(cache_is_readonly(ro));
    assert_int_equal(get_i(ro, CACHE_DB_CUBINS, 3, 5u << 20), CACHE_OK);
    assert_int_equal(cache_put(ro, CACHE_DB_CUBINS, "k", 1, "", "x", 1, g_why, sizeof g_why), CACHE_ERR_READONLY);
    assert_int_equal(cache_delete(ro, CACHE_DB_CUBINS, "k", 1, g_why, sizeof g_why), CACHE_ERR_READONLY);
    cache_close(ro);
    cache_close(s);

    /* Missing files. */
    assert_int_equal(cache_open(in_dir("none.mdb"), CACHE_READONLY, &ro, g_why, sizeof g_why), CACHE_ERR_NOTFOUND);
    assert_int_equal(cache_open(in_dir("none.mdb"), 0, &ro, g_why, sizeof g_why), CACHE_ERR_NOTFOUND);
    assert_int_equal(access(in_dir("none.mdb"), F_OK), -1);
}

/* ---- damaged records ------------------------------------------------------------------- */

static void expect_corrupt_then_rebuilt(cache_store *s, int i, size_t len)
{
    g_why[0] = 0;
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, i, len), CACHE_CORRUPT);
    assert_non_null(strstr(g_why, "dropped"));
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, i, len), CACHE_MISS); /* it was deleted */
    put_i(s, CACHE_DB_CUBINS, i, len, "");                           /* rebuilt */
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, i, len), CACHE_OK);
}

static void test_corrupt_records(void **state)
{
    (void)state;
    cache_store *s = open_rw(in_dir("c.mdb"));
    size_t n;

    /* flipped bits in the value, the header, the checksum */
    size_t where[] = {0, 5, 12, 20, 33, 45, 200};
    for (size_t w = 0; w < sizeof where / sizeof where[0]; ++w) {
        unsigned char *r = record_i(CACHE_DB_CUBINS, 10, 300, "t", now_s(), &n);
        r[where[w]] ^= 0x10;
        put_raw_i(s, CACHE_DB_CUBINS, 10, r, n);
        expect_corrupt_then_rebuilt(s, 10, 300);
        free(r);
    }
    /* cut short */
    unsigned char *r = record_i(CACHE_DB_CUBINS, 11, 300, "t", now_s(), &n);
    put_raw_i(s, CACHE_DB_CUBINS, 11, r, n - 17);
    expect_corrupt_then_rebuilt(s, 11, 300);
    put_raw_i(s, CACHE_DB_CUBINS, 11, r, 3);
    expect_corrupt_then_rebuilt(s, 11, 300);
    put_raw_i(s, CACHE_DB_CUBINS, 11, r, 0);
    expect_corrupt_then_rebuilt(s, 11, 300);
    free(r);

    /* another key's (valid) record under this key's hash: a collision */
    r = record_i(CACHE_DB_CUBINS, 99, 300, "t", now_s(), &n);
    put_raw_i(s, CACHE_DB_CUBINS, 12, r, n);
    expect_corrupt_then_rebuilt(s, 12, 300);
    free(r);

    /* a record of another database */
    r = record_i(CACHE_DB_SCHEDULES, 13, 300, "t", now_s(), &n);
    put_raw_i(s, CACHE_DB_CUBINS, 13, r, n);
    expect_corrupt_then_rebuilt(s, 13, 300);
    free(r);

    /* a newer format: a miss, left in place, replaced by a put */
    r = newer_record(14, &n);
    put_raw_i(s, CACHE_DB_CUBINS, 14, r, n);
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 14, 64), CACHE_MISS);
    assert_non_null(strstr(g_why, "newer"));
    cache_verify_report vr;
    CHECK_OK(cache_verify(s, 1, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.newer, 1);
    assert_int_equal(vr.corrupt, 0);
    put_i(s, CACHE_DB_CUBINS, 14, 64, "");
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 14, 64), CACHE_OK);
    free(r);

    /* A read-only store reports corruption but cannot drop it. */
    r = record_i(CACHE_DB_CUBINS, 15, 300, "t", now_s(), &n);
    r[100] ^= 1;
    put_raw_i(s, CACHE_DB_CUBINS, 15, r, n);
    cache_store *ro;
    CHECK_OK(cache_open(in_dir("c.mdb"), CACHE_READONLY, &ro, g_why, sizeof g_why));
    assert_int_equal(get_i(ro, CACHE_DB_CUBINS, 15, 300), CACHE_CORRUPT);
    assert_non_null(strstr(g_why, "read-only"));
    assert_int_equal(get_i(ro, CACHE_DB_CUBINS, 15, 300), CACHE_CORRUPT);
    cache_close(ro);
    expect_corrupt_then_rebuilt(s, 15, 300);
    free(r);
    cache_close(s);
}

/* A byte of a stored value flipped in the data file itself. */
static void test_corrupt_on_disk(void **state)
{
    (void)state;
    const char *path = in_dir("c.mdb");
    cache_store *s = open_rw(path);
    size_t len = 64 * 1024;
    put_i(s, CACHE_DB_CUBINS, 42, len, "");
    put_i(s, CACHE_DB_CUBINS, 43, 1000, "");
    cache_close(s);

    /* Find the value's bytes in the file. */
    unsigned char *want = malloc(len);
    fill(want, len, 42);
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    unsigned char *all = malloc((size_t)size);
    fseek(f, 0, SEEK_SET);
    assert_int_equal(fread(all, 1, (size_t)size, f), (size_t)size);
    long at = -1;
    for (long i = 0; i + 64 <= size; ++i)
        if (memcmp(all + i, want, 64) == 0) {
            at = i;
            break;
        }
    assert_true(at >= 0);
    fseek(f, at + 30000, SEEK_SET);
    unsigned char b = all[at + 30000] ^ 0x55;
    fwrite(&b, 1, 1, f);
    fclose(f);
    free(all);
    free(want);

    s = open_rw(path);
    cache_verify_report vr;
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.corrupt, 1);
    assert_int_equal(vr.ok, 1);
    expect_corrupt_then_rebuilt(s, 42, len);
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 43, 1000), CACHE_OK);
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.corrupt, 0);
    cache_close(s);
}

/* ---- damaged files ------------------------------------------------------------------ */

static void expect_open_fails(const char *path, unsigned flags, cache_status want, const char *needle)
{
    cache_store *s = (cache_store *)1;
    g_why[0] = 0;
    cache_status st = cache_open(path, flags, &s, g_why, sizeof g_why);
    if (st != want)
        print_message("open %s: %s: %s\n", path, cache_status_string(st), g_why);
    assert_int_equal(st, want);
    assert_null(s);
    assert_non_null(strstr(g_why, path));
    if (needle && !strstr(g_why, needle))
        print_message("message: %s\n", g_why);
    if (needle)
        assert_non_null(strstr(g_why, needle));
}

static void test_damaged_files(void **state)
{
    (void)state;
    unsigned char *junk = malloc(1 << 16);
    fill(junk, 1 << 16, 5);
    write_file(in_dir("garbage.mdb"), junk, 1 << 16);
    expect_open_fails(in_dir("garbage.mdb"), CACHE_CREATE, CACHE_ERR_DAMAGED, "damaged");
    expect_open_fails(in_dir("garbage.mdb"), CACHE_READONLY, CACHE_ERR_DAMAGED, "damaged");
    memset(junk, 0, 1 << 14);
    write_file(in_dir("zeros.mdb"), junk, 1 << 14);
    expect_open_fails(in_dir("zeros.mdb"), CACHE_CREATE, CACHE_ERR_DAMAGED, "damaged");
    write_file(in_dir("tiny.mdb"), "DOPC", 4);
    expect_open_fails(in_dir("tiny.mdb"), CACHE_CREATE, CACHE_ERR_DAMAGED, "too short");
    free(junk);

    /* A real cache cut short. */
    const char *cut = in_dir("cut.mdb");
    cache_store *s = open_rw(cut);
    for (int i = 0; i < 200; ++i)
        put_i(s, CACHE_DB_CUBINS, i, 20000, "");
    cache_stats st;
    CHECK_OK(cache_get_stats(s, &st, g_why, sizeof g_why));
    cache_close(s);
    assert_int_equal(truncate(cut, (off_t)st.page_size * 3), 0);
    expect_open_fails(cut, CACHE_CREATE, CACHE_ERR_DAMAGED, "cut short");
    expect_open_fails(cut, CACHE_READONLY, CACHE_ERR_DAMAGED, "cut short");
    assert_int_equal(truncate(cut, (off_t)st.page_size + 100), 0);
    expect_open_fails(cut, CACHE_CREATE, CACHE_ERR_DAMAGED, NULL);

    /* An LMDB file that is not a dop cache is refused, not written into. */
    const char *foreign = in_dir("foreign.mdb");
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_open(env, foreign, MDB_NOSUBDIR, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, NULL, 0, &dbi), 0);
    MDB_val k = {5, "hello"}, v = {5, "world"};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    expect_open_fails(foreign, CACHE_CREATE, CACHE_ERR_DAMAGED, "not a dop cache");

    /* A directory; an unreadable file (not as root: root reads anything). */
    mkdir(in_dir("adir"), 0700);
    expect_open_fails(in_dir("adir"), CACHE_CREATE, CACHE_ERR_INVALID, "directory");
    if (geteuid() != 0) {
        s = open_rw(in_dir("locked.mdb"));
        cache_close(s);
        chmod(in_dir("locked.mdb"), 0);
        expect_open_fails(in_dir("locked.mdb"), CACHE_CREATE, CACHE_ERR_IO, "Permission denied");
        expect_open_fails(in_dir("locked.mdb"), CACHE_READONLY, CACHE_ERR_IO, "Permission denied");
        chmod(in_dir("locked.mdb"), 0600);
    }

    /* The caller keeps working: another cache opens and works. */
    s = open_rw(in_dir("good.mdb"));
    put_i(s, CACHE_DB_CUBINS, 1, 10, "");
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 1, 10), CACHE_OK);
    cache_close(s);
}

/* ---- map growth --------------------------------------------------------------------- */

static void test_map_growth(void **state)
{
    (void)state;
    cache_options opt;
    cache_options_init(&opt);
    opt.map_initial = 1u << 20;
    cache_store *s;
    const char *path = in_dir("grow.mdb");
    CHECK_OK(cache_open_ex(path, &opt, &s, g_why, sizeof g_why));
    cache_stats st;
    CHECK_OK(cache_get_stats(s, &st, g_why, sizeof g_why));
    uint64_t map0 = st.map_bytes;
    assert_true(map0 <= (2u << 20));
    const int N = 300;
    for (int i = 0; i < N; ++i)
        put_i(s, (cache_db)(i % CACHE_DB_COUNT), i, 64 * 1024 + (size_t)i, "g");
    CHECK_OK(cache_get_stats(s, &st, g_why, sizeof g_why));
    assert_true(st.map_bytes >= (16u << 20));
    uint64_t total = 0;
    for (int db = 0; db < CACHE_DB_COUNT; ++db)
        total += st.entries[db];
    assert_int_equal(total, N);
    for (int i = 0; i < N; ++i)
        assert_int_equal(get_i(s, (cache_db)(i % CACHE_DB_COUNT), i, 64 * 1024 + (size_t)i), CACHE_OK);
    cache_close(s);
    /* Reopened (with the small initial size again): the file's size wins. */
    CHECK_OK(cache_open_ex(path, &opt, &s, g_why, sizeof g_why));
    cache_verify_report vr;
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.ok, N);
    assert_int_equal(vr.corrupt, 0);
    cache_close(s);
}

static void test_map_full(void **state)
{
    (void)state;
    cache_options opt;
    cache_options_init(&opt);
    opt.map_initial = 1u << 20;
    opt.map_max = 4u << 20;
    cache_store *s;
    CHECK_OK(cache_open_ex(in_dir("full.mdb"), &opt, &s, g_why, sizeof g_why));
    int stored = 0;
    cache_status st = CACHE_OK;
    for (int i = 0; i < 1000 && st == CACHE_OK; ++i) {
        cache_key k;
        key_of(&k, i);
        unsigned char v[50000];
        fill(v, sizeof v, (uint32_t)i);
        st = cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "", v, sizeof v, g_why, sizeof g_why);
        if (st == CACHE_OK)
            ++stored;
    }
    assert_int_equal(st, CACHE_ERR_FULL);
    assert_non_null(strstr(g_why, "full"));
    assert_true(stored > 30);
    for (int i = 0; i < stored; ++i)
        assert_int_equal(get_i(s, CACHE_DB_CUBINS, i, 50000), CACHE_OK);
    /* Deleting makes room again. */
    for (int i = 0; i < stored / 2; ++i) {
        cache_key k;
        key_of(&k, i);
        CHECK_OK(cache_delete(s, CACHE_DB_CUBINS, k.buf, k.len, g_why, sizeof g_why));
    }
    put_i(s, CACHE_DB_CUBINS, 5000, 50000, "");
    cache_verify_report vr;
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.corrupt, 0);
    assert_int_equal(vr.ok, (uint64_t)(stored - stored / 2 + 1));
    cache_close(s);
}

/* Another process grows the map far past ours: we get MDB_MAP_RESIZED and adopt it. */
static void test_map_resized_by_other_process(void **state)
{
    (void)state;
    cache_options opt;
    cache_options_init(&opt);
    opt.map_initial = 1u << 20;
    const char *path = in_dir("resized.mdb");
    cache_store *s;
    CHECK_OK(cache_open_ex(path, &opt, &s, g_why, sizeof g_why));
    put_i(s, CACHE_DB_CUBINS, 0, 100, "");
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 0, 100), CACHE_OK);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cache_store *c;
        char why[256];
        if (cache_open_ex(path, &opt, &c, why, sizeof why) != CACHE_OK)
            _exit(10);
        if (cache_test_env_id(c) == cache_test_env_id(s))
            _exit(11);
        unsigned char *v = malloc(256 * 1024);
        for (int i = 1; i <= 100; ++i) {
            cache_key k;
            key_of(&k, i);
            fill(v, 256 * 1024, (uint32_t)i);
            if (cache_put(c, CACHE_DB_CUBINS, k.buf, k.len, "", v, 256 * 1024, why, sizeof why) != CACHE_OK)
                _exit(12);
        }
        cache_close(c);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    for (int i = 1; i <= 100; ++i)
        assert_int_equal(get_i(s, CACHE_DB_CUBINS, i, 256 * 1024), CACHE_OK);
    put_i(s, CACHE_DB_CUBINS, 101, 100, "");
    cache_stats st;
    CHECK_OK(cache_get_stats(s, &st, g_why, sizeof g_why));
    assert_true(st.map_bytes >= (25u << 20));
    cache_close(s);
}

/* ---- export / import / merge / prune / verify --------------------------------------------- */

static uint64_t count_entries(const char *path)
{
    cache_store *s;
    CHECK_OK(cache_open(path, CACHE_READONLY, &s, g_why, sizeof g_why));
    cache_stats st;
    CHECK_OK(cache_get_stats(s, &st, g_why, sizeof g_why));
    cache_close(s);
    uint64_t n = 0;
    for (int db = 0; db < CACHE_DB_COUNT; ++db)
        n += st.entries[db];
    return n;
}

static void test_export_import_merge(void **state)
{
    (void)state;
    const char *a_path = in_dir("a.mdb"), *b_path = in_dir("b.mdb");
    cache_store *a = open_rw(a_path);
    for (int i = 0; i < 50; ++i)
        put_i(a, (cache_db)(i % CACHE_DB_COUNT), i, 3000 + (size_t)i, "gpuA");
    for (int i = 50; i < 80; ++i) /* deleted again: free pages that export leaves out */
        put_i(a, CACHE_DB_CUBINS, i, 30000, "gpuA");
    for (int i = 50; i < 80; ++i) {
        cache_key k;
        key_of(&k, i);
        CHECK_OK(cache_delete(a, CACHE_DB_CUBINS, k.buf, k.len, g_why, sizeof g_why));
    }
    CHECK_OK(cache_export(a, in_dir("x.mdb"), g_why, sizeof g_why));
    assert_int_equal(cache_export(a, in_dir("x.mdb"), g_why, sizeof g_why), CACHE_ERR_EXISTS);
    assert_int_equal(count_entries(in_dir("x.mdb")), 50);
    struct stat sa, sx;
    stat(a_path, &sa);
    stat(in_dir("x.mdb"), &sx);
    assert_true(sx.st_size < sa.st_size);
    cache_store *x;
    CHECK_OK(cache_open(in_dir("x.mdb"), CACHE_READONLY, &x, g_why, sizeof g_why));
    cache_verify_report vr;
    CHECK_OK(cache_verify(x, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.ok, 50);
    assert_int_equal(get_i(x, CACHE_DB_SCHEDULES, 5, 3005), CACHE_OK);
    cache_close(x);

    /* b: 30 keys of its own, 10 shared ones newer than a's, 5 older, a
     * corrupt record and one of a newer format. */
    cache_store *b = open_rw(b_path);
    for (int i = 100; i < 130; ++i)
        put_i(b, CACHE_DB_CUBINS, i, 500, "gpuB");
    size_t n;
    for (int i = 0; i < 15; ++i) {
        cache_db db = (cache_db)(i % CACHE_DB_COUNT);
        uint64_t when = i < 10 ? now_s() + 1000 : 1000;
        unsigned char *r = record_i(db, i, 777, "gpuB", when, &n);
        put_raw_i(b, db, i, r, n);
        free(r);
    }
    unsigned char *r = record_i(CACHE_DB_CUBINS, 200, 100, "", now_s(), &n);
    r[50] ^= 4;
    put_raw_i(b, CACHE_DB_CUBINS, 200, r, n);
    free(r);
    r = newer_record(201, &n);
    put_raw_i(b, CACHE_DB_CUBINS, 201, r, n);
    free(r);
    cache_close(b);

    cache_import_report ir;
    const char *c_path = in_dir("c.mdb");
    CHECK_OK(cache_merge(a_path, b_path, c_path, &ir, g_why, sizeof g_why));
    assert_int_equal(ir.scanned, 50 + 30 + 15 + 2);
    assert_int_equal(ir.corrupt, 1);
    assert_int_equal(ir.newer, 1);
    assert_int_equal(ir.kept, 5);
    assert_int_equal(ir.imported, 50 + 30 + 10);
    assert_int_equal(count_entries(c_path), 80);
    assert_int_equal(cache_merge(a_path, b_path, c_path, &ir, g_why, sizeof g_why), CACHE_ERR_EXISTS);
    cache_store *c;
    CHECK_OK(cache_open(c_path, CACHE_READONLY, &c, g_why, sizeof g_why));
    for (int i = 0; i < 15; ++i) /* b's newer ones won, a's newer ones stayed */
        assert_int_equal(get_i(c, (cache_db)(i % CACHE_DB_COUNT), i, i < 10 ? 777 : 3000 + (size_t)i), CACHE_OK);
    for (int i = 15; i < 50; ++i)
        assert_int_equal(get_i(c, (cache_db)(i % CACHE_DB_COUNT), i, 3000 + (size_t)i), CACHE_OK);
    for (int i = 100; i < 130; ++i)
        assert_int_equal(get_i(c, CACHE_DB_CUBINS, i, 500), CACHE_OK);
    cache_close(c);
    /* no temporary files left behind */
    DIR *dir = opendir(g_dir);
    assert_non_null(dir);
    for (struct dirent *de; (de = readdir(dir));)
        assert_null(strstr(de->d_name, ".merge.") ? de->d_name : strstr(de->d_name, ".export."));
    closedir(dir);

    /* import into a live store; from itself; from garbage; from nothing */
    CHECK_OK(cache_import(a, b_path, &ir, g_why, sizeof g_why));
    assert_int_equal(ir.imported, 40);
    assert_int_equal(cache_import(a, a_path, &ir, g_why, sizeof g_why), CACHE_ERR_INVALID);
    unsigned char junk[20000];
    fill(junk, sizeof junk, 3);
    write_file(in_dir("junk.mdb"), junk, sizeof junk);
    assert_int_equal(cache_import(a, in_dir("junk.mdb"), &ir, g_why, sizeof g_why), CACHE_ERR_DAMAGED);
    assert_int_equal(cache_import(a, in_dir("nothing.mdb"), &ir, g_why, sizeof g_why), CACHE_ERR_NOTFOUND);
    cache_close(a);
}

static void test_prune(void **state)
{
    (void)state;
    cache_store *s = open_rw(in_dir("p.mdb"));
    uint64_t now = 2000000000u;
    size_t n;
    const char *tags[] = {"gpuA", "gpuB", ""};
    for (int i = 0; i < 30; ++i) {
        uint64_t created = i % 2 ? now - 10 * 86400 : now - 86400; /* odd: old */
        unsigned char *r = record_i(CACHE_DB_SCHEDULES, i, 100, tags[i % 3], created, &n);
        put_raw_i(s, CACHE_DB_SCHEDULES, i, r, n);
        free(r);
    }
    unsigned char *r = record_i(CACHE_DB_SCHEDULES, 100, 100, "gpuA", now, &n);
    r[60] ^= 1;
    put_raw_i(s, CACHE_DB_SCHEDULES, 100, r, n);
    free(r);
    r = newer_record(101, &n);
    put_raw_i(s, CACHE_DB_CUBINS, 101, r, n);
    free(r);

    cache_prune_report pr;
    CHECK_OK(cache_prune(s, 5 * 86400, NULL, 0, now, &pr, g_why, sizeof g_why));
    assert_int_equal(pr.scanned, 32);
    assert_int_equal(pr.dropped_age, 15);
    assert_int_equal(pr.dropped_corrupt, 1);
    assert_int_equal(pr.dropped_tag, 0);
    assert_int_equal(pr.kept, 16);
    /* keep gpuA and untagged ones */
    const char *keep[] = {"gpuA"};
    CHECK_OK(cache_prune(s, 0, keep, 1, now, &pr, g_why, sizeof g_why));
    assert_int_equal(pr.scanned, 16);
    assert_int_equal(pr.dropped_tag, 5); /* the young gpuB ones: i = 4, 10, 16, 22, 28 */
    for (int i = 0; i < 30; ++i) {
        int alive = i % 2 == 0 && i % 3 != 1;
        assert_int_equal(get_i(s, CACHE_DB_SCHEDULES, i, 100), alive ? CACHE_OK : CACHE_MISS);
    }
    cache_verify_report vr;
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.newer, 1); /* left alone */
    assert_int_equal(vr.ok, 10);
    cache_store *ro;
    CHECK_OK(cache_open(in_dir("p.mdb"), CACHE_READONLY, &ro, g_why, sizeof g_why));
    assert_int_equal(cache_prune(ro, 1, NULL, 0, 0, &pr, g_why, sizeof g_why), CACHE_ERR_READONLY);
    cache_close(ro);
    cache_close(s);
}

static int g_bad_calls;
static void count_bad(void *user, cache_db db, const unsigned char hash[CACHE_HASH_LEN], const char *why)
{
    (void)user, (void)db, (void)hash;
    assert_true(why && why[0]);
    g_bad_calls++;
}

static void test_verify(void **state)
{
    (void)state;
    cache_store *s = open_rw(in_dir("v.mdb"));
    for (int i = 0; i < 40; ++i)
        put_i(s, (cache_db)(i % CACHE_DB_COUNT), i, 200, "");
    size_t n;
    for (int i = 40; i < 45; ++i) {
        unsigned char *r = record_i(CACHE_DB_RECORDS, i, 200, "", now_s(), &n);
        r[n - 1 - (size_t)i] ^= 0x80;
        put_raw_i(s, CACHE_DB_RECORDS, i, r, n);
        free(r);
    }
    /* an LMDB key that is not a hash at all */
    unsigned char odd[CACHE_HASH_LEN] = {1, 2, 3};
    unsigned char *r = record_i(CACHE_DB_RECORDS, 46, 10, "", now_s(), &n);
    CHECK_OK(cache_test_put_raw(s, CACHE_DB_RECORDS, odd, r, n, g_why, sizeof g_why));
    free(r);
    cache_verify_report vr;
    g_bad_calls = 0;
    CHECK_OK(cache_verify(s, 0, &vr, count_bad, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.records, 46);
    assert_int_equal(vr.ok, 40);
    assert_int_equal(vr.corrupt, 6);
    assert_int_equal(vr.dropped, 0);
    assert_int_equal(g_bad_calls, 6);
    CHECK_OK(cache_verify(s, 1, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.dropped, 6);
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.records, 40);
    assert_int_equal(vr.corrupt, 0);
    cache_close(s);
}

/* ---- environments ------------------------------------------------------------------ */

static void test_env_sharing(void **state)
{
    (void)state;
    const char *path = in_dir("e.mdb");
    cache_store *a = open_rw(path), *b = open_rw(path), *c, *d, *ro;
    assert_int_equal(cache_test_env_id(a), cache_test_env_id(b));
    assert_int_equal(cache_test_env_refs(a), 2);
    char other[700];
    snprintf(other, sizeof other, "%s/./e.mdb", g_dir);
    c = open_rw(other);
    assert_int_equal(cache_test_env_id(a), cache_test_env_id(c));
    assert_int_equal(symlink(path, in_dir("link.mdb")), 0);
    d = open_rw(in_dir("link.mdb"));
    assert_int_equal(cache_test_env_id(a), cache_test_env_id(d));
    CHECK_OK(cache_open(path, CACHE_READONLY, &ro, g_why, sizeof g_why));
    assert_int_equal(cache_test_env_id(a), cache_test_env_id(ro));
    assert_int_equal(cache_test_env_refs(a), 5);
    put_i(a, CACHE_DB_CUBINS, 1, 10, "");
    assert_int_equal(get_i(d, CACHE_DB_CUBINS, 1, 10), CACHE_OK);
    cache_close(b);
    cache_close(c);
    cache_close(d);
    cache_close(ro);
    assert_int_equal(cache_test_env_refs(a), 1);
    assert_int_equal(get_i(a, CACHE_DB_CUBINS, 1, 10), CACHE_OK);
    cache_close(a);

    /* Read-only first: a writable open of the same file is refused until it closes. */
    CHECK_OK(cache_open(path, CACHE_READONLY, &ro, g_why, sizeof g_why));
    assert_int_equal(cache_open(path, 0, &a, g_why, sizeof g_why), CACHE_ERR_READONLY);
    assert_non_null(strstr(g_why, "read-only"));
    cache_close(ro);
    a = open_rw(path);
    cache_close(a);
}

static void test_fork(void **state)
{
    (void)state;
    const char *path = in_dir("f.mdb");
    cache_store *s = open_rw(path);
    uintptr_t parent_env = cache_test_env_id(s);
    put_i(s, CACHE_DB_CUBINS, 1, 1000, "");
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* The inherited store reopens the file for this process. */
        cache_key k;
        key_of(&k, 1);
        void *v;
        size_t n;
        char why[256];
        if (cache_get(s, CACHE_DB_CUBINS, k.buf, k.len, &v, &n, NULL, why, sizeof why) != CACHE_OK || n != 1000)
            _exit(20);
        free(v);
        if (cache_test_env_id(s) == parent_env)
            _exit(21);
        key_of(&k, 2);
        if (cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "", "child", 5, why, sizeof why) != CACHE_OK)
            _exit(22);
        cache_store *t; /* a new open in the child shares the child's environment */
        if (cache_open(path, 0, &t, why, sizeof why) != CACHE_OK || cache_test_env_id(t) != cache_test_env_id(s))
            _exit(23);
        cache_close(t);
        cache_close(s);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
    assert_int_equal(cache_test_env_id(s), parent_env);
    cache_key k;
    key_of(&k, 2);
    void *v;
    size_t n;
    CHECK_OK(cache_get(s, CACHE_DB_CUBINS, k.buf, k.len, &v, &n, NULL, g_why, sizeof g_why));
    assert_memory_equal(v, "child", 5);
    free(v);
    put_i(s, CACHE_DB_CUBINS, 3, 10, "");
    cache_verify_report vr;
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.ok, 3);
    cache_close(s);
}

/* A shipped cache: read-only directory, no lock file. */
static void test_readonly_shipped(void **state)
{
    (void)state;
    mkdir(in_dir("ship"), 0700);
    const char *path = in_dir("ship/cache.mdb");
    cache_store *s = open_rw(path);
    for (int i = 0; i < 20; ++i)
        put_i(s, CACHE_DB_SCHEDULES, i, 100, "h200");
    cache_close(s);
    char lock[700];
    snprintf(lock, sizeof lock, "%s-lock", path);
    assert_int_equal(unlink(lock), 0);
    chmod(path, 0444);
    chmod(in_dir("ship"), 0555);
    CHECK_OK(cache_open(path, CACHE_READONLY, &s, g_why, sizeof g_why));
    for (int i = 0; i < 20; ++i)
        assert_int_equal(get_i(s, CACHE_DB_SCHEDULES, i, 100), CACHE_OK);
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 0, 100), CACHE_MISS);
    cache_stats st;
    CHECK_OK(cache_get_stats(s, &st, g_why, sizeof g_why));
    assert_true(st.readonly);
    if (geteuid() != 0)
        assert_true(st.nolock);
    assert_int_equal(cache_put(s, CACHE_DB_CUBINS, "k", 1, "", "v", 1, g_why, sizeof g_why), CACHE_ERR_READONLY);
    cache_verify_report vr;
    CHECK_OK(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why));
    assert_int_equal(vr.ok, 20);
    CHECK_OK(cache_export(s, in_dir("shipped-copy.mdb"), g_why, sizeof g_why));
    cache_close(s);
    if (geteuid() != 0)
        assert_int_equal(access(lock, F_OK), -1);
    chmod(in_dir("ship"), 0700);
    chmod(path, 0644);
    assert_int_equal(count_entries(in_dir("shipped-copy.mdb")), 20);
}

static void test_network_fs(void **state)
{
    (void)state;
    const char *path = in_dir("n.mdb");
    cache_store *s = open_rw(path);
    put_i(s, CACHE_DB_CUBINS, 1, 10, "");
    cache_close(s);
    cache_test_fs_type = 0x6969;
    unsetenv("DOP_CACHE_ALLOW_NETWORK");
    assert_int_equal(cache_open(path, CACHE_CREATE, &s, g_why, sizeof g_why), CACHE_ERR_UNSUPPORTED);
    assert_non_null(strstr(g_why, "NFS"));
    assert_int_equal(cache_open(in_dir("n2.mdb"), CACHE_CREATE, &s, g_why, sizeof g_why), CACHE_ERR_UNSUPPORTED);
    CHECK_OK(cache_open(path, CACHE_READONLY, &s, g_why, sizeof g_why)); /* read-only: no locks */
    assert_int_equal(get_i(s, CACHE_DB_CUBINS, 1, 10), CACHE_OK);
    cache_close(s);
    setenv("DOP_CACHE_ALLOW_NETWORK", "1", 1);
    s = open_rw(path);
    cache_close(s);
    unsetenv("DOP_CACHE_ALLOW_NETWORK");
    cache_test_fs_type = 0x65735546; /* FUSE is fine */
    s = open_rw(path);
    cache_close(s);
    cache_test_fs_type = 0;
}

/* cache_foreach: chunks, stop, and a callback that writes to the store. */
typedef struct fe_ctx {
    cache_store *s;
    int seen, stop_at;
} fe_ctx;

static int fe_write(void *user, const cache_entry *e)
{
    fe_ctx *c = user;
    assert_int_equal(e->status, CACHE_OK);
    assert_int_equal(e->db, CACHE_DB_CUBINS);
    c->seen++;
    /* copy it to another database and delete it here */
    CHECK_OK(cache_put(c->s, CACHE_DB_RECORDS, e->rec.key, e->rec.key_len, "", e->rec.value, e->rec.value_len, g_why,
                       sizeof g_why));
    CHECK_OK(cache_delete_hash(c->s, e->db, e->hash, g_why, sizeof g_why));
    return c->stop_at && c->seen == c->stop_at;
}

static void test_foreach(void **state)
{
    (void)state;
    cache_store *s = open_rw(in_dir("fe.mdb"));
    for (int i = 0; i < 700; ++i)
        put_i(s, CACHE_DB_CUBINS, i, (size_t)(i % 5) * 1000, "");
    fe_ctx c = {s, 0, 100};
    CHECK_OK(cache_foreach(s, CACHE_DB_CUBINS, fe_write, &c, g_why, sizeof g_why));
    assert_int_equal(c.seen, 100);
    c.stop_at = 0;
    CHECK_OK(cache_foreach(s, CACHE_DB_CUBINS, fe_write, &c, g_why, sizeof g_why));
    assert_int_equal(c.seen, 700);
    cache_stats st;
    CHECK_OK(cache_get_stats(s, &st, g_why, sizeof g_why));
    assert_int_equal(st.entries[CACHE_DB_CUBINS], 0);
    assert_int_equal(st.entries[CACHE_DB_RECORDS], 700);
    for (int i = 0; i < 700; i += 7)
        assert_int_equal(get_i(s, CACHE_DB_RECORDS, i, (size_t)(i % 5) * 1000), CACHE_OK);
    assert_int_equal(cache_foreach(s, (cache_db)7, fe_write, &c, g_why, sizeof g_why), CACHE_ERR_INVALID);
    cache_close(s);
}

/* ---- CLI ------------------------------------------------------------------------------ */

static char g_out[1 << 16];

static int cli(const char *line)
{
    char copy[1024], *argv[32];
    int argc = 0;
    snprintf(copy, sizeof copy, "%s", line);
    for (char *t = strtok(copy, " "); t && argc < 31; t = strtok(NULL, " "))
        argv[argc++] = t;
    argv[argc] = NULL;
    fflush(stdout);
    fflush(stderr);
    int saved_out = dup(1), saved_err = dup(2);
    const char *out = in_dir("cli.out");
    int fd = open(out, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    dup2(fd, 1);
    dup2(fd, 2);
    close(fd);
    int rc = dop_cache_command(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(saved_out, 1);
    dup2(saved_err, 2);
    close(saved_out);
    close(saved_err);
    FILE *f = fopen(out, "rb");
    size_t n = fread(g_out, 1, sizeof g_out - 1, f);
    g_out[n] = 0;
    fclose(f);
    return rc;
}

static void expect_cli(const char *line, int rc, const char *needle)
{
    int got = cli(line);
    if (got != rc || (needle && !strstr(g_out, needle)))
        print_message("$ dop cache %s -> %d\n%s\n", line, got, g_out);
    assert_int_equal(got, rc);
    if (needle)
        assert_non_null(strstr(g_out, needle));
}

static void test_cli(void **state)
{
    (void)state;
    char line[1024], p[600];
    snprintf(p, sizeof p, "%s", in_dir("cli.mdb"));
#define CLI(rc, needle, ...)                                                                                         \
    do {                                                                                                             \
        snprintf(line, sizeof line, __VA_ARGS__);                                                                    \
        expect_cli(line, rc, needle);                                                                                \
    } while (0)

    CLI(0, "no cache yet", "ls --path %s", p);
    CLI(0, "no cache yet", "stats --path %s", p);
    cache_store *s = open_rw(p);
    for (int i = 0; i < 12; ++i)
        put_i(s, (cache_db)(i % CACHE_DB_COUNT), i, 1000, i % 2 ? "gpuA" : "gpuB");
    size_t n;
    unsigned char *r = record_i(CACHE_DB_COSTMODEL, 50, 100, "gpuA", 1000, &n); /* old */
    put_raw_i(s, CACHE_DB_COSTMODEL, 50, r, n);
    free(r);
    cache_close(s);

    CLI(0, p, "path --path %s", p);
    CLI(0, "cubins", "stats --path %s", p);
    unsigned long long total = 0;
    assert_non_null(strstr(g_out, "\ntotal"));
    assert_int_equal(sscanf(strstr(g_out, "\ntotal") + 6, "%llu", &total), 1);
    assert_int_equal(total, 13);
    CLI(0, "13 entries", "ls --path %s", p);
    assert_non_null(strstr(g_out, "gpuA"));
    CLI(0, "3 entries", "ls --db cubins --path %s", p);
    CLI(2, "no database", "ls --db nope --path %s", p);
    CLI(0, "13 ok, 0 corrupt", "verify --path %s", p);

    /* plant a corrupt record */
    s = open_rw(p);
    r = record_i(CACHE_DB_CUBINS, 60, 100, "", now_s(), &n);
    r[70] ^= 1;
    put_raw_i(s, CACHE_DB_CUBINS, 60, r, n);
    free(r);
    cache_close(s);
    CLI(0, "CORRUPT", "ls --path %s", p);
    CLI(1, "1 corrupt", "verify --path %s", p);
    assert_non_null(strstr(g_out, "checksum"));
    CLI(0, "1 dropped", "verify --repair --path %s", p);
    CLI(0, "13 ok, 0 corrupt", "verify --path %s", p);

    CLI(0, "exported", "export %s --path %s", in_dir("cli-x.mdb"), p);
    CLI(1, "exists", "export %s --path %s", in_dir("cli-x.mdb"), p);
    CLI(0, "13 stored", "import %s --path %s", in_dir("cli-x.mdb"), in_dir("cli-y.mdb"));
    CLI(0, "13 kept", "import %s --path %s", in_dir("cli-x.mdb"), in_dir("cli-y.mdb"));
    CLI(0, "wrote", "merge %s %s -o %s", in_dir("cli-x.mdb"), in_dir("cli-y.mdb"), in_dir("cli-z.mdb"));
    assert_non_null(strstr(g_out, "26 records read"));
    CLI(2, "usage", "merge %s -o %s", in_dir("cli-x.mdb"), in_dir("cli-z.mdb"));
    CLI(1, "exists", "merge %s %s -o %s", in_dir("cli-x.mdb"), in_dir("cli-y.mdb"), in_dir("cli-z.mdb"));

    CLI(0, "1 dropped as old", "prune --older-than 30 --path %s", p);
    CLI(0, "6 for other tags", "prune --keep-tag gpuA --path %s", p);
    CLI(0, "6 entries", "ls --path %s", p);
    CLI(2, "positive", "prune --older-than x --path %s", p);
    CLI(2, "usage", "prune --bogus --path %s", p);
    CLI(2, "unknown command", "frobnicate --path %s", p);
    CLI(2, "usage", "%s", "");
    CLI(0, "usage", "%s", "help");

    unsigned char junk[9000];
    fill(junk, sizeof junk, 1);
    write_file(in_dir("cli-bad.mdb"), junk, sizeof junk);
    CLI(1, "damaged", "stats --path %s", in_dir("cli-bad.mdb"));
    CLI(1, "damaged", "verify --path %s", in_dir("cli-bad.mdb"));
#undef CLI
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_roundtrip),
        cmocka_unit_test(test_record_rejects_damage),
        cmocka_unit_test(test_record_newer_version),
        cmocka_unit_test(test_key_builder),
        cmocka_unit_test_setup_teardown(test_default_path, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_put_get_delete, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_corrupt_records, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_corrupt_on_disk, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_damaged_files, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_map_growth, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_map_full, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_map_resized_by_other_process, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_export_import_merge, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_prune, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_verify, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_env_sharing, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_fork, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_readonly_shipped, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_network_fs, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_foreach, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_cli, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
