/*
 * modules.c: records the loaded ELF objects (path, load bias, PT_LOAD segments, build-id) so the
 * analyzer can symbolize offline, on another machine too. Scanned at start, after dlopen and
 * dlclose, and by the writer whenever the loader's add/remove counters moved (libc's own dlopens
 * of NSS modules do not pass through our dlopen hook).
 */
#include "shim.h"

#include <elf.h>
#include <link.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

/* A module we have reported, to tell new ones and vanished ones apart on the next scan. */
struct known {
	struct known *next;
	uintptr_t base;
	uint32_t id;
	uint32_t name_hash;
	bool seen;
};

/* Serialises scans; taken only on dlopen/dlclose and by the writer, never on the hot path. */
static pthread_mutex_t scan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct known *known_list;
static uint32_t next_id = 1;
static unsigned long long last_adds, last_subs;
static uintptr_t shim_lo, shim_hi;
static char shim_path[4096];

atomic_uint ap_generation;

static uint32_t hash_str(const char *s)
{
	uint32_t h = 2166136261u;
	while (*s)
		h = (h ^ (uint8_t)*s++) * 16777619u;
	return h;
}

static const uint8_t *find_build_id(const struct dl_phdr_info *info, size_t *len)
{
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_NOTE)
			continue;
		const uint8_t *p = (const uint8_t *)(info->dlpi_addr + ph->p_vaddr);
		const uint8_t *end = p + ph->p_memsz;
		while (p + sizeof(ElfW(Nhdr)) <= end) {
			const ElfW(Nhdr) *nh = (const ElfW(Nhdr) *)p;
			const uint8_t *name = p + sizeof(*nh);
			const uint8_t *desc = name + ((nh->n_namesz + 3) & ~3u);
			if (desc + nh->n_descsz > end)
				break;
			if (nh->n_type == NT_GNU_BUILD_ID && nh->n_namesz == 4 && !memcmp(name, "GNU", 4)) {
				*len = nh->n_descsz;
				return desc;
			}
			p = desc + ((nh->n_descsz + 3) & ~3u);
		}
	}
	*len = 0;
	return NULL;
}

static uint8_t *put_str(uint8_t *p, const void *s, size_t n)
{
	p = ap_put_varint(p, n);
	memcpy(p, s, n);
	return p + n;
}

static void emit_module(const struct dl_phdr_info *info, const char *path, uint32_t id)
{
	size_t path_len = strlen(path), bid_len;
	const uint8_t *bid = find_build_id(info, &bid_len);
	size_t cap = 64 + path_len + bid_len + (size_t)info->dlpi_phnum * 4 * AP_VARINT_MAX;
	uint8_t stackbuf[8192];
	uint8_t *buf = cap <= sizeof(stackbuf) ? stackbuf : ap_sys_map(cap);
	if (!buf)
		return;
	uint8_t *p = buf;
	p = ap_put_varint(p, id);
	p = ap_put_varint(p, atomic_load(&ap_generation));
	p = ap_put_varint(p, ap_stamp());
	p = ap_put_varint(p, info->dlpi_addr);
	p = put_str(p, path, path_len);
	p = put_str(p, bid, bid_len);
	int nseg = 0;
	for (int i = 0; i < info->dlpi_phnum; i++)
		nseg += info->dlpi_phdr[i].p_type == PT_LOAD;
	p = ap_put_varint(p, (uint64_t)nseg);
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD)
			continue;
		p = ap_put_varint(p, ph->p_vaddr);
		p = ap_put_varint(p, ph->p_memsz);
		p = ap_put_varint(p, ph->p_offset);
		p = ap_put_varint(p, ph->p_flags);
	}
	ap_meta_record(AP_REC_MODULE, buf, (size_t)(p - buf));
	if (buf != stackbuf)
		ap_sys_unmap(buf, cap);
}

