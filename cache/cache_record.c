/*
 * cache_record.c -- everything the cache parses from disk bytes, in pure C
 * (no LMDB, no allocation): canonical keys, records, and the sanity check of
 * an LMDB file's meta pages. This is the code the fuzzer (tests/
 * fuzz_cache_record.c) drives, so every read is bounds-checked against the
 * length it was given, and nothing is trusted before it is checked.
 *
 * Record, version 1 (little endian; docs/cache.md has the same table):
 *
 *   off size field
 *     0    4 magic "DOPC"
 *     4    2 format version (1)
 *     6    1 database id (cache_db)
 *     7    1 flags (0)
 *     8    2 tag length (<= 64)
 *    10    2 reserved (0)
 *    12    4 key length (<= 64 KiB)
 *    16    8 value length (<= 256 MiB)
 *    24    8 created, seconds since the epoch
 *    32    8 checksum: XXH3-64 (seed 0) of bytes [0, 32) followed by [40, end)
 *    40      tag bytes, key bytes, value bytes; nothing after them
 *
 * Magic, version and checksum (and its definition) stay where they are in
 * every later version, so a newer record can still be told apart from a
 * damaged one: its checksum verifies. Such a record is CACHE_ERR_UNSUPPORTED,
 * not corrupt, and is left alone.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "cache.h"
#include "cache_internal.h"

void cache_say(char *why, size_t why_len, const char *fmt, ...)
{
    if (!why || !why_len)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

const char *cache_status_string(cache_status st)
{
    switch (st) {
    case CACHE_OK: return "CACHE_OK";
    case CACHE_MISS: return "CACHE_MISS";
    case CACHE_CORRUPT: return "CACHE_CORRUPT";
    case CACHE_ERR_INVALID: return "CACHE_ERR_INVALID";
    case CACHE_ERR_NOMEM: return "CACHE_ERR_NOMEM";
    case CACHE_ERR_IO: return "CACHE_ERR_IO";
    case CACHE_ERR_DAMAGED: return "CACHE_ERR_DAMAGED";
    case CACHE_ERR_READONLY: return "CACHE_ERR_READONLY";
    case CACHE_ERR_FULL: return "CACHE_ERR_FULL";
    case CACHE_ERR_BUSY: return "CACHE_ERR_BUSY";
    case CACHE_ERR_UNSUPPORTED: return "CACHE_ERR_UNSUPPORTED";
    case CACHE_ERR_EXISTS: return "CACHE_ERR_EXISTS";
    case CACHE_ERR_NOTFOUND: return "CACHE_ERR_NOTFOUND";
    }
    return "CACHE_ERR_(unknown)";
}

static const char *const db_names[CACHE_DB_COUNT] = {"cubins", "schedules", "records", "costmodel"};

const char *cache_db_name(cache_db db)
{
    return (db >= 0 && db < CACHE_DB_COUNT) ? db_names[db] : NULL;
}

cache_db cache_db_from_name(const char *name)
{
    for (int i = 0; name && i < CACHE_DB_COUNT; ++i)
        if (strcmp(name, db_names[i]) == 0)
            return (cache_db)i;
    return CACHE_DB_ALL;
}

/* ---- canonical keys ---------------------------------------------------------- */

static void key_raw(cache_key *k, const void *p, size_t n)
{
    if (k->overflow || n > CACHE_KEY_MAX - k->len) {
        k->overflow = 1;
        return;
    }
    if (n)
        memcpy(k->buf + k->len, p, n);
    k->len += n;
}

static void key_tagged(cache_key *k, char type, uint64_t v, int nbytes)
{
    unsigned char b[9];
    b[0] = (unsigned char)type;
    cache_put_le(b + 1, v, nbytes);
    key_raw(k, b, 1 + (size_t)nbytes);
}

static void key_blob(cache_key *k, char type, const void *p, size_t n)
{
    if (n > UINT32_MAX) {
        k->overflow = 1;
        return;
    }
    key_tagged(k, type, n, 4);
    key_raw(k, p, n);
}

void cache_key_init(cache_key *k, const char *domain, uint32_t schema_version)
{
    k->len = 0;
    k->overflow = 0;
    const unsigned char head[2] = {'K', 0x01};
    key_raw(k, head, 2);
    cache_key_str(k, domain);
    key_raw(k, (unsigned char[4]){(unsigned char)schema_version, (unsigned char)(schema_version >> 8),
                                  (unsigned char)(schema_version >> 16), (unsigned char)(schema_version >> 24)},
            4);
}

void cache_key_u64(cache_key *k, uint64_t v) { key_tagged(k, 'u', v, 8); }
void cache_key_i64(cache_key *k, int64_t v) { key_tagged(k, 'i', (uint64_t)v, 8); }

