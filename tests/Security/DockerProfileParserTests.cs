using Sandbox.Tests.TestSupport;
using System.Collections.Immutable;
using Sandbox.Security.Seccomp;

namespace Sandbox.Tests.Security;

public class DockerProfileParserTests
{
    private static readonly SeccompArchitecture X64 = SeccompArchitecture.X86_64;
    private static readonly SeccompArchitecture Arm = SeccompArchitecture.Aarch64;
    private static readonly uint Allow = SeccompReturn.Allow;
    private static readonly uint Eperm = SeccompReturn.ErrnoValue(LinuxErrno.EPERM);
    private static readonly uint Enosys = SeccompReturn.ErrnoValue(LinuxErrno.ENOSYS);

    private static readonly IReadOnlySet<string> DockerCaps =
        new HashSet<string> { "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE" };

    private static SeccompProfile Parse(string json, SeccompArchitecture? arch = null, IReadOnlySet<string>? caps = null, Version? kernel = null) =>
        DockerProfileParser.Parse(json, caps ?? DockerCaps, arch ?? X64, kernel, "test.json");

    private static SandboxException Invalid(string json)
    {
        var e = Assert.Throws<SandboxException>(() => Parse(json))!;
        Assert.That(e.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        return e;
    }

    [TestCaseSource(typeof(DefaultSeccompProfileTests), nameof(DefaultSeccompProfileTests.Architectures))]
    public void DockersDefaultProfileParsesAndCompiles(string archName)
    {
        SeccompArchitecture arch = SeccompArchitecture.All.Single(a => a.Name == archName);
        SeccompProfile profile = Parse(DockerProfileFixtures.DockerDefault, arch);
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, arch);
        TestContext.Progress.WriteLine($"docker default excerpt on {arch}: {program.Length} instructions, {SeccompCompiler.UnknownNames(profile, arch).Count} names skipped");
        Assert.That(program.Length, Is.LessThan(Bpf.MaxInstructions));
        Assert.That(SeccompCompiler.Verify(program), Is.Null);
        Assert.That(profile.DefaultAction, Is.EqualTo(SeccompAction.Eperm));
        Assert.That(profile.Architectures, Is.EqualTo(arch == X64 ? new[] { "SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32" } : new[] { "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM" }));

        uint Run(string name, params ulong[] args) => BpfInterpreter.Run(program, SeccompInput.For(arch, name, args));
        Assert.Multiple(() =>
        {
            Assert.That(Run("read"), Is.EqualTo(Allow));
            Assert.That(Run("execve"), Is.EqualTo(Allow));
            Assert.That(Run("openat"), Is.EqualTo(Allow));
            Assert.That(Run("clone", 17), Is.EqualTo(Allow));
            Assert.That(Run("clone", 0x10000000 | 17), Is.EqualTo(Eperm), "CLONE_NEWUSER: the default action");
            Assert.That(Run("clone3"), Is.EqualTo(Enosys));
            Assert.That(Run("unshare"), Is.EqualTo(Eperm));
            Assert.That(Run("mount"), Is.EqualTo(Eperm));
            Assert.That(Run("keyctl"), Is.EqualTo(Eperm));
            Assert.That(Run("bpf"), Is.EqualTo(Eperm));
            Assert.That(Run("ptrace"), Is.EqualTo(Allow), "minKernel ignored: kept");
            Assert.That(Run("chroot"), Is.EqualTo(Allow), "CAP_SYS_CHROOT is held");
            Assert.That(Run("reboot"), Is.EqualTo(Eperm), "CAP_SYS_BOOT is not");
            Assert.That(Run("socket", 2), Is.EqualTo(Allow));
            Assert.That(Run("socket", 40), Is.EqualTo(Eperm));
            Assert.That(Run("personality", 8), Is.EqualTo(Allow));
            Assert.That(Run("personality", 0xffffffff), Is.EqualTo(Allow));
            Assert.That(Run("personality", 4), Is.EqualTo(Eperm));
            Assert.That(Run("io_uring_setup"), Is.EqualTo(Eperm), "not in the allow-list");
            Assert.That(BpfInterpreter.Run(program, SeccompInput.For(arch, arch.MaxSyscall + 1)), Is.EqualTo(Enosys));
        });
        if (arch == X64)
        {
            Assert.That(Run("arch_prctl"), Is.EqualTo(Allow));
            Assert.That(Run("modify_ldt"), Is.EqualTo(Allow));
            Assert.That(SeccompCompiler.UnknownNames(profile, arch), Does.Contain("chown32").And.Contain("mmap2").And.Contain("_llseek"));
        }
        else
        {
            Assert.That(SeccompCompiler.UnknownNames(profile, arch), Does.Contain("open").And.Contain("arm_fadvise64_64").And.Not.Contain("arch_prctl").And.Not.Contain("modify_ldt"));
        }

        // And everywhere else it means what it says.
        var inputs = Enumerable.Range(-1, arch.MaxSyscall + 4)
            .SelectMany(nr => new[] { SeccompInput.For(arch, nr), SeccompInput.For(arch, nr, 0x10000011, 40), SeccompInput.For(arch, nr, 0xffffffff, 1) });
        Assert.Multiple(() =>
        {
            foreach (SeccompInput input in inputs)
                Assert.That(BpfInterpreter.Run(program, input), Is.EqualTo(BpfInterpreter.Expected(profile, arch, input)), $"nr {input.Nr}");
        });
    }

