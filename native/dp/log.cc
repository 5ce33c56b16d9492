#include "log.h"

#include <stdio.h>
#include <sys/time.h>
#include <unistd.h>

#include <cstring>
#include <ctime>
#include <mutex>
#include <string>

#include <rte_log.h>

namespace fg {
namespace {

// Messages may arrive in pieces (a format string printed in several calls) and from any
// thread: each thread's partial line is kept until its newline.
thread_local std::string partial;
std::mutex write_lock;

const char *level_name(int level) {
  if (level <= static_cast<int>(RTE_LOG_ERR)) return "error";
  if (level == static_cast<int>(RTE_LOG_WARNING)) return "warn";
  if (level <= static_cast<int>(RTE_LOG_INFO)) return "info";
  return "debug";
}

std::string quoted(const std::string &text) {
  std::string out = "\"";
  for (char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out + "\"";
}

void emit(const std::string &line) {
  // DPDK prefixes messages with the function name ("eth_dev_tap_create(): ..."); keep it
  // as the text, trimmed of surrounding blanks.
  size_t b = line.find_first_not_of(" \t");
  size_t e = line.find_last_not_of(" \t");
  if (b == std::string::npos) return;
  timeval tv;
  gettimeofday(&tv, nullptr);
  tm utc;
  gmtime_r(&tv.tv_sec, &utc);
  char ts[40];
  size_t n = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &utc);
  snprintf(ts + n, sizeof(ts) - n, ".%03ldZ", static_cast<long>(tv.tv_usec / 1000));
  std::string out = std::string("ts=") + ts + " level=" + level_name(rte_log_cur_msg_loglevel()) +
                    " msg=\"dpdk log\" component=dpdk text=" + quoted(line.substr(b, e - b + 1)) + "\n";
  std::lock_guard<std::mutex> guard(write_lock);
  [[maybe_unused]] ssize_t w = write(STDERR_FILENO, out.data(), out.size());
}

ssize_t cookie_write(void *, const char *buf, size_t size) {
  partial.append(buf, size);
  size_t nl;
  while ((nl = partial.find('\n')) != std::string::npos) {
    emit(partial.substr(0, nl));
    partial.erase(0, nl + 1);
  }
  return static_cast<ssize_t>(size);
}

}  // namespace

void route_dpdk_log() {
  static FILE *stream = [] {
    cookie_io_functions_t io{};
    io.write = cookie_write;
    FILE *f = fopencookie(nullptr, "w", io);
    if (f != nullptr) setvbuf(f, nullptr, _IONBF, 0);
    return f;
  }();
  if (stream != nullptr) rte_openlog_stream(stream);
}

}  // namespace fg
