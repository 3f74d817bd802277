using System.Globalization;
using Sandbox.Runtime;

namespace Sandbox.Rootfs;

/// <summary>
/// docker's <c>--tmpfs PATH[:OPTIONS]</c>: OPTIONS is a comma-separated list of size=SIZE,
/// mode=OCTAL, ro, rw, noexec, exec; nosuid and nodev always hold. A size bounds what the payload can
/// write there (tmpfs(5): size), so a full /tmp does not fill the host's memory.
/// </summary>
public sealed record TmpfsMount(string Path, string Data, MountFlags Flags)
{
    public static TmpfsMount Parse(string value, string defaultMode = "1777")
    {
        int colon = value.IndexOf(':');
        string path = colon < 0 ? value : value[..colon];
        if (!path.StartsWith('/'))
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--tmpfs needs an absolute path: {value}");
        var flags = MountFlags.NoSuid | MountFlags.NoDev;
        string mode = defaultMode;
        string? size = null;
        if (colon >= 0)
        {
            foreach (string option in value[(colon + 1)..].Split(',', StringSplitOptions.RemoveEmptyEntries))
            {
                string[] kv = option.Split('=', 2);
                switch (kv[0])
                {
                    case "size" when kv.Length == 2:
                        size = Cgroups.Sizes.Parse(kv[1], "--tmpfs size").ToString(CultureInfo.InvariantCulture);
                        break;
                    case "mode" when kv.Length == 2 && kv[1].Length is > 0 and <= 4 && kv[1].All(c => c is >= '0' and <= '7'):
                        mode = kv[1];
                        break;
                    case "mode":
                        throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--tmpfs {value}: '{option}' is not a file mode: give up to four octal digits, e.g. mode=1777 or mode=700");
                    case "ro": flags |= MountFlags.ReadOnly; break;
                    case "rw": flags &= ~MountFlags.ReadOnly; break;
                    case "noexec": flags |= MountFlags.NoExec; break;
                    case "exec": flags &= ~MountFlags.NoExec; break;
                    case "nosuid" or "nodev": break;
                    default:
                        throw new SandboxException(SandboxErrorCode.InvalidSpec, $"--tmpfs {value}: unknown option '{option}' (supported: size=, mode=, ro, rw, noexec, exec)");
                }
            }
        }
        string data = size is null ? $"mode={mode}" : $"mode={mode},size={size}";
        return new TmpfsMount(HostPaths.Normalize(path), data, flags);
    }
}
