using System.Globalization;

namespace Sandbox.Identity;

/// <summary>The user the payload runs as inside: ids and home, from docker's -u syntax or an image's User.</summary>
public sealed record SandboxUser(int Uid, int Gid, string? Home);

/// <summary>
/// Resolves <c>user[:group]</c> (names or numbers) as docker does: names through the root's
/// /etc/passwd and /etc/group (passwd(5), group(5)); a uid without an entry gets gid 0; a user
/// without a group gets its passwd entry's primary group.
/// </summary>
public static class UserResolver
{
    /// <param name="readRootFile">Reads a file of the sandbox's root (e.g. "/etc/passwd"), or null when absent.</param>
    public static SandboxUser Resolve(string user, Func<string, string?> readRootFile)
    {
        string[] parts = user.Split(':', 2);
        string userPart = parts[0];
        string? groupPart = parts.Length == 2 ? parts[1] : null;
        if (userPart.Length == 0)
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"user '{user}': expected USER[:GROUP]");

        var passwd = Entries(readRootFile("/etc/passwd"));
        string[]? entry = int.TryParse(userPart, NumberStyles.None, CultureInfo.InvariantCulture, out int numeric)
            ? passwd.FirstOrDefault(e => e.Length >= 6 && e[2] == userPart)
            : passwd.FirstOrDefault(e => e.Length >= 6 && e[0] == userPart);
        int uid;
        if (int.TryParse(userPart, NumberStyles.None, CultureInfo.InvariantCulture, out _))
            uid = numeric;
        else if (entry is not null && int.TryParse(entry[2], NumberStyles.None, CultureInfo.InvariantCulture, out int fromPasswd))
            uid = fromPasswd;
        else
            throw new SandboxException(SandboxErrorCode.InvalidSpec, $"user '{userPart}' is not in the root's /etc/passwd: give a numeric uid");

        int gid = 0;
        if (groupPart is not null)
        {
            if (int.TryParse(groupPart, NumberStyles.None, CultureInfo.InvariantCulture, out int g))
                gid = g;
            else if (Entries(readRootFile("/etc/group")).FirstOrDefault(e => e.Length >= 3 && e[0] == groupPart) is { } group &&
                     int.TryParse(group[2], NumberStyles.None, CultureInfo.InvariantCulture, out int fromGroup))
                gid = fromGroup;
            else
                throw new SandboxException(SandboxErrorCode.InvalidSpec, $"group '{groupPart}' is not in the root's /etc/group: give a numeric gid");
        }
        else if (entry is not null && int.TryParse(entry[3], NumberStyles.None, CultureInfo.InvariantCulture, out int primary))
        {
            gid = primary;
        }
        string? home = entry is not null && entry[5].StartsWith('/') ? entry[5] : null;
        return new SandboxUser(uid, gid, home);
    }

    private static List<string[]> Entries(string? content) =>
        (content ?? "").Split('\n').Where(l => l.Length > 0 && !l.StartsWith('#')).Select(l => l.Split(':')).ToList();

    /// <summary>Reads a file from an image: the highest layer that has it wins; a whiteout or a symlink ends the search.</summary>
    public static Func<string, string?> ImageFileReader(Images.ImageRecord image) => path =>
    {
        foreach (string layer in image.LayerDirectories.Reverse())
        {
            string candidate = Path.Combine(layer, path.TrimStart('/'));
            var info = new FileInfo(candidate);
            if (info.LinkTarget is not null)
                return null; // not followed: it could point anywhere on the host
            if (!info.Exists)
                continue;
            try
            {
                return info.Length > 1 << 20 ? null : File.ReadAllText(candidate);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                return null; // a whiteout (a 0:0 character device) or unreadable: deleted for us
            }
        }
        return null;
    };

    public static Func<string, string?> DirectoryFileReader(string root) => path =>
    {
        string candidate = Path.Combine(root, path.TrimStart('/'));
        try
        {
            var info = new FileInfo(candidate);
            return info.LinkTarget is null && info.Exists && info.Length <= 1 << 20 ? File.ReadAllText(candidate) : null;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    };
}
