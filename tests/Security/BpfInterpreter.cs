using System.Buffers.Binary;
using System.Collections.Immutable;
using Sandbox.Security.Seccomp;

namespace Sandbox.Tests.Security;

/// <summary>The input of a seccomp filter: <c>struct seccomp_data</c>.</summary>
internal readonly record struct SeccompInput(int Nr, uint Arch, ulong InstructionPointer, ImmutableArray<ulong> Args)
{
    public static SeccompInput For(SeccompArchitecture arch, string syscall, params ulong[] args) =>
        new(arch.Syscall(syscall), arch.AuditArch, 0x401000, Pad(args));

    public static SeccompInput For(SeccompArchitecture arch, int nr, params ulong[] args) =>
        new(nr, arch.AuditArch, 0x401000, Pad(args));

    private static ImmutableArray<ulong> Pad(ulong[] args)
    {
        if (args.Length > 6)
            throw new ArgumentException("at most 6 arguments");
        var all = new ulong[6];
        args.CopyTo(all, 0);
        return [.. all];
    }

    /// <summary>The 64 bytes the kernel hands the filter, little-endian (x86_64, aarch64).</summary>
    public byte[] ToBytes()
    {
        var bytes = new byte[SeccompData.Size];
        BinaryPrimitives.WriteInt32LittleEndian(bytes.AsSpan(0), Nr);
        BinaryPrimitives.WriteUInt32LittleEndian(bytes.AsSpan(4), Arch);
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(8), InstructionPointer);
        for (int i = 0; i < 6; i++)
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(16 + (8 * i)), Args[i]);
        return bytes;
    }
}

/// <summary>
/// A classic BPF interpreter for seccomp filters, strict where the kernel is strict: it runs the
/// subset seccomp_check_filter accepts that the compiler uses (LD W ABS, ALU AND K, JA, JEQ/JGT/JGE/JSET
/// K, RET K), refuses anything else, and fails on a jump or a fall-through out of the program.
/// </summary>
internal static class BpfInterpreter
{
    public static uint Run(ImmutableArray<BpfInstruction> program, SeccompInput input) => Run(program, input, out _);

    /// <summary>Runs the program; <paramref name="executed"/> is how many instructions it ran, RET included.</summary>
    public static uint Run(ImmutableArray<BpfInstruction> program, SeccompInput input, out int executed)
    {
        executed = 0;
        byte[] data = input.ToBytes();
        uint a = 0;
        int pc = 0;
        for (int steps = 0; steps <= program.Length; steps++)
        {
            if (pc < 0 || pc >= program.Length)
                throw new InvalidOperationException($"pc {pc} outside the program (length {program.Length})");
            BpfInstruction i = program[pc];
            executed++;
            switch (i.Code)
            {
                case Bpf.LoadWordAbsolute:
                    if (i.K % 4 != 0 || i.K + 4 > SeccompData.Size)
                        throw new InvalidOperationException($"{pc}: load from offset {i.K}");
                    a = BinaryPrimitives.ReadUInt32LittleEndian(data.AsSpan((int)i.K));
                    pc++;
                    break;
                case Bpf.AndK:
                    a &= i.K;
                    pc++;
                    break;
                case Bpf.JumpAlways:
                    pc += 1 + checked((int)i.K);
                    break;
                case Bpf.JumpEqual:
                    pc += 1 + (a == i.K ? i.JumpTrue : i.JumpFalse);
                    break;
                case Bpf.JumpGreater:
                    pc += 1 + (a > i.K ? i.JumpTrue : i.JumpFalse);
                    break;
                case Bpf.JumpGreaterOrEqual:
                    pc += 1 + (a >= i.K ? i.JumpTrue : i.JumpFalse);
                    break;
                case Bpf.JumpSet:
                    pc += 1 + ((a & i.K) != 0 ? i.JumpTrue : i.JumpFalse);
                    break;
                case Bpf.ReturnK:
                    return i.K;
                default:
                    throw new InvalidOperationException($"{pc}: unsupported instruction {i}");
            }
        }
        throw new InvalidOperationException("the program did not return (a backward jump?)");
    }

    /// <summary>
    /// What a profile should answer, computed directly from its documented meaning (not from the
    /// program): foreign arch, then nr -1 (allowed), then numbers above the table, then conditional
    /// rules most severe first, then the most severe unconditional rule, then the default.
    /// </summary>
    public static uint Expected(SeccompProfile profile, SeccompArchitecture arch, SeccompInput input)
    {
        if (input.Arch != arch.AuditArch)
            return profile.ForeignArchitectureAction.ReturnValue;
        if (input.Nr == -1)
            return SeccompReturn.Allow; // a call a tracer skipped
        if (profile.UnknownSyscallAction is { } unknown && (uint)input.Nr > (uint)arch.MaxSyscall)
            return unknown.ReturnValue;
        if (profile.UnknownSyscallAction is null && arch.X32SyscallBit is { } bit && (uint)input.Nr >= bit)
            return profile.ForeignArchitectureAction.ReturnValue;
        string? name = arch.SyscallName(input.Nr);
        List<SeccompRule> rules = name is null ? [] : profile.Rules.Where(r => r.Names.Contains(name)).ToList();
        SeccompRule? match = rules.Where(r => !r.IsUnconditional)
            .OrderByDescending(r => r.Action.Severity)
            .FirstOrDefault(r => r.Conditions.All(c => c.Matches(input.Args[c.Index])));
        if (match is not null)
            return match.Action.ReturnValue;
        SeccompRule? fallback = rules.Where(r => r.IsUnconditional).OrderByDescending(r => r.Action.Severity).ThenByDescending(r => r.Action.Data).FirstOrDefault();
        return (fallback?.Action ?? profile.DefaultAction).ReturnValue;
    }
}
