#include "pcap_filter.h"

#include <memory>

#include "error.h"

namespace fg {

bool pcap_filter::matches(const uint8_t *pkt, uint32_t wirelen, uint32_t caplen) const {
  if (insns.empty()) return true;
  return bpf_filter(insns.data(), pkt, wirelen, caplen) != 0;
}

pcap_filter compile_pcap_filter(const std::string &expression, filter_link link, uint32_t snaplen) {
  pcap_filter f;
  f.expression = expression;
  f.link = link;
  if (expression.find_first_not_of(" \t\n") == std::string::npos) return f;
  // A "dead" handle: compiles for a link type without opening any device.
  std::unique_ptr<pcap_t, decltype(&pcap_close)> handle(
      pcap_open_dead(link == filter_link::ethernet ? DLT_EN10MB : DLT_RAW, static_cast<int>(snaplen)), pcap_close);
  if (!handle) throw dp_error(ERR_NO_MEMORY, "libpcap: cannot open a handle to compile the filter");
  bpf_program prog{};
  // Optimised, as tcpdump compiles; netmask unknown (only "ip broadcast" needs it).
  if (pcap_compile(handle.get(), &prog, expression.c_str(), 1, PCAP_NETMASK_UNKNOWN) != 0)
    throw dp_error(ERR_INVALID_ARGUMENT, "filter '" + expression + "': " + pcap_geterr(handle.get()));
  f.insns.assign(prog.bf_insns, prog.bf_insns + prog.bf_len);
  pcap_freecode(&prog);
  return f;
}

}  // namespace fg
