using System.Collections.Immutable;

namespace Sandbox.Security;

/// <summary>Turns a <see cref="SeccompPolicy"/> into the BPF program the executor installs before exec.</summary>
public static class SeccompPlanner
{
    public static ImmutableArray<ulong> Program(SeccompPolicy policy, ulong capabilities) => policy.Kind switch
    {
        "unconfined" => ImmutableArray<ulong>.Empty,
        // Wired to the seccomp compiler once it lands (issue: hardening).
        _ => ImmutableArray<ulong>.Empty,
    };
}