void cache_key_f64(cache_key *k, double v)
{
    uint64_t bits;
    if (v != v)
        bits = 0x7ff8000000000000ull;
    else {
        if (v == 0)
            v = 0.0; /* -0.0 == 0.0: one encoding */
        memcpy(&bits, &v, sizeof bits);
    }
    key_tagged(k, 'f', bits, 8);
}

void cache_key_str(cache_key *k, const char *s)
{
    if (!s)
        s = "";
    key_blob(k, 's', s, strlen(s));
}

void cache_key_bytes(cache_key *k, const void *p, size_t n)
{
    if (!p && n) {
        k->overflow = 1;
        return;
    }
    key_blob(k, 'b', p, n);
}

void cache_key_hash(const void *key, size_t key_len, unsigned char out[CACHE_HASH_LEN])
{
    XXH128_hash_t h = XXH3_128bits(key_len ? key : "", key_len);
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    memcpy(out, c.digest, CACHE_HASH_LEN);
}

/* ---- records ---------------------------------------------------------------- */

static uint64_t record_checksum(const unsigned char *rec, size_t len)
{
    XXH3_state_t st;
    XXH3_64bits_reset(&st);
    XXH3_64bits_update(&st, rec, 32);
    XXH3_64bits_update(&st, rec + CACHE_RECORD_HEADER, len - CACHE_RECORD_HEADER);
    return XXH3_64bits_digest(&st);
}

size_t cache_record_size(size_t tag_len, size_t key_len, size_t value_len)
{
    if (tag_len > CACHE_TAG_MAX || key_len > CACHE_KEY_LEN_MAX || value_len > CACHE_VALUE_MAX)
        return 0;
    return CACHE_RECORD_HEADER + tag_len + key_len + value_len;
}

static int tag_printable(const char *tag, size_t n)
{
    for (size_t i = 0; i < n; ++i)
        if ((unsigned char)tag[i] < 0x20 || (unsigned char)tag[i] > 0x7e)
            return 0;
    return 1;
}

cache_status cache_record_encode(void *dst, size_t dst_len, cache_db db, uint64_t created, const char *tag,
                                 const void *key, size_t key_len, const void *value, size_t value_len, char *why,
                                 size_t why_len)
{
    if (!tag)
        tag = "";
    size_t tag_len = strnlen(tag, CACHE_TAG_MAX + 1);
    if (db < 0 || db >= CACHE_DB_COUNT) {
        cache_say(why, why_len, "no database %d", (int)db);
        return CACHE_ERR_INVALID;
    }
    if (tag_len > CACHE_TAG_MAX || !tag_printable(tag, tag_len)) {
        cache_say(why, why_len, "tag must be at most %d printable ASCII characters", CACHE_TAG_MAX);
        return CACHE_ERR_INVALID;
    }
    if ((!key && key_len) || (!value && value_len)) {
        cache_say(why, why_len, "NULL key or value with a nonzero length");
        return CACHE_ERR_INVALID;
    }
    size_t need = cache_record_size(tag_len, key_len, value_len);
    if (!need) {
        cache_say(why, why_len, "key of %zu bytes or value of %zu bytes over the limit (%u, %u)", key_len, value_len,
                  CACHE_KEY_LEN_MAX, CACHE_VALUE_MAX);
        return CACHE_ERR_INVALID;
    }
    if (!dst || dst_len < need) {
        cache_say(why, why_len, "record needs %zu bytes, buffer has %zu", need, dst_len);
        return CACHE_ERR_INVALID;
    }
    unsigned char *p = dst;
    memcpy(p, CACHE_RECORD_MAGIC, 4);
    cache_put_le(p + 4, CACHE_RECORD_VERSION, 2);
    p[6] = (unsigned char)db;
    p[7] = 0;
    cache_put_le(p + 8, tag_len, 2);
    cache_put_le(p + 10, 0, 2);
    cache_put_le(p + 12, key_len, 4);
    cache_put_le(p + 16, value_len, 8);
    cache_put_le(p + 24, created, 8);
    unsigned char *q = p + CACHE_RECORD_HEADER;
    if (tag_len)
        memcpy(q, tag, tag_len);
    q += tag_len;
    if (key_len)
        memcpy(q, key, key_len);
    q += key_len;
    if (value_len)
        memcpy(q, value, value_len);
    cache_put_le(p + 32, record_checksum(p, need), 8);
    return CACHE_OK;
}

