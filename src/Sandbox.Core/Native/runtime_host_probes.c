// The NativeAOT runtime's probes of the host, replaced in the CLI's executable (issue 7: start-up).
//
// Before Main, the .NET 10 NativeAOT runtime looks the host over for its GC and its processor
// count: it parses /proc/self/mountinfo and /proc/self/cgroup twice (once for the GC's memory
// limit, once for the CPU quota), reads the memory cgroup's memory.use_hierarchy and memory.stat
// and the CPU cgroup's cpu.cfs_quota_us, and reads nine sysfs files under
// /sys/devices/system/cpu/cpu0/cache/ for the size of the largest cache. About 40 system calls on
// /proc, sysfs and cgroupfs, every start: a warm `sandbox run` of /bin/true was 0.43 ms faster
// without them (paired, alternating, 400 rounds; ci/PERFORMANCE.md), more than any other part of our
// own start-up costs. bubblewrap, a C program, pays none of this.
//
// The CLI is linked with `ld --wrap` for these three functions of the runtime, for the NUMA and
// CPU-count probes and glibc's pthread_getattr_np below, and for the start of the finalizer thread
// at the end of this file; Sandbox.Cli.csproj lists them. The calls then go to the __wrap_
// functions here. `--wrap` redirects only references between object files: each function is
// called from another object of libRuntime.*.a (or of libc) than the one that defines it, as `nm`
// shows. NativeAotCliTests.StartsWithoutProbingTheHostsCgroupsAndCaches checks with strace that
// the reads are gone. The runtime's three, by their Itanium C++ names:
//   InitializeCGroup()                             gc/unix/cgroup.cpp
//   InitializeCpuCGroup()                          nativeaot/Runtime/unix/cgroupcpu.cpp
//   GCToOSInterface::GetCacheSizePerLogicalCpu(bool)   gc/unix/gcenv.unix.cpp
//
// What the CLI gives up, and why that is right for it:
// - with its cgroup state never set up, the runtime sees no cgroup: its GC takes the machine's
//   memory (sysconf) as its limit and /proc/meminfo for the memory load, as on a host without
//   containers, and Environment.ProcessorCount counts the CPUs of the affinity mask and ignores a
//   CPU quota. The CLI's heap is a few MiB (the supervisor of a run, ci/bench's "RSS per CLI");
//   an import streams its layers through fixed buffers. The limits a sandbox applies are
//   its payload's, set through its own cgroup, and not read from here. The GC settings the runtime
//   reads (a heap hard limit, for one) are not touched by these wraps.
// - the cache size sets only the GC's first generation-0 budget (gc.cpp, get_gen0_min_size: 4/5
//   of it, then 5/8 of that, about 16 MiB here). A constant makes that budget the same on every
//   host: the one the runtime computes on a machine whose largest cache is 32 MiB, such as the
//   AMD EPYC runners this project measures on (sysfs index3), as before. A warm run cannot reach
//   it: its whole process takes about 250 page faults, 1 MiB (ci/PERFORMANCE.md).
//
// The finalizer thread the runtime starts before Main is deferred the same way (at the end of this
// file): the CLI starts it itself, once it may need it.
//
// If a later runtime renames one of these functions, its wrap no longer applies and the probe
// comes back: only the start-up time suffers, and the strace tests fail. Where this file calls the
// original (__real_: the CPU count, the finalizer thread), the link fails instead.

#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

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

// The GC's NUMA set-up (gc/unix/numasupport.cpp) lists /sys/devices/system/node for the highest
// node. Only the server GC places its heaps by node; the CLI runs the workstation GC, for which
// g_numaAvailable and g_highestNumaNode keep their defaults (false, 0) either way.
void __wrap__Z21NUMASupportInitializev(void)
{
}

// The number of possible CPUs (minipal/cpucount.c) is read from /sys/devices/system/cpu/possible
// at each call, and the runtime asks twice before Main (the GC's set-up and the processor count).
// It is fixed at boot (the kernel's nr_cpu_ids), so the first answer is kept. minipal reads the
// file through stdio (fopen, fscanf): the first use of that code and its buffer cost 37 against
// 17 us for one read(2) of the same file in a fresh process here, so the file is read and parsed
// here. The answer is minipal's, the highest CPU of the list plus one; anything but a well-formed
// list ("0-1", "0,2-5") goes to minipal itself, which also knows its fallback (sysconf).
int __real_minipal_get_cpu_max_possible_count(void);

// The highest CPU plus one of a kernel CPU list (Documentation/admin-guide/cputopology.rst:
// "0-3,8-11", a newline at the end), or -1 when the text is not one.
int rhp_cpu_list_count(const char *text, size_t length)
{
    long highest = -1, number = 0;
    int digits = 0, in_range = 0;
    for (size_t i = 0; i <= length; i++) {
        char c = i < length ? text[i] : '\0';
        if (c >= '0' && c <= '9') {
            number = number * 10 + (c - '0');
            if (++digits > 6)
                return -1;
            continue;
        }
        if (digits == 0)
            return -1; // an empty number: ",,", "-3", "" or a stray character
        if (c == '-' && !in_range) {
            in_range = 1;
        } else if (c == ',' || c == '\n' || c == '\0') {
            if (number > highest)
                highest = number; // a range's second number, or a lone CPU
            in_range = 0;
            if (c != ',')
                return i + 1 >= length ? (int)highest + 1 : -1; // the newline ends it
        } else {
            return -1;
        }
        number = 0;
        digits = 0;
    }
    return -1;
}

