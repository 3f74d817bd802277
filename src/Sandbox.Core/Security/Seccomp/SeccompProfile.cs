using System.Collections.Immutable;

namespace Sandbox.Security.Seccomp;

public enum SeccompActionKind
{
    Allow,
    Errno,
    KillProcess,
    KillThread,
    Trap,
    Log,
    Trace,
}

/// <summary>
/// What a filter answers for a call: Docker's and the OCI spec's SCMP_ACT_* (ALLOW, ERRNO(n),
/// KILL_PROCESS, KILL_THREAD = KILL, TRAP, LOG, TRACE(n)). SCMP_ACT_NOTIFY is not offered: it needs a
/// supervisor holding the listener fd, which Sandbox does not run.
/// </summary>
public readonly record struct SeccompAction
{
    private SeccompAction(SeccompActionKind kind, ushort data)
    {
        Kind = kind;
        Data = data;
    }

    public SeccompActionKind Kind { get; }

    /// <summary>The errno for <see cref="SeccompActionKind.Errno"/>, the message for <see cref="SeccompActionKind.Trace"/>; 0 otherwise.</summary>
    public ushort Data { get; }

    public static SeccompAction Allow { get; } = new(SeccompActionKind.Allow, 0);
    public static SeccompAction KillProcess { get; } = new(SeccompActionKind.KillProcess, 0);
    public static SeccompAction KillThread { get; } = new(SeccompActionKind.KillThread, 0);
    public static SeccompAction Trap { get; } = new(SeccompActionKind.Trap, 0);
    public static SeccompAction Log { get; } = new(SeccompActionKind.Log, 0);

    /// <summary>Fail the call with this errno (0..4095, MAX_ERRNO) without running it.</summary>
    public static SeccompAction Errno(int errno) => errno is >= 0 and <= SeccompReturn.MaxErrno
        ? new(SeccompActionKind.Errno, (ushort)errno)
        : throw new ArgumentOutOfRangeException(nameof(errno), errno, $"an errno is 0..{SeccompReturn.MaxErrno} (MAX_ERRNO)");

    public static SeccompAction Trace(int message) => message is >= 0 and <= ushort.MaxValue
        ? new(SeccompActionKind.Trace, (ushort)message)
        : throw new ArgumentOutOfRangeException(nameof(message), message, "a trace message is 16 bits");

    public static SeccompAction Eperm => Errno(LinuxErrno.EPERM);

    public static SeccompAction Enosys => Errno(LinuxErrno.ENOSYS);

    /// <summary>The filter's return value (SECCOMP_RET_*, include/uapi/linux/seccomp.h).</summary>
    public uint ReturnValue => Kind switch
    {
        SeccompActionKind.Allow => SeccompReturn.Allow,
        SeccompActionKind.Errno => SeccompReturn.Errno | Data,
        SeccompActionKind.KillProcess => SeccompReturn.KillProcess,
        SeccompActionKind.KillThread => SeccompReturn.KillThread,
        SeccompActionKind.Trap => SeccompReturn.Trap,
        SeccompActionKind.Log => SeccompReturn.Log,
        SeccompActionKind.Trace => SeccompReturn.Trace | Data,
        _ => throw new InvalidOperationException($"unknown seccomp action {Kind}"),
    };

    /// <summary>
    /// Higher is more severe, in the kernel's order for combining filters (seccomp(2), "the return
    /// value with the highest precedence"): KILL_PROCESS, KILL_THREAD, TRAP, ERRNO, TRACE, LOG, ALLOW.
    /// </summary>
    public int Severity => Kind switch
    {
        SeccompActionKind.KillProcess => 7,
        SeccompActionKind.KillThread => 6,
        SeccompActionKind.Trap => 5,
        SeccompActionKind.Errno => 4,
        SeccompActionKind.Trace => 3,
        SeccompActionKind.Log => 2,
        _ => 1,
    };

    public override string ToString() => Kind switch
    {
        SeccompActionKind.Errno => $"ERRNO({Data})",
        SeccompActionKind.Trace => $"TRACE({Data})",
        SeccompActionKind.KillProcess => "KILL_PROCESS",
        SeccompActionKind.KillThread => "KILL_THREAD",
        _ => Kind.ToString().ToUpperInvariant(),
    };
}

