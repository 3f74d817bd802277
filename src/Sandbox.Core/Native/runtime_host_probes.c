// The NativeAOT runtime's probes of the host, replaced in the CLI's executable (issue 7: start-up).
//
// Before Main, the .NET 10 NativeAOT runtime looks the host over for its GC and its processor
// count: it parses /proc/self/mountinfo and /proc/self/cgroup twice (once for the GC's memory
// limit, once for the CPU quota), reads the memory cgroup's memory.use_hierarchy and memory.stat
// and the CPU cgroup's cpu.cfs_quota_us, and reads nine sysfs files under
// /sys/devices/system/cpu/cpu0/cache/ for the size of the largest cache. About 40 system calls on
// /proc, sysfs and cgroupfs, every start: a warm `sandbox run` of /bin/true was 0.38 ms faster
// without them (paired, alternating, ci/PERFORMANCE.md), which is more than any other part of our
// own start-up costs. bubblewrap, a C program, pays none of this.
//
// The CLI is linked with `ld --wrap` for the three entry points (Sandbox.Cli.csproj): calls from
// the runtime's other objects go to the __wrap_ functions here. (`--wrap` redirects only
// undefined references between object files; each of these is called from another object of
// libRuntime.*.a than the one that defines it, which `nm` shows, and the integration test
// NativeAotCliTests.StartsWithoutProbingTheHostsCgroupsAndCaches checks with strace that the
// reads are gone.) The names are the Itanium C++ mangling of the runtime's functions:
//   InitializeCGroup()                             gc/unix/cgroup.cpp
//   InitializeCpuCGroup()                          nativeaot/Runtime/unix/cgroupcpu.cpp
//   GCToOSInterface::GetCacheSizePerLogicalCpu(bool)  gc/unix/gcenv.unix.cpp
//
// What the CLI gives up, and why that is right for it:
// - with its cgroup state never set up, the runtime sees no cgroup: its GC takes the machine's
//   memory (sysconf) as its limit and /proc/meminfo for the memory load, as on a host without
//   containers, and Environment.ProcessorCount counts the CPUs of the affinity mask and ignores a
//   CPU quota. The CLI's heap is a few MiB (the supervisor of a run, ci/bench's "RSS per CLI");
//   an import streams its layers through fixed buffers. The limits a sandbox applies are
//   its payload's, set through its own cgroup, and not read from here. A user who wants the CLI's
//   heap capped can still say so: DOTNET_GCHeapHardLimit is read from the environment as before.
// - the cache size sets only the GC's first generation-0 budget (gc.cpp, get_gen0_min_size: 4/5
//   of it, then 5/8 of that, about 16 MiB here). A constant makes that budget the same on every
//   host: the one the runtime computes on a machine whose largest cache is 32 MiB, such as the
//   AMD EPYC runners this project measures on (sysfs index3). A warm run allocates far less, so
//   it never collects.
//
// If a later runtime renames one of these functions, its wrap no longer applies and the probes
// come back: only the start-up time suffers, and the strace test fails.

#include <stdbool.h>
#include <stddef.h>

// The cgroup state of gc/unix/cgroup.cpp stays unset (cgroup version 0): every later query
// (GetRestrictedPhysicalMemoryLimit, GetPhysicalMemoryUsed) answers "no cgroup".
void __wrap__Z16InitializeCGroupv(void)
{
}

// Likewise for the CPU quota (GetCpuLimit answers "no limit").
void __wrap__Z19InitializeCpuCGroupv(void)
{
}

enum { ASSUMED_LARGEST_CACHE_BYTES = 32 << 20 };

size_t __wrap__ZN15GCToOSInterface25GetCacheSizePerLogicalCpuEb(bool true_size)
{
    // On x86-64 the runtime returns the same size for both (no scaling for the architecture).
    (void)true_size;
    return ASSUMED_LARGEST_CACHE_BYTES;
}
