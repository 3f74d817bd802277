using Sandbox.Linux;

namespace Sandbox.Runtime;

/// <summary>
/// Runs file operations as root of a new user namespace with a sandbox's id map: how the store
/// gives layer files the image's owners (lchown to subordinate ids) and removes what those owners
/// keep from the caller (0700 directories). The child is the native executor's (no managed code
/// between clone and its exit, DESIGN.md); its maps are written from here as for a sandbox
/// (<see cref="IdMapWriter"/>), which is what lets root inside act on files of the mapped ids.
/// </summary>
internal static class IdMappedFiles
{
    /// <summary>Runs <paramref name="ops"/> (paths relative to <paramref name="root"/>) in order, stopping at the first failure.</summary>
    public static UserNamespaceFileResult Run(string root, IReadOnlyList<UserNamespaceFileOp> ops, IdMapPlan map)
    {
        if (map.Kind != IdMapKind.SubordinateRange)
            throw new ArgumentException("file operations for other owners need a subordinate range", nameof(map));
        if (NativeExecutor.LoadError is string loadError)
            throw new SandboxException(SandboxErrorCode.NativeExecutorUnavailable, loadError);
        try
        {
            using UserNamespaceFiles child = UserNamespaceFiles.Start(root, ops);
            IdMapWriter.Write(child.Pid, map); // on failure, disposing kills and reaps the child
            child.Release();
            return child.Wait();
        }
        catch (LinuxException e)
        {
            throw new SandboxException(SandboxErrorCode.StoreFailed, $"{root}: could not run file operations in a user namespace: {e.Message}", e);
        }
    }
}
