/*
 * fuzz_cache_record.c -- libFuzzer target for what the cache parses from disk
 * (cache/cache_record.c): records and LMDB meta pages.
 *
 * Input: byte 0 picks the parser.
 *   even: the rest is a stored record. cache_record_decode must never read
 *         outside it; when it accepts, every field must lie inside the input
 *         and re-encoding the decoded fields must give back the same bytes
 *         (so nothing unchecked slipped through); when it refuses, it says why.
 *   odd:  bytes 1..8 are a file size (little endian), the rest the head of a
 *         data file, for cache_lmdb_meta_check.
 *
 * Built with -fsanitize=fuzzer,address,undefined when DOP_FUZZ=ON (clang;
 * tools/fuzz.sh), and linked with fuzz_cache_driver.c into the CPU test
 * test_cache_fuzz in every build.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(void)
{
    __builtin_trap();
}

static void inside(const void *p, size_t n, const uint8_t *base, size_t len)
{
    const uint8_t *q = p;
    if (n && (q < base || q > base + len || n > (size_t)(base + len - q)))
        fail();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    char why[256];
    why[0] = 0;
    if ((data[0] & 1) == 0) {
        cache_record rec;
        cache_status st = cache_record_decode(p, n, &rec, why, sizeof why);
        if (st == CACHE_OK) {
            inside(rec.tag, rec.tag_len, p, n);
            inside(rec.key, rec.key_len, p, n);
            inside(rec.value, rec.value_len, p, n);
            size_t need = cache_record_size(rec.tag_len, rec.key_len, rec.value_len);
            if (need != n || rec.version != CACHE_RECORD_VERSION || rec.db < 0 || rec.db >= CACHE_DB_COUNT)
                fail();
            char tag[CACHE_TAG_MAX + 1];
            memcpy(tag, rec.tag, rec.tag_len);
            tag[rec.tag_len] = 0;
            unsigned char *buf = malloc(need);
            if (!buf)
                return 0;
            if (cache_record_encode(buf, need, rec.db, rec.created, tag, rec.key, rec.key_len, rec.value,
                                    rec.value_len, why, sizeof why) != CACHE_OK)
                fail();
            if (memcmp(buf, p, n) != 0)
                fail();
            free(buf);
        } else if (st != CACHE_CORRUPT && st != CACHE_ERR_UNSUPPORTED) {
            fail();
        } else if (!why[0]) {
            fail(); /* every refusal says why */
        }
    } else {
        uint64_t file_size = 0;
        for (int i = 0; i < 8 && (size_t)i < n; ++i)
            file_size |= (uint64_t)p[i] << (8 * i);
        size_t skip = n < 8 ? n : 8;
        cache_status st = cache_lmdb_meta_check(p + skip, n - skip, file_size, why, sizeof why);
        if (st != CACHE_OK && (st != CACHE_ERR_DAMAGED || !why[0]))
            fail();
    }
    return 0;
}
