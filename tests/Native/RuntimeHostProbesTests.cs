using Sandbox.Tests.TestSupport;

namespace Sandbox.Tests.Native;

/// <summary>
/// src/Sandbox.Core/Native/runtime_host_probes.c, which the NativeAOT CLI links in with ld's --wrap:
/// its main-thread stack bounds must be glibc's own, computed without /proc/self/maps, whatever the
/// size of the arguments, the environment and the stack limit; other threads are glibc's to answer.
/// Its deferral of the finalizer thread must start the runtime's thread once, when asked, and its
/// count of possible CPUs must be minipal's, read without minipal. A small C program linked the
/// same way asks them and prints the answers.
/// </summary>
[TestFixture]
public sealed class RuntimeHostProbesTests
{
    private const string DriverSource = """
        #define _GNU_SOURCE
        #include <pthread.h>
        #include <stdbool.h>
        #include <stddef.h>
        #include <stdio.h>
        #include <string.h>

        #include <stdint.h>

        int __real_pthread_getattr_np(pthread_t thread, pthread_attr_t *attr);
        int __wrap_pthread_getattr_np(pthread_t thread, pthread_attr_t *attr);
        size_t __wrap__ZN15GCToOSInterface25GetCacheSizePerLogicalCpuEb(bool true_size);
        int sbx_start_finalizer_thread(void);
        bool __wrap__Z23PalStartFinalizerThreadPFjPvES_(uint32_t (*main)(void *), void *context);

        // Stands in for minipal's count of possible CPUs: the wrap's __real_, for what it cannot parse.
        static int possible_reads;
        int minipal_get_cpu_max_possible_count(void) { possible_reads++; return 8; }
        int __wrap_minipal_get_cpu_max_possible_count(void);
        int rhp_cpu_list_count(const char *text, size_t length);

        // Stands in for the runtime's PalStartFinalizerThread (PalUnix.cpp): the wrap's __real_.
        static int finalizer_starts;
        static uint32_t finalizer_main(void *context) { return context != NULL; }
        static uint32_t (*started_main)(void *);
        static void *started_context;
        bool _Z23PalStartFinalizerThreadPFjPvES_(uint32_t (*main)(void *), void *context)
        {
            finalizer_starts++;
            started_main = main;
            started_context = context;
            return true;
        }

        static void report(const char *who)
        {
            pthread_attr_t ours, glibc;
            void *ours_low, *glibc_low;
            size_t ours_size, glibc_size;
            if (__wrap_pthread_getattr_np(pthread_self(), &ours) != 0 || __real_pthread_getattr_np(pthread_self(), &glibc) != 0
                || pthread_attr_getstack(&ours, &ours_low, &ours_size) != 0 || pthread_attr_getstack(&glibc, &glibc_low, &glibc_size) != 0) {
                printf("%s failed\n", who);
                return;
            }
            printf("%s %p %zu %p %zu\n", who, ours_low, ours_size, glibc_low, glibc_size);
        }

        static void *other_thread(void *unused)
        {
            (void)unused;
            report("thread");
            return NULL;
        }

        int main(int argc, char **argv)
        {
            // driver parse TEXT: the count of a CPU list ("\n" written as a real newline by the caller).
            if (argc == 3 && strcmp(argv[1], "parse") == 0) {
                printf("%d\n", rhp_cpu_list_count(argv[2], strlen(argv[2])));
                return 0;
            }
            report("main");
            pthread_t thread;
            if (pthread_create(&thread, NULL, other_thread, NULL) == 0)
                pthread_join(thread, NULL);
            printf("cache %zu %zu\n", __wrap__ZN15GCToOSInterface25GetCacheSizePerLogicalCpuEb(true),
                __wrap__ZN15GCToOSInterface25GetCacheSizePerLogicalCpuEb(false));

            int first_count = __wrap_minipal_get_cpu_max_possible_count();
            int second_count = __wrap_minipal_get_cpu_max_possible_count();
            printf("possible %d %d %d\n", first_count, second_count, possible_reads);

            // The runtime's call, which ld sends to the wrap in the CLI (here, in one object, it is
            // called by that name), then the CLI's two requests.
            static int context;
            bool deferred = __wrap__Z23PalStartFinalizerThreadPFjPvES_(finalizer_main, &context);
            int before = finalizer_starts;
            int first = sbx_start_finalizer_thread();
            int after_first = finalizer_starts;
            int second = sbx_start_finalizer_thread();
            printf("finalizer %d %d %d %d %d %d %d\n", deferred, before, first, after_first, second, finalizer_starts,
                started_main == finalizer_main && started_context == &context);
            return 0;
        }
        """;

    private TempDirectory? _dir;
    private string _driver = "";

    [OneTimeSetUp]
    public void BuildDriver()
    {
        _dir = new TempDirectory();
        string probes = NativeSources.Path("runtime_host_probes.c");
        Assert.That(File.Exists(probes), Is.True, probes);
        // A long name: execve(2) copies it to the top of the stack, where the computation starts.
        _driver = _dir.Combine("driver-" + new string('n', 200));
        (int exit, string output) = Run(Environment.GetEnvironmentVariable("CC") ?? "cc",
            ["-O2", "-Wall", "-Wextra", "-Werror", "-o", _driver, _dir.CreateFile("driver.c", DriverSource), probes,
             "-Wl,--wrap=pthread_getattr_np", "-Wl,--wrap=_Z23PalStartFinalizerThreadPFjPvES_",
             "-Wl,--wrap=minipal_get_cpu_max_possible_count", "-pthread"]);
        if (exit == -1)
            Skip.Because("no C compiler: " + output);
        Assert.That(exit, Is.Zero, output);
    }