    [Test]
    public void CapabilitiesSelectRules()
    {
        var withAdmin = new HashSet<string>(DockerCaps) { "SYS_ADMIN" }; // without the CAP_ prefix too
        SeccompProfile profile = Parse(DockerProfileFixtures.DockerDefault, X64, withAdmin);
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        uint Run(string name, params ulong[] args) => BpfInterpreter.Run(program, SeccompInput.For(X64, name, args));
        Assert.That(Run("mount"), Is.EqualTo(Allow));
        Assert.That(Run("unshare"), Is.EqualTo(Allow));
        Assert.That(Run("clone", 0x10000000 | 17), Is.EqualTo(Allow), "the masked clone rule is excluded, the plain one included");
        Assert.That(Run("clone3"), Is.EqualTo(Allow), "clone3 → ENOSYS is excluded with CAP_SYS_ADMIN");

        SeccompProfile none = Parse(DockerProfileFixtures.DockerDefault, X64, new HashSet<string>());
        ImmutableArray<BpfInstruction> bare = SeccompCompiler.Compile(none, X64);
        Assert.That(BpfInterpreter.Run(bare, SeccompInput.For(X64, "chroot")), Is.EqualTo(Eperm), "CAP_SYS_CHROOT not held");
    }

    [Test]
    public void MinKernelIsComparedWhenAVersionIsGiven()
    {
        string json = """
        {
          "defaultAction": "SCMP_ACT_ERRNO",
          "syscalls": [
            { "names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": { "minKernel": "4.8" } },
            { "names": ["kcmp"], "action": "SCMP_ACT_ALLOW", "excludes": { "minKernel": "5.10" } }
          ]
        }
        """;
        bool Allowed(SeccompProfile p, string name) => BpfInterpreter.Run(SeccompCompiler.Compile(p, X64), SeccompInput.For(X64, name)) == Allow;

        SeccompProfile old = Parse(json, kernel: new Version(4, 4, 0));
        Assert.That(Allowed(old, "ptrace"), Is.False);
        Assert.That(Allowed(old, "kcmp"), Is.True);
        SeccompProfile exact = Parse(json, kernel: new Version(4, 8));
        Assert.That(Allowed(exact, "ptrace"), Is.True, "4.8 is at least 4.8");
        SeccompProfile recent = Parse(json, kernel: DockerProfileParser.ParseKernelVersion("6.1.0-18-amd64"));
        Assert.That(Allowed(recent, "ptrace"), Is.True);
        Assert.That(Allowed(recent, "kcmp"), Is.False);
        SeccompProfile ignoring = Parse(json);
        Assert.That(Allowed(ignoring, "ptrace"), Is.True);
        Assert.That(Allowed(ignoring, "kcmp"), Is.True);
    }

