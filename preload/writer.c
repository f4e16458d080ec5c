/*
 * writer.c: the background thread that turns buffers into the trace file.
 *
 * Every 100 ms, or sooner when threads have handed over 8 full buffers (AP_WAKE_QUEUED in
 * events.c), the writer runs a round:
 *
 *     W = stamp()            every event stamped before W is now in a buffer we can reach
 *     steal each thread's current buffer, take the queue of full ones, take the meta stream
 *     write meta records (stacks, modules), then the buffers as CHUNK records
 *     write SYNC(W), CLOCK and TOTALS; end the zstd frame if it is 100 ms old, write(2) it
 *
 * Ending a frame at least every 100 ms is what makes a killed program's trace readable up to
 * then. Not every round: a frame's compression starts from nothing, and frames of one round
 * (22-53 KiB of stream) took 15-45% more bytes. Longer frames cost zstd more time per byte at a
 * given level (more history to match against), so the level is 2: churn_mt at scale 0.3 takes
 * 1.98 B/event against 2.25 with a frame per round at level 3, and gcc's cc1 1.12 against 1.67,
 * for a little more CPU (interleaved runs of churn_mt in full mode: 2.94 s added against 2.73;
 * runs differ by about 5% from one set to the next).
 *
 * Sampled mode in a process that has one thread starts no writer thread: a second thread, even
 * one that never touches the heap, makes glibc's malloc take its arena lock on every call that
 * misses the thread cache (measured: python3 with PYTHONMALLOC=malloc +5% CPU from an idle
 * thread alone, more than everything else sampling costs it). Instead the thread that records a
 * sample (or a sampled block's free) runs the round itself when the last one is 100 ms old or
 * enough buffers are queued (ap_writer_poll): writing follows the sampling activity, as jemalloc's
 * prof_interval dumps do. The program's first pthread_create starts the writer thread (from the
 * program's own call, a safe place to create a thread; never from inside malloc).
 * The zstd context gets its memory from mmap (ZSTD_customMem), never from the traced allocator.
 * All signals are blocked in the writer thread, so the program's handlers never run on it.
 *
 * The descriptor: a high close-on-exec one, out of the program's way. Daemons close every
 * descriptor at start, and programs dup2 over numbers they think free; so before each write the
 * writer checks (fstat: device and inode) that the descriptor is still the trace file. If not, the
 * number now belongs to the program and is left alone; the file is opened again by its absolute
 * name in append mode for each write and closed right after, so a program that manages its
 * descriptors does not find one of ours lying around again.
 */
#define ZSTD_STATIC_LINKING_ONLY
#include <zstd.h>

#include "chunkenc.h"
#include "events.h"

#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <fcntl.h>
#include <sys/single_threaded.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#define AP_ROUND_NS 100000000ull
#define AP_ZOUT (128 * 1024)

/* Serialises rounds: the writer thread's, and after exit the synchronous ones of any thread. */
static pthread_mutex_t round_lock = PTHREAD_MUTEX_INITIALIZER;
static int trace_fd = -1;
static char trace_path[4096];
static dev_t trace_dev;
static ino_t trace_ino;
static bool fd_per_write; /* the program closed or replaced our descriptor once */
static atomic_int end_how = AP_END_UNKNOWN, end_status;
static atomic_bool finished;
atomic_int ap_trace_pid;
static ZSTD_CCtx *cctx;
static uint8_t *zout;
static size_t zout_len;
static bool write_failed;
static uint64_t bytes_raw, bytes_file, n_allocs, n_frees;

static pthread_t writer_thread;
static atomic_bool writer_up, writer_stop;
/* Sampled mode in a process with one thread: no writer thread yet (see ap_writer_poll). */
atomic_bool ap_writer_deferred;
static atomic_bool round_due; /* deferred: enough buffers are queued for a round */
/* The zstd frame: ended at least every AP_ROUND_NS (a killed program's trace is readable up to
 * the last end), not at every round. Written under round_lock; ap_writer_poll reads the time
 * without it (a deferred round always ends the frame, so it is also the last round's time). */
