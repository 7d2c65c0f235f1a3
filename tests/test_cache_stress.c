/*
 * test_cache_stress.c -- the cache under concurrency and crashes (CPU only).
 *
 * - processes x threads: 4 processes of 4 threads each (they race to create
 *   the file) run >= 10,000 mixed operations on one cache file: get (values
 *   are self-describing and checked), put (small values and big ones that
 *   take overflow pages), delete, foreach, stats. The map starts at 1 MiB, so
 *   it grows in every process while the others read and write (MDB_MAP_FULL
 *   here, MDB_MAP_RESIZED there). No operation may fail or see a corrupt
 *   record, nothing may hang (a watchdog kills the run), and verify finds
 *   every record sound afterwards.
 * - threads in one process: 8 threads on one store whose map starts at
 *   64 KiB, so remaps happen while other threads are inside transactions.
 * - SIGKILL inside a write transaction: a child blocks in the test hook
 *   between mdb_put and the commit, holding LMDB's writer mutex, and is
 *   killed. A store the parent opened before stays usable (the dead writer's
 *   robust mutex is recovered), the committed records are there, the killed
 *   one is not, and verify passes. Then the same with a child killed at a
 *   random moment while writing big values.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cache.h"

#define PROCS 4
#define THREADS 4
#define OPS_PER_THREAD 700
#define KEYS 300
#define VALUE_MAGIC 0x53545253u /* "STRS" */

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
    snprintf(g_dir, sizeof g_dir, "%s/dop-cache-stress-XXXXXX", t && *t ? t : "/tmp");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown_dir(void **state)
{
    (void)state;
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}

static uint64_t rnd(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static uint64_t fnv(const unsigned char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; ++i)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* value: magic u32 | key id u32 | writer u32 | payload length u32 | fnv u64 | payload */
#define VHDR 24

static unsigned char *make_value(uint32_t key, uint32_t writer, size_t payload, uint64_t *rs, size_t *len)
{
    unsigned char *v = malloc(VHDR + payload);
    if (!v)
        return NULL;
    for (size_t i = 0; i < payload; ++i)
        v[VHDR + i] = (unsigned char)rnd(rs);
    uint32_t h[4] = {VALUE_MAGIC, key, writer, (uint32_t)payload};
    memcpy(v, h, 16);
    uint64_t sum = fnv(v + VHDR, payload);
    memcpy(v + 16, &sum, 8);
    *len = VHDR + payload;
    return v;
}

/* 1 if v is a sound value of key. */
static int value_ok(const void *p, size_t len, uint32_t key)
{
    const unsigned char *v = p;
    uint32_t h[4];
    uint64_t sum;
    if (len < VHDR)
        return 0;
    memcpy(h, v, 16);
    memcpy(&sum, v + 16, 8);
    return h[0] == VALUE_MAGIC && h[1] == key && h[3] == len - VHDR && fnv(v + VHDR, len - VHDR) == sum;
}

static void make_key(cache_key *k, uint32_t id)
{
    cache_key_init(k, "stress", 1);
    cache_key_u64(k, id);
}

/* ---- processes x threads ---------------------------------------------------------------- */

typedef struct worker {
    cache_store *s;
    int proc, thread;
    uint64_t ops, failures;
    char last_error[600];
} worker;

static void fail_op(worker *w, const char *what, cache_status st, const char *why)
{
    w->failures++;
    snprintf(w->last_error, sizeof w->last_error, "%s: %s: %s", what, cache_status_string(st), why);
}

typedef struct count_ctx {
    worker *w;
    uint64_t n;
} count_ctx;

static int count_one(void *user, const cache_entry *e)
{
    count_ctx *c = user;
    c->n++;
    if (e->status != CACHE_OK)
        fail_op(c->w, "foreach entry", e->status, e->why);
    return 0;
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    uint64_t rs = 0x12345678u + (uint64_t)w->proc * 1000003u + (uint64_t)w->thread * 7919u;
    char why[256];
    for (int op = 0; op < OPS_PER_THREAD; ++op) {
        uint32_t id = (uint32_t)(rnd(&rs) % KEYS);
        cache_db db = (cache_db)(rnd(&rs) % 2);
        cache_key k;
        make_key(&k, id);
        unsigned r = (unsigned)(rnd(&rs) % 100);
        cache_status st;
        if (r < 45) {
            void *v;
            size_t n;
            st = cache_get(w->s, db, k.buf, k.len, &v, &n, NULL, why, sizeof why);
            if (st == CACHE_OK) {
                if (!value_ok(v, n, id))
                    fail_op(w, "get: value does not check out", st, "");
                free(v);
            } else if (st != CACHE_MISS)
                fail_op(w, "get", st, why);
        } else if (r < 85) {
            size_t payload = rnd(&rs) % 10 == 0 ? 20000 + rnd(&rs) % 180000 : rnd(&rs) % 8192, len;
            unsigned char *v = make_value(id, (uint32_t)(w->proc << 8 | w->thread), payload, &rs, &len);
            if (!v)
                fail_op(w, "malloc", CACHE_ERR_NOMEM, "");
            else {
                st = cache_put(w->s, db, k.buf, k.len, w->proc % 2 ? "gpuA" : "gpuB", v, len, why, sizeof why);
                if (st != CACHE_OK)
                    fail_op(w, "put", st, why);
                free(v);
            }
        } else if (r < 95) {
            st = cache_delete(w->s, db, k.buf, k.len, why, sizeof why);
            if (st != CACHE_OK && st != CACHE_MISS)
                fail_op(w, "delete", st, why);
        } else if (r < 98) {
            count_ctx c = {w, 0};
            st = cache_foreach(w->s, db, count_one, &c, why, sizeof why);
            if (st != CACHE_OK)
                fail_op(w, "foreach", st, why);
        } else {
            cache_stats cs;
            st = cache_get_stats(w->s, &cs, why, sizeof why);
            if (st != CACHE_OK)
                fail_op(w, "stats", st, why);
        }
        w->ops++;
    }
    return NULL;
}

/* One child process: THREADS threads on one store. Writes "ops failures" to fd. */
static int child_main(const char *path, int proc, int fd)
{
    alarm(150); /* a hang ends as SIGALRM, which the parent reports */
    cache_options opt;
    cache_options_init(&opt);
    opt.map_initial = 1u << 20;
    cache_store *s;
    char why[256];
    cache_status st = cache_open_ex(path, &opt, &s, why, sizeof why);
    if (st != CACHE_OK) {
        dprintf(fd, "0 1 open: %s\n", why);
        return 1;
    }
    worker w[THREADS];
    pthread_t th[THREADS];
    for (int t = 0; t < THREADS; ++t) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].s = s;
        w[t].proc = proc;
        w[t].thread = t;
        pthread_create(&th[t], NULL, worker_main, &w[t]);
    }
    uint64_t ops = 0, failures = 0;
    const char *err = "";
    for (int t = 0; t < THREADS; ++t) {
        pthread_join(th[t], NULL);
        ops += w[t].ops;
        failures += w[t].failures;
        if (w[t].failures)
            err = w[t].last_error;
    }
    cache_close(s);
    dprintf(fd, "%llu %llu %s\n", (unsigned long long)ops, (unsigned long long)failures, err);
    return failures ? 1 : 0;
}

