#define _GNU_SOURCE /* dl_iterate_phdr */
#include "tracer_shim.h"

#include <bpf/libbpf.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <linux/bpf.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

static tracer_libbpf_line_fn line_handler;

static int forward_libbpf_print(enum libbpf_print_level level, const char *format, va_list args)
{
	if (!line_handler)
		return 0;
	/* Verifier logs arrive as one message of up to megabytes: format into a buffer of the right size. */
	char small[1024];
	va_list measure;
	va_copy(measure, args);
	int length = vsnprintf(small, sizeof(small), format, measure);
	va_end(measure);
	if (length < 0)
		return length;
	if ((size_t)length < sizeof(small)) {
		line_handler((int)level, small);
		return length;
	}
	char *line = malloc((size_t)length + 1);
	if (!line)
		return -1;
	vsnprintf(line, (size_t)length + 1, format, args);
	line_handler((int)level, line);
	free(line);
	return length;
}

void tracer_libbpf_set_print(tracer_libbpf_line_fn fn)
{
	line_handler = fn;
	libbpf_set_print(forward_libbpf_print);
}

/* The BPF_LINK_CREATE part of union bpf_attr as Linux 6.6 defines it for uprobe_multi; the uapi
 * headers of Debian 12 predate it. Padded so the kernel sees zeros past the fields it knows. */
struct tracer_uprobe_multi_attr {
	uint32_t prog_fd;
	uint32_t target_fd;
	uint32_t attach_type;
	uint32_t flags;
	uint64_t path;
	uint64_t offsets;
	uint64_t ref_ctr_offsets;
	uint64_t cookies;
	uint32_t cnt;
	uint32_t uprobe_flags;
	uint32_t pid;
	uint32_t padding[17];
};
_Static_assert(offsetof(struct tracer_uprobe_multi_attr, path) == 16, "link_create.uprobe_multi.path");
_Static_assert(offsetof(struct tracer_uprobe_multi_attr, cnt) == 48, "link_create.uprobe_multi.cnt");
_Static_assert(offsetof(struct tracer_uprobe_multi_attr, pid) == 56, "link_create.uprobe_multi.pid");

int tracer_uprobe_multi_link_create(int program_fd, const char *path, const uint64_t *offsets,
                                    const uint64_t *cookies, uint32_t count, int is_return, uint32_t pid)
{
	struct tracer_uprobe_multi_attr attr;
	memset(&attr, 0, sizeof(attr));
	attr.prog_fd = (uint32_t)program_fd;
	attr.attach_type = TRACER_BPF_TRACE_UPROBE_MULTI;
	attr.path = (uint64_t)(uintptr_t)path;
	attr.offsets = (uint64_t)(uintptr_t)offsets;
	attr.cookies = (uint64_t)(uintptr_t)cookies;
	attr.cnt = count;
	attr.uprobe_flags = is_return ? 1 /* BPF_F_UPROBE_MULTI_RETURN */ : 0;
	attr.pid = pid;
	int fd;
	do {
		fd = (int)syscall(__NR_bpf, BPF_LINK_CREATE, &attr, sizeof(attr));
	} while (fd < 0 && errno == EINTR);
	return fd < 0 ? -errno : fd;
}

void tracer_release_free_heap(void)
{
	malloc_trim(0);
}

/* dl_iterate_phdr visits the executable first: its load bias. */
static int executable_bias(struct dl_phdr_info *info, size_t size, void *data)
{
	(void)size;
	*(ElfW(Addr) *)data = info->dlpi_addr;
	return 1;
}

/* The address range of section `name` in the executable's file, from its section headers. */
static int executable_section(const char *name, ElfW(Addr) *address, size_t *size)
{
	int fd = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int found = -1;
	ElfW(Ehdr) header;
	ElfW(Shdr) names;
	if (pread(fd, &header, sizeof(header), 0) != sizeof(header) || memcmp(header.e_ident, ELFMAG, SELFMAG) != 0 ||
	    header.e_shentsize != sizeof(ElfW(Shdr)) || header.e_shstrndx >= header.e_shnum ||
	    pread(fd, &names, sizeof(names), header.e_shoff + (off_t)header.e_shstrndx * sizeof(ElfW(Shdr))) != sizeof(names))
		goto out;
	size_t length = strlen(name) + 1;
	for (unsigned i = 0; i < header.e_shnum && found < 0; i++) {
		ElfW(Shdr) section;
		char candidate[64];
		if (pread(fd, &section, sizeof(section), header.e_shoff + (off_t)i * sizeof(section)) != sizeof(section) ||
		    section.sh_name >= names.sh_size || length > sizeof(candidate) ||
		    pread(fd, candidate, length, names.sh_offset + section.sh_name) != (ssize_t)length)
			continue;
		if (memcmp(candidate, name, length) == 0 && section.sh_addr != 0) {
			*address = section.sh_addr;
			*size = section.sh_size;
			found = 0;
		}
	}
out:
	close(fd);
	return found;
}

long tracer_release_relocation_pages(uintptr_t *released_start)
{
	ElfW(Addr) bias = 0, address = 0;
	size_t size = 0;
	if (executable_section(".rela.dyn", &address, &size) != 0)
		return 0;
	dl_iterate_phdr(executable_bias, &bias);
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t start = (bias + address + page - 1) & ~(page - 1);
	uintptr_t end = (bias + address + size) & ~(page - 1);
	if (end <= start)
		return 0;
	/* MADV_PAGEOUT (Linux 5.4) reclaims the pages; MADV_DONTNEED only unmaps them from this process. */
	if (madvise((void *)start, end - start, 21 /* MADV_PAGEOUT */) != 0 &&
	    madvise((void *)start, end - start, MADV_DONTNEED) != 0)
		return 0;
	if (released_start)
		*released_start = start;
	return (long)(end - start);
}
