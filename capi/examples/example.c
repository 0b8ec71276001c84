/* OmenDB from C: two databases open at once, create, add, search (plain arrays and a filter by
 * ids), Arrow in and out, handles that fail cleanly once stale, and a database on object
 * storage.
 *
 *   cargo build -p omendb-capi
 *   cc capi/examples/example.c -Icapi/include -Ltarget/debug -lomendb_c -o example
 *   LD_LIBRARY_PATH=target/debug ./example DIR1 DIR2
 *
 * Exits non-zero, naming the check, when anything is not as expected. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "omendb.h"

static int failures = 0;

#define CHECK(cond, ...)                                     \
    do {                                                     \
        if (!(cond)) {                                       \
            fprintf(stderr, "FAILED line %d: ", __LINE__);   \
            fprintf(stderr, __VA_ARGS__);                    \
            fprintf(stderr, " (last error: %s)\n", omendb_last_error()); \
            failures++;                                      \
        }                                                    \
    } while (0)

#define OK(call) CHECK((call) == OMENDB_OK, "%s", #call)

enum { DIM = 8, ROWS = 200 };

/* Deterministic vectors: row i is a distinct direction. */
static void fill(float *v, int i) {
    for (int d = 0; d < DIM; d++) v[d] = sinf((float)(i * DIM + d) * 0.37f) + (d == i % DIM ? 2.0f : 0.0f);
}

/* --- A record batch built by hand as an Arrow C struct array: id Int64, vector
 * FixedSizeList<Float32, DIM>. Buffers are static; release only marks the struct released. */
static int64_t arrow_ids[4] = {1001, 1002, 1003, 1004};
static float arrow_vectors[4 * DIM];
static const void *id_buffers[2];
static const void *item_buffers[2];
static const void *list_buffers[1];
static const void *struct_buffers[1];

static void release_array(struct ArrowArray *a) { a->release = NULL; }
static void release_schema(struct ArrowSchema *s) { s->release = NULL; }

static struct ArrowArray id_array, item_array, list_array, batch_array;
static struct ArrowArray *list_children[1], *batch_children[2];
static struct ArrowSchema id_schema, item_schema, list_schema, batch_schema;
static struct ArrowSchema *list_schema_children[1], *batch_schema_children[2];

static void leaf_schema(struct ArrowSchema *s, const char *format, const char *name, int64_t flags) {
    memset(s, 0, sizeof *s);
    s->format = format;
    s->name = name;
    s->flags = flags;
    s->release = release_schema;
}

static void make_array(struct ArrowArray *a, int64_t length, int64_t n_buffers, const void **buffers,
                       int64_t n_children, struct ArrowArray **children) {
    memset(a, 0, sizeof *a);
    a->length = length;
    a->n_buffers = n_buffers;
    a->buffers = buffers;
    a->n_children = n_children;
    a->children = children;
    a->release = release_array;
}

static void make_batch(void) {
    for (int i = 0; i < 4; i++) fill(arrow_vectors + i * DIM, 1001 + i);
    id_buffers[0] = NULL;
    id_buffers[1] = arrow_ids;
    item_buffers[0] = NULL;
    item_buffers[1] = arrow_vectors;
    list_buffers[0] = NULL;
    struct_buffers[0] = NULL;

    make_array(&id_array, 4, 2, id_buffers, 0, NULL);
    make_array(&item_array, 4 * DIM, 2, item_buffers, 0, NULL);
    list_children[0] = &item_array;
    make_array(&list_array, 4, 1, list_buffers, 1, list_children);
    batch_children[0] = &id_array;
    batch_children[1] = &list_array;
    make_array(&batch_array, 4, 1, struct_buffers, 2, batch_children);

    leaf_schema(&id_schema, "l", "id", 0);
    leaf_schema(&item_schema, "f", "item", ARROW_FLAG_NULLABLE);
    leaf_schema(&list_schema, "+w:8", "vector", 0);
    list_schema.n_children = 1;
    list_schema_children[0] = &item_schema;
    list_schema.children = list_schema_children;
    leaf_schema(&batch_schema, "+s", "", 0);
    batch_schema.n_children = 2;
    batch_schema_children[0] = &id_schema;
    batch_schema_children[1] = &list_schema;
    batch_schema.children = batch_schema_children;
}

