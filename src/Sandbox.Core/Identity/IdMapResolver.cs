using Sandbox.Runtime;

namespace Sandbox.Identity;

/// <summary>The host facts id mapping depends on; the defaults read the real host, tests pass fixtures.</summary>
/// <param name="KnownUserName">The user's name, or null to look it up when a subordinate range is wanted.</param>
public sealed record IdentityEnvironment(
    uint Uid,
    uint Gid,
    string? KnownUserName,
    string SubUidFile = "/etc/subuid",
    string SubGidFile = "/etc/subgid",
    string? SearchPath = null)
{
    /// <summary>
    /// The name /etc/subuid lists the user under. Looked up on each use when not known, so that a
    /// <c>--userns single</c> start, which never needs it, does not pay for it: from /etc/passwd when
    /// nsswitch.conf reads that first, else through NSS (<see cref="HostUserName"/>).
    /// </summary>
    public string UserName => KnownUserName ?? HostUserName.Of(Uid, static () => System.Environment.UserName);

    public static IdentityEnvironment Current() => new(
        Linux.Syscalls.RealUserId,
        Linux.Syscalls.RealGroupId,
        KnownUserName: null,
        SearchPath: System.Environment.GetEnvironmentVariable("PATH"));
}

/// <summary>Chooses how the sandbox's ids map to the host's (DESIGN.md, "Identity").</summary>
public static class IdMapResolver
{
    public static IdMapPlan Resolve(UserNamespaceMode mode, IdentityEnvironment env)
    {
        if (mode == UserNamespaceMode.Single)
            return new IdMapPlan(IdMapKind.SingleId, env.Uid, env.Gid);

        string? why = TryResolveSubordinate(env, out IdMapPlan? plan);
        if (plan is not null)
            return plan;
        if (mode == UserNamespaceMode.Subuid)
            throw new SandboxException(SandboxErrorCode.IdMappingFailed, $"--userns=subuid: {why}");
        return new IdMapPlan(IdMapKind.SingleId, env.Uid, env.Gid);
    }

    /// <summary>Returns null and a plan when a subordinate range is usable, else why not (with the fix).</summary>
    public static string? TryResolveSubordinate(IdentityEnvironment env, out IdMapPlan? plan)
    {
        plan = null;
        string? newuidmap = FindExecutable("newuidmap", env.SearchPath);
        string? newgidmap = FindExecutable("newgidmap", env.SearchPath);
        if (newuidmap is null || newgidmap is null)
            return "newuidmap/newgidmap are not installed (install the uidmap package: sudo apt-get install uidmap)";
        string userName = env.UserName;
        IdRange? uids = FindRange(env.SubUidFile, userName, env.Uid);
        if (uids is null)
            return $"{env.SubUidFile} has no range for {userName} (add one: sudo usermod --add-subuids 100000-165535 {userName})";
        IdRange? gids = FindRange(env.SubGidFile, userName, env.Uid);
        if (gids is null)
            return $"{env.SubGidFile} has no range for {userName} (add one: sudo usermod --add-subgids 100000-165535 {userName})";
        plan = new IdMapPlan(IdMapKind.SubordinateRange, env.Uid, env.Gid, uids, gids, newuidmap, newgidmap);
        return null;
    }

    /// <summary>
    /// The first range for the user in an /etc/subuid-format file (subuid(5): <c>name-or-id:start:count</c>),
    /// capped at 65536 ids: enough for every owner an image uses, and what podman maps by default.
    /// </summary>
    public static IdRange? FindRange(string file, string userName, uint uid)
    {
        if (!ByteLines.TryRead(file, out ByteLines lines))
            return null;
        // The uid as newuidmap looks it up: its decimal text, compared as a string (shadow's
        // lib/subordinateio.c, find_range uses strcmp on the owner), so "01000" is no match.
        ReadOnlySpan<byte> uidText = AsciiText.Decimal(uid, stackalloc byte[10]);
        byte[] nameBytes = System.Text.Encoding.UTF8.GetBytes(userName);
        foreach (ReadOnlySpan<byte> raw in lines)
        {
            ReadOnlySpan<byte> line = raw.Trim(AsciiText.Blanks);
            if (line.IsEmpty || line[0] == '#')
                continue;
            int fields = 0;
            ReadOnlySpan<byte> owner = default, start = default, count = default;
            foreach (Range field in line.Split((byte)':'))
            {
                switch (fields++)
                {
                    case 0: owner = line[field]; break;
                    case 1: start = line[field]; break;
                    case 2: count = line[field]; break;
                }
            }
            if (fields != 3 || !(owner.SequenceEqual(nameBytes) || owner.SequenceEqual(uidText)))
                continue;
            if (!AsciiText.TryParseDecimal(start, out long first) || !AsciiText.TryParseDecimal(count, out long length) || length <= 0)
                continue;
            return new IdRange(first, Math.Min(length, 65536));
        }
        return null;
    }

    // The search path, then /usr/bin: where the uidmap package puts them, should PATH be minimal.
    private static string? FindExecutable(string name, string? searchPath) =>
        ProgramSearch.Find(name, (searchPath ?? "/usr/local/bin:/usr/bin:/bin") + ":/usr/bin");
}