typedef struct check_ctx {
    uint64_t n, bad;
} check_ctx;

static int check_value(void *user, const cache_entry *e)
{
    check_ctx *c = user;
    c->n++;
    if (e->status != CACHE_OK || e->rec.key_len < 9) {
        c->bad++;
        return 0;
    }
    /* the key ends with the id as 'u' + 8 bytes */
    uint64_t id = 0;
    for (int i = 0; i < 8; ++i)
        id |= (uint64_t)e->rec.key[e->rec.key_len - 8 + (size_t)i] << (8 * i);
    if (!value_ok(e->rec.value, e->rec.value_len, (uint32_t)id))
        c->bad++;
    return 0;
}

static void test_processes_and_threads(void **state)
{
    (void)state;
    char path[700];
    snprintf(path, sizeof path, "%s/shared.mdb", g_dir);
    int pipes[PROCS][2];
    pid_t pids[PROCS];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int p = 0; p < PROCS; ++p) {
        assert_int_equal(pipe(pipes[p]), 0);
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            close(pipes[p][0]);
            _exit(child_main(path, p, pipes[p][1]));
        }
        close(pipes[p][1]);
    }
    /* Watchdog: every child must be done within 120 s. */
    int left = PROCS, hung = 0;
    int status[PROCS];
    int done[PROCS] = {0};
    for (int waited_ms = 0; left > 0; waited_ms += 20) {
        for (int p = 0; p < PROCS; ++p) {
            if (done[p])
                continue;
            pid_t r = waitpid(pids[p], &status[p], WNOHANG);
            if (r == pids[p]) {
                done[p] = 1;
                --left;
            }
        }
        if (left && waited_ms > 120000) {
            hung = 1;
            for (int p = 0; p < PROCS; ++p)
                if (!done[p]) {
                    kill(pids[p], SIGKILL);
                    waitpid(pids[p], &status[p], 0);
                    done[p] = 1;
                }
            break;
        }
        if (left)
            usleep(20000);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_false(hung);
    uint64_t total_ops = 0;
    for (int p = 0; p < PROCS; ++p) {
        char line[512] = "";
        ssize_t n = read(pipes[p][0], line, sizeof line - 1);
        close(pipes[p][0]);
        line[n > 0 ? n : 0] = 0;
        unsigned long long ops = 0, failures = 0;
        sscanf(line, "%llu %llu", &ops, &failures);
        if (!WIFEXITED(status[p]) || WEXITSTATUS(status[p]) != 0)
            print_message("process %d: %s (status 0x%x)\n", p, line, status[p]);
        assert_true(WIFEXITED(status[p]));
        assert_int_equal(WEXITSTATUS(status[p]), 0);
        assert_int_equal(failures, 0);
        total_ops += ops;
    }
    assert_true(total_ops >= 10000);

    cache_store *s;
    assert_int_equal(cache_open(path, CACHE_READONLY, &s, g_why, sizeof g_why), CACHE_OK);
    cache_verify_report vr;
    assert_int_equal(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why), CACHE_OK);
    assert_int_equal(vr.corrupt, 0);
    assert_true(vr.records > 0);
    check_ctx c = {0, 0};
    assert_int_equal(cache_foreach(s, CACHE_DB_ALL, check_value, &c, g_why, sizeof g_why), CACHE_OK);
    assert_int_equal(c.bad, 0);
    assert_int_equal(c.n, vr.records);
    cache_stats st;
    assert_int_equal(cache_get_stats(s, &st, g_why, sizeof g_why), CACHE_OK);
    assert_true(st.map_bytes > (1u << 20)); /* it grew */
    cache_close(s);
    print_message("  %d processes x %d threads: %llu operations in %.1f s; %llu records, map %llu MiB, file %llu MiB\n",
                  PROCS, THREADS, (unsigned long long)total_ops,
                  (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec),
                  (unsigned long long)vr.records, (unsigned long long)(st.map_bytes >> 20),
                  (unsigned long long)(st.file_bytes >> 20));
}

