namespace Sandbox.Rootfs;

/// <summary>Path resolution on the host side, done before the plan is built.</summary>
public static class HostPaths
{
    /// <summary>
    /// realpath(3) for the part of <paramref name="path"/> that exists: every symlink is resolved, so
    /// the path can be used under the old root after pivot_root, where an absolute symlink would
    /// otherwise resolve against the wrong root. Components that do not exist are kept as given.
    /// </summary>
    public static string Resolve(string path, int maxLinks = 40)
    {
        if (!path.StartsWith('/'))
            throw new ArgumentException($"not an absolute path: {path}", nameof(path));
        // The common case, a path that exists, in one libc call (which gives up after 40 links, as
        // the default here does); the walk below is for the rest.
        if (maxLinks >= 40 && Linux.Syscalls.TryRealPath(path) is string real)
            return real;
        var pending = new Stack<string>(path.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse());
        var resolved = new List<string>();
        int links = 0;
        while (pending.Count > 0)
        {
            string part = pending.Pop();
            if (part == ".")
                continue;
            if (part == "..")
            {
                if (resolved.Count > 0)
                    resolved.RemoveAt(resolved.Count - 1);
                continue;
            }
            string candidate = "/" + string.Join('/', resolved.Append(part));
            FileSystemInfo info = new FileInfo(candidate);
            string? target = info.Exists || Directory.Exists(candidate) || info.LinkTarget is not null ? info.LinkTarget : null;
            if (target is null)
            {
                resolved.Add(part);
                continue;
            }
            if (++links > maxLinks)
                throw new IOException($"too many levels of symbolic links resolving {path}");
            if (target.StartsWith('/'))
                resolved.Clear();
            foreach (string t in target.Split('/', StringSplitOptions.RemoveEmptyEntries).Reverse())
                pending.Push(t);
        }
        return "/" + string.Join('/', resolved);
    }

    /// <summary>Joins an absolute path under a root directory: Under("/newroot", "/a/b") is "/newroot/a/b".</summary>
    public static string Under(string root, string absolute) =>
        absolute == "/" ? root : root.TrimEnd('/') + "/" + absolute.TrimStart('/');

    /// <summary>The path itself and each of its ancestors below /, shortest first: /a, /a/b, /a/b/c.</summary>
    public static IEnumerable<string> Ancestry(string absolute)
    {
        string[] parts = absolute.Split('/', StringSplitOptions.RemoveEmptyEntries);
        for (int i = 1; i <= parts.Length; i++)
            yield return "/" + string.Join('/', parts.Take(i));
    }

    /// <summary>Collapses "." and ".." and duplicate slashes without touching the file system.</summary>
    public static string Normalize(string absolute)
    {
        var parts = new List<string>();
        foreach (string part in absolute.Split('/', StringSplitOptions.RemoveEmptyEntries))
        {
            if (part == ".")
                continue;
            if (part == "..")
            {
                if (parts.Count > 0)
                    parts.RemoveAt(parts.Count - 1);
                continue;
            }
            parts.Add(part);
        }
        return "/" + string.Join('/', parts);
    }
}
