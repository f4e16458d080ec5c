/*
 * test_sampler.c: preload/sampler.c on its own, against stubs of what it uses from the rest of
 * the shim. What an end-to-end test cannot reach on demand:
 *  - the countdown's decisions at their edges (a weight equal to the countdown is sampled, zero
 *    bytes weigh one);
 *  - a countdown at or below zero, which a signal handler sees when it interrupts a malloc's
 *    take-and-give-back (hooks.c): it must be taken as not armed and re-armed, never read as a
 *    huge unsigned countdown that would stop sampling for the rest of the thread's life;
 *  - arming only with a thread record (the fast paths count into it);
 *  - the distance between samples: exponential with mean R (the mean of many draws within 5
 *    standard errors: for an exponential, sd = mean);
 *  - the sampled set and the filter in front of it.
 */
#include "events.h"
#include "sampler.h"

#include <math.h>
#include <stdio.h>
#include <sys/mman.h>

/* ---- stubs of the shim's other files ---------------------------------------------------------- */

ap_config ap_cfg;
AP_TLS struct ap_hot ap_hot;
/* The sampler runs under the guard, where the countdown is the parked copy (shim.h). */
#define LEFT ap_hot.parked
static bool attached;

bool ap_events_attached(void)
{
	return attached;
}

void ap_lock(ap_spinlock *l)
{
	while (atomic_flag_test_and_set(l))
		;
}

void ap_unlock(ap_spinlock *l)
{
	atomic_flag_clear(l);
}

void *ap_sys_map(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* ---- checks ---------------------------------------------------------------------------------- */

static int failures, checks;

#define CHECK(cond, ...)                                                                           \
	do {                                                                                       \
		checks++;                                                                          \
		if (!(cond)) {                                                                     \
			failures++;                                                                \
			printf("FAIL %s:%d: ", __FILE__, __LINE__);                                \
			printf(__VA_ARGS__);                                                       \
			printf("\n");                                                              \
		}                                                                                  \
	} while (0)

#define R 4096
#define ARMED_MAX (1ull << 62)

static bool sane(void)
{
	return LEFT >= 1 && LEFT <= ARMED_MAX;
}

int main(void)
{
	ap_cfg.sample_bytes = R;
	ap_cfg.seed = 12345;

	/* No record: never armed, never sampled. */
	CHECK(!ap_sample_slow(100), "sampled without a thread record");
	CHECK(LEFT == 0, "armed without a thread record: %llu",
	      (unsigned long long)LEFT);
	attached = true;

	/* Arming. */
	ap_sample_arm();
	CHECK(ap_sample_armed() && sane(), "arming left %llu", (unsigned long long)LEFT);

	/* The edges: sampled iff the weight reaches the countdown. */
	LEFT = 100;
	CHECK(!ap_sample_slow(99), "99 bytes against 100 left: sampled");
	CHECK(LEFT == 1, "left after 99 of 100: %llu", (unsigned long long)LEFT);
	CHECK(ap_sample_slow(0), "a zero-byte request weighs 1 and reaches a countdown of 1");
	CHECK(sane(), "not re-armed after a sample: %llu", (unsigned long long)LEFT);
	LEFT = 100;
	CHECK(ap_sample_slow(100), "100 bytes against 100 left: not sampled");

	/* What a signal handler can find: a malloc took its weight and has not given it back. */
	for (int64_t transient = 0; transient >= -5000; transient -= 1000) {
		LEFT = (uint64_t)transient;
		CHECK(!ap_sample_armed(), "countdown %lld taken as armed", (long long)transient);
		(void)ap_sample_slow(10);
		CHECK(sane(), "countdown %lld left %llu after a decision", (long long)transient,
		      (unsigned long long)LEFT);
		/* The interrupted malloc then gives its weight back: still a valid countdown. */
		LEFT += (uint64_t)-transient;
		CHECK(sane(), "countdown %lld left %llu after the give-back", (long long)transient,
		      (unsigned long long)LEFT);
	}

	/* Distances between samples: a request of 2^40 bytes is always sampled, and the countdown
	 * it leaves is the next distance drawn, exponential with mean R (plus 1/2 for rounding up to a
	 * whole byte). */
	enum { NDRAW = 200000 };
	double sum = 0;
	int unsampled = 0;
	for (int i = 0; i < NDRAW; i++) {
		unsampled += !ap_sample_slow((size_t)1 << 40);
		sum += (double)LEFT;
	}
	CHECK(unsampled == 0, "%d requests of 2^40 bytes not sampled", unsampled);
	double mean = sum / NDRAW, bound = 5 * R / sqrt(NDRAW);
	CHECK(fabs(mean - (R + 0.5)) <= bound, "mean distance %.1f, want %d +- %.1f", mean, R, bound);

	/* The set, and the filter in front of it. */
	static char blocks[64];
	void *a = &blocks[0], *b = &blocks[16];
	CHECK(!ap_sampled_contains(a), "empty set contains a");
	CHECK(ap_sampled_add(a) && ap_sampled_contains(a), "a not in the set after adding it");
	CHECK(ap_sampled_maybe(a), "filter says a was not sampled");
	CHECK(!ap_sampled_contains(b), "set contains b, never added");
	CHECK(ap_sampled_remove(a) && !ap_sampled_contains(a), "a still in the set after removing it");
	CHECK(!ap_sampled_remove(a), "a removed twice");
	CHECK(!ap_sampled_maybe(a), "filter still holds a after its removal");
	/* Many blocks: the table grows, every one is found, and the filter forgets them all. */
	static char many[100000];
	int failed = 0;
	for (int i = 0; i < 100000; i += 8)
		failed += !ap_sampled_add(&many[i]);
	CHECK(failed == 0, "%d of 12500 adds failed", failed);
	int missing = 0;
	for (int i = 0; i < 100000; i += 8)
		missing += !ap_sampled_contains(&many[i]) || !ap_sampled_maybe(&many[i]);
	CHECK(missing == 0, "%d of 12500 sampled blocks not found", missing);
	failed = 0;
	for (int i = 0; i < 100000; i += 8)
		failed += !ap_sampled_remove(&many[i]);
	CHECK(failed == 0, "%d of 12500 removes failed", failed);
	int left = 0;
	for (int i = 0; i < 100000; i += 8)
		left += ap_sampled_maybe(&many[i]);
	CHECK(left == 0, "filter still holds %d of 12500 removed blocks", left);
	/* A pinned bucket stays: its frees always take the general path. */
	ap_sampled_pin(b);
	ap_sampled_add(b);
	ap_sampled_remove(b);
	CHECK(ap_sampled_maybe(b), "pinned bucket emptied");

	printf("%d of %d checks failed\n", failures, checks);
	return failures != 0;
}