static int read_possible_cpus(void)
{
    char text[256];
    int fd = open("/sys/devices/system/cpu/possible", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, text, sizeof text);
    close(fd);
    return n > 0 && n < (ssize_t)sizeof text ? rhp_cpu_list_count(text, (size_t)n) : -1;
}

int __wrap_minipal_get_cpu_max_possible_count(void)
{
    static int possible;
    int known = __atomic_load_n(&possible, __ATOMIC_RELAXED);
    if (known <= 0) {
        known = read_possible_cpus();
        if (known <= 0)
            known = __real_minipal_get_cpu_max_possible_count();
        __atomic_store_n(&possible, known, __ATOMIC_RELAXED);
    }
    return known;
}

// The main thread's stack bounds, as glibc's pthread_getattr_np(3) computes them, without its read
// of /proc/self/maps. The runtime asks for them once per thread it attaches (PalUnix.cpp,
// PalGetMaximumStackBounds); for any thread but the main one glibc answers from the thread's own
// descriptor, but for the main thread it reads the whole of /proc/self/maps to find the stack's
// mapping and the one below it: 30 to 40 us of every start here (a warm run 0.04 ms faster, paired).
//
// glibc (nptl/pthread_getattr_np.c) reports the main thread's stack as ending at the page above
// __libc_stack_end, and as long as RLIMIT_STACK less the part of the mapping above that page,
// rounded down to pages; it shortens that only where another mapping lies closer below. The end of
// the stack's mapping is known without /proc: execve(2) copies the program's file name
// (AT_EXECFN, getauxval(3)) first, right below one null pointer at the very top of the new stack
// (fs/exec.c: bprm->p starts at vm_end - sizeof(void *), then copy_string_kernel(bprm->filename)).
// The kernel keeps the mappings it places at least RLIMIT_STACK below the stack (mmap_base's gap,
// arch/x86/mm/mmap.c), so the shortening cannot apply at start-up. Anything unexpected (the
// computed end not on a page boundary, no stack limit) goes to glibc's own function.
// RuntimeHostProbesTests compares both answers under several argument, environment and limit sizes.
extern void *__libc_stack_end;
int __real_pthread_getattr_np(pthread_t thread, pthread_attr_t *attr);

static bool main_thread_stack(uintptr_t *low, size_t *size)
{
    const char *execfn = (const char *)getauxval(AT_EXECFN);
    struct rlimit limit;
    if (execfn == NULL || getrlimit(RLIMIT_STACK, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY)
        return false;
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t mapping_end = (uintptr_t)execfn + strlen(execfn) + 1 + sizeof(void *);
    uintptr_t stack_end = ((uintptr_t)__libc_stack_end & -page) + page;
    if ((mapping_end & (page - 1)) != 0 || stack_end > mapping_end || mapping_end - stack_end >= limit.rlim_cur)
        return false;
    *size = (limit.rlim_cur - (mapping_end - stack_end)) & -page;
    if (*size == 0 || *size >= stack_end)
        return false;
    *low = stack_end - *size;
    return true;
}

int __wrap_pthread_getattr_np(pthread_t thread, pthread_attr_t *attr)
{
    uintptr_t low;
    size_t size;
    if (pthread_equal(thread, pthread_self()) && syscall(SYS_gettid) == getpid() && main_thread_stack(&low, &size)) {
        int rc = pthread_attr_init(attr);
        return rc != 0 ? rc : pthread_attr_setstack(attr, (void *)low, size);
    }
    return __real_pthread_getattr_np(thread, attr);
}

// The runtime's finalizer thread, started when the CLI asks for it instead of at start-up.
//
// RhInitializeFinalization (nativeaot/Runtime/FinalizerHelpers.cpp) makes the thread before Main
// (PalStartFinalizerThread, PalUnix.cpp): a clone3(2) on the main thread's way, and then, on some
// CPU, the thread's own start (it attaches to the runtime and calibrates spin-waits, about 0.1 ms
// here), both while the CLI is starting its sandbox. A warm `sandbox run` was 0.04 to 0.13 ms faster
// without it (five paired series, ci/PERFORMANCE.md). The thread only runs finalizers, and a short
// run makes no garbage that needs them: the CLI starts it at once for every command but `run`, and
// for `run` once the sandbox has run for a second (Program.cs). Until then the runtime is as it
// would be with a busy finalizer thread: the event the GC sets for it stays set, and the thread,
// once started, finds it and finalizes what was queued. GC.WaitForPendingFinalizers would wait for
// that start; the CLI does not call it.
typedef uint32_t (*finalizer_main_fn)(void *context);
bool __real__Z23PalStartFinalizerThreadPFjPvES_(finalizer_main_fn main, void *context);

static finalizer_main_fn deferred_finalizer_main;
static void *deferred_finalizer_context;
static int finalizer_thread_started;

bool __wrap__Z23PalStartFinalizerThreadPFjPvES_(finalizer_main_fn main, void *context)
{
    deferred_finalizer_main = main;
    deferred_finalizer_context = context;
    return true;
}

// 1: started now; 0: nothing to start (started before, or never deferred: not the NativeAOT CLI's
// runtime); -1: the thread could not be made (the runtime's own start would have failed then).
__attribute__((visibility("default"))) int sbx_start_finalizer_thread(void)
{
    if (deferred_finalizer_main == NULL || __atomic_exchange_n(&finalizer_thread_started, 1, __ATOMIC_SEQ_CST))
        return 0;
    return __real__Z23PalStartFinalizerThreadPFjPvES_(deferred_finalizer_main, deferred_finalizer_context) ? 1 : -1;
}
