using System.Collections.Immutable;
using Sandbox.Cgroups;

namespace Sandbox.Tests.Cgroups;

public class ResourceLimitsTests
{
    private static readonly ImmutableArray<DeviceRate> s_oneRate = [new DeviceRate("/dev/sda", 1 << 20)];

    private static void AssertInvalid(ResourceLimits limits, string message)
    {
        var e = Assert.Throws<SandboxException>(limits.Validate);
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Is.EqualTo(message));
    }

    [Test]
    public void Validate_MemorySwapWithoutMemory()
    {
        AssertInvalid(new ResourceLimits { MemoryAndSwapBytes = 1L << 30 },
            "--memory-swap needs --memory (it is the total of memory and swap)");
    }

    [Test]
    public void Validate_MemorySwapBelowMemory()
    {
        AssertInvalid(new ResourceLimits { MemoryBytes = 1L << 30, MemoryAndSwapBytes = 512L << 20 },
            "--memory-swap is memory plus swap: it cannot be less than --memory");
    }

    [TestCase(0L)]
    [TestCase(-1L)]
    public void Validate_NonPositiveMemory(long memory)
    {
        AssertInvalid(new ResourceLimits { MemoryBytes = memory }, "--memory must be positive");
    }

    [TestCase(0L)]
    [TestCase(-1L)]
    public void Validate_NonPositivePids(long pids)
    {
        AssertInvalid(new ResourceLimits { PidsLimit = pids }, "--pids-limit must be positive");
    }

    [Test]
    public void Validate_PidsAbovePidMaxLimit()
    {
        Assert.DoesNotThrow(() => new ResourceLimits { PidsLimit = ResourceLimits.MaxPidsLimit }.Validate());
        AssertInvalid(new ResourceLimits { PidsLimit = ResourceLimits.MaxPidsLimit + 1 }, "--pids-limit can be at most 4194303 (the kernel's PID_MAX_LIMIT, less one for the sandbox's PID 1); 0 or -1 means no limit");
        Assert.Throws<SandboxException>(new ResourceLimits { PidsLimit = long.MaxValue }.Validate, "no overflow to a negative pids.max");
    }

    [TestCase(0.0)]
    [TestCase(-0.5)]
    [TestCase(double.NaN)]
    [TestCase(double.PositiveInfinity)]
    [TestCase(4096.5)]
    public void Validate_BadCpus(double cpus)
    {
        AssertInvalid(new ResourceLimits { Cpus = cpus }, "--cpus must be a positive number of CPUs, e.g. 0.5 or 2");
    }

    [Test]
    public void Validate_AcceptsGoodLimits()
    {
        Assert.DoesNotThrow(ResourceLimits.None.Validate);
        Assert.DoesNotThrow(new ResourceLimits { MemoryBytes = 1L << 30, MemoryAndSwapBytes = 1L << 30 }.Validate); // no swap
        Assert.DoesNotThrow(new ResourceLimits { MemoryBytes = 1L << 30, MemoryAndSwapBytes = 2L << 30 }.Validate);
        Assert.DoesNotThrow(new ResourceLimits { MemoryBytes = 1L << 30, MemoryAndSwapBytes = -1 }.Validate); // unlimited swap
        Assert.DoesNotThrow(new ResourceLimits { PidsLimit = 1, Cpus = 0.01 }.Validate);
        Assert.DoesNotThrow(new ResourceLimits { Cpus = Environment.ProcessorCount }.Validate);
        Assert.DoesNotThrow(new ResourceLimits { MemoryBytes = 6L << 20 }.Validate);
    }

    [Test]
    public void Validate_CpusOutsideWhatTheHostHasAndMemoryBelowSixMebibytes()
    {
        // docker's ranges: --cpus from 0.01 to the CPU count; --memory at least 6 MB (below a few MB
        // the kernel OOM-killed the CLI itself, whose memory the sandbox's init shares until it execs).
        int n = Environment.ProcessorCount;
        AssertInvalid(new ResourceLimits { Cpus = n + 1 }, $"--cpus {n + 1}: the range is from 0.01 to {n}, the CPUs this host has");
        AssertInvalid(new ResourceLimits { Cpus = 0.001 }, $"--cpus 0.001: the range is from 0.01 to {n}, the CPUs this host has");
        AssertInvalid(new ResourceLimits { MemoryBytes = 4096 }, $"--memory must be at least 6m (got {Sizes.Format(4096)}), as docker's");
    }

    [Test]
    public void RequiredControllers_One()
    {
        Assert.That(new ResourceLimits { MemoryBytes = 1 }.RequiredControllers(), Is.EqualTo(new[] { "memory" }));
        Assert.That(new ResourceLimits { MemoryBytes = 1, MemoryAndSwapBytes = 2 }.RequiredControllers(), Is.EqualTo(new[] { "memory" }));
        Assert.That(new ResourceLimits { MemoryAndSwapBytes = -1 }.RequiredControllers(), Is.EqualTo(new[] { "memory" }));
        Assert.That(new ResourceLimits { PidsLimit = 10 }.RequiredControllers(), Is.EqualTo(new[] { "pids" }));
        Assert.That(new ResourceLimits { Cpus = 0.5 }.RequiredControllers(), Is.EqualTo(new[] { "cpu" }));
        Assert.That(new ResourceLimits { DeviceReadBps = s_oneRate }.RequiredControllers(), Is.EqualTo(new[] { "io" }));
        Assert.That(new ResourceLimits { DeviceWriteBps = s_oneRate }.RequiredControllers(), Is.EqualTo(new[] { "io" }));
    }

    [Test]
    public void RequiredControllers_AllOnceInOrder()
    {
        var limits = new ResourceLimits
        {
            MemoryBytes = 1L << 30,
            MemoryAndSwapBytes = 2L << 30,
            PidsLimit = 100,
            Cpus = 2,
            DeviceReadBps = s_oneRate,
            DeviceWriteBps = s_oneRate,
        };
        Assert.That(limits.RequiredControllers(), Is.EqualTo(new[] { "memory", "pids", "cpu", "io" }));
    }

    [Test]
    public void RequiredControllers_NoneForNoLimits()
    {
        Assert.That(ResourceLimits.None.RequiredControllers(), Is.Empty);
    }

    [Test]
    public void IsEmpty()
    {
        Assert.That(ResourceLimits.None.IsEmpty, Is.True);
        Assert.That(new ResourceLimits().IsEmpty, Is.True);
        Assert.That(new ResourceLimits { MemoryBytes = 1 }.IsEmpty, Is.False);
        Assert.That(new ResourceLimits { MemoryAndSwapBytes = -1 }.IsEmpty, Is.False);
        Assert.That(new ResourceLimits { PidsLimit = 1 }.IsEmpty, Is.False);
        Assert.That(new ResourceLimits { Cpus = 1 }.IsEmpty, Is.False);
        Assert.That(new ResourceLimits { DeviceReadBps = s_oneRate }.IsEmpty, Is.False);
        Assert.That(new ResourceLimits { DeviceWriteBps = s_oneRate }.IsEmpty, Is.False);
    }
}
