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
/// (FICLONE) where the file system can; user.* extended attributes are copied (overlay's own excepted).
/// <para>Two ways to run it. Flattened layers (every file the caller's) are copied by the caller, in
/// its own process, and every copy belongs to the caller as in the store; it never changes the
/// store to do so, and fails (EACCES) on an entry its owner may not read (a 0000 file, a 0000
/// directory), which the caller then copies as root of a single-id user namespace instead
/// (ImageRootPreparer.Materialize). Layers that keep their image's owners hold files of subordinate ids, often in 0700
/// directories the caller cannot even list; those are copied by root of a user namespace with the
/// layers' map (<see cref="LayerCopyHelper"/>), which reads every mapped file (CAP_DAC_OVERRIDE)
/// and gives each copy its source's owner (CAP_CHOWN), so the run sees the owners overlay would show.</para>
/// </summary>
internal static class LayerCopier
{
    public const string OpaqueXattr = "user.overlay.opaque";

    /// <summary>Copies the layers (lowest first) into <paramref name="target"/>, which must not exist or be empty; returns the bytes copied.</summary>
    /// <param name="keepOwners">Give every copy its source's owner (lchown), as root of a user namespace does; false: the copies are the caller's.</param>
    public static long Copy(IReadOnlyList<string> layersLowestFirst, string target, bool keepOwners = false)
    {
        Directory.CreateDirectory(target);
        if (Directory.EnumerateFileSystemEntries(target).Any())
            throw new SandboxException(SandboxErrorCode.Internal, $"the copy target {target} is not empty");
        var copier = new Copier(keepOwners);
        foreach (string layer in layersLowestFirst)
        {
            copier.Links.Clear();
            FileStatus root = FileSystemCalls.TryLStat(layer) ?? throw new SandboxException(SandboxErrorCode.InvalidSpec,
                $"layer {layer} is missing from the store: import the image again");
            FileSystemCalls.ChangeModeAt(target, 0x1C0);
            copier.ApplyChildren(layer, target);
            copier.Finish(layer, root, target);
        }
        return copier.Bytes;
    }

    private sealed class Copier(bool keepOwners)
    {
        /// <summary>The first copy of each multiply linked file of the current layer.</summary>
        public Dictionary<(ulong Device, ulong Inode), string> Links { get; } = [];

        public long Bytes { get; private set; }

        /// <summary>Applies the entries of the layer directory <paramref name="source"/> to the real directory <paramref name="target"/>.</summary>
        public void ApplyChildren(string source, string target)
        {
            foreach (string name in Directory.EnumerateFileSystemEntries(source).Select(p => Path.GetFileName(p)).ToList())
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
                    ApplyChildren(from, to);
                    Finish(from, st, to);
                    continue;
                }
                if (existing is not null)
                    TreeRemover.Remove(to);
                switch (st.Kind)
                {
                    case FileKind.Regular:
                        if (st.LinkCount > 1 && Links.TryGetValue((st.Device, st.Inode), out string? first))
                        {
                            FileSystemCalls.HardLink(first, to);
                            break;
                        }
                        File.Copy(from, to, overwrite: false);
                        Finish(from, st, to);
                        Bytes += st.Size;
                        if (st.LinkCount > 1)
                            Links[(st.Device, st.Inode)] = to;
                        break;
                    case FileKind.Symlink:
                        File.CreateSymbolicLink(to, new FileInfo(from).LinkTarget!);
                        if (keepOwners)
                            FileSystemCalls.ChangeOwner(to, st.Uid, st.Gid);
                        break;
                    case FileKind.Fifo:
                        FileSystemCalls.MakeFifo(to, st.Permissions);
                        Finish(from, st, to, withTime: false);
                        break;
                    default:
                        // The store keeps no device nodes or sockets (the unpacker skips them).
                        break;
                }
            }
        }

        /// <summary>
        /// The copy of a directory, file or fifo takes its source's owner (when kept), user.*
        /// xattrs, mode and time, in that order: chown clears setuid, setgid and file capabilities
        /// (chown(2)), and the umask narrowed the mode the copy was created with.
        /// </summary>
        public void Finish(string from, FileStatus st, string to, bool withTime = true)
        {
            if (keepOwners)
                FileSystemCalls.ChangeOwner(to, st.Uid, st.Gid);
            if (st.Kind is (FileKind.Directory or FileKind.Regular) && FileSystemCalls.HasXattrs(from))
            {
                // Reading a user.* attribute needs read permission on the file, writing one write
                // permission (xattr(7)): the caller's own read-only copy is made writable first.
                if (!keepOwners && (st.Permissions & 0x180) != 0x180)
                    FileSystemCalls.ChangeModeAt(to, st.Permissions | 0x180);
                FileSystemCalls.CopyUserXattrs(from, to);
            }
            FileSystemCalls.ChangeModeAt(to, st.Permissions);
            if (withTime)
                CopyTime(from, to);
        }
    }

    private static void CopyTime(string from, string to) => File.SetLastWriteTimeUtc(to, File.GetLastWriteTimeUtc(from));
}