    [Test]
    public void ActionsAndErrnos()
    {
        string json = """
        {
          "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
          "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
          "syscalls": [
            { "name": "read", "action": "SCMP_ACT_ALLOW" },
            { "names": ["write"], "action": "SCMP_ACT_ERRNO" },
            { "names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13 },
            { "names": ["getppid"], "action": "SCMP_ACT_KILL" },
            { "names": ["gettid"], "action": "SCMP_ACT_KILL_PROCESS" },
            { "names": ["getuid"], "action": "SCMP_ACT_KILL_THREAD" },
            { "names": ["getgid"], "action": "SCMP_ACT_TRAP" },
            { "names": ["geteuid"], "action": "SCMP_ACT_LOG" },
            { "names": ["getegid"], "action": "SCMP_ACT_TRACE", "errnoRet": 5 }
          ]
        }
        """;
        SeccompProfile profile = Parse(json);
        Assert.That(profile.DefaultAction, Is.EqualTo(SeccompAction.Enosys));
        Assert.That(profile.DefaultErrno, Is.EqualTo(38));
        Assert.That(profile.Architectures, Is.EqualTo(new[] { "SCMP_ARCH_X86_64", "SCMP_ARCH_X86" }));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        uint Run(string name) => BpfInterpreter.Run(program, SeccompInput.For(X64, name));
        Assert.That(Run("read"), Is.EqualTo(Allow));
        Assert.That(Run("write"), Is.EqualTo(Eperm), "ERRNO without errnoRet is EPERM, not the default's errno");
        Assert.That(Run("getpid"), Is.EqualTo(SeccompReturn.ErrnoValue(13)));
        Assert.That(Run("getppid"), Is.EqualTo(SeccompReturn.KillThread));
        Assert.That(Run("gettid"), Is.EqualTo(SeccompReturn.KillProcess));
        Assert.That(Run("getuid"), Is.EqualTo(SeccompReturn.KillThread));
        Assert.That(Run("getgid"), Is.EqualTo(SeccompReturn.Trap));
        Assert.That(Run("geteuid"), Is.EqualTo(SeccompReturn.Log));
        Assert.That(Run("getegid"), Is.EqualTo(SeccompReturn.Trace | 5));
        Assert.That(Run("mmap"), Is.EqualTo(Enosys));
    }

