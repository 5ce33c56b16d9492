// Where large fast-path tables get their memory. Production uses DPDK's hugepage heap; the
// test-only exports run the same code without EAL on the C heap.
#pragma once

#include <cstddef>

namespace fg {

struct mem_ops {
  // Zeroed, aligned memory, or nullptr.
  void *(*alloc)(size_t size, size_t align, int socket);
  void (*free)(void *ptr);
};

extern const mem_ops heap_mem;      // aligned_alloc + memset: no EAL needed
extern const mem_ops hugepage_mem;  // rte_zmalloc_socket: needs EAL

}  // namespace fg