cache_status cache_record_decode(const void *buf, size_t len, cache_record *out, char *why, size_t why_len)
{
    const unsigned char *p = buf;
    if (out)
        memset(out, 0, sizeof *out);
    if (!p || len < 6) {
        cache_say(why, why_len, "record of %zu bytes is shorter than its header", len);
        return CACHE_CORRUPT;
    }
    if (memcmp(p, CACHE_RECORD_MAGIC, 4) != 0) {
        cache_say(why, why_len, "bad magic (not a dop cache record)");
        return CACHE_CORRUPT;
    }
    unsigned version = (unsigned)cache_get_le(p + 4, 2);
    if (len < CACHE_RECORD_HEADER) {
        cache_say(why, why_len, "record of %zu bytes is shorter than its %d-byte header", len, CACHE_RECORD_HEADER);
        return CACHE_CORRUPT;
    }
    uint64_t stored_sum = cache_get_le(p + 32, 8);
    if (version == 0) {
        cache_say(why, why_len, "format version 0");
        return CACHE_CORRUPT;
    }
    if (version > CACHE_RECORD_VERSION) {
        /* The checksum keeps its definition across versions. */
        if (record_checksum(p, len) != stored_sum) {
            cache_say(why, why_len, "checksum mismatch (record claims format version %u)", version);
            return CACHE_CORRUPT;
        }
        cache_say(why, why_len, "record of format version %u, newer than this dop (%d)", version,
                  CACHE_RECORD_VERSION);
        return CACHE_ERR_UNSUPPORTED;
    }
    unsigned db = p[6], flags = p[7];
    size_t tag_len = (size_t)cache_get_le(p + 8, 2);
    unsigned reserved = (unsigned)cache_get_le(p + 10, 2);
    uint64_t key_len = cache_get_le(p + 12, 4);
    uint64_t value_len = cache_get_le(p + 16, 8);
    if (db >= CACHE_DB_COUNT || flags != 0 || reserved != 0) {
        cache_say(why, why_len, "bad header field (db %u, flags %u, reserved %u)", db, flags, reserved);
        return CACHE_CORRUPT;
    }
    if (tag_len > CACHE_TAG_MAX || key_len > CACHE_KEY_LEN_MAX || value_len > CACHE_VALUE_MAX) {
        cache_say(why, why_len, "length over its limit (tag %zu, key %llu, value %llu)", tag_len,
                  (unsigned long long)key_len, (unsigned long long)value_len);
        return CACHE_CORRUPT;
    }
    /* All three are bounded above, so the sum cannot wrap. */
    uint64_t total = CACHE_RECORD_HEADER + (uint64_t)tag_len + key_len + value_len;
    if (total != len) {
        cache_say(why, why_len, "header says %llu bytes, %zu stored (%s)", (unsigned long long)total, len,
                  total > len ? "cut short" : "trailing bytes");
        return CACHE_CORRUPT;
    }
    if (record_checksum(p, len) != stored_sum) {
        cache_say(why, why_len, "checksum mismatch");
        return CACHE_CORRUPT;
    }
    const char *tag = (const char *)p + CACHE_RECORD_HEADER;
    if (!tag_printable(tag, tag_len)) {
        cache_say(why, why_len, "tag holds a non-printable byte");
        return CACHE_CORRUPT;
    }
    if (out) {
        out->version = version;
        out->db = (cache_db)db;
        out->flags = flags;
        out->created = cache_get_le(p + 24, 8);
        out->checksum = stored_sum;
        out->tag = tag;
        out->tag_len = tag_len;
        out->key = p + CACHE_RECORD_HEADER + tag_len;
        out->key_len = (size_t)key_len;
        out->value = out->key + key_len;
        out->value_len = (size_t)value_len;
    }
    return CACHE_OK;
}

/* ---- LMDB meta pages ----------------------------------------------------------
 *
 * LMDB 0.9 (mdb.c) trusts the newest of the two meta pages at the head of the
 * data file and maps the file; a page number past the end of a truncated file
 * is then a SIGBUS on first touch. So before mdb_env_open we read both metas
 * and check what they claim. Layout (native endian; pgno_t and size_t are the
 * word size, 8 bytes here):
 *
 *   page header (16): pgno 8 | pad 2 | flags 2 (P_META 0x08) | lower/upper 4
 *   MDB_meta at +16:  magic 4 (0xBEEFC0DE) | version 4 (1) | address 8 |
 *                     mapsize 8 | dbs[0] (free) 48 | dbs[1] (main) 48 |
 *                     last_pg 8 | txnid 8                   (136 bytes)
 *   MDB_db:           pad 4 (the page size, in dbs[0] of a meta) | flags 2 |
 *                     depth 2 | branch 8 | leaf 8 | overflow 8 | entries 8 |
 *                     root 8
 * Page 1 (the second meta) starts at offset page size.
 */
#define META_OFF 16
#define META_LEN 136
#define LMDB_MAGIC 0xBEEFC0DEu
#define LMDB_DATA_VERSION 1u
#define LMDB_P_META 0x08u