/* Adds ROWS vectors, searches each database for its own rows, checks the nearest. */
static void exercise(omendb_db db, int64_t id_base, omendb_collection *out) {
    omendb_collection docs;
    OK(omendb_create_collection(db, "docs", DIM, "l2", &docs));
    int64_t *ids = malloc(sizeof(int64_t) * ROWS);
    float *vectors = malloc(sizeof(float) * ROWS * DIM);
    for (int i = 0; i < ROWS; i++) {
        ids[i] = id_base + i;
        fill(vectors + i * DIM, i);
    }
    uint64_t written = 0;
    OK(omendb_add(docs, ids, vectors, ROWS, &written));
    CHECK(written == ROWS, "wrote %llu rows", (unsigned long long)written);

    /* A duplicate id is refused and nothing is written. */
    CHECK(omendb_add(docs, ids, vectors, 1, NULL) == OMENDB_ERR_INVALID_INPUT, "duplicate id refused");
    CHECK(strstr(omendb_last_error(), "duplicate") != NULL || strstr(omendb_last_error(), "already") != NULL,
          "duplicate message: %s", omendb_last_error());
    uint64_t count = 0;
    OK(omendb_wait_for_indexing(docs));
    OK(omendb_count(docs, &count));
    CHECK(count == ROWS, "count %llu", (unsigned long long)count);

    /* Three queries at once: rows 5, 17 and 123 must be their own nearest. */
    int probes[3] = {5, 17, 123};
    float queries[3 * DIM];
    for (int q = 0; q < 3; q++) fill(queries + q * DIM, probes[q]);
    omendb_result res;
    OK(omendb_search(docs, queries, 3, 5, 0, NULL, 0, &res));
    for (int q = 0; q < 3; q++) {
        size_t len = 0, n = 0;
        OK(omendb_result_len(res, q, &len));
        CHECK(len == 5, "query %d has %zu hits", q, len);
        int64_t hit_ids[5];
        float dist[5];
        OK(omendb_result_hits(res, q, hit_ids, dist, 5, &n));
        CHECK(n == 5 && hit_ids[0] == id_base + probes[q] && dist[0] < 1e-4f,
              "query %d nearest %lld at %f", q, (long long)hit_ids[0], dist[0]);
        for (size_t i = 1; i < n; i++) CHECK(dist[i] >= dist[i - 1], "sorted distances");
    }
    size_t bad = 0;
    CHECK(omendb_result_len(res, 3, &bad) == OMENDB_ERR_INVALID_INPUT, "query out of range refused");
    OK(omendb_result_free(res));

    /* A filter by ids: only rows 40..49 are candidates; all 10 come back for k = 10. */
    int64_t allowed[10];
    for (int i = 0; i < 10; i++) allowed[i] = id_base + 40 + i;
    OK(omendb_search(docs, queries, 1, 10, 0, allowed, 10, &res));
    size_t n = 0;
    int64_t got[10];
    OK(omendb_result_hits(res, 0, got, NULL, 10, &n));
    CHECK(n == 10, "filtered search returned %zu", n);
    for (size_t i = 0; i < n; i++) CHECK(got[i] >= id_base + 40 && got[i] < id_base + 50, "filtered id %lld", (long long)got[i]);
    OK(omendb_result_free(res));

    /* A wrong-sized query is refused by name. */
    float nan_query[DIM] = {0};
    nan_query[3] = NAN;
    CHECK(omendb_search(docs, nan_query, 1, 5, 0, NULL, 0, &res) == OMENDB_ERR_INVALID_INPUT, "NaN query refused");
    CHECK(strstr(omendb_last_error(), "non-finite") != NULL, "NaN message: %s", omendb_last_error());

    free(ids);
    free(vectors);
    *out = docs;
}

/* Threads: each searches the same collection for its own rows, 50 times. */
struct job {
    omendb_collection docs;
    int first;
    int ok;
};