    [OneTimeTearDown]
    public void RemoveDriver() => _dir?.Dispose();

    [TestCase("", 0, 0, TestName = "no arguments, default stack limit")]
    [TestCase("", 3000, 0, TestName = "3,000 arguments")]
    [TestCase("", 0, 100_000, TestName = "a 100 kB environment variable")]
    [TestCase("ulimit -s 16384;", 10, 5000, TestName = "a 16 MiB stack limit")]
    [TestCase("ulimit -s 1024;", 0, 0, TestName = "a 1 MiB stack limit")]
    [TestCase("ulimit -s unlimited;", 0, 0, TestName = "no stack limit (glibc answers)")]
    public void MainThreadStackIsGlibcs(string limit, int arguments, int environmentBytes)
    {
        string args = string.Join(' ', Enumerable.Range(0, arguments).Select(i => "a" + i));
        string env = environmentBytes > 0 ? $"BIG={new string('e', environmentBytes)} " : "";
        (int exit, string output) = Run("/bin/bash", ["-c", $"{limit} {env}exec '{_driver}' {args}"]);
        Assert.That(exit, Is.Zero, output);

        Dictionary<string, string[]> lines = output.Split('\n', StringSplitOptions.RemoveEmptyEntries)
            .Select(l => l.Split(' ')).ToDictionary(f => f[0], f => f[1..]);
        Assert.Multiple(() =>
        {
            foreach (string who in new[] { "main", "thread" })
            {
                Assert.That(lines[who], Has.Length.EqualTo(4), output);
                Assert.That(lines[who][0], Is.EqualTo(lines[who][2]), $"{who}: the stack's low end differs from glibc's\n{output}");
                Assert.That(lines[who][1], Is.EqualTo(lines[who][3]), $"{who}: the stack's size differs from glibc's\n{output}");
            }
            Assert.That(lines["cache"], Is.EqualTo(new[] { "33554432", "33554432" }), output);
        });
    }

    /// <summary>
    /// The runtime's start of its finalizer thread is only noted; the CLI's first request starts it
    /// with what the runtime passed, a second does nothing.
    /// </summary>
    [Test]
    public void FinalizerThreadStartsOnceWhenAskedNotWhenTheRuntimeStarts()
    {
        (int exit, string output) = Run(_driver, []);
        Assert.That(exit, Is.Zero, output);
        string line = output.Split('\n').Single(l => l.StartsWith("finalizer ", StringComparison.Ordinal));
        // deferred (true), starts before the request 0, first request 1 (started), starts 1,
        // second request 0, starts still 1, the runtime's own callback and context passed on.
        Assert.That(line, Is.EqualTo("finalizer 1 0 1 1 0 1 1"), output);
    }

    /// <summary>
    /// The count of possible CPUs is this machine's (the highest CPU in
    /// /sys/devices/system/cpu/possible, plus one), read by the wrap itself, not by minipal, and kept.
    /// </summary>
    [Test]
    public void PossibleCpusAreReadOnceWithoutMinipal()
    {
        string list = File.ReadAllText("/sys/devices/system/cpu/possible").Trim();
        int expected = list.Split(',').Select(item => int.Parse(item.Split('-')[^1], System.Globalization.CultureInfo.InvariantCulture)).Max() + 1;
        (int exit, string output) = Run(_driver, []);
        Assert.That(exit, Is.Zero, output);
        Assert.That(output.Split('\n'), Does.Contain($"possible {expected} {expected} 0"), $"{list}:\n{output}");
    }

    /// <summary>minipal's answer for a well-formed kernel CPU list; -1 (minipal decides) for anything else.</summary>
    [TestCase("0-1\n", 2)]
    [TestCase("0\n", 1)]
    [TestCase("0-63", 64)]
    [TestCase("0-3,8-11\n", 12)]
    [TestCase("0,2,4\n", 5)]
    [TestCase("0-127,256\n", 257)]
    [TestCase("", -1)]
    [TestCase("\n", -1)]
    [TestCase("0-\n", -1)]
    [TestCase("-3\n", -1)]
    [TestCase("0,,1\n", -1)]
    [TestCase("1-2-3\n", -1)]
    [TestCase("0-1\nx", -1)]
    [TestCase("0 1\n", -1)]
    [TestCase("12345678\n", -1)]
    public void ParsesAKernelCpuList(string list, int expected)
    {
        (int exit, string output) = Run(_driver, ["parse", list]);
        Assert.That(exit, Is.Zero, output);
        Assert.That(output.Trim(), Is.EqualTo(expected.ToString(System.Globalization.CultureInfo.InvariantCulture)), list);
    }

    private static (int Exit, string Output) Run(string file, string[] args)
    {
        (int exit, string stdout, string stderr) = ChildProcess.Run(file, args);
        return (exit, stdout + stderr);
    }
}