/// <summary>libseccomp's comparison operators (SCMP_CMP_*), all unsigned, as in Docker profiles.</summary>
public enum SeccompArgOp
{
    /// <summary>SCMP_CMP_EQ: arg == Value.</summary>
    EqualTo,
    /// <summary>SCMP_CMP_NE: arg != Value.</summary>
    NotEqual,
    /// <summary>SCMP_CMP_LT: arg &lt; Value.</summary>
    LessThan,
    /// <summary>SCMP_CMP_LE: arg &lt;= Value.</summary>
    LessOrEqual,
    /// <summary>SCMP_CMP_GT: arg &gt; Value.</summary>
    GreaterThan,
    /// <summary>SCMP_CMP_GE: arg &gt;= Value.</summary>
    GreaterOrEqual,
    /// <summary>SCMP_CMP_MASKED_EQ: (arg &amp; Value) == ValueTwo (Value is the mask, as in libseccomp and Docker's JSON).</summary>
    MaskedEqual,
}

/// <summary>
/// A condition on one syscall argument (args[Index] of <c>seccomp_data</c>, 0..5).
/// </summary>
/// <remarks>
/// Arguments are 64-bit and compared as libseccomp does, on all 64 bits (a classic BPF program reads
/// 32 bits at a time, so a comparison is two loads and a few jumps). <see cref="LowWordOnly"/>
/// compares the low 32 bits only: right for an argument the kernel declares as <c>int</c> or
/// <c>unsigned int</c> (personality's persona, ioctl's cmd), whose upper register half the kernel
/// ignores but a caller may fill with anything. A 64-bit "== TIOCSTI" check is bypassed by setting
/// a high bit (flatpak, CVE-2019-10063); a low-word check is not. Only the argument's register value
/// is visible: a filter cannot follow pointers (seccomp_filter.rst), so struct fields (clone3's
/// flags, adjtimex's modes, a path) cannot be checked at all.
/// </remarks>
public readonly record struct SeccompArgCondition(int Index, SeccompArgOp Op, ulong Value, ulong ValueTwo = 0, bool LowWordOnly = false)
{
    public static SeccompArgCondition EqualTo(int index, ulong value, bool lowWordOnly = false) => new(index, SeccompArgOp.EqualTo, value, 0, lowWordOnly);

    public static SeccompArgCondition NotEqual(int index, ulong value, bool lowWordOnly = false) => new(index, SeccompArgOp.NotEqual, value, 0, lowWordOnly);

    /// <summary>(arg &amp; mask) == value.</summary>
    public static SeccompArgCondition MaskedEqual(int index, ulong mask, ulong value, bool lowWordOnly = false) => new(index, SeccompArgOp.MaskedEqual, mask, value, lowWordOnly);

    public static SeccompArgCondition GreaterThan(int index, ulong value, bool lowWordOnly = false) => new(index, SeccompArgOp.GreaterThan, value, 0, lowWordOnly);

    public static SeccompArgCondition GreaterOrEqual(int index, ulong value, bool lowWordOnly = false) => new(index, SeccompArgOp.GreaterOrEqual, value, 0, lowWordOnly);

    public static SeccompArgCondition LessThan(int index, ulong value, bool lowWordOnly = false) => new(index, SeccompArgOp.LessThan, value, 0, lowWordOnly);

    public static SeccompArgCondition LessOrEqual(int index, ulong value, bool lowWordOnly = false) => new(index, SeccompArgOp.LessOrEqual, value, 0, lowWordOnly);

    /// <summary>Whether a call's argument value satisfies the condition (the reference the compiled program is tested against).</summary>
    public bool Matches(ulong argument)
    {
        ulong arg = LowWordOnly ? argument & 0xffffffff : argument;
        return Op switch
        {
            SeccompArgOp.EqualTo => arg == Value,
            SeccompArgOp.NotEqual => arg != Value,
            SeccompArgOp.LessThan => arg < Value,
            SeccompArgOp.LessOrEqual => arg <= Value,
            SeccompArgOp.GreaterThan => arg > Value,
            SeccompArgOp.GreaterOrEqual => arg >= Value,
            SeccompArgOp.MaskedEqual => (arg & Value) == ValueTwo,
            _ => false,
        };
    }

    public override string ToString()
    {
        string arg = LowWordOnly ? $"(u32)arg{Index}" : $"arg{Index}";
        return Op switch
        {
            SeccompArgOp.MaskedEqual => $"({arg} & 0x{Value:x}) == 0x{ValueTwo:x}",
            _ => $"{arg} {Op switch { SeccompArgOp.EqualTo => "==", SeccompArgOp.NotEqual => "!=", SeccompArgOp.LessThan => "<", SeccompArgOp.LessOrEqual => "<=", SeccompArgOp.GreaterThan => ">", _ => ">=" }} 0x{Value:x}",
        };
    }
}

