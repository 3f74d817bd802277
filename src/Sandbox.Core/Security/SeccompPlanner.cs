using System.Collections.Immutable;
using Sandbox.Security.Seccomp;

namespace Sandbox.Security;

/// <summary>Turns a <see cref="SeccompPolicy"/> into the BPF program the executor installs right before exec.</summary>
public static class SeccompPlanner
{
    private static readonly Lazy<ImmutableArray<ulong>> s_default = new(() =>
        PrecompiledPrograms.DefaultForCurrentArchitecture()
        ?? BpfProgram.ToUInt64Array(SeccompCompiler.Compile(SeccompProfiles.Default, SeccompArchitecture.Current)));

    public static ImmutableArray<ulong> Program(SeccompPolicy policy, ulong capabilities) => policy.Kind switch
    {
        "unconfined" => ImmutableArray<ulong>.Empty,
        "file" => FromDockerProfile(policy.ProfilePath!, capabilities),
        _ => s_default.Value,
    };

    private static ImmutableArray<ulong> FromDockerProfile(string path, ulong capabilities)
    {
        string json;
        try
        {
            json = File.ReadAllText(path);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"seccomp profile {path}: {e.Message}");
        }
        Version? kernel = null;
        try
        {
            kernel = DockerProfileParser.ParseKernelVersion(File.ReadAllText("/proc/sys/kernel/osrelease"));
        }
        catch (IOException)
        {
        }
        // The profile's includes/excludes by capability are decided with the names the payload gets.
        var caps = Capabilities.Names(capabilities).Select(n => n).ToHashSet();
        SeccompProfile profile = DockerProfileParser.Parse(json, caps, SeccompArchitecture.Current, kernel, path);
        return BpfProgram.ToUInt64Array(SeccompCompiler.Compile(profile, SeccompArchitecture.Current));
    }
}
