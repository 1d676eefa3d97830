// kprof: a kernel-time profile of any CUDA process, for the GPU machine (no nsys there).
//
// The CUDA driver loads the library named by CUDA_INJECTION64_PATH when the process first
// initialises CUDA and calls its InitializeInjection(). From there CUPTI's activity API
// records every kernel, memcpy and memset with device timestamps; at exit the totals per
// kernel name go to $VELA_KPROF_OUT (default stderr), largest first. Why a tool of our own:
// training and inference time is spent in hundreds of small candle kernels, and only a
// per-kernel breakdown says which ones to fuse.
//
// Environment:
//   VELA_KPROF_OUT   file for the table (appended)
//   VELA_KPROF_SKIP  seconds after CUDA start-up whose activity is ignored (warm-up), default 0
//   VELA_KPROF_TOP   rows to print, default 60
//
// Build: scripts/build-kprof.sh (needs CUPTI's headers and library from the nvidia-cuda-cupti
// wheel). Use: CUDA_INJECTION64_PATH=/path/libkprof.so LD_LIBRARY_PATH=<cupti dir> vela ...
#include <cupti.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BUF_SIZE (8u << 20)
#define MAX_NAMES 4096

typedef struct {
    char *name;
    uint64_t count;
    uint64_t total_ns;
    uint64_t max_ns;
} Entry;

static Entry entries[MAX_NAMES];
static int n_entries;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t t_skip_until;
static uint64_t span_start = UINT64_MAX, span_end;
static uint64_t busy_ns, n_records, n_dropped;

static void add(const char *name, uint64_t start, uint64_t end) {
    if (start < t_skip_until || end < start) return;
    uint64_t d = end - start;
    if (start < span_start) span_start = start;
    if (end > span_end) span_end = end;
    busy_ns += d;
    n_records++;
    for (int i = 0; i < n_entries; i++) {
        if (strcmp(entries[i].name, name) == 0) {
            entries[i].count++;
            entries[i].total_ns += d;
            if (d > entries[i].max_ns) entries[i].max_ns = d;
            return;
        }
    }
    if (n_entries == MAX_NAMES) return;
    entries[n_entries].name = strdup(name);
    entries[n_entries].count = 1;
    entries[n_entries].total_ns = d;
    entries[n_entries].max_ns = d;
    n_entries++;
}

static void CUPTIAPI buffer_requested(uint8_t **buffer, size_t *size, size_t *max_records) {
    *buffer = (uint8_t *)aligned_alloc(8, BUF_SIZE);
    *size = BUF_SIZE;
    *max_records = 0;
}

static const char *copy_kind(uint8_t k) {
    switch (k) {
    case CUPTI_ACTIVITY_MEMCPY_KIND_HTOD: return "[memcpy HtoD]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOH: return "[memcpy DtoH]";
    case CUPTI_ACTIVITY_MEMCPY_KIND_DTOD: return "[memcpy DtoD]";
    default: return "[memcpy other]";
    }
}

static void CUPTIAPI buffer_completed(CUcontext ctx, uint32_t stream, uint8_t *buffer, size_t size, size_t valid) {
    (void)ctx;
    (void)stream;
    CUpti_Activity *rec = NULL;
    pthread_mutex_lock(&lock);
    while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
        switch (rec->kind) {
        case CUPTI_ACTIVITY_KIND_KERNEL:
        case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
            CUpti_ActivityKernel10 *k = (CUpti_ActivityKernel10 *)rec;
            add(k->name ? k->name : "?", k->start, k->end);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMCPY: {
            CUpti_ActivityMemcpy6 *m = (CUpti_ActivityMemcpy6 *)rec;
            add(copy_kind(m->copyKind), m->start, m->end);
            break;
        }
        case CUPTI_ACTIVITY_KIND_MEMSET: {
            CUpti_ActivityMemset4 *m = (CUpti_ActivityMemset4 *)rec;
            add("[memset]", m->start, m->end);
            break;
        }
        default: break;
        }
    }
    size_t dropped = 0;
    cuptiActivityGetNumDroppedRecords(ctx, stream, &dropped);
    n_dropped += dropped;
    pthread_mutex_unlock(&lock);
    free(buffer);
}

static int by_total(const void *a, const void *b) {
    const Entry *x = a, *y = b;
    return (x->total_ns < y->total_ns) - (x->total_ns > y->total_ns);
}

static void report(void) {
    cuptiActivityFlushAll(1);
    pthread_mutex_lock(&lock);
    const char *path = getenv("VELA_KPROF_OUT");
    FILE *f = path ? fopen(path, "a") : stderr;
    if (!f) f = stderr;
    int top = getenv("VELA_KPROF_TOP") ? atoi(getenv("VELA_KPROF_TOP")) : 60;
    qsort(entries, n_entries, sizeof(Entry), by_total);
    double span = span_end > span_start ? (span_end - span_start) / 1e6 : 0.0;
    fprintf(f, "# kprof: %llu records (%llu dropped), %d names; device busy %.1f ms of a %.1f ms span (%.0f %%)\n",
            (unsigned long long)n_records, (unsigned long long)n_dropped, n_entries, busy_ns / 1e6, span,
            span > 0 ? 100.0 * busy_ns / 1e6 / span : 0.0);
    fprintf(f, "# total_ms\tshare\tcount\tmean_us\tmax_us\tname\n");
    for (int i = 0; i < n_entries && i < top; i++) {
        Entry *e = &entries[i];
        fprintf(f, "%.2f\t%.1f%%\t%llu\t%.1f\t%.1f\t%.160s\n", e->total_ns / 1e6, 100.0 * e->total_ns / (double)(busy_ns ? busy_ns : 1),
                (unsigned long long)e->count, e->total_ns / 1e3 / e->count, e->max_ns / 1e3, e->name);
    }
    if (f != stderr) fclose(f);
    pthread_mutex_unlock(&lock);
}

int InitializeInjection(void) {
    uint64_t now = 0;
    cuptiGetTimestamp(&now);
    const char *skip = getenv("VELA_KPROF_SKIP");
    t_skip_until = now + (uint64_t)((skip ? atof(skip) : 0.0) * 1e9);
    if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS) {
        fprintf(stderr, "kprof: CUPTI refused the activity callbacks\n");
        return 0;
    }
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY);
    cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET);
    atexit(report);
    fprintf(stderr, "kprof: recording kernels (skip %s s)\n", skip ? skip : "0");
    return 1;
}
