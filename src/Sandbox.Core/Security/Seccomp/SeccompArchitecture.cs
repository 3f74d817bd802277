using System.Collections.Frozen;
using System.Runtime.InteropServices;

namespace Sandbox.Security.Seccomp;

/// <summary>
/// An architecture a filter is compiled for: its AUDIT_ARCH value (what the kernel puts in
/// <c>seccomp_data.arch</c>, include/uapi/linux/audit.h) and its syscall table (SyscallTables.g.cs,
/// generated from this machine's kernel headers by ci/gen-syscall-tables).
/// </summary>
/// <remarks>
/// A syscall number means nothing without its architecture: on x86_64 the same process can also
/// enter the kernel through the i386 (int 0x80) and x32 ABIs, where number 11 is execve rather than
/// munmap. seccomp_filter.rst therefore asks every filter to check <c>arch</c> first; the compiler
/// does, and kills on a mismatch.
/// </remarks>
public sealed class SeccompArchitecture
{
    private readonly FrozenDictionary<string, int> _byName;
    private readonly FrozenDictionary<int, string> _byNumber;

    private SeccompArchitecture(string name, string dockerName, string libseccompName, uint auditArch, uint? x32SyscallBit, (string Name, int Number)[] table)
    {
        Name = name;
        DockerName = dockerName;
        LibseccompName = libseccompName;
        AuditArch = auditArch;
        X32SyscallBit = x32SyscallBit;
        _byName = table.ToFrozenDictionary(e => e.Name, e => e.Number, StringComparer.Ordinal);
        _byNumber = table.ToFrozenDictionary(e => e.Number, e => e.Name);
        MaxSyscall = table.Max(e => e.Number);
    }

    /// <summary>AUDIT_ARCH_X86_64 = EM_X86_64 (62) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.</summary>
    public const uint AuditArchX86_64 = 0xC000003E;

    /// <summary>AUDIT_ARCH_AARCH64 = EM_AARCH64 (183) | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE.</summary>
    public const uint AuditArchAarch64 = 0xC00000B7;

    /// <summary>AUDIT_ARCH_I386: what an x86_64 process's <c>int 0x80</c> calls carry.</summary>
    public const uint AuditArchI386 = 0x40000003;

    /// <summary>__X32_SYSCALL_BIT (arch/x86/include/uapi/asm/unistd.h): x32 calls arrive with AUDIT_ARCH_X86_64 and this bit set in nr.</summary>
    public const uint X32Bit = 0x40000000;

    public static SeccompArchitecture X86_64 { get; } = new("x86_64", "amd64", "SCMP_ARCH_X86_64", AuditArchX86_64, X32Bit, SyscallTables.X86_64);

    public static SeccompArchitecture Aarch64 { get; } = new("aarch64", "arm64", "SCMP_ARCH_AARCH64", AuditArchAarch64, null, SyscallTables.Aarch64);

    public static IReadOnlyList<SeccompArchitecture> All { get; } = [X86_64, Aarch64];

    /// <summary>The architecture of this process (RuntimeInformation.ProcessArchitecture); null where no table exists.</summary>
    public static SeccompArchitecture? TryCurrent => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => X86_64,
        Architecture.Arm64 => Aarch64,
        _ => null,
    };

    /// <summary>The architecture of this process; a <see cref="SandboxException"/> on one the compiler has no syscall table for.</summary>
    public static SeccompArchitecture Current => TryCurrent
        ?? throw new SandboxException(SandboxErrorCode.SetupFailed,
            $"no seccomp syscall table for {RuntimeInformation.ProcessArchitecture}: the filter is built for x86_64 and aarch64 only (use --security-opt seccomp=unconfined on this machine)");

    /// <summary>The kernel's name (uname -m): x86_64, aarch64.</summary>
    public string Name { get; }

    /// <summary>The Go name used in Docker profiles' includes/excludes "arches": amd64, arm64.</summary>
    public string DockerName { get; }

    /// <summary>libseccomp's name, as in Docker profiles' "architectures": SCMP_ARCH_X86_64, SCMP_ARCH_AARCH64.</summary>
    public string LibseccompName { get; }

    /// <summary>The value of <c>seccomp_data.arch</c> for this architecture's native calls.</summary>
    public uint AuditArch { get; }

    /// <summary>On x86_64, the bit that marks x32 syscall numbers (which share AUDIT_ARCH_X86_64); null elsewhere.</summary>
    public uint? X32SyscallBit { get; }

    /// <summary>The highest syscall number in the table (from the kernel headers the table was generated from).</summary>
    public int MaxSyscall { get; }

    /// <summary>Which headers the table came from.</summary>
    public static string TableSource => SyscallTables.Source;

    public IEnumerable<string> SyscallNames => _byName.Keys;

    public bool TryGetSyscall(string name, out int number) => _byName.TryGetValue(name, out number);

    public int Syscall(string name) => _byName.TryGetValue(name, out int number)
        ? number
        : throw new ArgumentException($"{Name} has no syscall named '{name}'", nameof(name));

    public string? SyscallName(int number) => _byNumber.GetValueOrDefault(number);

    /// <summary>Matches this architecture's names: x86_64/amd64/SCMP_ARCH_X86_64 (case-insensitive).</summary>
    public bool IsNamed(string name) =>
        name.Equals(Name, StringComparison.OrdinalIgnoreCase)
        || name.Equals(DockerName, StringComparison.OrdinalIgnoreCase)
        || name.Equals(LibseccompName, StringComparison.OrdinalIgnoreCase);

    public override string ToString() => Name;
}
