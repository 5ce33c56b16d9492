#include "memory.h"

#include <sys/mman.h>

#include <cstdlib>
#include <cstring>

#include <rte_malloc.h>

namespace fg {

static void *heap_alloc(size_t size, size_t align, int) {
  // Large tables on 2 MiB pages where the kernel can give them (transparent hugepages), as
  // they would be on hugepage memory: a table on 4 KiB pages measures the TLB, not itself.
  constexpr size_t HUGE = 2u << 20;
  if (size >= HUGE) align = HUGE;
  size_t rounded = (size + align - 1) / align * align;
  void *p = aligned_alloc(align, rounded);
  if (p == nullptr) return nullptr;
  if (size >= HUGE) madvise(p, rounded, MADV_HUGEPAGE);
  memset(p, 0, rounded);
  return p;
}

static void *hugepage_alloc(size_t size, size_t align, int socket) {
  return rte_zmalloc_socket("flowgate", size, static_cast<unsigned>(align), socket);
}

const mem_ops heap_mem = {heap_alloc, free};
const mem_ops hugepage_mem = {hugepage_alloc, rte_free};

}  // namespace fg
