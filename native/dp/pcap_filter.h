// tcpdump-style filter expressions ("udp port 7777", "host 10.0.0.1 and tcp"), compiled by
// libpcap into classic BPF: the one filter language operators already know, for `flowgate
// trace --filter` and `flowgate capture`. Control thread only: pcap_compile() is not
// thread-safe before libpcap 1.8 and allocates.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <pcap/pcap.h>

namespace fg {

// What the filter is run on: a frame from an Ethernet port, or an IP packet as a TUN gives
// it (net_tun, no Ethernet header).
enum class filter_link : uint8_t { ethernet, raw_ip };

struct pcap_filter {
  std::string expression;       // as given; empty matches every packet
  filter_link link = filter_link::ethernet;
  std::vector<bpf_insn> insns;  // classic BPF; empty when the expression is

  bool matches_all() const { return insns.empty(); }
  // Runs the program with libpcap's interpreter over bytes [pkt, pkt + caplen) of a packet
  // of wirelen bytes, as tcpdump would see it.
  bool matches(const uint8_t *pkt, uint32_t wirelen, uint32_t caplen) const;
};

// Throws dp_error(ERR_INVALID_ARGUMENT) with libpcap's own message ("syntax error", "port
// 99999 out of range") for an expression it cannot compile. snaplen bounds the offsets the
// program may read, as tcpdump's -s does.
pcap_filter compile_pcap_filter(const std::string &expression, filter_link link, uint32_t snaplen = 65535);

}  // namespace fg
