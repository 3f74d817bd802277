using System.Collections.Immutable;
using System.Runtime.InteropServices;

namespace Sandbox.Security.Seccomp;

/// <summary>
/// The default filter, compiled at build time (PrecompiledPrograms.g.cs) so that a run does not build
/// the syscall tables and compile the profile on every start: that was about 0.9 ms of a 7.5 ms warm start
/// (perf record of `sandbox run -- /bin/true`, NativeAOT). A unit test recompiles the profile and fails
/// when the generated file differs (SANDBOX_UPDATE_GENERATED=1 rewrites it).
/// </summary>
public static partial class PrecompiledPrograms
{
    /// <summary>The default profile's program for the process's architecture, or null where none was generated.</summary>
    public static ImmutableArray<ulong>? DefaultForCurrentArchitecture() => RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => ImmutableArray.Create(DefaultX86_64),
        Architecture.Arm64 => ImmutableArray.Create(DefaultAarch64),
        _ => null,
    };
}
