/* C helpers for what Swift cannot call directly. Every symbol carries the tracer_ prefix. */
#ifndef TRACER_SHIM_H
#define TRACER_SHIM_H

#include <stdint.h>

/* Receives each line libbpf prints, already formatted (libbpf_set_print takes a va_list callback). */
typedef void (*tracer_libbpf_line_fn)(int level, const char *line);

/* Routes libbpf's messages to `fn` (NULL silences libbpf). */
void tracer_libbpf_set_print(tracer_libbpf_line_fn fn);

/* BPF_LINK_CREATE with attach type BPF_TRACE_UPROBE_MULTI (Linux 6.6): one link for `count` offsets of
 * the file at `path`; `cookies` may be NULL; `pid` 0 means every process. Debian's libbpf 1.1 has no API
 * for it. Returns the link fd, or -errno. */
int tracer_uprobe_multi_link_create(int program_fd, const char *path, const uint64_t *offsets,
                                    const uint64_t *cookies, uint32_t count, int is_return, uint32_t pid);

/* Gives the heap's free memory back to the system (glibc malloc_trim(0), from <malloc.h>, which Swift's
 * Glibc module does not import): after a burst of temporary allocations such as parsing kernel BTF. */
void tracer_release_free_heap(void);

/* Releases the pages of the executable's relocation table (.rela.dyn): the dynamic loader reads it once
 * at start, and a Swift binary with its runtime linked in has ~2 MiB of it. Read-only file pages: should
 * anything touch them again they are read back from the file. Returns the bytes released, their first
 * address in *released_start (may be NULL). */
long tracer_release_relocation_pages(uintptr_t *released_start);

/* The attach type number of BPF_TRACE_UPROBE_MULTI, missing from older uapi headers. */
#define TRACER_BPF_TRACE_UPROBE_MULTI 48

#endif