/// <summary>
/// One rule: these syscalls get <see cref="Action"/> when every condition holds (an empty list: always).
/// </summary>
public sealed record SeccompRule(ImmutableArray<string> Names, SeccompAction Action, ImmutableArray<SeccompArgCondition> Conditions)
{
    public SeccompRule(IEnumerable<string> names, SeccompAction action, params SeccompArgCondition[] conditions)
        : this(names.ToImmutableArray(), action, conditions.ToImmutableArray())
    {
    }

    public SeccompRule(string name, SeccompAction action, params SeccompArgCondition[] conditions)
        : this([name], action, conditions.ToImmutableArray())
    {
    }

    /// <summary>Why the rule exists (Docker's "comment"); not compiled.</summary>
    public string? Comment { get; init; }

    public bool IsUnconditional => Conditions.IsDefaultOrEmpty;
}

/// <summary>
/// A seccomp profile: a default action and rules, as in Docker's seccomp JSON and the OCI runtime
/// spec's <c>linux.seccomp</c>.
/// </summary>
/// <remarks>
/// Meaning of several rules for one syscall (libseccomp leaves it unspecified; this is the order
/// the compiler tests them in): rules with conditions first, most severe action first (then in
/// profile order), the first whose conditions all hold decides; then a rule without conditions
/// (the most severe one, if several); then <see cref="DefaultAction"/>. So "allow clone when no
/// namespace flag is set" plus "clone: EPERM" means exactly that.
/// </remarks>
public sealed record SeccompProfile
{
    public required SeccompAction DefaultAction { get; init; }

    /// <summary>The errno of an ERRNO default action (Docker's defaultErrnoRet), else null.</summary>
    public int? DefaultErrno => DefaultAction.Kind == SeccompActionKind.Errno ? DefaultAction.Data : null;

    public ImmutableArray<SeccompRule> Rules { get; init; } = ImmutableArray<SeccompRule>.Empty;

    /// <summary>
    /// libseccomp names of the architectures the profile was written for (Docker's "architectures"
    /// and archMap). Informational: a program is compiled for one native architecture, and calls
    /// through any other ABI (i386 on x86_64, 32-bit ARM on aarch64) get <see cref="ForeignArchitectureAction"/>.
    /// </summary>
    public ImmutableArray<string> Architectures { get; init; } = ImmutableArray<string>.Empty;

    /// <summary>For a call whose <c>seccomp_data.arch</c> is not the native one: KILL_PROCESS, as libseccomp does for an architecture not in the filter.</summary>
    public SeccompAction ForeignArchitectureAction { get; init; } = SeccompAction.KillProcess;

    /// <summary>
    /// For a syscall number above the highest one in the architecture's table (newer than the
    /// headers the table came from, or an x32 number on x86_64): ENOSYS, so that libraries fall back
    /// to older calls as they do on an older kernel (runc's ENOSYS stub, libcontainer/seccomp/patchbpf,
    /// was added because EPERM there broke glibc's clone3 and faccessat2 fallbacks). In a deny-list it
    /// also keeps calls newer than the list (say a future mount API) out. Null: no such check (then
    /// x32 numbers on x86_64 get <see cref="ForeignArchitectureAction"/>).
    /// </summary>
    public SeccompAction? UnknownSyscallAction { get; init; } = SeccompAction.Enosys;

    /// <summary>A name for messages ("default", a file name).</summary>
    public string? Name { get; init; }
}
