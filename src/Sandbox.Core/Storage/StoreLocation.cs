namespace Sandbox.Storage;

/// <summary>Where the image and layer store lives.</summary>
public static class StoreLocation
{
    /// <summary>
    /// <paramref name="overrideRoot"/> (the CLI's <c>--root</c>) when given, else <c>$SANDBOX_ROOT</c>,
    /// else <c>$XDG_DATA_HOME/sandbox</c>, else <c>~/.local/share/sandbox</c>; always an absolute path.
    /// </summary>
    public static string Resolve(string? overrideRoot) => Resolve(overrideRoot, Environment.GetEnvironmentVariable);

    internal static string Resolve(string? overrideRoot, Func<string, string?> env)
    {
        if (!string.IsNullOrWhiteSpace(overrideRoot))
            return Absolute(overrideRoot, "--root");
        if (env("SANDBOX_ROOT") is { Length: > 0 } root)
            return Absolute(root, "SANDBOX_ROOT");
        // XDG Base Directory: a relative XDG_DATA_HOME is invalid and must be ignored.
        if (env("XDG_DATA_HOME") is { Length: > 0 } xdg && Path.IsPathRooted(xdg))
            return Path.Combine(Path.GetFullPath(xdg), "sandbox");
        string? home = env("HOME");
        if (string.IsNullOrEmpty(home))
            home = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
        if (string.IsNullOrEmpty(home))
            throw new SandboxException(SandboxErrorCode.StoreFailed,
                "cannot place the image store: HOME is not set; set SANDBOX_ROOT or pass --root DIR");
        return Path.Combine(Path.GetFullPath(home), ".local", "share", "sandbox");
    }

    private static string Absolute(string path, string from)
    {
        try
        {
            return Path.GetFullPath(path);
        }
        catch (IOException) when (!Path.IsPathRooted(path))
        {
            // getcwd(3) fails with ENOENT once the working directory is removed (a CI workspace
            // deleted and made again by an earlier step).
            throw new SandboxException(SandboxErrorCode.StoreFailed,
                $"cannot place the image store at {from} '{path}': the current directory no longer exists. cd to an existing directory, or give an absolute path");
        }
    }
}
