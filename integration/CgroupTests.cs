using System.Diagnostics;
using System.Text.Json;
using System.Text.RegularExpressions;
using Sandbox.Cgroups;

namespace Sandbox.IntegrationTests;

/// <summary>
/// Resource limits for real: this machine has cgroup v1 only, so the scenarios run inside the
/// cgroup2 guest (../shared/cgroup2-vm/run, a User-mode Linux kernel with a delegated subtree), once
/// with cgroup v2 and once with v1 hierarchies, as the unprivileged user. One guest boot per mode runs
/// every scenario through the real CLI; the tests then read their sections of the output.
/// </summary>
[TestFixture]
[Parallelizable(ParallelScope.None)]
public sealed class CgroupTests
{
    private static readonly Dictionary<string, Dictionary<string, Section>> s_runs = new();

    private sealed record Section(int ExitCode, string Output);

    [OneTimeSetUp]
    public void Unprivileged() => Require.Unprivileged();

    internal static string? FindVm()
    {
        if (Environment.GetEnvironmentVariable("SANDBOX_CGROUP2_VM") is { Length: > 0 } configured)
            return configured;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "shared", "cgroup2-vm", "run");
            if (File.Exists(candidate))
                return candidate;
        }
        return null;
    }

    private static Dictionary<string, Section> Run(string mode)
    {
        lock (s_runs)
        {
            if (s_runs.TryGetValue(mode, out var done))
                return done;
            string? vm = FindVm();
            Require.That(vm is not null && File.Exists(vm), "the cgroup2 guest (../shared/cgroup2-vm/run) was not found; set SANDBOX_CGROUP2_VM");
            Require.That(File.Exists("/usr/bin/linux.uml"), "user-mode-linux is not installed (ci/setup-host installs it)");
            Require.That(File.Exists("/bin/busybox"), "busybox-static is not installed (ci/setup-host installs it)");

            string cli = SandboxCli.Binary;
            string gcProbe = BuildGcProbe();
            string disk = Path.Combine(Path.GetTempPath(), $"sandbox-cg-disk-{Environment.ProcessId}.img");
            using (var f = File.Create(disk))
                f.SetLength(64 << 20);
            // The guest sees the host's / read-only, but its /tmp is fresh: CG2_RO exposes our directory.
            string scriptDir = Directory.CreateTempSubdirectory("sandbox-cg-").FullName;
            string script = Path.Combine(scriptDir, $"scenarios-{mode}.sh");
            File.WriteAllText(script, $$"""
                S='{{cli}}'
                section() { name=$1; shift; echo "=== $name"; "$@" 2>&1; echo "=== rc=$?"; }
                section oom "$S" run --memory 100m -- sh -c 'head -c 500m /dev/zero | tail'
                section pids "$S" run --pids-limit 20 -- sh -c 'for i in $(seq 40); do sleep 3 & done; wait'
                section cpu "$S" run --cpus 0.2 --events json -- sh -c 'timeout 2 sh -c "while :; do :; done"; true'
                section stats "$S" run --stats -- sh -c 'head -c 30m /dev/zero | tail >/dev/null'
                section forkbomb "$S" run --pids-limit 50 --timeout 20s -- sh -c 'bomb() { bomb | bomb & }; bomb; sleep 3; echo host-still-fine'
                section timeout "$S" run --stats --timeout 1s -- sh -c 'sleep 100 & setsid sleep 100 & sleep 100'
                section leftovers sh -c 'for d in $CG2_DELEGATED; do ls -d "$d"/sandbox-* "$d"/*/sandbox-* 2>/dev/null; done; cat /sys/fs/cgroup/sbx/cgroup.procs /sys/fs/cgroup/sbx/leaf/cgroup.procs 2>/dev/null | wc -l'
                section iofree "$S" run -v /dev/ubda:/dev/ubda -- dd if=/dev/zero of=/dev/ubda bs=64k count=32 oflag=direct
                section iolimited "$S" run -v /dev/ubda:/dev/ubda --device-write-bps /dev/ubda:1mb -- dd if=/dev/zero of=/dev/ubda bs=64k count=32 oflag=direct
                section check "$S" check
                show='cat /proc/self/cgroup; for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes; do [ -e $f ] && { echo "limit $(cat $f)"; { echo max > $f; } 2>/dev/null && echo WRITABLE || echo write-refused; }; done; true'
                section view "$S" run --memory 100m -- sh -c "$show"
                r=$(mktemp -d); mkdir "$r/bin"; cp /bin/busybox "$r/bin/"; for c in sh cat echo; do ln -s busybox "$r/bin/$c"; done
                section dirview "$S" run --memory 100m "$r" -- /bin/sh -c "$show"
                section pidsone "$S" run --pids-limit 1 -- true
                section pidsexact "$S" run --pids-limit 3 -- sh -c 'sleep 1 & sleep 1 & wait; echo all-three-ran'
                section pidsover "$S" run --pids-limit 2 -- sh -c 'sleep 1 & sleep 1 & wait; echo all-three-ran'
                {{(mode == "v2" ? Abandon : "")}}
                section dotnetgc "$S" run --memory 200m -v '{{gcProbe}}:{{gcProbe}}:ro' -- dotnet '{{gcProbe}}/gcprobe.dll'
                """);
            var psi = new ProcessStartInfo(vm!) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            psi.ArgumentList.Add("sh");
            psi.ArgumentList.Add(script);
            psi.Environment["CG2_USER"] = Environment.UserName;
            psi.Environment["CG2_MODE"] = mode;
            psi.Environment["CG2_TIMEOUT"] = "300";
            psi.Environment["CG2_KARGS"] = $"ubd0={disk}";
            psi.Environment["CG2_ROOT_HOOK"] = "chmod 666 /dev/ubda";
            psi.Environment["CG2_RO"] = $"{scriptDir} {gcProbe}";
            if (mode == "v2")
                psi.Environment["CG2_LEAF"] = "leaf"; // the job starts in a leaf, as under systemd's Delegate=yes
            var sw = Stopwatch.StartNew();
            using var p = Process.Start(psi)!;
            var stderr = p.StandardError.ReadToEndAsync();
            string output = p.StandardOutput.ReadToEnd().Replace("\r\n", "\n");
            p.WaitForExit();
            File.Delete(disk);
            Directory.Delete(scriptDir, recursive: true);
            TestContext.Progress.WriteLine($"cgroup guest ({mode}) ran in {sw.Elapsed.TotalSeconds:0.0} s");
            Assert.That(p.ExitCode, Is.EqualTo(0), $"the guest failed: {output}\n{stderr.Result}");

            var sections = new Dictionary<string, Section>();
            foreach (Match m in Regex.Matches(output, @"^=== (?<name>\w+)\n(?<body>.*?)^=== rc=(?<rc>\d+)$", RegexOptions.Multiline | RegexOptions.Singleline))
                sections[m.Groups["name"].Value] = new Section(int.Parse(m.Groups["rc"].Value), m.Groups["body"].Value);
            TestContext.Out.WriteLine(output);
            s_runs[mode] = sections;
            return sections;
        }
    }

    // A CLI killed with SIGKILL leaves its (emptied) cgroup; the next run removes it once it is 10 s old.
    private const string Abandon = """
        abandon() {
          "$S" run --memory 100m -- sleep 60 & cli=$!
          until ls -d $CG2_DELEGATED/sandbox-* >/dev/null 2>&1; do sleep 0.2; done
          sleep 1; kill -9 $cli; wait $cli
          sleep 11
          echo "left $(ls -d $CG2_DELEGATED/sandbox-* 2>/dev/null | wc -l) procs $(cat $CG2_DELEGATED/sandbox-*/cgroup.procs | wc -l)"
          "$S" run --memory 100m -- true
          echo "after $(ls -d $CG2_DELEGATED/sandbox-* 2>/dev/null | wc -l)"
        }
        section abandon abandon
        """;

    private static string? s_gcProbe;

    /// <summary>
    /// A .NET program that prints the memory its GC may use and then allocates 400 MiB, held, in 1 MiB
    /// arrays: under a limit it sees, the GC throws OutOfMemoryException at its heap limit (75% of
    /// the cgroup's); under a limit it cannot see, it takes the host's memory as its budget and the
    /// kernel's OOM killer ends it.
    /// </summary>
    private static string BuildGcProbe()
    {
        if (s_gcProbe is not null)
            return s_gcProbe;
        string source = Directory.CreateTempSubdirectory("sandbox-gcprobe-src-").FullName;
        string output = Directory.CreateTempSubdirectory("sandbox-gcprobe-").FullName;
        File.WriteAllText(Path.Combine(source, "gcprobe.csproj"), """
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>net10.0</TargetFramework>
                <ImplicitUsings>enable</ImplicitUsings>
                <UseAppHost>false</UseAppHost>
              </PropertyGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(source, "Program.cs"), """
            Console.WriteLine($"available {GC.GetGCMemoryInfo().TotalAvailableMemoryBytes}");
            var kept = new List<byte[]>();
            try
            {
                for (int i = 0; i < 400; i++)
                {
                    var chunk = new byte[1 << 20];
                    Array.Fill(chunk, (byte)1);
                    kept.Add(chunk);
                }
                Console.WriteLine($"allocated {kept.Count} MiB");
            }
            catch (OutOfMemoryException)
            {
                int held = kept.Count;
                kept.Clear();
                Console.WriteLine($"OutOfMemoryException after {held} MiB");
            }
            """);
        var psi = new ProcessStartInfo("dotnet", ["build", source, "-c", "Release", "-o", output, "-nologo", "-nodeReuse:false", "-tl:off"])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync();
        string stdout = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        Assert.That(p.ExitCode, Is.EqualTo(0), $"building the GC probe failed:\n{stdout}\n{stderr.Result}");
        Directory.Delete(source, recursive: true);
        return s_gcProbe = output;
    }

    [OneTimeTearDown]
    public void RemoveGcProbe()
    {
        if (s_gcProbe is not null && Directory.Exists(s_gcProbe))
            Directory.Delete(s_gcProbe, recursive: true);
        s_gcProbe = null;
    }

    private static Section Get(string mode, string name)
    {
        var sections = Run(mode);
        Assert.That(sections.ContainsKey(name), Is.True, $"no '{name}' section in the guest's output");
        return sections[name];
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void MemoryLimitKillsAndReportsOutOfMemory(string mode)
    {
        Section s = Get(mode, "oom");
        Assert.That(s.ExitCode, Is.EqualTo(137), s.Output);
        Assert.That(s.Output, Does.Match(@"sandbox: killed: out of memory, limit 100 MiB, peak (9\d|10\d) MiB"));
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void PidsLimitStopsAForkLoopAndIsReported(string mode)
    {
        Section s = Get(mode, "pids");
        Assert.That(s.Output, Does.Match(@"sandbox: \d+ fork\(s\) refused: the pids limit \(20\) was reached"), s.Output);
        Assert.That(s.ExitCode, Is.Not.EqualTo(0));
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void PidsLimitCountsThePayloadsTasksAsDockerDoes(string mode)
    {
        // docker's payload is PID 1 and counts itself; ours runs under sandbox-init, which is not counted.
        Section one = Get(mode, "pidsone");
        Assert.That(one.ExitCode, Is.EqualTo(0), "--pids-limit 1 runs the command itself\n" + one.Output);
        Section exact = Get(mode, "pidsexact");
        Assert.That(exact.ExitCode, Is.EqualTo(0), exact.Output);
        Assert.That(exact.Output, Does.Contain("all-three-ran").And.Not.Contain("refused"), "sh and two children are 3 tasks");
        Section over = Get(mode, "pidsover");
        Assert.That(over.Output, Does.Match(@"sandbox: \d+ fork\(s\) refused: the pids limit \(2\) was reached"), over.Output);
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void CpuLimitHoldsABusyLoopToAFifthOfACpu(string mode)
    {
        Section s = Get(mode, "cpu");
        var exited = s.Output.Split('\n').Where(l => l.StartsWith('{')).Select(l => JsonDocument.Parse(l).RootElement)
            .Single(e => e.GetProperty("event").GetString() == "exited");
        double cpuMs = exited.GetProperty("cgroupCpuMs").GetDouble();
        double wallMs = exited.GetProperty("wallMs").GetDouble();
        TestContext.Out.WriteLine($"{mode}: cpu {cpuMs} ms over {wallMs} ms");
        // 2 s of busy loop at 0.2 CPU is 400 ms; unlimited it would be about 2000 ms.
        Assert.That(cpuMs, Is.InRange(250, 700), s.Output);
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void StatsReportPeakMemoryAndCpu(string mode)
    {
        Section s = Get(mode, "stats");
        Assert.That(s.ExitCode, Is.EqualTo(0), s.Output);
        Match m = Regex.Match(s.Output, @"sandbox: stats: wall [\d.]+m?s, cpu [\d.]+m?s, peak memory (?<peak>\d+) MiB, exit code 0");
        Assert.That(m.Success, Is.True, s.Output);
        Assert.That(int.Parse(m.Groups["peak"].Value), Is.InRange(25, 80), "tail held the 30 MB stream in memory");
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void TimeoutLeavesTheCgroupEmptyAndRemoved(string mode)
    {
        Section timeout = Get(mode, "timeout");
        Assert.That(timeout.ExitCode, Is.EqualTo(124), timeout.Output);
        Section leftovers = Get(mode, "leftovers");
        string[] lines = leftovers.Output.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(lines.Where(l => l.Contains("sandbox-")), Is.Empty, "sandbox cgroups were left behind");
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void AForkBombIsContainedByThePidsLimit(string mode)
    {
        // The escape suite's fork bomb: stopped by pids.max (the sandbox cannot exhaust the host's
        // process table), reported, and ended with the sandbox.
        Section s = Get(mode, "forkbomb");
        Assert.That(s.Output, Does.Match(@"sandbox: \d+ fork\(s\) refused: the pids limit \(50\) was reached"), s.Output);
        Section leftovers = Get(mode, "leftovers");
        Assert.That(leftovers.Output, Does.Not.Contain("sandbox-"));
    }

    [Test]
    public void DeviceWriteLimitThrottlesWrites()
    {
        // cgroup v2's io controller; the v1 guest mounts no blkio hierarchy, so v1 is not exercised here.
        Section free = Get("v2", "iofree");
        Section limited = Get("v2", "iolimited");
        Assert.That(free.ExitCode, Is.EqualTo(0), free.Output);
        Assert.That(limited.ExitCode, Is.EqualTo(0), limited.Output);
        double Seconds(string output) => double.Parse(Regex.Match(output, @"copied, ([\d.]+) s").Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);
        Assert.That(Seconds(limited.Output), Is.GreaterThan(1.5), "2 MiB at 1 MB/s takes about 2 s");
        Assert.That(Seconds(free.Output), Is.LessThan(1.0), "unthrottled, the same write is fast (else the test proves nothing)");
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void ThePayloadSeesItsOwnCgroupAndLimitReadOnly(string mode)
    {
        // Host mode (over the host's /sys/fs/cgroup) and a directory root (a tmpfs at /sys): the
        // sandbox's cgroup is the root of what it sees, its limit is there, and it cannot raise it.
        foreach (string name in new[] { "view", "dirview" })
        {
            Section s = Get(mode, name);
            Assert.That(s.ExitCode, Is.EqualTo(0), $"{name}: {s.Output}");
            Assert.That(s.Output, Does.Match(mode == "v2" ? @"(?m)^0::/$" : @"(?m)^\d+:memory:/$"), $"{name}: the cgroup namespace is rooted at the sandbox's cgroup\n{s.Output}");
            Assert.That(s.Output, Does.Contain("limit 104857600\nwrite-refused"), $"{name}: {s.Output}");
            Assert.That(s.Output, Does.Not.Contain("WRITABLE"), name);
        }
    }

    [Test]
    public void TheCgroupOfACliKilledWithSigkillIsRemovedByTheNextRun()
    {
        Section s = Get("v2", "abandon");
        Assert.That(s.ExitCode, Is.EqualTo(0), s.Output);
        Assert.That(s.Output, Does.Contain("left 1 procs 0"), "the killed CLI's sandbox died with it (die-with-parent), its cgroup stayed\n" + s.Output);
        Assert.That(s.Output, Does.Contain("after 0"), s.Output);
    }

    [TestCase("v2")]
    [TestCase("v1")]
    public void DotNetSeesTheMemoryLimitAndThrowsInsteadOfBeingKilled(string mode)
    {
        // The GC's heap limit is 75% of the cgroup's 200 MiB (GCHeapHardLimitPercent's default).
        Section s = Get(mode, "dotnetgc");
        Assert.That(s.ExitCode, Is.EqualTo(0), s.Output);
        Assert.That(s.Output, Does.Contain($"available {200L * 1024 * 1024 * 3 / 4}"), s.Output);
        Assert.That(s.Output, Does.Match(@"OutOfMemoryException after \d+ MiB"), s.Output);
        Assert.That(s.Output, Does.Not.Contain("out of memory"), s.Output);
    }

    [Test]
    public void CheckReportsTheDelegatedCgroup()
    {
        Section s = Get("v2", "check");
        Assert.That(s.Output, Does.Contain("[ ok ] cgroups"), s.Output);
    }

    [Test]
    public void LimitsRequiredWithoutDelegationExit125OnThisHost()
    {
        CgroupProbe probe = CgroupManager.Probe(CgroupHost.Current, ["memory"]);
        CliResult r = SandboxCli.Run("run", "--memory", "100m", "--", "true");
        if (probe.Usable)
        {
            Assert.That(r.ExitCode, Is.EqualTo(0), "this host delegates a cgroup: the limit can be enforced\n" + r);
            return;
        }
        Assert.That(r.ExitCode, Is.EqualTo(125), r.ToString());
        Assert.That(r.Stderr, Does.Contain("resource limits cannot be enforced here").And.Contain("Fix:"));

        CliResult bestEffort = SandboxCli.Run("run", "--memory", "100m", "--limits", "best-effort", "--", "true");
        Assert.That(bestEffort.ExitCode, Is.EqualTo(0), bestEffort.ToString());
        Assert.That(bestEffort.Stderr, Does.Contain("running WITHOUT limits"));
    }
}
