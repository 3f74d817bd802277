using Sandbox.Linux;
using Sandbox.Storage;

namespace Sandbox.Rootfs;

/// <summary>
/// The copy storage driver: the image's layers applied one over the other into a plain directory,
/// with overlay's own rules (Documentation/filesystems/overlayfs.rst, "whiteouts and opaque
/// directories"), reading the layers in the form the store keeps them: a whiteout is a 0:0
/// character device and hides the name in the layers below; a directory with user.overlay.opaque=y
/// hides the whole directory below; a directory over a non-directory (or the reverse) replaces it;
/// a directory over a directory merges, the upper one's mode and time winning.
/// Hard links inside a layer stay hard links; regular files are copied with File.Copy, which clones
/// (FICLONE) where the file system can. Every file belongs to the caller, as in the store.
/// </summary>
internal static class LayerCopier
{
    public const string OpaqueXattr = "user.overlay.opaque";

    /// <summary>Copies the layers (lowest first) into <paramref name="target"/>, which must not exist or be empty; returns the bytes copied.</summary>
    public static long Copy(IReadOnlyList<string> layersLowestFirst, string target)
    {
        Directory.CreateDirectory(target);
        if (Directory.EnumerateFileSystemEntries(target).Any())
            throw new SandboxException(SandboxErrorCode.Internal, $"the copy target {target} is not empty");
        long bytes = 0;
        foreach (string layer in layersLowestFirst)
        {
            var links = new Dictionary<(ulong Device, ulong Inode), string>();
            FileStatus root = FileSystemCalls.TryLStat(layer) ?? throw new SandboxException(SandboxErrorCode.InvalidSpec,
                $"layer {layer} is missing from the store: import the image again");
            FileSystemCalls.ChangeModeAt(target, 0x1C0);
            bytes += ApplyChildren(layer, root, target, links);
            FileSystemCalls.ChangeModeAt(target, root.Permissions);
            CopyTime(layer, target);
        }
        return bytes;
    }

    /// <summary>Applies the entries of the layer directory <paramref name="source"/> to the real directory <paramref name="target"/>.</summary>
    private static long ApplyChildren(string source, FileStatus sourceStatus, string target, Dictionary<(ulong, ulong), string> links)
    {
        long bytes = 0;
        foreach (string name in WithAccess(source, sourceStatus, 0x140, () => Directory.EnumerateFileSystemEntries(source).Select(p => Path.GetFileName(p)).ToList()))
        {
            string from = Path.Combine(source, name), to = Path.Combine(target, name);
            if (FileSystemCalls.TryLStat(from) is not FileStatus st)
                continue;
            FileStatus? existing = FileSystemCalls.TryLStat(to);
            if (st.IsWhiteout)
            {
                if (existing is not null)
                    TreeRemover.Remove(to);
                continue;
            }
            if (st.Kind == FileKind.Directory)
            {
                bool opaque = FileSystemCalls.GetXattr(from, OpaqueXattr) is [(byte)'y'];
                if (existing is { } e && (e.Kind != FileKind.Directory || opaque))
                {
                    TreeRemover.Remove(to);
                    existing = null;
                }
                if (existing is null)
                    Directory.CreateDirectory(to);
                // Writable while it is filled (a lower layer may have left it 0555); the layer's mode at the end.
                FileSystemCalls.ChangeModeAt(to, 0x1C0);
                bytes += ApplyChildren(from, st, to, links);
                FileSystemCalls.ChangeModeAt(to, st.Permissions);
                CopyTime(from, to);
                continue;
            }
            if (existing is not null)
                TreeRemover.Remove(to);
            switch (st.Kind)
            {
                case FileKind.Regular:
                    if (st.LinkCount > 1 && links.TryGetValue((st.Device, st.Inode), out string? first))
                    {
                        FileSystemCalls.HardLink(first, to);
                        break;
                    }
                    WithAccess(from, st, 0x100, () =>
                    {
                        File.Copy(from, to, overwrite: false);
                        return 0;
                    });
                    FileSystemCalls.ChangeModeAt(to, st.Permissions);
                    CopyTime(from, to);
                    bytes += st.Size;
                    if (st.LinkCount > 1)
                        links[(st.Device, st.Inode)] = to;
                    break;
                case FileKind.Symlink:
                    File.CreateSymbolicLink(to, new FileInfo(from).LinkTarget!);
                    break;
                case FileKind.Fifo:
                    FileSystemCalls.MakeFifo(to, st.Permissions);
                    break;
                default:
                    // The store keeps no device nodes or sockets (the unpacker skips them).
                    break;
            }
        }
        return bytes;
    }

    /// <summary>
    /// Runs <paramref name="action"/> with the owner's <paramref name="bits"/> (r, or r and x) on a
    /// layer entry that lacks them, restoring its mode after: the store's files are the caller's own,
    /// with the image's modes (a 0000 file is readable by root in a container, not by its owner).
    /// </summary>
    private static T WithAccess<T>(string path, FileStatus st, uint bits, Func<T> action)
    {
        if ((st.Permissions & bits) == bits)
            return action();
        FileSystemCalls.ChangeModeAt(path, st.Permissions | bits);
        try
        {
            return action();
        }
        finally
        {
            FileSystemCalls.ChangeModeAt(path, st.Permissions);
        }
    }

    private static void CopyTime(string from, string to) => File.SetLastWriteTimeUtc(to, File.GetLastWriteTimeUtc(from));
}