    [Test]
    public void AllComparisonOperatorsParse()
    {
        string json = """
        {
          "defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [
            { "names": ["mmap"], "action": "SCMP_ACT_ERRNO", "args": [
              { "index": 0, "value": 1, "op": "SCMP_CMP_EQ" }, { "index": 1, "value": 2, "op": "SCMP_CMP_NE" },
              { "index": 2, "value": 3, "op": "SCMP_CMP_LT" }, { "index": 3, "value": 4, "op": "SCMP_CMP_LE" },
              { "index": 4, "value": 5, "op": "SCMP_CMP_GT" }, { "index": 5, "value": 6, "op": "SCMP_CMP_GE" } ] },
            { "names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "args": [
              { "index": 1, "value": 18446744073709551615, "valueTwo": 21522, "op": "SCMP_CMP_MASKED_EQ" } ] }
          ]
        }
        """;
        SeccompProfile profile = Parse(json);
        Assert.That(profile.Rules[0].Conditions.Select(c => c.Op), Is.EqualTo(new[]
        {
            SeccompArgOp.EqualTo, SeccompArgOp.NotEqual, SeccompArgOp.LessThan, SeccompArgOp.LessOrEqual, SeccompArgOp.GreaterThan, SeccompArgOp.GreaterOrEqual,
        }));
        Assert.That(profile.Rules[1].Conditions[0], Is.EqualTo(new SeccompArgCondition(1, SeccompArgOp.MaskedEqual, ulong.MaxValue, 0x5412)));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "mmap", 1, 0, 2, 4, 6, 6)), Is.EqualTo(Eperm));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "mmap", 1, 0, 2, 4, 6, 5)), Is.EqualTo(Allow));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "ioctl", 0, 0x5412)), Is.EqualTo(Eperm));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "ioctl", 0, 0x1_00005412)), Is.EqualTo(Allow), "Docker's 64-bit semantics");
    }

    [Test]
    public void PropertyNamesAreCaseInsensitiveLikeGo()
    {
        SeccompProfile profile = Parse("""{ "DefaultAction": "SCMP_ACT_ALLOW", "Syscalls": [ { "Names": ["keyctl"], "Action": "SCMP_ACT_ERRNO" } ], "unknownField": 1 }""");
        Assert.That(profile.DefaultAction, Is.EqualTo(SeccompAction.Allow));
        Assert.That(profile.Rules, Has.Length.EqualTo(1));
    }

    [Test]
    public void ParseWithoutCapabilitiesUsesDockersDefaultSet()
    {
        if (SeccompArchitecture.TryCurrent is null)
            Skip.Because("no syscall table for this architecture");
        SeccompProfile profile = DockerProfileParser.Parse(DockerProfileFixtures.DockerDefault);
        Assert.That(profile.Rules.Any(r => r.Names.Contains("chroot")), Is.True, "CAP_SYS_CHROOT is in Docker's default set");
        Assert.That(profile.Rules.Any(r => r.Names.Contains("mount")), Is.False);
    }

    [TestCase("", "$: not valid JSON")]
    [TestCase("{", "$: not valid JSON")]
    [TestCase("[]", "$: expected an object")]
    [TestCase("{}", "$.defaultAction: missing")]
    [TestCase("""{ "defaultAction": 1 }""", "$.defaultAction: expected a string, found the number 1")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_MAYBE" }""", "$.defaultAction: unknown action 'SCMP_ACT_MAYBE'")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_NOTIFY" }""", "$.defaultAction: SCMP_ACT_NOTIFY needs a seccomp agent")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": -1 }""", "$.defaultErrnoRet: expected an integer")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000 }""", "$.defaultErrnoRet: errno 5000 is above 4095")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": {} }""", "$.syscalls: expected an array")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ 3 ] }""", "$.syscalls[0]: expected an object")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "action": "SCMP_ACT_ALLOW" } ] }""", "$.syscalls[0]: a rule needs 'names'")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read"] } ] }""", "$.syscalls[0].action: missing")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read", 7], "action": "SCMP_ACT_ALLOW" } ] }""", "$.syscalls[0].names[1]: expected a string")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "name": "read", "names": ["write"], "action": "SCMP_ACT_ALLOW" } ] }""", "$.syscalls[0]: use either 'name' or 'names'")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read"], "action": "SCMP_ACT_ALLOW" }, { "names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [ { "index": 6, "value": 1, "op": "SCMP_CMP_EQ" } ] } ] }""", "$.syscalls[1].args[0].index: argument index 6 is outside 0..5")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [ { "index": 0, "value": 1, "op": "SCMP_CMP_ABOUT" } ] } ] }""", "$.syscalls[0].args[0].op: unknown operator 'SCMP_CMP_ABOUT'")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [ { "index": 0, "value": -1, "op": "SCMP_CMP_EQ" } ] } ] }""", "$.syscalls[0].args[0].value: expected an integer")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [ { "value": 1, "op": "SCMP_CMP_EQ" } ] } ] }""", "$.syscalls[0].args[0].index: missing")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read"], "action": "SCMP_ACT_ALLOW", "includes": { "minKernel": "four" } } ] }""", "$.syscalls[0].includes.minKernel: 'four' is not a kernel version")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "syscalls": [ { "names": ["read"], "action": "SCMP_ACT_ALLOW", "excludes": { "caps": "CAP_SYS_ADMIN" } } ] }""", "$.syscalls[0].excludes.caps: expected an array of strings")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "architectures": ["x86_64"] }""", "$.architectures[0]: 'x86_64' is not a libseccomp architecture name")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"], "archMap": [ { "architecture": "SCMP_ARCH_X86_64" } ] }""", "$: use either 'architectures' or 'archMap'")]
    [TestCase("""{ "defaultAction": "SCMP_ACT_ERRNO", "archMap": [ { "subArchitectures": [] } ] }""", "$.archMap[0].architecture: missing")]
    public void MalformedProfilesNameTheJsonPath(string json, string expected)
    {
        SandboxException e = Invalid(json);
        Assert.That(e.Message, Does.StartWith("seccomp profile test.json: "));
        Assert.That(e.Message, Does.Contain(expected));
    }

    [Test]
    public void RulesForOtherArchitecturesAreDropped()
    {
        string json = """
        {
          "defaultAction": "SCMP_ACT_ALLOW",
          "syscalls": [
            { "names": ["getpid"], "action": "SCMP_ACT_ERRNO", "includes": { "arches": ["arm64"] } },
            { "names": ["gettid"], "action": "SCMP_ACT_ERRNO", "excludes": { "arches": ["amd64"] } }
          ]
        }
        """;
        Assert.That(Parse(json, X64).Rules, Is.Empty);
        Assert.That(Parse(json, Arm).Rules.SelectMany(r => r.Names), Is.EqualTo(new[] { "getpid", "gettid" }));
    }
}
