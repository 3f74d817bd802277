using System.Collections.Immutable;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Sandbox.Security.Seccomp;

namespace Sandbox.Tests.Security;

public class SeccompCompilerTests
{
    private static readonly SeccompArchitecture X64 = SeccompArchitecture.X86_64;
    private static readonly uint Allow = SeccompReturn.Allow;
    private static readonly uint Eperm = SeccompReturn.ErrnoValue(LinuxErrno.EPERM);

    private static SeccompProfile Profile(SeccompAction defaultAction, params SeccompRule[] rules) =>
        new() { DefaultAction = defaultAction, Rules = [.. rules] };

    private static void AssertAgreesWithProfile(SeccompProfile profile, SeccompArchitecture arch, IEnumerable<SeccompInput> inputs)
    {
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, arch);
        Assert.That(SeccompCompiler.Verify(program), Is.Null);
        Assert.Multiple(() =>
        {
            foreach (SeccompInput input in inputs)
            {
                Assert.That(BpfInterpreter.Run(program, input), Is.EqualTo(BpfInterpreter.Expected(profile, arch, input)),
                    $"nr {input.Nr} args {string.Join(",", input.Args.Select(a => $"0x{a:x}"))}");
            }
        });
    }

    [Test]
    public void InstructionIsStructSockFilter()
    {
        Assert.That(Unsafe.SizeOf<BpfInstruction>(), Is.EqualTo(8));
        Assert.That(Marshal.SizeOf<BpfInstruction>(), Is.EqualTo(8));
        var i = new BpfInstruction(0x0015, 0x01, 0x02, 0xC000003E);
        byte[] bytes = BpfProgram.ToBytes(ImmutableArray.Create(i));
        Assert.That(bytes, Is.EqualTo(new byte[] { 0x15, 0x00, 0x01, 0x02, 0x3E, 0x00, 0x00, 0xC0 }));
        // The in-memory layout is the same bytes (little-endian machine): MemoryMarshal is safe too.
        Assert.That(MemoryMarshal.AsBytes(new ReadOnlySpan<BpfInstruction>(ref i)).ToArray(), Is.EqualTo(bytes));
        Assert.That(i.ToUInt64(), Is.EqualTo(BitConverter.ToUInt64(bytes)));
        Assert.That(BpfInstruction.FromUInt64(i.ToUInt64()), Is.EqualTo(i));
    }

    [Test]
    public void OpcodesAreTheKernels()
    {
        // include/uapi/linux/filter.h, bpf_common.h: BPF_LD|BPF_W|BPF_ABS = 0x20, BPF_JMP|BPF_JEQ|BPF_K = 0x15, ...
        Assert.That(Bpf.LoadWordAbsolute, Is.EqualTo(0x20));
        Assert.That(Bpf.JumpEqual, Is.EqualTo(0x15));
        Assert.That(Bpf.JumpGreater, Is.EqualTo(0x25));
        Assert.That(Bpf.JumpGreaterOrEqual, Is.EqualTo(0x35));
        Assert.That(Bpf.JumpSet, Is.EqualTo(0x45));
        Assert.That(Bpf.JumpAlways, Is.EqualTo(0x05));
        Assert.That(Bpf.ReturnK, Is.EqualTo(0x06));
        Assert.That(Bpf.AndK, Is.EqualTo(0x54));
        Assert.That(SeccompReturn.ErrnoValue(1), Is.EqualTo(0x00050001));
        Assert.That(SeccompAction.KillProcess.ReturnValue, Is.EqualTo(0x80000000));
        Assert.That(SeccompAction.Log.ReturnValue, Is.EqualTo(0x7ffc0000));
        Assert.That(SeccompAction.Trap.ReturnValue, Is.EqualTo(0x00030000));
        Assert.That(SeccompAction.Trace(5).ReturnValue, Is.EqualTo(0x7ff00005));
        Assert.That(SeccompData.ArgLow(0), Is.EqualTo(16));
        Assert.That(SeccompData.ArgHigh(0), Is.EqualTo(20));
        Assert.That(SeccompData.ArgLow(5), Is.EqualTo(56));
    }

    [Test]
    public void ProgramCopiesToNativeBytes()
    {
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(SeccompProfiles.Default, X64);
        byte[] bytes = BpfProgram.ToBytes(program);
        Assert.That(bytes, Has.Length.EqualTo(program.Length * 8));
        Assert.That(MemoryMarshal.AsBytes(program.AsSpan()).ToArray(), Is.EqualTo(bytes));
        Assert.That(BpfProgram.ToUInt64Array(program).Select(BpfInstruction.FromUInt64), Is.EqualTo(program));
        Assert.Throws<ArgumentException>(() => BpfProgram.CopyTo(program.AsSpan(), new byte[8]));
    }

    [Test]
    public void TablesComeFromTheHeaders()
    {
        Assert.That(SeccompArchitecture.X86_64.AuditArch, Is.EqualTo(0xC000003E));
        Assert.That(SeccompArchitecture.Aarch64.AuditArch, Is.EqualTo(0xC00000B7));
        Assert.That(X64.Syscall("read"), Is.EqualTo(0));
        Assert.That(X64.Syscall("clone"), Is.EqualTo(56));
        Assert.That(X64.Syscall("execve"), Is.EqualTo(59));
        Assert.That(X64.Syscall("keyctl"), Is.EqualTo(250));
        Assert.That(X64.Syscall("clone3"), Is.EqualTo(435));
        Assert.That(SeccompArchitecture.Aarch64.Syscall("read"), Is.EqualTo(63));
        Assert.That(SeccompArchitecture.Aarch64.Syscall("clone"), Is.EqualTo(220));
        Assert.That(SeccompArchitecture.Aarch64.Syscall("unshare"), Is.EqualTo(97));
        Assert.That(SeccompArchitecture.Aarch64.TryGetSyscall("open", out _), Is.False, "aarch64 has openat only");
        Assert.That(X64.MaxSyscall, Is.GreaterThanOrEqualTo(450));
        Assert.That(SeccompArchitecture.Aarch64.MaxSyscall, Is.GreaterThanOrEqualTo(450));
        Assert.That(X64.SyscallName(59), Is.EqualTo("execve"));
        Assert.That(SeccompArchitecture.Current, Is.SameAs(RuntimeInformation.ProcessArchitecture == Architecture.Arm64 ? SeccompArchitecture.Aarch64 : SeccompArchitecture.X86_64));
    }

    [Test]
    public void AllowListWithErrnoDefault()
    {
        SeccompProfile profile = Profile(SeccompAction.Errno(LinuxErrno.EPERM),
            new SeccompRule(["read", "write", "exit_group", "openat", "close"], SeccompAction.Allow),
            new SeccompRule("getpid", SeccompAction.Errno(42)));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "read")), Is.EqualTo(Allow));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "close")), Is.EqualTo(Allow));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "getpid")), Is.EqualTo(SeccompReturn.ErrnoValue(42)));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "mmap")), Is.EqualTo(Eperm));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, 999)), Is.EqualTo(SeccompReturn.ErrnoValue(LinuxErrno.ENOSYS)));
        AssertAgreesWithProfile(profile, X64, Enumerable.Range(-1, X64.MaxSyscall + 3).Select(n => SeccompInput.For(X64, n)));
    }

    [TestCase(300, 1)]
    [TestCase(256, 1)]
    [TestCase(360, 1)]
    [TestCase(150, 2)]
    [TestCase(180, 2)]
    public void LongAllowListsStillEvaluateCorrectly(int count, int stride)
    {
        // Every stride-th call of the table, by number: with a stride above 1 no two allowed numbers
        // are neighbours, so every one is its own range and the search's left subtrees grow past a
        // conditional jump's 255. Every number of the table, allowed or not, must still come out right.
        string[] names = X64.SyscallNames.OrderBy(n => X64.Syscall(n)).Where((_, i) => i % stride == 0).Take(count).ToArray();
        Assert.That(names, Has.Length.EqualTo(count));
        SeccompProfile profile = Profile(SeccompAction.Errno(LinuxErrno.EPERM), new SeccompRule(names, SeccompAction.Allow));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        if (stride > 1)
            Assert.That(program.Any(i => i.Code == Bpf.JumpAlways), Is.True, "a left subtree longer than 255 is jumped over with JA");
        AssertAgreesWithProfile(profile, X64, Enumerable.Range(0, X64.MaxSyscall + 1).Select(n => SeccompInput.For(X64, n)));
        foreach (string name in names)
            Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, name)), Is.EqualTo(Allow), name);
    }

    [Test]
    public void ArgumentBodyLongerThanAJumpIsSkippedWithJa()
    {
        // 120 rules on ioctl: its body is ~360 instructions, too long for the JEQ's false offset.
        var rules = Enumerable.Range(0, 120).Select(i => new SeccompRule("ioctl", SeccompAction.Errno(i + 1), SeccompArgCondition.EqualTo(1, (ulong)(0x5400 + i), lowWordOnly: true))).ToList();
        rules.Add(new SeccompRule(["read", "write"], SeccompAction.Errno(99)));
        SeccompProfile profile = Profile(SeccompAction.Allow, [.. rules]);
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        Assert.That(program.Any(i => i.Code == Bpf.JumpAlways), Is.True);
        var inputs = new List<SeccompInput>();
        for (ulong cmd = 0x53f0; cmd < 0x5480; cmd++)
            inputs.Add(SeccompInput.For(X64, "ioctl", 0, cmd));
        inputs.Add(SeccompInput.For(X64, "read"));
        inputs.Add(SeccompInput.For(X64, "write"));
        inputs.Add(SeccompInput.For(X64, "openat"));
        AssertAgreesWithProfile(profile, X64, inputs);
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "ioctl", 0, 0x5400 + 77)), Is.EqualTo(SeccompReturn.ErrnoValue(78)));
    }

    [Test]
    public void TooLongAProgramIsRefused()
    {
        var rules = Enumerable.Range(0, 1500).Select(i => new SeccompRule("ioctl", SeccompAction.Errno(1 + (i % 4000)), SeccompArgCondition.EqualTo(1, (ulong)i, lowWordOnly: true))).ToArray();
        var e = Assert.Throws<SandboxException>(() => SeccompCompiler.Compile(Profile(SeccompAction.Allow, rules) with { Name = "huge" }, X64));
        Assert.That(e!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        Assert.That(e.Message, Does.Contain("4096").And.Contain("huge"));
    }

    // Values around the 32-bit boundary and the compared value itself, for every operator.
    private static readonly ulong[] Edges =
    [
        0, 1, 2, 0x7f, 0x80, 0xfffffffe, 0xffffffff, 0x1_00000000, 0x1_00000001, 0x1_fffffffe, 0x1_ffffffff,
        0x2_00000000, 0x7fffffff_ffffffff, 0x80000000_00000000, 0xffffffff_00000000, 0xffffffff_fffffffe, ulong.MaxValue,
        0x12345678, 0x1_12345678, 0x12345677, 0x12345679, 0x1_12345677, 0x1_12345679, 0xff_12345678,
    ];

    private static IEnumerable<TestCaseData> Comparisons()
    {
        foreach (SeccompArgOp op in Enum.GetValues<SeccompArgOp>())
        {
            foreach (bool low in new[] { false, true })
            {
                foreach (ulong value in new ulong[] { 0, 1, 0xffffffff, 0x12345678, 0x1_12345678, 0x1_00000000, ulong.MaxValue })
                {
                    if (low && value > uint.MaxValue)
                        continue;
                    ulong valueTwo = op == SeccompArgOp.MaskedEqual ? value & 0x1_0000_5678 : 0;
                    yield return new TestCaseData(op, low, value, valueTwo).SetName($"{op}({(low ? "u32" : "u64")}, 0x{value:x}, 0x{valueTwo:x})");
                }
            }
        }
    }

    [TestCaseSource(nameof(Comparisons))]
    public void ArgumentComparisonMatchesItsDefinitionOnAll64Bits(SeccompArgOp op, bool lowWordOnly, ulong value, ulong valueTwo)
    {
        foreach (int index in new[] { 0, 3, 5 })
        {
            var condition = new SeccompArgCondition(index, op, value, valueTwo, lowWordOnly);
            SeccompProfile profile = Profile(SeccompAction.Allow, new SeccompRule("ioctl", SeccompAction.Errno(7), condition));
            ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
            var arguments = Edges.Concat(Edges.Select(e => e ^ value)).Concat([value, value + 1, value - 1, value ^ 0x1_00000000, value ^ 0x8000_0000]);
            foreach (ulong arg in arguments)
            {
                var args = new ulong[6];
                args[index] = arg;
                args[(index + 1) % 6] = ~arg; // other arguments must not matter
                uint expected = condition.Matches(arg) ? SeccompReturn.ErrnoValue(7) : Allow;
                Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "ioctl", args)), Is.EqualTo(expected), $"{condition} with arg{index} = 0x{arg:x}");
            }
        }
    }

    [Test]
    public void MaskedEqualWithAnImpossibleValueNeverMatches()
    {
        // (arg & 0xff) == 0x100 cannot hold.
        var condition = SeccompArgCondition.MaskedEqual(0, 0xff, 0x100);
        SeccompProfile profile = Profile(SeccompAction.Allow, new SeccompRule("clone", SeccompAction.Eperm, condition));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        foreach (ulong arg in Edges)
            Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "clone", arg)), Is.EqualTo(Allow));
    }

    [Test]
    public void ConditionsInOneRuleAreAndedRulesAreOred()
    {
        SeccompProfile profile = Profile(SeccompAction.Allow,
            new SeccompRule("socket", SeccompAction.Errno(10), SeccompArgCondition.EqualTo(0, 2), SeccompArgCondition.EqualTo(1, 3)),
            new SeccompRule("socket", SeccompAction.Errno(10), SeccompArgCondition.EqualTo(0, 10)));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        uint Run(ulong a, ulong b) => BpfInterpreter.Run(program, SeccompInput.For(X64, "socket", a, b));
        Assert.That(Run(2, 3), Is.EqualTo(SeccompReturn.ErrnoValue(10)));
        Assert.That(Run(2, 1), Is.EqualTo(Allow));
        Assert.That(Run(1, 3), Is.EqualTo(Allow));
        Assert.That(Run(10, 0), Is.EqualTo(SeccompReturn.ErrnoValue(10)));
    }

    [Test]
    public void ConditionalRulesComeBeforeTheUnconditionalOneMostSevereFirst()
    {
        SeccompProfile profile = Profile(SeccompAction.Allow,
            new SeccompRule("personality", SeccompAction.Allow, SeccompArgCondition.LessThan(0, 5)),
            new SeccompRule("personality", SeccompAction.Eperm, SeccompArgCondition.EqualTo(0, 1)),
            new SeccompRule("personality", SeccompAction.Errno(LinuxErrno.EINVAL)));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        uint Run(ulong a) => BpfInterpreter.Run(program, SeccompInput.For(X64, "personality", a));
        Assert.That(Run(1), Is.EqualTo(Eperm), "the more severe matching rule wins");
        Assert.That(Run(3), Is.EqualTo(Allow), "a matching conditional rule beats the unconditional one");
        Assert.That(Run(9), Is.EqualTo(SeccompReturn.ErrnoValue(LinuxErrno.EINVAL)), "no condition holds: the unconditional rule");
        AssertAgreesWithProfile(profile, X64, Edges.Select(e => SeccompInput.For(X64, "personality", e)));
    }

    [Test]
    public void AConditionalRuleEqualToTheFallbackStillShieldsLessSevereRules()
    {
        // EPERM when arg0 == 1 must win over "allow when arg0 < 5", even though EPERM is also what
        // the unconditional rule answers.
        SeccompProfile profile = Profile(SeccompAction.Allow,
            new SeccompRule("mbind", SeccompAction.Eperm, SeccompArgCondition.EqualTo(0, 1)),
            new SeccompRule("mbind", SeccompAction.Allow, SeccompArgCondition.LessThan(0, 5)),
            new SeccompRule("mbind", SeccompAction.Eperm));
        AssertAgreesWithProfile(profile, X64, Enumerable.Range(0, 8).Select(i => SeccompInput.For(X64, "mbind", (ulong)i)));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "mbind", 1)), Is.EqualTo(Eperm));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "mbind", 2)), Is.EqualTo(Allow));
    }

    [Test]
    public void RulesThatEqualTheDefaultCostNothing()
    {
        SeccompProfile bare = Profile(SeccompAction.Allow);
        SeccompProfile redundant = Profile(SeccompAction.Allow,
            new SeccompRule(["read", "write"], SeccompAction.Allow),
            new SeccompRule("ioctl", SeccompAction.Allow, SeccompArgCondition.EqualTo(1, 5)));
        Assert.That(SeccompCompiler.Compile(redundant, X64), Is.EqualTo(SeccompCompiler.Compile(bare, X64)));
    }

    [Test]
    public void UnknownNamesAreSkipped()
    {
        SeccompProfile profile = Profile(SeccompAction.Eperm, new SeccompRule(["read", "no_such_call", "mmap2", "chown32"], SeccompAction.Allow));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "read")), Is.EqualTo(Allow));
        Assert.That(SeccompCompiler.UnknownNames(profile, X64), Is.EqualTo(new[] { "chown32", "mmap2", "no_such_call" }));
    }

    [Test]
    public void WithoutAnUnknownSyscallActionX32IsStillRefused()
    {
        SeccompProfile profile = Profile(SeccompAction.Allow, new SeccompRule("keyctl", SeccompAction.Eperm)) with { UnknownSyscallAction = null };
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, X64);
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, (int)(0x40000000 | 250))), Is.EqualTo(SeccompReturn.KillProcess));
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, 999)), Is.EqualTo(Allow), "no ENOSYS check asked for");
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, -1)), Is.EqualTo(Allow), "a skipped call");
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(X64, "keyctl")), Is.EqualTo(Eperm));
        ImmutableArray<BpfInstruction> arm = SeccompCompiler.Compile(profile, SeccompArchitecture.Aarch64);
        Assert.That(arm.Any(i => i.K == 0x40000000), Is.False, "no x32 on aarch64");
    }

    [TestCase(SeccompActionKind.Allow)]
    [TestCase(SeccompActionKind.KillThread)]
    [TestCase(SeccompActionKind.KillProcess)]
    [TestCase(SeccompActionKind.Trap)]
    [TestCase(SeccompActionKind.Log)]
    [TestCase(SeccompActionKind.Errno)]
    [TestCase(SeccompActionKind.Trace)]
    public void EveryActionReachesTheReturnValue(SeccompActionKind kind)
    {
        SeccompAction action = kind switch
        {
            SeccompActionKind.Allow => SeccompAction.Allow,
            SeccompActionKind.KillThread => SeccompAction.KillThread,
            SeccompActionKind.KillProcess => SeccompAction.KillProcess,
            SeccompActionKind.Trap => SeccompAction.Trap,
            SeccompActionKind.Log => SeccompAction.Log,
            SeccompActionKind.Errno => SeccompAction.Errno(13),
            _ => SeccompAction.Trace(3),
        };
        SeccompProfile profile = Profile(kind == SeccompActionKind.Log ? SeccompAction.Allow : SeccompAction.Log, new SeccompRule("getpid", action));
        ImmutableArray<BpfInstruction> program = SeccompCompiler.Compile(profile, SeccompArchitecture.Aarch64);
        Assert.That(BpfInterpreter.Run(program, SeccompInput.For(SeccompArchitecture.Aarch64, "getpid")), Is.EqualTo(action.ReturnValue));
    }

    [Test]
    public void InvalidConditionsAreRefused()
    {
        var bad = Profile(SeccompAction.Allow, new SeccompRule("read", SeccompAction.Eperm, new SeccompArgCondition(6, SeccompArgOp.EqualTo, 0)));
        Assert.That(Assert.Throws<SandboxException>(() => SeccompCompiler.Compile(bad, X64))!.Code, Is.EqualTo(SandboxErrorCode.InvalidSpec));
        var wide = Profile(SeccompAction.Allow, new SeccompRule("read", SeccompAction.Eperm, SeccompArgCondition.EqualTo(0, 0x1_00000000, lowWordOnly: true)));
        Assert.That(Assert.Throws<SandboxException>(() => SeccompCompiler.Compile(wide, X64))!.Message, Does.Contain("32-bit"));
        var many = Profile(SeccompAction.Allow, new SeccompRule("read", SeccompAction.Eperm, Enumerable.Range(0, 40).Select(i => SeccompArgCondition.GreaterThan(i % 6, (ulong)i)).ToArray()));
        Assert.That(Assert.Throws<SandboxException>(() => SeccompCompiler.Compile(many, X64))!.Message, Does.Contain("at most"));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeccompAction.Errno(4096));
        Assert.Throws<ArgumentOutOfRangeException>(() => SeccompAction.Errno(-1));
    }

    [Test]
    public void RandomProfilesAgreeWithTheirMeaning()
    {
        // Differential test: random profiles (names, actions, conditions, defaults) against the
        // profile semantics computed directly, on both architectures. Seeded: failures reproduce.
        var random = new Random(20240611);
        SeccompAction[] actions = [SeccompAction.Allow, SeccompAction.Eperm, SeccompAction.Errno(22), SeccompAction.KillProcess, SeccompAction.Trap, SeccompAction.Log, SeccompAction.Enosys];
        ulong[] values = [0, 1, 2, 8, 0x40, 0xff, 0xffffffff, 0x1_00000000, 0x1_00000001, ulong.MaxValue, 0x7E020000];
        for (int round = 0; round < 60; round++)
        {
            SeccompArchitecture arch = SeccompArchitecture.All[round % 2];
            string[] pool = arch.SyscallNames.Order(StringComparer.Ordinal).Where((_, i) => i % 7 == round % 7).Take(12).ToArray();
            var rules = new List<SeccompRule>();
            int ruleCount = random.Next(1, 40);
            for (int r = 0; r < ruleCount; r++)
            {
                string[] names = Enumerable.Range(0, random.Next(1, 4)).Select(_ => pool[random.Next(pool.Length)]).Distinct().ToArray();
                var conditions = Enumerable.Range(0, random.Next(0, 3)).Select(_ =>
                {
                    var op = (SeccompArgOp)random.Next(0, 7);
                    bool low = random.Next(4) == 0;
                    ulong v = values[random.Next(values.Length)];
                    ulong v2 = values[random.Next(values.Length)];
                    if (low)
                        (v, v2) = (v & 0xffffffff, v2 & 0xffffffff);
                    if (op == SeccompArgOp.MaskedEqual && random.Next(2) == 0)
                        v2 &= v;
                    return new SeccompArgCondition(random.Next(0, 3), op, v, v2, low);
                }).ToArray();
                rules.Add(new SeccompRule(names, actions[random.Next(actions.Length)], conditions));
            }
            SeccompProfile profile = Profile(actions[random.Next(actions.Length)], [.. rules]) with
            {
                UnknownSyscallAction = random.Next(3) == 0 ? null : SeccompAction.Enosys,
            };
            var inputs = new List<SeccompInput>();
            foreach (string name in pool)
            {
                for (int k = 0; k < 25; k++)
                    inputs.Add(SeccompInput.For(arch, name, values[random.Next(values.Length)], values[random.Next(values.Length)], values[random.Next(values.Length)]));
            }
            inputs.Add(SeccompInput.For(arch, arch.MaxSyscall + 1));
            inputs.Add(SeccompInput.For(arch, unchecked((int)0x40000001)));
            inputs.Add(SeccompInput.For(arch, -1));
            inputs.Add(SeccompInput.For(arch, -2));
            AssertAgreesWithProfile(profile, arch, inputs);
        }
    }
}
