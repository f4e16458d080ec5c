/*
 * codec: per-event costs of the trace codec, each side alone, so that a regression shows on the
 * side where it happens (bench/micro.py runs it).
 *
 *   codec encode THREADS EVENTS   the writer's chunk encoder (preload/chunkenc.c) on synthetic
 *                                 rounds shaped like churn (a window of 64 live blocks per
 *                                 thread, small varied sizes), events spread over THREADS
 *                                 buffers a round, every pair encodable without addresses
 *   codec decode TRACE            the analyzer's reader (analyzer/decode.c) on a trace file held
 *                                 in memory: decompression, records, events, sorting
 *
 * Each prints "ns_per_event: X" and "bytes: N" (encoded payload bytes, or events decoded).
 */
#include "chunkenc.h"
#include "decode.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t out_bytes;

static void sink(const struct ap_chunk_out *out)
{
	out_bytes += out->total;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* Fills b with rows as the hot path writes them, one thread's malloc/free churn; the stamps of
 * the threads interleave (stamp = i * nthreads + thread). Returns the events written. */
static size_t fill(struct ap_buf *b, uint32_t tid, unsigned nthreads, uint64_t *stamp, uintptr_t live[64])
{
	b->tid = tid;
	b->len = 0;
	b->base_stamp = *stamp;
	b->last_addr = 0;
	uint64_t last = *stamp;
	size_t n = 0;
	while (b->len + AP_EVENT_MAX * 2 <= AP_BUF_DATA) {
		unsigned k = (unsigned)(next_rand() & 63);
		uint8_t *q = b->data + b->len;
		for (int free_it = 1; free_it >= 0; free_it--) {
			uintptr_t a = free_it ? live[k] : 0x7f0000000000u + (next_rand() & 0xffff0);
			*q++ = (uint8_t)(free_it ? AP_EV_FREE | AP_API_FREE << 4 : AP_EV_ALLOC);
			*stamp += nthreads;
			q = ap_put_varint(q, *stamp - last);
			last = *stamp;
			q = ap_put_svarint(q, (int64_t)(a - b->last_addr));
			b->last_addr = a;
			if (!free_it) {
				q = ap_put_varint(q, 8 + (next_rand() & 255));
				q = ap_put_varint(q, 1);
				live[k] = a;
			}
			n++;
		}
		b->len = (size_t)(q - b->data);
	}
	return n;
}

static int encode_bench(unsigned nthreads, uint64_t events)
{
	struct ap_buf **bufs = calloc(nthreads, sizeof(*bufs));
	uintptr_t (*live)[64] = calloc(nthreads, sizeof(*live));
	if (!bufs || !live)
		return 1;
	for (unsigned t = 0; t < nthreads; t++) {
		bufs[t] = calloc(1, sizeof(struct ap_buf));
		if (!bufs[t])
			return 1;
		for (int k = 0; k < 64; k++)
			live[t][k] = 0x7f0000000000u + (next_rand() & 0xffff0);
	}
	uint64_t done = 0;
	double spent = 0;
	while (done < events) {
		for (unsigned t = 0; t < nthreads; t++) {
			uint64_t stamp = done * 4 + t + 1;
			done += fill(bufs[t], t + 1, nthreads, &stamp, live[t]);
		}
		double t0 = now();
		/* Every free is below the bound: the round pairs what it can, as a quiet round does. */
		ap_round_encode(bufs, nthreads, UINT64_MAX, sink);
		spent += now() - t0;
	}
	printf("ns_per_event: %.2f\nbytes: %llu\n", spent / (double)done * 1e9, (unsigned long long)out_bytes);
	return 0;
}

static uint64_t n_events;
static void on_event(void *ctx, const ap_event *e)
{
	(void)ctx;
	(void)e;
	n_events++;
}

static int decode_bench(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return 1;
	fseek(f, 0, SEEK_END);
	long len = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *data = malloc((size_t)len + 1);
	if (!data || fread(data, 1, (size_t)len, f) != (size_t)len)
		return 1;
	fclose(f);
	ap_reader_ops ops = {.event = on_event};
	ap_read_result res;
	double t0 = now();
	int err = ap_read_trace_mem(path, data, (size_t)len, true, &ops, &res);
	double spent = now() - t0;
	if (err) {
		fprintf(stderr, "%s\n", res.error);
		return 1;
	}
	printf("ns_per_event: %.2f\nbytes: %llu\n", spent / (double)(n_events ? n_events : 1) * 1e9,
	       (unsigned long long)n_events);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "encode"))
		return encode_bench((unsigned)atoi(argv[2]), strtoull(argv[3], NULL, 10));
	if (argc == 3 && !strcmp(argv[1], "decode"))
		return decode_bench(argv[2]);
	fprintf(stderr, "usage: codec encode THREADS EVENTS | codec decode TRACE\n");
	return 2;
}