static void *search_worker(void *arg) {
    struct job *job = arg;
    job->ok = 1;
    for (int i = 0; i < 50; i++) {
        int row = (job->first + i) % ROWS;
        float q[DIM];
        fill(q, row);
        omendb_result res;
        int64_t id = -1;
        size_t n = 0;
        if (omendb_search(job->docs, q, 1, 1, 0, NULL, 0, &res) != OMENDB_OK ||
            omendb_result_hits(res, 0, &id, NULL, 1, &n) != OMENDB_OK || n != 1 || id != row ||
            omendb_result_free(res) != OMENDB_OK) {
            job->ok = 0;
        }
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s DIR1 DIR2\n", argv[0]);
        return 2;
    }
    printf("omendb %s\n", omendb_version());
    omendb_db a, b;
    OK(omendb_open(argv[1], &a));
    OK(omendb_open(argv[2], &b));
    omendb_db again;
    CHECK(omendb_open(argv[1], &again) == OMENDB_ERR_LOCKED, "second open of a directory refused");

    omendb_collection docs_a, docs_b;
    exercise(a, 0, &docs_a);
    exercise(b, 1000000, &docs_b);

    struct job jobs[4];
    pthread_t threads[4];
    for (int t = 0; t < 4; t++) {
        jobs[t].docs = docs_a;
        jobs[t].first = t * 37;
        CHECK(pthread_create(&threads[t], NULL, search_worker, &jobs[t]) == 0, "thread %d started", t);
    }
    for (int t = 0; t < 4; t++) {
        pthread_join(threads[t], NULL);
        CHECK(jobs[t].ok, "thread %d found its rows", t);
    }

    /* Arrow in: a hand-built record batch, taken over by OmenDB (it calls release). */
    make_batch();
    uint64_t written = 0;
    OK(omendb_add_arrow(docs_a, &batch_array, &batch_schema, 0, &written));
    CHECK(written == 4, "arrow rows %llu", (unsigned long long)written);
    CHECK(batch_array.release == NULL, "the array was released by the import");
    batch_schema.release(&batch_schema);
    uint64_t count = 0;
    OK(omendb_count(docs_a, &count));
    CHECK(count == ROWS + 4, "count after arrow add %llu", (unsigned long long)count);

    /* Arrow out: the result's rows as a struct array: _query, id, vector, _distance. */
    float q[DIM];
    fill(q, 1002);
    omendb_result res;
    OK(omendb_search(docs_a, q, 1, 3, 0, NULL, 0, &res));
    struct ArrowArray out_array;
    struct ArrowSchema out_schema;
    OK(omendb_result_arrow(res, &out_array, &out_schema));
    CHECK(strcmp(out_schema.format, "+s") == 0 && out_schema.n_children == 4, "result schema %s/%lld",
          out_schema.format, (long long)out_schema.n_children);
    CHECK(out_array.length == 3, "result rows %lld", (long long)out_array.length);
    const int64_t *result_ids = out_array.children[1]->buffers[1];
    CHECK(result_ids[out_array.children[1]->offset] == 1002, "arrow nearest %lld", (long long)result_ids[0]);
    out_array.release(&out_array);
    out_schema.release(&out_schema);

    /* Stale handles: a freed result, twice; a collection passed as a result; a dropped
     * collection; a closed database and its collections; none touches freed memory. */
    OK(omendb_result_free(res));
    CHECK(omendb_result_free(res) == OMENDB_ERR_STALE_HANDLE, "double free refused");
    size_t len = 0;
    CHECK(omendb_result_len(res, 0, &len) == OMENDB_ERR_STALE_HANDLE, "freed result refused");
    omendb_result wrong_kind = {docs_a.id};
    CHECK(omendb_result_len(wrong_kind, 0, &len) == OMENDB_ERR_STALE_HANDLE, "wrong kind refused");
    omendb_db never = {0x12345678ULL << 32 | 7};
    CHECK(omendb_close(never) == OMENDB_ERR_STALE_HANDLE, "never-issued handle refused");

    OK(omendb_drop_collection(b, "docs"));
    CHECK(omendb_count(docs_b, &count) == OMENDB_ERR_NOT_FOUND, "dropped collection: %s", omendb_last_error());

    OK(omendb_close(a));
    CHECK(omendb_count(docs_a, &count) == OMENDB_ERR_CLOSED, "collection of a closed database");
    CHECK(omendb_close(a) == OMENDB_ERR_STALE_HANDLE, "double close refused");
    OK(omendb_collection_free(docs_a));
    CHECK(omendb_collection_free(docs_a) == OMENDB_ERR_STALE_HANDLE, "double collection free refused");

    /* Reopen: the rows were committed. */
    OK(omendb_open(argv[1], &a));
    omendb_collection reopened;
    OK(omendb_open_collection(a, "docs", &reopened));
    OK(omendb_count(reopened, &count));
    CHECK(count == ROWS + 4, "count after reopen %llu", (unsigned long long)count);
    CHECK(omendb_open_collection(a, "nope", &reopened) == OMENDB_ERR_NOT_FOUND, "missing collection");
    OK(omendb_collection_free(reopened));
    OK(omendb_collection_free(docs_b));
    OK(omendb_close(a));
    OK(omendb_close(b));

    /* Object storage: a URL opens like a directory (memory:// here; s3://, gs://, az:// and
     * file:// alike, their clients configured by the environment and by key=value options). */
    omendb_db m;
    omendb_collection docs_m;
    OK(omendb_open_with_options("memory://", NULL, 0, NULL, &m));
    exercise(m, 2000000, &docs_m);
    OK(omendb_collection_free(docs_m));
    OK(omendb_close(m));
    const char *options[] = {"aws_no_such_option=1"};
    CHECK(omendb_open_with_options("s3://bucket/db", options, 1, NULL, &m) == OMENDB_ERR_INVALID_INPUT &&
              strstr(omendb_last_error(), "aws_no_such_option") != NULL,
          "an unknown storage option is refused, naming it");
    CHECK(omendb_open_with_options(argv[1], options, 1, NULL, &m) == OMENDB_ERR_INVALID_INPUT,
          "a directory takes no storage options");

    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("all checks passed\n");
    return 0;
}
