using System.Buffers.Binary;
using System.Collections.Immutable;
using System.Runtime.InteropServices;

namespace Sandbox.Security.Seccomp;

/// <summary>
/// One classic BPF instruction, laid out exactly as the kernel's <c>struct sock_filter</c>
/// (include/uapi/linux/filter.h): u16 code, u8 jt, u8 jf, u32 k: 8 bytes, no padding.
/// Conditional jump offsets are 8-bit and relative to the next instruction; only <c>BPF_JA</c> takes
/// a 32-bit offset (in <see cref="K"/>). Jumps only go forward, so every program terminates.
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public readonly record struct BpfInstruction(ushort Code, byte JumpTrue, byte JumpFalse, uint K)
{
    public const int Size = 8;

    /// <summary><c>BPF_STMT(code, k)</c>.</summary>
    public static BpfInstruction Statement(ushort code, uint k) => new(code, 0, 0, k);

    /// <summary><c>BPF_JUMP(code, k, jt, jf)</c>.</summary>
    public static BpfInstruction Jump(ushort code, uint k, byte jumpTrue, byte jumpFalse) => new(code, jumpTrue, jumpFalse, k);

    /// <summary>The 8 bytes of <c>struct sock_filter</c> read as one little-endian u64 (code | jt&lt;&lt;16 | jf&lt;&lt;24 | k&lt;&lt;32).</summary>
    public ulong ToUInt64() => Code | ((ulong)JumpTrue << 16) | ((ulong)JumpFalse << 24) | ((ulong)K << 32);

    public static BpfInstruction FromUInt64(ulong value) =>
        new((ushort)value, (byte)(value >> 16), (byte)(value >> 24), (uint)(value >> 32));

    public override string ToString() => Bpf.Disassemble(this);
}

/// <summary>Classic BPF opcodes (include/uapi/linux/bpf_common.h) used by seccomp filters.</summary>
public static class Bpf
{
    // Instruction classes.
    public const ushort LD = 0x00;
    public const ushort ALU = 0x04;
    public const ushort JMP = 0x05;
    public const ushort RET = 0x06;

    // LD size and mode.
    public const ushort W = 0x00;
    public const ushort ABS = 0x20;

    // ALU and JMP operations.
    public const ushort AND = 0x50;
    public const ushort JA = 0x00;
    public const ushort JEQ = 0x10;
    public const ushort JGT = 0x20;
    public const ushort JGE = 0x30;
    public const ushort JSET = 0x40;

    // Source operand: the constant k.
    public const ushort K = 0x00;

    /// <summary>BPF_LD|BPF_W|BPF_ABS: A = the 32-bit word at offset k of <c>struct seccomp_data</c>.</summary>
    public const ushort LoadWordAbsolute = LD | W | ABS;
    public const ushort AndK = ALU | AND | K;
    public const ushort JumpAlways = JMP | JA;
    public const ushort JumpEqual = JMP | JEQ | K;
    public const ushort JumpGreater = JMP | JGT | K;
    public const ushort JumpGreaterOrEqual = JMP | JGE | K;
    public const ushort JumpSet = JMP | JSET | K;
    public const ushort ReturnK = RET | K;

    /// <summary>BPF_MAXINSNS (include/uapi/linux/bpf_common.h): the kernel refuses longer classic programs with EINVAL.</summary>
    public const int MaxInstructions = 4096;

    public static BpfInstruction LoadAbsolute(uint offset) => BpfInstruction.Statement(LoadWordAbsolute, offset);

    public static BpfInstruction Return(uint value) => BpfInstruction.Statement(ReturnK, value);

    public static string Disassemble(BpfInstruction i) => i.Code switch
    {
        LoadWordAbsolute => $"ld [{i.K}]",
        AndK => $"and #0x{i.K:x}",
        JumpAlways => $"ja +{i.K}",
        JumpEqual => $"jeq #0x{i.K:x}, +{i.JumpTrue}, +{i.JumpFalse}",
        JumpGreater => $"jgt #0x{i.K:x}, +{i.JumpTrue}, +{i.JumpFalse}",
        JumpGreaterOrEqual => $"jge #0x{i.K:x}, +{i.JumpTrue}, +{i.JumpFalse}",
        JumpSet => $"jset #0x{i.K:x}, +{i.JumpTrue}, +{i.JumpFalse}",
        ReturnK => $"ret #0x{i.K:x}",
        _ => $"code 0x{i.Code:x4} jt {i.JumpTrue} jf {i.JumpFalse} k 0x{i.K:x}",
    };
}

