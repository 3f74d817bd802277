namespace Sandbox.Runtime;

/// <summary>
/// The directory our program's files ship in (sandbox-init, libsandbox_exec.so): what
/// <see cref="AppContext.BaseDirectory"/> gives, for less. Under the dotnet host (the JIT build, a
/// test host) the host names the directory (APP_CONTEXT_BASE_DIRECTORY), and that is taken as
/// AppContext takes it. In the NativeAOT CLI AppContext computes it from
/// <see cref="System.Environment.ProcessPath"/>, the realpath(3) of /proc/self/exe, which reads
/// every component of the path again (eight readlink(2) calls for /home/u/bin/sandbox; about 30 µs
/// of a warm run with its code, in a perf profile). The kernel's /proc/self/exe link is the executable's path as
/// the kernel keeps it, already free of symbolic links (proc(5)), so one readlink(2) of it is
/// enough. Anything unusual (an executable deleted since its start, a path outside our root)
/// falls back to AppContext.
/// </summary>
internal static class ProgramDirectory
{
    private static string? s_path;

    /// <summary>The directory, with a trailing slash, as <see cref="AppContext.BaseDirectory"/> has it.</summary>
    public static string Path => s_path ??= Find();

    private static string Find()
    {
        if (AppContext.GetData("APP_CONTEXT_BASE_DIRECTORY") is string { Length: > 0 })
            return AppContext.BaseDirectory;
        return FromExecutable(Linux.FileSystemCalls.TryReadLink("/proc/self/exe")) ?? AppContext.BaseDirectory;
    }

    /// <summary>The directory of an executable's path as /proc/self/exe gives it, or null when that is no usable path.</summary>
    internal static string? FromExecutable(string? executable)
    {
        // " (deleted)" is how proc(5) marks a file unlinked since; a path not starting with '/'
        // lies outside this process's root.
        if (executable is null || !executable.StartsWith('/') || executable.EndsWith(" (deleted)", StringComparison.Ordinal))
            return null;
        int slash = executable.LastIndexOf('/');
        return executable[..(slash + 1)];
    }
}