/* ---- threads in one process, remapping under them -------------------------------------- */

static void test_threads_remap(void **state)
{
    (void)state;
    char path[700];
    snprintf(path, sizeof path, "%s/threads.mdb", g_dir);
    cache_options opt;
    cache_options_init(&opt);
    opt.map_initial = 64 * 1024;
    cache_store *s;
    assert_int_equal(cache_open_ex(path, &opt, &s, g_why, sizeof g_why), CACHE_OK);
    enum { N = 8 };
    worker w[N];
    pthread_t th[N];
    for (int t = 0; t < N; ++t) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].s = s;
        w[t].proc = 100;
        w[t].thread = t;
        pthread_create(&th[t], NULL, worker_main, &w[t]);
    }
    uint64_t ops = 0;
    for (int t = 0; t < N; ++t) {
        pthread_join(th[t], NULL);
        if (w[t].failures)
            print_message("thread %d: %s\n", t, w[t].last_error);
        assert_int_equal(w[t].failures, 0);
        ops += w[t].ops;
    }
    assert_int_equal(ops, (uint64_t)N * OPS_PER_THREAD);
    cache_verify_report vr;
    assert_int_equal(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why), CACHE_OK);
    assert_int_equal(vr.corrupt, 0);
    check_ctx c = {0, 0};
    assert_int_equal(cache_foreach(s, CACHE_DB_ALL, check_value, &c, g_why, sizeof g_why), CACHE_OK);
    assert_int_equal(c.bad, 0);
    cache_close(s);
}

/* ---- SIGKILL inside a write transaction ------------------------------------------------- */

static int g_hook_fd = -1;
static int g_hook_calls, g_hook_stop_at;

static void block_in_txn(void)
{
    if (++g_hook_calls == g_hook_stop_at) {
        char c = 'k';
        if (write(g_hook_fd, &c, 1) != 1)
            _exit(3);
        for (;;)
            pause(); /* holding the writer mutex, until SIGKILL */
    }
}

static void put_big(cache_store *s, uint32_t id, size_t payload, uint64_t *rs, int must)
{
    cache_key k;
    make_key(&k, id);
    size_t len;
    unsigned char *v = make_value(id, 1, payload, rs, &len);
    cache_status st = cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "", v, len, g_why, sizeof g_why);
    free(v);
    if (must) {
        if (st != CACHE_OK)
            print_message("put: %s\n", g_why);
        assert_int_equal(st, CACHE_OK);
    }
}

static cache_status get_check(cache_store *s, uint32_t id)
{
    cache_key k;
    make_key(&k, id);
    void *v;
    size_t n;
    cache_status st = cache_get(s, CACHE_DB_CUBINS, k.buf, k.len, &v, &n, NULL, g_why, sizeof g_why);
    if (st == CACHE_OK) {
        assert_true(value_ok(v, n, id));
        free(v);
    }
    return st;
}