static _Atomic uint64_t frame_end_ns;
static bool frame_open; /* something was compressed since the last end; under round_lock */
static uint64_t last_promise; /* the stamp of the last SYNC written; under round_lock */
/* Buffers holding events stamped after the last promise: the next round's (chunkenc.h). */
static struct ap_buf *carry;
static atomic_uint wake_word;  /* futex: bumped to wake the writer early */
static atomic_bool writer_sleeping;

bool ap_writer_running(void)
{
	return atomic_load_explicit(&writer_up, memory_order_relaxed);
}

void ap_writer_wake(void)
{
	if (atomic_load_explicit(&ap_writer_deferred, memory_order_relaxed))
		atomic_store_explicit(&round_due, true, memory_order_relaxed);
	if (atomic_load_explicit(&writer_sleeping, memory_order_relaxed)) {
		atomic_fetch_add(&wake_word, 1);
		syscall(SYS_futex, &wake_word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
	}
}

/* ---- zstd with mmap'd memory ------------------------------------------------------------------- */

static void *zalloc(void *opaque, size_t size)
{
	(void)opaque;
	size_t *p = ap_sys_map(size + 16);
	if (!p)
		return NULL;
	*p = size + 16;
	return (char *)p + 16;
}

static void zfree(void *opaque, void *ptr)
{
	(void)opaque;
	if (ptr) {
		size_t *p = (size_t *)((char *)ptr - 16);
		ap_sys_unmap(p, *p);
	}
}

static bool is_trace(int fd)
{
	struct stat st;
	return fd >= 0 && fstat(fd, &st) == 0 && st.st_dev == trace_dev && st.st_ino == trace_ino;
}

/* A descriptor for the trace file, or -errno; give it back with put_fd. */
static int get_fd(void)
{
	if (!fd_per_write) {
		if (is_trace(trace_fd))
			return trace_fd;
		/* Closed under us, or the number reused by the program: not ours any more. */
		trace_fd = -1;
		fd_per_write = true;
		if (ap_cfg.verbose)
			ap_log("the trace's descriptor was closed or replaced by the program; reopening %s "
			       "for each write", trace_path);
	}
	int fd = open(trace_path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (!is_trace(fd)) { /* removed and created again by someone else: not our file */
		close(fd);
		return -ESTALE;
	}
	return fd;
}

static void put_fd(int fd)
{
	if (fd >= 0 && fd != trace_fd)
		close(fd);
}

static void flush_out(void)
{
	if (zout_len && !write_failed) {
		int fd = get_fd();
		int err = fd < 0 ? fd : ap_sys_write_all(fd, zout, zout_len);
		put_fd(fd);
		if (err) {
			/* Disk full, quota, EIO: the program goes on; what was written stays
			 * readable, and the reader reports the missing END. */
			write_failed = true;
			/* Off, not merely unwritten: nothing returns buffers to the pool any more, and
			 * a thread must never wait for one that will not come. */
			atomic_store(&ap_state, AP_STATE_OFF);
			ap_log("cannot write %s (%s); tracing stops here, the program goes on", trace_path,
			       strerror(-err));
		} else {
			bytes_file += zout_len;
		}
	}
	zout_len = 0;
}

static void compress(const void *data, size_t len, ZSTD_EndDirective mode)
{
	ZSTD_inBuffer in = {data, len, 0};
	bytes_raw += len;
	for (;;) {
		ZSTD_outBuffer out = {zout + zout_len, AP_ZOUT - zout_len, 0};
		size_t left = ZSTD_compressStream2(cctx, &out, &in, mode);
		zout_len += out.pos;
		if (ZSTD_isError(left)) {
			AP_WARN_ONCE("zstd: %s", ZSTD_getErrorName(left));
			return;
		}
		if (zout_len == AP_ZOUT)
			flush_out();
		if (mode == ZSTD_e_continue ? in.pos == in.size : left == 0)
			break;
	}
}

static void put_record(int kind, const uint8_t *payload, size_t len)
{
	uint8_t head[1 + AP_VARINT_MAX], *p = head;
	*p++ = (uint8_t)kind;
	p = ap_put_varint(p, len);
	compress(head, (size_t)(p - head), ZSTD_e_continue);
	compress(payload, len, ZSTD_e_continue);
}

static void end_frame(void)
{
	compress(NULL, 0, ZSTD_e_end);
	flush_out();
	frame_open = false;
	atomic_store_explicit(&frame_end_ns, ap_sys_monotonic_ns(), memory_order_relaxed);
}

/* ---- records ----------------------------------------------------------------------------------- */

static uint8_t *put_str(uint8_t *p, const uint8_t *end, const char *s, size_t n)
{
	if ((size_t)(end - p) < n + AP_VARINT_MAX)
		n = 0;
	p = ap_put_varint(p, n);
	memcpy(p, s, n);
	return p + n;
}

static void write_header(void)
{
	static uint8_t buf[64 * 1024];
	uint8_t *p = buf, *end = buf + sizeof(buf);
	static char cmdline[32 * 1024], exe[4096];
	long clen = ap_sys_read_file("/proc/self/cmdline", cmdline, sizeof(cmdline));
	ssize_t elen = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	exe[elen > 0 ? elen : 0] = 0;
	struct utsname un;
	if (uname(&un))
		un.nodename[0] = 0;

	p = ap_put_varint(p, (uint64_t)getpid());
	p = ap_put_varint(p, (uint64_t)getppid());
	p = ap_put_varint(p, ap_sys_realtime_ns());
	p = ap_put_varint(p, (uint64_t)ap_clock_kind);
	p = ap_put_varint(p, ap_stamp());
	p = ap_put_varint(p, ap_sys_monotonic_ns());
	p = ap_put_varint(p, ap_cfg.sample_bytes);
	p = ap_put_varint(p, ap_cfg.depth);
	p = ap_put_varint(p, ap_cfg.seed);
	p = ap_put_varint(p, (uint64_t)sysconf(_SC_PAGESIZE));
	p = put_str(p, end, exe, strlen(exe));
	uint64_t argc = 0;
	for (long i = 0; i < clen; i++)
		argc += cmdline[i] == 0;
	p = ap_put_varint(p, argc);
	for (long i = 0; i < clen;) {
		size_t n = strlen(cmdline + i);
		p = put_str(p, end, cmdline + i, n);
		i += (long)n + 1;
	}
	p = ap_put_varint(p, ap_cfg.no_children ? 0 : AP_HDR_CHILDREN);
	p = put_str(p, end, un.nodename, strlen(un.nodename));

	uint8_t magic[AP_MAGIC_LEN + AP_VARINT_MAX], *m = magic;
	memcpy(m, AP_MAGIC, AP_MAGIC_LEN);
	m = ap_put_varint(m + AP_MAGIC_LEN, AP_FORMAT_VERSION);
	compress(magic, (size_t)(m - magic), ZSTD_e_continue);
	put_record(AP_REC_HEADER, buf, (size_t)(p - buf));
}

static void write_chunk(void *ctx, const struct ap_chunk_out *out)
{
	(void)ctx;
	uint8_t head[1 + AP_VARINT_MAX], *p = head;
	*p++ = AP_REC_CHUNK;
	p = ap_put_varint(p, out->total);
	compress(head, (size_t)(p - head), ZSTD_e_continue);
	for (size_t i = 0; i < out->npieces; i++)
		if (out->len[i])
			compress(out->piece[i], out->len[i], ZSTD_e_continue);
	n_allocs += out->allocs;
	n_frees += (uint64_t)out->frees;
}

/* Takes the owner's buffer if it holds events. The owner holds it only while encoding one event;
 * if it stays held (a thread stopped inside the shim), give up after a while, and do not promise
 * a SYNC this round. */
static struct ap_buf *steal(struct ap_thread *t, bool *complete)
{
	struct ap_buf *b;
	for (int spins = 0; !(b = atomic_exchange(&t->cur, NULL)); spins++) {
		if (spins > 20000) {
			*complete = false;
			return NULL;
		}
		if (spins & 63)
			__builtin_ia32_pause();
		else
			sched_yield();
	}
	if (b == AP_NOBUF || b->len == 0) {
		atomic_store(&t->cur, b);
		return NULL;
	}
	atomic_store(&t->cur, AP_NOBUF);
	return b;
}

static void put_clock(uint64_t stamp)
{
	uint8_t buf[3 * AP_VARINT_MAX], *p = buf;
	p = ap_put_varint(p, stamp);
	p = ap_put_varint(p, ap_sys_monotonic_ns());
	p = ap_put_varint(p, ap_sys_realtime_ns());
	put_record(AP_REC_CLOCK, buf, (size_t)(p - buf));
}

static void put_list(struct ap_buf *b)
{
	while (b) {
		struct ap_buf *next = b->next;
		ap_pool_put(b);
		b = next;
	}
}

static void put_totals(uint64_t stamp)
{
	uint64_t c[3];
	ap_events_totals(c);
	uint8_t buf[4 * AP_VARINT_MAX], *p = buf;
	p = ap_put_varint(p, stamp);
	for (int i = 0; i < 3; i++)
		p = ap_put_varint(p, c[i]);
	put_record(AP_REC_TOTALS, buf, (size_t)(p - buf));
}

/* One round; round_lock held. */
/* Full buffers written in one round at most. When the program fills buffers faster than they are
 * compressed, the queue grows to the pool's size (about 1.5 million events); writing it all
 * before one SYNC would make the reader hold that many events. Written a slice at a time, each
 * round promises only what it can: the SYNC stamp is lowered to the oldest stamp left queued. */
#define AP_ROUND_MAX_BUFFERS 48

/* One round; round_lock held. Returns true when full buffers are left for another round. */
static bool round_locked(bool force_frame)
{
	if ((trace_fd < 0 && !fd_per_write) || write_failed)
		return false;
	uint64_t w = ap_stamp();
	bool complete = true;
	struct ap_buf *stolen = NULL, **tail = &stolen;
	for (struct ap_thread *t = ap_threads_first(); t; t = t->next) {
		struct ap_buf *b = steal(t, &complete);
		if (b) {
			b->next = NULL;
			*tail = b;
			tail = &b->next;
		}
	}
	uint64_t lost_a = atomic_exchange(&ap_orphan_lost_allocs, 0);
	uint64_t lost_f = atomic_exchange(&ap_orphan_lost_frees, 0);
	for (struct ap_thread *t = ap_threads_first(); t; t = t->next) {
		/* Counts of a thread that may write no further event (the signal handler ran after
		 * its last one): collected here, each exactly once (the owner exchanges too). */
		if (atomic_load_explicit(&t->lost_allocs, memory_order_relaxed) |
		    atomic_load_explicit(&t->lost_frees, memory_order_relaxed)) {
			lost_a += atomic_exchange(&t->lost_allocs, 0);
			lost_f += atomic_exchange(&t->lost_frees, 0);
		}
	}
	/* Taken after stealing: a buffer queued just before its thread's current one was
	 * stolen must be in this round too (see the SYNC promise). */
	uint64_t left_min;
	struct ap_buf *queued = ap_queue_take(AP_ROUND_MAX_BUFFERS, &left_min);
	if (left_min != UINT64_MAX && stolen) {
		/* A backlog: the SYNC of this round stops below what is left queued, so the events
		 * of the buffers just stolen (newer still) could not be released by the reader and
		 * would pile up there round after round. They go back in line, behind the queue. */
		for (struct ap_buf *b = stolen; b; b = b->next)
			if (b->base_stamp < left_min)
				left_min = b->base_stamp;
		ap_queue_requeue(stolen);
		stolen = NULL;
	}
	struct ap_buf *meta = ap_meta_take_all();
	/* A frame ends when it is AP_ROUND_NS old, and always outside the writer thread's steady
	 * state (start, after exit, sampled mode's deferred rounds). A frame compresses from
	 * nothing, so ending one each round cost 15-45% more bytes (frames of 22-53 KiB), and
	 * holding buffers back to make rounds bigger left them to go cold before compression. */
	uint64_t now = ap_sys_monotonic_ns();
	bool end = force_frame || atomic_load(&ap_state) != AP_STATE_ON ||
	           atomic_load_explicit(&ap_writer_deferred, memory_order_relaxed) ||
	           now - atomic_load_explicit(&frame_end_ns, memory_order_relaxed) >= AP_ROUND_NS;
	if (!stolen && !queued && !carry && !meta && !force_frame && !lost_a && !lost_f) {
		if (frame_open && end)
			end_frame();
		return false;
	}
	for (struct ap_buf *b = meta; b; b = b->next)
		compress(b->data, b->len, ZSTD_e_continue);
	put_list(meta);
	/* The promise this round's SYNC will make (or, without one, the last made): the encoder
	 * takes only the events stamped below it (chunkenc.h). */
	uint64_t sync = left_min < w ? left_min : w;
	if (complete)
		last_promise = sync;
	/* The round: what earlier rounds left (oldest), the full buffers, the threads' current ones. */
	struct ap_buf *list = carry, **end_l = &list;
	while (*end_l)
		end_l = &(*end_l)->next;
	*end_l = queued;
	while (*end_l)
		end_l = &(*end_l)->next;
	*end_l = stolen;
	struct ap_buf *done;
	carry = ap_chunk_round(list, last_promise, write_chunk, NULL, &done);
	put_list(done);
	if (lost_a || lost_f) {
		/* A chunk of tid 0, the shim's own: one LOST event stamped W (dstamp 0). */
		static uint64_t lost_seq;
		uint8_t others[2 * AP_VARINT_MAX], *o = others;
		o = ap_put_varint(o, lost_a);
		o = ap_put_varint(o, lost_f);
		uint8_t buf[12 * AP_VARINT_MAX + 2], *p = buf;
		p = ap_put_varint(p, 0);
		p = ap_put_varint(p, lost_seq++);
		p = ap_put_varint(p, w);
		p = ap_put_varint(p, 0);                  /* first ordinal: no allocation */
		p = ap_put_varint(p, 1);                  /* nevents */
		p = ap_put_varint(p, 1);                  /* stamps: one varint 0 */
		p = ap_put_varint(p, 0);                  /* addrs */
		p = ap_put_varint(p, 0);                  /* backs */
		p = ap_put_varint(p, 0);                  /* infos */
		p = ap_put_varint(p, (uint64_t)(o - others));
		*p++ = AP_EV_LOST;                        /* tags */
		*p++ = 0;                                 /* stamps */
		memcpy(p, others, (size_t)(o - others));
		p += o - others;
		put_record(AP_REC_CHUNK, buf, (size_t)(p - buf));
	}
	if (complete) {
		uint8_t buf[AP_VARINT_MAX];
		put_record(AP_REC_SYNC, buf, (size_t)(ap_put_varint(buf, sync) - buf));
	}
	put_clock(w);
	put_totals(w);
	if (end)
		end_frame();
	else
		frame_open = true;
	return left_min != UINT64_MAX;
}

/* Rounds until nothing full is left queued; round_lock held. */
static void rounds_locked(void)
{
	/* Then the events stamped after the last round began (carry): a round or two more take
	 * them, unless other threads keep recording meanwhile. */
	for (int extra = 0; round_locked(false) || (carry && extra++ < 3);)
		;
}

void ap_writer_sync(void)
{
	pthread_mutex_lock(&round_lock);
	rounds_locked();
	pthread_mutex_unlock(&round_lock);
}

static void *writer_main(void *arg);

static void start_thread(void)
{
	/* Block every signal in the new thread: the program's handlers must run on its own. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int err = pthread_create(&writer_thread, NULL, writer_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err == 0)
		atomic_store(&writer_up, true);
	else
		ap_log("cannot start the writer thread (%s); writing synchronously", strerror(err));
}

static void *writer_main(void *arg)
{
	(void)arg;
	ap_guard_enter(2); /* anything this thread allocates is the shim's own */
	while (!atomic_load(&writer_stop)) {
		unsigned seen = atomic_load(&wake_word);
		ap_modules_scan(false);
		pthread_mutex_lock(&round_lock);
		bool more = round_locked(false);
		pthread_mutex_unlock(&round_lock);
		if (more)
			continue; /* the queue is long: no sleep */
		atomic_store(&writer_sleeping, true);
		struct timespec ts = {0, (long)AP_ROUND_NS};
		if (seen == atomic_load(&wake_word) && !atomic_load(&writer_stop))
			syscall(SYS_futex, &wake_word, FUTEX_WAIT_PRIVATE, seen, &ts, NULL, 0);
		atomic_store(&writer_sleeping, false);
	}
	return NULL;
}

bool ap_writer_start(void)
{
	/* A fork child's trace names no block of its parent's by ordinal. */
	ap_chunk_reset();
	last_promise = 0;
	carry = NULL; /* a fork child: the parent's, in a pool the child has forgotten */
	if (cctx) {
		/* A fork child: the parent's context, between two frames (round_lock was held
		 * across the fork), serves again. */
		ZSTD_CCtx_reset(cctx, ZSTD_reset_session_only);
	} else {
		ZSTD_customMem mem = {zalloc, zfree, NULL};
		cctx = ZSTD_createCCtx_advanced(mem);
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, 2); /* see the top */
		ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
	}
	if (!zout)
		zout = ap_sys_map(AP_ZOUT);
	if (!cctx || !zout) {
		ap_log("out of memory at start; tracing is off");
		return false;
	}
	zout_len = 0;
	trace_fd = ap_sys_create_trace(ap_cfg.output, trace_path, sizeof(trace_path));
	if (trace_fd < 0) {
		ap_log("cannot create %s (%s); tracing is off", trace_path, strerror(-trace_fd));
		return false;
	}
	struct stat st;
	if (fstat(trace_fd, &st) == 0) {
		trace_dev = st.st_dev;
		trace_ino = st.st_ino;
	}
	atomic_store(&ap_trace_pid, (int)getpid());
	if (ap_cfg.run_log[0]) {
		char line[4096 + 64];
		ap_snprintf(line, sizeof(line), "%d %d %s\n", (int)getpid(), (int)getppid(), trace_path);
		ap_sys_append_line(ap_cfg.run_log, line);
	}
	write_header();
	ap_modules_scan(true);
	ap_writer_sync();
	if (write_failed)
		return false; /* the disk was full from the start: warned once, tracing stays off */
	/* On before the writer thread exists: a write failure it meets later turns tracing off, and
	 * our caller must not undo that. */
	atomic_store(&ap_state, AP_STATE_ON);
	if (ap_cfg.sample_bytes && __libc_single_threaded) {
		atomic_store(&ap_writer_deferred, true);
		return true;
	}
	start_thread();
	return true;
}

void ap_writer_thread_needed(void)
{
	if (atomic_exchange(&ap_writer_deferred, false))
		start_thread();
}

void ap_writer_poll(void)
{
	uint64_t now = ap_sys_monotonic_ns();
	if (!atomic_load_explicit(&round_due, memory_order_relaxed) &&
	    now - atomic_load_explicit(&frame_end_ns, memory_order_relaxed) < AP_ROUND_NS)
		return;
	if (pthread_mutex_trylock(&round_lock) != 0)
		return; /* another thread is writing a round (or the process is forking) */
	if (atomic_load(&ap_writer_deferred)) {
		atomic_store(&round_due, false);
		rounds_locked();
	}
	pthread_mutex_unlock(&round_lock);
	/* After the round, as the writer thread does before its next one: a module loaded since is
	 * reported before the events of the next round can point into it. */
	ap_modules_scan(false);
}

static void write_end(void)
{
	uint64_t counters[AP_CNT__COUNT] = {
		[AP_CNT_ALLOCS] = n_allocs,
		[AP_CNT_FREES] = n_frees,
		[AP_CNT_LOST] = atomic_load(&ap_lost_total),
		[AP_CNT_STACKS] = atomic_load(&ap_stacks_count),
		[AP_CNT_BYTES_RAW] = bytes_raw,
		[AP_CNT_BYTES_FILE] = bytes_file,
		[AP_CNT_SHIM_MEMORY] = atomic_load(&ap_sys_mapped),
	};
	uint8_t buf[(5 + AP_CNT__COUNT) * AP_VARINT_MAX], *p = buf;
	p = ap_put_varint(p, ap_stamp());
	p = ap_put_varint(p, ap_sys_monotonic_ns());
	p = ap_put_varint(p, (uint64_t)atomic_load(&end_how));
	p = ap_put_varint(p, (uint64_t)atomic_load(&end_status));
	p = ap_put_varint(p, AP_CNT__COUNT);
	for (int i = 0; i < AP_CNT__COUNT; i++)
		p = ap_put_varint(p, counters[i]);
	put_record(AP_REC_END, buf, (size_t)(p - buf));
	put_totals(ap_stamp());
	end_frame();
}

void ap_writer_exit_record(int how, int status)
{
	if (atomic_load(&ap_trace_pid) != (int)getpid())
		return;
	uint8_t buf[2 * AP_VARINT_MAX], *p = buf;
	p = ap_put_varint(p, (uint64_t)how);
	p = ap_put_varint(p, (uint64_t)status);
	pthread_mutex_lock(&round_lock);
	if (trace_fd >= 0 || fd_per_write) {
		put_record(AP_REC_EXIT, buf, (size_t)(p - buf));
		end_frame();
	}
	pthread_mutex_unlock(&round_lock);
}

void ap_writer_set_end(int how, int status)
{
	atomic_store(&end_status, status);
	atomic_store(&end_how, how);
}

void ap_writer_finish(void)
{
	if (atomic_exchange(&finished, true))
		return;
	atomic_store(&ap_writer_deferred, false); /* FINAL: every event is written as it happens */
	if (atomic_load(&writer_up)) {
		atomic_store(&writer_stop, true);
		atomic_store(&writer_sleeping, true);
		ap_writer_wake();
		pthread_join(writer_thread, NULL);
		atomic_store(&writer_up, false);
	}
	pthread_mutex_lock(&round_lock);
	/* From here on every event is written as it happens: destructors of other libraries and
	 * threads still running after exit() allocate too. */
	atomic_store(&ap_state, AP_STATE_FINAL);
	ap_modules_scan(false);
	rounds_locked();
	if ((trace_fd >= 0 || fd_per_write) && !write_failed)
		write_end();
	pthread_mutex_unlock(&round_lock);
}

void ap_writer_forked_child(void)
{
	/* The descriptor is the parent's open file: the child must neither write to it nor keep
	 * it (it would show up as a descriptor the program never opened). Unless the program
	 * reused the number meanwhile: then it is the program's. */
	if (!fd_per_write && is_trace(trace_fd))
		close(trace_fd);
	trace_fd = -1;
	fd_per_write = false;
	write_failed = false;
	trace_path[0] = 0;
	bytes_raw = bytes_file = n_allocs = n_frees = 0;
	zout_len = 0;
	frame_open = false; /* the parent's, discarded with its context's session (writer_start) */
	atomic_store(&frame_end_ns, 0);
	atomic_store(&ap_trace_pid, 0);
	atomic_store(&end_how, AP_END_UNKNOWN);
	atomic_store(&end_status, 0);
	atomic_store(&finished, false);
	atomic_store(&writer_up, false);
	atomic_store(&ap_writer_deferred, false);
	atomic_store(&round_due, false);
	atomic_store(&writer_stop, false);
	atomic_store(&writer_sleeping, false);
	pthread_mutex_init(&round_lock, NULL);
}

void ap_writer_lock(void)
{
	pthread_mutex_lock(&round_lock);
}

void ap_writer_unlock(void)
{
	pthread_mutex_unlock(&round_lock);
}