static uint64_t rd_native(const unsigned char *p, int n)
{
    if (n == 2) {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    if (n == 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

typedef struct lmdb_meta {
    uint64_t psize, last_pg, txnid, root[2], live_pages;
} lmdb_meta;

static int read_meta(const unsigned char *pg, lmdb_meta *m, char *why, size_t why_len, int which)
{
    const unsigned char *mp = pg + META_OFF;
    if (!(rd_native(pg + 10, 2) & LMDB_P_META) || rd_native(mp, 4) != LMDB_MAGIC) {
        cache_say(why, why_len, "meta page %d is not an LMDB meta page (not an LMDB file, or damaged)", which);
        return 0;
    }
    uint64_t version = rd_native(mp + 4, 4);
    if (version != LMDB_DATA_VERSION) {
        cache_say(why, why_len, "LMDB data format %llu, this LMDB reads %u", (unsigned long long)version,
                  LMDB_DATA_VERSION);
        return 0;
    }
    m->psize = rd_native(mp + 24, 4);
    m->live_pages = 2;
    for (int d = 0; d < 2; ++d) {
        const unsigned char *db = mp + 24 + 48 * d;
        m->root[d] = rd_native(db + 40, 8);
        for (int f = 0; f < 3; ++f) { /* branch, leaf, overflow pages */
            uint64_t n = rd_native(db + 8 + 8 * f, 8);
            m->live_pages = n > UINT64_MAX / 4 - m->live_pages ? UINT64_MAX / 4 : m->live_pages + n;
        }
    }
    m->last_pg = rd_native(mp + 120, 8);
    m->txnid = rd_native(mp + 128, 8);
    return 1;
}

/*
 * What is checked, and what is not: pages 0 and 1 must be LMDB 0.9 meta pages
 * of one sane page size; in the newest, both root pages must lie inside the
 * file, and the pages the free and main trees count must fit in it. The last
 * page number is not held against the file size: LMDB may end a transaction
 * with its highest page freed and never written, so a sound file can be a
 * little shorter than (last_pg + 1) pages.
 */
cache_status cache_lmdb_meta_check(const void *head, size_t head_len, uint64_t file_size, char *why, size_t why_len)
{
    const unsigned char *h = head;
    if (file_size == 0)
        return CACHE_OK;
    if (sizeof(size_t) != 8) /* the layout above is the 64-bit one; LMDB checks the rest */
        return CACHE_OK;
    if (!h)
        head_len = 0;
    if (head_len > file_size)
        head_len = (size_t)file_size;
    if (head_len < META_OFF + META_LEN) {
        cache_say(why, why_len, "file of %llu bytes is too short for an LMDB file", (unsigned long long)file_size);
        return CACHE_ERR_DAMAGED;
    }
    lmdb_meta m[2];
    if (!read_meta(h, &m[0], why, why_len, 0))
        return CACHE_ERR_DAMAGED;
    uint64_t ps = m[0].psize;
    if (ps < 256 || ps > 65536 || (ps & (ps - 1))) {
        cache_say(why, why_len, "meta page 0 gives a page size of %llu", (unsigned long long)ps);
        return CACHE_ERR_DAMAGED;
    }
    if (file_size < 2 * ps) {
        cache_say(why, why_len, "file of %llu bytes is shorter than its two meta pages (cut short)",
                  (unsigned long long)file_size);
        return CACHE_ERR_DAMAGED;
    }
    if (head_len < ps + META_OFF + META_LEN) {
        cache_say(why, why_len, "meta check got %zu bytes of the file head, needs %llu", head_len,
                  (unsigned long long)(ps + META_OFF + META_LEN));
        return CACHE_ERR_DAMAGED;
    }
    if (!read_meta(h + ps, &m[1], why, why_len, 1))
        return CACHE_ERR_DAMAGED;
    const lmdb_meta *cur = m[1].txnid > m[0].txnid ? &m[1] : &m[0];
    uint64_t pages = file_size / ps;
    const uint64_t invalid = ~(uint64_t)0;
    for (int d = 0; d < 2; ++d) {
        if (cur->root[d] != invalid && (cur->root[d] < 2 || cur->root[d] >= pages || cur->root[d] > cur->last_pg)) {
            cache_say(why, why_len,
                      "the newest meta page puts the %s tree's root at page %llu, the file holds %llu pages "
                      "(cut short or damaged)",
                      d ? "main" : "free", (unsigned long long)cur->root[d], (unsigned long long)pages);
            return CACHE_ERR_DAMAGED;
        }
    }
    if (cur->live_pages > pages) {
        cache_say(why, why_len, "the newest meta page counts %llu pages in use, the file holds %llu (cut short)",
                  (unsigned long long)cur->live_pages, (unsigned long long)pages);
        return CACHE_ERR_DAMAGED;
    }
    return CACHE_OK;
}