static void verify_clean(const char *path, uint64_t *records)
{
    cache_store *s;
    assert_int_equal(cache_open(path, CACHE_READONLY, &s, g_why, sizeof g_why), CACHE_OK);
    cache_verify_report vr;
    assert_int_equal(cache_verify(s, 0, &vr, NULL, NULL, g_why, sizeof g_why), CACHE_OK);
    assert_int_equal(vr.corrupt, 0);
    check_ctx c = {0, 0};
    assert_int_equal(cache_foreach(s, CACHE_DB_ALL, check_value, &c, g_why, sizeof g_why), CACHE_OK);
    assert_int_equal(c.bad, 0);
    if (records)
        *records = vr.records;
    cache_close(s);
}

static void test_sigkill_in_write_txn(void **state)
{
    (void)state;
    char path[700];
    snprintf(path, sizeof path, "%s/killed.mdb", g_dir);
    uint64_t rs = 99;
    cache_store *live; /* opened before the crashes, used after them */
    assert_int_equal(cache_open(path, CACHE_CREATE, &live, g_why, sizeof g_why), CACHE_OK);
    for (int round = 0; round < 3; ++round) {
        uint32_t base = (uint32_t)round * 100;
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            alarm(60);
            cache_store *s;
            char why[256];
            if (cache_open(path, 0, &s, why, sizeof why) != CACHE_OK)
                _exit(2);
            g_hook_fd = fds[1];
            g_hook_calls = 0;
            g_hook_stop_at = 4; /* three puts commit, the fourth is killed */
            cache_test_in_write_txn = block_in_txn;
            uint64_t crs = 7 + (uint64_t)round;
            for (uint32_t i = 0; i < 10; ++i) {
                cache_key k;
                make_key(&k, base + i);
                size_t len = 0;
                unsigned char *v = make_value(base + i, 2, (1u << 20) + i, &crs, &len);
                if (cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "", v, len, why, sizeof why) != CACHE_OK)
                    _exit(4);
                free(v);
            }
            _exit(5); /* never reached */
        }
        close(fds[1]);
        struct pollfd pfd = {fds[0], POLLIN, 0};
        assert_int_equal(poll(&pfd, 1, 30000), 1);
        char c;
        assert_int_equal(read(fds[0], &c, 1), 1);
        close(fds[0]);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

        /* The store opened before: the dead writer's lock is recovered. */
        for (uint32_t i = 0; i < 3; ++i)
            assert_int_equal(get_check(live, base + i), CACHE_OK);
        assert_int_equal(get_check(live, base + 3), CACHE_MISS);
        put_big(live, base + 3, 1000, &rs, 1);
        assert_int_equal(get_check(live, base + 3), CACHE_OK);
        verify_clean(path, NULL);
    }
    cache_close(live);

    /* Killed at random moments while writing and deleting big values. */
    for (int round = 0; round < 4; ++round) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            alarm(60);
            cache_store *s;
            char why[256];
            if (cache_open(path, 0, &s, why, sizeof why) != CACHE_OK)
                _exit(2);
            uint64_t crs = 1000 + (uint64_t)round;
            for (uint32_t i = 0;; ++i) {
                uint32_t id = 1000 + (uint32_t)(rnd(&crs) % 40);
                cache_key k;
                make_key(&k, id);
                if (i % 5 == 4) {
                    cache_delete(s, CACHE_DB_CUBINS, k.buf, k.len, why, sizeof why);
                    continue;
                }
                size_t len = 0;
                unsigned char *v = make_value(id, 3, (512u << 10) + rnd(&crs) % (3u << 20), &crs, &len);
                if (cache_put(s, CACHE_DB_CUBINS, k.buf, k.len, "", v, len, why, sizeof why) != CACHE_OK)
                    _exit(4);
                free(v);
                if (i == 0 && write(fds[1], "s", 1) != 1)
                    _exit(3);
            }
        }
        close(fds[1]);
        struct pollfd pfd = {fds[0], POLLIN, 0};
        assert_int_equal(poll(&pfd, 1, 30000), 1);
        close(fds[0]);
        usleep((useconds_t)(5000 + (rnd(&rs) % 150) * 1000));
        kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFSIGNALED(status));

        uint64_t records;
        verify_clean(path, &records);
        cache_store *s;
        assert_int_equal(cache_open(path, 0, &s, g_why, sizeof g_why), CACHE_OK);
        put_big(s, 5000 + (uint32_t)round, 100000, &rs, 1);
        assert_int_equal(get_check(s, 5000 + (uint32_t)round), CACHE_OK);
        cache_close(s);
    }
    verify_clean(path, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_processes_and_threads, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_threads_remap, setup_dir, teardown_dir),
        cmocka_unit_test_setup_teardown(test_sigkill_in_write_txn, setup_dir, teardown_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
