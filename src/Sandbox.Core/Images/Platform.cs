using System.Runtime.InteropServices;

namespace Sandbox.Images;

/// <summary>An OCI platform, <c>os/architecture[/variant]</c>, as in <c>--platform linux/arm64</c>.</summary>
public readonly record struct Platform(string Os, string Architecture, string? Variant)
{
    /// <summary>The platform this process runs on: linux/amd64 on x86_64, linux/arm64 on aarch64, ...</summary>
    public static Platform Host => new("linux", ArchitectureOf(RuntimeInformation.OSArchitecture), null);

    public override string ToString() => Variant is null ? $"{Os}/{Architecture}" : $"{Os}/{Architecture}/{Variant}";

    /// <summary>Parses <c>os/arch[/variant]</c>, or a bare <c>arch</c> (then linux).</summary>
    public static Platform Parse(string text)
    {
        string[] parts = text.Trim().ToLowerInvariant().Split('/');
        return parts switch
        {
            [var arch] when arch.Length > 0 => new("linux", NormalizeArchitecture(arch), null),
            [var os, var arch] when os.Length > 0 && arch.Length > 0 => new(os, NormalizeArchitecture(arch), null),
            [var os, var arch, var variant] when os.Length > 0 && arch.Length > 0 && variant.Length > 0 => new(os, NormalizeArchitecture(arch), variant),
            _ => throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--platform {text}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm64/v8"),
        };
    }

    /// <summary>Whether an index entry's (or a config's) platform is this one. A missing variant matches any; arm64's default variant is v8.</summary>
    public bool Matches(string? os, string? architecture, string? variant)
    {
        if (!string.Equals(os, Os, StringComparison.OrdinalIgnoreCase))
            return false;
        if (architecture is null || NormalizeArchitecture(architecture.ToLowerInvariant()) != Architecture)
            return false;
        if (Variant is null || string.IsNullOrEmpty(variant))
            return true;
        return string.Equals(NormalizeVariant(variant), NormalizeVariant(Variant), StringComparison.OrdinalIgnoreCase);
    }

    private string NormalizeVariant(string v) => Architecture == "arm64" && v == "8" ? "v8" : v;

    internal static string NormalizeArchitecture(string arch) => arch switch
    {
        "x86_64" or "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" or "armel" => "arm",
        "i386" or "i686" => "386",
        _ => arch,
    };

    private static string ArchitectureOf(Architecture a) => a switch
    {
        System.Runtime.InteropServices.Architecture.X64 => "amd64",
        System.Runtime.InteropServices.Architecture.Arm64 => "arm64",
        System.Runtime.InteropServices.Architecture.Arm or System.Runtime.InteropServices.Architecture.Armv6 => "arm",
        System.Runtime.InteropServices.Architecture.X86 => "386",
        System.Runtime.InteropServices.Architecture.S390x => "s390x",
        System.Runtime.InteropServices.Architecture.Ppc64le => "ppc64le",
        System.Runtime.InteropServices.Architecture.RiscV64 => "riscv64",
        System.Runtime.InteropServices.Architecture.LoongArch64 => "loong64",
        _ => a.ToString().ToLowerInvariant(),
    };
}
