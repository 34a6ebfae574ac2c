/* Counts the heap allocations of a program it is preloaded into, for scripts/bench-scale's
 * "allocations per heartbeat". LD_PRELOAD=alloc_count.so ALLOC_COUNT_FILE=PATH: the counts
 * live in PATH, a shared mapping of four little-endian u64 (malloc, calloc, realloc,
 * aligned), so the bench reads them at any instant with od, without signalling a server
 * that may use every signal itself. C++ operator new reaches malloc and is counted there.
 * The real allocator is called through glibc's __libc_* entry points, not dlsym, which
 * may itself allocate and recurse. Frees are not counted: the figure is allocations. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

extern void* __libc_malloc(size_t size);
extern void* __libc_calloc(size_t count, size_t size);
extern void* __libc_realloc(void* old, size_t size);
extern void* __libc_memalign(size_t alignment, size_t size);

enum { slot_malloc, slot_calloc, slot_realloc, slot_aligned, slot_count };
enum { mapping_bytes = 4096 };

static uint64_t before_mapping[slot_count];
static uint64_t* counters = before_mapping;

__attribute__((constructor)) static void map_counter_file(void) {
  const char* path = getenv("ALLOC_COUNT_FILE");
  if (path == NULL) return;
  const int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  if (ftruncate(fd, mapping_bytes) != 0) {
    close(fd);
    return;
  }
  void* mapping = mmap(NULL, mapping_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close(fd);
  if (mapping == MAP_FAILED) return;
  uint64_t* shared = mapping;
  for (int slot = 0; slot < slot_count; ++slot)
    shared[slot] = __atomic_load_n(&before_mapping[slot], __ATOMIC_RELAXED);
  __atomic_store_n(&counters, shared, __ATOMIC_RELEASE);
}

static void count(int slot) {
  uint64_t* current = __atomic_load_n(&counters, __ATOMIC_ACQUIRE);
  __atomic_fetch_add(&current[slot], 1, __ATOMIC_RELAXED);
}

void* malloc(size_t size) {
  count(slot_malloc);
  return __libc_malloc(size);
}

void* calloc(size_t count_, size_t size) {
  count(slot_calloc);
  return __libc_calloc(count_, size);
}

void* realloc(void* old, size_t size) {
  count(slot_realloc);
  return __libc_realloc(old, size);
}

void* memalign(size_t alignment, size_t size) {
  count(slot_aligned);
  return __libc_memalign(alignment, size);
}

void* aligned_alloc(size_t alignment, size_t size) {
  count(slot_aligned);
  return __libc_memalign(alignment, size);
}

int posix_memalign(void** out, size_t alignment, size_t size) {
  if (alignment < sizeof(void*) || (alignment & (alignment - 1)) != 0) return EINVAL;
  count(slot_aligned);
  void* p = __libc_memalign(alignment, size);
  if (p == NULL) return ENOMEM;
  *out = p;
  return 0;
}
