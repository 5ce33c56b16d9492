{
  "targets": [
    {
      "target_name": "flowgate",
      "sources": [
        "native/dp/reasons.cc",
        "native/dp/memory.cc",
        "native/dp/tunnel.cc",
        "native/dp/flowtable.cc",
        "native/dp/flow_manager.cc",
        "native/dp/pipeline.cc",
        "native/dp/worker.cc",
        "native/dp/slowpath.cc",
        "native/dp/eal.cc",
        "native/dp/log.cc",
        "native/dp/port.cc",
        "native/dp/dataplane.cc",
        "native/dp/pcap_filter.cc",
        "native/dp/trace.cc",
        "native/dp/capture.cc",
        "native/addon/addon.cc",
        "native/addon/convert.cc",
        "native/addon/testing.cc",
        "native/addon/trace.cc",
        "native/stress/stress.cc",
        "native/addon/conntrack.cc",
        "native/ct/conntrack.cc",
        "native/addon/rtnl.cc",
        "native/rt/rtnl.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")",
        "native"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NODE_ADDON_API_DISABLE_DEPRECATED",
        "NODE_ADDON_API_CPP_EXCEPTIONS",
        "ALLOW_EXPERIMENTAL_API"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17"],
      "cflags": [
        "<!@(pkg-config --cflags libdpdk)",
        "<!@(pkg-config --cflags libnetfilter_conntrack libmnl)",
        "<!@(pkg-config --cflags libpcap)",
        "-O3",
        "-Wall",
        "-Wextra",
        "-Wno-unused-parameter",
        "-Wno-missing-field-initializers"
      ],
      "cflags_cc": ["-std=gnu++20", "-fexceptions", "-Wno-volatile"],
      "libraries": ["<!@(pkg-config --libs libdpdk)", "<!@(pkg-config --libs libnetfilter_conntrack libmnl)", "<!@(pkg-config --libs libpcap)"]
    }
  ]
}
