#include "memory.h"

#include <cstdlib>
#include <cstring>

#include <rte_malloc.h>

namespace fg {

static void *heap_alloc(size_t size, size_t align, int) {
  size_t rounded = (size + align - 1) / align * align;
  void *p = aligned_alloc(align, rounded);
  if (p != nullptr) memset(p, 0, rounded);
  return p;
}

static void *hugepage_alloc(size_t size, size_t align, int socket) {
  return rte_zmalloc_socket("flowgate", size, static_cast<unsigned>(align), socket);
}

const mem_ops heap_mem = {heap_alloc, free};
const mem_ops hugepage_mem = {hugepage_alloc, rte_free};

}  // namespace fg
