namespace Sandbox.Runtime;

/// <summary>
/// Where a host program is, for the helpers we run ourselves (newuidmap, newgidmap, fuse-overlayfs):
/// the first directory of a PATH-style list that holds <c>name</c> as something other than a
/// directory (what File.Exists finds), with one stat(2) per directory. Relative entries (".", "",
/// "bin") are skipped: they would name a program by the caller's working directory, which Go's
/// exec.LookPath also refuses (ErrDot) for tools such as podman's id-map helpers.
/// </summary>
internal static class ProgramSearch
{
    public static string? Find(string name, string searchPath)
    {
        foreach (Range range in searchPath.AsSpan().Split(':'))
        {
            ReadOnlySpan<char> dir = searchPath.AsSpan(range);
            if (dir.IsEmpty || dir[0] != '/')
                continue;
            string candidate = Path.Join(dir, name);
            if (Linux.Syscalls.KindOf(candidate) == Linux.PathKind.Other)
                return candidate;
        }
        return null;
    }
}