/// <summary>
/// Return values of a seccomp filter (include/uapi/linux/seccomp.h, seccomp(2)). The high 16 bits
/// are the action, the low 16 bits its data (the errno for ERRNO; capped at 4095 by the kernel).
/// When several filters are installed the kernel applies the most severe result, in this order:
/// KILL_PROCESS, KILL_THREAD, TRAP, ERRNO, USER_NOTIF, TRACE, LOG, ALLOW.
/// </summary>
public static class SeccompReturn
{
    /// <summary>Kill the whole thread group with SIGSYS (Linux 4.14+); a core dump shows the call.</summary>
    public const uint KillProcess = 0x80000000;
    /// <summary>Kill only the calling thread (the original SECCOMP_RET_KILL).</summary>
    public const uint KillThread = 0x00000000;
    /// <summary>Send SIGSYS to the caller, with the syscall in siginfo.</summary>
    public const uint Trap = 0x00030000;
    /// <summary>Fail the call with -(data) without running it.</summary>
    public const uint Errno = 0x00050000;
    public const uint UserNotif = 0x7fc00000;
    /// <summary>Hand the call to a ptrace tracer (PTRACE_O_TRACESECCOMP); without one it fails with ENOSYS.</summary>
    public const uint Trace = 0x7ff00000;
    /// <summary>Allow and log (Linux 4.14+).</summary>
    public const uint Log = 0x7ffc0000;
    public const uint Allow = 0x7fff0000;

    public const uint ActionFullMask = 0xffff0000;
    public const uint DataMask = 0x0000ffff;

    /// <summary>MAX_ERRNO (include/linux/err.h): the kernel clamps a larger ERRNO data to this.</summary>
    public const int MaxErrno = 4095;

    public static uint ErrnoValue(int errno) => Errno | ((uint)errno & DataMask);
}

/// <summary>Errno values the profiles use; the same numbers on x86_64 and aarch64 (asm-generic/errno-base.h, errno.h).</summary>
public static class LinuxErrno
{
    public const int EPERM = 1;
    public const int EINVAL = 22;
    public const int ENOSYS = 38;
}

/// <summary>
/// Offsets in <c>struct seccomp_data</c> (include/uapi/linux/seccomp.h), the input of every filter:
/// <code>
/// struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; };
/// </code>
/// A filter reads it one 32-bit word at a time (BPF_LD|BPF_W|BPF_ABS). The args are stored in the
/// machine's byte order: on the little-endian x86_64 and aarch64 the low word of args[i] is at
/// 16+8i and the high word at 20+8i.
/// </summary>
public static class SeccompData
{
    public const uint Nr = 0;
    public const uint Arch = 4;
    public const uint InstructionPointer = 8;
    public const uint Args = 16;
    public const int ArgCount = 6;
    public const int Size = 64;

    public static uint ArgLow(int index) => Args + (8 * (uint)index);

    public static uint ArgHigh(int index) => Args + (8 * (uint)index) + 4;
}

/// <summary>Copying a compiled program into the memory the executor hands to seccomp(2) as <c>struct sock_fprog.filter</c>.</summary>
public static class BpfProgram
{
    /// <summary>8 bytes per instruction: u16 code, u8 jt, u8 jf, u32 k, little-endian (the byte order of x86_64 and aarch64).</summary>
    public static byte[] ToBytes(ReadOnlySpan<BpfInstruction> program)
    {
        byte[] bytes = new byte[program.Length * BpfInstruction.Size];
        CopyTo(program, bytes);
        return bytes;
    }

    public static byte[] ToBytes(ImmutableArray<BpfInstruction> program) => ToBytes(program.AsSpan());

    /// <summary>Writes the program to <paramref name="destination"/> (at least 8 × length bytes), e.g. native memory from the executor's arena.</summary>
    public static void CopyTo(ReadOnlySpan<BpfInstruction> program, Span<byte> destination)
    {
        if (destination.Length < program.Length * BpfInstruction.Size)
            throw new ArgumentException($"need {program.Length * BpfInstruction.Size} bytes for {program.Length} instructions, have {destination.Length}", nameof(destination));
        for (int i = 0; i < program.Length; i++)
        {
            Span<byte> slot = destination.Slice(i * BpfInstruction.Size, BpfInstruction.Size);
            BinaryPrimitives.WriteUInt16LittleEndian(slot, program[i].Code);
            slot[2] = program[i].JumpTrue;
            slot[3] = program[i].JumpFalse;
            BinaryPrimitives.WriteUInt32LittleEndian(slot[4..], program[i].K);
        }
    }

    /// <summary>One u64 per instruction (<see cref="BpfInstruction.ToUInt64"/>): the same bytes when stored little-endian; the runtime plan's representation.</summary>
    public static ImmutableArray<ulong> ToUInt64Array(ImmutableArray<BpfInstruction> program)
    {
        var builder = ImmutableArray.CreateBuilder<ulong>(program.Length);
        foreach (BpfInstruction instruction in program)
            builder.Add(instruction.ToUInt64());
        return builder.MoveToImmutable();
    }

    /// <summary>A readable listing, one instruction a line with its index (for diagnostics and test failures).</summary>
    public static string Disassemble(ImmutableArray<BpfInstruction> program)
    {
        var text = new System.Text.StringBuilder();
        for (int i = 0; i < program.Length; i++)
            text.Append(i.ToString("D4", System.Globalization.CultureInfo.InvariantCulture)).Append(": ").AppendLine(Bpf.Disassemble(program[i]));
        return text.ToString();
    }
}