static int scan_one(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	(void)arg;
	char exe[4096];
	const char *path = info->dlpi_name;
	if (!path || !*path) {
		/* The main program has no name here; the vdso has none either but a
		 * PT_DYNAMIC-only layout, and the exe is the first object. */
		ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		exe[n > 0 ? n : 0] = 0;
		path = exe;
	}
	uint32_t h = hash_str(path);
	for (struct known *k = known_list; k; k = k->next) {
		if (k->base == info->dlpi_addr && k->name_hash == h && !k->seen) {
			k->seen = true;
			return 0;
		}
	}
	struct known *k = ap_sys_alloc(sizeof(*k));
	if (!k)
		return 0;
	k->base = info->dlpi_addr;
	k->name_hash = h;
	k->id = next_id++;
	k->seen = true;
	k->next = known_list;
	known_list = k;
	emit_module(info, path, k->id);
	return 0;
}

static int read_counters(struct dl_phdr_info *info, size_t size, void *arg)
{
	unsigned long long *c = arg;
	if (size >= offsetof(struct dl_phdr_info, dlpi_subs) + sizeof(info->dlpi_subs)) {
		c[0] = info->dlpi_adds;
		c[1] = info->dlpi_subs;
	}
	return 1; /* the counters are the same in every entry: one is enough */
}

void ap_modules_scan(bool force)
{
	unsigned long long c[2] = {0, 0};
	dl_iterate_phdr(read_counters, c);
	pthread_mutex_lock(&scan_lock);
	if (force || c[0] != last_adds || c[1] != last_subs) {
		bool removed = c[1] != last_subs;
		last_adds = c[0];
		last_subs = c[1];
		for (struct known *k = known_list; k; k = k->next)
			k->seen = false;
		if (removed) {
			/* Stacks captured from now on must not be confused with stacks of the same
			 * addresses in the library that went away. */
			atomic_fetch_add(&ap_generation, 1);
		}
		dl_iterate_phdr(scan_one, NULL);
		struct known **pp = &known_list;
		while (*pp) {
			struct known *k = *pp;
			if (k->seen) {
				pp = &k->next;
				continue;
			}
			uint8_t buf[32], *p = buf;
			p = ap_put_varint(p, k->id);
			p = ap_put_varint(p, ap_stamp());
			p = ap_put_varint(p, atomic_load(&ap_generation));
			ap_meta_record(AP_REC_UNLOAD, buf, (size_t)(p - buf));
			*pp = k->next; /* the node is arena memory: dropped, not freed */
		}
	}
	pthread_mutex_unlock(&scan_lock);
}

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
	(void)size;
	uintptr_t self = (uintptr_t)arg;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
			continue;
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
		if (self >= lo && self < hi) {
			shim_lo = lo;
			shim_hi = hi;
			if (info->dlpi_name)
				ap_snprintf(shim_path, sizeof(shim_path), "%s", info->dlpi_name);
			return 1;
		}
	}
	return 0;
}

void ap_modules_init_self(void)
{
	dl_iterate_phdr(find_self, (void *)(uintptr_t)&ap_modules_init_self);
}

bool ap_modules_in_shim(uintptr_t addr)
{
	return addr >= shim_lo && addr < shim_hi;
}

const char *ap_modules_self_path(void)
{
	return shim_path;
}

void ap_modules_lock(void)
{
	pthread_mutex_lock(&scan_lock);
}

void ap_modules_unlock(void)
{
	pthread_mutex_unlock(&scan_lock);
}

void ap_modules_forked_child(void)
{
	/* The child's file starts empty: forget what was reported to the parent's (the nodes are
	 * arena memory, dropped). A new generation keeps the child's stacks apart from the ones
	 * the parent interned, whose STACK records are in the parent's file only. */
	pthread_mutex_init(&scan_lock, NULL);
	known_list = NULL;
	next_id = 1;
	last_adds = last_subs = 0;
	atomic_fetch_add(&ap_generation, 1);
}
